"""Posterior analysis: labelled outputs, exact first-passage probabilities, comparison.

Most tests use fits assembled from fake posterior draws of a toy mean-switching
family (no sampling), so the numbers are known; a tiny real fit covers the
arviz plumbing (summary, LOO, compare, LFO).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import arviz as az
import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt
import pytest
import xarray as xr

from pathlock import analysis, dims
from pathlock.build import Built
from pathlock.errors import DataError, PathlockError
from pathlock.fit import Fit
from pathlock.hmm import forward_backward, hmm_loglike

REGIMES = ["tracking", "decoupled"]


@dataclass(frozen=True)
class ToyData:
    y: np.ndarray  # (unit, time)
    time: np.ndarray
    units: tuple[str, ...]

    def to_dataset(self) -> xr.Dataset:
        return xr.Dataset(
            {"y": ((dims.UNIT, dims.TIME), self.y)},
            coords={dims.UNIT: list(self.units), dims.TIME: self.time},
        )


@dataclass(frozen=True)
class ToySpec:
    """Two-regime mean switching; ``absorbing`` makes ``decoupled`` absorbing.

    ``expand`` runs the kernel on the lag-expanded state (S_t, S_t-1), as
    Hamilton's MS-AR does, with ``Built.extras["state_to_regime"]``.
    """

    family: str = "toy_analysis"
    stay: float = 0.9
    absorbing: bool = False
    expand: bool = False
    feedback: bool = False

    def prepare_data(self, data):
        return data

    def data_from_dataset(self, ds):
        return ToyData(ds["y"].values, ds[dims.TIME].values, tuple(ds[dims.UNIT].values))

    def trans(self) -> np.ndarray:
        a = np.array([[self.stay, 1 - self.stay], [1 - self.stay, self.stay]])
        if self.absorbing:
            a[1] = [0.0, 1.0]
        return a

    def build(self, data):
        coords = {dims.UNIT: list(data.units), dims.TIME: data.time, dims.REGIME: REGIMES}
        if self.feedback:
            coords[dims.SIGNAL] = ["fb"]
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
            extras = {"mu": mu}
            if self.feedback:
                pm.Normal("feedback_a", 0.0, 1.0, dims=(dims.SIGNAL, dims.REGIME))
                pm.Normal("feedback_b", 0.0, 1.0, dims=dims.SIGNAL)
                pm.Beta("feedback_w", 1.0, 2.0, shape=(1,))
                pm.Normal("constraint", 0.0, 1.0, dims=(dims.UNIT, dims.TIME))
            # Missing observations carry no information: a zero emission row.
            missing = np.isnan(data.y)[..., None]
            emit = pm.logp(pm.Normal.dist(mu, sigma), np.nan_to_num(data.y)[..., None])
            emit = pt.where(missing, 0.0, emit)
            a = self.trans()
            init = np.array([1.0, 0.0]) if self.absorbing else np.array([0.5, 0.5])
            if self.expand:
                # States (s_t, s_t-1) = 2 * s_t + s_t-1; the emission depends on s_t only.
                big = np.zeros((4, 4))
                for cur, prev, nxt in itertools.product(range(2), repeat=3):
                    big[2 * cur + prev, 2 * nxt + cur] = a[cur, nxt]
                init4 = np.repeat(init, 2) / 2
                with np.errstate(divide="ignore"):
                    log_init = pt.as_tensor(np.log(init4)[None])
                    log_trans = pt.as_tensor(np.log(big)[None, None])
                emit = pt.repeat(emit, 2, axis=-1)
                extras["state_to_regime"] = pt.as_tensor(np.array([0, 0, 1, 1]))
            else:
                with np.errstate(divide="ignore"):
                    log_init = pt.as_tensor(np.log(init)[None])
                    log_trans = pt.as_tensor(np.log(a)[None, None])
            pm.Potential("toy_loglike", hmm_loglike(log_init, log_trans, emit).sum())
        return Built(model, log_init, log_trans, emit, extras)

    def loglike(self, data, params):
        raise NotImplementedError

    def to_toml(self):
        return 'schema_version = 1\nfamily = "toy_analysis"\n'


def _data(n_units=2, n_steps=40, switch=(20, None), dates=True, seed=0):
    rng = np.random.default_rng(seed)
    y = np.empty((n_units, n_steps))
    for u in range(n_units):
        s = np.zeros(n_steps, int)
        if switch[u] is not None:
            s[switch[u] :] = 1
        y[u] = np.where(s == 0, -1.0, 1.0) + 0.4 * rng.normal(size=n_steps)
    time = (
        pd.date_range("2021-01-03", periods=n_steps, freq="W").values
        if dates
        else np.arange(n_steps) + 100
    )
    return ToyData(y, time, tuple(f"u{i}" for i in range(n_units)))


def _fake_fit(spec, data, n_chains=2, n_draws=30, seed=1):
    """A Fit from fake posterior draws scattered around the truth (no sampling)."""
    rng = np.random.default_rng(seed)
    shape = (n_chains, n_draws)
    post = {
        "toy_mu": (
            (*dims.SAMPLE_DIMS, dims.REGIME),
            np.array([-1.0, 1.0]) + 0.05 * rng.normal(size=(*shape, 2)),
        ),
        "toy_sigma": (dims.SAMPLE_DIMS, 0.4 + 0.02 * np.abs(rng.normal(size=shape))),
    }
    coords = {
        dims.CHAIN: np.arange(n_chains),
        dims.DRAW: np.arange(n_draws),
        dims.REGIME: REGIMES,
        dims.UNIT: list(data.units),
        dims.TIME: data.time,
    }
    if spec.feedback:
        coords[dims.SIGNAL] = ["fb"]
        post["feedback_a"] = (
            (*dims.SAMPLE_DIMS, dims.SIGNAL, dims.REGIME),
            np.broadcast_to([[0.5, 0.2]], (*shape, 1, 2)),
        )
        post["feedback_b"] = ((*dims.SAMPLE_DIMS, dims.SIGNAL), np.full((*shape, 1), 2.0))
        post["feedback_w"] = ((*dims.SAMPLE_DIMS, "feedback_w_dim_0"), np.full((*shape, 1), 0.25))
        c = np.broadcast_to(np.linspace(0, 3, data.y.shape[1]), (*shape, *data.y.shape))
        post["constraint"] = ((*dims.SAMPLE_DIMS, dims.UNIT, dims.TIME), c)
    tree = xr.DataTree.from_dict(
        {
            "posterior": xr.DataTree(xr.Dataset(post, coords={k: v for k, v in coords.items()})),
            "sample_stats": xr.DataTree(
                xr.Dataset({"diverging": (dims.SAMPLE_DIMS, np.zeros(shape, bool))})
            ),
        }
    )
    return Fit(idata=tree, spec=spec, data=data, built=spec.build(data))


@pytest.fixture(scope="module")
def sticky_fit():
    return _fake_fit(ToySpec(), _data())


@pytest.fixture(scope="module")
def absorbing_fit():
    return _fake_fit(ToySpec(absorbing=True), _data(switch=(20, None)))


# -- regime probabilities ----------------------------------------------------


def test_regime_probabilities_dims_coords(sticky_fit):
    p = sticky_fit.regime_probabilities("smoothed")
    assert p.dims == (dims.CHAIN, dims.DRAW, dims.UNIT, dims.TIME, dims.REGIME)
    assert p.shape == (2, 30, 2, 40, 2)
    assert list(p[dims.REGIME].values) == REGIMES
    assert list(p[dims.UNIT].values) == ["u0", "u1"]
    assert np.issubdtype(p[dims.TIME].dtype, np.datetime64)
    np.testing.assert_allclose(p.sum(dims.REGIME), 1.0, atol=1e-12)
    avg = sticky_fit.regime_probabilities("filtered", average=True)
    assert avg.dims == (dims.UNIT, dims.TIME, dims.REGIME)
    with pytest.raises(PathlockError, match="kind must be one of"):
        sticky_fit.regime_probabilities("viterbi")


def test_regime_probabilities_match_kernel_per_draw(sticky_fit):
    # Oracle: the kernel run on one draw's inputs alone.
    ri = sticky_fit.regime_inputs()
    s = 37
    ref = forward_backward(ri.log_init[s], ri.log_trans[s], ri.log_emit[s])
    p = sticky_fit.regime_probabilities("smoothed").isel(chain=1, draw=s - 30)
    f = sticky_fit.regime_probabilities("filtered").isel(chain=1, draw=s - 30)
    np.testing.assert_allclose(p.values, ref.smoothed, atol=1e-12)
    np.testing.assert_allclose(f.values, ref.filtered, atol=1e-12)


def test_expanded_states_aggregate_to_regimes():
    # The lag-expanded chain is the same model: aggregated marginals must agree.
    data = _data()
    plain = _fake_fit(ToySpec(), data)
    expanded = _fake_fit(ToySpec(expand=True), data)
    for kind in ("smoothed", "filtered"):
        xr.testing.assert_allclose(
            plain.regime_probabilities(kind), expanded.regime_probabilities(kind), atol=1e-10
        )
    np.testing.assert_allclose(
        plain.decoupling_time().prob_by_time, expanded.decoupling_time().prob_by_time, atol=1e-10
    )
    paths = expanded.regime_paths(n=2, seed=3)
    assert set(np.unique(paths.values)) <= {0, 1}


# -- paths ---------------------------------------------------------------------


def test_regime_paths_labelled_and_reproducible(sticky_fit):
    paths = sticky_fit.regime_paths(n=3, seed=11)
    assert paths.dims == (dims.CHAIN, dims.DRAW, dims.PATH, dims.UNIT, dims.TIME)
    assert paths.shape == (2, 30, 3, 2, 40)
    assert paths.attrs["regime_names"] == REGIMES
    assert paths.attrs["flag_meanings"] == "tracking decoupled"
    assert np.issubdtype(paths[dims.TIME].dtype, np.datetime64)
    xr.testing.assert_equal(paths, sticky_fit.regime_paths(n=3, seed=11))
    assert not paths.equals(sticky_fit.regime_paths(n=3, seed=12))
    with pytest.raises(PathlockError, match="n must be at least 1"):
        sticky_fit.regime_paths(n=0)


def test_path_frequencies_match_smoothed(sticky_fit):
    # 2 x 30 x 200 = 12000 paths: the binomial sd of a frequency is <= 0.0046;
    # 5 sd (0.023) keeps a false alarm below 1e-5 per cell over 160 cells.
    paths = sticky_fit.regime_paths(n=200, seed=5)
    freq = (paths == 1).mean((dims.CHAIN, dims.DRAW, dims.PATH))
    smooth = sticky_fit.regime_probabilities(average=True).sel(regime="decoupled")
    np.testing.assert_allclose(freq.values, smooth.values, atol=0.023)


# -- decoupling time -----------------------------------------------------------


def _brute_survival(li, lt, le, tracking):
    """P(S_1..S_t all in tracking | y) by enumerating every path."""
    n_steps, k = le.shape
    total = 0.0
    surv = np.zeros(n_steps)
    for path in itertools.product(range(k), repeat=n_steps):
        lp = li[path[0]] + le[0, path[0]]
        for t in range(1, n_steps):
            lp += lt[t, path[t - 1], path[t]] + le[t, path[t]]
        w = np.exp(lp)
        total += w
        inside = np.cumprod([tracking[s] for s in path])
        surv += w * inside
    return surv / total


@pytest.mark.parametrize("tracking", [[True, False, False], [True, True, False]])
def test_survival_matches_enumeration(rng, tracking):
    # Random time-varying transitions with 3 states; one or two tracking states.
    n_steps, k = 6, 3
    li = np.log(rng.dirichlet(np.ones(k)))
    lt = np.log(rng.dirichlet(np.ones(k), size=(n_steps, k)))
    le = rng.normal(size=(n_steps, k))
    fb = forward_backward(li, lt, le)
    got = analysis._survival(fb.smoothed, fb.pairwise, np.array(tracking))[0]
    np.testing.assert_allclose(got, _brute_survival(li, lt, le, tracking), atol=1e-12)


def test_absorbing_first_passage_is_smoothed_probability(absorbing_fit):
    # With an absorbing decoupled regime, P(D <= t) = P(S_t = decoupled) exactly.
    dt = absorbing_fit.decoupling_time()
    smooth = absorbing_fit.regime_probabilities(average=True).sel(regime="decoupled", drop=True)
    np.testing.assert_allclose(dt.prob_by_time.values, smooth.values, atol=1e-10)


def test_decoupling_time_result(absorbing_fit):
    dt = absorbing_fit.decoupling_time(n=4, seed=2)
    assert dt.samples.dims == (dims.CHAIN, dims.DRAW, dims.PATH, dims.UNIT)
    assert np.issubdtype(dt.samples.dtype, np.datetime64)
    assert dt.prob_by_time.dims == (dims.UNIT, dims.TIME)
    # Unit u0 switched at step 20 with a 2.5-sd mean shift; u1 never switched.
    s0 = dt.summary.loc["u0"]
    assert abs((s0["median"] - absorbing_fit.data.time[20]) / np.timedelta64(7, "D")) <= 1
    assert s0["hdi_low"] <= s0["median"] <= s0["hdi_high"]
    assert s0["p_not_yet"] < 0.01
    s1 = dt.summary.loc["u1"]
    assert s1["p_not_yet"] > 0.9
    assert pd.isna(s1["median"]) and bool(s1["hdi_includes_not_yet"])
    # "Not yet" is kept and flagged, never dropped.
    assert dt.not_yet.sel(unit="u1").mean() > 0.9
    assert bool(np.isnat(dt.samples.where(dt.not_yet)).all() | ~dt.not_yet.any())
    assert (dt.index.where(dt.not_yet, 40) == 40).all()
    xr.testing.assert_allclose(dt.p_not_yet, 1 - dt.prob_by_time.isel(time=-1))
    # The sample frequencies agree with the exact probabilities (binomial 5 sd).
    p_dec = 1 - dt.not_yet.mean((dims.CHAIN, dims.DRAW, dims.PATH))
    sd = np.sqrt(0.25 / dt.not_yet.isel(unit=0).size)
    np.testing.assert_allclose(p_dec.values, dt.prob_by_time.isel(time=-1).values, atol=5 * sd)


def test_decoupling_time_integer_time_and_errors():
    fit = _fake_fit(ToySpec(absorbing=True), _data(switch=(20, None), dates=False))
    dt = fit.decoupling_time(seed=0)
    assert np.issubdtype(dt.samples.dtype, np.floating)
    assert dt.summary.loc["u0", "median"] in range(118, 123)
    assert np.isnan(dt.summary.loc["u1", "median"])
    with pytest.raises(PathlockError, match="unknown regime"):
        fit.decoupling_time(tracking="calm")
    with pytest.raises(PathlockError, match="names every regime"):
        fit.decoupling_time(tracking=REGIMES)
    with pytest.raises(PathlockError, match="prob must lie"):
        fit.decoupling_time(prob=1.5)


# -- early warning -------------------------------------------------------------


def test_early_warning(absorbing_fit):
    ew = absorbing_fit.early_warning(0.8)
    assert ew.probability.dims == (dims.UNIT, dims.TIME)
    filt = absorbing_fit.regime_probabilities("filtered", average=True).sel(regime="decoupled")
    np.testing.assert_allclose(ew.probability.values, filt.values, atol=1e-12)
    first = int(np.argmax(filt.sel(unit="u0").values >= 0.8))
    assert ew.detection_time.sel(unit="u0").values == absorbing_fit.data.time[first]
    assert 20 <= first <= 23
    assert not bool(ew.detected.sel(unit="u1"))
    assert np.isnat(ew.detection_time.sel(unit="u1").values)
    with pytest.raises(PathlockError, match="threshold"):
        absorbing_fit.early_warning(1.0)


def test_feedback_rule_detection():
    y = np.zeros((2, 40))
    y[:, :20] = np.tile([-1.0, 1.0], 10)  # baseline mean 0, sd 1.026
    y[0, 30] = 2.1
    da = xr.DataArray(
        y, dims=(dims.UNIT, dims.TIME), coords={dims.UNIT: ["a", "b"], dims.TIME: np.arange(40)}
    )
    got = analysis.feedback_rule_detection(da, baseline=20, n_sd=2.0)
    assert got.dims == (dims.UNIT,)
    assert got.sel(unit="a") == 30
    assert np.isnan(got.sel(unit="b"))
    series = pd.Series(y[0], index=pd.date_range("2020-01-01", periods=40))
    assert analysis.feedback_rule_detection(series) == series.index[30]
    with pytest.raises(DataError, match="baseline"):
        analysis.feedback_rule_detection(da, baseline=40)


def test_feedback_rule_alarm_keeps_every_alarm():
    """The alarm series is on wherever the feedback is 2 sd off its baseline
    mean, off over the baseline and at missing values; it goes off again when
    the feedback returns, which the first-detection time cannot show."""
    y = np.tile([-1.0, 1.0], 20)
    y[0] = 3.0  # inside the baseline: mean 0.2, sd 1.20; never an alarm itself
    y[[25, 26, 33]] = 3.0
    y[[30, 31]] = [np.nan, -3.0]
    series = pd.Series(y, index=pd.date_range("2020-01-01", periods=40))
    alarm = analysis.feedback_rule_alarm(series, baseline=20, n_sd=2.0)
    assert alarm.dtype == bool and alarm.dims == (dims.TIME,)
    assert np.flatnonzero(alarm.values).tolist() == [25, 26, 31, 33]
    assert alarm.attrs["baseline"] == 20 and alarm.attrs["n_sd"] == 2.0
    assert analysis.feedback_rule_detection(series) == series.index[25]
    frame = pd.DataFrame({"s1": y, "s2": -y}, index=series.index)
    both = analysis.feedback_rule_alarm(frame)
    assert both.dims == (dims.SIGNAL, dims.TIME)
    # The rule is two-sided: a mirrored signal alarms at the same steps.
    np.testing.assert_array_equal(both.sel(signal="s1").values, alarm.values)
    np.testing.assert_array_equal(both.sel(signal="s2").values, alarm.values)


# -- hidden constraint ---------------------------------------------------------


def test_hidden_constraint():
    data = _data(switch=(20, None))
    fit = _fake_fit(ToySpec(absorbing=True, feedback=True), data)
    hc = fit.hidden_constraint(prob=0.9)
    assert hc["gap"].dims == (dims.UNIT, dims.TIME, dims.SIGNAL)
    c = np.linspace(0, 3, 40)
    p_dec = fit.regime_probabilities().sel(regime="decoupled").mean(dims.SAMPLE_DIMS)
    # gap = P(decoupled) * ((a_t - a_d) + b (1 - w) C) with a = (0.5, 0.2), b = 2, w = 0.25.
    expect = p_dec * (0.3 + 2.0 * 0.75 * c)
    np.testing.assert_allclose(hc["gap"].sel(signal="fb").values, expect.values, atol=1e-10)
    np.testing.assert_allclose(
        hc["if_tracking"].sel(signal="fb").values[0], 0.5 + 2 * c, atol=1e-12
    )
    assert (hc["gap_low"] <= hc["gap"] + 1e-12).all() and (
        hc["gap"] <= hc["gap_high"] + 1e-12
    ).all()


def test_hidden_constraint_needs_feedback(sticky_fit):
    with pytest.raises(PathlockError, match="feedback signals"):
        sticky_fit.hidden_constraint()


# -- real tiny fit: summary, LOO, compare, LFO -------------------------------------


@pytest.fixture(scope="module")
def real_fits():
    from pathlock.fit import fit

    data = _data(n_units=1, n_steps=40, switch=(20,), seed=4)
    kw = {"draws": 100, "tune": 100, "chains": 2, "check": False}
    return {
        "sticky": fit(ToySpec(), data, seed=1, **kw),
        "absorbing": fit(ToySpec(absorbing=True), data, seed=2, **kw),
    }


def test_summary_and_loo(real_fits):
    f = real_fits["sticky"]
    table = f.summary()
    for col in ("mean", "sd", "ess_bulk", "ess_tail", "r_hat"):
        assert col in table.columns
    assert any(c.startswith("hdi") or "%" in c for c in table.columns)
    assert "divergences" in table.attrs and table.attrs["n_samples"] == 200
    assert "toy_mu[tracking]" in table.index
    loo = az.loo(f.idata)
    assert loo.n_data_points == 40 and np.isfinite(loo.elpd)


def test_compare_loo(real_fits):
    table = analysis.compare(real_fits, method="loo")
    assert set(table.index) == {"sticky", "absorbing"}
    for col in ("elpd", "se", "elpd_diff", "weight", "p", "method", "n_high_k"):
        assert col in table.columns
    assert table.attrs["method"] == "loo"
    assert np.isclose(table["weight"].sum(), 1.0)
    with pytest.raises(PathlockError, match="at least 2 fits"):
        analysis.compare([real_fits["sticky"]])
    with pytest.raises(PathlockError, match="method must be one of"):
        analysis.compare(real_fits, method="waic")


@pytest.mark.slow
def test_compare_lfo(real_fits):
    # Three forecast origins with tiny refits: plumbing, not accuracy.
    table = analysis.compare(
        real_fits, method="lfo", min_observations=37, draws=100, tune=100, chains=1, seed=3
    )
    assert table.attrs["method"] == "lfo"
    assert "n_refits" in table.columns
    assert np.isfinite(table["elpd"]).all()


@pytest.mark.slow
def test_lfo_scores_the_next_m_steps_jointly(real_fits):
    """M-step LFO: the first origin's score is log mean_draws exp(sum of the next M one-step terms).

    Right after the first refit (at ``min_observations``) no importance weights
    are involved, so the score is computable by hand from a refit with the same
    seed (``seed + cutoff``); a horizon that summed the wrong steps, or scored
    them one at a time, would miss it far beyond the 1e-8 tolerance (rounding only).
    """
    from scipy.special import logsumexp

    from pathlock.fit import fit

    f = real_fits["sticky"]
    kw = {"draws": 100, "tune": 100, "chains": 1}
    res = analysis.lfo(f, min_observations=36, forecast_horizon=3, seed=3, **kw)
    elpd_i = np.asarray(res.elpd_i).ravel()
    assert elpd_i.size == 40 - 36 - 3 + 1
    refit = fit(f.spec, analysis._mask_after(f, 36), seed=3 + 36, check=False, **kw)
    ll = analysis._refit_predictive(f, refit).values.reshape(-1, 40)
    joint = ll[:, 36:39].sum(axis=1)
    assert np.isclose(elpd_i[0], logsumexp(joint) - np.log(joint.size), rtol=0, atol=1e-8)
    table = analysis.compare(real_fits, method="lfo", min_observations=37, forecast_horizon=2, **kw)
    assert set(table["method"]) == {"psis-lfo (2-step)"}
    with pytest.raises(PathlockError, match="forecast_horizon must be an integer in"):
        analysis.lfo(f, min_observations=37, forecast_horizon=4)
