"""Time the posterior analysis of a 4 x 1000-draw fit with T = 1000 (issue 4: seconds, not minutes).

The fit is assembled from fake posterior draws of a two-regime mean-switching
family with an absorbing decoupled regime, so no sampling is needed; the
analysis code paths are the ones a real fit takes.

Usage: python benchmarks/bench_analysis.py [--steps 1000] [--draws 1000] [--chains 4] [--units 1]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt
import xarray as xr

from pathlock import dims
from pathlock.build import Built
from pathlock.fit import Fit, _evaluate_per_draw
from pathlock.hmm import hmm_loglike
from pathlock.testing import jittered_posterior

REGIMES = ["tracking", "decoupled"]
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class BenchData:
    y: np.ndarray
    time: np.ndarray
    units: tuple[str, ...]

    def to_dataset(self) -> xr.Dataset:
        return xr.Dataset(
            {"y": ((dims.UNIT, dims.TIME), self.y)},
            coords={dims.UNIT: list(self.units), dims.TIME: self.time},
        )


@dataclass(frozen=True)
class BenchSpec:
    family: str = "bench_analysis"

    def build(self, data: BenchData) -> Built:
        coords = {dims.UNIT: list(data.units), dims.TIME: data.time, dims.REGIME: REGIMES}
        with pm.Model(coords=coords) as model:
            mu = pm.Normal("mu", 0.0, 2.0, dims=dims.REGIME)
            sigma = pm.HalfNormal("sigma", 1.0)
            hazard = pm.Beta("hazard", 1.0, 20.0)
            emit = pm.logp(pm.Normal.dist(mu, sigma), data.y[..., None])
            zero = pt.as_tensor(0.0)
            trans = pt.stack([pt.stack([1 - hazard, hazard]), pt.stack([zero, 1 + zero])])
            log_trans = pt.log(trans)[None, None]
            log_init = pt.as_tensor(np.log([[1.0 - 1e-9, 1e-9]]))
            pm.Potential("loglike", hmm_loglike(log_init, log_trans, emit).sum())
        return Built(model, log_init, log_trans, emit, {})

    def prepare_data(self, data: BenchData) -> BenchData:
        return data

    def data_from_dataset(self, ds: xr.Dataset) -> BenchData:
        return BenchData(ds["y"].values, ds[dims.TIME].values, tuple(ds[dims.UNIT].values))

    def loglike(self, data, params):
        raise NotImplementedError

    def to_toml(self) -> str:
        return 'schema_version = 1\nfamily = "bench_analysis"\n'


def synthetic_fit(n_steps: int, n_draws: int, n_chains: int, n_units: int, seed: int = 0) -> Fit:
    rng = np.random.default_rng(seed)
    switch = rng.integers(n_steps // 3, 2 * n_steps // 3, size=n_units)
    s = np.arange(n_steps)[None] >= switch[:, None]
    y = np.where(s, 1.0, -1.0) + 0.7 * rng.normal(size=(n_units, n_steps))
    data = BenchData(
        y,
        pd.date_range("2000-01-02", periods=n_steps, freq="W").values,
        tuple(f"u{i}" for i in range(n_units)),
    )
    shape = (n_chains, n_draws)
    post = xr.Dataset(
        {
            "mu": (
                (*dims.SAMPLE_DIMS, dims.REGIME),
                [-1.0, 1.0] + 0.05 * rng.normal(size=(*shape, 2)),
            ),
            "sigma": (dims.SAMPLE_DIMS, 0.7 + 0.02 * rng.normal(size=shape)),
            "hazard": (dims.SAMPLE_DIMS, rng.beta(2, 400, size=shape)),
        },
        coords={
            dims.CHAIN: np.arange(n_chains),
            dims.DRAW: np.arange(n_draws),
            dims.REGIME: REGIMES,
        },
    )
    stats = xr.Dataset({"diverging": (dims.SAMPLE_DIMS, np.zeros(shape, bool))})
    tree = xr.DataTree.from_dict(
        {"posterior": xr.DataTree(post), "sample_stats": xr.DataTree(stats)}
    )
    spec = BenchSpec()
    return Fit(idata=tree, spec=spec, data=data, built=spec.build(data))


def decoupling_fit(n_steps: int, n_draws: int, n_chains: int, seed: int = 0) -> Fit:
    """The default decoupling model (models/decoupling.toml) with fake posterior draws.

    Draws are the initial point jittered on the unconstrained scale, mapped to
    the constrained values a sampler would store: valid inputs, not a posterior.
    """
    from pathlock.data import from_dataframe
    from pathlock.simulate import simulate
    from pathlock.spec import Spec

    spec = Spec.from_toml(ROOT / "models" / "decoupling.toml")
    df, _ = simulate(spec, n_steps=n_steps, seed=seed)
    data = from_dataframe(df, time=spec.data.time)
    built = spec.build(data)
    tree = jittered_posterior(built, n_chains, n_draws, seed=seed, scale=0.1)
    return Fit(idata=tree, spec=spec, data=data, built=built)


def compare_regime_inputs(fits: dict[str, Fit]) -> str:
    """Time the per-draw loop against the vectorised evaluation of the kernel inputs.

    Each is called twice: the first call includes numba's compilation (or its
    load from PyTensor's on-disk cache), the second shows the steady state
    once that cache holds the compiled graph.
    """
    lines = [
        "",
        "kernel inputs at every draw (_evaluate_per_draw), seconds",
        f"{'model':<12}{'method':<14}{'1st call':>10}{'2nd call':>10}",
    ]
    for name, fit in fits.items():
        times: dict[str, list[float]] = {}
        results = {}
        for label, vectorized in (("loop (before)", False), ("vectorised", True)):
            for _ in range(2):
                t0 = time.perf_counter()
                results[label] = _evaluate_per_draw(fit.built, fit.idata, vectorized=vectorized)
                times.setdefault(label, []).append(time.perf_counter() - t0)
        old, new = results.values()
        diff = 0.0
        for f in ("log_init", "log_trans", "log_emit"):
            a, b = getattr(old, f), getattr(new, f)
            diff = max(diff, float(np.max(np.where(a == b, 0.0, np.abs(a - b)))))
        for label, (first, second) in times.items():
            lines.append(f"{name:<12}{label:<14}{first:>10.2f}{second:>10.2f}")
        (a1, a2), (b1, b2) = times.values()
        lines.append(f"{name:<12}{'ratio':<14}{a1 / b1:>10.1f}{a2 / b2:>10.1f}")
        lines.append(f"{name:<12}max abs difference of the inputs: {diff:.1e}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--units", type=int, default=1)
    args = parser.parse_args()

    # Warm the numba caches on a tiny fit so the table shows steady-state cost.
    warm = synthetic_fit(50, 5, 2, 1)
    warm.decoupling_time(seed=0)
    warm.early_warning()

    fit = synthetic_fit(args.steps, args.draws, args.chains, args.units)
    inputs = compare_regime_inputs(
        {
            "bench": fit,
            "decoupling": decoupling_fit(args.steps, args.draws, args.chains),
        }
    )
    rows: list[tuple[str, float]] = []

    def timed(label: str, func) -> object:
        t0 = time.perf_counter()
        out = func()
        rows.append((label, time.perf_counter() - t0))
        return out

    timed("kernel inputs at every draw (Fit.regime_inputs)", fit.regime_inputs)
    timed("forward-backward, all draws (Fit.forward_backward)", fit.forward_backward)
    timed("regime_probabilities smoothed, per draw", lambda: fit.regime_probabilities("smoothed"))
    timed(
        "regime_probabilities filtered, averaged",
        lambda: fit.regime_probabilities("filtered", average=True),
    )
    timed("regime_paths n=1", lambda: fit.regime_paths(n=1, seed=1))
    timed("decoupling_time n=1 (paths + exact + summary)", lambda: fit.decoupling_time(seed=1))
    timed("early_warning 0.8", lambda: fit.early_warning(0.8))
    total = sum(t for _, t in rows)

    print(
        f"\nanalysis of a {args.chains} x {args.draws}-draw fit, T = {args.steps}, "
        f"{args.units} unit(s) (fake posterior, numba caches warm)\n"
    )
    width = max(len(label) for label, _ in rows) + 2
    print(f"{'step':<{width}}{'seconds':>10}")
    print("-" * (width + 10))
    for label, seconds in rows:
        print(f"{label:<{width}}{seconds:>10.2f}")
    print("-" * (width + 10))
    print(f"{'total':<{width}}{total:>10.2f}")
    print(inputs)


if __name__ == "__main__":
    main()
