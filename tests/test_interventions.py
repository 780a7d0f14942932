"""Intervention timings: the CRN simulator, policies, outcomes and their comparisons.

Most tests run on synthetic :class:`Worlds` (each draw a world simulated with
the model's own process, transition and emission code, observed exactly), so
that the expected answers are known: exact reproduction of the fitted path by
the baseline, monotonicity in the delay draw by draw, a point of no return
computed by hand, and the failure of a feedback rule when feedback decouples.
One test runs the whole chain on a real (tiny) fit of the decoupling model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pathlock import dims, processes
from pathlock import interventions as iv
from pathlock.errors import InterventionError
from pathlock.interventions import (
    At,
    ConstantTransitions,
    FeedbackModel,
    FeedbackRule,
    HazardTransitions,
    LowerHazard,
    Never,
    PosteriorTrigger,
    ReduceExposure,
    Relieve,
    ResetNarrative,
    Scenario,
    Schedule,
    abduct_shocks,
    abduct_uniforms,
    compare_timings,
    simulate_scenarios,
    simulate_worlds,
    timing_scenarios,
)

# Paths rebuilt from abducted shocks go through log/exp once per step; over a
# few dozen steps the round-off stays far below 1e-8 of the path's scale.
ROUNDOFF = 1e-8


def _full(n: int, u: int, value: float, *tail: int) -> np.ndarray:
    return np.full((n, u, *tail), float(value))


def make_worlds(
    *,
    process: str = "ratchet",
    n: int = 200,
    n_units: int = 1,
    n_steps: int = 30,
    sigma: float = 0.3,
    mu: float = -1.0,
    beta: float = 1.0,
    g0: float = -6.0,
    g1: float = 0.3,
    loading: tuple[float, ...] = (1.0, 0.0),
    feedback_sigma: float = 0.3,
    extra: dict[str, float] | None = None,
    seed: int = 1,
    n_chains: int = 2,
    hazard: np.ndarray | None = None,
    structure: str = "absorbing",
    mu_spread: float = 0.05,
) -> iv.Worlds:
    """A posterior of ``n`` draws that scatter mildly around one truth."""
    rng = np.random.default_rng(seed)
    k = len(loading)
    params = {
        "mu": _full(n, n_units, mu) + mu_spread * rng.standard_normal((n, n_units)),
        "sigma": _full(n, n_units, sigma),
        "beta": _full(n, n_units, beta, 1),
    }
    for key, value in (extra or {}).items():
        params[key] = _full(n, n_units, value)
    if hazard is None:
        intercept = _full(n, 1, g0, k, k)
        slope = _full(n, 1, g1, k, k)
    else:
        intercept = np.broadcast_to(hazard[0], (n, 1, k, k)).copy()
        slope = np.broadcast_to(hazard[1], (n, 1, k, k)).copy()
    transitions = HazardTransitions(structure, intercept, slope)
    feedback = FeedbackModel(
        ("normal",),
        _full(n, n_units, 0.0, 1, k),
        np.broadcast_to(np.asarray(loading), (n, n_units, 1, k)).copy(),
        {"sigma": _full(n, n_units, feedback_sigma, 1, k)},
    )
    return simulate_worlds(
        process,
        params,
        transitions,
        feedback,
        n_steps=n_steps,
        init=_full(n, n_units, 0.0),
        seed=seed,
        n_chains=n_chains,
        exposures=np.ones((n_units, n_steps, 1)),
        absorbing=(k - 1,) if structure == "absorbing" else (),
    )


@pytest.fixture(scope="module")
def ratchet_worlds() -> iv.Worlds:
    return make_worlds()


# --------------------------------------------------------------------------
# abduction and the core
# --------------------------------------------------------------------------

PROCESS_PARAMS = {
    "ratchet": {},
    "hysteresis": {"rho": 0.3, "kappa": 2.0, "width": 0.25, "baseline": 0.0},
    "random_walk": {},
    "ar1": {"phi": 0.7},
}


@pytest.mark.parametrize("process", sorted(PROCESS_PARAMS))
def test_abducted_shocks_rebuild_the_path(process, rng):
    n, u, t = 4, 3, 25
    params = {
        "mu": rng.normal(-1, 0.3, (n, u)),
        "sigma": np.full((n, u), 0.4),
        "beta": rng.normal(0.5, 0.1, (n, u, 2)),
        **{k: np.full((n, u), v) for k, v in PROCESS_PARAMS[process].items()},
    }
    x = rng.normal(size=(n, u, t, 2))
    shocks = rng.standard_normal((n, u, t - 1))
    init = np.zeros((n, u))
    path = processes.simulate_paths(process, params, shocks, init=init, exposures=x[:, :, 1:])
    full = np.concatenate([init[..., None], path], axis=-1)
    got = abduct_shocks(process, params, full, x)
    np.testing.assert_allclose(got[..., 1:], shocks, atol=1e-7)
    assert np.all(got[..., 0] == 0.0)


def test_abducted_uniforms_rebuild_the_regime_path(rng):
    n, u, t, k = 50, 2, 40, 3
    rows = rng.dirichlet(np.ones(k), size=(n, 1, k))
    trans = ConstantTransitions(rows)
    never = Schedule(np.full((1, n, u), -1), None, None, np.zeros(1), np.zeros(1, bool))
    common = dict(init=np.zeros((n, u)), init_regime=np.zeros((n, u), np.int64), transitions=trans)
    shocks = rng.standard_normal((n, u, t))
    first = simulate_scenarios(
        "random_walk",
        {"mu": np.zeros((n, u)), "sigma": np.ones((n, u))},
        never,
        shocks,
        rng.random((n, u, t)),
        **common,
    )
    path = first.regime[0]
    probs = np.broadcast_to(rows[:, :, None], (n, u, t, k, k))
    uniforms = abduct_uniforms(path, probs, np.random.default_rng(5))
    again = simulate_scenarios(
        "random_walk",
        {"mu": np.zeros((n, u)), "sigma": np.ones((n, u))},
        never,
        shocks,
        uniforms,
        **common,
    )
    np.testing.assert_array_equal(again.regime[0], path)


@pytest.mark.parametrize("process", ["ratchet", "hysteresis"])
def test_baseline_reproduces_each_draws_fitted_path(process):
    extra = (
        {"rho": 0.3, "kappa": 3.0, "width": 0.25, "baseline": 0.0}
        if process == "hysteresis"
        else None
    )
    worlds = make_worlds(process=process, extra=extra, n=60)
    res = compare_timings(worlds, [], horizon=8, seed=2)
    never = res.outcomes.sel(scenario="never").isel(time=slice(0, worlds.n_steps))
    c = never["constraint"].values.reshape(worlds.constraint.shape)
    np.testing.assert_allclose(c, worlds.constraint, rtol=0, atol=ROUNDOFF)
    np.testing.assert_array_equal(
        never["regime"].values.reshape(worlds.regimes.shape), worlds.regimes
    )


# --------------------------------------------------------------------------
# acceptance: delay, reset, point of no return, decoupled feedback
# --------------------------------------------------------------------------


def test_final_constraint_rises_with_delay_draw_by_draw(ratchet_worlds):
    times = list(range(0, 48, 4))  # 12 timings, within the data and beyond it
    res = compare_timings(
        ratchet_worlds, timing_scenarios(ReduceExposure(0.5), times), horizon=20, seed=3
    )
    final = res.outcomes["constraint_final"].sel(scenario=[f"at {t}" for t in times]).values
    steps = np.diff(final, axis=0)
    # Common random numbers: each extra step of delay adds one full-exposure
    # increment instead of a reduced one, in every draw.
    assert np.all(steps > 0)
    assert np.all(np.diff(final.mean(axis=(1, 2, 3))) > 0)
    never = res.outcomes["constraint_final"].sel(scenario="never").values
    assert np.all(final < never)


def _three_regime_worlds() -> iv.Worlds:
    """tracking -> drifting (can return) -> locked (absorbing)."""
    k = 3
    g0 = np.full((k, k), -40.0)
    g0[0, 1], g0[1, 0], g0[1, 2] = -1.0, -3.0, -2.0
    g1 = np.zeros((k, k))
    return make_worlds(n=300, n_steps=20, loading=(1.0, 0.5, 0.0), hazard=np.stack([g0, g1]))


def test_reset_after_absorbing_lock_in_changes_nothing_before_it_changes_the_path():
    worlds = _three_regime_worlds()
    tau = 12
    res = compare_timings(
        worlds, [Scenario("reset", ResetNarrative(), At(tau))], horizon=10, seed=4
    )
    out = res.outcomes
    at_tau = out["regime"].sel(scenario="never").isel(time=tau).values
    reset, never = out.sel(scenario="reset"), out.sel(scenario="never")
    locked, drifting = at_tau == 2, at_tau == 1
    assert locked.any() and drifting.any()
    # Absorbed: the reset is reported as blocked and nothing changes.
    np.testing.assert_array_equal(reset["reset_blocked"].values, locked)
    same = (reset["regime"] == never["regime"]).all(dims.TIME).values
    assert np.all(same[locked])
    # Not yet absorbed: back to tracking at tau, and the path changes.
    assert np.all(reset["regime"].isel(time=tau).values[drifting] == 0)
    assert not np.any(same[drifting])
    np.testing.assert_array_equal(reset["constraint"].values, never["constraint"].values)


def test_point_of_no_return_matches_the_hand_computation():
    # Noise ~ 0: C_0 = 0, increments exp(log 3 * x) = 3 at full exposure, exp(0) = 1
    # once the exposure is removed.  Acting at tau over times 0..19 gives
    # C_19 = 3 tau + (19 - tau) = 19 + 2 tau, so C_19 < 40 iff tau <= 10: the
    # point of no return is tau = 11, and each step of delay costs exactly 2.
    worlds = make_worlds(
        n=20, n_steps=5, mu=0.0, mu_spread=0.0, beta=np.log(3.0), sigma=1e-9, g0=-50, g1=0
    )
    res = compare_timings(
        worlds, timing_scenarios(ReduceExposure(1.0), range(20)), horizon=15, seed=0
    )
    np.testing.assert_allclose(
        res.outcomes["constraint_final"].sel(scenario="at 7").values, 33.0, atol=1e-6
    )
    pnr = res.point_of_no_return(target=40.0, level=0.5)
    assert pnr.time.values.tolist() == [11]
    assert not bool(pnr.already_passed.values[0])
    assert np.all(pnr.per_draw.values == 11)
    np.testing.assert_array_equal(pnr.probability.values[:, 0], (np.arange(20) <= 10).astype(float))
    np.testing.assert_allclose(res.delay_cost().values[1:], 2.0, atol=1e-6)


def test_feedback_rule_acts_later_than_posterior_trigger_when_feedback_decouples():
    # Lock-in comes while the constraint is still small (hazard logit -5 + 1.0 C),
    # and in the locked regime the signal stops loading on the constraint, so a
    # rule waiting for the signal to pass 8 is mostly never triggered.
    worlds = make_worlds(n=400, n_steps=4, g0=-5.0, g1=1.0, mu=-0.7, seed=7)
    scenarios = [
        Scenario("rule", ReduceExposure(0.8), FeedbackRule("signal0", 8.0)),
        Scenario("trigger", ReduceExposure(0.8), PosteriorTrigger(0.8)),
    ]
    res = compare_timings(worlds, scenarios, horizon=60, seed=8)
    out = res.outcomes
    n_t = out.sizes[dims.TIME]
    acted_at = out["tau"].fillna(n_t)  # never acting counts as acting after the end
    rule_t = acted_at.sel(scenario="rule").values
    trig_t = acted_at.sel(scenario="trigger").values
    assert float(out["acted"].sel(scenario="trigger").mean()) > 0.95
    assert np.mean(rule_t) > np.mean(trig_t) + 10
    assert np.all(rule_t >= trig_t - 2)  # filtering noise may let the rule fire a step earlier
    gap = float(
        (
            out["constraint_final"].sel(scenario="rule")
            - out["constraint_final"].sel(scenario="trigger")
        ).mean()
    )
    assert gap > 0
    assert float(res.beats("trigger", "rule").values[0]) > 0.8


# --------------------------------------------------------------------------
# other interventions
# --------------------------------------------------------------------------


def test_relief_is_refused_for_a_ratchet_before_any_simulation(ratchet_worlds, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("simulation started")

    monkeypatch.setattr(iv, "simulate_scenarios", boom)
    with pytest.raises(InterventionError, match=r"ratchet.*never decreases"):
        compare_timings(ratchet_worlds, [Scenario("r", Relieve(1.0), At(5))], horizon=5, seed=0)


def test_relief_shifts_a_random_walk_by_the_amount():
    worlds = make_worlds(process="random_walk", n=30, mu=0.1, beta=0.2)
    res = compare_timings(worlds, [Scenario("r", Relieve(2.5), At(10))], horizon=5, seed=0)
    diff = res.outcomes["constraint"].sel(scenario="never") - res.outcomes["constraint"].sel(
        scenario="r"
    )
    np.testing.assert_allclose(diff.isel(time=slice(0, 10)).values, 0.0, atol=ROUNDOFF)
    np.testing.assert_allclose(diff.isel(time=slice(10, None)).values, 2.5, atol=ROUNDOFF)


def test_lower_hazard_never_lengthens_decoupling_draw_by_draw(ratchet_worlds):
    scenarios = [
        Scenario("half", LowerHazard(0.5), At(0)),
        Scenario("all", LowerHazard(1.0), At(0)),
    ]
    res = compare_timings(ratchet_worlds, scenarios, horizon=20, seed=1)
    td = res.outcomes["time_decoupled"]
    assert np.all(td.sel(scenario="half") <= td.sel(scenario="never"))
    assert float(td.sel(scenario="half").mean()) < float(td.sel(scenario="never").mean())
    assert np.all(td.sel(scenario="all") == 0)  # every world starts tracking


def test_exposure_reduction_with_a_duration_ends(ratchet_worlds):
    scenarios = [Scenario("short", ReduceExposure(1.0, duration=3), At(10))]
    res = compare_timings(ratchet_worlds, scenarios, horizon=0, seed=1)
    c = res.outcomes["constraint"]
    inc = c.diff(dims.TIME)
    ratio = (inc.sel(scenario="short") / inc.sel(scenario="never")).isel(chain=0, draw=0, unit=0)
    # Steps 11..13 lose the exposure (beta = 1: a factor exp(-1)); the others are untouched.
    np.testing.assert_allclose(ratio.values[10:13], np.exp(-1.0), rtol=1e-6)
    np.testing.assert_allclose(np.delete(ratio.values, [10, 11, 12]), 1.0, rtol=1e-9)
    assert int(res.outcomes["active_steps"].sel(scenario="short").max()) == 3


# --------------------------------------------------------------------------
# results and errors
# --------------------------------------------------------------------------


def test_outcomes_table_beats_costs_and_subsampling(ratchet_worlds):
    fam = timing_scenarios(ReduceExposure(0.5), [0, 10], cost_per_step=1.0)
    res = compare_timings(
        ratchet_worlds, fam, horizon=10, seed=3, n_draws=40, threshold=5.0, harm=lambda c: 0.1 * c
    )
    out = res.outcomes
    assert out["constraint"].dims == (dims.SCENARIO, dims.CHAIN, dims.DRAW, dims.UNIT, dims.TIME)
    assert out.sizes[dims.DRAW] == 40 and out.sizes[dims.CHAIN] == 2
    assert list(out[dims.SCENARIO].values) == ["never", "at 0", "at 10"]
    expected = 1.0 * out["active_steps"] + 0.1 * out["constraint"].sum(dims.TIME)
    np.testing.assert_allclose(out["cost"].values, expected.values)
    assert int(out["active_steps"].sel(scenario="at 10").max()) == 39 - 10  # steps 11..39
    assert bool(out["crossed"].sel(scenario="never").all())
    assert float(res.beats("at 0", "at 0").values[0]) == 0.5
    assert float(res.beats("at 0", "never").values[0]) == 1.0
    table = res.table()
    assert list(table.index) == ["never", "at 0", "at 10"]
    assert {"constraint_final_mean", "constraint_final_lo", "cost_hi", "p_acted"} <= set(
        table.columns
    )
    # The same seed gives the same outcomes.
    again = compare_timings(
        ratchet_worlds, fam, horizon=10, seed=3, n_draws=40, threshold=5.0, harm=lambda c: 0.1 * c
    )
    np.testing.assert_array_equal(again.outcomes["constraint"].values, out["constraint"].values)


def test_dates_continue_at_the_data_frequency(ratchet_worlds):
    dates = pd.date_range("2024-01-07", periods=ratchet_worlds.n_steps, freq="W")
    worlds = iv.Worlds(
        **{**ratchet_worlds.__dict__, "coords": {**ratchet_worlds.coords, dims.TIME: dates.values}}
    )
    beyond = dates[-1] + 3 * pd.Timedelta(weeks=1)
    res = compare_timings(
        worlds, [Scenario("late", ReduceExposure(0.5), At(beyond))], horizon=5, seed=1
    )
    time = pd.DatetimeIndex(res.outcomes[dims.TIME].values)
    assert len(time) == ratchet_worlds.n_steps + 5
    assert (np.diff(time.values) == np.timedelta64(7, "D")).all()
    assert pd.Timestamp(res.outcomes["tau"].sel(scenario="late").values.flat[0]) == beyond


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: [Scenario("x", ReduceExposure(0.5), At(999))], "neither in the data nor within"),
        (lambda: [Scenario("x", ReduceExposure(0.5), FeedbackRule("nope", 1.0))], "signal 'nope'"),
        (lambda: [Scenario("x", ReduceExposure(0.5, exposures=("zz",)), At(3))], "exposure 'zz'"),
        (
            lambda: [Scenario("x", ReduceExposure(0.5), FeedbackRule("signal0", 1.0, start=-4))],
            "start",
        ),
        (
            lambda: [Scenario("x", LowerHazard(0.5, into=("tracking",)), At(3))],
            "not a non-tracking",
        ),
        (lambda: [Scenario("x", (), At(1)), Scenario("x", (), At(2))], "used twice"),
    ],
)
def test_bad_scenarios_fail_before_simulation(ratchet_worlds, monkeypatch, make, match):
    monkeypatch.setattr(iv, "simulate_scenarios", None)  # any simulation would crash
    with pytest.raises(InterventionError, match=match):
        compare_timings(ratchet_worlds, make(), horizon=10, seed=0)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: ReduceExposure(1.5), r"factor must lie in \[0, 1\]"),
        (lambda: ReduceExposure(-0.1), r"factor must lie in \[0, 1\]"),
        (lambda: ReduceExposure(0.5, duration=0), "duration"),
        (lambda: LowerHazard(2.0), "factor"),
        (lambda: Relieve(-1.0), "amount"),
        (lambda: PosteriorTrigger(1.0), r"\(0, 1\)"),
        (lambda: FeedbackRule("y", 1.0, direction="up"), "'above' or 'below'"),
        (lambda: Scenario("s", ("not an intervention",), Never()), "not an intervention"),
        (lambda: Scenario("s", (), "soon"), "not a policy"),
    ],
)
def test_bad_interventions_and_policies_are_refused_at_construction(build, match):
    with pytest.raises(InterventionError, match=match):
        build()


def test_bad_arguments(ratchet_worlds):
    with pytest.raises(InterventionError, match="horizon"):
        compare_timings(ratchet_worlds, [], horizon=-1, seed=0)
    with pytest.raises(InterventionError, match="n_draws"):
        compare_timings(ratchet_worlds, [], horizon=1, seed=0, n_draws=0)
    res = compare_timings(ratchet_worlds, [], horizon=1, seed=0)
    with pytest.raises(InterventionError, match="unknown scenario"):
        res.beats("never", "sometimes")
    with pytest.raises(InterventionError, match="no fixed-timing"):
        res.point_of_no_return(1.0)


def test_baseline_shortcut_changes_nothing(ratchet_worlds, rng):
    w = ratchet_worlds
    n_s, n_u, n_t = w.constraint.shape
    taus = np.stack([np.full((n_s, n_u), t) for t in (-1, 0, 7, 20)])
    after = np.arange(n_t)[None, None, None, :, None] > taus[..., None, None]
    scale = np.where(after & (taus[..., None, None] >= 0), 0.3, 1.0)
    sched = Schedule(taus, None, scale.repeat(2, -1), np.zeros(4), np.array([0, 1, 1, 0], bool))
    args = (
        "ratchet",
        w.params,
        sched,
        rng.standard_normal((n_s, n_u, n_t)),
        rng.random((n_s, n_u, n_t)),
    )
    kw = dict(
        init=w.constraint[..., 0],
        init_regime=np.zeros((n_s, n_u), np.int64),
        transitions=w.transitions,
        exposures=w.exposures,
        absorbing=w.absorbing,
    )
    full = simulate_scenarios(*args, **kw)
    fast = simulate_scenarios(*args, **kw, baseline_regime=full.regime[0])
    np.testing.assert_array_equal(fast.regime, full.regime)
    np.testing.assert_array_equal(fast.reset_blocked, full.reset_blocked)


def test_reset_in_the_two_regime_model_blocked_after_lock_in_holds_before(ratchet_worlds):
    tau = 14  # about 40 % of the worlds have locked in by then
    res = compare_timings(
        ratchet_worlds, [Scenario("reset", ResetNarrative(), At(tau))], horizon=15, seed=2
    )
    out = res.outcomes
    never, reset = out.sel(scenario="never"), out.sel(scenario="reset")
    locked = (never["regime"].isel(time=tau) == 1).values
    later = (~locked) & (never["regime"].isel(time=-1) == 1).values
    assert locked.any() and later.any()
    np.testing.assert_array_equal(reset["reset_blocked"].values, locked)
    same = (reset["regime"] == never["regime"]).all(dims.TIME).values
    assert np.all(same[locked])  # absorbed before tau: the reset changes nothing
    assert not np.any(same[later])  # still tracking at tau: held there, lock-in prevented
    assert np.all(reset["regime"].isel(time=slice(tau, None)).values[~locked] == 0)


# --------------------------------------------------------------------------
# a real fit of the decoupling model
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_fit():
    import dataclasses
    import warnings

    import pathlock as pl
    from pathlock import observations
    from pathlock.spec import Spec

    n_steps, k = 40, 2
    rng = np.random.default_rng(11)
    x = rng.uniform(0.0, 2.0, n_steps)
    world = simulate_worlds(
        "ratchet",
        {"mu": np.full((1, 1), -1.5), "sigma": np.full((1, 1), 0.3), "beta": np.ones((1, 1, 1))},
        HazardTransitions("absorbing", np.full((1, 1, k, k), -4.0), np.full((1, 1, k, k), 0.35)),
        FeedbackModel(
            ("normal",),
            np.zeros((1, 1, 1, k)),
            np.array([1.0, 0.0]).reshape(1, 1, 1, k),
            {"sigma": np.full((1, 1, 1, k), 0.3)},
        ),
        n_steps=n_steps,
        init=np.zeros((1, 1)),
        seed=11,
        exposures=x.reshape(1, n_steps, 1),
        absorbing=(1,),
    )
    c = world.constraint[0, 0]
    df = pd.DataFrame(
        {
            "time": np.arange(n_steps),
            "indicator": observations.draw("normal", c, {"sigma": 0.3}, rng),
            "feedback": world.feedback[0, 0, :, 0],
            "x": x,
        }
    )
    spec = Spec.from_toml("models/decoupling.toml")
    spec = dataclasses.replace(
        spec, constraint=dataclasses.replace(spec.constraint, exposures=("x",))
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pl.fit(spec, df, draws=100, tune=200, chains=2, seed=1)


@pytest.mark.slow
def test_real_fit_uses_the_models_dynamics_and_delay_costs(small_fit):
    import pathlock as pl

    worlds = iv.worlds_from_fit(small_fit, rng=0)
    lt = np.exp(small_fit.regime_inputs().log_trans)
    # The canonical model holds its first steps in tracking; the worlds apply the same hold.
    assert worlds.hold_until == small_fit.spec.regimes.known_tracking > 0
    for t in range(1, worlds.n_steps):
        mine = iv._grid_transitions(worlds.transitions, worlds.constraint[..., t - 1], None)
        if t < worlds.hold_until:
            mine = np.broadcast_to(np.eye(mine.shape[-1]), mine.shape)
        np.testing.assert_allclose(mine, lt[:, :, t], rtol=0, atol=1e-12)
    times = list(range(0, 60, 5))  # 12 timings; data end at 39, horizon 20
    res = pl.compare_timings(
        small_fit, timing_scenarios(ReduceExposure(0.5), times), horizon=20, seed=2, n_draws=50
    )
    out = res.outcomes
    post = small_fit.idata.posterior["constraint"].sel(draw=out[dims.DRAW])
    never = out["constraint"].sel(scenario="never").isel(time=slice(0, worlds.n_steps))
    np.testing.assert_allclose(never.values, post.values, rtol=0, atol=1e-9)
    beta = small_fit.idata.posterior["constraint_beta"].sel(draw=out[dims.DRAW]).values
    assert np.all(beta > 0)  # the data pin beta near 1: reducing exposure lowers increments
    final = out["constraint_final"].sel(scenario=[f"at {t}" for t in times]).values
    assert np.all(np.diff(final, axis=0) >= 0)
    assert np.all(np.diff(final.mean(axis=(1, 2, 3))) > 0)
