"""Speed of pathlock's forward-backward Op on a 2-regime Gaussian switching model.

Prints two tables (medians over repeats; every ratio is from the same run):

1. microseconds per log-density + gradient evaluation of the model's compiled
   logp/dlogp, for
   - ``ours``: the PyMC model with :func:`pathlock.hmm.hmm_loglike`, compiled by
     nutpie's numba backend (the function nutpie's sampler calls);
   - ``reference``: a plain numba forward-backward written here for this model,
     returning value and gradient (target: ours within 1.2x);
   - ``pymc-extras``: the same model with a ``DiscreteMarkovChain`` removed by
     ``pymc_extras.marginalize``, compiled the same way (target: >= 20x slower).
   All three are timed inside one numba loop, so no Python call overhead counts.
2. end to end (model build + compile + 4 chains x 1000 tune + 1000 draws), each
   sampler in a fresh subprocess so no compile cache of this process helps:
   ours with nutpie against the same model in numpyro (``lax.scan`` forward
   algorithm, NUTS), with bulk ESS per second (target: ours <= 0.8x numpyro).

Model: ``y_t ~ N(mu[S_t], sigma)``, ``mu = (mu0, mu0 + delta)``, a 2x2
transition matrix with stay probabilities ``p_stay``, uniform initial regime;
priors ``mu0 ~ N(0, 3)``, ``delta ~ HalfNormal(3)``, ``sigma ~ HalfNormal(2)``,
``p_stay ~ Beta(8, 2)``.

Usage::

    python benchmarks/bench_kernel.py            # full run (tens of minutes)
    python benchmarks/bench_kernel.py --quick    # smoke run, about a minute or two
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

TRUE_TRANS = np.array([[0.97, 0.03], [0.05, 0.95]])
TRUE_MU = np.array([-1.0, 1.0])
TRUE_SIGMA = 0.8


def simulate(n_steps: int, seed: int = 1) -> np.ndarray:
    """Observations of the 2-regime Gaussian switching model."""
    rng = np.random.default_rng(seed)
    states = np.empty(n_steps, dtype=np.int64)
    states[0] = rng.integers(2)
    u = rng.random(n_steps)
    for t in range(1, n_steps):
        states[t] = (
            states[t - 1] if u[t] < TRUE_TRANS[states[t - 1], states[t - 1]] else 1 - states[t - 1]
        )
    return TRUE_MU[states] + TRUE_SIGMA * rng.normal(size=n_steps)


# --------------------------------------------------------------------------
# the three PyMC / numba implementations
# --------------------------------------------------------------------------


def _priors():
    import pymc as pm
    import pytensor.tensor as pt

    mu0 = pm.Normal("mu0", 0.0, 3.0)
    delta = pm.HalfNormal("delta", 3.0)
    sigma = pm.HalfNormal("sigma", 2.0)
    p_stay = pm.Beta("p_stay", 8.0, 2.0, shape=2)
    mu = pt.stack([mu0, mu0 + delta])
    trans = pt.stack(
        [pt.stack([p_stay[0], 1.0 - p_stay[0]]), pt.stack([1.0 - p_stay[1], p_stay[1]])]
    )
    return mu, sigma, p_stay, trans


def ours_model(y: np.ndarray):
    """The model with pathlock's Op."""
    import pymc as pm
    import pytensor.tensor as pt

    from pathlock.hmm import hmm_loglike

    with pm.Model() as model:
        mu, sigma, p_stay, _ = _priors()
        log_emit = pm.logp(pm.Normal.dist(mu, sigma), y[:, None])
        log_trans = pt.stack(
            [
                pt.stack([pt.log(p_stay[0]), pt.log1p(-p_stay[0])]),
                pt.stack([pt.log1p(-p_stay[1]), pt.log(p_stay[1])]),
            ]
        )
        pm.Potential("loglike", hmm_loglike(np.log([0.5, 0.5]), log_trans, log_emit).sum())
    return model


def extras_model(y: np.ndarray):
    """The same model with a DiscreteMarkovChain marginalised by pymc-extras."""
    import pymc as pm
    from pymc_extras import marginalize
    from pymc_extras.distributions import DiscreteMarkovChain

    with pm.Model() as model:
        mu, sigma, _, trans = _priors()
        states = DiscreteMarkovChain(
            "states",
            P=trans,
            init_dist=pm.Categorical.dist(p=[0.5, 0.5]),
            steps=len(y) - 1,
        )
        pm.Normal("y", mu[states], sigma, observed=y)
    return marginalize(model, ["states"])


