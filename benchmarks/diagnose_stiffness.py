"""Where the decoupling model's posterior is stiff: the scaled Hessian at posterior draws.

Fits the canonical model (``models/decoupling.toml``) to data simulated from
it with one nutpie chain, then takes the Hessian of minus the log density at
two of the draws (central differences of the compiled gradient, in the
sampler's unconstrained coordinates) and scales it by each coordinate's
standard deviation over the draws. A large eigenvalue is a direction whose
conditional width is far below its marginal width: NUTS's step size falls as
one over its square root unless the mass matrix captures it. The script
prints the largest and smallest eigenvalues, what each eigenvector is made
of (its squared length per variable), and the coordinates whose marginal sd
most exceeds their conditional sd ``1 / sqrt(H_ii)``.

Usage::

    python benchmarks/diagnose_stiffness.py                # T = 1000, 300 tune + 150 draws
    python benchmarks/diagnose_stiffness.py --steps 200 --tune 500 --draws 300

A diagnosis, not a benchmark: one chain, a rough guide.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
from _geometry import coordinate_names, hessian, logp_dlogp


def main() -> None:
    from pathlock.fit import ADAPTATIONS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--tune", type=int, default=300)
    parser.add_argument("--draws", type=int, default=150)
    parser.add_argument("--data-seed", type=int, default=1)
    parser.add_argument("--fit-seed", type=int, default=3)
    parser.add_argument("--adaptation", default="diag", choices=ADAPTATIONS)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    import nutpie

    import pathlock as pl
    from pathlock import decoupling
    from pathlock.data import from_dataframe
    from pathlock.fit import _compile

    spec = pl.Spec.from_toml(Path(__file__).resolve().parents[1] / "models" / "decoupling.toml")
    df, _ = pl.simulate(spec, None, n_steps=args.steps, n_units=1, seed=args.data_seed)
    built = decoupling.build(spec, from_dataframe(df, time="time"))
    model = built.model
    start = time.perf_counter()
    trace = nutpie.sample(
        _compile(built),
        draws=args.draws,
        tune=args.tune,
        chains=1,
        seed=args.fit_seed,
        cores=1,
        adaptation=args.adaptation,
        target_accept=spec.sampler.target_accept,
        store_unconstrained=True,
        progress_bar=False,
    )
    stats = trace.sample_stats
    print(
        f"T = {args.steps}: {time.perf_counter() - start:.1f} s; leapfrog steps (median) "
        f"{float(np.median(stats['n_steps'])):.0f}, step size "
        f"{float(np.median(stats['step_size'])):.3f}, divergences {int(stats['diverging'].sum())}"
    )
    draws = stats["unconstrained_draw"].values[0]
    fn = logp_dlogp(model, draws[-1], float(stats["logp"].values[0, -1]))
    labels = coordinate_names(model)
    group = np.array(labels)
    sd = draws.std(axis=0)

    for index in (-1, -(args.draws // 2)):
        scaled = sd[:, None] * hessian(fn, draws[index]) * sd[None, :]
        values, vectors = np.linalg.eigh(scaled)
        print(f"\ndraw {index}: {int((values < 0).sum())} negative eigenvalues")
        print("| eigenvalue | eigenvector's squared length by variable |")
        print("|---|---|")
        for j in [*range(-1, -6, -1), 0]:
            share = {n: float((vectors[group == n, j] ** 2).sum()) for n in dict.fromkeys(labels)}
            top = sorted(share.items(), key=lambda kv: -kv[1])[:4]
            print(f"| {values[j]:.1f} | " + ", ".join(f"{n} {v:.2f}" for n, v in top) + " |")
    conditional = 1.0 / np.sqrt(np.maximum(np.diag(hessian(fn, draws[-1])), 1e-300))
    ratio = sd / conditional
    worst = np.argsort(-ratio)[:8]
    index_in = {i: i - labels.index(labels[i]) for i in worst}
    print("\nmarginal sd / conditional sd, largest:")
    for i in worst:
        name = labels[i] if labels.count(labels[i]) == 1 else f"{labels[i]}[{index_in[i]}]"
        print(f"  {name}: {ratio[i]:.1f}")


if __name__ == "__main__":
    main()
