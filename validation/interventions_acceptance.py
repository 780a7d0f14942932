"""Acceptance study of intervention timings (issue 5).

On a world simulated from the canonical ratchet model with one exposure
(models/decoupling.toml plus ``exposures = ["x"]``), fitted with nutpie:

1. the scenario simulator uses the model's own dynamics: transition
   probabilities on each draw's path equal the fit's kernel inputs, and the
   baseline reproduces each draw's fitted constraint path (target < 1e-9);
2. the expected final constraint rises with the delay of an exposure
   reduction over 12 timings, and draw by draw (target: every draw);
3. a narrative reset after the absorbing lock-in changes nothing (target: every
   locked draw identical), before it changes the path (every draw still
   tracking at tau whose baseline later locks in);
4. feedback decouples: the feedback rule acts later than the posterior trigger
   and ends with a higher constraint (reported: timings and the gap), on the fit
   and on 400 synthetic worlds;
5. a deterministic limit (noise 1e-9) where the point of no return is 11 by hand;
6. bad input raises InterventionError before any simulation.

Usage:
    python validation/interventions_acceptance.py          # draws 500, tune 500, 2 chains
    python validation/interventions_acceptance.py --ci     # draws 150, tune 300
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import warnings
from typing import Any

import numpy as np
import pandas as pd

import pathlock as pl
from pathlock import dims, observations
from pathlock import interventions as iv
from pathlock.errors import InterventionError
from pathlock.spec import Spec


def simulate_data(seed: int, n_steps: int) -> tuple[pd.DataFrame, Any]:
    """One world of the model (the model's own code), with an indicator and a feedback signal."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 2.0, n_steps)
    k = 2
    world = iv.simulate_worlds(
        "ratchet",
        {"mu": np.full((1, 1), -1.5), "sigma": np.full((1, 1), 0.3), "beta": np.ones((1, 1, 1))},
        iv.HazardTransitions("absorbing", np.full((1, 1, k, k), -4.0), np.full((1, 1, k, k), 0.35)),
        iv.FeedbackModel(
            ("normal",),
            np.zeros((1, 1, 1, k)),
            np.array([1.0, 0.0]).reshape(1, 1, 1, k),
            {"sigma": np.full((1, 1, 1, k), 0.3)},
        ),
        n_steps=n_steps,
        init=np.zeros((1, 1)),
        seed=seed,
        exposures=x.reshape(1, n_steps, 1),
        absorbing=(1,),
    )
    c = world.constraint[0, 0]
    z = observations.draw("normal", c, {"sigma": 0.3}, rng)
    df = pd.DataFrame(
        {"time": np.arange(n_steps), "indicator": z, "feedback": world.feedback[0, 0, :, 0], "x": x}
    )
    return df, world


def fit_world(args: argparse.Namespace) -> tuple[Any, Any]:
    df, truth = simulate_data(args.seed, args.n_steps)
    spec = Spec.from_toml("models/decoupling.toml")
    spec = dataclasses.replace(
        spec, constraint=dataclasses.replace(spec.constraint, exposures=("x",))
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = pl.fit(spec, df, draws=args.draws, tune=args.tune, chains=args.chains, seed=args.seed)
    return fit, truth


def check_dynamics(fit: Any) -> dict[str, float]:
    worlds = iv.worlds_from_fit(fit, rng=0)
    lt = np.exp(fit.regime_inputs().log_trans)
    mine = np.stack(
        [
            iv._grid_transitions(worlds.transitions, worlds.constraint[..., t - 1], None)
            for t in range(1, worlds.n_steps)
        ],
        axis=2,
    )
    res = pl.compare_timings(fit, [], horizon=5, seed=1)
    c = res.outcomes["constraint"].sel(scenario="never").isel(time=slice(0, worlds.n_steps))
    return {
        "transitions": float(np.abs(mine - lt[:, :, 1:]).max()),
        "baseline": float(np.abs(c - fit.idata.posterior["constraint"]).max()),
    }


def check_delay(fit: Any, horizon: int) -> dict[str, Any]:
    n = fit.data.n_steps
    times = list(range(0, n + horizon, (n + horizon) // 12))[:12]
    res = pl.compare_timings(
        fit, iv.timing_scenarios(iv.ReduceExposure(0.5), times), horizon=horizon, seed=2
    )
    final = res.outcomes["constraint_final"].sel(scenario=[f"at {t}" for t in times])
    beta = fit.idata.posterior["constraint_beta"].values[..., 0]
    steps = np.diff(final.values, axis=0)[..., 0]  # (timing, chain, draw)
    monotone = np.all(steps >= 0, axis=0)
    means = final.mean(list(dims.SAMPLE_DIMS)).values[:, 0]
    return {
        "n_timings": len(times),
        "means": means,
        "mean_monotone": bool(np.all(np.diff(means) > 0)),
        "draws_monotone": float(monotone.mean()),
        "draws_beta_positive": float((beta > 0).mean()),
        "draws_monotone_given_beta_positive": float(monotone[beta > 0].mean()),
        "delay_cost": res.delay_cost().values[1:, 0],
    }


def check_reset(fit: Any, horizon: int) -> dict[str, Any]:
    """Reset once every draw has locked in (nothing may change) and before any has."""
    worlds = iv.worlds_from_fit(fit, rng=3)
    n = worlds.n_steps
    locked_any = (worlds.regimes == 1).any(axis=-1)
    first = np.where(locked_any, np.argmax(worlds.regimes == 1, axis=-1), n)
    tau_after = int(min(first[locked_any].max(), n - 1))
    tau_before = int(max(first.min() - 1, 0))
    scenarios = [
        iv.Scenario("reset after", iv.ResetNarrative(), iv.At(tau_after)),
        iv.Scenario("reset before", iv.ResetNarrative(), iv.At(tau_before)),
    ]
    res = pl.compare_timings(fit, scenarios, horizon=horizon, seed=3)
    out = res.outcomes
    never = out.sel(scenario="never")
    after, before = out.sel(scenario="reset after"), out.sel(scenario="reset before")
    locked = (never["regime"].isel(time=tau_after) == 1).values
    same_after = (after["regime"] == never["regime"]).all(dims.TIME).values
    tracking = (never["regime"].isel(time=tau_before) == 0).values
    later = tracking & (never["regime"].isel(time=-1) == 1).values
    same_before = (before["regime"] == never["regime"]).all(dims.TIME).values
    return {
        "tau_after": tau_after,
        "tau_before": tau_before,
        "locked_share": float(locked.mean()),
        "locked_unchanged": float(same_after[locked].mean()) if locked.any() else float("nan"),
        "blocked_reported": bool(np.array_equal(after["reset_blocked"].values, locked)),
        "tracking_changed": float((~same_before[later]).mean()) if later.any() else float("nan"),
    }


def rule_vs_trigger(source: Any, horizon: int, threshold: float) -> dict[str, float]:
    scenarios = [
        iv.Scenario("rule", iv.ReduceExposure(0.8), iv.FeedbackRule(_signal(source), threshold)),
        iv.Scenario("trigger", iv.ReduceExposure(0.8), iv.PosteriorTrigger(0.8)),
    ]
    res = pl.compare_timings(source, scenarios, horizon=horizon, seed=4)
    out = res.outcomes
    n_t = out.sizes[dims.TIME]
    acted = out["acted"]
    pos = _positions(out)
    pos = pos.where(acted, n_t)  # never acting counts as acting after the end
    final = out["constraint_final"]
    gap = final.sel(scenario="rule") - final.sel(scenario="trigger")
    return {
        "rule_p_acted": float(acted.sel(scenario="rule").mean()),
        "trigger_p_acted": float(acted.sel(scenario="trigger").mean()),
        "rule_mean_tau": float(pos.sel(scenario="rule").mean()),
        "trigger_mean_tau": float(pos.sel(scenario="trigger").mean()),
        "p_rule_later": float((pos.sel(scenario="rule") > pos.sel(scenario="trigger")).mean()),
        "final_rule": float(final.sel(scenario="rule").mean()),
        "final_trigger": float(final.sel(scenario="trigger").mean()),
        "gap_mean": float(gap.mean()),
        "p_trigger_beats_rule": float(res.beats("trigger", "rule").values[0]),
    }


def _signal(source: Any) -> str:
    if isinstance(source, iv.Worlds):
        return str(source.coords[dims.SIGNAL][0])
    return str(source.spec.signal_names[0])


def _positions(out: Any) -> Any:
    from pathlock.interventions import _tau_positions

    return _tau_positions(out)


def synthetic_decoupling_worlds() -> iv.Worlds:
    n, k = 400, 2
    rng = np.random.default_rng(7)
    return iv.simulate_worlds(
        "ratchet",
        {
            "mu": -0.7 + 0.05 * rng.standard_normal((n, 1)),
            "sigma": np.full((n, 1), 0.3),
            "beta": np.ones((n, 1, 1)),
        },
        iv.HazardTransitions("absorbing", np.full((n, 1, k, k), -5.0), np.full((n, 1, k, k), 1.0)),
        iv.FeedbackModel(
            ("normal",),
            np.zeros((n, 1, 1, k)),
            np.broadcast_to(np.array([1.0, 0.0]), (n, 1, 1, k)).copy(),
            {"sigma": np.full((n, 1, 1, k), 0.3)},
        ),
        n_steps=4,
        init=np.zeros((n, 1)),
        seed=7,
        n_chains=2,
        exposures=np.ones((1, 4, 1)),
        absorbing=(1,),
    )


def check_point_of_no_return() -> dict[str, Any]:
    n = 20
    worlds = iv.simulate_worlds(
        "ratchet",
        {
            "mu": np.zeros((n, 1)),
            "sigma": np.full((n, 1), 1e-9),
            "beta": np.full((n, 1, 1), np.log(3)),
        },
        iv.HazardTransitions("absorbing", np.full((n, 1, 2, 2), -50.0), np.zeros((n, 1, 2, 2))),
        iv.FeedbackModel(
            ("normal",),
            np.zeros((n, 1, 1, 2)),
            np.ones((n, 1, 1, 2)),
            {"sigma": np.ones((n, 1, 1, 2))},
        ),
        n_steps=5,
        init=np.zeros((n, 1)),
        seed=0,
        n_chains=2,
        exposures=np.ones((1, 5, 1)),
        absorbing=(1,),
    )
    res = pl.compare_timings(
        worlds, iv.timing_scenarios(iv.ReduceExposure(1.0), range(20)), horizon=15, seed=0
    )
    pnr = res.point_of_no_return(target=40.0, level=0.5)
    # C_19 = 3 tau + (19 - tau) = 19 + 2 tau < 40  <=>  tau <= 10.
    return {"computed": pnr.time.values.tolist()[0], "by_hand": 11}


def check_bad_input(fit: Any) -> dict[str, Any]:
    cases = {
        "tau outside data and horizon": lambda: [
            iv.Scenario("s", iv.ReduceExposure(0.5), iv.At(10_000))
        ],
        "factor outside [0, 1]": lambda: [iv.Scenario("s", iv.ReduceExposure(1.5), iv.At(1))],
        "unknown signal": lambda: [
            iv.Scenario("s", iv.ReduceExposure(0.5), iv.FeedbackRule("nope", 1.0))
        ],
        "relief of a ratchet": lambda: [iv.Scenario("s", iv.Relieve(1.0), iv.At(1))],
    }
    original = iv.simulate_scenarios
    iv.simulate_scenarios = None  # type: ignore[assignment]  # any simulation would crash
    raised = {}
    try:
        for name, make in cases.items():
            try:
                pl.compare_timings(fit, make(), horizon=5, seed=0)
                raised[name] = "no error"
            except InterventionError as exc:
                raised[name] = str(exc)
            except Exception as exc:
                raised[name] = f"WRONG {type(exc).__name__}: {exc}"
    finally:
        iv.simulate_scenarios = original
    return raised


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ci", action="store_true", help="short chains")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--n-steps", type=int, default=40)
    parser.add_argument("--horizon", type=int, default=20)
    args = parser.parse_args()
    args.draws, args.tune, args.chains = (150, 300, 2) if args.ci else (500, 500, 2)

    t0 = time.perf_counter()
    fit, truth = fit_world(args)
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    dyn = check_dynamics(fit)
    delay = check_delay(fit, args.horizon)
    reset = check_reset(fit, args.horizon)
    on_fit = rule_vs_trigger(fit, args.horizon, threshold=8.0)
    synth = rule_vs_trigger(synthetic_decoupling_worlds(), 60, threshold=8.0)
    pnr = check_point_of_no_return()
    bad = check_bad_input(fit)
    t_checks = time.perf_counter() - t0

    rows = [
        (
            "model transitions reproduced (max abs diff)",
            f"{dyn['transitions']:.1e}",
            "< 1e-10",
            dyn["transitions"] < 1e-10,
        ),
        (
            "baseline reproduces fitted path (max abs)",
            f"{dyn['baseline']:.1e}",
            "< 1e-9",
            dyn["baseline"] < 1e-9,
        ),
        (
            f"E[final C] rises over {delay['n_timings']} delays",
            str(delay["mean_monotone"]),
            "True",
            delay["mean_monotone"],
        ),
        (
            "draws monotone in delay (share)",
            f"{delay['draws_monotone']:.3f}",
            "1.000",
            delay["draws_monotone"] == 1.0,
        ),
        ("  (share of draws with beta > 0)", f"{delay['draws_beta_positive']:.3f}", "", True),
        (
            f"reset at {reset['tau_after']} (locked share {reset['locked_share']:.2f}): unchanged",
            f"{reset['locked_unchanged']:.3f}",
            "1.000",
            reset["locked_unchanged"] == 1.0,
        ),
        (
            "reset after lock-in: reset_blocked reported",
            str(reset["blocked_reported"]),
            "True",
            reset["blocked_reported"],
        ),
        (
            f"reset at {reset['tau_before']}, before lock-in: path changed",
            f"{reset['tracking_changed']:.3f}",
            "1.000",
            reset["tracking_changed"] == 1.0,
        ),
        (
            "point of no return, deterministic limit",
            str(pnr["computed"]),
            str(pnr["by_hand"]),
            pnr["computed"] == pnr["by_hand"],
        ),
    ]
    for label, r in (("fit", on_fit), ("synthetic", synth)):
        rows += [
            (
                f"[{label}] mean tau rule / trigger",
                f"{r['rule_mean_tau']:.1f} / {r['trigger_mean_tau']:.1f}",
                "rule later",
                r["rule_mean_tau"] > r["trigger_mean_tau"],
            ),
            (
                f"[{label}] P(acted) rule / trigger",
                f"{r['rule_p_acted']:.2f} / {r['trigger_p_acted']:.2f}",
                "",
                True,
            ),
            (
                f"[{label}] E[final C] rule / trigger",
                f"{r['final_rule']:.2f} / {r['final_trigger']:.2f}",
                "rule higher",
                r["gap_mean"] > 0,
            ),
            (
                f"[{label}] gap (rule - trigger), relative",
                f"{r['gap_mean']:.2f} ({r['gap_mean'] / r['final_trigger']:.0%})",
                "",
                True,
            ),
            (
                f"[{label}] P(trigger beats rule)",
                f"{r['p_trigger_beats_rule']:.2f}",
                "> 0.5",
                r["p_trigger_beats_rule"] > 0.5,
            ),
        ]
    ok_bad = all(not v.startswith(("no error", "WRONG")) for v in bad.values())
    rows.append(
        (
            "bad input refused before simulation",
            f"{sum(not v.startswith(('no error', 'WRONG')) for v in bad.values())}/{len(bad)}",
            f"{len(bad)}/{len(bad)}",
            ok_bad,
        )
    )

    width = max(len(r[0]) for r in rows) + 2
    print(
        f"fit: {args.draws} draws x {args.chains} chains, tune {args.tune}, T = {args.n_steps}, "
        f"horizon {args.horizon}; true lock-in at t = {int(np.argmax(truth.regimes[0, 0] == 1))}; "
        f"fit {t_fit:.0f} s, checks {t_checks:.0f} s"
    )
    print(f"{'check':<{width}}{'result':>28}{'target':>14}  ok")
    for name, result, target, ok in rows:
        print(f"{name:<{width}}{result:>28}{target:>14}  {'PASS' if ok else 'FAIL'}")
    print("E[final C] by timing:", np.round(delay["means"], 2).tolist())
    print("cost of one step of delay (E[final C]):", np.round(delay["delay_cost"], 3).tolist())
    for name, msg in bad.items():
        print(f"  {name}: {msg[:110]}")


if __name__ == "__main__":
    main()