def make_reference():
    """Plain numba forward-backward for this model: value and gradient.

    ``x = (mu0, log delta, log sigma, logit p_stay[0], logit p_stay[1])``, the
    same unconstrained parameters, priors and Jacobians as PyMC's, so the value
    equals the compiled PyMC models' log-density.
    """
    import numba

    log_sqrt_2pi = 0.5 * math.log(2.0 * math.pi)
    log_half_normal_const = math.log(2.0) - log_sqrt_2pi
    log_beta_82 = math.lgamma(8.0) + math.lgamma(2.0) - math.lgamma(10.0)

    @numba.njit(fastmath=False, nogil=True)
    def logp_and_grad(x, y):
        n_steps = y.shape[0]
        mu0, zd, zs, w0, w1 = x[0], x[1], x[2], x[3], x[4]
        delta, sigma = math.exp(zd), math.exp(zs)
        p0, p1 = 1.0 / (1.0 + math.exp(-w0)), 1.0 / (1.0 + math.exp(-w1))
        a00, a01, a10, a11 = p0, 1.0 - p0, 1.0 - p1, p1
        m0, m1 = mu0, mu0 + delta
        inv_var = 1.0 / (sigma * sigma)
        # Emission likelihoods scaled by their per-step maximum.
        b = np.empty((n_steps, 2))
        alpha = np.empty((n_steps, 2))
        scale = np.empty(n_steps)
        loglik = 0.0
        for t in range(n_steps):
            e0 = -0.5 * (y[t] - m0) ** 2 * inv_var
            e1 = -0.5 * (y[t] - m1) ** 2 * inv_var
            mx = max(e0, e1)
            b0, b1 = math.exp(e0 - mx), math.exp(e1 - mx)
            b[t, 0], b[t, 1] = b0, b1
            if t == 0:
                f0, f1 = 0.5 * b0, 0.5 * b1
            else:
                f0 = (alpha[t - 1, 0] * a00 + alpha[t - 1, 1] * a10) * b0
                f1 = (alpha[t - 1, 0] * a01 + alpha[t - 1, 1] * a11) * b1
            c = f0 + f1
            alpha[t, 0], alpha[t, 1] = f0 / c, f1 / c
            scale[t] = c
            loglik += math.log(c) + mx
        loglik -= n_steps * (log_sqrt_2pi + zs)
        # Backward pass: smoothed marginals and expected transition counts.
        g_m0 = g_m1 = 0.0
        g_zs = 0.0
        s00 = s01 = s10 = s11 = 0.0
        be0 = be1 = 1.0
        for t in range(n_steps - 1, -1, -1):
            g0, g1 = alpha[t, 0] * be0, alpha[t, 1] * be1
            r0, r1 = y[t] - m0, y[t] - m1
            g_m0 += g0 * r0 * inv_var
            g_m1 += g1 * r1 * inv_var
            g_zs += g0 * (r0 * r0 * inv_var - 1.0) + g1 * (r1 * r1 * inv_var - 1.0)
            if t > 0:
                q0 = b[t, 0] * be0 / scale[t]
                q1 = b[t, 1] * be1 / scale[t]
                s00 += alpha[t - 1, 0] * a00 * q0
                s01 += alpha[t - 1, 0] * a01 * q1
                s10 += alpha[t - 1, 1] * a10 * q0
                s11 += alpha[t - 1, 1] * a11 * q1
                be0, be1 = a00 * q0 + a01 * q1, a10 * q0 + a11 * q1
        # Priors with the log / logit Jacobians, as PyMC writes them.
        lp = -0.5 * (mu0 / 3.0) ** 2 - math.log(3.0) - log_sqrt_2pi
        lp += log_half_normal_const - math.log(3.0) - 0.5 * (delta / 3.0) ** 2 + zd
        lp += log_half_normal_const - math.log(2.0) - 0.5 * (sigma / 2.0) ** 2 + zs
        for p in (p0, p1):
            lp += 8.0 * math.log(p) + 2.0 * math.log1p(-p) - log_beta_82
        grad = np.empty(5)
        grad[0] = g_m0 + g_m1 - mu0 / 9.0
        grad[1] = g_m1 * delta - delta * delta / 9.0 + 1.0
        grad[2] = g_zs - sigma * sigma / 4.0 + 1.0
        grad[3] = s00 * (1.0 - p0) - s01 * p0 + 8.0 - 10.0 * p0
        grad[4] = s11 * (1.0 - p1) - s10 * p1 + 8.0 - 10.0 * p1
        return loglik + lp, grad

    return logp_and_grad


