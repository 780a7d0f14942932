"""Plumbing of pathlock.fit: sampling, DataTree assembly, convergence warnings, save/load.

A toy two-regime mean-switching family implements the ModelSpec protocol, so
these tests exercise fit.py without depending on a real family's details.
"""

from __future__ import annotations

import importlib
import json
import tomllib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt
import pytest
import xarray as xr

from pathlock import dims
from pathlock.build import Built, register_family
from pathlock.errors import PathlockError, ResultFileError
from pathlock.fit import FILE_FORMAT_VERSION, ConvergenceWarning, Fit, fit, load_fit
from pathlock.testing import jittered_posterior


@dataclass(frozen=True)
class ToyData:
    y: np.ndarray
    time: pd.DatetimeIndex

    def to_dataset(self) -> xr.Dataset:
        return xr.Dataset(
            {"y": ((dims.UNIT, dims.TIME), self.y[None])},
            coords={dims.UNIT: ["a"], dims.TIME: self.time},
        )


@dataclass(frozen=True)
class ToySpec:
    family: str = "toy"
    stay: float = 0.95

    def prepare_data(self, data):
        if isinstance(data, ToyData):
            return data
        return ToyData(np.asarray(data["y"], float), pd.DatetimeIndex(data.index))

    def data_from_dataset(self, ds):
        return ToyData(ds["y"].values[0], pd.DatetimeIndex(ds[dims.TIME].values))

    def build(self, data):
        coords = {dims.UNIT: ["a"], dims.TIME: data.time, dims.REGIME: ["tracking", "decoupled"]}
        with pm.Model(coords=coords) as model:
            mu = pm.Normal(
                "toy_mu",
                [-1.0, 1.0],
                2.0,
                dims=dims.REGIME,
                transform=pm.distributions.transforms.ordered,
                initval=[-0.5, 0.5],
            )
            sigma = pm.HalfNormal("toy_sigma", 2.0)
            log_emit = pm.logp(pm.Normal.dist(mu, sigma), data.y[:, None])[None]
            log_trans = pt.log(
                pt.as_tensor([[self.stay, 1 - self.stay], [1 - self.stay, self.stay]])
            )
            log_init = pt.log(pt.as_tensor([[0.5, 0.5]]))
            from pathlock.hmm import hmm_loglike

            pm.Potential("toy_loglike", hmm_loglike(log_init, log_trans, log_emit).sum())
        return Built(model, log_init, log_trans[None, None], log_emit, {"mu": mu})

    def loglike(self, data, params):
        raise NotImplementedError

    def to_toml(self):
        return f'schema_version = 1\nfamily = "toy"\nstay = {self.stay}\n'

    @classmethod
    def from_toml_string(cls, text):
        d = tomllib.loads(text)
        return cls(stay=d["stay"])


register_family("toy", ToySpec)


@dataclass(frozen=True)
class SharedToySpec(ToySpec):
    """The toy model with its data as ``pm.Data``: compiled models may be reused."""

    family: str = "toy"

    def build(self, data):
        coords = {dims.UNIT: ["a"], dims.TIME: data.time, dims.REGIME: ["tracking", "decoupled"]}
        with pm.Model(coords=coords) as model:
            y = pm.Data("data_y", data.y)
            # A data-dependent initial value, as the decoupling model has.
            start = pm.Data("data_start", float(np.mean(data.y)))
            mu = pm.Normal("toy_mu", 0.0, 5.0, initval=start)
            sigma = pm.HalfNormal("toy_sigma", 2.0)
            log_emit = pm.logp(pm.Normal.dist(mu, sigma), y)[None, :, None]
            log_emit = pt.concatenate([log_emit, log_emit], axis=-1)
            pm.Potential("toy_loglike", log_emit.sum())
        log_init = pt.log(pt.as_tensor([[1.0, 1e-12]]))
        log_trans = pt.log(pt.as_tensor([[[[1.0 - 1e-12, 1e-12], [1e-12, 1.0 - 1e-12]]]]))
        return Built(model, log_init, log_trans, log_emit, {"mu": mu}, data_shared=True)


