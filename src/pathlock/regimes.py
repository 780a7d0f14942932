"""Transition structures of the hidden regimes, as inputs of the forward-backward kernel.

This module turns regime parameters into ``log_init`` (unit or 1, regime) and
``log_trans`` (unit or 1, time or 1, regime, regime): constant matrices from
Dirichlet rows, or time-varying ones whose off-diagonal logits depend on the
lagged constraint and on covariates (staying is the reference category, so a
row is a ``log_softmax``).  Impossible moves (the rows of an absorbing
regime) are ``-inf`` *constants*, never the log of a computed zero, so
gradients stay finite.  It also offers the NumPy twins used by the simulator.
It knows nothing of observations, specs or PyMC variable names.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pytensor.tensor as pt
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "Structure",
    "log_init_first",
    "log_init_free",
    "log_trans_constant",
    "log_trans_hazard",
    "hazard_logits",
    "transition_probabilities",
    "hold_tracking",
    "hold_tracking_probabilities",
]

Structure = Literal["free", "sticky", "absorbing"]


def log_init_first(n_regimes: int) -> pt.TensorVariable:
    """``log_init`` (1, regime) putting every unit in the first (tracking) regime."""
    li = np.full((1, n_regimes), -np.inf)
    li[0, 0] = 0.0
    return pt.as_tensor_variable(li)


def log_init_free(probabilities: Any) -> pt.TensorVariable:
    """``log_init`` (1, regime) from estimated initial probabilities (regime,)."""
    return pt.log(pt.as_tensor_variable(probabilities))[None, :]


def log_trans_constant(rows: Any, n_regimes: int, structure: Structure) -> pt.TensorVariable:
    """Constant ``log_trans`` (1, 1, regime, regime) from Dirichlet rows.

    Parameters
    ----------
    rows : TensorLike (regime, regime) or (regime - 1, regime)
        Transition probabilities; for ``absorbing`` only the first ``K - 1``
        rows (the last row is the constant ``(0, ..., 0, 1)``).
    n_regimes : int
    structure : {"free", "sticky", "absorbing"}
    """
    rows = pt.as_tensor_variable(rows)
    log_rows = pt.log(rows)
    if structure == "absorbing":
        last = np.full((1, n_regimes), -np.inf)
        last[0, -1] = 0.0
        log_rows = pt.concatenate([log_rows[: n_regimes - 1], pt.as_tensor_variable(last)], 0)
    return log_rows[None, None]


def hazard_logits(
    intercept: Any,
    slope: Any | None,
    lagged_constraint: Any,
    eta: Any | None = None,
    covariates: Any | None = None,
    xp=pt,
) -> Any:
    """Move logits ``g0_ij + g1_ij C_(t-1) + w_t'eta_ij`` (unit, time, regime, regime).

    Parameters
    ----------
    intercept : (regime, regime) or (unit, regime, regime)
    slope : same shape as ``intercept``, optional
    lagged_constraint : (unit, time)
        ``C_(t-1)`` aligned with ``t`` (the entry at ``t = 0`` is unused by the kernel).
    eta : (regime, regime, exog) or (unit, regime, regime, exog), optional
    covariates : (unit, time, exog), optional
    xp : module
        ``pytensor.tensor`` or ``numpy``.
    """
    g0 = intercept if intercept.ndim == 3 else intercept[None]
    logits = g0[:, None, :, :] + xp.zeros_like(lagged_constraint)[:, :, None, None]
    if slope is not None:
        g1 = slope if slope.ndim == 3 else slope[None]
        logits = logits + g1[:, None, :, :] * lagged_constraint[:, :, None, None]
    if eta is not None and covariates is not None:
        e = eta if eta.ndim == 4 else eta[None]
        logits = logits + (e[:, None] * covariates[:, :, None, None, :]).sum(axis=-1)
    return logits


def _mask(n_regimes: int, structure: Structure) -> NDArray[np.float64]:
    """Additive mask: 0 where a move is possible, -inf where impossible; diagonal marks stay."""
    mask = np.zeros((n_regimes, n_regimes))
    if structure == "absorbing":
        mask[-1, :] = -np.inf
        mask[-1, -1] = 0.0
    return mask


def log_trans_hazard(logits: Any, structure: Structure) -> pt.TensorVariable:
    """``log_trans`` (unit, time, regime, regime) from move logits, staying as reference.

    Parameters
    ----------
    logits : TensorLike (unit, time, regime, regime)
        Off-diagonal entries are the logits of moving ``i -> j`` relative to
        staying; the diagonal is ignored (set to 0).
    structure : {"free", "sticky", "absorbing"}
        ``absorbing`` pins the last row to ``(-inf, ..., -inf, 0)``.

    Returns
    -------
    TensorVariable (unit, time, regime, regime)
    """
    k = int(logits.type.shape[-1]) if logits.type.shape[-1] is not None else None
    if k is None:
        raise ValueError("the regime axis of the hazard logits must have a static length")
    if k == 2:
        return _log_trans_two(logits, structure)
    return _log_trans_general(logits, structure)


def _log_trans_general(logits: Any, structure: Structure) -> pt.TensorVariable:
    """:func:`log_trans_hazard` for any number of regimes: a ``log_softmax`` per row."""
    k = int(logits.type.shape[-1])
    off = 1.0 - np.eye(k)
    z = logits * off
    mask = _mask(k, structure)
    if structure == "absorbing":
        # The absorbing row must not depend on (possibly huge) logits at all.
        keep = np.ones((k, k))
        keep[-1] = 0.0
        z = z * keep
    z = z + mask
    log_rows = z - pt.logsumexp(z, axis=-1, keepdims=True)
    if structure == "absorbing":
        log_rows = pt.switch(np.isneginf(mask), -np.inf, log_rows)
    return log_rows


def _log_trans_two(logits: Any, structure: Structure) -> pt.TensorVariable:
    """:func:`log_trans_hazard` for two regimes: each row is a log-sigmoid of its one logit.

    The same values as the general row-wise ``log_softmax``, from one
    ``softplus`` per row (``log(1 - p) = log p - z``) instead of a max, an
    exponential per entry, a sum and a log over a (unit, time, 2, 2) array:
    at T = 1000 value and gradient took 58 us against 75 us
    (``benchmarks/bench_gradient.py``).
    """
    z01 = logits[..., 0, 1]
    sp = pt.softplus(z01)
    row0 = pt.stack([-sp, z01 - sp], axis=-1)
    if structure == "absorbing":
        # A constant row, so no gradient flows through the -inf of the impossible move.
        row1 = pt.broadcast_to(np.array([-np.inf, 0.0]), row0.shape)
    else:
        z10 = logits[..., 1, 0]
        sp10 = pt.softplus(z10)
        row1 = pt.stack([z10 - sp10, -sp10], axis=-1)
    return pt.stack([row0, row1], axis=-2)


def transition_probabilities(logits: ArrayLike, structure: Structure) -> NDArray[np.float64]:
    """NumPy twin of :func:`log_trans_hazard`, returning probabilities (..., regime, regime)."""
    z = np.asarray(logits, dtype=float).copy()
    k = z.shape[-1]
    z[..., np.arange(k), np.arange(k)] = 0.0
    if structure == "absorbing":
        z[..., -1, :] = 0.0
    z = z + _mask(k, structure)
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=-1, keepdims=True)


def hold_tracking(log_trans: Any, n_steps: Any, n_held: int) -> pt.TensorVariable:
    """``log_trans`` (unit or 1, time, regime, regime) with no move before ``n_held``.

    Steps ``t < n_held`` get the identity (``log 1`` staying, ``-inf``
    constants elsewhere), so with every unit starting in the first regime the
    held steps stay there; later steps are unchanged.  A constant
    ``log_trans`` (time axis 1) is broadcast over the ``n_steps`` steps.
    """
    log_trans = pt.as_tensor_variable(log_trans)
    if n_held <= 0:
        return log_trans
    k = int(log_trans.type.shape[-1])
    stay = np.where(np.eye(k) > 0, 0.0, -np.inf)
    held = (pt.arange(n_steps) < n_held)[None, :, None, None]
    return pt.switch(held, stay[None, None], log_trans)


def hold_tracking_probabilities(probabilities: ArrayLike, n_held: int) -> NDArray[np.float64]:
    """NumPy twin of :func:`hold_tracking` on probabilities (..., time, regime, regime)."""
    p = np.array(probabilities, dtype=float)
    if n_held > 0:
        k = p.shape[-1]
        p[..., :n_held, :, :] = np.eye(k)
    return p
