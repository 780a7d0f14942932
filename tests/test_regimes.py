"""Transition matrices from hazard logits agree with their NumPy twin, with finite gradients."""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from pathlock.regimes import _log_trans_general, log_trans_hazard, transition_probabilities


@pytest.mark.parametrize("n_regimes", [2, 3])
@pytest.mark.parametrize("structure", ["free", "sticky", "absorbing"])
def test_log_transitions_match_the_numpy_twin_on_both_backends(n_regimes, structure, rng):
    logits = rng.normal(0.0, 3.0, (2, 6, n_regimes, n_regimes))
    # Saturated moves, where a naive log(1 - p) would lose every digit or overflow.
    logits[0, 0] = 40.0
    logits[0, 1] = -40.0
    logits[1, 2] = 800.0
    z = pt.tensor("z", shape=(None, None, n_regimes, n_regimes))
    log_trans = log_trans_hazard(z, structure)
    weights = rng.normal(size=logits.shape)
    finite = pt.isfinite(log_trans)
    objective = pt.switch(finite, log_trans * weights, 0.0).sum()
    grad = pytensor.grad(objective, z)
    expected = transition_probabilities(logits, structure)
    for mode in ("NUMBA", "FAST_COMPILE"):
        got, got_grad = pytensor.function([z], [log_trans, grad], mode=mode)(logits)
        np.testing.assert_allclose(np.exp(got), expected, rtol=1e-12, atol=1e-300)
        assert np.all(np.isfinite(got_grad)), mode
        if structure == "absorbing":
            # The impossible moves are -inf constants, not logs of computed zeros.
            assert np.all(np.isneginf(got[..., -1, :-1]))
            assert np.all(got_grad[..., -1, :] == 0.0)
    if n_regimes == 2:
        # The two-regime shortcut is the general row-wise log_softmax.
        general = pytensor.function([z], _log_trans_general(z, structure))(logits)
        got = pytensor.function([z], log_trans)(logits)
        np.testing.assert_allclose(got, general, rtol=1e-12, atol=1e-13)
    # The diagonal is the reference category: its logits do not matter.
    shifted = logits + 5.0 * np.eye(n_regimes)
    np.testing.assert_allclose(
        pytensor.function([z], log_trans)(shifted), pytensor.function([z], log_trans)(logits)
    )


def test_two_regime_rows_are_log_sigmoids_to_rounding():
    """Tolerance: 1e-13 absolute, what a log-likelihood needs (the move's log
    probability ``z - softplus(z)`` rounds at the scale of ``softplus(z)``), and
    1e-15 relative where the value is large."""
    z = pt.tensor("z", shape=(None, None, 2, 2))
    logits = np.zeros((1, 5, 2, 2))
    logits[0, :, 0, 1] = [-700.0, -30.0, 0.0, 30.0, 700.0]
    got = pytensor.function([z], log_trans_hazard(z, "absorbing"))(logits)[0, :, 0]
    x = logits[0, :, 0, 1]
    move = -np.logaddexp(0.0, -x)
    stay = -np.logaddexp(0.0, x)
    np.testing.assert_allclose(got[:, 1], move, rtol=1e-15, atol=1e-13)
    np.testing.assert_allclose(got[:, 0], stay, rtol=1e-15, atol=1e-13)
