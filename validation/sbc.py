"""Simulation-based calibration of the canonical decoupling model.

For each simulation: draw parameters from the spec's priors, simulate data
(``pathlock.simulate``), fit with ``pathlock.fit`` and record the rank of the
true value among thinned posterior draws for every scalar parameter.  Under
a calibrated sampler the ranks are uniform (Talts et al. 2018); the script
prints, per parameter, a chi-square test of the binned ranks, a KS test of
the normalised ranks and the mean normalised rank (0.5 when calibrated;
below 0.5: the posterior sits above the truth). It also counts each fit's
divergent draws (``--out`` writes them beside the ranks).

Usage::

    python validation/sbc.py                       # 100 simulations, T = 60
    python validation/sbc.py --n-sims 8 --draws 100 --tune 200   # CI size
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy import stats

#: Scalar parameters ranked, with the index picked from array-valued ones.
SCALARS: dict[str, tuple[int, ...]] = {
    "constraint_mu": (),
    "constraint_sigma": (),
    "indicator_sigma": (0,),
    "feedback_b": (0,),
    "feedback_w": (1,),
    "hazard_intercept": (0, 1),
    "hazard_slope": (0, 1),
}


@dataclass(frozen=True)
class SBCResult:
    """Ranks and uniformity statistics of one SBC run.

    Attributes
    ----------
    ranks : dict of str to ndarray (n_sims,)
        Rank of the truth among ``n_draws`` thinned posterior draws.
    n_draws : int
    divergent_draws : ndarray (n_sims,)
        Divergent draws of each simulation's fit (:attr:`divergent_fits`
        counts the fits with at least one).
    chi2_p, ks_p, mean_rank : dict of str to float
        Chi-square p-value of the binned ranks, KS p-value of the jittered
        normalised ranks, mean normalised rank.
    seconds : float
        Wall time of the whole run.
    """

    ranks: dict[str, NDArray[np.int64]]
    n_draws: int
    divergent_draws: NDArray[np.int64]
    chi2_p: dict[str, float]
    ks_p: dict[str, float]
    mean_rank: dict[str, float]
    seconds: float

    @property
    def divergent_fits(self) -> int:
        """Simulations whose fit had at least one divergent draw."""
        return int(np.count_nonzero(self.divergent_draws))


def rank_statistics(
    ranks: NDArray[np.int64], n_draws: int, bins: int, rng: np.random.Generator
) -> tuple[float, float, float]:
    """Uniformity statistics of SBC ranks in ``0..n_draws``.

    Returns the chi-square p-value of ``bins`` equal-width bins, the KS
    p-value of the ranks jittered within their cell and normalised to (0, 1)
    (the jitter makes the discrete ranks continuous, as the KS test assumes),
    and the mean normalised rank.
    """
    r = np.asarray(ranks)
    counts, _ = np.histogram(r, bins=bins, range=(0, n_draws + 1))
    chi2_p = float(stats.chisquare(counts).pvalue)
    jitter = (r + rng.random(r.size)) / (n_draws + 1)
    ks_p = float(stats.kstest(jitter, "uniform").pvalue)
    return chi2_p, ks_p, float(r.mean() / n_draws)


def _spec():
    from pathlock.spec import SeriesSpec, Spec

    return Spec(
        indicators=(SeriesSpec("indicator", "indicator"),),
        feedback=(SeriesSpec("feedback", "feedback"),),
    )


def run_sbc(
    n_sims: int = 100,
    n_steps: int = 60,
    *,
    draws: int = 500,
    tune: int = 500,
    chains: int = 2,
    thin_to: int = 99,
    bins: int = 10,
    seed: int = 2026,
    progress: bool = False,
) -> SBCResult:
    """Run SBC of the canonical model; see the module docstring."""
    from pathlock.data import from_dataframe
    from pathlock.fit import fit
    from pathlock.simulate import simulate

    t0 = time.perf_counter()
    spec = _spec()
    rng = np.random.default_rng(seed)
    ranks: dict[str, list[int]] = {n: [] for n in SCALARS}
    n_draws = 0
    divergent_draws: list[int] = []
    for i in range(n_sims):
        df, truth = simulate(spec, "prior", n_steps=n_steps, seed=rng)
        data = from_dataframe(df, time="time")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = fit(
                spec,
                data,
                draws=draws,
                tune=tune,
                chains=chains,
                seed=int(rng.integers(2**31)),
                check=False,
            )
        post = res.idata.posterior
        divergent_draws.append(int(res.idata.sample_stats["diverging"].sum()))
        for name, index in SCALARS.items():
            values = post[name].values.reshape(-1, *post[name].shape[2:])
            values = values[(slice(None), *index)] if index else values
            # Thin across the pooled chains so the kept draws are close to independent.
            step = max(1, values.size // thin_to)
            thinned = values[::step][:thin_to]
            true = np.asarray(truth.params[name])
            true = true[index] if index else true
            ranks[name].append(int(np.sum(thinned < float(np.ravel(true)[0]))))
        n_draws = len(thinned)
        if progress:
            print(f"simulation {i + 1}/{n_sims} done", flush=True)

    chi2_p, ks_p, mean_rank = {}, {}, {}
    arrays = {name: np.asarray(r) for name, r in ranks.items()}
    for name, r in arrays.items():
        chi2_p[name], ks_p[name], mean_rank[name] = rank_statistics(r, n_draws, bins, rng)
    return SBCResult(
        arrays,
        n_draws,
        np.asarray(divergent_draws, dtype=np.int64),
        chi2_p,
        ks_p,
        mean_rank,
        time.perf_counter() - t0,
    )


def _largest(counts: NDArray[np.int64], k: int) -> list[tuple[int, int]]:
    """The ``k`` largest non-zero counts as ``(index, count)``, largest first."""
    order = np.argsort(-counts, kind="stable")[:k]
    return [(int(i), int(counts[i])) for i in order if counts[i] > 0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-sims", type=int, default=100)
    parser.add_argument("--n-steps", type=int, default=60)
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--tune", type=int, default=500)
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--thin-to", type=int, default=99, help="posterior draws per rank")
    parser.add_argument("--bins", type=int, default=10)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--out", type=Path, default=None, help="write the ranks (JSON)")
    args = parser.parse_args()
    res = run_sbc(
        args.n_sims,
        args.n_steps,
        draws=args.draws,
        tune=args.tune,
        chains=args.chains,
        thin_to=args.thin_to,
        bins=args.bins,
        seed=args.seed,
        progress=True,
    )
    div = res.divergent_draws
    largest = ", ".join(f"{d} in simulation {i}" for i, d in _largest(div, 3))
    print(
        f"\nSBC: {args.n_sims} simulations, T = {args.n_steps}, {res.n_draws} draws per rank, "
        f"{res.divergent_fits} fits with divergences ({int(div.sum())} divergent draws"
        f"{'; largest: ' + largest if largest else ''}), {res.seconds:.0f} s"
    )
    print(f"{'parameter':<20}{'chi2 p':>10}{'KS p':>10}{'mean rank':>12}   ranks per bin")
    for name in SCALARS:
        counts, _ = np.histogram(res.ranks[name], bins=args.bins, range=(0, res.n_draws + 1))
        print(
            f"{name:<20}{res.chi2_p[name]:>10.3f}{res.ks_p[name]:>10.3f}"
            f"{res.mean_rank[name]:>12.3f}   {' '.join(f'{c:>2}' for c in counts)}"
        )
    if args.out is not None:
        ranks = {name: r.tolist() for name, r in res.ranks.items()}
        out = {"n_draws": res.n_draws, "ranks": ranks, "divergent_draws": div.tolist()}
        args.out.write_text(json.dumps(out))


if __name__ == "__main__":
    main()
