"""Forward-backward, FFBS and Viterbi kernels for hidden Markov regimes.

This module owns the numeric heart of pathlock: numba kernels over arrays with
units leading and time second, and one PyTensor ``Op`` whose gradient is the
analytic one (smoothed and pairwise marginals from the same pass), with a
numba dispatch so nutpie's numba backend runs it natively.  It knows nothing
of pandas, dims, specs or PyMC variables.

Conventions
-----------
``log_init[u, k] = log P(S_0 = k)``; ``log_trans[u, t, i, j] = log P(S_t = j |
S_(t-1) = i)`` with the entry at ``t = 0`` unused; ``log_emit[u, t, k] = log
p(y_t | S_t = k)``.  A time step whose emission row is all zeros carries no
information (a missing observation).  ``pairwise[u, t - 1, i, j] = P(S_(t-1) =
i, S_t = j | y)``.
"""

from __future__ import annotations

import functools
from hashlib import sha256
from pathlib import Path
from typing import NamedTuple

import numba
import numpy as np
import pytensor.tensor as pt
from numpy.typing import ArrayLike, NDArray
from pytensor.gradient import DisconnectedType
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op

from pathlock.errors import KernelInputError

__all__ = [
    "ForwardBackwardResult",
    "ForwardBackwardOp",
    "forward_backward",
    "hmm_loglike",
    "marginal_loglike",
    "sample_paths",
    "viterbi",
]


class ForwardBackwardResult(NamedTuple):
    """Output of :func:`forward_backward`.

    Attributes
    ----------
    log_likelihood : ndarray (unit,)
        Marginal log-likelihood of each unit's series.
    predictive_log_density : ndarray (unit, time)
        ``log p(y_t | y_1..t-1)``; sums over time to ``log_likelihood``.
    filtered : ndarray (unit, time, regime)
        ``P(S_t = k | y_1..t)``.
    smoothed : ndarray (unit, time, regime)
        ``P(S_t = k | y_1..T)``.
    pairwise : ndarray (unit, time - 1, regime, regime)
        ``P(S_(t-1) = i, S_t = j | y_1..T)``.
    """

    log_likelihood: NDArray[np.float64]
    predictive_log_density: NDArray[np.float64]
    filtered: NDArray[np.float64]
    smoothed: NDArray[np.float64]
    pairwise: NDArray[np.float64]


# --------------------------------------------------------------------------
# numba kernels: log_init (Ui, K), log_trans (Ua, Ta, K, K), log_emit (U, T, K)
# with Ui, Ua in {1, U} and Ta in {1, T}; broadcasting is done by indexing so
# that no (U, T, K, K) array is materialised when transitions are shared.
# --------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _forward_unit(li, lt, le, filt, pred, logc):  # pragma: no cover - numba
    """Forward filter of one unit; returns the log-likelihood.

    ``logc`` receives the per-step predictive log-densities when it has
    ``n_steps`` entries; when it is empty only the total is computed, which
    saves one ``log`` per step (the scale factors are multiplied and their
    logarithm taken only before the product could underflow).
    """
    n_steps, k = le.shape
    ta = lt.shape[0]
    per_step = logc.shape[0] > 0
    a = np.empty((k, k))
    la = np.empty(k)
    total = 0.0
    prod = 1.0
    for j in range(k):
        pred[0, j] = np.exp(li[j])
    for t in range(n_steps):
        if t > 0:
            if t == 1 or ta > 1:
                for i in range(k):
                    for j in range(k):
                        a[i, j] = np.exp(lt[t if ta > 1 else 0, i, j])
            for j in range(k):
                s = 0.0
                for i in range(k):
                    s += filt[t - 1, i] * a[i, j]
                pred[t, j] = s
        # Fast path: scale by the largest log-density among reachable regimes
        # (whose term needs no exp).  The sum is then at least that regime's
        # predicted probability, so it can only underflow (or be NaN or inf)
        # in corner cases, which take the exact log-space path below.
        m = -np.inf
        jm = -1
        for j in range(k):
            if pred[t, j] > 0.0 and le[t, j] > m:
                m = le[t, j]
                jm = j
        s = 0.0
        for j in range(k):
            if j == jm:
                w = pred[t, j]
            elif pred[t, j] > 0.0:
                w = pred[t, j] * np.exp(le[t, j] - m)
            else:
                w = 0.0
            la[j] = w
            s += w
        if s > 1e-280 and s < np.inf and m < np.inf:
            inv = 1.0 / s
            for j in range(k):
                filt[t, j] = la[j] * inv
            if per_step:
                logc[t] = m + np.log(s)
            else:
                total += m
                prod *= s
                if prod < 1e-250:
                    total += np.log(prod)
                    prod = 1.0
            continue
        m = -np.inf
        for j in range(k):
            if pred[t, j] > 0.0:
                la[j] = np.log(pred[t, j]) + le[t, j]
            else:
                la[j] = -np.inf
            if la[j] > m or np.isnan(la[j]):
                m = la[j]
        if m == -np.inf or np.isnan(m):
            # Impossible observation (or NaN input): the likelihood is zero.
            # Carry the prediction forward so later steps stay defined.
            lc = -np.inf if m == -np.inf else np.nan
            s = 0.0
            for j in range(k):
                s += pred[t, j]
            for j in range(k):
                filt[t, j] = pred[t, j] / s
        else:
            s = 0.0
            for j in range(k):
                la[j] = np.exp(la[j] - m)
                s += la[j]
            for j in range(k):
                filt[t, j] = la[j] / s
            lc = m + np.log(s)
        if per_step:
            logc[t] = lc
        else:
            total += lc
    if per_step:
        for t in range(n_steps):
            total += logc[t]
    else:
        total += np.log(prod)
    return total


