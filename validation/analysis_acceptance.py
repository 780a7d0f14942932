"""Acceptance study of the posterior analysis layer (issue 4).

On data simulated from the canonical ratchet model (models/decoupling.toml), T = 120:

1. decoupling datasets (true decoupling inside the series): is the posterior
   median decoupling time within 3 steps of the truth (target: >= 18 of 20),
   does the 90 % HDI cover it (target: 16 to 20 of 20)?
2. datasets without decoupling (lock-in hazard switched off): is
   P(decoupled by the end) < 0.2 (target: >= 9 of 10)?
3. model comparison: ratchet vs random-walk constraint, data from each
   (target: the data-generating process wins in >= 8 of 10 each way, by
   PSIS-LOO and by PSIS-LFO).  By default the ratchet side reuses the first
   decoupling datasets; ``--compare-param NAME=VALUE`` draws it from another
   truth instead, and ``--compare-rw-param`` sets the random walk's (with the
   default truth the ratchet's steps have mean 0.093 and sd 0.05, which a
   drifting random walk reproduces: LOO differences within 1.0 on all 10
   ratchet datasets, benchmarks/README.md).  ``--lfo-horizon M`` scores M
   steps ahead jointly (Bürkner, Gabry & Vehtari's M-step-ahead LFO);
4. early warning on the decoupling datasets: delay of the filtered-probability
   rule (0.8) and of the rule "act when the feedback moves two standard
   deviations from its first-20-step mean" (target: the model's median delay
   is smaller).  The delay is measured as in change-point detection, from the
   true decoupling to the first alarm at or after it; alarms before it are
   counted as false alarms on their own row.  On this DGP the feedback tracks
   a rising constraint, so the rule fires before any decoupling (soon after
   its 20-step baseline), falls silent when the decoupled feedback drops back towards its
   baseline, and fires again only as the constraint keeps rising: the table
   shows the first alarm whenever it comes too, so neither reading is hidden.

Datasets are chosen by seed in order: a decoupling dataset is kept when its
true decoupling time lies in [``--window-low``, ``--window-high``] so that
both rules have a baseline and there is something after the switch to detect.

Usage:
    python validation/analysis_acceptance.py             # the full study
    python validation/analysis_acceptance.py --ci        # CI size: 4 + 2 + 2x2, short chains
    python validation/analysis_acceptance.py --jobs 8    # datasets in parallel processes
    python validation/analysis_acceptance.py --out r.json [--resume]
        # each dataset's result is saved as it finishes; --resume runs only those
        # r.json lacks (same settings required), so a study can span sessions
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SPEC_FILE = ROOT / "models" / "decoupling.toml"


# --------------------------------------------------------------------------
# specs, simulation and ground truth
# --------------------------------------------------------------------------


def make_spec(process: str) -> Any:
    import pathlock as pl

    spec = pl.Spec.from_toml(SPEC_FILE)
    if spec.constraint.process == process:
        return spec
    constraint = dataclasses.replace(spec.constraint, process=process)
    return dataclasses.replace(spec, constraint=constraint, name=f"{spec.name}_{process}")


def true_decoupling_index(truth: Any, n_steps: int) -> int:
    """Position of the true first decoupled step of unit 0; ``n_steps`` when it never happens."""
    get = truth.get if isinstance(truth, dict) else lambda k, d=None: getattr(truth, k, d)
    for key in ("decoupling_time", "decoupling_index"):
        value = get(key)
        if value is not None:
            v = np.ravel(np.asarray(value, dtype=float))[0]
            return n_steps if not np.isfinite(v) or v < 0 else int(v)
    for key in ("regime", "regimes", "regime_path", "regime_paths"):
        value = get(key)
        if value is not None:
            path = np.asarray(getattr(value, "values", value))
            path = path.reshape(-1, path.shape[-1])[0]
            if path.dtype.kind in "US" or path.dtype == object:
                off = path != path[0] if path[0] == "tracking" else path != "tracking"
            else:
                off = path != 0
            return int(np.argmax(off)) if off.any() else n_steps
    raise RuntimeError(f"cannot find the true regime path in the simulator's truth: {truth!r}")


def simulate(
    spec: Any, seed: int, n_steps: int, params: dict | None = None
) -> tuple[pd.DataFrame, int]:
    import pathlock as pl

    data, truth = pl.simulate(spec, params, n_steps=n_steps, n_units=1, seed=seed)
    return data, true_decoupling_index(truth, n_steps)


NULL_PARAMS = {
    "hazard_intercept": np.array([[0.0, -40.0], [0.0, 0.0]]),
    "hazard_slope": np.zeros((2, 2)),
}


def choose_datasets(args: argparse.Namespace) -> dict[str, list[tuple[int, int]]]:
    """(seed, true index) of every dataset of the study, chosen by seed in order."""
    ratchet = make_spec("ratchet")
    chosen: dict[str, list[tuple[int, int]]] = {"decoupling": [], "null": [], "random_walk": []}
    seed = args.seed
    while len(chosen["decoupling"]) < args.n_decoupling:
        _, tau = simulate(ratchet, seed, args.steps)
        if args.window_low <= tau <= args.window_high:
            chosen["decoupling"].append((seed, tau))
        seed += 1
        if seed > args.seed + 5000:
            raise RuntimeError(
                "fewer decoupling datasets in the window than asked for in 5000 seeds"
            )
    seed = args.seed + 10_000
    while len(chosen["null"]) < args.n_null:
        _, tau = simulate(ratchet, seed, args.steps, NULL_PARAMS)
        if tau == args.steps:
            chosen["null"].append((seed, tau))
        seed += 1
    if args.compare_param:
        # The ratchet side of the comparison gets its own datasets, from the
        # overridden truth (any decoupling time will do: only LOO and LFO are read).
        chosen["ratchet"] = [
            (
                args.seed + 30_000 + i,
                simulate(ratchet, args.seed + 30_000 + i, args.steps, compare_truth(args))[1],
            )
            for i in range(args.n_compare)
        ]
    rw = make_spec("random_walk")
    rw_truth = compare_truth(args, "random_walk")
    chosen["random_walk"] = [
        (args.seed + 20_000 + i, simulate(rw, args.seed + 20_000 + i, args.steps, rw_truth)[1])
        for i in range(args.n_compare)
    ]
    return chosen


def compare_truth(args: argparse.Namespace, side: str = "ratchet") -> dict[str, float] | None:
    """Truth of one side's comparison datasets: the defaults, or the side's ``--compare-*param``s.

    The two sides take their own values: ``constraint_mu`` and ``constraint_sigma``
    are the log-step mean and sd of the ratchet but the drift and step sd of the
    random walk.
    """
    flag = "--compare-param" if side == "ratchet" else "--compare-rw-param"
    items = args.compare_param if side == "ratchet" else args.compare_rw_param
    if not items:
        return None
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            raise SystemExit(f"{flag}: expected NAME=NUMBER, found {item!r}") from None
    return out


def task_key(task: dict[str, Any]) -> str:
    """What makes a dataset's result: its task without the core count, as canonical JSON."""
    kept = {k: v for k, v in task.items() if k != "cores"}
    return json.dumps(kept, sort_keys=True, default=lambda a: np.asarray(a).tolist())