@pytest.fixture(scope="module")
def toy_data():
    rng = np.random.default_rng(3)
    s = np.repeat([0, 1, 0], [30, 30, 20])
    y = np.where(s == 0, -1.0, 1.0) + 0.5 * rng.normal(size=s.size)
    return pd.DataFrame({"y": y}, index=pd.date_range("2020-01-05", periods=s.size, freq="W"))


@pytest.fixture(scope="module")
def toy_fit(toy_data):
    return fit(ToySpec(), toy_data, draws=150, tune=150, chains=2, seed=1)


def test_fit_tree_has_groups_dims_and_coords(toy_fit, toy_data):
    tree = toy_fit.idata
    for group in ("posterior", "sample_stats", "observed_data", "constant_data", "log_likelihood"):
        assert group in tree
    ll = tree["log_likelihood"]["y"]
    assert ll.dims == (dims.CHAIN, dims.DRAW, dims.UNIT, dims.TIME)
    assert ll.shape == (2, 150, 1, len(toy_data))
    assert np.issubdtype(ll[dims.TIME].dtype, np.datetime64)
    assert list(tree.posterior["toy_mu"][dims.REGIME].values) == ["tracking", "decoupled"]


def test_pointwise_loglike_sums_to_marginal(toy_fit):
    fb = toy_fit.forward_backward()
    ll = toy_fit.idata["log_likelihood"]["y"].sum(dims.TIME).values.ravel()
    np.testing.assert_allclose(ll, fb.log_likelihood, rtol=0, atol=1e-9)


def test_per_draw_inputs_match_posterior(toy_fit):
    ri = toy_fit.regime_inputs()
    mu = toy_fit.idata.posterior["toy_mu"].values.reshape(-1, 2)
    np.testing.assert_allclose(ri.extras["mu"], mu)
    assert ri.log_emit.shape == (300, 1, 80, 2)


def test_save_load_round_trip(toy_fit, tmp_path):
    path = toy_fit.save(tmp_path / "fit.nc")
    loaded = load_fit(path)
    assert isinstance(loaded, Fit)
    assert loaded.spec == toy_fit.spec
    xr.testing.assert_allclose(
        loaded.idata.posterior.to_dataset(), toy_fit.idata.posterior.to_dataset()
    )
    np.testing.assert_array_equal(loaded.data.y, toy_fit.data.y)
    assert (loaded.data.time == toy_fit.data.time).all()
    settings = json.loads(loaded.idata.sample_stats.attrs["pathlock_sampling"])
    assert settings == {
        "sampler": "nutpie",
        "backend": "numba",
        "draws": 150,
        "tune": 150,
        "chains": 2,
        "seed": 1,
        "target_accept": None,
        "adaptation": "diag",
    }
    with pytest.raises(ResultFileError, match="exists"):
        toy_fit.save(path)


def test_load_rejects_incompatible_format(toy_fit, tmp_path):
    path = toy_fit.save(tmp_path / "fit.nc")
    tree = xr.open_datatree(path, engine="h5netcdf").load()
    tree.attrs["pathlock_file_format"] = FILE_FORMAT_VERSION + 1
    tree.to_netcdf(tmp_path / "future.nc", engine="h5netcdf")
    with pytest.raises(ResultFileError, match="file format"):
        load_fit(tmp_path / "future.nc")
    with pytest.raises(ResultFileError, match="no fit file"):
        load_fit(tmp_path / "missing.nc")


def test_bad_arguments_fail_before_sampling(toy_data):
    with pytest.raises(PathlockError, match="sampler must be one of"):
        fit(ToySpec(), toy_data, sampler="stan")
    with pytest.raises(PathlockError, match="draws must be at least 1"):
        fit(ToySpec(), toy_data, draws=0)
    with pytest.raises(PathlockError, match="target_accept"):
        fit(ToySpec(), toy_data, target_accept=1.5)
    with pytest.raises(
        PathlockError,
        match=r"adaptation must be one of \['draw_diag', 'diag', 'low_rank'\]; found 'dense'",
    ):
        fit(ToySpec(), toy_data, adaptation="dense")


