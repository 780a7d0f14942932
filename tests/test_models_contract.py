"""Contract: every model file in models/ builds, has a finite gradient at the initial
point, samples briefly, and its fit has the documented dims and coords."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import pathlock as pl
from pathlock import datasets, dims

MODELS = sorted(datasets.models_dir().glob("*.toml"))


def _data(spec, path: Path):
    if spec.family == "markov_switching":
        name = next(n for n, e in datasets.registry().items() if e.spec == path.stem)
        return datasets.load(name).set_index(datasets.info(name).time)
    n_units = 2 if spec.data.unit else 1
    frame, _ = pl.simulate(spec, n_steps=30, n_units=n_units, seed=5)
    if spec.data.time != "time" or spec.data.freq:
        # Model files with dated panels get dates, as their users would bring.
        steps = frame[spec.data.time].to_numpy()
        frame[spec.data.time] = pd.date_range("2020-01-01", periods=30, freq="MS")[steps]
    return frame


@pytest.mark.slow
@pytest.mark.parametrize("path", MODELS, ids=[p.stem for p in MODELS])
def test_model_file_builds_and_samples(path: Path) -> None:
    spec = pl.load_spec(path)
    data = spec.prepare_data(_data(spec, path))
    model = pl.build_model(spec, data)
    point = model.initial_point()
    # FAST_COMPILE: the check needs values, not the C backend's compile time.
    assert np.isfinite(model.compile_logp(mode="FAST_COMPILE")(point))
    assert np.all(np.isfinite(model.compile_dlogp(mode="FAST_COMPILE")(point)))
    fit = pl.fit(spec, data, draws=20, tune=30, chains=1, seed=1, check=False)
    post = fit.idata.posterior
    assert post.sizes[dims.CHAIN] == 1 and post.sizes[dims.DRAW] == 20
    ll = fit.idata["log_likelihood"]["y"]
    assert ll.dims == (dims.CHAIN, dims.DRAW, dims.UNIT, dims.TIME)
    probs = fit.regime_probabilities(average=True)
    assert probs.dims == (dims.UNIT, dims.TIME, dims.REGIME)
    np.testing.assert_allclose(probs.sum(dims.REGIME), 1.0, atol=1e-9)
    if spec.family == "decoupling":
        assert list(probs[dims.REGIME].values) == list(spec.regime_names)
        assert post["constraint"].dims[-2:] == (dims.UNIT, dims.TIME)