@numba.njit(cache=True, nogil=True)
def _backward_unit(lt, filt, pred, smooth, pair, pair_acc):  # pragma: no cover
    """RTS-form smoother.

    Fills ``pair`` (T-1, K, K), or accumulates into ``pair_acc`` (Ta, K, K) when
    ``pair`` has no time steps.
    """
    n_steps, k = filt.shape
    ta = lt.shape[0]
    store = pair.shape[0] > 0
    a = np.empty((k, k))
    r = np.empty(k)
    for j in range(k):
        smooth[n_steps - 1, j] = filt[n_steps - 1, j]
    for t in range(n_steps - 2, -1, -1):
        tt = t + 1 if ta > 1 else 0
        if ta > 1 or t == n_steps - 2:
            for i in range(k):
                for j in range(k):
                    a[i, j] = np.exp(lt[tt, i, j])
        for j in range(k):
            r[j] = smooth[t + 1, j] / pred[t + 1, j] if pred[t + 1, j] > 0.0 else 0.0
        for i in range(k):
            s = 0.0
            for j in range(k):
                p = filt[t, i] * a[i, j] * r[j]
                s += p
                if store:
                    pair[t, i, j] = p
                else:
                    pair_acc[tt, i, j] += p
            smooth[t, i] = s


@numba.njit(cache=True, nogil=True)
def _loglike_and_grad_unit_k2(li, lt, le, filt, pred, g_init, g_trans, g_emit):  # pragma: no cover
    """Two-regime value and gradient of one unit with every quantity in registers.

    Returns ``(loglik, ok)``; ``ok`` is False (and nothing is written to the
    gradients) when a step needs the exact log-space path of the general
    kernel (an impossible observation, NaN, or an underflowing scale), in which
    case the caller reruns the unit there.
    """
    n_steps = le.shape[0]
    ta = lt.shape[0]
    a00 = np.exp(lt[0, 0, 0])
    a01 = np.exp(lt[0, 0, 1])
    a10 = np.exp(lt[0, 1, 0])
    a11 = np.exp(lt[0, 1, 1])
    p0 = np.exp(li[0])
    p1 = np.exp(li[1])
    f0 = 0.0
    f1 = 0.0
    total = 0.0
    prod = 1.0
    for t in range(n_steps):
        if t > 0:
            if ta > 1:
                a00 = np.exp(lt[t, 0, 0])
                a01 = np.exp(lt[t, 0, 1])
                a10 = np.exp(lt[t, 1, 0])
                a11 = np.exp(lt[t, 1, 1])
            p0 = f0 * a00 + f1 * a10
            p1 = f0 * a01 + f1 * a11
        e0 = le[t, 0]
        e1 = le[t, 1]
        if p0 > 0.0 and p1 > 0.0:
            if e0 >= e1:
                m = e0
                w0 = p0
                w1 = p1 * np.exp(e1 - e0)
            else:
                m = e1
                w0 = p0 * np.exp(e0 - e1)
                w1 = p1
        elif p0 > 0.0:
            m = e0
            w0 = p0
            w1 = 0.0
        elif p1 > 0.0:
            m = e1
            w0 = 0.0
            w1 = p1
        else:
            return np.nan, False
        s = w0 + w1
        if not (s > 1e-280 and s < np.inf and np.abs(m) < np.inf):
            return np.nan, False
        inv = 1.0 / s
        f0 = w0 * inv
        f1 = w1 * inv
        filt[t, 0] = f0
        filt[t, 1] = f1
        pred[t, 0] = p0
        pred[t, 1] = p1
        total += m
        prod *= s
        if prod < 1e-250:
            total += np.log(prod)
            prod = 1.0
    total += np.log(prod)
    s0 = filt[n_steps - 1, 0]
    s1 = filt[n_steps - 1, 1]
    g_emit[n_steps - 1, 0] = s0
    g_emit[n_steps - 1, 1] = s1
    c00 = 0.0
    c01 = 0.0
    c10 = 0.0
    c11 = 0.0
    for t in range(n_steps - 2, -1, -1):
        if ta > 1:
            a00 = np.exp(lt[t + 1, 0, 0])
            a01 = np.exp(lt[t + 1, 0, 1])
            a10 = np.exp(lt[t + 1, 1, 0])
            a11 = np.exp(lt[t + 1, 1, 1])
        q0 = pred[t + 1, 0]
        q1 = pred[t + 1, 1]
        r0 = s0 / q0 if q0 > 0.0 else 0.0
        r1 = s1 / q1 if q1 > 0.0 else 0.0
        x0 = filt[t, 0]
        x1 = filt[t, 1]
        x00 = x0 * a00 * r0
        x01 = x0 * a01 * r1
        x10 = x1 * a10 * r0
        x11 = x1 * a11 * r1
        if ta > 1:
            g_trans[t + 1, 0, 0] = x00
            g_trans[t + 1, 0, 1] = x01
            g_trans[t + 1, 1, 0] = x10
            g_trans[t + 1, 1, 1] = x11
        else:
            c00 += x00
            c01 += x01
            c10 += x10
            c11 += x11
        s0 = x00 + x01
        s1 = x10 + x11
        g_emit[t, 0] = s0
        g_emit[t, 1] = s1
    if ta == 1:
        g_trans[0, 0, 0] = c00
        g_trans[0, 0, 1] = c01
        g_trans[0, 1, 0] = c10
        g_trans[0, 1, 1] = c11
    g_init[0] = s0
    g_init[1] = s1
    return total, True


