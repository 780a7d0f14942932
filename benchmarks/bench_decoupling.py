"""Speed of the canonical decoupling model: pathlock (nutpie) against numpyro.

Simulates the canonical model (ratchet, one indicator, one feedback signal,
tracking -> decoupled absorbing with a constraint-driven hazard) at each
requested length, fits it with ``pathlock.fit`` (nutpie, the numba backend
unless ``--backend jax``, the spec's parameterisation) and with numpyro
(textbook non-centred increments, ``lax.scan`` forward algorithm, NUTS), and
prints wall time (compile included), minimum bulk ESS over the scalar
parameters, ESS per second, divergences and maximum R-hat for both, then the
bulk ESS of each scalar parameter (the smallest over its entries).

Usage::

    python benchmarks/bench_decoupling.py                  # T = 200 and 1000
    python benchmarks/bench_decoupling.py --steps 200 --draws 200 --tune 200
    python benchmarks/bench_decoupling.py --parameterization noncentered --adaptation diag
    python benchmarks/bench_decoupling.py --steps 60 --refits 3 --skip-numpyro
    python benchmarks/bench_decoupling.py --steps 1000 --backend jax --skip-numpyro

``--refits N`` then fits N more simulated data sets of the same length: with
numba the compiled model is reused (``pathlock.fit`` swaps the data in), so
their wall time is sampling and analysis only (JAX compiles each again); the
table gives each (data seeds 2, 3, ...) and their median.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

SCALARS = [
    "constraint_mu",
    "constraint_sigma",
    "constraint_init",
    "indicator_sigma",
    "feedback_a",
    "feedback_b",
    "feedback_w",
    "feedback_sigma",
    "hazard_intercept",
    "hazard_slope",
]


def _spec(parameterization: str):
    """The canonical model (models/decoupling.toml), with the path's parameterisation chosen."""
    import dataclasses
    from pathlib import Path

    from pathlock.spec import Spec

    spec = Spec.from_toml(Path(__file__).resolve().parents[1] / "models" / "decoupling.toml")
    constraint = dataclasses.replace(spec.constraint, parameterization=parameterization)
    return dataclasses.replace(spec, constraint=constraint)


def _summary(tree, names, wall):
    """Wall time, bulk ESS and R-hat over ``names``, and R-hat over every sampled variable.

    ``rhat_all`` includes the latent path and the sampler's own coordinates
    (``constraint_raw``): the issue's R-hat < 1.01 is over everything sampled.
    Constant entries (``feedback_w`` in ``tracking``) have no R-hat and are skipped.
    """
    import arviz_stats as azs

    ess = azs.ess(tree, var_names=names)
    rhat = azs.rhat(tree, var_names=names)
    min_ess = min(float(ess[n].min()) for n in names)
    max_rhat = max(float(rhat[n].max()) for n in names)
    every = list(tree.posterior.data_vars)
    rhat_every = azs.rhat(tree, var_names=every)
    worst = {n: float(np.nanmax(rhat_every[n].values)) for n in every}
    worst_name = max(worst, key=lambda n: worst[n])
    div = int(tree.sample_stats["diverging"].sum())
    return {
        "wall_s": wall,
        "ess_by": {n: float(ess[n].min()) for n in names},
        "min_ess": min_ess,
        "ess_per_s": min_ess / wall,
        "div": div,
        "max_rhat": max_rhat,
        "rhat_all": worst[worst_name],
        "rhat_all_name": worst_name,
        "tree": (
            float(np.median(tree.sample_stats["n_steps"].values))
            if "n_steps" in tree.sample_stats
            else float("nan")
        ),
    }


def run_pathlock(df, args, seed=1):
    from pathlock.data import from_dataframe
    from pathlock.fit import fit

    spec = _spec(args.parameterization)
    data = from_dataframe(df, time="time")
    t0 = time.perf_counter()
    res = fit(
        spec,
        data,
        draws=args.draws,
        tune=args.tune,
        chains=args.chains,
        seed=seed,
        adaptation=args.adaptation,
        target_accept=args.target_accept,
        backend=args.backend,
    )
    wall = time.perf_counter() - t0
    tree = res.idata
    names = [n for n in SCALARS if n in tree.posterior]
    post = tree.posterior
    if "feedback_w" in post:
        tree = tree.copy()
        tree["posterior"]["feedback_w"] = post["feedback_w"].isel(regime=slice(1, None))
    return _summary(tree, names, wall)