def test_convergence_warning_names_parameters(toy_data):
    # Four draws of two chains cannot converge; the warning must name a parameter.
    with pytest.warns(ConvergenceWarning, match="toy_"):
        fit(ToySpec(), toy_data, draws=5, tune=5, chains=2, seed=2)


@pytest.mark.parametrize("stat", ["logp", "lp"])
def test_a_chain_far_below_the_others_is_named(stat):
    """A chain whose mean log density sits 9 within-chain sds below the others (as a
    chain stuck where the feedback never tracked did, T = 400) is named; chains
    that differ by sampling noise only are not. nutpie calls the statistic
    ``logp``, PyMC ``lp``."""
    from pathlock.fit import check_convergence

    rng = np.random.default_rng(0)
    lp = rng.normal(-755.0, 14.5, size=(4, 1000))
    theta = rng.normal(size=(4, 1000))

    def tree(lp):
        return xr.DataTree.from_dict(
            {
                "posterior": xr.Dataset({"theta": (("chain", "draw"), theta)}),
                "sample_stats": xr.Dataset(
                    {
                        stat: (("chain", "draw"), lp),
                        "diverging": (("chain", "draw"), np.zeros(lp.shape, bool)),
                    }
                ),
            }
        )

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_convergence(tree(lp))["low_chains"] == []
    stuck = lp.copy()
    stuck[2] -= 134.0
    with pytest.warns(ConvergenceWarning, match=r"chain 2 by 13[0-9]; such a chain sits"):
        out = check_convergence(tree(stuck))
    assert [c for c, _ in out["low_chains"]] == [2]
    # At 2 sds (29 here) the threshold still passes chains in one mode.
    assert check_convergence(tree(lp), lp_gap_sds=2.0)["low_chains"] == []


def test_pymc_sampler_gives_same_layout(toy_data):
    result = fit(
        ToySpec(), toy_data, draws=50, tune=50, chains=2, seed=4, sampler="pymc", check=False
    )
    assert result.idata["log_likelihood"]["y"].shape == (2, 50, 1, len(toy_data))


def test_nutpie_needs_tuning(toy_data):
    with pytest.raises(PathlockError, match="tune must be at least 1"):
        fit(ToySpec(), toy_data, tune=0)


# -- compiled models reused across data sets of the same shapes -----------------


def _toy_series(seed, mean, start):
    rng = np.random.default_rng(seed)
    index = pd.date_range(start, periods=40, freq="D")
    return pd.DataFrame({"y": mean + rng.normal(size=40)}, index=index)


def test_compiled_model_is_reused_for_new_data(compilations):
    """Same spec and shapes: one compilation, and the reused model samples exactly
    what a fresh compilation samples (same seed, bit for bit), with the new data's
    labels and posterior; earlier fits keep their own data."""
    fit_module = importlib.import_module("pathlock.fit")
    compiled = compilations
    kw = {"draws": 100, "tune": 100, "chains": 2, "seed": 7, "check": False}
    first = fit(SharedToySpec(), _toy_series(1, -3.0, "2001-01-01"), **kw)
    second_data = _toy_series(2, 4.0, "2010-06-01")
    second = fit(SharedToySpec(), second_data, **kw)
    assert len(compiled) == 1
    # The data moved the posterior: mu ~ 4 with these data, not -3.
    assert abs(float(second.idata.posterior["toy_mu"].mean()) - 4.0) < 0.5
    assert abs(float(first.idata.posterior["toy_mu"].mean()) + 3.0) < 0.5
    assert pd.Timestamp(second.idata["log_likelihood"][dims.TIME].values[0]) == pd.Timestamp(
        "2010-06-01"
    )
    np.testing.assert_array_equal(first.built.model["data_y"].get_value(), first.data.y)
    fit_module._COMPILED.clear()
    fresh = fit(SharedToySpec(), second_data, **kw)
    assert len(compiled) == 2
    np.testing.assert_array_equal(
        fresh.idata.posterior["toy_mu"].values, second.idata.posterior["toy_mu"].values
    )


