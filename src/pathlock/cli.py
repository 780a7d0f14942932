"""The ``pathlock`` command line: run, fit, simulate, timings, report, summary, datasets.

Every subcommand validates its input before any work, writes its outputs
atomically (into a temporary sibling that is renamed into place, so an
interrupted run leaves the previous result intact), never overwrites a result
without ``--force``, and exits 0 on success, 2 on bad input (one line naming
the problem) and 1 on anything else.  The command line only parses and
orchestrates; modelling lives in the library.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pathlock.errors import PathlockError

__all__ = ["main"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BAD_INPUT = 2

#: Bundled default for ``pathlock run``.
DEFAULT_DATASET = "decoupling_demo"
DEFAULT_MODEL = "decoupling"
FIT_FILE = "fit.nc"
TIMINGS_FILE = "timings.nc"
REPORT_DIR = "report"


class BadInput(PathlockError):
    """A command-line argument that cannot be used."""


# --------------------------------------------------------------------------- output


class _Console:
    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self._t0 = time.perf_counter()

    def step(self, message: str) -> None:
        if not self.quiet:
            print(
                f"[{time.perf_counter() - self._t0:6.1f}s] {message}", file=sys.stderr, flush=True
            )

    def out(self, text: str) -> None:
        print(text, flush=True)


@contextlib.contextmanager
def _atomic_dir(target: Path, force: bool) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``target`` only if the block succeeds."""
    target = target.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        if not force:  # pragma: no cover - checked before work starts
            shutil.rmtree(tmp, ignore_errors=True)
            raise BadInput(f"{target} exists; pass --force to replace it")
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _atomic_file(target: Path) -> Iterator[Path]:
    """Yield a temporary path that is renamed to ``target`` only if the block succeeds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, target)


def _check_new(path: Path, force: bool, what: str) -> None:
    if path.exists() and not force:
        raise BadInput(f"{what} {path} exists; pass --force to replace it")


def _existing_file(path: str, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise BadInput(f"{what} {p} does not exist")
    if not p.is_file():
        raise BadInput(f"{what} {p} is not a file")
    return p


def _result_dir(path: str) -> Path:
    p = Path(path)
    if not (p / FIT_FILE).exists():
        if p.is_file() and p.suffix == ".nc":
            return p.parent if p.name == FIT_FILE else p
        raise BadInput(
            f"result {p} has no {FIT_FILE}; expected a directory written by "
            "'pathlock fit' or 'pathlock run'"
        )
    return p


def _load_result(path: str) -> tuple[Path, Any]:
    from pathlock.fit import load_fit

    p = _result_dir(path)
    fit_path = p / FIT_FILE if p.is_dir() else p
    return (p if p.is_dir() else p.parent), load_fit(fit_path)


# --------------------------------------------------------------------------- pieces


def _load_spec(path: str) -> Any:
    from pathlock.build import load_spec

    return load_spec(_existing_file(path, "model file"))


def _read_data(spec: Any, csv: str, time_col: str | None, unit_col: str | None) -> Any:
    path = _existing_file(csv, "data file")
    if getattr(spec, "family", None) == "decoupling":
        changes = {}
        if time_col is not None:
            changes["time"] = time_col
        if unit_col is not None:
            changes["unit"] = unit_col
        if changes:
            spec = dataclasses.replace(spec, data=dataclasses.replace(spec.data, **changes))
        return spec, spec.prepare_data(path)
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise BadInput(f"data file {path} is not a readable CSV: {exc}") from None
    col = time_col or frame.columns[0]
    if col not in frame.columns:
        raise BadInput(f"time column {col!r} not in {path}; columns: {list(frame.columns)}")
    frame = frame.set_index(col)
    with contextlib.suppress(ValueError, TypeError):
        frame.index = pd.to_datetime(frame.index)
    return spec, spec.prepare_data(frame)


def _sampler_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("draws", "tune", "chains", "seed", "sampler", "backend"):
        value = getattr(args, name, None)
        if value is not None:
            out[name] = value
    return out


def _fit_and_save(spec: Any, data: Any, out: Path, args: argparse.Namespace, con: _Console) -> Any:
    from pathlock.fit import ConvergenceWarning, fit

    # Measured on 2 cores: `pathlock run` took 89 s to sample with an empty
    # compile cache, 15 s with the model in it.
    con.step(
        "sampling (the first fit of a model on a machine compiles it, about 70 s "
        "on 2 cores; later fits load it from the disk cache in seconds)"
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        result = fit(spec, data, progress=not args.quiet, **_sampler_kwargs(args))
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            print(f"pathlock: warning: {w.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    result.save(out / FIT_FILE)
    (out / "spec.toml").write_text(spec.to_toml())
    _write_summary(result, out)
    return result


def _write_summary(result: Any, out: Path) -> pd.DataFrame:
    table = result.summary()
    table.to_csv(out / "summary.csv")
    return table


def _manifest(out: Path, argv: Sequence[str], extra: dict[str, Any] | None = None) -> None:
    from pathlock import __version__

    doc = {"command": ["pathlock", *argv], "pathlock_version": __version__, **(extra or {})}
    (out / "manifest.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")


# --------------------------------------------------------------------------- timings


def _parse_intervention(text: str) -> Any:
    from pathlock import interventions as iv

    kind, _, value = text.partition(":")
    kind = kind.strip().lower().replace("-", "_")
    makers = {
        "reduce_exposure": lambda v: iv.ReduceExposure(float(v)),
        "lower_hazard": lambda v: iv.LowerHazard(float(v)),
        "relieve": lambda v: iv.Relieve(float(v)),
        "reset_narrative": lambda v: iv.ResetNarrative(),
    }
    if kind not in makers:
        raise BadInput(
            f"--intervention {text!r}: unknown kind {kind!r}; expected one of "
            "reduce_exposure:FACTOR, lower_hazard:FACTOR, relieve:AMOUNT, reset_narrative"
        )
    if kind != "reset_narrative" and not value:
        raise BadInput(f"--intervention {text!r}: {kind} needs a value, e.g. {kind}:0.5")
    try:
        return makers[kind](value)
    except ValueError as exc:
        if isinstance(exc, PathlockError):
            raise
        raise BadInput(f"--intervention {text!r}: {value!r} is not a number") from None


def _parse_time_label(text: str, time_coord: np.ndarray) -> Any:
    if np.issubdtype(time_coord.dtype, np.datetime64):
        try:
            return pd.Timestamp(text)
        except ValueError:
            raise BadInput(f"--at {text!r}: not a date; the data's time axis holds dates") from None
    try:
        return int(text)
    except ValueError:
        raise BadInput(
            f"--at {text!r}: not an integer; the data's time axis holds integers"
        ) from None


def _parse_policy(text: str) -> Any:
    from pathlock import interventions as iv

    kind, _, rest = text.partition(":")
    kind = kind.strip().lower()
    parts = rest.split(":") if rest else []
    try:
        if kind == "feedback" and len(parts) in (2, 3):
            direction = parts[2] if len(parts) == 3 else "above"
            return iv.FeedbackRule(parts[0], float(parts[1]), direction)  # type: ignore[arg-type]
        if kind == "posterior" and len(parts) == 1:
            return iv.PosteriorTrigger(float(parts[0]))
    except ValueError as exc:
        if isinstance(exc, PathlockError):
            raise
        raise BadInput(f"--policy {text!r}: {exc}") from None
    raise BadInput(
        f"--policy {text!r}: expected feedback:SIGNAL:THRESHOLD[:above|below] or posterior:P"
    )


def _scenarios(fit: Any, interventions: list[Any], at: list[str], policies: list[str]) -> list[Any]:
    from pathlock import dims
    from pathlock import interventions as iv

    time_coord = np.asarray(fit.idata["observed_data"][dims.TIME].values)
    labels = [
        _parse_time_label(a.strip(), time_coord)
        for chunk in at
        for a in chunk.split(",")
        if a.strip()
    ]
    scenarios = iv.timing_scenarios(interventions, labels) if labels else []
    for text in policies:
        policy = _parse_policy(text)
        scenarios.append(iv.Scenario(text, tuple(interventions), policy))
    if not scenarios:
        raise BadInput("give at least one --at time or --policy")
    return scenarios


def _save_timings(result: Any, path: Path) -> None:
    from pathlock.interventions import save_timings

    with _atomic_file(path) as tmp:
        save_timings(result, tmp)


def _default_scenarios(fit: Any) -> list[Any]:
    """A timing family for ``pathlock run``: halve the exposures at ten times, plus two rules."""
    from pathlock import dims
    from pathlock import interventions as iv

    time_coord = np.asarray(fit.idata["observed_data"][dims.TIME].values)
    n = time_coord.size
    picks = np.unique(np.linspace(0, n - 1, 10).round().astype(int))
    action = iv.ReduceExposure(0.5) if _has_exposures(fit) else iv.LowerHazard(0.9)
    scenarios = iv.timing_scenarios(action, [time_coord[i] for i in picks])
    return scenarios


def _has_exposures(fit: Any) -> bool:
    spec = fit.spec
    constraint = getattr(spec, "constraint", None)
    return bool(getattr(constraint, "exposures", ()))


# --------------------------------------------------------------------------- commands


def cmd_run(args: argparse.Namespace, con: _Console) -> int:
    from pathlock import datasets, dims

    out = Path(args.out)
    _check_new(out, args.force, "output directory")
    spec_path = Path(args.spec) if args.spec else datasets.model_path(DEFAULT_MODEL)
    spec = _load_spec(str(spec_path))
    if args.data:
        spec, data = _read_data(spec, args.data, args.time, args.unit)
        name = Path(args.data).stem
    else:
        entry = datasets.info(args.dataset)
        spec, data = _read_data(spec, str(datasets.path(args.dataset)), entry.time, entry.unit)
        name = args.dataset
    con.step(f"data {name!r}: {_describe(data)}; model {spec_path.name}")
    with _atomic_dir(out, args.force) as tmp:
        result = _fit_and_save(spec, data, tmp, args, con)
        timings = None
        if getattr(spec, "family", None) == "decoupling":
            con.step("comparing intervention timings")
            from pathlock.interventions import compare_timings

            timings = compare_timings(
                result,
                _default_scenarios(result),
                horizon=args.horizon,
                seed=args.seed,
                n_draws=args.timing_draws,
            )
            _save_timings(timings, tmp / TIMINGS_FILE)
        con.step("writing the report")
        # Without exposures only the narrative can be acted on: the constraint
        # path is the same under every timing, time spent decoupled is not.
        metric = "constraint_final" if _has_exposures(result) else "time_decoupled"
        target = args.target
        if target is None and timings is not None:
            # The point of no return needs a goal: by default, halving the harm.
            never = timings.outcomes[metric].sel({dims.SCENARIO: "never"})
            target = 0.5 * float(never.astype(float).median())
        html = _write_report(
            result,
            tmp / REPORT_DIR,
            timings,
            title=f"pathlock: {name}",
            metric=metric,
            target=target,
        )
        _manifest(tmp, sys.argv[1:], {"dataset": name, "model": str(spec_path)})
    con.step("done")
    con.out(str(out / REPORT_DIR / html.name))
    return EXIT_OK


def _describe(data: Any) -> str:
    ds = data.to_dataset()
    sizes = ", ".join(f"{k}={v}" for k, v in ds.sizes.items())
    return sizes


def _write_report(
    result: Any,
    out_dir: Path,
    timings: Any,
    title: str | None,
    metric: str | None = None,
    target: float | None = None,
) -> Path:
    from pathlock.report import write_report

    out_dir.mkdir(parents=True, exist_ok=True)
    if metric is None:
        metric = "constraint_final" if _has_exposures(result) else "time_decoupled"
    return Path(
        write_report(result, out_dir, timings=timings, title=title, metric=metric, target=target)
    )


def cmd_fit(args: argparse.Namespace, con: _Console) -> int:
    out = Path(args.out)
    _check_new(out, args.force, "output directory")
    spec = _load_spec(args.spec)
    spec, data = _read_data(spec, args.data, args.time, args.unit)
    con.step(f"data: {_describe(data)}")
    with _atomic_dir(out, args.force) as tmp:
        _fit_and_save(spec, data, tmp, args, con)
        _manifest(tmp, sys.argv[1:])
    con.out(str(out / FIT_FILE))
    return EXIT_OK


def cmd_simulate(args: argparse.Namespace, con: _Console) -> int:
    from pathlock.simulate import simulate

    out = Path(args.out)
    truth_path = out.with_name(out.stem + "_truth.csv")
    _check_new(out, args.force, "output file")
    _check_new(truth_path, args.force, "ground-truth file")
    spec = _load_spec(args.spec)
    if getattr(spec, "family", None) != "decoupling":
        raise BadInput(f"simulate needs a decoupling model file; {args.spec} is {spec.family!r}")
    if args.steps < 10:
        raise BadInput(f"--steps must be at least 10; found {args.steps}")
    if args.units < 1:
        raise BadInput(f"--units must be at least 1; found {args.units}")
    con.step(f"simulating {args.units} unit(s) x {args.steps} steps")
    frame, truth = simulate(spec, n_steps=args.steps, n_units=args.units, seed=args.seed)
    truth_frame = truth.to_dataset().to_dataframe().reset_index()
    if args.start is not None:
        try:
            grid = pd.date_range(args.start, periods=args.steps, freq=args.freq)
        except (ValueError, TypeError) as exc:
            raise BadInput(f"--start {args.start!r} / --freq {args.freq!r}: {exc}") from None
        time_col = spec.data.time
        frame[time_col] = grid[frame[time_col].to_numpy()]
        truth_frame["time"] = grid[truth_frame["time"].to_numpy()]
    params = {k: np.asarray(v).tolist() for k, v in truth.params.items()}
    with _atomic_file(out) as tmp:
        frame.to_csv(tmp, index=False)
    with _atomic_file(truth_path) as tmp:
        truth_frame.to_csv(tmp, index=False)
    with _atomic_file(truth_path.with_suffix(".json")) as tmp:
        doc = {"command": ["pathlock", *sys.argv[1:]], "params": params}
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
    con.out(str(out))
    return EXIT_OK


def cmd_timings(args: argparse.Namespace, con: _Console) -> int:
    result_dir, result = _load_result(args.result)
    target = result_dir / TIMINGS_FILE
    _check_new(target, args.force, "timings file")
    interventions = [_parse_intervention(t) for t in args.intervention]
    scenarios = _scenarios(result, interventions, args.at or [], args.policy or [])
    con.step(f"simulating {len(scenarios)} scenarios + baseline over {args.horizon} steps")
    from pathlock.interventions import compare_timings

    timings = compare_timings(
        result,
        scenarios,
        horizon=args.horizon,
        seed=args.seed,
        n_draws=args.draws,
        threshold=args.target,
    )
    _save_timings(timings, target)
    con.out(timings.table().to_string())
    if args.target is not None:
        pnr = timings.point_of_no_return(args.target, args.level)
        con.out(f"\npoint of no return (target {args.target}, level {args.level}):\n{pnr}")
    return EXIT_OK


def cmd_report(args: argparse.Namespace, con: _Console) -> int:
    result_dir, result = _load_result(args.result)
    out = Path(args.out) if args.out else result_dir / REPORT_DIR
    _check_new(out, args.force, "report directory")
    timings = None
    if (result_dir / TIMINGS_FILE).exists():
        from pathlock.interventions import load_timings

        timings = load_timings(result_dir / TIMINGS_FILE)
    with _atomic_dir(out, args.force) as tmp:
        html = _write_report(result, tmp, timings, title=args.title)
    con.out(str(out / html.name))
    return EXIT_OK


def cmd_summary(args: argparse.Namespace, con: _Console) -> int:
    _, result = _load_result(args.result)
    with pd.option_context("display.width", 160, "display.max_rows", 200):
        con.out(result.summary().to_string())
    return EXIT_OK


def cmd_datasets(args: argparse.Namespace, con: _Console) -> int:
    from pathlock import datasets

    for name, entry in sorted(datasets.registry().items()):
        con.out(f"{name:24s} {entry.file:32s} {entry.description}")
    return EXIT_OK


# --------------------------------------------------------------------------- parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer; found {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; found {value}")
    return value


def _sampling_options(
    p: argparse.ArgumentParser, *, defaults: dict[str, int] | None = None
) -> None:
    d = defaults or {}
    p.add_argument(
        "--draws",
        type=_positive_int,
        default=d.get("draws"),
        help="draws per chain (default: the model file's)",
    )
    p.add_argument(
        "--tune",
        type=_positive_int,
        default=d.get("tune"),
        help="tuning steps per chain (default: the model file's)",
    )
    p.add_argument(
        "--chains",
        type=_positive_int,
        default=d.get("chains"),
        help="number of chains (default: the model file's)",
    )
    p.add_argument("--seed", type=int, default=d.get("seed", 1), help="random seed (default 1)")
    p.add_argument(
        "--sampler",
        choices=["nutpie", "pymc"],
        default=None,
        help="NUTS implementation (default nutpie)",
    )
    p.add_argument(
        "--backend",
        choices=["numba", "jax"],
        default=None,
        help="what nutpie compiles the model with (default: the model file's, else numba; "
        "jax compiles in seconds, numba samples faster once compiled)",
    )


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress output (for scripts)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``pathlock`` command."""
    parser = argparse.ArgumentParser(
        prog="pathlock",
        description="Bayesian hidden-state models of irreversible social dynamics: when did "
        "feedback stop tracking the constraint, and what would acting earlier have changed?",
    )
    from pathlock import __version__

    parser.add_argument("--version", action="version", version=f"pathlock {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "run",
        help="the main job on the bundled default data: fit, analyse, compare timings, report",
        description="Fit the bundled decoupling model to the bundled demo data (or your own), "
        "compare intervention timings and write an HTML report.",
    )
    p.add_argument(
        "--out", default="pathlock-run", help="output directory (default ./pathlock-run)"
    )
    p.add_argument(
        "--dataset",
        default=DEFAULT_DATASET,
        help=f"bundled dataset (default {DEFAULT_DATASET}; see 'pathlock datasets')",
    )
    p.add_argument(
        "--spec", default=None, help="model file (default: the bundled models/decoupling.toml)"
    )
    p.add_argument("--data", default=None, help="your own CSV instead of the bundled dataset")
    p.add_argument("--time", default=None, help="time column of --data")
    p.add_argument("--unit", default=None, help="unit column of --data")
    p.add_argument(
        "--horizon", type=int, default=20, help="steps simulated beyond the data (default 20)"
    )
    p.add_argument(
        "--timing-draws",
        type=_positive_int,
        default=250,
        help="posterior draws per chain used for timings (default 250)",
    )
    p.add_argument(
        "--target",
        type=float,
        default=None,
        help="level the timing outcome should stay under, for the point of no return "
        "(default: half its median without intervention)",
    )
    p.add_argument("--force", action="store_true", help="replace an existing output directory")
    _sampling_options(p)
    _common(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "fit",
        help="fit a model file to a CSV",
        description="Fit SPEC to a CSV and write OUT/fit.nc, spec.toml and summary.csv.",
    )
    p.add_argument("spec", help="model file (TOML)")
    p.add_argument("--data", required=True, help="CSV file")
    p.add_argument("--time", default=None, help="time column (default: the model file's)")
    p.add_argument("--unit", default=None, help="unit column for long panel data")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--force", action="store_true", help="replace an existing output directory")
    _sampling_options(p)
    _common(p)
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser(
        "simulate",
        help="simulate data with known ground truth",
        description="Simulate data from a decoupling model file; the ground truth is "
        "written beside the CSV as <name>_truth.csv.",
    )
    p.add_argument("spec", help="model file (TOML)")
    p.add_argument("--out", required=True, help="CSV to write")
    p.add_argument("--steps", type=int, default=120, help="time steps (default 120)")
    p.add_argument("--units", type=int, default=1, help="units (default 1)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--start", default=None, help="first date (default: integer times)")
    p.add_argument("--freq", default="W-MON", help="date step with --start (default W-MON)")
    p.add_argument("--force", action="store_true", help="replace existing files")
    _common(p)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser(
        "timings",
        help="compare intervention timings from a fit",
        description="Simulate interventions at several times (and trigger policies) from "
        "the posterior of RESULT and write RESULT/timings.nc.",
    )
    p.add_argument("result", help="result directory of 'pathlock fit' or 'pathlock run'")
    p.add_argument(
        "--intervention",
        action="append",
        required=True,
        help="reduce_exposure:FACTOR, lower_hazard:FACTOR, relieve:AMOUNT or reset_narrative "
        "(repeatable: applied together)",
    )
    p.add_argument(
        "--at", action="append", help="comma-separated intervention times (time labels of the data)"
    )
    p.add_argument(
        "--policy",
        action="append",
        help="feedback:SIGNAL:THRESHOLD[:above|below] or posterior:P (repeatable)",
    )
    p.add_argument("--horizon", type=int, default=20, help="steps beyond the data (default 20)")
    p.add_argument(
        "--draws",
        type=_positive_int,
        default=None,
        help="posterior draws per chain to use (default all)",
    )
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument(
        "--target", type=float, default=None, help="constraint target for the point of no return"
    )
    p.add_argument(
        "--level",
        type=float,
        default=0.5,
        help="probability level for the point of no return (default 0.5)",
    )
    p.add_argument("--force", action="store_true", help="replace an existing timings file")
    _common(p)
    p.set_defaults(func=cmd_timings)

    p = sub.add_parser(
        "report",
        help="write the HTML report of a result",
        description="Write a self-contained HTML report (and PNG figures) for RESULT.",
    )
    p.add_argument("result", help="result directory")
    p.add_argument("--out", default=None, help="report directory (default RESULT/report)")
    p.add_argument("--title", default=None, help="report title")
    p.add_argument("--force", action="store_true", help="replace an existing report")
    _common(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "summary",
        help="print the parameter table of a result",
        description="Print parameters with intervals, ESS, R-hat and divergences.",
    )
    p.add_argument("result", help="result directory")
    _common(p)
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser(
        "datasets", help="list the bundled datasets", description="List the bundled datasets."
    )
    _common(p)
    p.set_defaults(func=cmd_datasets)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; default ``sys.argv[1:]``.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help exits 0, usage errors 2
        return int(exc.code or 0)
    con = _Console(getattr(args, "quiet", False))
    try:
        return int(args.func(args, con))
    except PathlockError as exc:
        print(f"pathlock: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("pathlock: interrupted; earlier results were left as they were", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:
        print(f"pathlock: failed: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        if os.environ.get("PATHLOCK_DEBUG"):
            raise
        return EXIT_ERROR


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
