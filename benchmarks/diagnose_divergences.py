"""Where the decoupling model's divergent draws sit in its posterior.

Fits data sets with nutpie (divergences stored) and prints, for each fit with
a divergent draw, where those draws lie in the fit's own posterior: the
quantile of each divergent draw among all draws, per scalar parameter, and
the unconstrained coordinates that moved most between the divergent
trajectory's start and the point where it diverged. Divergences that all sit
in one tail of one parameter point at the geometry to fix. ``--hessian``
also prints, for chosen SBC simulations, the largest eigenvalue of the
sd-scaled Hessian at draws spread over ``log constraint_sigma``.

Two sets of data:

- ``--sbc-seed S --n-sims N``: the first ``N`` simulations of
  ``validation/sbc.py --seed S`` (the same prior draws, data and fit seeds;
  T = 60, 2 chains x 500 + 500);
- ``--recovery SEED [SEED ...]``: the recovery test's data
  (``tests/test_decoupling.py``: T = 150, hazard intercept -5, slope 0.5)
  for each data seed, 4 chains x 500 + 1000, fit seed 2.

Usage::

    python benchmarks/diagnose_divergences.py --sbc-seed 2027 --n-sims 24
    python benchmarks/diagnose_divergences.py --sbc-seed 2027 --n-sims 18 --hessian 17
    python benchmarks/diagnose_divergences.py --recovery 11 14 16

A diagnosis, not a benchmark: single runs, a rough guide.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from _geometry import coordinate_labels, hessian, logp_dlogp

#: Scalar parameters whose posterior quantiles are reported.
SCALARS = (
    "constraint_log_realised_step",
    "constraint_log_mean_step",
    "constraint_sigma",
    "constraint_init",
    "indicator_sigma",
    "feedback_b",
    "feedback_w",
    "feedback_sigma",
)


def _report(
    label: str, spec: Any, built: Any, compiled: Any, draws: int, tune: int, chains: int, seed: int
) -> Any:
    """Sample, print where the divergent draws sit, and return the trace."""
    import nutpie

    trace = nutpie.sample(
        compiled,
        draws=draws,
        tune=tune,
        chains=chains,
        seed=seed,
        progress_bar=False,
        adaptation=spec.sampler.adaptation,
        target_accept=spec.sampler.target_accept,
        store_divergences=True,
        store_unconstrained=True,
    )
    stats = trace.sample_stats.to_dataset()
    post = trace.posterior.to_dataset()
    div = stats["diverging"].values.ravel()
    per_chain = stats["diverging"].values.sum(axis=1)
    print(
        f"{label}: {int(div.sum())} divergent draws of {div.size} "
        f"(per chain {' '.join(str(int(c)) for c in per_chain)}; median tree "
        f"{float(np.median(stats['n_steps'].values)):.0f})"
    )
    if not div.any():
        return trace
    for name in SCALARS:
        if name not in post:
            continue
        values = post[name].values.reshape(div.size, -1)
        for j in range(values.shape[1]):
            column = values[:, j]
            if np.ptp(column) == 0:
                continue
            q = [float(np.mean(column < x)) for x in column[div]]
            print(f"    {name}[{j}]: quantiles " + " ".join(f"{v:.2f}" for v in q[:12]))
    labels = coordinate_labels(built.model)
    start = stats["divergence_start"].values.reshape(div.size, -1)[div]
    end = stats["divergence_end"].values.reshape(div.size, -1)[div]
    for a, b in list(zip(start, end, strict=True))[:6]:
        top = np.argsort(-np.abs(b - a))[:4]
        print("    largest moves: " + ", ".join(f"{labels[i]} {b[i] - a[i]:+.2f}" for i in top))
    return trace


def _hessian_by_sigma(built: Any, trace: Any, n_points: int = 10) -> None:
    """Largest eigenvalue of the sd-scaled Hessian at draws spread over ``log sigma``.

    As in ``diagnose_stiffness.py``: central differences of the compiled
    gradient in the sampler's coordinates, scaled by each coordinate's sd over
    the draws. A value that grows with ``sigma`` is a curvature the step size,
    tuned on the bulk, cannot follow into the tail.
    """
    stats = trace.sample_stats
    draws = stats["unconstrained_draw"].values.reshape(-1, stats["unconstrained_draw"].shape[-1])
    fn = logp_dlogp(built.model, draws[-1], float(stats["logp"].values.ravel()[-1]))
    labels = coordinate_labels(built.model)
    sd = draws.std(axis=0)
    column = labels.index("constraint_sigma_log__")
    order = np.argsort(draws[:, column])
    picks = order[np.linspace(0, order.size - 1, n_points).astype(int)]
    print("    sd-scaled Hessian at draws spread over log sigma:")
    for k in picks:
        x = draws[k]
        scaled = hessian(fn, x) * np.outer(sd, sd)
        values, vectors = np.linalg.eigh(scaled)
        top = np.argsort(-np.abs(vectors[:, -1]))[:3]
        parts = ", ".join(f"{labels[i]} {vectors[i, -1] ** 2:.2f}" for i in top)
        print(f"      log sigma {x[column]:+.3f}: largest eigenvalue {values[-1]:8.1f} ({parts})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sbc-seed", type=int, default=None)
    parser.add_argument("--n-sims", type=int, default=24)
    parser.add_argument(
        "--hessian",
        type=int,
        nargs="*",
        default=(),
        help="SBC simulations at which to print the Hessian's growth with sigma",
    )
    parser.add_argument("--recovery", type=int, nargs="*", default=())
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    from pathlock.data import from_dataframe
    from pathlock.fit import _compile_nutpie
    from pathlock.simulate import simulate

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "validation"))
    import sbc

    spec = sbc._spec()

    def compiled(df: Any) -> tuple[Any, Any]:
        data = spec.prepare_data(from_dataframe(df, time="time"))
        built = spec.build(data)
        return built, _compile_nutpie(built, spec, lambda: spec.build(data))

    if args.sbc_seed is not None:
        # The same stream of prior draws and fit seeds as validation/sbc.py.
        rng = np.random.default_rng(args.sbc_seed)
        for i in range(args.n_sims):
            df, truth = simulate(spec, "prior", n_steps=60, seed=rng)
            fit_seed = int(rng.integers(2**31))
            built, model = compiled(df)
            true = ", ".join(
                f"{n} {float(np.ravel(truth.params[n])[0]):.3f}"
                for n in ("constraint_sigma", "indicator_sigma", "feedback_sigma")
            )
            trace = _report(f"simulation {i} ({true})", spec, built, model, 500, 500, 2, fit_seed)
            if i in args.hessian:
                _hessian_by_sigma(built, trace)
    for seed in args.recovery:
        params = {"hazard_intercept": -5.0, "hazard_slope": 0.5}
        df, _ = simulate(spec, params, n_steps=150, seed=seed)
        built, model = compiled(df)
        _report(f"recovery data seed {seed}", spec, built, model, 500, 1000, 4, 2)


if __name__ == "__main__":
    main()