def test_compiled_model_is_not_reused_across_specs_or_shapes(compilations):
    compiled = compilations
    kw = {"draws": 20, "tune": 20, "chains": 1, "seed": 7, "check": False}
    data = _toy_series(1, 0.0, "2001-01-01")
    fit(SharedToySpec(), data, **kw)
    fit(SharedToySpec(stay=0.9), data, **kw)  # another spec
    fit(SharedToySpec(), data.iloc[:30], **kw)  # other shapes
    fit(ToySpec(), data, **kw)  # data as constants: never cached
    fit(ToySpec(), data, **kw)
    assert len(compiled) == 5


# -- regime inputs: vectorised over draws == one draw at a time -----------------


def _assert_same_inputs(built, tree, monkeypatch):
    # ``pathlock.fit`` is also the name of the function the package exports.
    fit_module = importlib.import_module("pathlock.fit")

    loop = fit_module._evaluate_per_draw(built, tree, vectorized=False)

    def no_loop(*args, **kwargs):
        raise AssertionError("the vectorised path fell back to the per-draw loop")

    # 14 draws in chunks of 4 after the first: the last chunk is partial.
    with monkeypatch.context() as m:
        m.setattr(fit_module, "_evaluate_loop", no_loop)
        vec = fit_module._evaluate_per_draw(built, tree, chunk_draws=4)
    assert (vec.n_chains, vec.n_draws) == (loop.n_chains, loop.n_draws)
    pairs = [(f, getattr(loop, f), getattr(vec, f)) for f in ("log_init", "log_trans", "log_emit")]
    assert loop.extras.keys() == vec.extras.keys()
    pairs += [(k, loop.extras[k], vec.extras[k]) for k in loop.extras]
    for name, expected, found in pairs:
        assert found.shape == expected.shape and found.dtype == expected.dtype, name
        # The same float64 graph evaluated batched: differences are rounding only.
        np.testing.assert_allclose(found, expected, rtol=0, atol=1e-10, err_msg=name)
        assert np.isfinite(expected).any(), name


@pytest.mark.parametrize("process", ["ratchet", "ar1", "hysteresis"])
def test_vectorised_inputs_match_loop_decoupling(process, monkeypatch):
    import dataclasses

    from pathlock.data import from_dataframe
    from pathlock.simulate import simulate
    from pathlock.spec import Spec

    spec = Spec.from_toml(Path(__file__).resolve().parents[1] / "models" / "decoupling.toml")
    spec = dataclasses.replace(
        spec, constraint=dataclasses.replace(spec.constraint, process=process)
    )
    df, _ = simulate(spec, n_steps=30, n_units=2, seed=5)
    built = spec.build(from_dataframe(df, time=spec.data.time, unit="unit"))
    _assert_same_inputs(built, jittered_posterior(built, 2, 7, seed=6), monkeypatch)


def test_vectorised_inputs_match_loop_markov_switching(monkeypatch):
    from pathlock.msreg import MarkovSwitching

    root = Path(__file__).resolve().parents[1]
    spec = MarkovSwitching.from_toml(root / "models" / "hamilton1989.toml")
    gnp = pd.read_csv(root / "data" / "hamilton_gnp.csv", index_col=0, parse_dates=True)
    built = spec.build(spec.prepare_data(gnp))
    _assert_same_inputs(built, jittered_posterior(built, 2, 7, seed=7), monkeypatch)


