"""The Markov-switching regression family against published tables and statsmodels.

Published values are statsmodels' regression-test targets (E-views and Stata
output); the data are the CSVs in data/ copied from statsmodels' test modules.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pymc as pm
import pytest
import xarray as xr

import pathlock
from pathlock import dims
from pathlock.build import spec_class
from pathlock.errors import DataError, SpecError
from pathlock.hmm import forward_backward
from pathlock.msreg import MarkovSwitching, MarkovSwitchingData

ROOT = Path(__file__).resolve().parents[1]

# Hamilton (1989) MS-AR(4), E-views estimates (statsmodels TestHamiltonAR4).
HAMILTON_LLF = -181.26339
HAMILTON = {
    "ms_trans": [[0.754673, 1 - 0.754673], [0.095915, 1 - 0.095915]],
    "ms_const": [-0.358811, 1.163516],
    "ms_sigma": np.exp(-0.262658),
    "ms_ar": [0.013486, -0.057521, -0.246983, -0.212923],
}
# Stata's federal-funds switching mean (statsmodels TestFedFundsConst).
FEDFUNDS_LLF = -508.63592
FEDFUNDS = {
    "ms_trans": [[0.9820939, 1 - 0.9820939], [0.0503587, 1 - 0.0503587]],
    "ms_const": [3.70877, 9.556793],
    "ms_sigma": 2.107562,
}


@pytest.fixture(scope="module")
def gnp() -> pd.DataFrame:
    return pd.read_csv(ROOT / "data" / "hamilton_gnp.csv", index_col=0, parse_dates=True)


@pytest.fixture(scope="module")
def fedfunds() -> pd.DataFrame:
    return pd.read_csv(ROOT / "data" / "fedfunds.csv", index_col=0, parse_dates=True)


@pytest.fixture(scope="module")
def hamilton() -> MarkovSwitching:
    return MarkovSwitching.from_toml(ROOT / "models" / "hamilton1989.toml")


@pytest.fixture(scope="module")
def fedfunds_spec() -> MarkovSwitching:
    return MarkovSwitching.from_toml(ROOT / "models" / "fedfunds_switching_mean.toml")


# -- published log-likelihoods ---------------------------------------------------


def test_hamilton_loglike_matches_published(hamilton, gnp):
    # Published to 5 decimals, so 1e-4 is the table's own precision.
    assert abs(pathlock.loglike(hamilton, gnp, HAMILTON) - HAMILTON_LLF) < 1e-4


def test_hamilton_smoothed_probabilities_match_statsmodels(hamilton, gnp):
    sm = pytest.importorskip("statsmodels.api")
    li, lt, le = hamilton.kernel_inputs(gnp, HAMILTON)
    ours = forward_backward(li, lt, le).smoothed[0] @ hamilton.regime_aggregation()
    model = sm.tsa.MarkovAutoregression(
        gnp["rgnp"].values, k_regimes=2, order=4, switching_ar=False
    )
    p = HAMILTON
    sm_params = np.r_[
        p["ms_trans"][0][0], p["ms_trans"][1][0], p["ms_const"], p["ms_sigma"] ** 2, p["ms_ar"]
    ]
    theirs = model.smooth(sm_params).smoothed_marginal_probabilities
    assert ours.shape == (131, 2)
    # Same algorithm in double precision; 1e-6 leaves room for summation order only.
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)


def test_fedfunds_loglike_matches_published(fedfunds_spec, fedfunds):
    assert abs(pathlock.loglike(fedfunds_spec, fedfunds, FEDFUNDS) - FEDFUNDS_LLF) < 1e-4


def test_fedfunds_switching_exog_matches_published(fedfunds):
    # Stata's switching-regression example with lagged rate, output gap and inflation
    # (statsmodels TestFedFundsConstL1Exog); inflation is missing for the first 4 rows.
    data = fedfunds.assign(lag=fedfunds["fedfunds"].shift(1)).iloc[4:]
    spec = MarkovSwitching(k_regimes=2, endog="fedfunds", exog=("lag", "ogap", "inf"))
    params = {
        "ms_trans": [[0.7279288, 1 - 0.7279288], [0.2114578, 1 - 0.2114578]],
        "ms_const": [0.6554954, -0.0944924],
        "ms_exog": [[0.8314458, 0.1355425, -0.0273928], [0.9292574, 0.0343072, 0.2125275]],
        "ms_sigma2": 0.5764495**2,
    }
    assert abs(spec.loglike(data, params) - (-229.25614)) < 1e-4


def test_tvtp_matches_published_and_statsmodels(gnp):
    # E-views MS-AR(1), switching AR, transitions driven by the recession dummy
    # (statsmodels TestHamiltonAR1SwitchTVTP); statsmodels orders the TVTP
    # parameters p[0->0].const, p[1->0].const, p[0->0].rec, p[1->0].rec.
    sm = pytest.importorskip("statsmodels.api")
    p = np.r_[6.564923, 7.846371, -8.064123, -15.37636, 1.027190, -0.719760,
              np.exp(-0.217003) ** 2, 0.161489, 0.022536]  # fmt: skip
    spec = MarkovSwitching(order=1, endog="rgnp", exog_tvtp=("rec",), ordered="none")
    params = {
        "ms_tvtp": [[[p[0], p[2]]], [[p[1], p[3]]]],
        "ms_const": p[4:6],
        "ms_sigma2": p[6],
        "ms_ar": [[p[7]], [p[8]]],
    }
    with pytest.warns(UserWarning, match="no ordering constraint"):
        li, lt, le = spec.kernel_inputs(gnp, params)
    res = forward_backward(li, lt, le)
    assert abs(res.log_likelihood[0] - (-163.914049)) < 1e-4
    model = sm.tsa.MarkovAutoregression(
        gnp["rgnp"].values, k_regimes=2, order=1, exog_tvtp=np.c_[np.ones(len(gnp)), gnp["rec"]]
    )
    theirs = model.smooth(p).smoothed_marginal_probabilities
    np.testing.assert_allclose(res.smoothed[0] @ spec.regime_aggregation(), theirs, atol=1e-6)


def test_tvtp_with_lags_matches_statsmodels(gnp):
    # Order 4 with TVTP exercises the presample transitions of the initial law.
    sm = pytest.importorskip("statsmodels.api")
    spec = MarkovSwitching(order=4, endog="rgnp", exog_tvtp=("rec",), switching_ar=False)
    params = {"ms_tvtp": [[[1.5, -2.0]], [[-2.0, 0.7]]], "ms_const": [-0.3, 1.1],
              "ms_sigma": 0.8, "ms_ar": [0.1, -0.05, -0.2, -0.2]}  # fmt: skip
    res = forward_backward(*spec.kernel_inputs(gnp, params))
    model = sm.tsa.MarkovAutoregression(
        gnp["rgnp"].values, k_regimes=2, order=4, switching_ar=False,
        exog_tvtp=np.c_[np.ones(len(gnp)), gnp["rec"]],
    )  # fmt: skip
    r = model.smooth(np.r_[1.5, -2.0, -2.0, 0.7, -0.3, 1.1, 0.64, 0.1, -0.05, -0.2, -0.2])
    assert abs(res.log_likelihood[0] - r.llf) < 1e-8
    np.testing.assert_allclose(
        res.smoothed[0] @ spec.regime_aggregation(), r.smoothed_marginal_probabilities, atol=1e-8
    )


# -- posterior mode under flat priors = published MLE --------------------------------


def _map(spec, data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return pm.find_MAP(model=spec.with_flat_priors().build(data).model, progressbar=False)


def test_hamilton_posterior_mode_reproduces_mle(hamilton, gnp):
    mode = _map(hamilton, gnp)
    got = np.r_[mode["ms_trans"][:, 0], mode["ms_const"], mode["ms_sigma"], mode["ms_ar"]]
    p = HAMILTON
    published = np.r_[
        p["ms_trans"][0][0], p["ms_trans"][1][0], p["ms_const"], p["ms_sigma"], p["ms_ar"]
    ]
    # "3 significant digits": within half a unit of the third digit of each value.
    np.testing.assert_allclose(got, published, rtol=5e-3)
    at_mode = {k: mode[k] for k in HAMILTON}
    assert hamilton.loglike(gnp, at_mode) >= HAMILTON_LLF - 1e-4


def test_fedfunds_posterior_mode_reproduces_mle(fedfunds_spec, fedfunds):
    mode = _map(fedfunds_spec, fedfunds)
    got = np.r_[mode["ms_trans"][:, 0], mode["ms_const"], mode["ms_sigma"]]
    p = FEDFUNDS
    published = np.r_[p["ms_trans"][0][0], p["ms_trans"][1][0], p["ms_const"], p["ms_sigma"]]
    np.testing.assert_allclose(got, published, rtol=5e-3)


# -- the built model ------------------------------------------------------------


def test_build_names_dims_coords(hamilton, gnp):
    built = hamilton.build(gnp)
    model = built.model
    assert list(model.coords[dims.REGIME]) == ["recession", "expansion"]
    assert pd.DatetimeIndex(model.coords[dims.TIME]).equals(gnp.index[4:])
    assert list(model.coords[dims.UNIT]) == ["rgnp"]
    assert model.named_vars_to_dims["ms_const"] == (dims.REGIME,)
    assert model.named_vars_to_dims["ms_ar"] == (dims.LAG,)
    assert model.named_vars_to_dims["ms_trans"] == (dims.REGIME_FROM, dims.REGIME_TO)
    assert {rv.name for rv in model.free_RVs} == {"ms_const", "ms_ar", "ms_sigma", "ms_trans"}
    agg = built.extras["regime_aggregation"].eval()
    assert agg.shape == (32, 2)
    np.testing.assert_array_equal(agg.sum(axis=1), 1.0)
    point = model.initial_point()
    assert np.isfinite(model.compile_logp()(point))
    assert all(np.all(np.isfinite(g)) for g in np.atleast_1d(model.compile_dlogp()(point)))
    assert spec_class("markov_switching") is MarkovSwitching
    assert isinstance(pathlock.build_model(hamilton, gnp), pm.Model)


def test_every_model_file_builds(gnp, fedfunds):
    data = {"rgnp": gnp, "fedfunds": fedfunds}
    for path in sorted((ROOT / "models").glob("*.toml")):
        text = path.read_text()
        if 'family = "markov_switching"' not in text:
            continue
        spec = MarkovSwitching.from_toml(path)
        model = spec.build(data[spec.endog]).model
        assert np.isfinite(model.compile_logp()(model.initial_point())), path.name


def test_toml_and_data_round_trip(hamilton, gnp):
    spec = MarkovSwitching(
        k_regimes=3, order=1, endog="rgnp", exog_tvtp=("rec",), switching_variance=True,
        priors={"ms_sigma": {"dist": "halfnormal", "sigma": 2.0}, "ms_const": "flat"},
    )  # fmt: skip
    assert MarkovSwitching.from_toml_string(spec.to_toml()) == spec
    assert MarkovSwitching.from_toml_string(hamilton.to_toml()) == hamilton
    data = spec.prepare_data(gnp)
    ds = data.to_dataset()
    assert ds["y"].dims == (dims.UNIT, dims.TIME)
    assert ds["tvtp_regressors"].dims == (dims.UNIT, dims.TIME, dims.EXOG_TVTP)
    back = spec.data_from_dataset(ds)
    np.testing.assert_array_equal(back.endog, data.endog)
    np.testing.assert_array_equal(back.exog_tvtp, data.exog_tvtp)
    assert back.time.equals(data.time)


def test_series_and_data_object_inputs(gnp):
    spec = MarkovSwitching(order=4, switching_ar=False)
    by_series = spec.loglike(gnp["rgnp"], HAMILTON)
    data = spec.prepare_data(gnp["rgnp"])
    assert isinstance(data, MarkovSwitchingData) and data.unit == "rgnp"
    assert spec.loglike(data, HAMILTON) == by_series
    assert abs(by_series - HAMILTON_LLF) < 1e-4


def test_missing_endog_with_order_zero_adds_nothing(fedfunds_spec, fedfunds):
    holed = fedfunds.copy()
    holed.iloc[10:13, 0] = np.nan
    li, lt, le = fedfunds_spec.kernel_inputs(holed, FEDFUNDS)
    assert np.all(le[0, 10:13] == 0.0)
    res = forward_backward(li, lt, le)
    # The kernel renormalises in probability space: zero up to rounding.
    np.testing.assert_allclose(res.predictive_log_density[0, 10:13], 0.0, atol=1e-12)
    full = fedfunds_spec.loglike(fedfunds, FEDFUNDS)
    assert np.isfinite(res.log_likelihood[0]) and res.log_likelihood[0] > full


# -- bad input ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k_regimes": 1}, "k_regimes"),
        ({"k_regimes": 2.0}, "k_regimes"),
        ({"order": -1}, "order"),
        ({"k_regimes": 4, "order": 6}, "expanded states"),
        ({"trend": "ct"}, "trend"),
        ({"regime_names": ("a",)}, "regime_names"),
        ({"regime_names": ("a", "a")}, "regime_names"),
        ({"exog": ("x", "x")}, "exog"),
        ({"switching_variance": "yes"}, "switching_variance"),
        ({"trend": "n", "switching_variance": False}, "nothing switches"),
        ({"ordered": "sigma"}, "ordered"),
        ({"priors": {"ms_beta": "flat"}}, "ms_beta"),
        ({"priors": {"ms_sigma": {"dist": "normal"}}}, "ms_sigma"),
        ({"priors": {"ms_const": {"dist": "normal", "scale": 1}}}, "scale"),
        ({"priors": {"ms_const": {"dist": "normal", "sigma": -1}}}, "sigma"),
        ({"sampler": {"warmup": 10}}, "warmup"),
        ({"schema_version": 2}, "schema_version"),
    ],
)
def test_bad_spec_names_the_argument(kwargs, match):
    with pytest.raises(SpecError, match=match):
        MarkovSwitching(**kwargs)


def test_bad_data_names_the_argument(gnp):
    with pytest.raises(DataError, match=r"exog: columns \['gdp'\] not in the data"):
        MarkovSwitching(endog="rgnp", exog=("gdp",)).prepare_data(gnp)
    holed = gnp.copy()
    holed.iloc[7, 0] = np.nan
    with pytest.raises(DataError, match="endog column 'rgnp' has a missing value at row 7"):
        MarkovSwitching(endog="rgnp", order=4).prepare_data(holed)
    with pytest.raises(DataError, match="endog is not set"):
        MarkovSwitching().prepare_data(gnp)
    with pytest.raises(DataError, match="not increasing"):
        MarkovSwitching(endog="rgnp").prepare_data(gnp.iloc[::-1])
    with pytest.raises(DataError, match="exog_tvtp column 'rec'"):
        bad = gnp.assign(rec=gnp["rec"].where(gnp.index.year != 1960))
        MarkovSwitching(endog="rgnp", exog_tvtp=("rec",)).prepare_data(bad)
    with pytest.raises(DataError, match="order=4 needs at least 6"):
        MarkovSwitching(endog="rgnp", order=4).prepare_data(gnp.iloc[:5])
    with pytest.raises(DataError, match="Series but the spec needs columns"):
        MarkovSwitching(exog=("x",)).prepare_data(gnp["rgnp"])
    with pytest.raises(DataError, match="data must be"):
        MarkovSwitching().prepare_data([1.0, 2.0, 3.0])


def test_bad_params_name_the_parameter(hamilton, gnp):
    with pytest.raises(SpecError, match=r"unknown names \['const'\]"):
        hamilton.loglike(gnp, {**HAMILTON, "const": 1.0})
    with pytest.raises(SpecError, match=r"missing \['ms_ar'\]"):
        hamilton.loglike(gnp, {k: v for k, v in HAMILTON.items() if k != "ms_ar"})
    with pytest.raises(SpecError, match=r"params\['ms_ar'\] has shape \(3,\); expected \(4,\)"):
        hamilton.loglike(gnp, {**HAMILTON, "ms_ar": [0.1, 0.2, 0.3]})
    with pytest.raises(SpecError, match=r"ms_trans.*summing to one"):
        hamilton.loglike(gnp, {**HAMILTON, "ms_trans": [[0.9, 0.2], [0.1, 0.9]]})
    with pytest.raises(SpecError, match="ms_sigma"):
        hamilton.loglike(gnp, {**HAMILTON, "ms_sigma": -1.0})


def test_bad_toml_names_the_key(tmp_path):
    with pytest.raises(SpecError, match=r"unknown keys \['lags'\]"):
        MarkovSwitching.from_toml_string(
            'schema_version = 1\nfamily = "markov_switching"\nlags = 2\n'
        )
    with pytest.raises(SpecError, match="family is 'decoupling'"):
        MarkovSwitching.from_toml_string('schema_version = 1\nfamily = "decoupling"\n')
    with pytest.raises(SpecError, match="schema_version is missing"):
        MarkovSwitching.from_toml_string("k_regimes = 2\n")
    path = tmp_path / "bad.toml"
    path.write_text('schema_version = 1\nfamily = "markov_switching"\nk_regimes = 1\n')
    with pytest.raises(SpecError, match=r"bad\.toml: k_regimes must be at least 2"):
        MarkovSwitching.from_toml(path)


# -- NUTS ------------------------------------------------------------------------


@pytest.mark.slow
def test_nuts_samples_hamilton_without_divergences_or_label_switching(hamilton, gnp):
    # The model file's sampler settings (3000 draws, 1500 tune, target_accept 0.95).
    fit = pathlock.fit(hamilton, gnp, seed=2, cores=2)
    tree = fit.idata
    assert int(tree["sample_stats"]["diverging"].sum()) == 0
    import arviz as az

    rhat = az.rhat(tree.posterior.to_dataset())
    assert max(float(v.max()) for v in rhat.data_vars.values()) < 1.01
    # Labels hold across chains: every chain's recession intercept lies below
    # every chain's expansion intercept.
    means = tree.posterior["ms_const"].mean(dims.DRAW)
    assert float(means.sel(regime="recession").max()) < float(means.sel(regime="expansion").min())
    assert isinstance(tree.posterior["ms_const"], xr.DataArray)
