"""The simulator: shapes, reproducibility, ground truth and the explicit "not yet"."""

from __future__ import annotations

import numpy as np
import pytest

from pathlock.errors import SpecError
from pathlock.simulate import NOT_YET, simulate
from pathlock.spec import RegimeSpec, SeriesSpec, Spec


@pytest.fixture
def spec() -> Spec:
    return Spec(
        indicators=(SeriesSpec("indicator", "indicator"),),
        feedback=(SeriesSpec("feedback", "feedback"),),
    )


def test_long_frame_and_truth_shapes(spec):
    df, truth = simulate(spec, n_steps=50, n_units=3, seed=1)
    assert list(df.columns) == ["unit", "time", "indicator", "feedback"]
    assert len(df) == 150
    assert truth.constraint.shape == (3, 50)
    assert truth.regimes.shape == (3, 50)
    assert np.all(np.diff(truth.constraint, axis=1) > 0)  # ratchet
    ds = truth.to_dataset()
    assert set(ds.data_vars) == {"constraint", "regime", "decoupling_time", "decoupled"}


def test_same_seed_same_data(spec):
    a, _ = simulate(spec, n_steps=30, seed=7)
    b, _ = simulate(spec, n_steps=30, seed=7)
    c, _ = simulate(spec, n_steps=30, seed=8)
    assert a.equals(b)
    assert not a.equals(c)


def test_decoupling_time_is_first_passage_and_absorbing(spec):
    _, truth = simulate(spec, n_steps=150, seed=11)
    assert truth.decoupled[0]
    tau = truth.decoupling_time[0]
    assert truth.regimes[0, tau] == 1
    assert np.all(truth.regimes[0, :tau] == 0)
    assert np.all(truth.regimes[0, tau:] == 1)  # absorbing


def test_never_decoupled_is_explicit(spec):
    _, truth = simulate(spec, {"hazard_intercept": -50.0}, n_steps=40, seed=1)
    assert not truth.decoupled[0]
    assert truth.decoupling_time[0] == NOT_YET


def test_feedback_tracks_then_decouples(spec):
    """In tracking the feedback follows the constraint; after decoupling it loses 80 %."""
    df, truth = simulate(spec, {"feedback_sigma": 1e-6}, n_steps=150, seed=11)
    c, s = truth.constraint[0], truth.regimes[0]
    y = df["feedback"].to_numpy()
    np.testing.assert_allclose(y[s == 0], c[s == 0], atol=1e-4)
    np.testing.assert_allclose(y[s == 1], 1.0 + 0.2 * c[s == 1], atol=1e-4)


def test_prior_draws_and_unknown_names(spec):
    _df, truth = simulate(spec, "prior", n_steps=20, seed=3)
    assert np.all(np.isfinite(truth.constraint))
    assert 0 <= truth.params["feedback_w"][1] < 1
    with pytest.raises(SpecError, match="unknown parameter"):
        simulate(spec, {"feedback_slope": 1.0}, n_steps=20, seed=3)


@pytest.mark.parametrize("process", ["hysteresis", "random_walk", "ar1"])
def test_other_processes_and_three_regimes(process):
    from pathlock.spec import ConstraintSpec

    spec = Spec(
        indicators=(SeriesSpec("z", "z"), SeriesSpec("n", "n", "poisson")),
        feedback=(SeriesSpec("y", "y", "student_t"),),
        constraint=ConstraintSpec(process=process),
        regimes=RegimeSpec(names=("tracking", "drifting", "locked"), structure="sticky"),
    )
    df, truth = simulate(spec, n_steps=40, n_units=2, seed=5)
    assert np.all(df["n"] >= 0) and np.all(df["n"] == np.round(df["n"]))
    assert truth.regimes.max() <= 2


def test_values_fixed_in_the_spec_are_the_simulated_truth():
    """A parameter fixed in the spec is part of the model, so the simulator uses
    its value rather than the default truth (feedback_b's default is 1.0), for
    loadings as for the rest; a given value that contradicts it is a SpecError
    naming the parameter, not silently replaced."""
    spec = Spec(
        indicators=(SeriesSpec("indicator", "indicator"),),
        feedback=(SeriesSpec("feedback", "feedback"),),
    ).with_priors(feedback_b=2.5, feedback_a=[0.3, 0.7], feedback_w=0.5)
    _, truth = simulate(spec, None, n_steps=20, seed=1)
    assert truth.params["feedback_b"] == 2.5
    np.testing.assert_array_equal(truth.params["feedback_a"], [[0.3, 0.7]])
    np.testing.assert_array_equal(truth.params["feedback_w"], [1.0, 0.5])
    _, again = simulate(spec, {"feedback_b": 2.5, "feedback_w": 0.5}, n_steps=20, seed=1)
    assert again.params["feedback_b"] == 2.5
    with pytest.raises(SpecError, match=r"feedback_b = 1.0, but the spec fixes it at 2.5"):
        simulate(spec, {"feedback_b": 1.0}, n_steps=20, seed=1)
    with pytest.raises(SpecError, match=r"feedback_w \(decoupled\) = 0.2, but the spec fixes"):
        simulate(spec, {"feedback_w": 0.2}, n_steps=20, seed=1)
