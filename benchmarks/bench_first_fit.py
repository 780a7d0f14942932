"""The first fit of a spec on a machine, by backend: numba's cold compile against JAX's.

``pathlock.fit`` samples with nutpie. With numba (the default) the first fit
of a spec on a machine compiles the model cold and writes it to PyTensor's
disk cache; every later process loads it. With ``backend="jax"`` nothing is
cached on disk and the compile takes seconds, but each log-density evaluation
is a Python call. This script measures what a user waits for.

Each row is a fresh Python process, timed from its start (imports included),
fitting ``models/decoupling.toml`` with its defaults (4 chains x 1000 + 1000)
to data simulated from it (one unit, data seed 1), then a second data set
(seed 2) in the same process. Per series length:

1. numba, with PyTensor's and numba's caches empty (``PYTENSOR_FLAGS=
   base_compiledir`` and ``NUMBA_CACHE_DIR`` point at new directories);
2. numba, in a new process with the caches row 1 left;
3. jax, with both caches empty (pathlock's numba kernels for the analysis
   after sampling are compiled cold there too).

Usage::

    python benchmarks/bench_first_fit.py                  # T = 1000 and 200
    python benchmarks/bench_first_fit.py --steps 1000
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from _child import run_child

_ROOT = Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, sys, time, warnings
start = time.perf_counter()
warnings.filterwarnings("ignore")
import pathlock as pl
import xarray as xr
from pathlock.fit import check_convergence
imported = time.perf_counter() - start
n_steps, backend = int(sys.argv[1]), sys.argv[2]
spec = pl.Spec.from_toml(sys.argv[3])
rows = []
for data_seed in (1, 2):
    df, _ = pl.simulate(spec, None, n_steps=n_steps, n_units=1, seed=data_seed)
    t = time.perf_counter()
    fit = pl.fit(spec, df, seed=1, backend=backend, check=False)
    wall = time.perf_counter() - t
    tree = fit.idata
    post = tree["posterior"].to_dataset()
    path = [n for n, v in post.data_vars.items() if n == "constraint_raw" or "time" in v.dims]
    params = xr.DataTree.from_dict(
        {"posterior": post.drop_vars(path), "sample_stats": tree["sample_stats"].to_dataset()}
    )
    rows.append({
        "fit_s": wall,
        "since_start_s": time.perf_counter() - start,
        "divergent": int(tree.sample_stats["diverging"].sum()),
        "rhat_all": check_convergence(tree)["max_rhat"],
        "rhat_params": check_convergence(params)["max_rhat"],
    })
print(json.dumps({"import_s": imported, "fits": rows}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[1000, 200])
    parser.add_argument("--spec", type=Path, default=_ROOT / "models" / "decoupling.toml")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()}")
    print(
        "| T | backend | caches | import s | first fit s | since start s | divergent "
        "| R-hat params / all | second fit s | divergent | R-hat params / all |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for n_steps in args.steps:
        with tempfile.TemporaryDirectory(prefix="pathlock-bench-first-") as tmp:
            root = Path(tmp)
            runs = [
                ("numba", "empty", "a"),
                ("numba", "left by the row above", "a"),
                ("jax", "empty", "b"),
            ]
            for backend, caches, cache_set in runs:
                pytensor_dir, numba_dir = root / cache_set / "pytensor", root / cache_set / "numba"
                pytensor_dir.mkdir(parents=True, exist_ok=True)
                numba_dir.mkdir(parents=True, exist_ok=True)
                r = run_child(
                    _CHILD,
                    [str(n_steps), backend, str(args.spec)],
                    compiledir=pytensor_dir,
                    numba_cache_dir=numba_dir,
                )
                first, second = r["fits"]
                print(
                    f"| {n_steps} | {backend} | {caches} | {r['import_s']:.1f} "
                    f"| {first['fit_s']:.1f} | {first['since_start_s']:.1f} "
                    f"| {first['divergent']} "
                    f"| {first['rhat_params']:.3f} / {first['rhat_all']:.3f} "
                    f"| {second['fit_s']:.1f} | {second['divergent']} "
                    f"| {second['rhat_params']:.3f} / {second['rhat_all']:.3f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