def run_numpyro(df, args):
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import MCMC, NUTS

    numpyro.set_host_device_count(args.chains)
    z = jnp.asarray(df["indicator"].to_numpy())
    y = jnp.asarray(df["feedback"].to_numpy())
    n = z.shape[0]
    held_steps = _spec(args.parameterization).regimes.known_tracking

    def model():
        mu = numpyro.sample("constraint_mu", dist.Normal(-2.0, 1.5))
        s = numpyro.sample("constraint_sigma", dist.HalfNormal(1.0))
        c0 = numpyro.sample("constraint_init", dist.Normal(0.0, 2.0))
        eps = numpyro.sample("eps", dist.Normal(0.0, 1.0).expand([n - 1]))
        c = jnp.concatenate([c0[None], c0 + jnp.cumsum(jnp.exp(mu + s * eps))])
        sz = numpyro.sample("indicator_sigma", dist.HalfNormal(1.0))
        a = numpyro.sample("feedback_a", dist.Normal(0.0, 2.0).expand([2]))
        b = numpyro.sample("feedback_b", dist.Normal(0.0, 1.0))
        w = numpyro.sample("feedback_w", dist.Beta(1.0, 2.0))
        sy = numpyro.sample("feedback_sigma", dist.HalfNormal(1.0).expand([2]))
        g0 = numpyro.sample("hazard_intercept", dist.Normal(-3.0, 1.5))
        g1 = numpyro.sample("hazard_slope", dist.Normal(0.0, 1.0))
        ind = dist.Normal(c, sz).log_prob(z)
        wk = jnp.array([1.0, 0.0]) + jnp.array([0.0, 1.0]) * w
        fb = dist.Normal(a[None, :] + b * wk[None, :] * c[:, None], sy[None, :]).log_prob(
            y[:, None]
        )
        le = ind[:, None] + fb
        logit = g0 + g1 * c[:-1]
        # The spec's known_tracking: no move into `decoupled` before step `held`. A
        # finite floor, not -inf: logaddexp(-inf, -inf) has a NaN gradient.
        held = jnp.arange(1, n) < held_steps
        lp = jnp.where(held, -1e30, jax.nn.log_sigmoid(logit))
        lq = jnp.where(held, 0.0, jax.nn.log_sigmoid(-logit))

        def step(alpha, inp):
            e, p_move, p_stay = inp
            a0 = alpha[0] + p_stay
            a1 = jnp.logaddexp(alpha[0] + p_move, alpha[1])
            return jnp.stack([a0, a1]) + e, None

        alpha0 = jnp.array([0.0, -jnp.inf]) + le[0]
        alpha, _ = jax.lax.scan(step, alpha0, (le[1:], lp, lq))
        numpyro.factor("loglike", jax.scipy.special.logsumexp(alpha))

    t0 = time.perf_counter()
    mcmc = MCMC(
        NUTS(model),
        num_warmup=args.tune,
        num_samples=args.draws,
        num_chains=args.chains,
        progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(1), extra_fields=("num_steps",))
    # JAX dispatches asynchronously: `run` can return before the draws exist.
    jax.block_until_ready((mcmc.get_samples(group_by_chain=True), mcmc.get_extra_fields()))
    wall = time.perf_counter() - t0
    import arviz_base as azb

    tree = azb.from_numpyro(mcmc)
    out = _summary(tree, [n for n in SCALARS if n in tree.posterior], wall)
    # arviz's converter keeps only `diverging` of numpyro's sampler statistics.
    out["tree"] = float(np.median(mcmc.get_extra_fields()["num_steps"]))
    return out