def save_results(results: list[dict[str, Any]], path: Path) -> None:
    """Write ``results`` to ``path`` whole, replacing it only once the new file is complete."""
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(results, indent=1))
    tmp.replace(path)


def resumed(tasks: list[dict[str, Any]], path: Path) -> list[dict[str, Any]]:
    """The results in ``path`` that belong to ``tasks``; an error if it holds any other.

    A kept result must come from the same task (kind, seed, truth and sampler
    settings): the study's table would otherwise mix runs of different settings.
    """
    try:
        stored = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SystemExit(f"--resume: cannot read {path}: {err}") from None
    wanted = {task_key(t): t for t in tasks}
    by_dataset = {(t["kind"], t["seed"]): t for t in tasks}
    for r in stored:
        key = r.get("task") if isinstance(r, dict) else None
        if key in wanted:
            continue
        if key is None:
            raise SystemExit(
                f"--resume: {path} holds a result without its task (written before --resume "
                "existed); start a new --out file"
            )
        old = json.loads(key)
        new = by_dataset.get((old.get("kind"), old.get("seed")))
        if new is None:
            why = "a dataset these settings do not run"
        else:
            now = json.loads(task_key(new))
            diff = [
                f"{k}: found {old.get(k)!r}, expected {now.get(k)!r}"
                for k in sorted(set(old) | set(now))
                if old.get(k) != now.get(k)
            ]
            why = "other settings (" + "; ".join(diff) + ")"
        raise SystemExit(
            f"--resume: {path} holds {old.get('kind')} seed {old.get('seed')} from {why}; "
            "resume with the settings it was run with, or start a new --out file"
        )
    return [r for r in stored if r["task"] in wanted]


