"""Run a benchmark's measurement in a fresh Python process with its own compile caches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def run_child(
    source: str, args: list[str], *, compiledir: Path, numba_cache_dir: Path | None = None
) -> dict[str, Any]:
    """Run ``source`` with ``python -c`` and ``args``; return the JSON of its last output line.

    PyTensor compiles into ``compiledir`` (``PYTENSOR_FLAGS=base_compiledir``,
    added to the flags already set) and, where given, numba caches pathlock's
    own kernels in ``numba_cache_dir`` (``NUMBA_CACHE_DIR``), so that an empty
    directory is a cold start.
    """
    env = dict(os.environ)
    flags = env.get("PYTENSOR_FLAGS", "")
    env["PYTENSOR_FLAGS"] = ",".join(f for f in (flags, f"base_compiledir={compiledir}") if f)
    if numba_cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = str(numba_cache_dir)
    out = subprocess.run(
        [sys.executable, "-c", source, *args], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])