def _timing_loops():
    import numba

    @numba.njit(nogil=True)
    def loop_pytensor(fn, x, n):
        acc = 0.0
        for _ in range(n):
            out = fn(x)
            acc += out[0].item() + out[1][0]
        return acc

    @numba.njit(nogil=True)
    def loop_reference(fn, x, y, n):
        acc = 0.0
        for _ in range(n):
            value, grad = fn(x, y)
            acc += value + grad[0]
        return acc

    return loop_pytensor, loop_reference


def _median_us(run: Callable[[int], float], n_inner: int, repeats: int) -> float:
    run(max(1, n_inner // 10))  # compile and warm caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(n_inner)
        times.append((time.perf_counter() - start) / n_inner * 1e6)
    return float(np.median(times))


@dataclass(frozen=True)
class GradRow:
    n_steps: int
    ours_us: float
    reference_us: float
    extras_us: float | None
    compile_ours_s: float
    compile_extras_s: float | None
    max_abs_logp_diff: float


def bench_gradient(n_steps: int, repeats: int, with_extras: bool) -> GradRow:
    import nutpie

    y = simulate(n_steps)
    loop_pytensor, loop_reference = _timing_loops()
    reference = make_reference()

    start = time.perf_counter()
    compiled = nutpie.compile_pymc_model(ours_model(y), backend="numba")
    compile_ours = time.perf_counter() - start
    assert not compiled.logp_func.get_shared(), "benchmark expects no shared variables"
    fn = compiled.logp_func.vm.jit_fn
    rng = np.random.default_rng(0)
    x = np.array([-1.0, math.log(2.0), math.log(0.8), 3.0, 3.0]) + 0.1 * rng.normal(size=5)

    # Same model, same parameters: the three must agree before timing means anything.
    ours_val, ours_grad = (np.asarray(v) for v in fn(x))
    ref_val, ref_grad = reference(x, y)
    diff = max(abs(float(ours_val) - ref_val), float(np.max(np.abs(ours_grad - ref_grad))))
    n_inner = max(20, int(2e5 / n_steps))
    ours_us = _median_us(lambda n: loop_pytensor(fn, x, n), n_inner, repeats)
    ref_us = _median_us(lambda n: loop_reference(reference, x, y, n), n_inner, repeats)

    extras_us = compile_extras = None
    if with_extras:
        start = time.perf_counter()
        compiled_x = nutpie.compile_pymc_model(extras_model(y), backend="numba")
        compile_extras = time.perf_counter() - start
        fn_x = compiled_x.logp_func.vm.jit_fn
        x_val, x_grad = (np.asarray(v) for v in fn_x(x))
        diff = max(diff, abs(float(x_val) - ref_val), float(np.max(np.abs(x_grad - ref_grad))))
        extras_us = _median_us(
            lambda n: loop_pytensor(fn_x, x, n), max(5, n_inner // 30), max(3, repeats // 2)
        )
    return GradRow(n_steps, ours_us, ref_us, extras_us, compile_ours, compile_extras, diff)


# --------------------------------------------------------------------------
# end to end, each in a fresh subprocess
# --------------------------------------------------------------------------


def _min_bulk_ess(draws: dict[str, np.ndarray]) -> float:
    from arviz_stats import ess

    values = []
    for arr in draws.values():
        arr = np.asarray(arr).reshape(arr.shape[0], arr.shape[1], -1)
        for j in range(arr.shape[2]):
            values.append(float(ess(arr[:, :, j], method="bulk")))
    return min(values)


def worker_ours(n_steps: int, chains: int, tune: int, draws: int, seed: int, patch: bool) -> dict:
    t0 = time.perf_counter()
    if patch:
        _patch_numba_slice_error()
    import nutpie

    t_import = time.perf_counter() - t0
    y = simulate(n_steps)
    start = time.perf_counter()
    compiled = nutpie.compile_pymc_model(ours_model(y), backend="numba")
    t_compile = time.perf_counter() - start
    start = time.perf_counter()
    dt = nutpie.sample(
        compiled, chains=chains, tune=tune, draws=draws, seed=seed, progress_bar=False
    )
    t_sample = time.perf_counter() - start
    post = dt.posterior
    samples = {name: post[name].values for name in ("mu0", "delta", "sigma", "p_stay")}
    divergences = int(dt.sample_stats["diverging"].values.sum())
    return {
        "import_s": t_import,
        "compile_s": t_compile,
        "sample_s": t_sample,
        "min_ess": _min_bulk_ess(samples),
        "divergences": divergences,
        "mu": float(samples["mu0"].mean()),
    }


def worker_numpyro(
    n_steps: int, chains: int, tune: int, draws: int, seed: int, chain_method: str, x64: bool
) -> dict:
    t0 = time.perf_counter()
    import numpyro

    if chain_method == "parallel":
        numpyro.set_host_device_count(chains)
    numpyro.enable_x64(x64)
    import jax
    import jax.numpy as jnp
    import numpyro.distributions as dist
    from jax.scipy.special import logsumexp
    from numpyro.infer import MCMC, NUTS

    t_import = time.perf_counter() - t0
    y = jnp.asarray(simulate(n_steps))

    def model(y):
        mu0 = numpyro.sample("mu0", dist.Normal(0.0, 3.0))
        delta = numpyro.sample("delta", dist.HalfNormal(3.0))
        sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
        p_stay = numpyro.sample("p_stay", dist.Beta(8.0, 2.0).expand([2]))
        mu = jnp.stack([mu0, mu0 + delta])
        log_trans = jnp.log(
            jnp.stack(
                [jnp.stack([p_stay[0], 1 - p_stay[0]]), jnp.stack([1 - p_stay[1], p_stay[1]])]
            )
        )
        log_emit = dist.Normal(mu, sigma).log_prob(y[:, None])

        def step(log_alpha, le_t):
            return logsumexp(log_alpha[:, None] + log_trans, axis=0) + le_t, None

        log_alpha, _ = jax.lax.scan(step, jnp.log(0.5) + log_emit[0], log_emit[1:])
        numpyro.factor("loglike", logsumexp(log_alpha))

    mcmc = MCMC(
        NUTS(model),
        num_warmup=tune,
        num_samples=draws,
        num_chains=chains,
        chain_method=chain_method,
        progress_bar=False,
    )
    # numpyro compiles inside run(); split compile from sampling by timing a
    # 1-iteration run with the same shapes first would recompile anyway, so
    # report the total and the first-call latency of the jitted potential.
    start = time.perf_counter()
    mcmc.run(jax.random.PRNGKey(seed), y, extra_fields=("diverging",))
    t_total = time.perf_counter() - start
    samples = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    divergences = int(np.asarray(mcmc.get_extra_fields()["diverging"]).sum())
    return {
        "import_s": t_import,
        "compile_s": float("nan"),
        "sample_s": t_total,
        "min_ess": _min_bulk_ess(samples),
        "divergences": divergences,
        "mu": float(samples["mu0"].mean()),
    }


def _patch_numba_slice_error() -> None:
    """Make numba's slice-assignment error constant-message (see README).

    numba >= 0.61 builds the "cannot assign slice of shape ... from input of
    shape ..." message with string formatting, which numba compiles afresh in
    every process for every array rank used in an assignment (seconds each).
    nutpie's C callbacks are uncacheable and contain such assignments.
    """
    import numba.np.arrayobj as arrayobj
    from numba.extending import overload

    def raise_shape_mismatch(src_shapes, index_shape):
        raise NotImplementedError

    @overload(raise_shape_mismatch)
    def _impl(src_shapes, index_shape):
        def impl(src_shapes, index_shape):
            raise ValueError("cannot assign slice from input of different size")

        return impl

    arrayobj.raise_with_shape_context = raise_shape_mismatch


def run_worker(kind: str, args: argparse.Namespace, n_steps: int, extra: list[str]) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        kind,
        "--steps",
        str(n_steps),
        "--chains",
        str(args.chains),
        "--tune",
        str(args.tune),
        "--draws",
        str(args.draws),
        *extra,
    ]
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"worker {kind} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_s"] = wall
    return result


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--steps", type=int, nargs="+", default=None)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--tune", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--no-extras", action="store_true", help="skip pymc-extras")
    parser.add_argument("--no-e2e", action="store_true", help="skip end-to-end sampling")
    parser.add_argument(
        "--numpyro-chain-method",
        choices=["sequential", "vectorized", "parallel"],
        default="sequential",
    )
    parser.add_argument("--numpyro-x32", action="store_true", help="numpyro in float32")
    parser.add_argument(
        "--patch-numba",
        action="store_true",
        help="also time ours with numba's slice-assignment error message patched",
    )
    parser.add_argument("--worker", choices=["ours", "numpyro"], help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    if args.worker:
        n_steps = args.steps[0]
        if args.worker == "ours":
            res = worker_ours(
                n_steps, args.chains, args.tune, args.draws, args.seed, args.patch_numba
            )
        else:
            res = worker_numpyro(
                n_steps,
                args.chains,
                args.tune,
                args.draws,
                args.seed,
                args.numpyro_chain_method,
                not args.numpyro_x32,
            )
        print(json.dumps(res))
        return

    if args.quick:
        args.steps = args.steps or [200]
        args.repeats = min(args.repeats, 3)
        args.tune = args.draws = 100
        args.chains = 2
    steps = args.steps or [500, 5000]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# cpus: {os.cpu_count()}, load average (1 min) at start: {load:.2f}")

    print("\n## microseconds per logp + gradient (median of repeats, timed in a numba loop)")
    header = (
        f"{'T':>6} {'ours':>9} {'reference':>10} {'ours/ref':>9} "
        f"{'pymc-extras':>12} {'extras/ours':>12} {'compile ours s':>15} "
        f"{'compile extras s':>17} {'max |diff|':>11}"
    )
    print(header)
    for n in steps:
        row = bench_gradient(n, args.repeats, not args.no_extras)
        extras = f"{row.extras_us:12.1f}" if row.extras_us is not None else f"{'-':>12}"
        ratio_x = (
            f"{row.extras_us / row.ours_us:12.1f}" if row.extras_us is not None else f"{'-':>12}"
        )
        cx = f"{row.compile_extras_s:17.1f}" if row.compile_extras_s is not None else f"{'-':>17}"
        print(
            f"{n:>6} {row.ours_us:9.1f} {row.reference_us:10.1f} "
            f"{row.ours_us / row.reference_us:9.2f} {extras} {ratio_x} "
            f"{row.compile_ours_s:15.1f} {cx} {row.max_abs_logp_diff:11.1e}",
            flush=True,
        )

    if args.no_e2e:
        return
    print(
        f"\n## end to end: {args.chains} chains x {args.tune} tune + {args.draws} draws, "
        "fresh process each (seconds; ESS = min bulk ESS over parameters)"
    )
    print(
        f"{'T':>6} {'sampler':<22} {'import':>7} {'compile':>8} {'sample':>8} "
        f"{'total':>8} {'min ESS':>8} {'ESS/s':>7} {'div':>5} {'total/numpyro':>14}"
    )
    nm = args.numpyro_chain_method + ("" if not args.numpyro_x32 else ",f32")
    for n in steps:
        runs = {"ours (nutpie)": run_worker("ours", args, n, [])}
        if args.patch_numba:
            runs["ours (nutpie, patched)"] = run_worker("ours", args, n, ["--patch-numba"])
        extra = ["--numpyro-chain-method", args.numpyro_chain_method]
        if args.numpyro_x32:
            extra.append("--numpyro-x32")
        runs[f"numpyro ({nm})"] = run_worker("numpyro", args, n, extra)
        base = runs[f"numpyro ({nm})"]
        base_total = base["sample_s"] + (0 if math.isnan(base["compile_s"]) else base["compile_s"])
        for name, r in runs.items():
            total = r["sample_s"] + (0 if math.isnan(r["compile_s"]) else r["compile_s"])
            comp = "incl." if math.isnan(r["compile_s"]) else f"{r['compile_s']:8.1f}"
            print(
                f"{n:>6} {name:<22} {r['import_s']:7.1f} {comp:>8} {r['sample_s']:8.1f} "
                f"{total:8.1f} {r['min_ess']:8.0f} {r['min_ess'] / total:7.1f} "
                f"{r['divergences']:5d} {total / base_total:14.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
