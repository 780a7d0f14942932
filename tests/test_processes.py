"""The one definition of each constraint process agrees symbolically and numerically."""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from pytensor.gradient import verify_grad

from pathlock.errors import InterventionError, SpecError
from pathlock.processes import (
    PROCESSES,
    cumulative_sum,
    innovation_mean,
    linear_recurrence,
    path,
    relieve,
    simulate_paths,
)

PARAMS = {
    "mu": np.array([0.1, -0.5]),
    "sigma": np.array([0.3, 0.2]),
    "phi": np.array([0.8, 0.5]),
    "rho": np.array([0.2, 0.3]),
    "kappa": np.array([1.0, 2.0]),
    "width": np.array([0.3, 0.3]),
    "baseline": np.array([0.5, 1.0]),
}


@pytest.mark.parametrize("process", sorted(PROCESSES))
def test_symbolic_and_numeric_paths_agree(process, rng):
    shocks = rng.normal(size=(2, 30))
    init = np.array([0.5, 1.0])
    numeric = simulate_paths(process, PARAMS, shocks, init=init)
    innov = innovation_mean(process, PARAMS)[:, None] + PARAMS["sigma"][:, None] * shocks
    symbolic = path(process, init, innov, PARAMS).eval()
    # Same arithmetic in a different order (cumsum vs loop): rounding only.
    np.testing.assert_allclose(symbolic[:, 1:], numeric, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(symbolic[:, 0], init)


def test_exposures_shift_the_innovations(rng):
    shocks = rng.normal(size=(3, 10))
    x = rng.normal(size=(3, 10, 2))
    p = {"mu": np.zeros(3), "sigma": np.ones(3), "beta": np.tile([0.5, -1.0], (3, 1))}
    with_x = simulate_paths("random_walk", p, shocks, init=np.zeros(3), exposures=x)
    without = simulate_paths("random_walk", p, shocks, init=np.zeros(3))
    np.testing.assert_allclose(with_x - without, np.cumsum(x @ np.array([0.5, -1.0]), axis=1))


def test_ratchet_is_monotone_and_cannot_be_relieved(rng):
    p = {"mu": np.array(-1.0), "sigma": np.array(2.0)}
    out = simulate_paths("ratchet", p, rng.normal(size=(50, 40)), init=np.zeros(50))
    assert np.all(np.diff(out, axis=-1) > 0)
    with pytest.raises(InterventionError, match="ratchet"):
        relieve("ratchet", out, 1.0, p)
    with pytest.raises(InterventionError, match="never decreases"):
        simulate_paths("ratchet", p, rng.normal(size=(2, 5)), init=np.zeros(2), relief=np.ones(5))


def test_hysteresis_recovers_below_threshold_only():
    p = {"mu": 0.0, "sigma": 1.0, "rho": 0.5, "kappa": 5.0, "width": 0.05, "baseline": 0.0}
    # A huge negative innovation adds ~0, leaving only the recovery term.
    innov = np.full(1, -50.0)
    below = float(np.asarray(path("hysteresis", [2.0], innov[None], p).eval())[0, 1])
    above = float(np.asarray(path("hysteresis", [8.0], innov[None], p).eval())[0, 1])
    assert below == pytest.approx(1.0, abs=1e-6)  # half-way back to the baseline
    assert above == pytest.approx(8.0, abs=1e-6)  # past kappa: no recovery
    relieved = relieve("hysteresis", np.array([3.0]), np.array([5.0]), p)
    np.testing.assert_allclose(relieved, [0.0])  # not below the baseline


def test_linear_recurrence_value_and_gradient(rng):
    a = rng.uniform(-0.9, 0.9, (3, 7))
    b = rng.normal(size=(3, 7))
    x = linear_recurrence(pt.as_tensor(a), pt.as_tensor(b)).eval()
    expected = np.zeros_like(b)
    for t in range(7):
        expected[:, t] = (a[:, t] * expected[:, t - 1] if t else 0.0) + b[:, t]
    np.testing.assert_allclose(x, expected)
    verify_grad(linear_recurrence, [a, b], rng=rng)


def test_linear_recurrence_numba_backend_matches(rng):
    a, b = pt.matrix("a"), pt.matrix("b")
    out = linear_recurrence(a, b)
    grads = pytensor.grad((out**2).sum(), [a, b])
    av, bv = rng.uniform(-0.9, 0.9, (2, 6)), rng.normal(size=(2, 6))
    f_numba = pytensor.function([a, b], [out, *grads], mode="NUMBA")
    f_py = pytensor.function([a, b], [out, *grads], mode="FAST_COMPILE")
    for x, y in zip(f_numba(av, bv), f_py(av, bv), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-12)


def test_cumulative_sum_is_cumsum_with_its_gradient_on_both_backends(rng):
    x = pt.matrix("x")
    weights = rng.normal(size=(3, 8))
    out = cumulative_sum(x)
    grad = pytensor.grad((out * weights).sum(), x)
    value = rng.normal(size=(3, 8))
    for mode in ("NUMBA", "FAST_COMPILE"):
        got, got_grad = pytensor.function([x], [out, grad], mode=mode)(value)
        np.testing.assert_allclose(got, np.cumsum(value, axis=1), rtol=1e-12)
        # d/dx_s sum_t w_t cumsum(x)_t = sum_(t >= s) w_t.
        np.testing.assert_allclose(got_grad, np.cumsum(weights[:, ::-1], axis=1)[:, ::-1])


def test_unknown_process_lists_allowed():
    with pytest.raises(SpecError, match="allowed"):
        simulate_paths("sawtooth", {"mu": 0, "sigma": 1}, np.zeros((1, 3)), init=[0.0])