def main() -> None:
    from pathlock.fit import ADAPTATIONS, BACKENDS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--tune", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument(
        "--parameterization",
        default="auto",
        choices=["auto", "whitened", "data_centered", "centered", "noncentered"],
    )
    # Default: the spec's [sampler] settings, what pathlock.fit uses (adaptation and
    # target_accept by series length, pathlock.spec.default_adaptation and
    # default_target_accept). At T = 1000 nutpie's low-rank
    # metric made each leapfrog step 3.6 times dearer after 1000 tuning draws than diag.
    parser.add_argument("--adaptation", default=None, choices=ADAPTATIONS)
    parser.add_argument("--target-accept", type=float, default=None)
    parser.add_argument(
        "--fit-seeds",
        type=int,
        nargs="+",
        default=[1],
        help="fit the first data set with each seed (compiled model reused after the first)",
    )
    parser.add_argument("--skip-numpyro", action="store_true")
    parser.add_argument("--backend", default="numba", choices=BACKENDS)
    parser.add_argument(
        "--refits", type=int, default=0, help="more data sets per length, compiled model reused"
    )
    args = parser.parse_args()

    from pathlock.simulate import simulate

    rows = []
    datasets = {
        n_steps: simulate(_spec(args.parameterization), n_steps=n_steps, seed=1)[0]
        for n_steps in args.steps
    }
    for n_steps, df in datasets.items():
        for k, fit_seed in enumerate(args.fit_seeds):
            label = f"pathlock/{args.parameterization}/{args.backend}"
            # JAX compiles every fit again (seconds); only numba's compile is reused.
            reused = k and args.backend == "numba"
            label += f" seed {fit_seed}" + (" (reused)" if reused else "")
            rows.append((label, n_steps, run_pathlock(df, args, fit_seed)))
        refits = []
        for s in range(2, 2 + args.refits):
            df_s = simulate(_spec(args.parameterization), n_steps=n_steps, seed=s)[0]
            refits.append(run_pathlock(df_s, args, s))
            # Each data set has its own row: a median would hide the divergent ones.
            suffix = " (reused)" if args.backend == "numba" else ""
            rows.append((f"  data seed {s}{suffix}", n_steps, refits[-1]))
        if refits:
            median = {
                k: float(np.median([r[k] for r in refits]))
                for k in refits[0]
                if k not in ("rhat_all_name", "ess_by")
            }
            rows.append((f"  median of the {len(refits)} above", n_steps, median))
    # numpyro last: after a numpyro run in the same process, a pathlock fit at T = 1000
    # took 68.9 s against 47.7 s alone, and its draws differed (same seed).
    if not args.skip_numpyro:
        for n_steps, df in datasets.items():
            rows.append(("numpyro/noncentred", n_steps, run_numpyro(df, args)))
    print(
        f"{'engine':<32}{'T':>6}{'wall s':>10}{'min ESS':>10}{'ESS/s':>10}{'div':>7}"
        f"{'tree':>6}{'R-hat':>8}  R-hat, all variables (worst)"
    )
    for name, n_steps, r in rows:
        worst = f"{r['rhat_all']:.3f} ({r['rhat_all_name']})" if "rhat_all_name" in r else ""
        print(
            f"{name:<32}{n_steps:>6}{r['wall_s']:>10.1f}{r['min_ess']:>10.0f}"
            f"{r['ess_per_s']:>10.2f}{r['div']:>7.0f}{r['tree']:>6.0f}"
            f"{r['max_rhat']:>8.3f}  {worst}"
        )

    names = [n for n in SCALARS if any(n in r.get("ess_by", {}) for _, _, r in rows)]
    print("\nbulk ESS by parameter (the smallest over its entries)")
    print(f"{'engine':<32}{'T':>6}" + "".join(f"{n:>18}" for n in names))
    for name, n_steps, r in rows:
        if "ess_by" in r:
            cells = "".join(f"{r['ess_by'].get(n, float('nan')):>18.0f}" for n in names)
            print(f"{name:<32}{n_steps:>6}{cells}")


if __name__ == "__main__":
    main()