def first_alarm(alarm: np.ndarray, start: int = 0) -> int:
    """Index of the first alarm at or after ``start``; ``alarm.size`` when there is none."""
    hits = np.flatnonzero(np.asarray(alarm, bool)[start:])
    return start + int(hits[0]) if hits.size else int(np.size(alarm))


# --------------------------------------------------------------------------
# one dataset
# --------------------------------------------------------------------------


def worst_rhat(result: Any) -> float:
    """Largest rank R-hat over the fit's parameters (latent paths and their coordinates left out).

    The study fits with ``check=False``; this is reported beside every LOO and LFO
    verdict, so that a comparison is never read off fits that have not converged.
    """
    import xarray as xr

    from pathlock.fit import check_convergence

    post = result.idata["posterior"].to_dataset()
    path = [n for n, v in post.data_vars.items() if n == "constraint_raw" or "time" in v.dims]
    tree = xr.DataTree.from_dict(
        {
            "posterior": post.drop_vars(path),
            "sample_stats": result.idata["sample_stats"].to_dataset(),
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(check_convergence(tree)["max_rhat"])


def run_task(task: dict[str, Any]) -> dict[str, Any]:
    import pathlock as pl
    from pathlock import analysis

    warnings.filterwarnings("ignore")
    t0 = time.perf_counter()
    kind, seed, tau, n_steps = task["kind"], task["seed"], task["tau"], task["steps"]
    sample = {k: task[k] for k in ("draws", "tune", "chains")}
    sample["cores"] = task["cores"]
    dgp = "random_walk" if kind == "random_walk" else "ratchet"
    params = NULL_PARAMS if kind == "null" else task.get("params")
    data, _ = simulate(make_spec(dgp), seed, n_steps, params)
    out: dict[str, Any] = {"kind": kind, "seed": seed, "tau": tau}

    ratchet_fit = pl.fit(make_spec("ratchet"), data, seed=seed, check=False, **sample)
    out["divergences"] = int(ratchet_fit.idata["sample_stats"]["diverging"].sum())
    out["rhat"] = {"ratchet": worst_rhat(ratchet_fit)}
    out["path"] = make_spec("ratchet").parameterization_for(data)
    dt = ratchet_fit.decoupling_time(seed=seed, n=task["paths"], prob=0.9)
    idx = dt.index.values.ravel()
    out["median"] = int(np.quantile(idx, 0.5, method="inverted_cdf"))
    hdi = dt.index.azstats.hdi(prob=0.9, dim=["chain", "draw", "path"]).values.ravel()
    out["hdi"] = [int(hdi[0]), int(hdi[1])]
    out["p_decoupled_end"] = float(dt.prob_by_time.isel(time=-1).values.ravel()[0])

    if kind == "decoupling":
        ew = ratchet_fit.early_warning(0.8)
        feedback = pd.Series(data["feedback"].to_numpy(float))
        alarms = {
            "model": (ew.probability >= ew.threshold).values.ravel(),
            "rule": analysis.feedback_rule_alarm(feedback, baseline=20, n_sd=2.0).values,
        }
        for name, alarm in alarms.items():
            out[f"{name}_detect"] = first_alarm(alarm)
            out[f"{name}_after"] = first_alarm(alarm, start=tau)

    if task["compare"]:
        rw_fit = pl.fit(make_spec("random_walk"), data, seed=seed + 1, check=False, **sample)
        fits = {"ratchet": ratchet_fit, "random_walk": rw_fit}
        out["rhat"]["random_walk"] = worst_rhat(rw_fit)
        loo = analysis.compare(fits, method="loo")
        out["loo_best"] = str(loo.index[0])
        out["loo_diff"] = float(loo["elpd_diff"].iloc[1])
        out["loo_high_k"] = {str(k): int(v) for k, v in loo["n_high_k"].items()}
        lfo = analysis.compare(
            fits,
            method="lfo",
            min_observations=task["lfo_min"],
            forecast_horizon=task.get("lfo_horizon", 1),
            k_threshold=0.7,
            draws=task["refit_draws"],
            tune=task["refit_draws"],
            chains=2,
            seed=seed,
            cores=task["cores"],
        )
        out["lfo_best"] = str(lfo.index[0])
        out["lfo_diff"] = float(lfo["elpd_diff"].iloc[1])
        out["lfo_refits"] = {str(k): int(v) for k, v in lfo["n_refits"].items()}
    out["seconds"] = time.perf_counter() - t0
    out["task"] = task_key(task)
    return out


# --------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------


def report(
    results: list[dict[str, Any]], args: argparse.Namespace
) -> list[tuple[str, str, str, bool]]:
    dec = [r for r in results if r["kind"] == "decoupling"]
    null = [r for r in results if r["kind"] == "null"]
    n_steps = args.steps
    near = sum(abs(r["median"] - r["tau"]) <= 3 for r in dec)
    cover = sum(r["hdi"][0] <= r["tau"] <= r["hdi"][1] for r in dec)
    low_p = sum(r["p_decoupled_end"] < 0.2 for r in null)
    scale = len(dec) / 20 if dec else 1.0
    rows = []
    # A group the run left out (e.g. --n-null 0) gets no row: "0/0 PASS" would read as a result.
    if dec:
        rows += [
            (
                "median within 3 steps of truth",
                f"{near}/{len(dec)}",
                f">= {int(np.ceil(18 * scale))}",
                near >= np.ceil(18 * scale),
            ),
            (
                "90% HDI covers truth",
                f"{cover}/{len(dec)}",
                f"{int(np.floor(16 * scale))}-{len(dec)}",
                cover >= np.floor(16 * scale),
            ),
        ]
    if null:
        rows.append(
            (
                "no decoupling: P(decoupled by end) < 0.2",
                f"{low_p}/{len(null)}",
                f">= {int(np.ceil(9 * len(null) / 10))}",
                low_p >= np.ceil(9 * len(null) / 10),
            )
        )
    for method in ("loo", "lfo"):
        for dgp in ("ratchet", "random_walk"):
            group = [
                r
                for r in results
                if f"{method}_best" in r and (r["kind"] == "random_walk") == (dgp == "random_walk")
            ]
            if not group:
                continue
            wins = sum(r[f"{method}_best"] == dgp for r in group)
            need = int(np.ceil(8 * len(group) / 10))
            rows.append(
                (
                    f"{method.upper()} picks {dgp} when it generated the data",
                    f"{wins}/{len(group)}",
                    f">= {need}",
                    wins >= need,
                )
            )
    if dec:
        # Detection delay as in change-point detection: from the true change to
        # the first alarm at or after it; an alarm before it is a false alarm,
        # counted on its own row.  The first alarm whenever it comes is also
        # shown, because on this DGP the feedback rule fires on the
        # constraint's rise before any decoupling (see the module docstring).
        delay = {}
        for name in ("model", "rule"):
            after = np.array([r[f"{name}_after"] - r["tau"] for r in dec], float)
            first = np.array([r[f"{name}_detect"] - r["tau"] for r in dec], float)
            # An alarm that never comes counts as T - tau (censored at the end of the data).
            never = sum(r[f"{name}_after"] >= n_steps for r in dec)
            early = sum(r[f"{name}_detect"] < r["tau"] for r in dec)
            delay[name] = float(np.median(after))
            label = "filtered P >= 0.8" if name == "model" else "2-sd feedback rule"
            rows += [
                (
                    f"early warning, {label}: median delay to the first alarm at or after "
                    "the decoupling",
                    f"{delay[name]:+.1f} ({never} never)",
                    "",
                    True,
                ),
                (
                    f"early warning, {label}: datasets alarmed before the decoupling",
                    f"{early}/{len(dec)}",
                    "",
                    True,
                ),
                (
                    f"early warning, {label}: median delay to the first alarm",
                    f"{float(np.median(first)):+.1f}",
                    "",
                    True,
                ),
            ]
        rows.append(
            (
                "model detects earlier in the median",
                f"{delay['model']:+.1f} < {delay['rule']:+.1f}",
                "yes",
                delay["model"] < delay["rule"],
            )
        )
    return rows


def _dataset_line(r: dict[str, Any]) -> str:
    extra = ""
    if "model_detect" in r:
        extra += f" detect {r['model_detect']}/{r['rule_detect']}"
        extra += f" after {r['model_after']}/{r['rule_after']}"
    rhat = ""
    if "rhat" in r:
        rhat = " R-hat " + "/".join(f"{v:.3f}" for v in r["rhat"].values())
        rhat += f" ({r['path']})"
    if "loo_best" in r:
        extra += f" loo {r['loo_best']} ({r['loo_diff']:.1f})"
        extra += f" lfo {r['lfo_best']} ({r['lfo_diff']:.1f}, refits {r['lfo_refits']})"
    return (
        f"  {r['kind']:<11} {r['seed']} tau {r['tau']:>3} median {r['median']:>3} "
        f"hdi {r['hdi']} p_end {r['p_decoupled_end']:.2f} "
        f"div {r['divergences']}{rhat} {r['seconds']:.0f} s{extra}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ci", action="store_true", help="small CI version")
    parser.add_argument("--n-decoupling", type=int, default=20)
    parser.add_argument("--n-null", type=int, default=10)
    parser.add_argument(
        "--n-compare", type=int, default=10, help="datasets per DGP in the comparison"
    )
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--tune", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--paths", type=int, default=1, help="FFBS paths per draw")
    parser.add_argument("--lfo-min", type=int, default=100, help="first LFO forecast origin")
    parser.add_argument(
        "--lfo-horizon", type=int, default=1, help="LFO forecast horizon M (steps scored jointly)"
    )
    parser.add_argument("--refit-draws", type=int, default=500)
    parser.add_argument("--window-low", type=int, default=30)
    parser.add_argument("--window-high", type=int, default=100)
    parser.add_argument(
        "--compare-param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="truth of the ratchet-generated comparison datasets (repeatable); given, they are "
        "drawn apart from the decoupling datasets",
    )
    parser.add_argument(
        "--compare-rw-param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="truth of the random-walk-generated comparison datasets (repeatable)",
    )
    parser.add_argument("--seed", type=int, default=20261127)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="per-dataset results (JSON), rewritten as each dataset finishes",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the datasets --out already holds for these settings and run the rest",
    )
    args = parser.parse_args()
    if args.resume and args.out is None:
        parser.error("--resume needs --out: the file of results to continue")
    if args.out is not None and args.out.exists() and not args.resume:
        parser.error(f"--out {args.out} exists; pass --resume to continue it, or another path")
    if args.ci:
        # CI sizes apply where the command line left the full-study default.
        ci = {"n_decoupling": 4, "n_null": 2, "n_compare": 2, "draws": 300, "tune": 300}
        ci |= {"chains": 2, "lfo_min": args.steps - 5, "refit_draws": 200}
        for key, value in ci.items():
            if getattr(args, key) == parser.get_default(key):
                setattr(args, key, value)

    t0 = time.perf_counter()
    chosen = choose_datasets(args)
    common = {
        "steps": args.steps,
        "draws": args.draws,
        "tune": args.tune,
        "chains": args.chains,
        "paths": args.paths,
        "lfo_min": args.lfo_min,
        "lfo_horizon": args.lfo_horizon,
        "refit_draws": args.refit_draws,
        "cores": 1 if args.jobs > 1 else None,
    }
    tasks = []
    for i, (seed, tau) in enumerate(chosen["decoupling"]):
        tasks.append(
            {
                "kind": "decoupling",
                "seed": seed,
                "tau": tau,
                "compare": i < args.n_compare and not args.compare_param,
                **common,
            }
        )
    tasks += [
        {"kind": "null", "seed": s, "tau": tau, "compare": False, **common}
        for s, tau in chosen["null"]
    ]
    tasks += [
        {
            "kind": "ratchet",
            "seed": s,
            "tau": tau,
            "compare": True,
            "params": compare_truth(args),
            **common,
        }
        for s, tau in chosen.get("ratchet", [])
    ]
    tasks += [
        {
            "kind": "random_walk",
            "seed": s,
            "tau": tau,
            "compare": True,
            "params": compare_truth(args, "random_walk"),
            **common,
        }
        for s, tau in chosen["random_walk"]
    ]
    # Longest tasks first so the pool drains evenly, the two sides of the
    # comparison alternating so that a run cut short has results for both.
    seen: dict[str, int] = {}
    position = []
    for t in tasks:
        position.append(seen.get(t["kind"], 0))
        seen[t["kind"]] = position[-1] + 1
    order = sorted(range(len(tasks)), key=lambda i: (not tasks[i]["compare"], position[i]))
    tasks = [tasks[i] for i in order]
    # Each dataset's line is printed as it finishes: the full study runs for hours.
    print(
        "per dataset: kind seed tau median hdi p_end "
        "[detect model/rule, first alarm; after: at or after tau] [loo lfo]"
    )
    results = resumed(tasks, args.out) if args.resume else []
    for r in results:
        print(_dataset_line(r) + " (kept)", flush=True)
    done = {r["task"] for r in results}
    todo = [t for t in tasks if task_key(t) not in done]

    def finished(r: dict[str, Any]) -> None:
        results.append(r)
        print(_dataset_line(r), flush=True)
        if args.out is not None:
            save_results(results, args.out)

    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            for r in pool.map(run_task, todo):
                finished(r)
    else:
        for t in todo:
            finished(run_task(t))

    rows = report(results, args)
    print(
        f"\nissue 4 acceptance: T = {args.steps}, {args.chains} x {args.draws} draws "
        f"(tune {args.tune}), "
        f"LFO from t = {args.lfo_min}, {args.lfo_horizon}-step, "
        f"refits {args.refit_draws} draws, {args.jobs} job(s)"
        f"{' [CI size]' if args.ci else ''}"
    )
    for side in ("ratchet", "random_walk"):
        truth = compare_truth(args, side)
        if truth:
            values = ", ".join(f"{k} = {v:g}" for k, v in truth.items())
            print(f"comparison data from the {side}: {values}")
    print()
    width = max(len(r[0]) for r in rows) + 2
    print(f"{'check':<{width}}{'result':>26}{'target':>10}  ok")
    for name, result, target, ok in rows:
        print(f"{name:<{width}}{result:>26}{target:>10}  {'PASS' if ok else 'FAIL'}")
    divs = sum(r["divergences"] for r in results)
    rhats = [v for r in results for v in r.get("rhat", {}).values()]
    print(
        f"\n{len(results)} datasets, {divs} divergent transitions in all ratchet fits, "
        f"{time.perf_counter() - t0:.0f} s wall"
    )
    if rhats:
        print(
            f"parameter R-hat of the {len(rhats)} full fits: largest {max(rhats):.3f}, "
            f"{sum(v > 1.01 for v in rhats)} above 1.01"
        )


if __name__ == "__main__":
    main()
