"""CI-sized runs of the validation scripts (the full runs are in ``validation/``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(
        f"validation_{name}", ROOT / "validation" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    # Registered first: dataclasses look their module up in sys.modules.
    sys.modules[f"validation_{name}"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_sbc_small_run(compilations):
    """Three SBC simulations end to end: every scalar gets a rank per simulation,
    within [0, n_draws], and every statistic is a probability.  (Calibration
    itself needs the full 100-simulation run; three cannot test uniformity.)
    The decoupling model is compiled once for all three: every data-dependent
    value of its graph is data, so the compiled model is reused."""
    sbc = _load("sbc")
    res = sbc.run_sbc(3, 40, draws=60, tune=100, chains=1, thin_to=19, bins=4, seed=5)
    assert len(compilations) == 1
    assert res.n_draws == 19
    for name in sbc.SCALARS:
        r = res.ranks[name]
        assert r.shape == (3,)
        assert np.all((r >= 0) & (r <= res.n_draws))
        assert 0.0 <= res.chi2_p[name] <= 1.0
        assert 0.0 <= res.ks_p[name] <= 1.0
    assert 0 <= res.divergent_fits <= 3