def test_regime_inputs_take_the_latent_path_the_posterior_holds():
    """``Fit.regime_inputs`` reads the path a posterior holds instead of recomputing
    it from ``constraint_raw``: the recomputation depends on the data the model was
    built for (its centring), so it is wrong for a refit's draws scored on other data
    and for a fit saved under another parameterisation.  A posterior whose stored
    path is shifted by 0.5 from the recomputed one must give that path, and the
    emissions on it."""
    from pathlock.data import from_dataframe
    from pathlock.simulate import simulate
    from pathlock.spec import Spec

    spec = Spec.from_toml(Path(__file__).resolve().parents[1] / "models" / "decoupling.toml")
    df, _ = simulate(spec, n_steps=30, n_units=1, seed=5)
    data = from_dataframe(df, time=spec.data.time)
    built = spec.build(data)
    tree = jittered_posterior(built, 1, 3, seed=2)
    fit_module = importlib.import_module("pathlock.fit")
    recomputed = fit_module._evaluate_per_draw(built, tree)
    path = recomputed.extras["constraint"] + 0.5
    post = tree["posterior"].to_dataset()
    shape = (1, 3, *path.shape[1:])
    post["constraint"] = ((*dims.SAMPLE_DIMS, dims.UNIT, dims.TIME), path.reshape(shape))
    tree["posterior"] = xr.DataTree(post)
    inputs = Fit(idata=tree, spec=spec, data=data, built=built).regime_inputs()
    np.testing.assert_allclose(inputs.extras["constraint"], path, rtol=0, atol=1e-12)
    # The indicator's log-density moves with the path: the emissions are evaluated on it.
    assert np.abs(inputs.log_emit - recomputed.log_emit).max() > 1.0


class _Stop(Exception):
    """Raised by a patched sampler once it has seen its arguments."""


def _decoupling_sampler_case(monkeypatch, n_steps: int, **sampler):
    """The canonical spec with ``[sampler]`` values replaced, data of ``n_steps``
    simulated from it, and compilation patched out (the callers stop at sampling)."""
    import dataclasses

    from pathlock.simulate import simulate
    from pathlock.spec import Spec

    spec = Spec.from_toml(Path(__file__).resolve().parents[1] / "models" / "decoupling.toml")
    spec = dataclasses.replace(spec, sampler=dataclasses.replace(spec.sampler, **sampler))
    df, _ = simulate(spec, n_steps=n_steps, seed=1)
    monkeypatch.setattr(importlib.import_module("pathlock.fit"), "_compile_nutpie", lambda *a: None)
    return spec, df


@pytest.mark.parametrize(
    ("n_steps", "spec_value", "expected"), [(60, None, 0.98), (600, None, 0.85), (600, 0.8, 0.8)]
)
def test_decoupling_fit_takes_target_accept_by_length_unless_set(
    monkeypatch, n_steps, spec_value, expected
):
    """The decoupling model's unset target_accept is chosen from the series length
    (pathlock.spec.default_target_accept); a value in the spec is used as is."""
    spec, df = _decoupling_sampler_case(monkeypatch, n_steps, target_accept=spec_value)
    seen = []

    def sample(built, compiled, draws, tune, chains, seed, target_accept, *rest):
        seen.append(target_accept)
        raise _Stop

    monkeypatch.setattr(importlib.import_module("pathlock.fit"), "_sample_nutpie", sample)
    with pytest.raises(_Stop):
        fit(spec, df)
    assert seen == [expected]


@pytest.mark.parametrize(
    ("n_steps", "spec_value", "argument", "expected"),
    [
        (60, None, None, "diag"),
        (600, None, None, "draw_diag"),
        (60, "draw_diag", None, "draw_diag"),
        (600, "diag", "low_rank", "low_rank"),
    ],
)
def test_decoupling_fit_chooses_adaptation_by_length_unless_set(
    monkeypatch, n_steps, spec_value, argument, expected
):
    """The decoupling model's unset mass-matrix adaptation is chosen from the series
    length (pathlock.spec.default_adaptation) and passed to nutpie; a value in the
    spec is used as is, and ``fit``'s argument overrides both."""
    import nutpie

    spec, df = _decoupling_sampler_case(monkeypatch, n_steps, adaptation=spec_value)
    seen = []

    def sample(*args, **kwargs):
        seen.append(kwargs["adaptation"])
        raise _Stop

    monkeypatch.setattr(nutpie, "sample", sample)
    with pytest.raises(_Stop):
        fit(spec, df, adaptation=argument)
    assert seen == [expected]