@numba.njit(cache=True, nogil=True)
def _loglike_and_grad(log_init, log_trans, log_emit):  # pragma: no cover
    """Value and analytic gradient, one forward and one backward pass.

    Returns ``loglik (U,)``, ``g_init (U, K)``, ``g_trans (U, Ta, K, K)``,
    ``g_emit (U, T, K)``; the caller reduces over broadcast axes.
    """
    n_units, n_steps, k = log_emit.shape
    ui = log_init.shape[0]
    ua, ta = log_trans.shape[0], log_trans.shape[1]
    loglik = np.empty(n_units)
    g_init = np.zeros((n_units, k))
    g_trans = np.zeros((n_units, ta, k, k))
    g_emit = np.empty((n_units, n_steps, k))
    filt = np.empty((n_steps, k))
    pred = np.empty((n_steps, k))
    no_logc = np.empty(0)
    no_pair = np.empty((0, k, k))
    for u in range(n_units):
        li = log_init[u if ui > 1 else 0]
        lt = log_trans[u if ua > 1 else 0]
        if k == 2:
            total, ok = _loglike_and_grad_unit_k2(
                li, lt, log_emit[u], filt, pred, g_init[u], g_trans[u], g_emit[u]
            )
            if ok:
                loglik[u] = total
                continue
        total = _forward_unit(li, lt, log_emit[u], filt, pred, no_logc)
        loglik[u] = total
        if not np.isfinite(total):
            # No gradient where the likelihood is zero; the sampler rejects.
            for t in range(n_steps):
                for j in range(k):
                    g_emit[u, t, j] = 0.0
            continue
        _backward_unit(lt, filt, pred, g_emit[u], no_pair, g_trans[u])
        for j in range(k):
            g_init[u, j] = g_emit[u, 0, j]
    if ta > 1:
        # Entry t = 0 is unused and the accumulator was indexed by t.
        for u in range(n_units):
            for i in range(k):
                for j in range(k):
                    g_trans[u, 0, i, j] = 0.0
    return loglik, g_init, g_trans, g_emit


