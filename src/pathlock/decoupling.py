"""The decoupling model's PyMC graph: spec + validated data -> :class:`~pathlock.build.Built`.

This module is the one place that creates the decoupling model's PyMC
variables and names them ``{component}_{param}`` as in
:data:`pathlock.spec.PARAMETERS`.  It wires the constraint process
(:mod:`pathlock.processes`), the regime transitions (:mod:`pathlock.regimes`)
and the emission families (:mod:`pathlock.observations`) into the
forward-backward kernel (:func:`pathlock.hmm.hmm_loglike`), and chooses the
parameterisation of the latent path (see :func:`build`, Notes).  It does not
parse specs or data and does not sample.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
from numpy.typing import ArrayLike, NDArray
from pymc.distributions.distribution import support_point
from pytensor.graph.replace import graph_replace
from pytensor.graph.traversal import ancestors
from scipy.ndimage import uniform_filter1d
from scipy.optimize import isotonic_regression
from scipy.special import logit
from scipy.stats import norm

from pathlock import dims
from pathlock.build import Built
from pathlock.errors import SpecError
from pathlock.hmm import hmm_loglike, marginal_loglike
from pathlock.observations import log_density
from pathlock.processes import (
    PROCESSES,
    cumulative_sum,
    innovation_mean,
    linear_recurrence,
    path,
)
from pathlock.regimes import (
    hazard_logits,
    hold_tracking,
    log_init_first,
    log_init_free,
    log_trans_constant,
    log_trans_hazard,
)
from pathlock.spec import Fixed

if TYPE_CHECKING:
    from pathlock.data import DecouplingData
    from pathlock.spec import Spec

__all__ = ["build", "indicator_jumps", "loglike", "Pilot", "pilot", "resolved_parameterization"]

_COUNT = ("poisson", "negative_binomial")
#: The relative step below which :func:`_bend` turns from linear to exponential in ``y``.
_STEP_FLOOR = 0.3
#: The whitening of a log-increment path takes the steps' prior precision to be this
#: many times the linearised ``1 / (d sigma)^2`` (see :func:`_latent_path`).
_LOG_STEP_PRIOR_WEIGHT = 4.0
#: ``auto`` takes a ratchet path ``partial`` where a unit's first indicator has a step that
#: normal differences would reach with this probability over the whole series.
_JUMP_LEVEL = 1e-3


# --------------------------------------------------------------------------
# Pilot estimates for the data-centred parameterisation
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Pilot:
    """Data-derived reference values of the latent path, per unit (constants of the graph).

    Attributes
    ----------
    level : ndarray (unit,)
        Reference constraint at the first time step (``ar1``: the mean level).
    step : ndarray (unit,)
        Reference increment per step (positive for ``ratchet`` / ``hysteresis``).
    innovation : ndarray (unit,)
        Reference innovation: ``log(step)`` for log-increment processes,
        ``step`` for ``random_walk``, 0 for ``ar1``.
    scale : ndarray (unit,)
        Derivative of the increment with respect to the innovation at the
        reference (``step`` for log-increments, else 1).
    """

    level: NDArray[np.float64]
    step: NDArray[np.float64]
    innovation: NDArray[np.float64]
    scale: NDArray[np.float64]


def _link_scale(values: Any, family: str) -> NDArray[np.float64]:
    """Observations on the scale of their linear predictor: counts as ``log(y + 0.5)``."""
    values = np.asarray(values, dtype=float)
    return np.log(values + 0.5) if family in _COUNT else values


def pilot(process: str, first_indicator: NDArray[np.float64], family: str) -> Pilot:
    """Reference path from the first indicator (loading 1, intercept 0), unit by unit.

    Parameters
    ----------
    process : str
    first_indicator : ndarray (unit, time)
        NaN where missing.
    family : str
        Its family; counts are moved to the log scale (``log(y + 0.5)``).

    Returns
    -------
    Pilot
    """
    z = _link_scale(first_indicator, family)
    n_units, _n_steps = z.shape
    level = np.zeros(n_units)
    step = np.zeros(n_units)
    for u in range(n_units):
        obs = np.flatnonzero(~np.isnan(z[u]))
        if obs.size == 0:
            continue
        head, tail = obs[: max(1, min(5, obs.size // 4))], obs[-max(1, min(5, obs.size // 4)) :]
        level[u] = np.mean(z[u, head]) if process != "ar1" else np.mean(z[u, obs])
        span = max(np.mean(tail) - np.mean(head), 1.0)
        step[u] = (np.mean(z[u, tail]) - np.mean(z[u, head])) / span
        if process in ("ratchet", "hysteresis"):
            floor = 1e-3 * (np.std(z[u, obs]) + 1e-2)
            step[u] = max(step[u], floor)
    if PROCESSES[process].log_increment:
        return Pilot(level, step, np.log(step), step)
    if process == "ar1":
        return Pilot(level, step, np.zeros(n_units), np.ones(n_units))
    return Pilot(level, step, step, np.ones(n_units))


def pilot_path(process: str, link_path: NDArray[np.float64], width: int = 9) -> NDArray[np.float64]:
    """Smoothed reference path from the first indicator, unit by unit: the sampler's start.

    For an irreversible process (``ratchet``) the path is first made
    non-decreasing (isotonic regression); then it is smoothed by a centred
    moving average of ``width`` steps (edges padded with the end values).

    Parameters
    ----------
    process : str
    link_path : ndarray (unit, time)
        The first indicator on its link scale, missing values interpolated and
        zeros for a unit without observations (:func:`_link_path`).
    width : int
        Width of the moving average.

    Returns
    -------
    ndarray (unit, time)
    """
    out = np.array(link_path, dtype=float)
    for u in range(out.shape[0]):
        if not PROCESSES[process].reversible:
            out[u] = isotonic_regression(out[u]).x
        out[u] = uniform_filter1d(out[u], width, mode="nearest")
    return out


def _link_path(first_indicator: NDArray[np.float64], family: str) -> NDArray[np.float64]:
    """The first indicator on its link scale, missing values interpolated (zeros if none seen)."""
    z = _link_scale(first_indicator, family)
    out = np.zeros(z.shape, dtype=float)
    times = np.arange(z.shape[1])
    for u in range(z.shape[0]):
        seen = ~np.isnan(z[u])
        if seen.any():
            out[u] = np.interp(times, times[seen], z[u, seen])
    return out


def _indicator_noise_start(spec: Spec, data: DecouplingData) -> NDArray[np.float64]:
    """Each indicator's residual sd about its least-squares line on the pilot path.

    The sampler's start for ``indicator_sigma`` (link scale; 1 where fewer than
    three values are observed or the fit is exact).
    """
    first = spec.indicators[0]
    ref = pilot_path(spec.constraint.process, _link_path(data[first.column], first.family))
    out = np.ones(len(spec.indicators))
    for j, series in enumerate(spec.indicators):
        line = _line_fit(ref, _link_scale(data[series.column], series.family), by_unit=False)
        if line is not None and line[2] > 0:
            out[j] = line[2]
    return out


def _line_fit(
    x: NDArray[np.float64], y: NDArray[np.float64], *, by_unit: bool
) -> tuple[float, float, float] | None:
    """Least-squares line of ``y`` on ``x`` (unit, time) over the pairs both observe.

    Returns the slope, the intercept (mean of ``y - slope * x``) and the
    residual sd about that line; None where fewer than three pairs are
    observed. With ``by_unit`` both series are centred per unit, so units may
    differ in level but not in slope; otherwise they are centred once, pooled.
    The slope is 0 where ``x`` is flat.
    """
    ok = ~np.isnan(x) & ~np.isnan(y)
    if ok.sum() < 3:
        return None
    if by_unit:
        xc = x - np.nanmean(np.where(ok, x, np.nan), axis=1, keepdims=True)
        yc = y - np.nanmean(np.where(ok, y, np.nan), axis=1, keepdims=True)
    else:
        xc, yc = x - x[ok].mean(), y - y[ok].mean()
    sxx = np.sum(np.where(ok, xc * xc, 0.0))
    slope = np.sum(np.where(ok, xc * yc, 0.0)) / sxx if sxx > 0 else 0.0
    resid = (y - slope * x)[ok]
    return float(slope), float(resid.mean()), float(resid.std())


def feedback_pilot(
    spec: Spec, data: DecouplingData, window: str = "tracking"
) -> NDArray[np.float64]:
    """Reference loading of each feedback signal: its slope on the first indicator.

    Least squares over the steps held in ``tracking`` (``known_tracking``, when
    at least 3), else over the first half of every unit's series (pooled),
    where the feedback still tracks if it ever did (regimes start in
    ``tracking``); counts on the log scale.  Used only as the sampler's starting value of
    ``feedback_b``, in every chain (it is not jittered): started anywhere
    near 0, a chain can settle in the mode where the feedback is unrelated to
    the constraint, decoupling comes early and the intercepts carry the switch
    (the default run's data: 2 of 4 seeds had one such chain, with feedback
    noise 0.55 against 0.29 in the others, when ``feedback_b`` was jittered).

    ``window="late"`` fits the second half of every unit's series instead:
    the slope where a decoupling, if there was one, shows most (the loading
    shear's reference, see :func:`_loadings`).

    Returns
    -------
    ndarray (signal,)
        0 where fewer than three pairs are observed or the indicator is flat.
    """
    return _feedback_fit(spec, data, window)[0]


def _feedback_fit(
    spec: Spec, data: DecouplingData, window: str
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Slope, intercept and residual sd of each feedback signal on the first indicator.

    The least-squares fit of :func:`feedback_pilot` over ``window``; the
    intercept is the pooled mean of ``feedback - slope * indicator`` and the
    residual sd is taken about that line (both on the link scale). Signals
    with fewer than three observed pairs get slope 0, intercept 0 and sd 1.
    """
    first = spec.indicators[0]
    x = _link_scale(data[first.column], first.family)
    # At T = 1000 the first half was mostly decoupled: the slope came out at the
    # decoupled loading (0.2 for 1.0) and two chains of four stayed in that mode.
    held = spec.regimes.known_tracking
    n_fit = held if held >= 3 else max(2, data.n_steps // 2)
    rows = slice(data.n_steps // 2, None) if window == "late" else slice(None, n_fit)
    n_sig = len(spec.feedback)
    slope, intercept, scale = np.zeros(n_sig), np.zeros(n_sig), np.ones(n_sig)
    for m, series in enumerate(spec.feedback):
        y = _link_scale(data[series.column], series.family)
        line = _line_fit(x[:, rows], y[:, rows], by_unit=True)
        if line is None:
            continue
        slope[m], intercept[m] = line[:2]
        if line[2] > 0:
            scale[m] = line[2]
    return slope, intercept, scale


# --------------------------------------------------------------------------
# Data as shared variables
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Observed:
    """One observed series in the graph: valid values and, if any are missing, the mask."""

    values: pt.TensorVariable
    missing: pt.TensorVariable | None


def _observed(data: DecouplingData, column: str) -> _Observed:
    """``pm.Data`` for one column: ``data_{column}`` (NaN filled with 0), ``missing_{column}``.

    Every data-dependent value of the graph is a ``pm.Data``, so one compiled
    model serves every data set of the same shape (see ``pathlock.fit``); the
    mask exists only where something is missing.
    """
    y = np.asarray(data[column], dtype=float)
    mask = np.isnan(y)
    values = _series_data(f"data_{column}", np.where(mask, 0.0, y))
    missing = _series_data(f"missing_{column}", mask) if mask.any() else None
    return _Observed(values, missing)


def _series_data(name: str, value: ArrayLike) -> Any:
    """``pm.Data`` of a (unit, time, ...) array whose time axis alone has no static length.

    The time axis's length is read at run time (``Built.run_time_dims``); the
    others are part of the graph's structure, and with their lengths static
    PyTensor broadcasts against them without run-time checks. At T = 200 that
    took a cold compile from 105 s to 97 s and a gradient from 68 to 62 us
    (benchmarks/README.md).
    """
    value = np.asarray(value)
    return pm.Data(name, value, shape=(value.shape[0], None, *value.shape[2:]))


# --------------------------------------------------------------------------
# Variable creation helpers
# --------------------------------------------------------------------------


def _dist(prior: Any) -> Any:
    """An unnamed PyMC distribution from a spec prior (for logp of derived quantities)."""
    cls = getattr(pm, prior.dist)
    return cls.dist(**{k: np.asarray(v, dtype=float) for k, v in prior.kwargs.items()})


def indicator_jumps(spec: Spec, data: DecouplingData) -> NDArray[np.int64]:
    """Per unit, how many steps of the first indicator are jumps.

    The differences between consecutive observed values of the first
    indicator (link scale; a step next to a missing value is skipped, so
    masked or interpolated stretches add no zeros) are standardised by their
    median and robust standard deviation (1.4826 times the median absolute
    deviation).  A jump is one above ``z_n``, the level that the largest of
    ``n`` independent normal differences passes with probability
    :data:`_JUMP_LEVEL` (4.30 for n = 119, 4.75 for n = 999).  Where the
    steps are small against the indicator noise the differences are close to
    normal; on the default truth the largest standardised difference was at
    most 4.7 in 300 series of T = 120 (4.0 in 99 %) and 4.5 in 100 of
    T = 1000.
    """
    first = spec.indicators[0]
    z = _link_scale(data[first.column], first.family)
    out = np.zeros(z.shape[0], dtype=np.int64)
    for u in range(z.shape[0]):
        diffs = np.diff(z[u])
        diffs = diffs[np.isfinite(diffs)]
        if diffs.size < 3:
            continue
        centre = np.median(diffs)
        spread = 1.4826 * np.median(np.abs(diffs - centre))
        if spread > 0:
            out[u] = int(np.sum((diffs - centre) / spread > norm.isf(_JUMP_LEVEL / diffs.size)))
    return out


def resolved_parameterization(spec: Spec, data: DecouplingData) -> str:
    """The parameterisation of the latent path that ``build`` uses for ``data``.

    ``auto`` resolves to ``data_centered`` for ``ar1`` and ``hysteresis``, and
    to ``whitened`` for ``random_walk`` and ``ratchet``, except a ratchet
    whose first indicator shows jumps in some unit (:func:`indicator_jumps`):
    ``partial``. The whitening linearises the path about the median step, and
    steps that the indicators resolve, tens of times that, sat on a ridge
    with ``constraint_sigma`` there (its bulk ESS 7-82 of 2000 at T = 120,
    benchmarks/README.md, "Bursty steps").
    """
    mode = spec.constraint.parameterization
    if mode != "auto":
        return mode
    process = spec.constraint.process
    if process == "ratchet" and indicator_jumps(spec, data).any():
        return "partial"
    if process in ("ratchet", "random_walk"):
        return "whitened"
    return "data_centered"


def _whitened(spec: Spec, data: DecouplingData) -> bool:
    """Whether the latent path is sampled whitened (see ``build``)."""
    return resolved_parameterization(spec, data) == "whitened"


def _sigma_start(spec: Spec, data: DecouplingData) -> float | None:
    """Starting ``constraint_sigma``: half its prior's support point (0.5 by default).

    It is not jittered (the path's data start is computed at it), and chains
    started at the support point itself (1.0) stalled at ``sigma`` 0.8 with
    hundreds of divergences on the bundled demo data in two seeds of three.
    """
    prior = spec.prior("constraint_sigma")
    if _is_fixed(prior) or not _whitened(spec, data):
        return None
    return 0.5 * float(support_point(_dist(prior)).eval())


def _is_fixed(prior: Any) -> bool:
    return isinstance(prior, Fixed)


def _const(prior: Any, shape: tuple[int, ...]) -> pt.TensorVariable:
    return pt.as_tensor_variable(np.broadcast_to(np.asarray(prior.value, dtype=float), shape))


def _param(
    spec: Spec,
    name: str,
    model_dims: tuple[str, ...],
    shape: tuple[int, ...],
    *,
    hier: bool,
    shift: tuple[str, Any, Any] | None = None,
    initval: Any = None,
) -> pt.TensorVariable:
    """Create parameter ``name`` with its resolved prior; hierarchical ones are non-centred.

    ``initval`` is the sampler's starting value (of the population mean, if
    hierarchical).

    ``shift = (free_name, offset, initval)`` samples ``free = name + offset``
    instead of ``name`` (its population mean, if hierarchical) and keeps
    ``name``'s prior on ``free - offset``: an exact reparameterisation (unit
    Jacobian) used where ``name + offset`` is what the data identify.
    """
    prior = spec.prior(name)
    if _is_fixed(prior):
        coords = pm.modelcontext(None).coords
        if model_dims and not shape:
            # Callers give dims alone where PyMC sizes a random variable from the coords.
            shape = tuple(len(coords[d]) for d in model_dims)
        try:
            base = _const(prior, shape)
        except ValueError:
            found = np.shape(np.asarray(prior.value))
            raise SpecError(
                f"priors.{name} is fixed at a value of shape {found}; {name} has dims "
                f"{model_dims} of sizes {shape}: expected a number or an array of that shape"
            ) from None
        if hier:
            # Every unit shares the fixed value, on the unit axis callers index as for pooling.
            base = pt.broadcast_to(base, (len(coords[dims.UNIT]), *shape))
            return pm.Deterministic(name, base, dims=(dims.UNIT, *model_dims))
        return pm.Deterministic(name, base, dims=model_dims) if model_dims else base
    if shift is not None and not model_dims and not shape:
        free_name, offset, initval = shift
        target = f"{name}_pop" if hier else name
        free = pm.Flat(free_name + ("_pop" if hier else ""), initval=initval)
        pop = pm.Deterministic(target, free - offset)
        pm.Potential(f"{target}_prior", pm.logp(_dist(prior), pop))
        if not hier:
            return pop
    elif not hier:
        return _rv(name, prior, model_dims, shape, initval)
    else:
        pop = _rv(f"{name}_pop", prior, model_dims, shape, initval)
    sig_prior = spec.prior(name + "_unit_sigma")
    sig = _const(sig_prior, ()) if _is_fixed(sig_prior) else _rv(f"{name}_unit_sigma", sig_prior)
    z = pm.Normal(f"{name}_unit_z", 0.0, 1.0, dims=(dims.UNIT, *model_dims))
    return pm.Deterministic(name, pop[None] + sig * z, dims=(dims.UNIT, *model_dims))


def _rv(
    name: str,
    prior: Any,
    model_dims: tuple[str, ...] = (),
    shape: tuple[int, ...] = (),
    initval: Any = None,
) -> pt.TensorVariable:
    cls = getattr(pm, prior.dist)
    kwargs = {k: np.asarray(v, dtype=float) for k, v in prior.kwargs.items()}
    if initval is not None:
        kwargs["initval"] = initval
    if model_dims:
        return cls(name, dims=model_dims, **kwargs)
    if shape:
        return cls(name, shape=shape, **kwargs)
    return cls(name, **kwargs)


# --------------------------------------------------------------------------
# The latent path
# --------------------------------------------------------------------------


def _whitened_levels(raw, lower, upper, b_off):
    """Map free ``raw`` (unit, n) to level deviations ``q`` with precision ~ tridiag(a, -b).

    ``q = G^-T raw`` with ``G`` the stationary lower-bidiagonal Cholesky factor
    of the tridiagonal approximate posterior precision (diagonal ``a``,
    off-diagonal ``-b``); returns ``q`` and ``log |dq / d raw|`` per unit.
    ``lower = a - 2b`` and ``upper = a + 2b`` come separately because
    ``a^2 - 4 b^2`` cancels catastrophically when the prior term dominates.
    """
    g2 = _stationary_pivot(lower, upper)
    r = b_off / g2
    n = raw.shape[1]
    rhs = (raw / pt.sqrt(g2)[:, None])[:, ::-1]
    coef = pt.broadcast_to(r[:, None], rhs.shape)
    q = linear_recurrence(coef, rhs)[:, ::-1]
    return q, -0.5 * n * pt.log(g2)


def _bend(y, sigma, xp=pt):
    """Map whitened step coordinates ``y`` to standard-normal innovations ``eps``.

    The whitening treats the path as linear in ``y`` about the median step
    ``d``: a step ``d * (1 + sigma * y)``. The map makes the relative step
    ``h = exp(sigma * eps)`` exactly that wherever it is well above a floor
    ``c`` (:data:`_STEP_FLOOR`), and exponential in ``y`` below it:

        h(y) = c * softplus((1 + sigma * y) / c),   eps = log(h) / sigma.

    So ``dh/dy = sigma * sigmoid((1 + sigma * y) / c)`` never exceeds
    ``sigma``; with ``c = 0.3`` it is within 4 % of it from the median step up,
    0.86 ``sigma`` at ``h = 2c`` and 0.63 ``sigma`` at ``h = c``. Far below the
    floor ``eps`` is linear in ``y`` with slope ``1 / c``.

    Why a floor and not the log-increment's own scale: with the realised mean
    step the path is ``n exp(m) cumsum(h) / sum(h)``, so a change of ``y``
    whose effect on ``sum(h)`` does not cancel is spread over the whole series
    as a ramp. When ``dh/dy`` varies from step to step (it was ``sigma * h``
    below the median, the previous map), rough moves of ``y`` that the
    whitening treats as cheap leak into that ramp, and the data pin the ramp
    to a thousandth of its prior width at T = 1000: the posterior's stiffest
    direction (curvature 135-240 against a median 0.7) and, beside it, its
    slowest. With ``dh/dy`` constant above the floor the leak is confined to
    the few steps below it. The price is curvature ``1 / h^2`` in the steps
    between the floor and the median, which the previous map did not have.

    Returns ``eps`` and ``log(deps/dy)`` elementwise; ``xp`` is ``pt`` or ``np``.
    """
    x = (1.0 + sigma * y) / _STEP_FLOOR
    # log(softplus(x)) is x to double precision below -30, where softplus underflows
    # first; the clipped argument keeps the unused branch's gradient finite.
    if xp is np:
        log_sp = np.where(x < -30.0, x, np.log(np.logaddexp(0.0, np.maximum(x, -30.0))))
        log_sig = -np.logaddexp(0.0, -x)
    else:
        log_sp = pt.switch(x < -30.0, x, pt.log(pt.softplus(pt.maximum(x, -30.0))))
        log_sig = -pt.softplus(-x)
    log_h = np.log(_STEP_FLOOR) + log_sp
    # deps/dy = (dh/dy) / (sigma * h) = sigmoid(x) / h.
    return log_h / sigma, log_sig - log_h


def _unbend(eps: NDArray[np.float64], sigma: float) -> NDArray[np.float64]:
    """Inverse of :func:`_bend`, in closed form: ``x = log(expm1(h / c))``."""
    eps = np.asarray(eps, dtype=float)
    log_u = sigma * eps - np.log(_STEP_FLOOR)
    u = np.exp(np.minimum(log_u, 700.0))
    big = log_u > 3.0
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.where(
            big,
            u + np.log1p(-np.exp(-np.where(big, u, 1.0))),
            np.where(log_u < -30.0, log_u, np.log(np.expm1(np.minimum(u, 30.0)))),
        )
    return (_STEP_FLOOR * x - 1.0) / sigma


def _centre(resid, info, g2, r, delta, n):
    """``z`` with ``G^-1 z`` the linearised conditional mean of the levels given ``resid``.

    ``G`` is the stationary lower-bidiagonal factor (pivot ``g2``, ``G^-1`` the
    recurrence ``q_t = r q_(t-1) + x_t / g``); ``G^T G`` is the precision
    ``P`` except in its last diagonal entry, short of it by ``delta``.
    Sherman-Morrison with ``v = G^-T e_n`` (``v_t = r^(n-t) / g``) makes
    ``G^-1 z = P^-1 info resid`` exact.
    """
    coef = pt.broadcast_to(r[:, None], resid.shape)
    z = linear_recurrence(coef, (resid * (info / pt.sqrt(g2))[:, None])[:, ::-1])[:, ::-1]
    # r^k as exp(k log r): a power with a variable base and exponent costs three times more.
    powers = pt.exp(pt.log(r)[:, None] * pt.arange(n - 1, -1, -1).astype("float64")[None, :])
    v = powers / pt.sqrt(g2)[:, None]
    # u_last = e_n^T (G^T G)^-1 e_n = |v|^2; the closed form (1 - r^2n) / ((1 - r^2) g2)
    # cancels to 0 / 0 as r -> 1 (an indicator with almost no information).
    u_last = (v * v).sum(axis=1)
    return z - (delta * (v * z).sum(axis=1) / (1.0 + delta * u_last))[:, None] * v


def _pinned_levels(raw, resid, info, b_off, g2, r, n):
    """Levels ``q_1..q_n`` (deviations from the line, ``q_0 = 0``) from ``raw`` (unit, n).

    Returns ``q``, ``log |dq / d raw|`` per unit and the centring terms for
    :func:`_start_raw`. The last level has one neighbour, so ``P``'s last
    diagonal entry is ``info + kappa``.
    """
    z = _centre(resid, info, g2, r, info + b_off - g2, n)
    coef = pt.broadcast_to(r[:, None], raw.shape)
    q = linear_recurrence(coef, (raw + z) / pt.sqrt(g2)[:, None])
    return q, -0.5 * n * pt.log(g2), [z]


def _bridge_eps(raw, resid, info, b_off, g2, r, scale, sigma, n):
    """Innovations ``eps`` of a log-increment path whose end its realised mean step pins.

    With the realised mean step the path depends on ``eps`` only through
    ``eps - mean(eps)``, and its end is ``init + n exp(m)`` wherever ``raw``
    is: the data see the path's deviation from the straight line to that end
    (a bridge), and the innovations' common shift moves only ``mu``. So
    ``raw[:, :n-1]`` whitens the bridge's levels ``b`` (both ends pinned at
    zero, so ``P``'s diagonal is ``info + 2 kappa`` throughout) against
    ``resid``, the data's deviation from that line; their steps ``y =
    diff([0, b, 0]) / scale`` sum to zero and are bent (:func:`_bend`); and
    ``raw[:, n-1] = v`` is the innovations' mean, exactly:

        eps = bend(y) - mean(bend(y)) + v / sqrt(n),   v ~ N(0, 1) a priori.

    Given ``eps``, the ``y`` with ``sum(y) = 0`` and ``bend(y) = eps - delta``
    is unique (``sum(unbend(eps - delta))`` falls strictly in ``delta``), so
    this is a bijection; per unit its log-Jacobian is the bridge's whitening,
    ``-(n - 1) log(scale)``, ``sum(log bend'(y)) + log(sum(1 / bend'(y)))``
    and ``-log(n) / 2``.

    Returns ``eps`` (unit, n), the log-Jacobian per unit and the centring
    terms for :func:`_start_raw`.
    """
    nb = n - 1
    z = _centre(resid[:, :-1], info, g2, r, info + 2.0 * b_off - g2, nb)
    coef = pt.broadcast_to(r[:, None], z.shape)
    b = linear_recurrence(coef, (raw[:, :-1] + z) / pt.sqrt(g2)[:, None])
    zero = pt.zeros((raw.shape[0], 1))
    y = pt.diff(pt.concatenate([zero, b, zero], axis=1), axis=1) / scale[:, None]
    bent, log_bend = _bend(y, sigma)
    n_float = pt.cast(n, "float64")
    eps = bent - bent.mean(axis=1, keepdims=True) + raw[:, -1, None] / pt.sqrt(n_float)
    log_jac = (
        -0.5 * nb * pt.log(g2)
        - nb * pt.log(scale)
        + log_bend.sum(axis=1)
        + pt.logsumexp(-log_bend, axis=1)
        - 0.5 * pt.log(n_float)
    )
    return eps, log_jac, [z]


def _start_raw(
    level: NDArray[np.float64], log_inc: bool, bridge: bool, terms: list[Any]
) -> NDArray[np.float64]:
    """``constraint_raw`` at which the whitened path follows ``level`` at the initial point.

    ``terms`` are the graph's reference innovation mean, ``sigma``, pivot ``g2``,
    recurrence coefficient ``r``, step scale, initial level and centring terms
    (:func:`_pinned_levels`, :func:`_bridge_eps`), evaluated here at the
    model's (unjittered) initial point; the map ``raw -> path`` is then inverted
    step by step. Chains start on the data rather than on the prior-mean line:
    at T = 1000 a chain started on the line settled at ``sigma`` near 1.6 with
    the indicator noise tripled, and never left.
    """
    model = pm.modelcontext(None)
    outs = model.replace_rvs_by_values(terms)
    fn = model.compile_fn(
        outs, inputs=model.value_vars, mode="FAST_COMPILE", on_unused_input="ignore"
    )
    mean, sigma, g2, r, scale, init, shift = (
        np.asarray(v, dtype=float) for v in fn(model.initial_point())
    )
    mean = np.broadcast_to(mean, (level.shape[0], level.shape[1] - 1))
    init = np.broadcast_to(init, (level.shape[0],))
    steps = np.diff(np.concatenate([init[:, None], level[:, 1:]], axis=1), axis=1)
    if log_inc:
        floor = 0.1 * np.maximum(steps.mean(axis=1, keepdims=True), 1e-12)
        eps = (np.log(np.maximum(steps, floor)) - mean) / sigma
        if bridge:
            # The path depends on eps - mean(eps) alone: shift eps so that its
            # unbent steps sum to zero, and leave the common shift (raw's last column) at 0.
            eps = eps - _bridge_shift(eps, float(sigma))[:, None]
        y = _unbend(eps, float(sigma))
    else:
        y = (steps - mean) / sigma
    q = scale[:, None] * np.cumsum(y, axis=1)
    if bridge:
        q = q[:, :-1]
    prev = np.concatenate([np.zeros((q.shape[0], 1)), q[:, :-1]], axis=1)
    raw = np.sqrt(g2)[:, None] * (q - r[:, None] * prev) - shift
    if bridge:
        raw = np.concatenate([raw, np.zeros((raw.shape[0], 1))], axis=1)
    return raw


def _bridge_shift(eps: NDArray[np.float64], sigma: float) -> NDArray[np.float64]:
    """Per row, the ``delta`` with ``sum(unbend(eps - delta)) = 0``, by bisection.

    ``unbend`` is increasing, so the sum falls strictly in ``delta``, and the
    root lies between the row's smallest and largest ``eps``.
    """
    lo, hi = eps.min(axis=1), eps.max(axis=1)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        above = _unbend(eps - mid[:, None], sigma).sum(axis=1) > 0
        lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
    return 0.5 * (lo + hi)


def _stationary_pivot(lower, upper):
    """Limit ``g^2`` of the Cholesky pivots of tridiag(a, -b): ``(a + sqrt(a^2 - 4b^2)) / 2``."""
    return 0.25 * (lower + upper) + 0.5 * pt.sqrt(lower * upper)


def _log_mean_shift(spec: Spec, data: DecouplingData, sigma) -> tuple[str, Any, Any] | None:
    """Sample log-increment processes by ``log E[step] = mu + sigma^2 / 2``, not by ``mu``.

    The data pin down the mean step (the constraint's overall growth) far more
    tightly than ``mu`` and ``sigma`` apart, so ``(mu, sigma)`` lie on the
    curved ridge ``mu + sigma^2 / 2 = const``: with ``mu`` sampled directly,
    ``sigma`` mixed with an ESS near 15 per 2000 draws at T = 200. The
    whitened path goes further (:func:`_realised_step`).
    """
    process = spec.constraint.process
    if not PROCESSES[process].log_increment:
        return None
    # A data-dependent initial value, so a symbolic one (see _observed).
    start = pm.Data("pilot_log_mean_step", _pilot_log_mean_step(spec, data, per_unit=False))
    return ("constraint_log_mean_step", 0.5 * sigma**2, start)


def _pilot_log_mean_step(spec: Spec, data: DecouplingData, per_unit: bool) -> Any:
    """Log of the first indicator's smoothed mean step, per unit or pooled over units."""
    first = spec.indicators[0]
    ref = pilot(spec.constraint.process, data[first.column], first.family)
    return np.log(ref.step) if per_unit else float(np.log(np.mean(ref.step)))


def _realised_step(spec: Spec, data: DecouplingData, sigma, hier: set[str]) -> Any:
    """The free log realised mean step of a whitened log-increment path, or ``None``.

    With ``mu`` sampled (even through the log mean step), a path's total
    growth ``sum_t exp(mu + x_t'beta + sigma * eps_t)`` moves with ``sigma``
    and with every ``eps_t`` at a fixed ``mu``, while the data pin that
    growth far more tightly than any of them. At T = 1000 the posterior's
    stiffest direction was this coupling of the path, ``sigma`` and the log
    mean step, and at T = 60 its curvature in ``log sigma`` grew with
    ``sigma`` (benchmarks/README.md). So NUTS samples ``m``, the log of the
    realised mean step, and ``mu`` follows from the path:

        mu = m - log mean_t exp(x_t'beta + sigma * eps_t),

    per unit if ``mu`` is hierarchical, over all units if it is shared. At
    fixed ``eps`` and ``sigma``, ``mu`` moves one for one with ``m``, so the
    Jacobian of ``(raw, m) -> (eps, mu)`` is that of ``raw -> eps`` alone;
    ``mu``'s prior (hierarchical: centred on the population mean, which the
    per-unit growths pin) is kept on the derived ``mu``. The whitening is
    linearised at the median step ``exp(m - sigma^2 / 2)``, as it was at
    ``exp(mu)``; where each unit's growth is pinned, its levels are a bridge
    (:func:`_bridge_eps`).
    """
    process = spec.constraint.process
    if not (_whitened(spec, data) and PROCESSES[process].log_increment):
        return None
    if _is_fixed(spec.prior("constraint_mu")):
        return None
    per_unit = "constraint_mu" in hier
    initval = pm.Data("pilot_log_mean_step", _pilot_log_mean_step(spec, data, per_unit))
    if per_unit:
        return pm.Flat("constraint_log_realised_step", dims=dims.UNIT, initval=initval)
    return pm.Flat("constraint_log_realised_step", initval=initval)


def _realised_mu(spec: Spec, p: dict[str, Any], mean, sigma, eps):
    """Innovation means with ``mu`` implied by the realised mean step and the path.

    See :func:`_realised_step`; a per-unit realised step means a hierarchical ``mu``.
    """
    hier = p["realised"].ndim == 1
    dev = mean - _per_unit(p["mu"])
    log_steps = dev + sigma * eps
    prior = spec.prior("constraint_mu")
    if not hier:
        log_real = pt.logsumexp(log_steps) - pt.log(pt.cast(log_steps.size, "float64"))
        mu = pm.Deterministic("constraint_mu", p["realised"] - log_real)
        pm.Potential("constraint_mu_prior", pm.logp(_dist(prior), mu))
    else:
        n = pt.cast(log_steps.shape[1], "float64")
        log_real = pt.logsumexp(log_steps, axis=1) - pt.log(n)
        mu = pm.Deterministic("constraint_mu", p["realised"] - log_real, dims=dims.UNIT)
        pop = _rv("constraint_mu_pop", prior)
        sig_prior = spec.prior("constraint_mu_unit_sigma")
        sig = (
            _const(sig_prior, ())
            if _is_fixed(sig_prior)
            else _rv("constraint_mu_unit_sigma", sig_prior)
        )
        pm.Potential("constraint_mu_prior", pm.logp(pm.Normal.dist(pop, sig), mu).sum())
    return dev + _per_unit(mu)


def _indicator_information(
    spec: Spec, obs: Mapping[str, _Observed], lam, ind_sigma, ind_df, ind_alpha
):
    """Approximate Fisher information about C_t per step from the indicators, per unit."""
    total = 0.0
    for j, series in enumerate(spec.indicators):
        y = obs[series.column]
        seen = pt.ones_like(y.values) if y.missing is None else 1.0 - y.missing
        n_seen = seen.sum(axis=1)
        frac = n_seen / y.values.shape[1]
        lj = lam[..., j]
        if series.family == "normal":
            info = lj**2 / ind_sigma[..., j] ** 2
        elif series.family == "student_t":
            df = ind_df[..., j]
            info = lj**2 / ind_sigma[..., j] ** 2 * (df + 1.0) / (df + 3.0)
        else:
            m = pt.switch(n_seen > 0, (y.values * seen).sum(axis=1) / pt.maximum(n_seen, 1), 1.0)
            m = m + 0.5
            info = lj**2 * m
            if series.family == "negative_binomial":
                info = info / (1.0 + m / ind_alpha[..., j])
        total = total + frac * info
    return pt.as_tensor_variable(total)


def _per_unit(x):
    """(unit,) parameters gain a time axis; scalars pass through."""
    return x[:, None] if x.ndim == 1 else x


def _with_baseline(p: dict[str, Any], init) -> dict[str, Any]:
    """Hysteresis recovers toward C_1: the baseline is the path's own initial level."""
    return dict(p, baseline=init)


def _pilot_started_init(spec: Spec, data: DecouplingData, n_units: int):
    """The first indicator's link path, the pilot path read off it, and ``constraint_init``.

    The initial level starts on the pilot path. A fixed initial level has no
    starting value, and an unused data variable would only sit in the fit's
    constant_data.
    """
    first = spec.indicators[0]
    link = _link_path(data[first.column], first.family)
    level = pilot_path(spec.constraint.process, link)
    fixed_init = _is_fixed(spec.prior("constraint_init"))
    init = _param(
        spec,
        "constraint_init",
        (dims.UNIT,),
        (n_units,),
        hier=False,
        initval=None if fixed_init else pm.Data("pilot_constraint_init", level[:, 0]),
    )
    return link, level, init


def _partial_innovations(spec: Spec, data: DecouplingData, p: dict[str, Any], info, mean):
    """Initial levels and innovations of a path partially non-centred step by step.

    Each innovation ``x_t ~ N(m_t, sigma^2)`` is sampled as ``raw_t``, with
    ``x_t = m_t + sigma^(1 - w_t) (raw_t - w_t m_t)``: ``w_t = 1`` is the
    centred form (``raw_t = x_t``), ``w_t = 0`` the non-centred one
    (``raw_t = eps_t``), and a priori ``raw_t ~ N(w_t m_t, sigma^(2 w_t))``
    (Papaspiliopoulos, Roberts and Skold 2007). The data choose ``w_t``: for
    an observation of precision ``I_t`` on ``x_t`` the linear-Gaussian choice
    is ``sigma^2 I_t / (1 + sigma^2 I_t)``, with ``I_t`` the indicators'
    information on a level times ``(dC_t / dx_t)^2 / 2`` (a step is the
    difference of two levels): ``(dC_t / dx_t)`` is 1 for a random walk and
    the step itself for log increments, read off the first indicator's
    isotonic fit. A step that the indicators resolve is then sampled centred,
    where the data pin it whatever ``sigma`` is, and the many small steps
    they cannot see non-centred, where the prior does. ``w_t`` depends on
    parameters but not on ``raw``, so the Jacobian is
    ``prod_t sigma^(1 - w_t)``.

    Returns the initial levels (unit,) and the innovations (unit, time - 1).
    """
    process = spec.constraint.process
    n_units, n_steps = data.n_units, pm.modelcontext(None).dim_lengths[dims.TIME]
    n = n_steps - 1
    link, level, init = _pilot_started_init(spec, data, n_units)
    start_step = np.diff(level, axis=1)
    if PROCESSES[process].log_increment:
        seen = np.array(link, dtype=float)
        for u in range(seen.shape[0]):
            seen[u] = isotonic_regression(seen[u]).x
        slope = np.diff(seen, axis=1)
        floor = 0.1 * np.maximum(start_step.mean(axis=1, keepdims=True), 1e-12)
        start_innovation = np.log(np.maximum(start_step, floor))
    else:
        slope = np.ones_like(start_step)
        start_innovation = start_step
    slope = pm.Data("pilot_step_slope", slope)
    sigma = p["sigma"]
    step_info = slope**2 * pt.broadcast_to(info, (n_units,))[:, None] / 2.0
    w = sigma**2 * step_info / (1.0 + sigma**2 * step_info)
    start = pm.Data("pilot_constraint_raw", np.zeros((n_units, data.n_steps - 1)))
    raw = pm.Flat("constraint_raw", shape=(n_units, n), initval=start)
    mean = pt.broadcast_to(mean, (n_units, n))
    log_sigma = pt.log(sigma)
    eps = pt.exp(-w * log_sigma) * (raw - w * mean)
    pm.Potential("constraint_jacobian", -(w * log_sigma).sum())
    pm.Potential("constraint_eps_prior", pm.logp(pm.Normal.dist(0.0, 1.0), eps).sum())
    # Start on the pilot path: raw at the (unjittered) initial point's sigma, mean and w.
    model = pm.modelcontext(None)
    fn = model.compile_fn(
        model.replace_rvs_by_values([mean, sigma, w]),
        inputs=model.value_vars,
        mode="FAST_COMPILE",
        on_unused_input="ignore",
    )
    m0, s0, w0 = (np.asarray(v, dtype=float) for v in fn(model.initial_point()))
    start.set_value(s0**w0 * (start_innovation - m0) / s0 + w0 * m0)
    return init, mean + sigma * eps


def _latent_path(spec: Spec, data: DecouplingData, p: dict[str, Any], info) -> dict[str, Any]:
    """Create the latent constraint path per the spec's parameterisation."""
    process = spec.constraint.process
    # The length as the model's dim length (a shared variable), not an int: the
    # compiled graph then has one cache key for every length (pathlock.compiled).
    n_units, n_steps = data.n_units, pm.modelcontext(None).dim_lengths[dims.TIME]
    exposures = None
    if spec.constraint.exposures:
        exposures = _series_data("exposures", data.array(spec.constraint.exposures))
    mean = innovation_mean(process, p, None if exposures is None else exposures[:, 1:], pt)
    mean = pt.broadcast_to(mean[..., None] if mean.ndim < 2 else mean, (n_units, n_steps - 1))
    sigma = p["sigma"]
    init_prior = spec.prior("constraint_init")
    mode = resolved_parameterization(spec, data)
    inn_dims = (dims.UNIT, dims.STEP)
    if mode == "noncentered":
        init = _param(spec, "constraint_init", (dims.UNIT,), (n_units,), hier=False)
        eps = pm.Normal("constraint_eps", 0.0, 1.0, dims=inn_dims)
        innov = mean + sigma * eps
        constraint = path(process, init, innov, _with_baseline(p, init))
    elif mode == "partial":
        init, innov = _partial_innovations(spec, data, p, info, mean)
        constraint = path(process, init, innov, _with_baseline(p, init))
    elif mode == "whitened":
        link, level, init = _pilot_started_init(spec, data, n_units)
        n = n_steps - 1
        start = pm.Data("pilot_constraint_raw", np.zeros((n_units, data.n_steps - 1)))
        raw = pm.Flat("constraint_raw", shape=(n_units, n), initval=start)
        # Linearised, the path's deviation from its prior-mean line is the cumulative sum of
        # d * sigma * y (d: the median step); whiten it against the indicators. For log
        # increments y is bent into eps (_bend) so that the step is linear in y above a
        # floor of 0.3 times the median, as the linearisation assumes, with a slope that
        # never exceeds the linearisation's.
        mean_u = pt.broadcast_to(mean, (n_units, n)).mean(axis=1)
        log_inc = PROCESSES[process].log_increment
        slope = pt.exp(mean_u) if log_inc else pt.ones_like(mean_u)
        scale = slope * sigma
        # kappa is the whitening's prior precision of the steps, not the model's: any value
        # gives an exact change of variables. For Gaussian steps 1 / scale^2 makes raw
        # independent of sigma. Lognormal steps are skewed, and there four times that
        # (the path centred on the data as if the indicators told a quarter of what they
        # do) gave sigma a bulk ESS higher by a third at T = 1000 (21 fit seeds); factors
        # 1.5 to 10 all helped, and any dependence on sigma other than 1 / sigma^2 hurt
        # (benchmarks/README.md, "A partly centred whitening of log-increment paths").
        kappa = (_LOG_STEP_PRIOR_WEIGHT if log_inc else 1.0) / scale**2
        info_u = pt.broadcast_to(info, (n_units,))
        b_off = pt.broadcast_to(kappa, (n_units,))
        # P ~ G^T G with G lower bidiagonal, solved forward from the fixed q_0 = 0: exact in
        # the first row (whose neighbour q_0 is fixed, as in the interior), near-exact in the last.
        g2 = _stationary_pivot(info_u, info_u + 4.0 * b_off)
        r_u = b_off / g2
        # Centre on the linearised conditional posterior mean q_hat = (G^T G)^-1 info (y - line)
        # as well: q = G^-1 (raw + z) with G^T z = info (y - line). In the linear-Gaussian
        # case raw is then N(0, I) whatever the hyperparameters are, so sigma, the drift, the
        # initial level and the indicator noise move as in their marginal posterior; with
        # only the precision whitened, a change of sigma at fixed raw moved the whole path off
        # the data, and at T = 1000 the chains could not move sigma at all.
        target = _series_data("pilot_indicator", link)
        # With the realised mean step each unit's path ends at init + n exp(m) wherever raw
        # is, so its deviation from the straight line to that end is a bridge: the data see
        # the levels between the ends and not the innovations' mean, which moves only mu.
        # Whitened against the data, that mean was a ramp in raw stretched over all n
        # coordinates: it mixed as slowly as mu (R-hat 1.05-1.08 at T = 1000).
        bridge = log_inc and "realised" in p and (p["realised"].ndim == 1 or n_units == 1)
        if bridge:
            dev = pt.exp(mean - mean_u[:, None])
            grow = pt.exp(pt.broadcast_to(p["realised"], (n_units,)))
            line = init[:, None] + cumulative_sum(
                grow[:, None] * dev / dev.mean(axis=1, keepdims=True)
            )
            eps, log_jac, centre = _bridge_eps(
                raw, target[:, 1:] - line, info_u, b_off, g2, r_u, scale, sigma, n
            )
        else:
            median_step = pt.exp(mean) if log_inc else mean
            line = init[:, None] + cumulative_sum(median_step)
            resid = target[:, 1:] - line
            q, log_jac, centre = _pinned_levels(raw, resid, info_u, b_off, g2, r_u, n)
            y = pt.diff(pt.concatenate([pt.zeros((n_units, 1)), q], axis=1), axis=1)
            y = y / scale[:, None]
            log_jac = log_jac - n * pt.log(scale)
            if log_inc:
                eps, log_bend = _bend(y, sigma)
                log_jac = log_jac + log_bend.sum(axis=1)
            else:
                eps = y
        pm.Potential("constraint_jacobian", log_jac.sum())
        pm.Potential("constraint_eps_prior", pm.logp(pm.Normal.dist(0.0, 1.0), eps).sum())
        ref_mean = mean
        if "realised" in p:
            mean = _realised_mu(spec, p, mean, sigma, eps)
        innov = mean + sigma * eps
        constraint = path(process, init, innov, _with_baseline(p, init))
        terms = [ref_mean, sigma, g2, r_u, scale, init, *centre]
        start.set_value(_start_raw(level, log_inc, bridge, terms))
    elif mode == "centered":
        init = _param(spec, "constraint_init", (dims.UNIT,), (n_units,), hier=False)
        # A copy: the name set below must not rename the free variable, whose name
        # nutpie's initial point and trace look it up by.
        innov = pt.tensor_copy(pm.Normal("constraint_innovation", mean, sigma, dims=inn_dims))
        constraint = path(process, init, innov, _with_baseline(p, init))
    else:
        ref_values = pilot(process, data[spec.indicators[0].column], spec.indicators[0].family)
        # Per unit, no time axis: static shapes, so that nothing broadcasts
        # against them at run time (and JAX, which traces constant shapes, can
        # compile the path with the data left shared).
        ref = {
            f: pm.Data(f"pilot_{f}", value, shape=np.shape(value))
            for f in ("level", "innovation", "scale")
            for value in [getattr(ref_values, f)]
        }
        fixed_init = _is_fixed(init_prior)
        n_free = n_steps - (1 if fixed_init else 0)
        raw = pm.Flat("constraint_raw", shape=(n_units, n_free))
        if process == "ar1":
            kappa = 1.0 / sigma**2
            lower = info + (1.0 - p["phi"]) ** 2 * kappa
            upper = info + (1.0 + p["phi"]) ** 2 * kappa
            b_off = p["phi"] * kappa
        else:
            kappa = 1.0 / (ref["scale"] * sigma) ** 2
            lower, upper, b_off = info, info + 4.0 * kappa, kappa
        lower = pt.broadcast_to(lower, (n_units,))
        upper = pt.broadcast_to(upper, (n_units,))
        b_off = pt.broadcast_to(b_off, (n_units,))
        q, log_jac = _whitened_levels(raw, lower, upper, b_off)
        pm.Potential("constraint_jacobian", log_jac.sum())
        if fixed_init:
            init = _const(init_prior, (n_units,))
            q = pt.concatenate([pt.zeros((n_units, 1)), q], axis=1)
        if process == "ar1":
            levels = ref["level"][:, None] + q
            if not fixed_init:
                init = levels[:, 0]
            constraint = pt.concatenate([init[:, None], levels[:, 1:]], axis=1)
            prev = constraint[:, :-1]
            mu_u = _per_unit(p["mu"])
            innov = constraint[:, 1:] - mu_u - p["phi"] * (prev - mu_u)
        else:
            if not fixed_init:
                init = ref["level"] + q[:, 0]
            innov = ref["innovation"][:, None] + (q[:, 1:] - q[:, :-1]) / ref["scale"][:, None]
            constraint = path(process, init, innov, _with_baseline(p, init))
        if not fixed_init:
            init = pm.Deterministic("constraint_init", init, dims=dims.UNIT)
            pm.Potential("constraint_init_prior", pm.logp(_dist(init_prior), init).sum())
        pm.Potential(
            "constraint_innovation_prior", pm.logp(pm.Normal.dist(mean, sigma), innov).sum()
        )
    constraint = pm.Deterministic("constraint", constraint, dims=(dims.UNIT, dims.TIME))
    # Named so that tests can find the innovations in the graph.
    innov.name = "constraint_innovation_path"
    return {"constraint": constraint, "innovation": innov}


# --------------------------------------------------------------------------
# build
# --------------------------------------------------------------------------


def build(spec: Spec, data: DecouplingData) -> Built:
    """Build the decoupling model for validated data.

    Parameters
    ----------
    spec : Spec
    data : DecouplingData
        As returned by ``spec.prepare_data``.

    Returns
    -------
    Built
        ``model`` with coords ``unit``, ``time``, ``regime``, ``regime_from``,
        ``regime_to``, ``indicator``, ``signal`` (and ``exposure``, ``exog``);
        ``extras`` holds ``"constraint"`` (unit, time).

    Notes
    -----
    Variables are named as in :data:`pathlock.spec.PARAMETERS`.  Derived
    quantities are Deterministics: ``constraint`` (unit, time), the full
    ``feedback_w`` (regime; 1 for tracking), ``indicator_nu`` and
    ``indicator_lambda`` (first fixed at 0 and 1), ``trans_p`` (absorbing rows
    completed).  Free parts carry the suffix ``_free``; hierarchical
    parameters ``p`` are ``p_pop + p_unit_sigma * p_unit_z``, except a
    whitened log-increment path's ``constraint_mu``, which is derived per unit
    from the realised mean step and centred on ``constraint_mu_pop``.

    The latent path (``constraint.parameterization``):

    - ``noncentered``: ``eps ~ N(0, 1)`` (``constraint_eps``), the textbook form.
    - ``centered``: the innovations themselves (``constraint_innovation``).
    - ``whitened``: the innovations stay ``mu + sigma * eps`` with
      ``eps ~ N(0, 1)``, but NUTS samples ``constraint_raw`` (unit, time - 1),
      an affine map of ``eps``: linearised, the path's deviation from its
      median line is ``q = d * sigma * cumsum(y)`` (``d`` the median step for
      log increments, else 1; ``y`` bent into ``eps`` by :func:`_bend` for log
      increments), whose conditional posterior precision is tridiagonal
      (indicator information on the diagonal, ``1 / (d sigma)^2`` on the
      differences); ``q = G^-1 (raw + z)`` with ``G`` its stationary
      bidiagonal Cholesky factor and ``G^T z`` the indicator information times
      the first indicator's residual from the line, so that ``raw = 0`` is the
      conditional posterior mean.  In the linear-Gaussian case ``raw`` is then
      N(0, I) whatever ``sigma``, the drift, the initial level and the
      indicator noise are (no funnel, and no coupling of those to the path);
      the log-Jacobian is ``-n/2 log g^2 - n log(d sigma)`` per unit plus the
      bend's. For log increments the whitening's difference precision is
      ``4 / (d sigma)^2`` (:data:`_LOG_STEP_PRIOR_WEIGHT`): their skewed steps
      make the exact conditional centring no longer the best one for
      ``sigma``, and a path centred less on the data mixed ``sigma`` faster.
    - ``partial``: each innovation partially non-centred by how well the
      indicators resolve it, ``raw_t = w_t m_t + sigma^w_t eps_t``
      (:func:`_partial_innovations`): centred for the steps they resolve,
      non-centred for those they cannot see.
    - ``data_centered``: levels as deviations from a pilot path read off the
      first indicator, whitened the same way (``ar1``'s latent path is linear
      in its levels, so this is exact for it up to the boundary).
    - ``auto`` (default): ``whitened`` for ``ratchet`` and ``random_walk``,
      except ``partial`` for a ``ratchet`` whose first indicator jumps
      (:func:`resolved_parameterization`); ``data_centered`` for ``ar1`` and
      ``hysteresis`` (nutpie's numba compilation rejects the hysteresis scan
      in the other parameterisations: a static-shape mismatch of the scan's
      carried state).

    For ``ratchet`` and ``hysteresis``, ``mu`` is sampled through
    ``constraint_log_mean_step = mu + sigma^2 / 2`` (the log of the mean step,
    which the data identify), with ``mu``'s prior kept: an exact change of
    variables that removes the curved ``(mu, sigma)`` ridge. A whitened path
    goes further and samples its realised mean step,
    ``constraint_log_realised_step`` (:func:`_realised_step`); each unit's
    path then ends at ``init + n exp(m)``, and ``constraint_raw`` whitens the
    bridge to that end and, in its last column, the innovations' mean
    (:func:`_bridge_eps`).

    With one feedback signal and one free loading fraction, the fraction is
    sampled as ``feedback_w_<regime>_sheared`` (:func:`_loadings`).
    """
    process = spec.constraint.process
    n_units = data.n_units
    k = spec.n_regimes
    names = spec.regime_names
    hier = set(spec.hierarchical_parameters)
    coords: dict[str, Any] = {
        dims.UNIT: list(data.units),
        dims.TIME: list(data.times),
        dims.STEP: list(data.times[1:]),
        dims.REGIME: list(names),
        dims.REGIME_FROM: list(names),
        dims.REGIME_TO: list(names),
        dims.INDICATOR: list(spec.indicator_names),
        dims.SIGNAL: list(spec.signal_names),
    }
    if spec.constraint.exposures:
        coords[dims.EXPOSURE] = list(spec.constraint.exposures)
    if spec.regimes.covariates:
        coords[dims.EXOG] = list(spec.regimes.covariates)
    n_ind, _n_sig = len(spec.indicators), len(spec.feedback)
    fam_i = {s.family for s in spec.indicators}
    fam_f = {s.family for s in spec.feedback}

    with pm.Model() as model:
        # Only the time axes have lengths that a compiled graph reads at run time
        # (pathlock.compiled): the other dims are part of the model's structure,
        # and constant lengths let PyTensor fold the shape arithmetic they drive.
        model.add_coords(
            coords,
            lengths={
                name: pt.constant(len(values), dtype="int64")
                for name, values in coords.items()
                if name not in (dims.TIME, dims.STEP)
            },
        )
        # ---- constraint process parameters
        p: dict[str, Any] = {}
        p["sigma"] = _param(
            spec, "constraint_sigma", (), (), hier=False, initval=_sigma_start(spec, data)
        )
        realised = _realised_step(spec, data, p["sigma"], hier)
        if realised is not None:
            p["realised"] = realised
            # The whitening's reference drift; _latent_path derives the model's mu.
            p["mu"] = realised - 0.5 * p["sigma"] ** 2
        else:
            p["mu"] = _param(
                spec,
                "constraint_mu",
                (),
                (),
                hier="constraint_mu" in hier,
                shift=_log_mean_shift(spec, data, p["sigma"]),
            )
        if spec.constraint.exposures:
            p["beta"] = _param(
                spec, "constraint_beta", (dims.EXPOSURE,), (), hier="constraint_beta" in hier
            )
        if process == "ar1":
            p["phi"] = _param(spec, "constraint_phi", (), (), hier=False)
        if process == "hysteresis":
            for key in ("rho", "kappa", "width"):
                p[key] = _param(spec, f"constraint_{key}", (), (), hier=False)

        # ---- indicator parameters (needed by the path's whitening)
        def _partial(name: str, first: float) -> pt.TensorVariable:
            if n_ind == 1:
                return pt.as_tensor_variable(np.full((1,), first))
            prior = spec.prior(name)
            if name in hier:
                full = _param(spec, name, (dims.INDICATOR,), (n_ind,), hier=True)
                return pm.Deterministic(
                    f"{name}_anchored",
                    pt.set_subtensor(full[:, 0], first),
                    dims=(dims.UNIT, dims.INDICATOR),
                )
            free = (
                _const(prior, (n_ind - 1,))
                if _is_fixed(prior)
                else _rv(f"{name}_free", prior, (), (n_ind - 1,))
            )
            return pm.Deterministic(
                name, pt.concatenate([pt.as_tensor_variable([first]), free]), dims=dims.INDICATOR
            )

        nu = _partial("indicator_nu", 0.0)
        lam = _partial("indicator_lambda", 1.0)
        ind_sigma = ind_df = ind_alpha = None
        if fam_i & {"normal", "student_t"}:
            ind_sigma = _param(
                spec,
                "indicator_sigma",
                (dims.INDICATOR,),
                (n_ind,),
                hier=False,
                initval=pm.Data("pilot_indicator_sigma", _indicator_noise_start(spec, data)),
            )
        if "student_t" in fam_i:
            ind_df = _param(spec, "indicator_df", (dims.INDICATOR,), (n_ind,), hier=False)
        if "negative_binomial" in fam_i:
            ind_alpha = _param(spec, "indicator_alpha", (dims.INDICATOR,), (n_ind,), hier=False)
        lam_u = lam if lam.ndim == 2 else lam[None]
        obs = {s.column: _observed(data, s.column) for s in (*spec.indicators, *spec.feedback)}
        info = _indicator_information(spec, obs, lam_u, ind_sigma, ind_df, ind_alpha)

        # ---- latent path
        latent = _latent_path(spec, data, p, info)
        constraint = latent["constraint"]

        # ---- indicators: Z_jt = nu_j + lambda_j C_t + noise
        nu_u = nu if nu.ndim == 2 else nu[None]
        ind_logp = 0.0
        for j, series in enumerate(spec.indicators):
            eta = nu_u[:, j, None] + lam_u[:, j, None] * constraint
            params = {
                "sigma": None if ind_sigma is None else ind_sigma[j],
                "df": None if ind_df is None else ind_df[j],
                "alpha": None if ind_alpha is None else ind_alpha[j],
            }
            y = obs[series.column]
            ind_logp = ind_logp + log_density(series.family, y.values, eta, params, y.missing)

        # ---- feedback: Y_mkt = a_mk + b_m w_k C_t + noise_mk
        # Chains start at the feedback's own line on the indicator: over the tracking
        # steps for tracking, over the series' second half for the other regimes. With
        # these, the sheared loading's start (_loading_shear) and hazard_slope's, the
        # unjittered start's log density at T = 1000 is -1.7e3 (-2.8e5 before); far
        # from the data, the first trajectories flung chains into the minor mode where
        # nothing decouples (one chain in two of three fit seeds), and they stayed.
        _, a_track, s_track = _feedback_fit(spec, data, "tracking")
        _, a_late, s_late = _feedback_fit(spec, data, "late")
        by_regime = np.array([[0] + [1] * (k - 1)])
        a_start = np.where(by_regime == 0, a_track[:, None], a_late[:, None])
        s_start = np.where(by_regime == 0, s_track[:, None], s_late[:, None])
        a = _param(
            spec,
            "feedback_a",
            (dims.SIGNAL, dims.REGIME) if spec.regimes.feedback_intercepts else (dims.SIGNAL,),
            (),
            hier="feedback_a" in hier,
            initval=pm.Data(
                "pilot_feedback_a",
                a_start if spec.regimes.feedback_intercepts else a_start[:, 0],
            ),
        )
        b = _param(
            spec,
            "feedback_b",
            (dims.SIGNAL,),
            (),
            hier="feedback_b" in hier,
            initval=pm.Data("pilot_feedback_b", feedback_pilot(spec, data)),
        )
        w = _loadings(spec, _loading_shear(spec, data, b, hier))
        fb_sigma = fb_df = fb_alpha = None
        sig_dims = (dims.SIGNAL, dims.REGIME) if spec.regimes.feedback_noise else (dims.SIGNAL,)
        if fam_f & {"normal", "student_t"}:
            fb_sigma = _param(
                spec,
                "feedback_sigma",
                sig_dims,
                (),
                hier=False,
                initval=pm.Data(
                    "pilot_feedback_sigma",
                    s_start if spec.regimes.feedback_noise else s_start[:, 0],
                ),
            )
        if "student_t" in fam_f:
            fb_df = _param(spec, "feedback_df", (dims.SIGNAL,), (), hier=False)
        if "negative_binomial" in fam_f:
            fb_alpha = _param(spec, "feedback_alpha", (dims.SIGNAL,), (), hier=False)
        a_u = a if "feedback_a" in hier else a[None]  # (unit or 1, signal[, regime])
        b_u = b if "feedback_b" in hier else b[None]
        fb_logp = 0.0
        for m, series in enumerate(spec.feedback):
            a_m = a_u[:, m] if spec.regimes.feedback_intercepts else a_u[:, m, None]
            a_m = pt.broadcast_to(a_m, (a_m.shape[0], k))
            eta = (
                a_m[:, None, :] + b_u[:, m, None, None] * w[None, None, :] * constraint[:, :, None]
            )
            s_m = None
            if fb_sigma is not None:
                s_m = fb_sigma[m] if spec.regimes.feedback_noise else fb_sigma[m, None]
            params = {
                "sigma": s_m,
                "df": None if fb_df is None else fb_df[m],
                "alpha": None if fb_alpha is None else fb_alpha[m],
            }
            y = obs[series.column]
            fb_logp = fb_logp + log_density(
                series.family,
                y.values[:, :, None],
                eta,
                params,
                None if y.missing is None else y.missing[:, :, None],
            )
        log_emit = ind_logp[:, :, None] + fb_logp
        log_emit = pt.broadcast_to(log_emit, (n_units, model.dim_lengths[dims.TIME], k))

        # ---- regimes
        log_init, log_trans = _regime_inputs(spec, data, constraint, hier)
        if k == 1:
            pm.Potential("regime_loglike", log_emit.sum())
        else:
            pm.Potential("regime_loglike", hmm_loglike(log_init, log_trans, log_emit).sum())

    return Built(
        model=model,
        log_init=log_init,
        log_trans=log_trans,
        log_emit=log_emit,
        # The innovations are not an extra: no analysis reads them, and evaluating them at
        # every draw (the whitened map, bend and all, in the Python linker) took 12 s of
        # a T = 1000 fit's post-processing.
        extras={"constraint": constraint},
        data_shared=True,
        # Every start computed from the data is kept as it is. nutpie's uniform(-1, 1)
        # jitter of one of them cost up to 3000 nats of log density at T = 300 (the
        # sheared loading; the feedback intercepts 500, its noise 430, the initial
        # level 300), and the first trajectories from there carried chains into the
        # mode where the feedback never tracks (benchmarks/README.md).
        unjittered=frozenset(
            {
                "feedback_b",
                "feedback_b_pop",
                "feedback_a",
                "feedback_a_pop",
                "feedback_sigma",
                "constraint_init",
                "hazard_slope",
                "hazard_slope_pop",
            }
            | {f"feedback_w_{name}_sheared" for name in spec.regimes.names[1:]}
        )
        # The whitened path starts on the data (_start_raw) only at the unjittered
        # growth (the log mean step; the drift of a random walk), scale and
        # indicator noise it was computed at.
        | (
            {
                "constraint_sigma",
                "indicator_sigma",
                "constraint_log_mean_step",
                "constraint_log_mean_step_pop",
                "constraint_log_realised_step",
                "constraint_mu",
                "constraint_mu_pop",
            }
            if resolved_parameterization(spec, data) in ("whitened", "partial")
            else set()
        ),
        # The time axes' lengths are shared; nothing else in the graph depends on
        # the length, so one compiled graph serves every series length.
        run_time_dims=frozenset({dims.TIME, dims.STEP}),
    )


def _loading_shear(spec: Spec, data: DecouplingData, b, hier: set[str]):
    """``h(b)`` for the sheared loading fraction (see :func:`_loadings`), or ``None``.

    Returns ``h(b)``, its value at ``b``'s starting value, and the loading
    fraction's starting value: the late slope over ``b``'s start, clipped to
    [0.02, 0.98].

    Only for one feedback signal with a free, shared ``feedback_b`` and one
    free loading fraction: the case where one decoupled slope ``b * w`` is
    what the data pin.
    """
    names = spec.regime_names
    free = [i for i in range(1, spec.n_regimes) if not _is_fixed(spec.loading(names[i]))]
    if (
        len(spec.feedback) != 1
        or len(free) != 1
        or "feedback_b" in hier
        or _is_fixed(spec.prior("feedback_b"))
    ):
        return None
    b0 = float(feedback_pilot(spec, data)[0])
    c0 = float(feedback_pilot(spec, data, window="late")[0])
    # Data-dependent constants, so pm.Data: one compiled model serves other data.
    d0 = 0.2 * max(abs(b0), 1e-3)
    late = pm.Data("pilot_feedback_late_slope", c0)
    width = pm.Data("pilot_feedback_shear_width", d0)
    # The chains start with the decoupled slope b * w at the late slope c: at w's prior
    # centre instead, the feedback's misfit over the decoupled steps alone put the start's
    # log density near -3e5 at T = 1000.
    w0 = float(np.clip(c0 / b0, 0.02, 0.98)) if b0 != 0 else 0.5
    h0 = 0.5 * np.log((b0 - c0) ** 2 + d0**2)
    return 0.5 * pt.log((b[0] - late) ** 2 + width**2), h0, w0


def _loadings(spec: Spec, shear=None) -> pt.TensorVariable:
    """Full loading vector w (regime,): 1 for tracking, fixed or free fractions elsewhere.

    With ``shear = h(b)`` (:func:`_loading_shear`), the one free fraction is
    sampled as ``zeta = logit(w) + h(b)``, ``h(b) = log sqrt((b - c)^2 +
    d^2)``, with ``c`` the feedback's slope on the first indicator over the
    series' second half and ``d`` a fifth of its slope over the tracking
    steps. Where the feedback has decoupled for most of the series, the data
    pin the decoupled slope ``b * w`` far more tightly than ``b`` and ``w``
    apart; on that ridge ``logit(w) = log|c| - log|b - c|``, so ``zeta`` is
    constant along it and NUTS no longer has to follow it (at T = 1000 it was
    the posterior's stiffest direction). A shear of ``logit(w)`` by a
    function of ``b`` has unit Jacobian; ``w``'s prior is kept, with the
    logit's Jacobian. Where the feedback still tracks late on, ``c`` is near
    ``b`` and ``h`` hardly moves.
    """
    k = spec.n_regimes
    names = spec.regime_names
    if k == 1:
        return pt.as_tensor_variable(np.ones(1))
    free_idx = [i for i in range(1, k) if not _is_fixed(spec.loading(names[i]))]
    parts: list[Any] = [pt.as_tensor_variable(1.0)] * k
    for i in range(1, k):
        prior = spec.loading(names[i])
        if _is_fixed(prior):
            parts[i] = pt.as_tensor_variable(float(np.asarray(prior.value)))
    if free_idx:
        prior = spec.prior("feedback_w")
        priors = [spec.loading(names[i]) for i in free_idx]
        same = all(str(q) == str(prior) for q in priors)
        n_free = len(free_idx)
        if spec.regimes.ordered_loadings and n_free > 1 and same:
            # Decreasing along the names without a constrained transform: the first
            # free loading has the prior, each later one is the previous times a
            # fraction with the same prior.
            ratio = _rv("feedback_w_free", prior, (), (n_free,))
            free = pt.cumprod(ratio)
        elif shear is not None:
            (i,) = free_idx
            q = priors[0]
            h, h_start, w_start = shear
            # Not capped at the prior's centre, which was tried: it kept one chain of four
            # out of a "decoupled from the held steps on, w near 1" mode on one
            # no-decoupling dataset, but starting w low biased b up where chains had not
            # mixed (SBC, the same 100 data sets: feedback_b's rank chi2 p 0.001, 22 of
            # 100 ranks in the lowest decile; uncapped 0.067; benchmarks/README.md).
            start = float(logit(w_start)) + h_start
            initval = pm.Data(f"pilot_feedback_w_{names[i]}_sheared", start)
            zeta = pm.Flat(f"feedback_w_{names[i]}_sheared", initval=initval)
            ell = zeta - h
            frac = pm.math.sigmoid(ell)
            # w's prior and d w / d logit(w) = w (1 - w).
            log_jac = -pt.softplus(-ell) - pt.softplus(ell)
            pm.Potential(f"feedback_w_{names[i]}_prior", pm.logp(_dist(q), frac) + log_jac)
            free = frac[None]
        else:
            pairs = zip(free_idx, priors, strict=True)
            free = pt.stack([_rv(f"feedback_w_{names[i]}", q) for i, q in pairs])
        for n, i in enumerate(free_idx):
            parts[i] = free[n]
    return pm.Deterministic("feedback_w", pt.stack(parts), dims=dims.REGIME)


def _regime_inputs(spec: Spec, data: DecouplingData, constraint, hier):
    k = spec.n_regimes
    n_units = data.n_units
    # Symbolic, as in _latent_path.
    n_steps = pm.modelcontext(None).dim_lengths[dims.TIME]
    if k == 1:
        return pt.zeros((1, 1)), pt.zeros((1, 1, 1, 1))
    if spec.regimes.initial == "first":
        log_init = log_init_first(k)
    else:
        log_init = log_init_free(spec_rv(spec, "regime_init", (dims.REGIME,)))
    structure = spec.regimes.structure
    if not spec.time_varying:
        prior = spec.prior("trans_p")
        if _is_fixed(prior):
            rows = _const(prior, (k, k))
        elif structure == "absorbing":
            a = np.asarray(prior.kwargs["a"], dtype=float)[: k - 1]
            free = pm.Dirichlet("trans_p_free", a=a, shape=(k - 1, k))
            last = np.zeros((1, k))
            last[0, -1] = 1.0
            rows = pm.Deterministic(
                "trans_p", pt.concatenate([free, last]), dims=(dims.REGIME_FROM, dims.REGIME_TO)
            )
        else:
            rows = _rv("trans_p", prior, (dims.REGIME_FROM, dims.REGIME_TO))
        log_trans = log_trans_constant(rows, k, structure)
        return log_init, hold_tracking(log_trans, n_steps, spec.regimes.known_tracking)
    rr = (dims.REGIME_FROM, dims.REGIME_TO)
    # Started where a move is expected about once over the series, not at the
    # prior's centre: at -3 (a move every ~20 steps) a chain can lock in to an
    # early decoupling with a feedback loading near 0, a minor mode it never leaves.
    start = np.full((k, k), -np.log(max(data.n_steps - 1, 1)))
    g0 = _param(
        spec,
        "hazard_intercept",
        rr,
        (),
        hier="hazard_intercept" in hier,
        initval=pm.Data("pilot_hazard_intercept", start),
    )
    g1 = None
    if spec.regimes.hazard_on_constraint:
        g1 = _param(
            spec,
            "hazard_slope",
            rr,
            (),
            hier="hazard_slope" in hier,
            # 0 (a hazard that ignores the constraint) in every chain: a jitter of 1 moves
            # the logit by 90 at the end of a T = 1000 series; unjittered, one of the two
            # fit seeds with a chain where nothing decouples lost it. Not exactly 0: entries
            # that only their prior informs would have a zero gradient, which nutpie refuses.
            initval=np.full((k, k), 1e-3),
        )
    eta = cov = None
    if spec.regimes.covariates:
        eta = _param(spec, "hazard_eta", (*rr, dims.EXOG), (), hier=False)
        cov = _series_data("transition_covariates", data.array(spec.regimes.covariates))
    lagged = pt.concatenate([constraint[:, :1], constraint[:, :-1]], axis=1)
    logits = hazard_logits(g0, g1, lagged, eta, cov)
    logits = pt.specify_shape(logits, (n_units, n_steps, k, k))
    log_trans = log_trans_hazard(logits, structure)
    return log_init, hold_tracking(log_trans, n_steps, spec.regimes.known_tracking)


def spec_rv(spec: Spec, name: str, model_dims: tuple[str, ...]) -> pt.TensorVariable:
    """Create a non-hierarchical parameter with its resolved prior."""
    return _param(spec, name, model_dims, (), hier=False)


# --------------------------------------------------------------------------
# loglike
# --------------------------------------------------------------------------


def loglike(spec: Spec, data: DecouplingData, params: Mapping[str, Any]) -> float:
    """Marginal log-likelihood (regimes summed out) at named parameters and a latent path.

    Parameters
    ----------
    spec : Spec
    data : DecouplingData
    params : mapping
        Natural-scale values of every parameter the spec's model uses, by the
        names of :data:`pathlock.spec.PARAMETERS` (``feedback_w`` may be given
        for the non-tracking regimes only or in full), **and the latent path**
        ``params["constraint"]`` (unit, time): the constraint is sampled, not
        marginalised, so the likelihood is conditional on it.

    Returns
    -------
    float
        ``log p(indicators, feedback | constraint, theta)``, summed over units.
        The prior density of the path is not included.

    Raises
    ------
    SpecError
        A needed parameter is missing (the message lists them) or has the wrong shape.
    """
    built = build(spec, data)
    model = built.model
    replace: dict[Any, Any] = {}
    for name, value in params.items():
        if name not in model.named_vars:
            continue
        var = model[name]
        arr = np.asarray(value, dtype=float)
        if name == "feedback_w" and arr.size == spec.n_regimes - 1:
            arr = np.concatenate([[1.0], arr.ravel()])
        if name in ("indicator_nu", "indicator_lambda") and arr.size == len(spec.indicators) - 1:
            arr = np.concatenate([[0.0 if name == "indicator_nu" else 1.0], arr.ravel()])
        try:
            arr = np.broadcast_to(arr, tuple(var.shape.eval())).copy()
        except ValueError:
            raise SpecError(
                f"params[{name!r}] has shape {np.shape(value)}; expected {tuple(var.shape.eval())}"
            ) from None
        replace[var] = pt.as_tensor_variable(arr)
    outputs = [built.log_init, built.log_trans, built.log_emit]
    new = graph_replace(outputs, replace, strict=False)
    remaining = set(ancestors(new))
    missing = sorted(rv.name for rv in model.free_RVs if rv in remaining)
    if missing:
        raise SpecError(
            f"loglike needs values for {missing}; give natural-scale values by name, and the "
            "latent path as params['constraint'] (unit, time)"
        )
    li, lt, le = pytensor.function([], new, mode="FAST_COMPILE")()
    if spec.n_regimes == 1:
        return float(le.sum())
    k = spec.n_regimes
    lt = np.broadcast_to(lt, (le.shape[0], lt.shape[1], k, k))
    return float(marginal_loglike(np.broadcast_to(li, (le.shape[0], k)), lt, le).sum())
