"""What compiling the canonical decoupling model costs, cold and with the disk cache.

``pathlock.fit`` samples with nutpie's numba backend. The first compile of a
model on a machine writes PyTensor's numba cache (and ``pathlock.compiled``'s
callbacks) to disk; later compiles of the same graph load it. Since the graph
reads the series length at run time, a model of the same spec compiled for
one length serves every other length.

Each row runs in a fresh Python process, in order, sharing one PyTensor
compile directory that starts empty (a temporary one unless ``--compiledir``
is given): the first row is a cold compile, each later row sees what the
rows before it left in the cache. Every process builds
``models/decoupling.toml`` on data simulated from it (seed 1, one unit),
compiles it as ``pathlock.fit`` does, checks that the log density and
gradient are finite at the initial point and times one gradient (median of
7 blocks of 200 calls, through nuts-rs's C callback).

Usage::

    python benchmarks/bench_compile.py                   # T = 200, 1000, 300, 1000
    python benchmarks/bench_compile.py --steps 1000 1000
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from _child import run_child

_ROOT = Path(__file__).resolve().parents[1]

_CHILD = r"""
import ctypes, json, sys, time, warnings
warnings.filterwarnings("ignore")
start = time.perf_counter()
import numpy as np
import pathlock as pl
from pathlock.data import from_dataframe
from pathlock.fit import _compile
imported = time.perf_counter() - start
n_steps = int(sys.argv[1])
spec = pl.Spec.from_toml(sys.argv[2])
df, _ = pl.simulate(spec, None, n_steps=n_steps, n_units=1, seed=1)
built = spec.build(spec.prepare_data(from_dataframe(df, time="time")))
t = time.perf_counter()
compiled = _compile(built)
compile_s = time.perf_counter() - t
n = compiled.n_dim
x = compiled.initial_point_func(1)
grad, logp = np.zeros(n), np.zeros(1)
P = ctypes.POINTER(ctypes.c_double)
args = (n, x.ctypes.data_as(P), grad.ctypes.data_as(P), logp.ctypes.data_as(P),
        compiled.user_data.ctypes.data_as(ctypes.c_void_p))
fn = compiled.compiled_logp_func.ctypes
code = fn(*args)
ok = code == 0 and np.isfinite(logp[0]) and np.all(np.isfinite(grad))
blocks = []
for _ in range(7):
    t = time.perf_counter()
    for _ in range(200):
        fn(*args)
    blocks.append((time.perf_counter() - t) / 200 * 1e6)
print(json.dumps({
    "import_s": imported, "compile_s": compile_s, "grad_us": float(np.median(blocks)),
    "finite": bool(ok), "hits": int(compiled.compiled_logp_func.cache_hits),
}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[200, 1000, 300, 1000])
    parser.add_argument("--spec", type=Path, default=_ROOT / "models" / "decoupling.toml")
    parser.add_argument(
        "--compiledir", type=Path, help="an empty directory to compile into (default: temporary)"
    )
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="pathlock-bench-compile-") as tmp:
        compiledir = args.compiledir or Path(tmp)
        rows = []
        for i, n_steps in enumerate(args.steps):
            seen = sorted(set(args.steps[:i]))
            cache = "empty" if not seen else "holds T = " + ", ".join(map(str, seen))
            rows.append(
                (
                    n_steps,
                    cache,
                    run_child(_CHILD, [str(n_steps), str(args.spec)], compiledir=compiledir),
                )
            )
    first = rows[0][2]["compile_s"]
    print("| T | cache before the run | compile s | / first | callbacks loaded | gradient us |")
    print("|---|---|---|---|---|---|")
    for n_steps, cache, r in rows:
        if not r["finite"]:
            raise SystemExit(f"T = {n_steps}: the log density or gradient is not finite")
        print(
            f"| {n_steps} | {cache} | {r['compile_s']:.1f} | {r['compile_s'] / first:.2f} "
            f"| {'yes' if r['hits'] else 'no'} | {r['grad_us']:.1f} |"
        )


if __name__ == "__main__":
    main()
