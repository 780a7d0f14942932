"""Constraint processes: one definition each, used symbolically and numerically.

A process maps an initial level and a sequence of *innovations* to a
constraint path.  The innovation of step ``t`` is Gaussian with mean
``mu + x_t'beta`` (``x_t'beta`` for ``ar1``) and scale ``sigma``; it is the
log-increment for ``ratchet`` and ``hysteresis`` and the additive shock for
``random_walk`` and ``ar1``.  :func:`transition` is the single one-step
definition; :func:`path` evaluates it with PyTensor (closed forms where they
exist: a cumulative sum for the ratchet and the random walk, a linear
recurrence for ``ar1``, a scan only for the nonlinear hysteresis) and
:func:`simulate_paths` with NumPy, vectorised over any leading axes (posterior
draws, scenarios).  This module knows nothing of regimes, observations,
specs or PyMC variables.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numba
import numpy as np
import pytensor
import pytensor.tensor as pt
from numpy.typing import ArrayLike, NDArray
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op

from pathlock.errors import InterventionError, SpecError

__all__ = [
    "PROCESSES",
    "ProcessName",
    "ProcessInfo",
    "LinearRecurrence",
    "linear_recurrence",
    "cumulative_sum",
    "innovation_mean",
    "transition",
    "path",
    "simulate_paths",
    "relieve",
]

ProcessName = Literal["ratchet", "hysteresis", "random_walk", "ar1"]


@dataclass(frozen=True)
class ProcessInfo:
    """What distinguishes one constraint process from another.

    Attributes
    ----------
    name : str
        ``ratchet``, ``hysteresis``, ``random_walk`` or ``ar1``.
    reversible : bool
        Whether the constraint can be relieved (an intervention may lower it).
    log_increment : bool
        Whether the innovation is a log-increment (``exp`` of it is added).
    parameters : tuple of str
        Process parameters beyond ``init``, ``mu``, ``sigma`` and ``beta``.
    """

    name: str
    reversible: bool
    log_increment: bool
    parameters: tuple[str, ...]


PROCESSES: dict[str, ProcessInfo] = {
    "ratchet": ProcessInfo("ratchet", False, True, ()),
    "hysteresis": ProcessInfo("hysteresis", True, True, ("rho", "kappa", "width", "baseline")),
    "random_walk": ProcessInfo("random_walk", True, False, ()),
    "ar1": ProcessInfo("ar1", True, False, ("phi",)),
}


def _info(process: str) -> ProcessInfo:
    try:
        return PROCESSES[process]
    except KeyError:
        raise SpecError(
            f"unknown constraint process {process!r}; allowed: {sorted(PROCESSES)}"
        ) from None


# --------------------------------------------------------------------------
# First-order linear recurrence x_t = a_t x_(t-1) + b_t as one Op
# --------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _recurrence(a, b):  # pragma: no cover - numba
    n, t_len = b.shape
    out = np.empty_like(b)
    for u in range(n):
        acc = 0.0
        for t in range(t_len):
            acc = a[u, t] * acc + b[u, t]
            out[u, t] = acc
    return out


class LinearRecurrence(Op):
    """``x[:, t] = a[:, t] * x[:, t - 1] + b[:, t]`` with ``x[:, -1] = 0``, over (unit, time).

    A scan-free first-order linear filter: O(T) numba code with a gradient that
    is the same recurrence run backwards, so nutpie's numba backend runs value
    and gradient natively.  Used for ``ar1`` paths and for the whitening of
    the latent path (:mod:`pathlock.decoupling`).
    """

    __props__ = ()

    def make_node(self, a, b) -> Apply:  # type: ignore[override]
        """Check that both inputs are (unit, time) matrices."""
        a = pt.as_tensor_variable(a).astype("float64")
        b = pt.as_tensor_variable(b).astype("float64")
        if a.ndim != 2 or b.ndim != 2:
            raise ValueError(f"LinearRecurrence expects 2-d inputs; found {a.ndim}, {b.ndim}")
        return Apply(self, [a, b], [pt.tensor(dtype="float64", shape=b.type.shape)])

    def perform(self, node, inputs, output_storage) -> None:  # type: ignore[override]
        """Run the numba recurrence."""
        a, b = inputs
        a = np.ascontiguousarray(np.broadcast_to(a, b.shape))
        output_storage[0][0] = _recurrence(a, np.ascontiguousarray(b))

    def infer_shape(self, node, input_shapes):  # type: ignore[override]
        """The output has the shape of ``b``."""
        return [input_shapes[1]]

    def pullback(self, inputs, outputs, cotangents):  # type: ignore[override]
        """The adjoint is the same recurrence run backwards in time."""
        a, b = inputs
        (x,) = outputs
        (g,) = cotangents
        a_full = pt.broadcast_to(a, b.shape)
        # Adjoint: lam_t = g_t + a_(t+1) lam_(t+1), the same filter run backwards.
        a_next = pt.concatenate([a_full[:, 1:], pt.zeros_like(a_full[:, :1])], axis=1)
        lam = linear_recurrence(a_next[:, ::-1], g[:, ::-1])[:, ::-1]
        x_prev = pt.concatenate([pt.zeros_like(x[:, :1]), x[:, :-1]], axis=1)
        d_a = lam * x_prev
        if a.type.shape[0] == 1 and b.type.shape[0] != 1:
            d_a = d_a.sum(axis=0, keepdims=True)
        if a.type.shape[1] == 1 and b.type.shape[1] != 1:
            d_a = d_a.sum(axis=1, keepdims=True)
        return [d_a, lam]


_linear_recurrence_op = LinearRecurrence()


def linear_recurrence(a: Any, b: Any) -> pt.TensorVariable:
    """Symbolic ``x_t = a_t x_(t-1) + b_t`` along the last axis of 2-d ``(unit, time)`` inputs.

    Parameters
    ----------
    a : TensorLike (unit or 1, time or 1)
        Coefficients; ``a[:, 0]`` multiplies the zero initial state.
    b : TensorLike (unit, time)
        Inputs.

    Returns
    -------
    TensorVariable (unit, time)
    """
    a = pt.as_tensor_variable(a)
    b = pt.as_tensor_variable(b)
    for axis in (0, 1):
        if a.type.shape[axis] == 1:
            a = pt.specify_broadcastable(a, axis)
    return _linear_recurrence_op(a, b)


def cumulative_sum(x: Any) -> pt.TensorVariable:
    """Symbolic ``cumsum(x, axis=1)`` of a 2-d ``(unit, time)`` input, as a linear recurrence.

    PyTensor's numba ``CumOp`` runs a matrix's second axis as a loop over
    slices that allocates at every step: at T = 1000, value and gradient took
    55 us against 10 us here (``benchmarks/bench_gradient.py``), and the
    latent path needs two of them per gradient evaluation. Upstream,
    pymc-devs/pytensor#1388 reports ``cumsum`` slow in sampling too; once
    ``CumOp`` is fixed there, this can go back to ``pt.cumsum``.
    """
    return linear_recurrence(np.ones((1, 1)), x)


def _register_numba() -> None:
    from pytensor.link.numba.dispatch.basic import (
        numba_njit,
        register_funcify_default_op_cache_key,
    )

    @register_funcify_default_op_cache_key(LinearRecurrence)
    def _funcify_recurrence(op, node=None, **kwargs):
        @numba_njit
        def recurrence_numba(a, b):
            a_full = np.empty_like(b)
            a_full[:] = a
            return _recurrence(a_full, b)

        return recurrence_numba


_register_numba()


@functools.cache
def register_jax() -> None:
    """Give :class:`LinearRecurrence` to PyTensor's JAX backend (imports jax).

    Called by :func:`pathlock.compiled.compile_nutpie_jax` before it compiles,
    so that importing pathlock never imports jax. The recurrence is a
    ``lax.scan`` over time carrying one value per unit; its gradient is the
    Op's own pullback, the same scan run backwards.
    """
    import jax
    import jax.numpy as jnp
    from pytensor.link.jax.dispatch import jax_funcify

    def step(acc, ab):
        acc = ab[0] * acc + ab[1]
        return acc, acc

    @jax_funcify.register(LinearRecurrence)
    def _funcify_recurrence_jax(op, node=None, **kwargs):
        def recurrence_jax(a, b):
            a_full = jnp.broadcast_to(a, b.shape)
            _, path = jax.lax.scan(step, jnp.zeros(b.shape[0], b.dtype), (a_full.T, b.T))
            return path.T

        return recurrence_jax


# --------------------------------------------------------------------------
# The one definition of each process
# --------------------------------------------------------------------------


def innovation_mean(process: str, params: Mapping[str, Any], exposures: Any = None, xp=np):
    """Mean of the innovations: ``mu + x_t'beta``; ``x_t'beta`` for ``ar1`` (``mu`` is its level).

    Parameters
    ----------
    process : str
    params : mapping
        ``mu`` (...,) and, with exposures, ``beta`` (..., exposure).
    exposures : array (..., time, exposure), optional
    xp : module
        ``numpy`` or ``pytensor.tensor``.
    """
    info = _info(process)
    mu = params["mu"]
    base = 0.0 * mu if info.name == "ar1" else mu
    if exposures is None:
        return base
    beta = params["beta"]
    return xp.expand_dims(base, -1) + (exposures * xp.expand_dims(beta, -2)).sum(axis=-1)


def transition(process: str, prev: Any, innovation: Any, params: Mapping[str, Any], xp=np):
    """One step of the constraint: ``C_t`` from ``C_(t-1)`` and the innovation of step ``t``.

    Parameters
    ----------
    process : {"ratchet", "hysteresis", "random_walk", "ar1"}
    prev : array or TensorVariable
        ``C_(t-1)``.
    innovation : array or TensorVariable
        The step's innovation (a log-increment for ``ratchet`` and ``hysteresis``).
    params : mapping
        Process parameters broadcastable against ``prev``: ``mu`` (``ar1`` level),
        ``phi`` (``ar1``), ``rho``, ``kappa``, ``width``, ``baseline`` (``hysteresis``).
    xp : module
        ``numpy`` or ``pytensor.tensor``: the same formula serves both.

    Notes
    -----
    - ratchet: ``C_t = C_(t-1) + exp(l_t)``
    - hysteresis: ``C_t = C_(t-1) + exp(l_t) - rho * sigmoid((kappa - C_(t-1)) / width)
      * (C_(t-1) - baseline)``: recovery toward the baseline that switches off
      smoothly once the constraint passes ``kappa``
    - random_walk: ``C_t = C_(t-1) + e_t``
    - ar1: ``C_t = mu + phi (C_(t-1) - mu) + e_t``
    """
    name = _info(process).name
    if name == "ratchet":
        return prev + xp.exp(innovation)
    if name == "random_walk":
        return prev + innovation
    if name == "ar1":
        return params["mu"] + params["phi"] * (prev - params["mu"]) + innovation
    switch = 1.0 / (1.0 + xp.exp((prev - params["kappa"]) / params["width"]))
    recovery = params["rho"] * switch * (prev - params["baseline"])
    return prev + xp.exp(innovation) - recovery


def path(process: str, init: Any, innovations: Any, params: Mapping[str, Any]) -> pt.TensorVariable:
    """Symbolic constraint path (unit, time) from ``init`` (unit,) and innovations (unit, time - 1).

    Parameters
    ----------
    process : str
    init : TensorLike (unit,)
        The constraint at the first time point.
    innovations : TensorLike (unit, time - 1)
    params : mapping of TensorLike, each (unit,) or scalar
        As for :func:`transition`.

    Returns
    -------
    TensorVariable (unit, time)
    """
    name = _info(process).name
    init = pt.as_tensor_variable(init)
    innovations = pt.as_tensor_variable(innovations)
    if name in ("ratchet", "random_walk"):
        steps = pt.exp(innovations) if name == "ratchet" else innovations
        return pt.concatenate([init[:, None], init[:, None] + cumulative_sum(steps)], axis=1)
    if name == "ar1":
        phi = pt.as_tensor_variable(params["phi"])
        mu = pt.as_tensor_variable(params["mu"])
        phi_u = pt.broadcast_to(phi, init.shape)[:, None]
        mu_u = pt.broadcast_to(mu, init.shape)[:, None]
        a = pt.concatenate([pt.zeros_like(phi_u), pt.broadcast_to(phi_u, innovations.shape)], 1)
        b = pt.concatenate([init[:, None], mu_u * (1.0 - phi_u) + innovations], axis=1)
        return linear_recurrence(a, b)
    sym = {k: pt.as_tensor_variable(params[k]) for k in ("rho", "kappa", "width", "baseline")}

    def _step(innov, prev, rho, kappa, width, baseline):
        return transition(
            name,
            prev,
            innov,
            {"rho": rho, "kappa": kappa, "width": width, "baseline": baseline},
            pt,
        )

    seq = pytensor.scan(
        _step,
        sequences=[innovations.T],
        outputs_info=[init],
        non_sequences=[sym["rho"], sym["kappa"], sym["width"], sym["baseline"]],
        return_updates=False,
    )
    return pt.concatenate([init[:, None], seq.T], axis=1)


def simulate_paths(
    process: str,
    params: Mapping[str, ArrayLike],
    shocks: ArrayLike,
    *,
    init: ArrayLike,
    exposures: ArrayLike | None = None,
    relief: ArrayLike | None = None,
) -> NDArray[np.float64]:
    """Numeric constraint paths, vectorised over any leading axes.

    Parameters
    ----------
    process : {"ratchet", "hysteresis", "random_walk", "ar1"}
    params : mapping of array_like
        ``mu``, ``sigma`` (...,), ``beta`` (..., exposure) when ``exposures`` is
        given, and the process's own parameters (see :data:`PROCESSES`); leading
        axes broadcast against ``shocks``' leading axes.
    shocks : array_like (..., n_steps)
        Standard-normal shocks; the innovation of step ``t`` is
        ``mean_t + sigma * shocks[..., t]``.  Common random numbers across
        scenarios come from passing the same shocks.
    init : array_like (...,)
        The constraint before the first shock (the state at the start).
    exposures : array_like (..., n_steps, exposure), optional
        Exposures driving each step; a scenario that reduces exposures from
        ``tau`` passes them modified from ``tau`` on.
    relief : array_like (..., n_steps), optional
        Amount by which an intervention lowers the constraint right after each
        step.  Refused for the ratchet.

    Returns
    -------
    ndarray (..., n_steps)
        ``C_1 .. C_n`` after each shock (the initial state is not repeated).

    Raises
    ------
    InterventionError
        A non-zero ``relief`` for a ratchet.
    """
    info = _info(process)
    shocks = np.asarray(shocks, dtype=float)
    p = {k: np.asarray(v, dtype=float) for k, v in params.items()}
    mean = innovation_mean(info.name, p, None if exposures is None else np.asarray(exposures))
    mean = (
        np.broadcast_to(np.asarray(mean, dtype=float)[..., None], shocks.shape)
        if np.ndim(mean) < shocks.ndim
        else np.broadcast_to(mean, shocks.shape)
    )
    innov = mean + p["sigma"][..., None] * shocks
    if relief is not None:
        relief = np.broadcast_to(np.asarray(relief, dtype=float), shocks.shape)
        if np.any(relief != 0.0):
            relieve(info.name, 0.0, 1.0, p)
    step_params = {k: v for k, v in p.items() if k in ("mu", *info.parameters)}
    state = np.broadcast_to(np.asarray(init, dtype=float), shocks.shape[:-1]).copy()
    out = np.empty(shocks.shape)
    with np.errstate(over="ignore"):
        for t in range(shocks.shape[-1]):
            state = transition(info.name, state, innov[..., t], step_params, np)
            if relief is not None:
                state = relieve(info.name, state, relief[..., t], p)
            out[..., t] = state
    return out


def relieve(process: str, constraint: ArrayLike, amount: ArrayLike, params: Mapping[str, Any]):
    """Lower the constraint by ``amount`` (an intervention), where the process allows it.

    Parameters
    ----------
    process : str
    constraint : array_like
        Current level.
    amount : array_like
        Non-negative relief.
    params : mapping
        Process parameters; for ``hysteresis`` the constraint is not pushed below ``baseline``.

    Returns
    -------
    ndarray
        The relieved constraint.

    Raises
    ------
    InterventionError
        For a ratchet, whose constraint never decreases: relief cannot be
        represented and is refused rather than faked.
    """
    info = _info(process)
    if not info.reversible:
        raise InterventionError(
            f"cannot relieve the constraint of a {info.name!r} process: it never decreases by "
            "construction; model the intervention as reduced exposures, or use a reversible "
            "process ('hysteresis', 'random_walk', 'ar1')"
        )
    new = np.asarray(constraint, dtype=float) - np.asarray(amount, dtype=float)
    if info.name == "hysteresis":
        new = np.maximum(new, np.asarray(params["baseline"], dtype=float))
    return new