@numba.njit(cache=True, nogil=True)
def _forward_backward(log_init, log_trans, log_emit):  # pragma: no cover
    n_units, n_steps, k = log_emit.shape
    ui = log_init.shape[0]
    ua = log_trans.shape[0]
    logc = np.empty((n_units, n_steps))
    filt = np.empty((n_units, n_steps, k))
    smooth = np.empty((n_units, n_steps, k))
    pair = np.zeros((n_units, max(n_steps - 1, 0), k, k))
    pred = np.empty((n_steps, k))
    dummy = np.empty((1, k, k))
    for u in range(n_units):
        lt = log_trans[u if ua > 1 else 0]
        _forward_unit(log_init[u if ui > 1 else 0], lt, log_emit[u], filt[u], pred, logc[u])
        if n_steps > 1:
            _backward_unit(lt, filt[u], pred, smooth[u], pair[u], dummy)
        else:
            # A loop, not smooth[u] = filt[u]: numba's array assignment (with
            # its shape-mismatch error path) added 2 s to a cold compile.
            for j in range(k):
                smooth[u, 0, j] = filt[u, 0, j]
    return logc, filt, smooth, pair


@numba.njit(cache=True, nogil=True)
def _ffbs(log_init, log_trans, log_emit, uniforms):  # pragma: no cover
    """Forward filtering, backward sampling; ``uniforms`` is (n, U, T)."""
    n_draws = uniforms.shape[0]
    n_units, n_steps, k = log_emit.shape
    ui = log_init.shape[0]
    ua, ta = log_trans.shape[0], log_trans.shape[1]
    out = np.empty((n_draws, n_units, n_steps), dtype=np.int64)
    filt = np.empty((n_steps, k))
    pred = np.empty((n_steps, k))
    logc = np.empty(n_steps)
    w = np.empty(k)
    for u in range(n_units):
        lt = log_trans[u if ua > 1 else 0]
        _forward_unit(log_init[u if ui > 1 else 0], lt, log_emit[u], filt, pred, logc)
        for d in range(n_draws):
            nxt = -1
            for t in range(n_steps - 1, -1, -1):
                s = 0.0
                for i in range(k):
                    if nxt < 0:
                        w[i] = filt[t, i]
                    else:
                        w[i] = filt[t, i] * np.exp(lt[t + 1 if ta > 1 else 0, i, nxt])
                    s += w[i]
                x = uniforms[d, u, t] * s
                c = 0.0
                choice = k - 1
                for i in range(k):
                    c += w[i]
                    if x < c and w[i] > 0.0:
                        choice = i
                        break
                # Guard against rounding picking a zero-weight state.
                while w[choice] <= 0.0 and choice > 0:
                    choice -= 1
                out[d, u, t] = choice
                nxt = choice
    return out


@numba.njit(cache=True, nogil=True)
def _viterbi(log_init, log_trans, log_emit):  # pragma: no cover
    n_units, n_steps, k = log_emit.shape
    ui = log_init.shape[0]
    ua, ta = log_trans.shape[0], log_trans.shape[1]
    out = np.empty((n_units, n_steps), dtype=np.int64)
    score = np.empty(k)
    new = np.empty(k)
    back = np.empty((n_steps, k), dtype=np.int64)
    for u in range(n_units):
        lt = log_trans[u if ua > 1 else 0]
        li = log_init[u if ui > 1 else 0]
        for j in range(k):
            score[j] = li[j] + log_emit[u, 0, j]
        for t in range(1, n_steps):
            tt = t if ta > 1 else 0
            for j in range(k):
                best = -np.inf
                arg = 0
                for i in range(k):
                    v = score[i] + lt[tt, i, j]
                    if v > best:
                        best = v
                        arg = i
                new[j] = best + log_emit[u, t, j]
                back[t, j] = arg
            for j in range(k):
                score[j] = new[j]
        arg = 0
        for j in range(1, k):
            if score[j] > score[arg]:
                arg = j
        out[u, n_steps - 1] = arg
        for t in range(n_steps - 1, 0, -1):
            arg = back[t, arg]
            out[u, t - 1] = arg
    return out


