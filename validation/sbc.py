"""Simulation-based calibration of the canonical decoupling model.

For each simulation: draw parameters from the spec's priors, simulate data
(``pathlock.simulate``), fit with ``pathlock.fit`` and record the rank of the
true value among thinned posterior draws for every scalar parameter.  Under
a calibrated sampler the ranks are uniform; the script prints, per
parameter, a chi-square test of the binned ranks and a KS test of the
normalised ranks.

Usage::

    python validation/sbc.py                       # 100 simulations, T = 60
    python validation/sbc.py --n-sims 8 --draws 100 --tune 200   # CI size
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
from scipy import stats

SCALARS = {
    "constraint_mu": (),
    "constraint_sigma": (),
    "indicator_sigma": (0,),
    "feedback_b": (0,),
    "feedback_w": (1,),
    "hazard_intercept": (0, 1),
    "hazard_slope": (0, 1),
}


def _spec():
    from pathlock.spec import SeriesSpec, Spec

    return Spec(
        indicators=(SeriesSpec("indicator", "indicator"),),
        feedback=(SeriesSpec("feedback", "feedback"),),
    )


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
    args = parser.parse_args()

    from pathlock.data import from_dataframe
    from pathlock.fit import fit
    from pathlock.simulate import simulate

    spec = _spec()
    rng = np.random.default_rng(args.seed)
    ranks: dict[str, list[int]] = {n: [] for n in SCALARS}
    n_draws = 0
    divergent_fits = 0
    for i in range(args.n_sims):
        df, truth = simulate(spec, "prior", n_steps=args.n_steps, seed=rng)
        data = from_dataframe(df, time="time")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = fit(
                spec,
                data,
                draws=args.draws,
                tune=args.tune,
                chains=args.chains,
                seed=int(rng.integers(2**31)),
            )
        post = res.idata.posterior
        divergent_fits += int(res.idata.sample_stats["diverging"].sum() > 0)
        for name, index in SCALARS.items():
            values = post[name].values.reshape(-1, *post[name].shape[2:])
            values = values[(slice(None), *index)] if index else values
            step = max(1, values.size // args.thin_to)
            thinned = values[::step][: args.thin_to]
            true = np.asarray(truth.params[name])
            true = true[index] if index else true
            ranks[name].append(int(np.sum(thinned < float(np.ravel(true)[0]))))
        n_draws = len(thinned)
        print(f"simulation {i + 1}/{args.n_sims} done", flush=True)

    print(
        f"\nSBC: {args.n_sims} simulations, T = {args.n_steps}, {n_draws} draws per rank, "
        f"{divergent_fits} fits with divergences"
    )
    print(f"{'parameter':<20}{'chi2 p':>10}{'KS p':>10}{'mean rank':>12}")
    for name, r in ranks.items():
        r = np.asarray(r)
        counts, _ = np.histogram(r, bins=args.bins, range=(0, n_draws + 1))
        chi2_p = stats.chisquare(counts).pvalue
        ks_p = stats.kstest((r + rng.random(r.size)) / (n_draws + 1), "uniform").pvalue
        print(f"{name:<20}{chi2_p:>10.3f}{ks_p:>10.3f}{r.mean() / n_draws:>12.3f}")


if __name__ == "__main__":
    main()
