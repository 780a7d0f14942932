"""Cost of one log-density + gradient evaluation of the canonical decoupling model.

NUTS calls this function once per leapfrog step, so it sets the price of every
fit: at T = 1000 a 4 x (1000 + 1000) run takes about 8000 draws x (leapfrog
steps per draw) of them, plus the tuning draws.

For each length the script builds ``models/decoupling.toml`` on data simulated
from it (seed 1), compiles value and gradient with PyTensor's numba backend
(the backend nutpie samples with) and times them at the model's initial
point, median of ``--repeats`` blocks (each call also pays about 3 us of
Python overhead). It times

- ``shipped``: the model as built;
- ``generic``: the same model built with PyTensor's ``cumsum`` for the latent
  path and the general row-wise ``log_softmax`` for two-regime transitions,
  the implementations these replaced;
- the pieces alone at the same length: ``cumsum`` against
  ``pathlock.processes.cumulative_sum``, the two transition-row builders, and
  the forward-backward Op (value and gradient).

Ratios come from one run; compare them, not absolute times across machines.

Usage::

    python benchmarks/bench_gradient.py                 # T = 120 and 1000
    python benchmarks/bench_gradient.py --steps 200 5000 --repeats 9
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
import warnings
from pathlib import Path

import numpy as np


def _median_us(fn, args, repeats: int, inner: int) -> float:
    fn(*args)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn(*args)
        times.append((time.perf_counter() - start) / inner * 1e6)
    return float(np.median(times))


def _function(inputs, outputs):
    import pytensor

    fn = pytensor.function(inputs, outputs, mode="NUMBA", on_unused_input="ignore")
    fn.trust_input = True
    return fn


@contextlib.contextmanager
def _generic_pieces():
    """Build with the implementations that the shipped pieces replaced."""
    import pytensor.tensor as pt

    from pathlock import decoupling, processes, regimes

    saved = processes.cumulative_sum, decoupling.cumulative_sum, regimes._log_trans_two
    generic_cumsum = lambda x: pt.cumsum(x, axis=1)  # noqa: E731
    processes.cumulative_sum = decoupling.cumulative_sum = generic_cumsum
    regimes._log_trans_two = regimes._log_trans_general
    try:
        yield
    finally:
        processes.cumulative_sum, decoupling.cumulative_sum, regimes._log_trans_two = saved


def model_gradient_us(n_steps: int, repeats: int, generic: bool) -> tuple[float, float]:
    """Value + gradient of the model, microseconds; and the log density (to compare)."""
    import pytensor.tensor as pt

    import pathlock as pl
    from pathlock import decoupling
    from pathlock.data import from_dataframe

    spec = pl.Spec.from_toml(Path(__file__).resolve().parents[1] / "models" / "decoupling.toml")
    df, _ = pl.simulate(spec, None, n_steps=n_steps, n_units=1, seed=1)
    with _generic_pieces() if generic else contextlib.nullcontext():
        model = decoupling.build(spec, from_dataframe(df, time="time")).model
    values = model.value_vars
    logp = model.logp()
    fn = _function(values, [logp, *pt.grad(logp, values)])
    point = model.initial_point()
    args = [point[v.name] for v in values]
    return _median_us(fn, args, repeats, max(50, 200_000 // n_steps)), float(fn(*args)[0])


def pieces_us(n_steps: int, repeats: int) -> dict[str, float]:
    """The replaced pieces alone, value and gradient of a weighted sum."""
    import pytensor
    import pytensor.tensor as pt

    from pathlock.hmm import hmm_loglike
    from pathlock.processes import cumulative_sum
    from pathlock.regimes import _log_trans_general, _log_trans_two

    rng = np.random.default_rng(0)
    inner = max(200, 400_000 // n_steps)
    out = {}
    x = pt.tensor("x", shape=(1, n_steps))
    w = rng.normal(size=(1, n_steps))
    xv = rng.normal(size=(1, n_steps))
    cumsums = (("cumsum", lambda v: pt.cumsum(v, axis=1)), ("cumulative_sum", cumulative_sum))
    for label, f in cumsums:
        y = (f(x) * w).sum()
        out[label] = _median_us(_function([x], [y, pytensor.grad(y, x)]), [xv], repeats, inner)
    z = pt.tensor("z", shape=(1, n_steps, 2, 2))
    zv = rng.normal(size=(1, n_steps, 2, 2))
    builders = (("log_softmax rows", _log_trans_general), ("log-sigmoid rows", _log_trans_two))
    for label, f in builders:
        rows = f(z, "absorbing")
        y = pt.switch(pt.isfinite(rows), rows, 0.0).sum()
        out[label] = _median_us(_function([z], [y, pytensor.grad(y, z)]), [zv], repeats, inner)
    li = pt.tensor("li", shape=(1, 2))
    lt = pt.tensor("lt", shape=(1, n_steps, 2, 2))
    le = pt.tensor("le", shape=(1, n_steps, 2))
    ll = hmm_loglike(li, lt, le).sum()
    ltv = np.zeros((1, n_steps, 2, 2))
    ltv[..., 0, 0], ltv[..., 0, 1] = np.log1p(-0.01), np.log(0.01)
    ltv[..., 1, 0] = -np.inf
    args = [np.array([[0.0, -np.inf]]), ltv, rng.normal(size=(1, n_steps, 2))]
    fn = _function([li, lt, le], [ll, *pytensor.grad(ll, [lt, le])])
    out["forward-backward Op"] = _median_us(fn, args, repeats, inner)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[120, 1000])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()}")
    print()
    print("| T | shipped us | generic us | generic / shipped | log density shipped - generic |")
    print("|---|---|---|---|---|")
    rows = []
    for n in args.steps:
        shipped, lp_s = model_gradient_us(n, args.repeats, generic=False)
        generic, lp_g = model_gradient_us(n, args.repeats, generic=True)
        ratio = generic / shipped
        print(f"| {n} | {shipped:.1f} | {generic:.1f} | {ratio:.2f} | {lp_s - lp_g:.1e} |")
        rows.append((n, pieces_us(n, args.repeats)))
    print()
    names = list(rows[0][1])
    print("| T | " + " | ".join(f"{k} us" for k in names) + " |")
    print("|---|" + "---|" * len(names))
    for n, piece in rows:
        print(f"| {n} | " + " | ".join(f"{piece[k]:.1f}" for k in names) + " |")


if __name__ == "__main__":
    main()