@numba.njit(cache=True, nogil=True)
def _check_op_shapes(
    log_init, log_trans, log_emit, init_broadcasts, trans_broadcasts
):  # pragma: no cover
    """Shape checks the Op makes at run time; the kernels index without bounds checks.

    A unit axis of length 1 broadcasts only where it is statically 1, as in
    PyTensor's own broadcasting: otherwise the gradient would come back with the
    wrong shape.
    """
    n_units, n_steps, k = log_emit.shape
    if k < 2:
        raise KernelInputError("log_emit: need at least 2 regimes in the last axis")
    if n_steps < 1:
        raise KernelInputError("log_emit: need at least 1 time step")
    if log_init.shape[1] != k:
        raise KernelInputError("log_init: last axis must have log_emit's number of regimes")
    if log_trans.shape[2] != k or log_trans.shape[3] != k:
        raise KernelInputError("log_trans: last two axes must have log_emit's number of regimes")
    if log_init.shape[0] != n_units and not (init_broadcasts and log_init.shape[0] == 1):
        raise KernelInputError(
            "log_init: unit axis must match log_emit's (length 1 broadcasts only when static)"
        )
    if log_trans.shape[0] != n_units and not (trans_broadcasts and log_trans.shape[0] == 1):
        raise KernelInputError(
            "log_trans: unit axis must match log_emit's (length 1 broadcasts only when static)"
        )
    if log_trans.shape[1] != 1 and log_trans.shape[1] != n_steps:
        raise KernelInputError("log_trans: time axis must have length 1 or log_emit's")


@numba.njit(cache=True, nogil=True)
def _checked_loglike_and_grad(
    log_init, log_trans, log_emit, init_broadcasts, trans_broadcasts
):  # pragma: no cover
    _check_op_shapes(log_init, log_trans, log_emit, init_broadcasts, trans_broadcasts)
    return _loglike_and_grad(log_init, log_trans, log_emit)


# --------------------------------------------------------------------------
# NumPy API with validation at the boundary
# --------------------------------------------------------------------------


