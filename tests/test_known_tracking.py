"""``regimes.known_tracking``: leading steps known to be in the tracking regime.

One assumption, applied by every part that moves regimes: the model's
transitions, the simulator and the scenario simulator.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

import pathlock as pl
from pathlock.errors import DataError, SpecError
from pathlock.interventions import ConstantTransitions, Schedule, simulate_scenarios
from pathlock.spec import RegimeSpec

MODELS = Path(__file__).resolve().parents[1] / "models"


def _spec(held: int) -> pl.Spec:
    spec = pl.Spec.from_toml(MODELS / "decoupling.toml")
    return dataclasses.replace(spec, regimes=dataclasses.replace(spec.regimes, known_tracking=held))


def _compiled_log_trans(spec: pl.Spec, df) -> np.ndarray:
    """The model's ``log_trans`` (unit or 1, time, regime, regime) at its initial point."""
    built = spec.build(df)
    model = built.model
    (log_trans,) = model.replace_rvs_by_values([built.log_trans])
    fn = model.compile_fn(
        log_trans, inputs=model.value_vars, mode="FAST_COMPILE", on_unused_input="ignore"
    )
    return np.asarray(fn(model.initial_point()))


def test_known_tracking_round_trips_through_toml() -> None:
    spec = _spec(12)
    again = pl.Spec.from_toml_string(spec.to_toml())
    assert again.regimes.known_tracking == 12
    assert again == spec
    assert pl.Spec.from_toml(MODELS / "decoupling.toml").regimes.known_tracking == 20
    assert RegimeSpec().known_tracking == 0


def test_known_tracking_checks_in_python() -> None:
    with pytest.raises(SpecError, match=r"regimes\.known_tracking must be >= 0; found -1"):
        RegimeSpec(known_tracking=-1)
    with pytest.raises(SpecError, match=r"regimes\.known_tracking must be an integer"):
        RegimeSpec(known_tracking=2.5)  # type: ignore[arg-type]
    with pytest.raises(SpecError, match=r"needs regimes\.initial = 'first'; found 'free'"):
        RegimeSpec(known_tracking=3, initial="free")


def test_known_tracking_longer_than_the_data_is_a_data_error() -> None:
    df, _ = pl.simulate(_spec(0), n_steps=15, seed=1)
    with pytest.raises(DataError, match=r"known_tracking = 15 .* the data have 15"):
        _spec(15).prepare_data(df)
    _spec(14).prepare_data(df)


def test_simulator_never_moves_before_the_known_tracking_steps() -> None:
    # A lock-in logit of +10: the move comes at the first step it is allowed.
    params = {"hazard_intercept": 10.0, "hazard_slope": 0.0}
    _, free = pl.simulate(_spec(0), params, n_steps=30, n_units=4, seed=2)
    _, held = pl.simulate(_spec(12), params, n_steps=30, n_units=4, seed=2)
    assert np.all(free.decoupling_time == 1)
    assert np.all(held.decoupling_time == 12)
    assert np.all(held.regimes[:, :12] == 0) and np.all(held.regimes[:, 12:] == 1)


def test_model_transitions_hold_the_known_tracking_steps() -> None:
    spec = _spec(9)
    df, _ = pl.simulate(_spec(0), n_steps=25, seed=3)
    log_trans = _compiled_log_trans(spec, df)
    assert log_trans.shape[1] == 25
    stay = np.where(np.eye(2) > 0, 0.0, -np.inf)
    np.testing.assert_array_equal(log_trans[:, :9], np.broadcast_to(stay, log_trans[:, :9].shape))
    # After the held steps the lock-in hazard is back: a finite chance of moving.
    assert np.all(np.isfinite(log_trans[:, 9:, 0, 1]))
    # The marginal likelihood changes with the hold (an early move is ruled out).
    # At the simulator's own parameters, with a lock-in hazard high enough to matter early.
    truth = pl.simulate(_spec(0), n_steps=25, seed=3)[1]
    point = {**truth.params, "hazard_intercept": -1.0, "hazard_slope": 0.5}
    point["constraint"] = truth.constraint
    held, free = spec.loglike(df, point), _spec(0).loglike(df, point)
    assert np.isfinite(held) and np.isfinite(free)
    assert abs(held - free) > 1e-3


def test_scenarios_hold_the_known_tracking_steps() -> None:
    n, u, t = 3, 2, 12
    rows = np.broadcast_to(np.array([[0.0, 1.0], [0.0, 1.0]]), (n, 1, 2, 2)).copy()
    never = Schedule(np.full((1, n, u), -1), None, None, np.zeros(1), np.zeros(1, bool))
    kw = dict(
        init=np.zeros((n, u)),
        init_regime=np.zeros((n, u), np.int64),
        transitions=ConstantTransitions(rows),
        absorbing=(1,),
    )
    args = (
        "random_walk",
        {"mu": np.zeros((n, u)), "sigma": np.ones((n, u))},
        never,
        np.zeros((n, u, t)),
        np.full((n, u, t), 0.5),
    )
    assert np.all(simulate_scenarios(*args, **kw).regime[0][..., 1:] == 1)
    regime = simulate_scenarios(*args, **kw, hold_until=5).regime[0]
    assert np.all(regime[..., :5] == 0) and np.all(regime[..., 5:] == 1)


def test_constant_transitions_are_held_too() -> None:
    base = _spec(0)
    regimes = dataclasses.replace(
        base.regimes, structure="sticky", hazard_on_constraint=False, known_tracking=5
    )
    spec = dataclasses.replace(base, regimes=regimes)
    df, _ = pl.simulate(_spec(0), n_steps=20, seed=4)
    trans = np.exp(_compiled_log_trans(spec, df))
    assert trans.shape == (1, 20, 2, 2)
    np.testing.assert_array_equal(trans[:, :5], np.broadcast_to(np.eye(2), (1, 5, 2, 2)))
    # After the hold: the same constant sticky matrix at every step, with a chance to move.
    np.testing.assert_allclose(trans[:, 5:], np.broadcast_to(trans[:, 5:6], (1, 15, 2, 2)))
    assert 0 < trans[0, 5, 0, 1] < 1