def _standardise(
    log_init: ArrayLike, log_trans: ArrayLike, log_emit: ArrayLike, *, validate: bool = True
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Bring inputs to (Ui, K), (Ua, Ta, K, K), (U, T, K) float64 arrays."""
    le = np.asarray(log_emit, dtype=np.float64)
    li = np.asarray(log_init, dtype=np.float64)
    lt = np.asarray(log_trans, dtype=np.float64)
    if le.ndim == 2:
        le = le[None]
    if le.ndim != 3:
        raise KernelInputError(
            "log_emit must have dims (unit, time, regime) or (time, regime); "
            f"found shape {le.shape}"
        )
    n_units, n_steps, k = le.shape
    if li.ndim == 1:
        li = li[None]
    if lt.ndim == 2:
        lt = lt[None, None]
    elif lt.ndim == 3:
        lt = lt[None]
    if validate:
        if k < 2:
            raise KernelInputError(f"need at least 2 regimes; log_emit has {k} in its last axis")
        if n_steps < 1:
            raise KernelInputError("log_emit has no time steps; expected at least 1")
        if li.ndim != 2 or li.shape[1] != k or li.shape[0] not in (1, n_units):
            raise KernelInputError(
                f"log_init must have shape ({k},) or (1 or {n_units}, {k}); "
                f"found {np.shape(log_init)}"
            )
        if (
            lt.ndim != 4
            or lt.shape[2:] != (k, k)
            or lt.shape[0] not in (1, n_units)
            or lt.shape[1] not in (1, n_steps)
        ):
            raise KernelInputError(
                f"log_trans must have shape ({k}, {k}), ({n_steps}, {k}, {k}) or "
                f"(1 or {n_units}, 1 or {n_steps}, {k}, {k}); found {np.shape(log_trans)}"
            )
        for name, arr in (("log_init", li), ("log_trans", lt), ("log_emit", le)):
            if np.isnan(arr).any():
                idx = tuple(int(i) for i in np.argwhere(np.isnan(arr))[0])
                raise KernelInputError(
                    f"{name} contains NaN (first at index {idx}); expected log-densities "
                    "(use 0 for a missing observation, -inf for an impossible one)"
                )
            if np.isposinf(arr).any():
                raise KernelInputError(
                    f"{name} contains +inf; expected log-probabilities <= finite"
                )
        if np.any(np.abs(np.logaddexp.reduce(li, axis=-1)) > 1e-8):
            raise KernelInputError(
                "log_init rows must be normalised log-probabilities (logsumexp = 0); "
                f"found logsumexp {np.logaddexp.reduce(li, axis=-1)}"
            )
        row = np.logaddexp.reduce(lt, axis=-1)
        rows_used = row[:, 1:] if lt.shape[1] > 1 else row
        if np.any(np.abs(rows_used) > 1e-8):
            bad = tuple(int(i) for i in np.argwhere(np.abs(rows_used) > 1e-8)[0])
            raise KernelInputError(
                "log_trans rows must sum to one in probability (logsumexp over the last axis = 0); "
                f"first bad row at index {bad} has probability sum {np.exp(rows_used[bad]):.6g}"
            )
    return np.ascontiguousarray(li), np.ascontiguousarray(lt), np.ascontiguousarray(le)


def forward_backward(
    log_init: ArrayLike, log_trans: ArrayLike, log_emit: ArrayLike
) -> ForwardBackwardResult:
    """Run the forward-backward algorithm for independent units.

    Parameters
    ----------
    log_init : array_like (regime,) or (unit, regime)
        Initial log-probabilities.
    log_trans : array_like (regime, regime), (time, regime, regime) or (unit, time, regime, regime)
        Log transition matrices; ``log_trans[u, t, i, j] = log P(S_t = j | S_(t-1) = i)``.
        A leading axis of length 1 broadcasts.  The entry at ``t = 0`` is unused.
    log_emit : array_like (time, regime) or (unit, time, regime)
        Log emission densities; a row of zeros is a missing observation.

    Returns
    -------
    ForwardBackwardResult
        Log-likelihood, predictive log-densities, filtered, smoothed and
        pairwise marginals; see the class for shapes.

    Raises
    ------
    KernelInputError
        Shapes that do not match, fewer than 2 regimes, NaN entries or
        transition rows that do not sum to one.

    Notes
    -----
    The forward pass normalises in probability space after subtracting the
    per-step maximum of the log joint, so log-densities of any magnitude (tested
    down to -1e6) and series of any length are stable.  The backward pass uses
    the filtered-smoothed (Rauch-Tung-Striebel) form, which needs no emission
    rescaling and tolerates hard zeros in the transitions.

    Examples
    --------
    >>> import numpy as np
    >>> from pathlock.hmm import forward_backward
    >>> log_A = np.log([[0.9, 0.1], [0.2, 0.8]])
    >>> log_e = np.log([[0.5, 0.1], [0.4, 0.3], [0.1, 0.6]])
    >>> res = forward_backward(np.log([0.5, 0.5]), log_A, log_e)
    >>> res.smoothed.shape
    (1, 3, 2)
    """
    li, lt, le = _standardise(log_init, log_trans, log_emit)
    logc, filt, smooth, pair = _forward_backward(li, lt, le)
    return ForwardBackwardResult(logc.sum(axis=1), logc, filt, smooth, pair)


def marginal_loglike(
    log_init: ArrayLike, log_trans: ArrayLike, log_emit: ArrayLike
) -> NDArray[np.float64]:
    """Marginal log-likelihood per unit (unit,), without the backward pass."""
    li, lt, le = _standardise(log_init, log_trans, log_emit)
    return _loglike_and_grad(li, lt, le)[0]


def sample_paths(
    log_init: ArrayLike,
    log_trans: ArrayLike,
    log_emit: ArrayLike,
    *,
    rng: np.random.Generator | int | None = None,
    n_samples: int | None = None,
) -> NDArray[np.int64]:
    """Draw regime paths from ``p(S_1..T | y)`` by forward filtering, backward sampling.

    Parameters
    ----------
    log_init, log_trans, log_emit
        As for :func:`forward_backward`.
    rng : numpy Generator or seed
        Source of randomness; the same seed gives the same paths.
    n_samples : int, optional
        Number of paths per unit.  ``None`` draws one and drops the axis.

    Returns
    -------
    ndarray of int64
        (unit, time) or (n_samples, unit, time) regime indices.
    """
    li, lt, le = _standardise(log_init, log_trans, log_emit)
    gen = np.random.default_rng(rng)
    n = 1 if n_samples is None else int(n_samples)
    if n < 1:
        raise KernelInputError(f"n_samples must be at least 1; found {n_samples}")
    out = _ffbs(li, lt, le, gen.random((n, *le.shape[:2])))
    return out[0] if n_samples is None else out


def viterbi(log_init: ArrayLike, log_trans: ArrayLike, log_emit: ArrayLike) -> NDArray[np.int64]:
    """Most probable regime path per unit, (unit, time) regime indices."""
    li, lt, le = _standardise(log_init, log_trans, log_emit)
    return _viterbi(li, lt, le)


# --------------------------------------------------------------------------
# PyTensor Op
# --------------------------------------------------------------------------


class ForwardBackwardOp(Op):
    """Marginal log-likelihood per unit with its analytic gradient.

    Inputs are ``log_init (Ui, K)``, ``log_trans (Ua, Ta, K, K)`` and
    ``log_emit (U, T, K)`` with ``Ui, Ua`` in ``{1, U}`` and ``Ta`` in
    ``{1, T}``.  Outputs are the log-likelihood ``(U,)`` and, as auxiliary
    outputs reused by :meth:`grad`, the per-unit gradients with respect to each
    input (the smoothed marginals and the pairwise marginals), so value and
    gradient come from one forward-backward pass.  Second derivatives are not
    implemented.
    """

    __props__ = ()

    def make_node(self, log_init, log_trans, log_emit) -> Apply:  # type: ignore[override]
        """Build the node; outputs are the log-likelihood and the three gradients."""
        li = pt.as_tensor_variable(log_init).astype("float64")
        lt = pt.as_tensor_variable(log_trans).astype("float64")
        le = pt.as_tensor_variable(log_emit).astype("float64")
        if li.ndim != 2 or lt.ndim != 4 or le.ndim != 3:
            raise KernelInputError(
                "ForwardBackwardOp expects log_init (unit, K), log_trans (unit, time, K, K), "
                f"log_emit (unit, time, K); found ndim {li.ndim}, {lt.ndim}, {le.ndim}. "
                "Use pathlock.hmm.hmm_loglike, which broadcasts."
            )
        u = le.type.shape[0]
        ta = lt.type.shape[1]
        k = le.type.shape[2]
        outputs = [
            pt.tensor(dtype="float64", shape=(u,)),
            pt.tensor(dtype="float64", shape=(u, k)),
            pt.tensor(dtype="float64", shape=(u, ta, k, k)),
            pt.tensor(dtype="float64", shape=le.type.shape),
        ]
        return Apply(self, [li, lt, le], outputs)

    def perform(self, node, inputs, output_storage) -> None:  # type: ignore[override]
        """Run the numba kernel (checked shapes) from Python."""
        li, lt, le = (np.ascontiguousarray(x) for x in inputs)
        init_bc, trans_bc = _static_unit_broadcast(node)
        values = _checked_loglike_and_grad(li, lt, le, init_bc, trans_bc)
        for store, value in zip(output_storage, values, strict=True):
            store[0] = value

    def infer_shape(self, node, input_shapes):  # type: ignore[override]
        """Shapes of the four outputs from the input shapes."""
        s_init, s_trans, s_emit = input_shapes
        u = s_emit[0]
        return [(u,), (u, s_init[1]), (u, s_trans[1], s_trans[2], s_trans[3]), s_emit]

    def pullback(self, inputs, outputs, cotangents):  # type: ignore[override]
        """Scale the stored marginals by each unit's cotangent; reduce broadcast axes."""
        li, lt, _ = inputs
        for g in cotangents[1:]:
            if not isinstance(g.type, DisconnectedType):
                raise NotImplementedError(
                    "ForwardBackwardOp: second derivatives are not implemented"
                )
        _, g_init, g_trans, g_emit = outputs
        gz = cotangents[0]
        d_init = g_init * gz[:, None]
        d_trans = g_trans * gz[:, None, None, None]
        d_emit = g_emit * gz[:, None, None]
        if li.type.shape[0] == 1:
            d_init = d_init.sum(axis=0, keepdims=True)
        if lt.type.shape[0] == 1:
            d_trans = d_trans.sum(axis=0, keepdims=True)
        return [d_init, d_trans, d_emit]

    def connection_pattern(self, node):  # type: ignore[override]
        """Every input reaches the log-likelihood; the gradient outputs are auxiliary."""
        return [[True, False, False, False]] * 3


forward_backward_op = ForwardBackwardOp()


def _static_unit_broadcast(node: Apply) -> tuple[bool, bool]:
    """Whether log_init's and log_trans's unit axes are statically of length 1."""
    return node.inputs[0].type.shape[0] == 1, node.inputs[1].type.shape[0] == 1


def hmm_loglike(log_init, log_trans, log_emit) -> pt.TensorVariable:
    """Symbolic marginal log-likelihood per unit, broadcasting like :func:`forward_backward`.

    Parameters
    ----------
    log_init : TensorLike (K,) or (unit, K)
    log_trans : TensorLike (K, K), (time, K, K) or (unit, time, K, K)
    log_emit : TensorLike (time, K) or (unit, time, K)

    Returns
    -------
    TensorVariable (unit,)
        Differentiable with the analytic forward-backward gradient.
    """
    li = pt.as_tensor_variable(log_init)
    lt = pt.as_tensor_variable(log_trans)
    le = pt.as_tensor_variable(log_emit)
    if le.ndim == 2:
        le = le[None]
    if li.ndim == 1:
        li = li[None]
    if lt.ndim == 2:
        lt = lt[None, None]
    elif lt.ndim == 3:
        lt = lt[None]
    # Broadcast length-1 axes must be known statically so grad can reduce them.
    li = pt.specify_broadcastable(li, 0) if li.type.shape[0] == 1 else li
    lt = pt.specify_broadcastable(lt, 0) if lt.type.shape[0] == 1 else lt
    return forward_backward_op(li, lt, le)[0]


_SOURCE_HASH = sha256(Path(__file__).read_bytes()).hexdigest()


def _register_numba() -> None:
    from pytensor.link.numba.dispatch.basic import (
        numba_njit,
        register_funcify_and_cache_key,
    )

    @register_funcify_and_cache_key(ForwardBackwardOp)
    def _funcify_forward_backward(op, node=None, **kwargs):
        init_bc, trans_bc = _static_unit_broadcast(node)

        @numba_njit
        def forward_backward_numba(log_init, log_trans, log_emit):
            return _checked_loglike_and_grad(log_init, log_trans, log_emit, init_bc, trans_bc)

        # The generated function depends on the two static flags only.
        # PyTensor caches the compiled wrapper, kernel code included, under this
        # key: it must change whenever the kernels do, or an edited hmm.py would
        # keep running the old kernel from the cache.
        key = f"pathlock.hmm.ForwardBackwardOp-{_SOURCE_HASH}-{init_bc}-{trans_bc}"
        return forward_backward_numba, sha256(key.encode()).hexdigest()


_register_numba()


# Where a log-probability is -inf (an absorbing regime's way back), the JAX
# forward pass uses this instead: exp() of it is 0 as it should be, and the
# gradient through logsumexp stays finite (with -inf it is 0 * inf = NaN). Its
# sum over many steps stays far from overflow.
_JAX_LOG_ZERO = -1e30


@functools.cache
def register_jax() -> None:
    """Give :class:`ForwardBackwardOp` to PyTensor's JAX backend (imports jax).

    Called by :func:`pathlock.compiled.compile_nutpie_jax` before it compiles,
    so that importing pathlock never imports jax. The JAX version runs the
    forward recursion of :func:`forward_backward` in log space as a
    ``lax.scan`` per unit and takes the Op's auxiliary outputs (the gradients
    with respect to each input) from ``jax.value_and_grad`` of it, so the Op's
    pullback is unchanged. Where the likelihood is exactly zero, the JAX
    version returns a log-likelihood near -1e30 (:data:`_JAX_LOG_ZERO`)
    where the numba kernel returns -inf; a sampler rejects either.
    """
    import jax
    import jax.numpy as jnp
    from jax.nn import logsumexp
    from pytensor.link.jax.dispatch import jax_funcify

    def unit_loglike(li, lt, le):
        # li (K,), lt (Ta, K, K), le (T, K); lt[t] moves t - 1 to t, lt[0] is unused.
        li, lt, le = (jnp.maximum(x, _JAX_LOG_ZERO) for x in (li, lt, le))
        trans = jnp.broadcast_to(lt, (le.shape[0], *lt.shape[1:]))

        def step(alpha, x):
            log_trans, log_emit = x
            return logsumexp(alpha[:, None] + log_trans, axis=0) + log_emit, None

        alpha, _ = jax.lax.scan(step, li + le[0], (trans[1:], le[1:]))
        return logsumexp(alpha)

    value_and_grads = jax.vmap(jax.value_and_grad(unit_loglike, argnums=(0, 1, 2)))

    @jax_funcify.register(ForwardBackwardOp)
    def _funcify_forward_backward_jax(op, node=None, **kwargs):
        def forward_backward_jax(log_init, log_trans, log_emit):
            n_units = log_emit.shape[0]
            li = jnp.broadcast_to(log_init, (n_units, *log_init.shape[1:]))
            lt = jnp.broadcast_to(log_trans, (n_units, *log_trans.shape[1:]))
            loglik, (g_init, g_trans, g_emit) = value_and_grads(li, lt, log_emit)
            return loglik, g_init, g_trans, g_emit

        return forward_backward_jax
