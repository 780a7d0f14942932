"""Intervention scenarios, trigger policies and the comparison of intervention timings.

This module owns what happens *after* a fit: interventions that change the
dynamics from a time ``tau`` on (:class:`ReduceExposure`, :class:`ResetNarrative`,
:class:`LowerHazard`, :class:`Relieve`), policies that choose ``tau``
(:class:`At`, :class:`FeedbackRule`, :class:`PosteriorTrigger`,
:class:`Never`), and :func:`compare_timings`, which simulates every scenario
for every posterior draw with common random numbers and returns labelled
outcomes.  It does not know the process or transition equations: the
constraint moves by :func:`pathlock.processes.simulate_paths` and the regimes
by the model's own transition probabilities, handed in as a callable
(:class:`Worlds`); the pure core is :func:`simulate_scenarios`.

Counterfactuals follow abduction, action, prediction.  Within the observed
window each draw keeps its own luck: the constraint shocks implied by its
posterior path (the inverse of :func:`pathlock.processes.transition`) and
regime uniforms drawn uniformly inside the interval that reproduces its
FFBS regime path.  Beyond the data the shocks and uniforms are fresh and
seeded.  Every scenario uses the same shocks and uniforms, so the baseline
(:class:`Never`) reproduces the fitted path exactly and differences between
scenarios are the interventions' effects, not noise.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd
import xarray as xr
from numpy.typing import ArrayLike, NDArray

from pathlock import dims, processes, regimes
from pathlock.errors import InterventionError
from pathlock.hmm import _forward_backward, _standardise

__all__ = [
    "Intervention",
    "ReduceExposure",
    "ResetNarrative",
    "LowerHazard",
    "Relieve",
    "Policy",
    "At",
    "FeedbackRule",
    "PosteriorTrigger",
    "Never",
    "Scenario",
    "timing_scenarios",
    "Worlds",
    "Schedule",
    "ScenarioPaths",
    "simulate_scenarios",
    "abduct_shocks",
    "abduct_uniforms",
    "compare_timings",
    "worlds_from_fit",
    "simulate_worlds",
    "HazardTransitions",
    "ConstantTransitions",
    "FeedbackModel",
    "TimingComparison",
    "PointOfNoReturn",
    "save_timings",
    "load_timings",
]

NEVER = -1  # tau index of a scenario that does not act

# --------------------------------------------------------------------------
# Interventions
# --------------------------------------------------------------------------


def _check_fraction(value: Any, name: str, *, allow_one: bool = True) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InterventionError(f"{name} must be a number in [0, 1]; found {value!r}") from None
    high_ok = v <= 1.0 if allow_one else v < 1.0
    if not (v >= 0.0 and high_ok) or math.isnan(v):
        bound = "[0, 1]" if allow_one else "[0, 1)"
        raise InterventionError(f"{name} must lie in {bound}; found {value!r}")
    return v


def _check_duration(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise InterventionError(
            f"{name} must be a positive number of time steps or None (for good); found {value!r}"
        )
    return int(value)


@dataclass(frozen=True)
class ReduceExposure:
    """Scale exposures down from the step after ``tau``: ``x_t <- (1 - factor) x_t``.

    Parameters
    ----------
    factor : float
        Fraction of the exposure removed, in [0, 1]: 0 changes nothing, 0.5
        halves the exposures, 1 removes them.
    exposures : tuple of str, optional
        Which exposures (names of the ``exposure`` dim); default all.
    duration : int, optional
        Number of steps the reduction lasts; ``None`` for good.

    Raises
    ------
    InterventionError
        ``factor`` outside [0, 1] or a non-positive ``duration``.
    """

    factor: float
    exposures: tuple[str, ...] | None = None
    duration: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "factor", _check_fraction(self.factor, "ReduceExposure.factor"))
        object.__setattr__(
            self, "duration", _check_duration(self.duration, "ReduceExposure.duration")
        )
        if self.exposures is not None:
            names = (self.exposures,) if isinstance(self.exposures, str) else self.exposures
            object.__setattr__(self, "exposures", tuple(names))


@dataclass(frozen=True)
class ResetNarrative:
    """Move the regime back to ``tracking`` at ``tau`` and hold it there.

    A regime that is absorbing and already entered cannot be left: there the
    reset does nothing, for good, and the outcome ``reset_blocked`` says so.
    Elsewhere the regime is set to ``tracking`` at ``tau`` and kept there for
    ``duration`` further steps (a campaign that maintains the narrative), after
    which it evolves freely again.

    Parameters
    ----------
    duration : int, optional
        Steps after ``tau`` during which the regime is held at ``tracking``;
        ``None`` for good.  A one-off reset is ``duration=0``.
    """

    duration: int | None = None

    def __post_init__(self) -> None:
        d = self.duration
        if d is not None and (isinstance(d, bool) or not isinstance(d, int | np.integer) or d < 0):
            raise InterventionError(
                f"ResetNarrative.duration must be an integer >= 0 or None (for good); found {d!r}"
            )


@dataclass(frozen=True)
class LowerHazard:
    """Scale down the probability of moving into non-tracking regimes after ``tau``.

    ``P(i -> j) <- (1 - factor) P(i -> j)`` for every target ``j`` in ``into``
    (``j != i``); the removed probability goes to staying in ``i``.

    Parameters
    ----------
    factor : float
        Fraction of the hazard removed, in [0, 1].
    into : tuple of str, optional
        Target regimes; default every regime but the tracking one.
    duration : int, optional
        Number of steps it lasts; ``None`` for good.
    """

    factor: float
    into: tuple[str, ...] | None = None
    duration: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "factor", _check_fraction(self.factor, "LowerHazard.factor"))
        object.__setattr__(self, "duration", _check_duration(self.duration, "LowerHazard.duration"))
        if self.into is not None:
            names = (self.into,) if isinstance(self.into, str) else self.into
            object.__setattr__(self, "into", tuple(names))


@dataclass(frozen=True)
class Relieve:
    """Lower the constraint by ``amount`` at ``tau`` (once).

    Allowed for reversible processes (``random_walk``, ``ar1``) and for
    ``hysteresis``, whose constraint is not pushed below its baseline; refused
    for a ``ratchet`` (see :func:`pathlock.processes.relieve`), before any
    simulation starts.

    Parameters
    ----------
    amount : float
        Non-negative relief, in units of the constraint.
    """

    amount: float

    def __post_init__(self) -> None:
        try:
            v = float(self.amount)
        except (TypeError, ValueError):
            raise InterventionError(
                f"Relieve.amount must be a non-negative number; found {self.amount!r}"
            ) from None
        if not v >= 0.0 or not math.isfinite(v):
            raise InterventionError(
                f"Relieve.amount must be finite and >= 0; found {self.amount!r}"
            )
        object.__setattr__(self, "amount", v)


Intervention = ReduceExposure | ResetNarrative | LowerHazard | Relieve

# --------------------------------------------------------------------------
# Policies
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class At:
    """Act at a fixed time.

    Parameters
    ----------
    time : label
        A label of the data's ``time`` coord or of its continuation over the
        horizon (dates continue at the data's frequency, integers at their step).
    """

    time: Any


@dataclass(frozen=True)
class FeedbackRule:
    """Act the first time a feedback signal crosses a threshold (a rule-based safeguard).

    The rule watches what the system listens to: the observed signal within
    the data, the simulated signal beyond it.  When the feedback decouples
    from the constraint the signal stays quiet and the rule fires late or never.

    Parameters
    ----------
    signal : str
        A label of the ``signal`` dim.
    threshold : float
    direction : {"above", "below"}
        Fire when the signal is above (below) the threshold.
    start : label, optional
        First time at which the rule is watched; default the first time.
    """

    signal: str
    threshold: float
    direction: Literal["above", "below"] = "above"
    start: Any = None

    def __post_init__(self) -> None:
        if self.direction not in ("above", "below"):
            raise InterventionError(
                f"FeedbackRule.direction must be 'above' or 'below'; found {self.direction!r}"
            )
        if not isinstance(self.threshold, int | float | np.number) or not math.isfinite(
            float(self.threshold)
        ):
            raise InterventionError(
                f"FeedbackRule.threshold must be a finite number; found {self.threshold!r}"
            )


@dataclass(frozen=True)
class PosteriorTrigger:
    """Act the first time the filtered probability of decoupling exceeds ``p``.

    Within the data the probability is the fit's filtered ``P(S_t not tracking
    | y_1..t)`` for the draw; beyond it the same forward filter runs on the
    draw's simulated feedback, under the draw's parameters.

    Parameters
    ----------
    p : float
        Probability threshold in (0, 1).
    regimes : tuple of str, optional
        Which regimes count as decoupled; default every non-tracking regime.
    start : label, optional
        First time watched; default the first time.
    """

    p: float
    regimes: tuple[str, ...] | None = None
    start: Any = None

    def __post_init__(self) -> None:
        try:
            v = float(self.p)
        except (TypeError, ValueError):
            raise InterventionError(
                f"PosteriorTrigger.p must be in (0, 1); found {self.p!r}"
            ) from None
        if not 0.0 < v < 1.0:
            raise InterventionError(f"PosteriorTrigger.p must lie in (0, 1); found {self.p!r}")
        object.__setattr__(self, "p", v)
        if self.regimes is not None:
            names = (self.regimes,) if isinstance(self.regimes, str) else self.regimes
            object.__setattr__(self, "regimes", tuple(names))


@dataclass(frozen=True)
class Never:
    """Never act: the baseline, always part of a comparison."""


Policy = At | FeedbackRule | PosteriorTrigger | Never

# --------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """A named scenario: interventions applied together at the time a policy chooses.

    Parameters
    ----------
    name : str
        Label on the ``scenario`` dim.
    interventions : Intervention or sequence of Intervention
    policy : Policy
    cost_per_step : float
        Cost charged for every step in which an intervention of the scenario
        is in force (a one-off intervention counts one step).
    """

    name: str
    interventions: tuple[Intervention, ...] = ()
    policy: Policy = field(default_factory=Never)
    cost_per_step: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InterventionError(
                f"Scenario.name must be a non-empty string; found {self.name!r}"
            )
        items = self.interventions
        if isinstance(items, Intervention):
            items = (items,)
        items = tuple(items)
        for item in items:
            if not isinstance(item, Intervention):
                raise InterventionError(
                    f"scenario {self.name!r}: {item!r} is not an intervention; expected "
                    "ReduceExposure, ResetNarrative, LowerHazard or Relieve"
                )
        object.__setattr__(self, "interventions", items)
        if not isinstance(self.policy, At | FeedbackRule | PosteriorTrigger | Never):
            raise InterventionError(
                f"scenario {self.name!r}: policy {self.policy!r} is not a policy; expected "
                "At, FeedbackRule, PosteriorTrigger or Never"
            )
        cost = float(self.cost_per_step)
        if not math.isfinite(cost) or cost < 0:
            raise InterventionError(
                f"scenario {self.name!r}: cost_per_step must be finite and >= 0; found "
                f"{self.cost_per_step!r}"
            )
        object.__setattr__(self, "cost_per_step", cost)


def timing_scenarios(
    interventions: Intervention | Sequence[Intervention],
    times: Sequence[Any],
    *,
    name: str = "at {time}",
    cost_per_step: float = 0.0,
) -> list[Scenario]:
    """Build a family of scenarios that apply the same interventions at different fixed times.

    Parameters
    ----------
    interventions : Intervention or sequence of Intervention
    times : sequence of time labels
    name : str
        Format string for the scenario names; ``{time}`` is the label.
    cost_per_step : float

    Returns
    -------
    list of Scenario
        One :class:`At` scenario per time, in the order given.

    Examples
    --------
    >>> fam = timing_scenarios(ReduceExposure(0.5), [10, 20, 40])
    >>> [s.name for s in fam]
    ['at 10', 'at 20', 'at 40']
    """
    items = (interventions,) if isinstance(interventions, Intervention) else tuple(interventions)
    return [Scenario(name.format(time=_label_str(t)), items, At(t), cost_per_step) for t in times]


def _label_str(label: Any) -> str:
    if isinstance(label, pd.Timestamp | np.datetime64):
        ts = pd.Timestamp(label)
        return ts.strftime("%Y-%m-%d") if ts == ts.normalize() else str(ts)
    return str(label)


# --------------------------------------------------------------------------
# The numeric world: what a fit knows, as arrays with positions
# --------------------------------------------------------------------------

Transitions = Callable[..., NDArray[np.float64]]


@dataclass(frozen=True, eq=False)
class Worlds:
    """The posterior as numeric inputs of the scenario simulator (one world per draw).

    Arrays carry positions; labels live in :attr:`coords`.  Build one from a
    fit with :func:`worlds_from_fit`, or directly (tests, benchmarks).  The
    sample axis is the flattened (chain, draw) of the draws used, ``sample =
    chain * n_draws + draw``.

    Attributes
    ----------
    process : str
        Constraint process (a key of :data:`pathlock.processes.PROCESSES`).
    params : mapping of str to ndarray
        Process parameters as :func:`pathlock.processes.simulate_paths` takes
        them: ``mu``, ``sigma`` (sample, unit), ``beta`` (sample, unit,
        exposure) with exposures, and the process's own (sample, unit).
    constraint : ndarray (sample, unit, time)
        Each draw's constraint path over the data.
    regimes : ndarray of int (sample, unit, time)
        Each draw's regime path over the data (drawn by FFBS).
    filtered : ndarray (sample, unit, time, regime)
        Filtered regime probabilities over the data.
    transitions : callable
        ``transitions(c_prev, w, sample, unit) -> P``: transition probabilities
        ``P[n, i, j] = P(S_t = j | S_(t-1) = i)`` (n, regime, regime) for a
        flat list of n elements with lagged constraint ``c_prev`` (n,),
        covariates of the step ``w`` (n, exog) or None, and the positions of
        their draw ``sample`` (n,) and ``unit`` (n,).  This must be the
        model's own definition (:class:`HazardTransitions`,
        :class:`ConstantTransitions`).
    absorbing : tuple of int
        Regimes that are never left.
    feedback : ndarray ([sample,] unit, time, signal)
        Observed feedback signals (NaN where missing); a leading sample axis
        gives each world its own observations (synthetic worlds).
    feedback_draw : callable
        ``feedback_draw(c, s, rng) -> y``: random signals (sample, unit, time,
        signal) given the constraint (sample, unit, time) and regime indices
        (sample, unit, time), under each draw's parameters.
    feedback_logp : callable
        ``feedback_logp(y, c) -> log p(y | c, S = k)`` (sample, unit, time,
        regime): the regime-dependent part of the emission that the forward
        filter uses; a missing signal (NaN) contributes nothing.
    exposures : ndarray (unit, time, exposure) or None
    covariates : ndarray (unit, time, exog) or None
        Transition covariates.
    coords : mapping
        Labels of ``chain`` and ``draw`` (of the draws used), ``unit``,
        ``time`` (the data's), ``regime``, ``signal``, ``exposure``.
    hold_until : int
        No regime move at time positions before this one (the spec's
        ``regimes.known_tracking``), in the data and in every scenario.
    """

    process: str
    params: Mapping[str, NDArray[np.float64]]
    constraint: NDArray[np.float64]
    regimes: NDArray[np.int64]
    filtered: NDArray[np.float64]
    transitions: Transitions
    absorbing: tuple[int, ...]
    feedback: NDArray[np.float64]
    feedback_draw: Callable[..., NDArray[np.float64]]
    feedback_logp: Callable[..., NDArray[np.float64]]
    exposures: NDArray[np.float64] | None
    covariates: NDArray[np.float64] | None
    coords: Mapping[str, Any]
    hold_until: int = 0

    @property
    def n_samples(self) -> int:
        """Number of draws (flattened chain x draw)."""
        return int(self.constraint.shape[0])

    @property
    def n_units(self) -> int:
        """Number of units."""
        return int(self.constraint.shape[1])

    @property
    def n_steps(self) -> int:
        """Number of data time points."""
        return int(self.constraint.shape[2])

    @property
    def n_regimes(self) -> int:
        """Number of regimes."""
        return int(self.filtered.shape[-1])


# --------------------------------------------------------------------------
# Abduction: each draw's luck within the data
# --------------------------------------------------------------------------


def _step_params(process: str, params: Mapping[str, NDArray[np.float64]]) -> dict[str, Any]:
    info = processes.PROCESSES[process]
    return {k: np.asarray(params[k])[..., None] for k in ("mu", *info.parameters) if k in params}


def abduct_shocks(
    process: str,
    params: Mapping[str, ArrayLike],
    constraint: ArrayLike,
    exposures: ArrayLike | None = None,
) -> NDArray[np.float64]:
    """Standard-normal shocks that reproduce a constraint path under the process.

    The inverse of :func:`pathlock.processes.transition` for its innovation:
    each process adds ``exp(l_t)`` (log-increment processes) or ``l_t`` to a
    function of ``C_(t-1)``, which :func:`~pathlock.processes.transition`
    evaluates at a zero increment.

    Parameters
    ----------
    process : str
    params : mapping of array_like
        As for :func:`pathlock.processes.simulate_paths`, (...,).
    constraint : array_like (..., time)
    exposures : array_like (..., time, exposure), optional
        Exposures of each time point (the first is unused).

    Returns
    -------
    ndarray (..., time)
        Shocks; entry 0 is 0 (the first time point is the initial state).
    """
    info = processes.PROCESSES[process]
    c = np.asarray(constraint, dtype=float)
    p = {k: np.asarray(v, dtype=float) for k, v in params.items()}
    prev, cur = c[..., :-1], c[..., 1:]
    zero = -np.inf if info.log_increment else 0.0
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        base = processes.transition(process, prev, zero, _step_params(process, p), np)
        step = cur - base
        if info.log_increment:
            # A path that touches its floor has a zero increment; keep it finite.
            step = np.log(np.maximum(step, np.finfo(float).tiny))
    x = None if exposures is None else np.asarray(exposures, dtype=float)[..., 1:, :]
    mean = processes.innovation_mean(process, p, x)
    mean = np.asarray(mean, dtype=float)
    if mean.ndim < step.ndim:
        mean = mean[..., None]
    out = np.zeros(c.shape)
    out[..., 1:] = (step - mean) / p["sigma"][..., None]
    return out


def abduct_uniforms(
    regimes: NDArray[np.int64],
    trans: NDArray[np.float64],
    rng: np.random.Generator,
) -> NDArray[np.float64]:
    """Uniforms that reproduce a regime path under inverse-CDF sampling.

    Given ``S_(t-1) = i`` and ``S_t = j`` the uniform that drew ``S_t`` lies in
    ``[F_i(j - 1), F_i(j))`` (``F_i`` the cumulative row ``i``), uniformly:
    the exact conditional law of the exogenous noise given the path.

    Parameters
    ----------
    regimes : ndarray of int (..., time)
    trans : ndarray (..., time, regime, regime)
        Transition probabilities into each time point (entry 0 unused).
    rng : numpy Generator

    Returns
    -------
    ndarray (..., time)
        Entry 0 is unused (set to 0.5).
    """
    prev = regimes[..., :-1]
    cur = regimes[..., 1:]
    rows = np.take_along_axis(trans[..., 1:, :, :], prev[..., None, None], axis=-2)[..., 0, :]
    cdf = np.cumsum(rows, axis=-1)
    hi = np.take_along_axis(cdf, cur[..., None], axis=-1)[..., 0]
    lo = np.where(
        cur > 0, np.take_along_axis(cdf, np.maximum(cur - 1, 0)[..., None], -1)[..., 0], 0
    )
    out = np.full(regimes.shape, 0.5)
    v = rng.random(cur.shape)
    out[..., 1:] = np.clip(lo + v * (hi - lo), 0.0, np.nextafter(1.0, 0.0))
    return out


# --------------------------------------------------------------------------
# The pure simulation core
# --------------------------------------------------------------------------


class Schedule(NamedTuple):
    """What each scenario does, aligned on the time axis.

    Attributes
    ----------
    tau : ndarray of int (scenario, sample, unit)
        Time index at which the scenario acts; -1 for never.
    exposure_scale : ndarray (scenario, sample, unit, time, exposure) or None
        Multiplier of the exposures of each step.
    hazard_scale : ndarray (scenario, sample, unit, time, regime) or None
        Multiplier of the probability of moving into each regime at each step.
    relief : ndarray (scenario,)
        Amount relieved at ``tau``.
    reset : ndarray of bool (scenario,)
        Whether the scenario resets the narrative at ``tau``.
    reset_hold : ndarray of int (scenario,), optional
        Steps after ``tau`` during which a reset holds the regime at tracking
        (default 0: a one-off reset).
    """

    tau: NDArray[np.int64]
    exposure_scale: NDArray[np.float64] | None
    hazard_scale: NDArray[np.float64] | None
    relief: NDArray[np.float64]
    reset: NDArray[np.bool_]
    reset_hold: NDArray[np.int64] | None = None


class ScenarioPaths(NamedTuple):
    """Output of :func:`simulate_scenarios`.

    Attributes
    ----------
    constraint : ndarray (scenario, sample, unit, time)
    regime : ndarray of int (scenario, sample, unit, time)
    reset_blocked : ndarray of bool (scenario, sample, unit)
        A reset was due but the regime at ``tau`` was absorbing.
    """

    constraint: NDArray[np.float64]
    regime: NDArray[np.int64]
    reset_blocked: NDArray[np.bool_]


def _n_regimes(transitions: Transitions) -> int:
    """Ask the model for one transition matrix to learn the number of regimes."""
    probe = transitions(np.zeros(1), None, np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64))
    return int(np.shape(probe)[-1])


def _scale_hazard(p: NDArray[np.float64], scale: NDArray[np.float64]) -> NDArray[np.float64]:
    """Scale moves into each regime j != i by ``scale[..., j]``; the rest stays put."""
    k = p.shape[-1]
    eye = np.eye(k, dtype=bool)
    moved = np.where(eye, 0.0, p * scale[..., None, :])
    stay = 1.0 - moved.sum(axis=-1)
    return moved + eye * stay[..., None]


def simulate_scenarios(
    process: str,
    params: Mapping[str, ArrayLike],
    schedule: Schedule,
    shocks: ArrayLike,
    uniforms: ArrayLike,
    *,
    init: ArrayLike,
    init_regime: ArrayLike,
    transitions: Transitions,
    exposures: ArrayLike | None = None,
    covariates: ArrayLike | None = None,
    absorbing: Sequence[int] = (),
    baseline_regime: ArrayLike | None = None,
    hold_until: int = 0,
) -> ScenarioPaths:
    """Simulate every scenario for every draw with common random numbers.

    Time index 0 is the initial state; step ``t >= 1`` moves from ``t - 1`` to
    ``t`` with ``shocks[..., t]`` and ``uniforms[..., t]``, shared by all
    scenarios.  A scenario acting at ``tau`` relieves the constraint and
    resets the regime at ``tau`` (after that step), and scales exposures and
    hazards of the steps after ``tau`` as its schedule says.

    Parameters
    ----------
    process : str
    params : mapping of array_like
        Process parameters (sample, unit), ``beta`` (sample, unit, exposure).
    schedule : Schedule
    shocks, uniforms : array_like (sample, unit, time)
    init : array_like (sample, unit)
        Constraint at time index 0.
    init_regime : array_like of int (sample, unit)
    transitions : callable
        See :class:`Worlds`.
    exposures : array_like (unit, time, exposure), optional
    covariates : array_like (unit, time, exog), optional
    absorbing : sequence of int
    baseline_regime : array_like of int (sample, unit, time), optional
        The regime paths of the same worlds without intervention (simulated
        with the same uniforms).  Before ``tau`` a scenario's world is the
        baseline's, so its regimes are copied rather than simulated again;
        the result is identical, only faster.
    hold_until : int
        No regime move at time indices below this one (``regimes.known_tracking``).

    Returns
    -------
    ScenarioPaths
    """
    shocks = np.asarray(shocks, dtype=float)
    uniforms = np.asarray(uniforms, dtype=float)
    tau = np.asarray(schedule.tau)
    n_scen = tau.shape[0]
    n_times = shocks.shape[-1]
    lead = (n_scen, *shocks.shape[:-1])
    p = {k: np.asarray(v, dtype=float) for k, v in params.items()}
    info = processes.PROCESSES[process]
    relief = np.asarray(schedule.relief, dtype=float)[:, None, None] * np.ones(lead)
    relief = np.where(tau >= 0, relief, 0.0)
    time_idx = np.arange(n_times)
    c0 = np.broadcast_to(np.asarray(init, dtype=float), lead)
    if info.reversible:
        c0 = np.where(tau == 0, processes.relieve(process, c0, relief, p), c0)
    x = None
    if exposures is not None:
        x = np.asarray(exposures, dtype=float)[None, None]
        if schedule.exposure_scale is not None:
            x = x * schedule.exposure_scale
        x = np.broadcast_to(x, (*lead, n_times, x.shape[-1]))[..., 1:, :]
    relief_t = None
    if np.any(relief != 0.0):
        relief_t = np.where(time_idx[1:] == tau[..., None], relief[..., None], 0.0)
    constraint = np.empty((*lead, n_times))
    constraint[..., 0] = c0
    constraint[..., 1:] = processes.simulate_paths(
        process,
        p,
        np.broadcast_to(shocks[..., 1:], (*lead, n_times - 1)),
        init=c0,
        exposures=x,
        relief=relief_t,
    )

    n_units = lead[-1]
    k = _n_regimes(transitions)
    # Time-major copies: each step reads one contiguous row.
    c_tm = np.ascontiguousarray(constraint.reshape(-1, n_times).T)
    n_el = c_tm.shape[1]
    sample_of = np.broadcast_to(np.arange(lead[1])[None, :, None], lead).ravel()
    unit_of = np.broadcast_to(np.arange(n_units)[None, None, :], lead).ravel()
    u_tm = np.ascontiguousarray(uniforms.reshape(-1, n_times).T)
    u_col = sample_of * n_units + unit_of
    haz = None
    if schedule.hazard_scale is not None:
        haz = schedule.hazard_scale.reshape(n_el, n_times, -1)
    is_absorbing = np.zeros(k, dtype=bool)
    is_absorbing[list(absorbing)] = True
    w_all = None if covariates is None else np.asarray(covariates, dtype=float)
    base_tm = None
    if baseline_regime is not None:
        base_tm = np.ascontiguousarray(np.asarray(baseline_regime).reshape(-1, n_times).T)
    regime = np.empty((n_times, n_el), dtype=np.int64)
    s = np.broadcast_to(np.asarray(init_regime, dtype=np.int64), lead).ravel().copy()
    flat_tau = tau.ravel()
    never = flat_tau < 0
    reset_due = np.broadcast_to(schedule.reset[:, None, None], lead).ravel() & ~never
    hold = (
        np.zeros(tau.shape[0], dtype=np.int64)
        if schedule.reset_hold is None
        else schedule.reset_hold
    )
    hold_end = flat_tau + np.broadcast_to(np.asarray(hold)[:, None, None], lead).ravel()
    blocked = np.zeros(n_el, dtype=bool)

    def _apply_reset(t: int) -> None:
        due = reset_due & (flat_tau == t)
        if due.any():
            absorbed = is_absorbing[s]
            blocked[due & absorbed] = True
            s[due & ~absorbed] = 0

    _apply_reset(0)
    regime[0] = s
    for t in range(1, n_times):
        moving = ~is_absorbing[s]
        if base_tm is not None:
            # Up to tau (and throughout for a scenario that never acts) every
            # world is the baseline's: copy it instead of asking the model.
            same = never | (t <= flat_tau)
            s[same] = base_tm[t, u_col[same]]
            moving &= ~same
        # An absorbed element never moves again: only the others need the model.
        ids = np.flatnonzero(moving)
        if ids.size and t >= hold_until:
            w = None if w_all is None else w_all[unit_of[ids], t]
            probs = transitions(c_tm[t - 1, ids], w, sample_of[ids], unit_of[ids])
            if haz is not None:
                probs = _scale_hazard(probs, haz[ids, t])
            row = probs[np.arange(ids.size), s[ids]]
            cdf = np.cumsum(row, axis=-1)
            u = u_tm[t, u_col[ids]]
            s[ids] = np.minimum((u[:, None] >= cdf).sum(axis=-1), k - 1)
        held = reset_due & ~blocked & (t > flat_tau) & (t <= hold_end)
        s[held] = 0
        _apply_reset(t)
        regime[t] = s
    regime = np.ascontiguousarray(regime.T).reshape(*lead, n_times)
    blocked = blocked.reshape(lead)
    return ScenarioPaths(constraint, regime, blocked)


# --------------------------------------------------------------------------
# From a fit to Worlds: the model's own transitions and emissions, per draw
# --------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class HazardTransitions:
    """Time-varying transitions of the model: :func:`pathlock.regimes.hazard_logits` per draw.

    Attributes
    ----------
    structure : {"free", "sticky", "absorbing"}
    intercept : ndarray (sample, unit or 1, regime, regime)
    slope, eta : ndarray or None
        (sample, unit or 1, regime, regime) and (sample, unit or 1, regime, regime, exog).
    """

    structure: str
    intercept: NDArray[np.float64]
    slope: NDArray[np.float64] | None = None
    eta: NDArray[np.float64] | None = None

    def __call__(
        self,
        c_prev: NDArray[np.float64],
        w: NDArray[np.float64] | None,
        sample: NDArray[np.int64],
        unit: NDArray[np.int64],
    ) -> NDArray[np.float64]:
        """Return transition probabilities (n, regime, regime); see :class:`Worlds`."""

        def pick(a: NDArray[np.float64] | None) -> Any:
            if a is None:
                return None
            return a[sample, unit if a.shape[1] > 1 else 0]

        c_prev = np.asarray(c_prev, dtype=float)
        covs = None if self.eta is None or w is None else np.asarray(w, dtype=float)[:, None]
        logits = regimes.hazard_logits(
            pick(self.intercept),
            pick(self.slope),
            c_prev[:, None],
            None if covs is None else pick(self.eta),
            covs,
            xp=np,
        )
        probs = regimes.transition_probabilities(logits, self.structure)  # type: ignore[arg-type]
        return probs[:, 0]

    def subset(self, idx: NDArray[np.int64]) -> HazardTransitions:
        """Restrict to the draws ``idx``."""
        return HazardTransitions(
            self.structure,
            self.intercept[idx],
            None if self.slope is None else self.slope[idx],
            None if self.eta is None else self.eta[idx],
        )


@dataclass(frozen=True, eq=False)
class ConstantTransitions:
    """Constant transition matrices per draw, (sample, unit or 1, regime, regime)."""

    probs: NDArray[np.float64]

    def __call__(
        self,
        c_prev: NDArray[np.float64],
        w: NDArray[np.float64] | None,
        sample: NDArray[np.int64],
        unit: NDArray[np.int64],
    ) -> NDArray[np.float64]:
        """Return transition probabilities (n, regime, regime); the constraint plays no part."""
        return self.probs[sample, unit if self.probs.shape[1] > 1 else 0]

    def subset(self, idx: NDArray[np.int64]) -> ConstantTransitions:
        """Restrict to the draws ``idx``."""
        return ConstantTransitions(self.probs[idx])


@dataclass(frozen=True, eq=False)
class FeedbackModel:
    """Feedback emissions per draw, ``eta_mk = a_mk + b_m w_k C``, via :mod:`pathlock.observations`.

    Attributes
    ----------
    families : tuple of str
        Family of each signal.
    intercept, loading : ndarray (sample, unit, signal, regime)
        ``a_mk`` and ``b_m w_k``.
    nuisance : mapping of str to ndarray (sample, unit, signal, regime)
        ``sigma``, ``df``, ``alpha`` as the families need them.
    draw : bool
        Whether calling the object draws signals (``True``) or evaluates
        their log-density (``False``); see :class:`Worlds`.
    """

    families: tuple[str, ...]
    intercept: NDArray[np.float64]
    loading: NDArray[np.float64]
    nuisance: Mapping[str, NDArray[np.float64]]
    draw: bool = True

    def _eta(self, c: NDArray[np.float64]) -> NDArray[np.float64]:
        return self.intercept[:, :, None] + self.loading[:, :, None] * c[..., None, None]

    def _params(self, m: int, take: Callable[[NDArray[np.float64]], Any]) -> dict[str, Any]:
        from pathlock import observations

        return {
            k: take(self.nuisance[k][:, :, None, m])
            for k in observations.NUISANCE[self.families[m]]
        }

    def __call__(self, *args: Any) -> NDArray[np.float64]:
        """``(c, s, rng) -> y`` when drawing, ``(y, c) -> logp`` otherwise."""
        from pathlock import observations

        if self.draw:
            c, s, rng = args
            eta = self._eta(np.asarray(c, dtype=float))  # (S, U, T, M, K)
            out = np.empty(eta.shape[:-1])
            for m, family in enumerate(self.families):
                eta_m = np.take_along_axis(eta[..., m, :], s[..., None], axis=-1)[..., 0]

                def take_s(a: NDArray[np.float64], s: Any = s) -> Any:
                    return np.take_along_axis(
                        np.broadcast_to(a, (*s.shape, a.shape[-1])), s[..., None], -1
                    )[..., 0]

                out[..., m] = observations.draw(family, eta_m, self._params(m, take_s), rng)
            return out
        y, c = args
        eta = self._eta(np.asarray(c, dtype=float))
        total = np.zeros(eta.shape[:-2] + eta.shape[-1:])
        for m, family in enumerate(self.families):
            params = self._params(m, lambda a: a)
            logp = observations.log_density(
                family, np.asarray(y)[..., m, None], eta[..., m, :], params
            )
            total += np.asarray(logp.eval() if hasattr(logp, "eval") else logp, dtype=float)
        return total

    def subset(self, idx: NDArray[np.int64]) -> FeedbackModel:
        """Restrict to the draws ``idx``."""
        return FeedbackModel(
            self.families,
            self.intercept[idx],
            self.loading[idx],
            {k: v[idx] for k, v in self.nuisance.items()},
            self.draw,
        )


def _draw_values(
    post: xr.Dataset, name: str, idx: NDArray[np.int64], n_units: int, tail: Sequence[str]
) -> NDArray[np.float64]:
    """Return a posterior variable at the draws ``idx`` as (sample, unit, *tail)."""
    da = post[name]
    stacked = da.stack(_sample=list(dims.SAMPLE_DIMS)).transpose("_sample", ...)
    values = stacked.values[idx]
    extra = [d for d in stacked.dims if d != "_sample"]
    has_unit = dims.UNIT in extra
    order = ([dims.UNIT] if has_unit else []) + [d for d in tail if d in extra]
    missing = [d for d in extra if d not in order]
    if missing:
        raise InterventionError(
            f"posterior variable {name!r} has dims {da.dims}; expected (chain, draw[, unit]"
            f"{''.join(', ' + t for t in tail)})"
        )
    perm = [0] + [1 + extra.index(d) for d in order]
    values = np.transpose(values, perm)
    if not has_unit:
        values = values[:, None]
    # Dims of the tail the variable lacks (e.g. feedback_a shared across regimes) broadcast.
    for pos, d in enumerate(tail):
        if d not in extra:
            values = np.expand_dims(values, 2 + pos)
    return np.broadcast_to(values, (values.shape[0], n_units, *values.shape[2:])).astype(float)


def worlds_from_fit(
    fit: Any, *, n_draws: int | None = None, rng: np.random.Generator | int | None = None
) -> Worlds:
    """Turn a fit of the decoupling model into :class:`Worlds` (one per posterior draw used).

    Parameters
    ----------
    fit : Fit
        A fit of the ``decoupling`` family.
    n_draws : int, optional
        Draws per chain: a seeded subset of draw indices shared by all chains.
    rng : numpy Generator or seed
        For the subset and the FFBS regime paths.

    Returns
    -------
    Worlds

    Raises
    ------
    InterventionError
        A fit of another family, or one without the latent constraint.
    """
    from pathlock.hmm import sample_paths

    gen = np.random.default_rng(rng)
    spec = fit.spec
    if getattr(spec, "family", None) != "decoupling":
        raise InterventionError(
            f"compare_timings needs a fit of the 'decoupling' family; found "
            f"{getattr(spec, 'family', type(spec).__name__)!r}"
        )
    post = fit.idata.posterior
    chains = post[dims.CHAIN].values
    draws = post[dims.DRAW].values
    keep = np.arange(len(draws))
    if n_draws is not None and n_draws < len(draws):
        keep = np.sort(gen.choice(len(draws), size=n_draws, replace=False))
    idx = (np.arange(len(chains))[:, None] * len(draws) + keep[None]).ravel()
    data = fit.data
    units = np.asarray(data.units)
    n_u = len(units)

    if "constraint" in post:
        constraint = _draw_values(post, "constraint", idx, n_u, [dims.TIME])
    else:
        extras = fit.regime_inputs().extras
        if "constraint" not in extras:
            raise InterventionError(
                "this fit has no latent constraint (posterior variable or Built.extras "
                "'constraint'); compare_timings needs it"
            )
        constraint = np.asarray(extras["constraint"], dtype=float)[idx]
        constraint = constraint.reshape(len(idx), n_u, -1)

    def values(name: str, tail: Sequence[str]) -> NDArray[np.float64]:
        if name in post:
            return _draw_values(post, name, idx, n_u, tail)
        from pathlock.spec import Fixed

        prior = spec.prior(name)
        if not isinstance(prior, Fixed):
            raise InterventionError(
                f"parameter {name!r} is neither in the posterior nor fixed in the spec"
            )
        v = np.asarray(prior.value, dtype=float)
        v = v.reshape(v.shape + (1,) * (len(tail) - v.ndim))
        return np.broadcast_to(v, (len(idx), n_u, *v.shape)).astype(float)

    process = spec.constraint.process
    info = processes.PROCESSES[process]
    exposure_names = tuple(spec.constraint.exposures)
    params: dict[str, NDArray[np.float64]] = {
        "mu": values("constraint_mu", []),
        "sigma": values("constraint_sigma", []),
    }
    if exposure_names:
        params["beta"] = values("constraint_beta", [dims.EXPOSURE])
    for name in info.parameters:
        # Hysteresis recovers toward the path's own first level (decoupling._with_baseline).
        params[name] = (
            constraint[..., 0] if name == "baseline" else values(f"constraint_{name}", [])
        )

    regime_names = tuple(spec.regime_names)
    k = len(regime_names)
    fb = fit.forward_backward()
    ri = fit.regime_inputs()
    if k > 1:
        li = np.broadcast_to(ri.log_init[idx], (len(idx), n_u, k)).reshape(len(idx) * n_u, k)
        lt_all = ri.log_trans[idx]
        lt = np.broadcast_to(lt_all, (len(idx), n_u, *lt_all.shape[2:]))
        lt = lt.reshape(len(idx) * n_u, *lt_all.shape[2:])
        le = ri.log_emit[idx].reshape(len(idx) * n_u, *ri.log_emit.shape[2:])
        regime_paths = sample_paths(li, lt, le, rng=gen).reshape(len(idx), n_u, -1)
        filtered = fb.filtered.reshape(-1, n_u, *fb.filtered.shape[1:])[idx]
    else:
        lt_all = np.zeros((len(idx), 1, 1, 1, 1))
        regime_paths = np.zeros(constraint.shape, dtype=np.int64)
        filtered = np.ones((*constraint.shape, 1))

    structure = spec.regimes.structure
    absorbing = (k - 1,) if structure == "absorbing" and k > 1 else ()
    cov_names = tuple(spec.regimes.covariates)
    transitions: Transitions
    if spec.time_varying:
        rr = [dims.REGIME_FROM, dims.REGIME_TO]
        transitions = HazardTransitions(
            structure,
            values("hazard_intercept", rr),
            values("hazard_slope", rr) if spec.regimes.hazard_on_constraint else None,
            values("hazard_eta", [*rr, dims.EXOG]) if cov_names else None,
        )
    else:
        transitions = ConstantTransitions(np.exp(lt_all[:, :, 0]))

    signals = tuple(spec.signal_names)
    families = tuple(s.family for s in spec.feedback)
    sr = [dims.SIGNAL, dims.REGIME]
    a = values("feedback_a", sr)
    b = values("feedback_b", [dims.SIGNAL])
    w = np.ones((len(idx), n_u, k))
    if k > 1:
        wv = post["feedback_w"]
        wv_all = _draw_values(
            post,
            "feedback_w",
            idx,
            n_u,
            [d for d in wv.dims if d not in (*dims.SAMPLE_DIMS, dims.UNIT)],
        )
        w = (
            wv_all
            if wv_all.shape[-1] == k
            else np.concatenate([np.ones_like(wv_all[..., :1]), wv_all], -1)
        )
    nuisance = {}
    for key in ("sigma", "df", "alpha"):
        name = f"feedback_{key}"
        if spec.uses(name):
            nuisance[key] = values(name, sr)
    shape = (len(idx), n_u, len(signals), k)
    intercept = np.broadcast_to(a, shape)
    loading = b[..., :, None] * w[:, :, None, :]
    nuisance = {key: np.broadcast_to(v, shape) for key, v in nuisance.items()}

    def stack(cols: Sequence[str]) -> NDArray[np.float64] | None:
        if not cols:
            return None
        return np.stack([np.asarray(data.values[c], dtype=float) for c in cols], axis=-1)

    feedback = stack([s.column for s in spec.feedback])
    return Worlds(
        process=process,
        params=params,
        constraint=constraint,
        regimes=regime_paths,
        filtered=filtered,
        transitions=transitions,
        absorbing=absorbing,
        feedback=feedback if feedback is not None else np.zeros((n_u, constraint.shape[-1], 0)),
        feedback_draw=FeedbackModel(families, intercept, loading, nuisance, True),
        feedback_logp=FeedbackModel(families, intercept, loading, nuisance, False),
        exposures=stack(exposure_names),
        covariates=stack(cov_names),
        hold_until=spec.regimes.known_tracking,
        coords={
            dims.CHAIN: chains,
            dims.DRAW: draws[keep],
            dims.UNIT: units,
            dims.TIME: np.asarray(data.times),
            dims.REGIME: regime_names,
            dims.SIGNAL: signals,
            dims.EXPOSURE: exposure_names,
            dims.EXOG: cov_names,
            "freq": getattr(data, "freq", None),
        },
    )


def _grid_transitions(
    transitions: Transitions, c_prev: NDArray[np.float64], w: NDArray[np.float64] | None
) -> NDArray[np.float64]:
    """Evaluate ``transitions`` on a (sample, unit) grid; ``w`` is (unit, exog) or None."""
    n_s, n_u = c_prev.shape
    sample = np.repeat(np.arange(n_s), n_u)
    unit = np.tile(np.arange(n_u), n_s)
    ww = None if w is None else np.asarray(w)[unit]
    probs = transitions(c_prev.ravel(), ww, sample, unit)
    return probs.reshape(n_s, n_u, *probs.shape[-2:])


def simulate_worlds(
    process: str,
    params: Mapping[str, ArrayLike],
    transitions: Transitions,
    feedback: FeedbackModel,
    *,
    n_steps: int,
    init: ArrayLike,
    seed: int | None,
    n_chains: int = 1,
    exposures: ArrayLike | None = None,
    coords: Mapping[str, Any] | None = None,
    absorbing: Sequence[int] = (),
) -> Worlds:
    """Simulate self-consistent worlds from known parameters (tests, benchmarks, prior studies).

    Each draw's world is simulated from its own parameters with the model's
    definitions (the constraint by :func:`pathlock.processes.simulate_paths`,
    regimes by inverse-CDF sampling of ``transitions``, signals by
    ``feedback``) and observed exactly: its regime path is its true one and its
    filtered probabilities come from its own signals.  Draws that share
    parameters are then a posterior that knows the truth.

    Parameters
    ----------
    process : str
    params : mapping of array_like (sample, unit)
        ``beta`` (sample, unit, exposure) with exposures.
    transitions : callable
        See :class:`Worlds`; every world starts in regime 0.
    feedback : FeedbackModel
        With ``draw=True``.
    n_steps : int
        Number of time points.
    init : array_like (sample, unit)
    seed : int or None
    n_chains : int
        How the sample axis splits into (chain, draw).
    exposures : array_like (unit, time, exposure), optional
    coords : mapping, optional
        Labels (``unit``, ``time``, ``regime``, ``signal``, ``exposure``);
        defaults are positions and ``tracking``, ``decoupled``...
    absorbing : sequence of int

    Returns
    -------
    Worlds
    """
    rng = np.random.default_rng(seed)
    init = np.asarray(init, dtype=float)
    n_s, n_u = init.shape
    k = feedback.intercept.shape[-1]
    shocks = rng.standard_normal((n_s, n_u, n_steps))
    uniforms = rng.random((n_s, n_u, n_steps))
    never = Schedule(np.full((1, n_s, n_u), NEVER), None, None, np.zeros(1), np.zeros(1, bool))
    x = None if exposures is None else np.asarray(exposures, dtype=float)
    paths = simulate_scenarios(
        process,
        params,
        never,
        shocks,
        uniforms,
        init=init,
        init_regime=np.zeros((n_s, n_u), dtype=np.int64),
        transitions=transitions,
        exposures=x,
        absorbing=absorbing,
    )
    c, s = paths.constraint[0], paths.regime[0]
    y = feedback(c, s, rng)
    logp = dataclasses.replace(feedback, draw=False)
    trans = np.empty((n_s, n_u, n_steps, k, k))
    trans[:, :, 0] = np.eye(k)
    for t in range(1, n_steps):
        trans[:, :, t] = _grid_transitions(transitions, c[..., t - 1], None)
    log_init = np.full((n_s * n_u, k), -np.inf)
    log_init[:, 0] = 0.0
    with np.errstate(divide="ignore"):
        lt = np.log(trans).reshape(n_s * n_u, n_steps, k, k)
    le = logp(y, c).reshape(n_s * n_u, n_steps, k)
    _, filt, _, _ = _forward_backward(*_standardise(log_init, lt, le, validate=False))
    base = {
        dims.CHAIN: np.arange(n_chains),
        dims.DRAW: np.arange(n_s // n_chains),
        dims.UNIT: np.arange(n_u),
        dims.TIME: np.arange(n_steps),
        dims.REGIME: ("tracking", "decoupled", *(f"regime{j}" for j in range(2, k)))[:k],
        dims.SIGNAL: tuple(f"signal{m}" for m in range(y.shape[-1])),
        dims.EXPOSURE: () if x is None else tuple(f"exposure{e}" for e in range(x.shape[-1])),
    }
    if n_s % n_chains:
        raise InterventionError(f"{n_s} draws do not split into {n_chains} chains")
    return Worlds(
        process=process,
        params={key: np.asarray(v, dtype=float) for key, v in params.items()},
        constraint=c,
        regimes=s,
        filtered=filt.reshape(n_s, n_u, n_steps, k),
        transitions=transitions,
        absorbing=tuple(absorbing),
        feedback=y,
        feedback_draw=feedback,
        feedback_logp=logp,
        exposures=x,
        covariates=None,
        coords={**base, **(coords or {})},
    )


# --------------------------------------------------------------------------
# Timeline, validation and policies
# --------------------------------------------------------------------------


def _extend_time(labels: Any, horizon: int, freq: Any = None) -> np.ndarray:
    """Continue the data's time labels for ``horizon`` steps at their own spacing."""
    values = np.asarray(labels)
    if horizon == 0:
        return values
    if np.issubdtype(values.dtype, np.datetime64):
        index = pd.DatetimeIndex(values)
        if not isinstance(freq, str):
            freq = pd.DatetimeIndex(values, freq="infer").freq if len(index) >= 3 else None
        if freq is not None:
            more = pd.date_range(index[-1], periods=horizon + 1, freq=freq)[1:]
        else:
            step = index[-1] - index[-2] if len(index) >= 2 else pd.Timedelta(days=1)
            more = pd.DatetimeIndex([index[-1] + step * (k + 1) for k in range(horizon)])
        return np.concatenate([values, more.values.astype(values.dtype)])
    if np.issubdtype(values.dtype, np.number) and len(values) >= 1:
        step = values[-1] - values[-2] if len(values) >= 2 else 1
        return np.concatenate([values, values[-1] + step * np.arange(1, horizon + 1)])
    more = np.asarray([f"+{k}" for k in range(1, horizon + 1)], dtype=object)
    return np.concatenate([values.astype(object), more])


def _time_index(time: np.ndarray, label: Any, what: str) -> int:
    if np.issubdtype(time.dtype, np.datetime64):
        try:
            key = np.datetime64(pd.Timestamp(label)).astype(time.dtype)
        except (TypeError, ValueError):
            key = None
        hits: Any = np.flatnonzero(time == key) if key is not None else []
    else:
        hits = [i for i, v in enumerate(time) if v == label]
    if len(hits) == 0:
        raise InterventionError(
            f"{what}: time {label!r} is neither in the data nor within the horizon; allowed "
            f"times run from {_label_str(time[0])} to {_label_str(time[-1])}"
        )
    return int(hits[0])


def _check_scenarios(
    scenarios: Sequence[Scenario], worlds: Worlds, time: np.ndarray
) -> list[Scenario]:
    """Validate every scenario against the worlds before anything is simulated."""
    items = list(scenarios)
    for s in items:
        if not isinstance(s, Scenario):
            raise InterventionError(f"scenarios must be Scenario objects; found {s!r}")
    names = [s.name for s in items]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise InterventionError(f"scenario name {dup!r} is used twice; names must be unique")
    if not any(isinstance(s.policy, Never) and not s.interventions for s in items):
        if "never" in names:
            raise InterventionError(
                "a scenario is named 'never' but is not the baseline (no interventions, "
                "Never policy); rename it"
            )
        items.insert(0, Scenario("never", (), Never()))
    regimes = list(worlds.coords[dims.REGIME])
    signals = list(worlds.coords.get(dims.SIGNAL, []))
    exposures = list(worlds.coords.get(dims.EXPOSURE, []))
    info = processes.PROCESSES[worlds.process]
    for s in items:
        where = f"scenario {s.name!r}"
        pol = s.policy
        if isinstance(pol, At):
            _time_index(time, pol.time, f"{where}, At")
        if isinstance(pol, FeedbackRule):
            if pol.signal not in signals:
                raise InterventionError(
                    f"{where}: FeedbackRule watches signal {pol.signal!r}, which the model "
                    f"does not have; signals: {signals}"
                )
        if isinstance(pol, PosteriorTrigger):
            if len(regimes) < 2:
                raise InterventionError(f"{where}: PosteriorTrigger needs at least two regimes")
            for r in pol.regimes or ():
                if r not in regimes[1:]:
                    raise InterventionError(
                        f"{where}: PosteriorTrigger regime {r!r} is not a non-tracking "
                        f"regime; allowed: {regimes[1:]}"
                    )
        if isinstance(pol, FeedbackRule | PosteriorTrigger) and pol.start is not None:
            _time_index(time, pol.start, f"{where}, start")
        for item in s.interventions:
            if isinstance(item, Relieve) and not info.reversible and item.amount > 0:
                try:
                    processes.relieve(worlds.process, 0.0, item.amount, {})
                except InterventionError as exc:
                    raise InterventionError(f"{where}: {exc}") from None
            if isinstance(item, ReduceExposure):
                if not exposures:
                    raise InterventionError(
                        f"{where}: ReduceExposure needs exposures, and the model has none"
                    )
                for e in item.exposures or ():
                    if e not in exposures:
                        raise InterventionError(
                            f"{where}: ReduceExposure names exposure {e!r}; exposures: {exposures}"
                        )
            if isinstance(item, LowerHazard | ResetNarrative) and len(regimes) < 2:
                raise InterventionError(
                    f"{where}: {type(item).__name__} needs at least two regimes; the model has "
                    f"{regimes}"
                )
            if isinstance(item, LowerHazard):
                for r in item.into or ():
                    if r not in regimes[1:]:
                        raise InterventionError(
                            f"{where}: LowerHazard into {r!r}: not a non-tracking regime; "
                            f"allowed: {regimes[1:]}"
                        )
    return items


def _first_true(cond: NDArray[np.bool_], start: int) -> NDArray[np.int64]:
    """First index >= start along the last axis where ``cond`` holds, else -1."""
    cond = cond.copy()
    cond[..., :start] = False
    hit = cond.any(axis=-1)
    return np.where(hit, np.argmax(cond, axis=-1), NEVER)


# --------------------------------------------------------------------------
# compare_timings
# --------------------------------------------------------------------------


def _extend(
    values: NDArray[np.float64] | None, horizon: int, future: Any, names: Sequence[str], what: str
) -> NDArray[np.float64] | None:
    """Continue (unit, time, k) arrays over the horizon: given values, else the last one held."""
    if values is None:
        return None
    n_units = values.shape[0]
    last = np.repeat(values[:, -1:, :], horizon, axis=1)
    for j, name in enumerate(names):
        if future is not None and name in future:
            v = np.asarray(future[name], dtype=float)
            try:
                last[:, :, j] = np.broadcast_to(v, (n_units, horizon))
            except ValueError:
                raise InterventionError(
                    f"future[{name!r}] ({what}) must have {horizon} values (one per horizon "
                    f"step) or shape ({n_units}, {horizon}); found shape {v.shape}"
                ) from None
    return np.concatenate([values, last], axis=1)


def compare_timings(
    fit: Any,
    scenarios: Sequence[Scenario],
    *,
    horizon: int,
    seed: int | None,
    n_draws: int | None = None,
    threshold: float | None = None,
    harm: Callable[[NDArray[np.float64]], NDArray[np.float64]] | None = None,
    future: Mapping[str, ArrayLike] | None = None,
) -> TimingComparison:
    """Simulate intervention scenarios from the posterior and compare them.

    Parameters
    ----------
    fit : Fit or Worlds
        A fit of the decoupling model, or its numeric :class:`Worlds`.
    scenarios : sequence of Scenario
        A baseline named ``"never"`` (no intervention) is added unless one is given.
    horizon : int
        Steps simulated beyond the last data time (0: counterfactuals within the data).
    seed : int or None
        Seeds the draw subsample, the FFBS regime paths and every random number.
    n_draws : int, optional
        Number of draws per chain (a seeded subset of draw indices shared by
        all chains); default all.
    threshold : float, optional
        Constraint level whose first crossing is reported (``crossing_time``).
    harm : callable, optional
        Vectorised harm of the constraint per step, summed over time into ``cost``.
    future : mapping, optional
        Exposure and transition-covariate values over the horizon by column
        name, each (horizon,) or (unit, horizon); default: the last observed
        value held.

    Returns
    -------
    TimingComparison

    Raises
    ------
    InterventionError
        Invalid scenarios, policies or arguments, before any simulation.
    """
    if isinstance(horizon, bool) or not isinstance(horizon, int | np.integer) or horizon < 0:
        raise InterventionError(f"horizon must be an integer >= 0; found {horizon!r}")
    if n_draws is not None and (
        isinstance(n_draws, bool) or not isinstance(n_draws, int | np.integer) or n_draws < 1
    ):
        raise InterventionError(f"n_draws must be a positive integer or None; found {n_draws!r}")
    if threshold is not None and not math.isfinite(float(threshold)):
        raise InterventionError(f"threshold must be a finite number; found {threshold!r}")
    if harm is not None and not callable(harm):
        raise InterventionError(f"harm must be a callable of the constraint; found {harm!r}")
    rng = np.random.default_rng(seed)
    if isinstance(fit, Worlds):
        worlds = fit if n_draws is None else _subsample(fit, n_draws, rng)
    else:
        worlds = worlds_from_fit(fit, n_draws=n_draws, rng=rng)
    time = _extend_time(worlds.coords[dims.TIME], int(horizon), worlds.coords.get("freq"))
    items = _check_scenarios(scenarios, worlds, time)
    return _run(worlds, items, time, int(horizon), rng, threshold, harm, future)


def _subsample(worlds: Worlds, n_draws: int, rng: np.random.Generator) -> Worlds:
    """Keep the same seeded subset of draw indices in every chain."""
    chains = np.asarray(worlds.coords[dims.CHAIN])
    draws = np.asarray(worlds.coords[dims.DRAW])
    if n_draws >= len(draws):
        return worlds
    keep = np.sort(rng.choice(len(draws), size=n_draws, replace=False))
    idx = (np.arange(len(chains))[:, None] * len(draws) + keep[None]).ravel()
    callables = {}
    for name in ("transitions", "feedback_draw", "feedback_logp"):
        fn = getattr(worlds, name)
        if not hasattr(fn, "subset"):
            raise InterventionError(
                f"n_draws needs Worlds.{name} to have a subset(idx) method restricting its "
                "per-draw parameters; subsample the Worlds yourself or pass n_draws=None"
            )
        callables[name] = fn.subset(idx)
    return Worlds(
        process=worlds.process,
        params={k: np.asarray(v)[idx] for k, v in worlds.params.items()},
        constraint=worlds.constraint[idx],
        regimes=worlds.regimes[idx],
        filtered=worlds.filtered[idx],
        absorbing=worlds.absorbing,
        feedback=worlds.feedback[idx] if worlds.feedback.ndim == 4 else worlds.feedback,
        exposures=worlds.exposures,
        covariates=worlds.covariates,
        coords={**worlds.coords, dims.DRAW: draws[keep]},
        hold_until=worlds.hold_until,
        **callables,
    )


def _run(
    worlds: Worlds,
    items: list[Scenario],
    time: np.ndarray,
    horizon: int,
    rng: np.random.Generator,
    threshold: float | None,
    harm: Callable[[NDArray[np.float64]], NDArray[np.float64]] | None,
    future: Mapping[str, ArrayLike] | None,
) -> TimingComparison:
    n_s, n_u, n_obs = worlds.constraint.shape
    n_t = n_obs + horizon
    k = worlds.n_regimes
    exposure_names = list(worlds.coords.get(dims.EXPOSURE, []))
    exposures = _extend(worlds.exposures, horizon, future, exposure_names, "exposure")
    cov_names = list(worlds.coords.get(dims.EXOG, []))
    covariates = _extend(worlds.covariates, horizon, future, cov_names, "covariate")

    # Common random numbers: each draw's own luck in the data, fresh beyond.
    data_exposures = None if exposures is None else exposures[None, :, :n_obs]
    shocks = np.empty((n_s, n_u, n_t))
    shocks[..., :n_obs] = abduct_shocks(
        worlds.process, worlds.params, worlds.constraint, data_exposures
    )
    shocks[..., n_obs:] = rng.standard_normal((n_s, n_u, horizon))
    trans_obs = np.empty((n_s, n_u, n_obs, k, k))
    trans_obs[:, :, 0] = np.eye(k)
    for t in range(1, n_obs):
        w = None if covariates is None else covariates[:, t]
        trans_obs[:, :, t] = _grid_transitions(worlds.transitions, worlds.constraint[..., t - 1], w)
    trans_obs = regimes.hold_tracking_probabilities(trans_obs, worlds.hold_until)
    uniforms = np.empty((n_s, n_u, n_t))
    uniforms[..., :n_obs] = abduct_uniforms(worlds.regimes, trans_obs, rng)
    uniforms[..., n_obs:] = rng.random((n_s, n_u, horizon))
    init = worlds.constraint[..., 0]
    init_regime = worlds.regimes[..., 0]
    common: dict[str, Any] = dict(
        init=init,
        init_regime=init_regime,
        transitions=worlds.transitions,
        exposures=exposures,
        covariates=covariates,
        absorbing=worlds.absorbing,
        hold_until=worlds.hold_until,
    )

    # The baseline world decides when data-dependent policies fire: before tau
    # every scenario's world is the baseline's.
    base_sched = Schedule(
        np.full((1, n_s, n_u), NEVER), None, None, np.zeros(1), np.zeros(1, dtype=bool)
    )
    base = simulate_scenarios(worlds.process, worlds.params, base_sched, shocks, uniforms, **common)
    c_base, s_base = base.constraint[0], base.regime[0]
    needs_feedback = any(isinstance(s.policy, FeedbackRule | PosteriorTrigger) for s in items)
    y_all = filt_all = None
    if needs_feedback:
        y_all, filt_all = _baseline_signals(worlds, c_base, s_base, covariates, horizon, rng)
    taus = np.stack([_policy_tau(s.policy, time, worlds, y_all, filt_all) for s in items])
    schedule, active = _schedule(items, taus, worlds, n_t)
    paths = simulate_scenarios(
        worlds.process, worlds.params, schedule, shocks, uniforms, **common, baseline_regime=s_base
    )
    return _assemble(worlds, items, time, paths, taus, active, threshold, harm, n_obs)


def _baseline_signals(
    worlds: Worlds,
    c_base: NDArray[np.float64],
    s_base: NDArray[np.int64],
    covariates: NDArray[np.float64] | None,
    horizon: int,
    rng: np.random.Generator,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Feedback (observed, then simulated) and filtered probabilities on the baseline world."""
    n_s, n_u, n_obs = worlds.constraint.shape
    k = worlds.n_regimes
    n_sig = worlds.feedback.shape[-1]
    y = np.empty((n_s, n_u, n_obs + horizon, n_sig))
    y[:, :, :n_obs] = np.broadcast_to(worlds.feedback, (n_s, n_u, n_obs, n_sig))
    filt = np.empty((n_s, n_u, n_obs + horizon, k))
    filt[:, :, :n_obs] = worlds.filtered
    if horizon == 0:
        return y, filt
    c_f, s_f = c_base[..., n_obs:], s_base[..., n_obs:]
    y_f = worlds.feedback_draw(c_f, s_f, rng)
    y[:, :, n_obs:] = y_f
    trans = np.empty((n_s, n_u, horizon, k, k))
    for h in range(horizon):
        t = n_obs + h
        w = None if covariates is None else covariates[:, t]
        trans[:, :, h] = _grid_transitions(worlds.transitions, c_base[..., t - 1], w)
    pred0 = np.einsum("sui,suij->suj", worlds.filtered[:, :, -1], trans[:, :, 0])
    with np.errstate(divide="ignore"):
        log_init = np.log(pred0).reshape(n_s * n_u, k)
        log_trans = np.log(trans).reshape(n_s * n_u, horizon, k, k)
    log_emit = worlds.feedback_logp(y_f, c_f).reshape(n_s * n_u, horizon, k)
    li, lt, le = _standardise(log_init, log_trans, log_emit, validate=False)
    _, f, _, _ = _forward_backward(li, lt, le)
    filt[:, :, n_obs:] = f.reshape(n_s, n_u, horizon, k)
    return y, filt


def _policy_tau(
    policy: Policy,
    time: np.ndarray,
    worlds: Worlds,
    y_all: NDArray[np.float64] | None,
    filt_all: NDArray[np.float64] | None,
) -> NDArray[np.int64]:
    shape = (worlds.n_samples, worlds.n_units)
    if isinstance(policy, Never):
        return np.full(shape, NEVER)
    if isinstance(policy, At):
        return np.full(shape, _time_index(time, policy.time, "At"))
    start = 0 if policy.start is None else _time_index(time, policy.start, "start")
    if isinstance(policy, FeedbackRule):
        assert y_all is not None
        m = list(worlds.coords[dims.SIGNAL]).index(policy.signal)
        y = y_all[..., m]
        with np.errstate(invalid="ignore"):
            cond = y > policy.threshold if policy.direction == "above" else y < policy.threshold
        return _first_true(cond, start)
    assert filt_all is not None
    regimes = list(worlds.coords[dims.REGIME])
    which = [regimes.index(r) for r in (policy.regimes or regimes[1:])]
    return _first_true(filt_all[..., which].sum(axis=-1) > policy.p, start)


def _schedule(
    items: list[Scenario], taus: NDArray[np.int64], worlds: Worlds, n_t: int
) -> tuple[Schedule, NDArray[np.int64]]:
    n = len(items)
    lead = taus.shape
    t_idx = np.arange(n_t)
    acted = taus >= 0
    regimes = list(worlds.coords[dims.REGIME])
    exposure_names = list(worlds.coords.get(dims.EXPOSURE, []))
    exp_scale = haz_scale = None
    if any(isinstance(i, ReduceExposure) for s in items for i in s.interventions):
        exp_scale = np.ones((*lead, n_t, len(exposure_names)))
    if any(isinstance(i, LowerHazard) for s in items for i in s.interventions):
        haz_scale = np.ones((*lead, n_t, len(regimes)))
    relief = np.zeros(n)
    reset = np.zeros(n, dtype=bool)
    reset_hold = np.zeros(n, dtype=np.int64)
    active = np.zeros(lead, dtype=np.int64)
    last = n_t - 1
    for j, s in enumerate(items):
        tau = taus[j]
        for item in s.interventions:
            if isinstance(item, Relieve):
                relief[j] += item.amount
                active[j] = np.maximum(active[j], np.where(acted[j], 1, 0))
                continue
            if isinstance(item, ResetNarrative):
                reset[j] = True
                reset_hold[j] = max(reset_hold[j], n_t if item.duration is None else item.duration)
                steps = np.maximum(np.minimum(tau + reset_hold[j], last) - tau, 1)
                active[j] = np.maximum(active[j], np.where(acted[j], steps, 0))
                continue
            dur = item.duration
            end = np.full(tau.shape, last) if dur is None else np.minimum(tau + dur, last)
            window = acted[j][..., None] & (t_idx > tau[..., None]) & (t_idx <= end[..., None])
            factor = np.where(window, 1.0 - item.factor, 1.0)
            active[j] = np.maximum(active[j], np.where(acted[j], end - tau, 0))
            if isinstance(item, ReduceExposure):
                assert exp_scale is not None
                cols = [exposure_names.index(e) for e in (item.exposures or exposure_names)]
                exp_scale[j][..., cols] *= factor[..., None]
            else:
                assert haz_scale is not None
                cols = [regimes.index(r) for r in (item.into or regimes[1:])]
                haz_scale[j][..., cols] *= factor[..., None]
    return Schedule(taus, exp_scale, haz_scale, relief, reset, reset_hold), active


def _labels_at(time: np.ndarray, idx: NDArray[np.int64]) -> np.ndarray:
    """Time labels at positions, with NaT / NaN / None where the position is -1."""
    safe = np.where(idx >= 0, idx, 0)
    out = time[safe]
    if np.issubdtype(time.dtype, np.datetime64):
        return np.where(idx >= 0, out, np.array("NaT", dtype=time.dtype))
    if np.issubdtype(time.dtype, np.number):
        return np.where(idx >= 0, out.astype(float), np.nan)
    out = out.astype(object)
    out[idx < 0] = None
    return out


def _assemble(
    worlds: Worlds,
    items: list[Scenario],
    time: np.ndarray,
    paths: ScenarioPaths,
    taus: NDArray[np.int64],
    active: NDArray[np.int64],
    threshold: float | None,
    harm: Callable[[NDArray[np.float64]], NDArray[np.float64]] | None,
    n_obs: int,
) -> TimingComparison:
    chains = np.asarray(worlds.coords[dims.CHAIN])
    draws = np.asarray(worlds.coords[dims.DRAW])
    n_c, n_d = len(chains), len(draws)
    n = len(items)

    def fold(a: np.ndarray) -> np.ndarray:
        return a.reshape(n, n_c, n_d, *a.shape[2:])

    c = paths.constraint
    sample = (dims.SCENARIO, dims.CHAIN, dims.DRAW, dims.UNIT)
    path_dims = (*sample, dims.TIME)
    cost = np.asarray([s.cost_per_step for s in items])[:, None, None] * active
    if harm is not None:
        h = np.asarray(harm(c), dtype=float)
        if h.shape != c.shape:
            raise InterventionError(
                f"harm must return an array shaped like its input {c.shape}; found {h.shape}"
            )
        cost = cost + h.sum(axis=-1)
    data = {
        "constraint": (path_dims, fold(c)),
        "regime": (path_dims, fold(paths.regime)),
        "constraint_final": (sample, fold(c[..., -1])),
        "constraint_cumulative": (sample, fold(c.sum(axis=-1))),
        "time_decoupled": (sample, fold((paths.regime != 0).sum(axis=-1))),
        "cost": (sample, fold(cost)),
        "tau": (sample, fold(_labels_at(time, taus))),
        "acted": (sample, fold(taus >= 0)),
        "active_steps": (sample, fold(active)),
        "reset_blocked": (sample, fold(paths.reset_blocked)),
    }
    if threshold is not None:
        cross = _first_true(c >= threshold, 0)
        data["crossing_time"] = (sample, fold(_labels_at(time, cross)))
        data["crossed"] = (sample, fold(cross >= 0))
    coords = {
        dims.SCENARIO: [s.name for s in items],
        dims.CHAIN: chains,
        dims.DRAW: draws,
        dims.UNIT: np.asarray(worlds.coords[dims.UNIT]),
        dims.TIME: time,
        "tau_index": ((dims.SCENARIO,), _fixed_tau_index(items, taus)),
        "observed": ((dims.TIME,), np.arange(len(time)) < n_obs),
    }
    ds = xr.Dataset(data, coords=coords)
    ds.attrs.update(threshold=np.nan if threshold is None else float(threshold))
    return TimingComparison(outcomes=ds, scenarios=tuple(items))


def _fixed_tau_index(items: list[Scenario], taus: NDArray[np.int64]) -> NDArray[np.int64]:
    """Return the time position of each At scenario (-1 for other policies)."""
    return np.asarray(
        [int(taus[j].flat[0]) if isinstance(s.policy, At) else NEVER for j, s in enumerate(items)],
        dtype=np.int64,
    )


# --------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------

Metric = Literal["constraint_final", "constraint_cumulative", "time_decoupled", "cost"]
_METRICS = ("constraint_final", "constraint_cumulative", "time_decoupled", "cost")


def _check_metric(metric: str) -> None:
    if metric not in _METRICS:
        raise InterventionError(f"metric must be one of {list(_METRICS)}; found {metric!r}")


@dataclass(frozen=True)
class PointOfNoReturn:
    """The point of no return of a family of fixed timings.

    Attributes
    ----------
    time : DataArray (unit)
        The first timing from which on the probability of ending under the
        target stays below the level (NaT / NaN where no timing of the family
        is too late).  Equal to the earliest timing where even that is too late
        (see ``already_passed``).
    already_passed : DataArray of bool (unit)
        Even the earliest timing of the family is too late.
    probability : DataArray (scenario, unit)
        ``P(metric < target)`` at each timing, with coord ``tau``.
    stderr : DataArray (scenario, unit)
        Monte Carlo standard error of ``probability`` (binomial, over draws).
    per_draw : DataArray (chain, draw, unit)
        Each draw's own point of no return: the first timing from which on that
        draw ends at or above the target.
    interval : DataArray (unit, quantile)
        Posterior interval of ``per_draw`` (timings after the family map to
        missing labels).
    """

    time: xr.DataArray
    already_passed: xr.DataArray
    probability: xr.DataArray
    stderr: xr.DataArray
    per_draw: xr.DataArray
    interval: xr.DataArray


@dataclass(frozen=True, eq=False)
class TimingComparison:
    """Outcomes of intervention scenarios, with comparisons between them.

    Attributes
    ----------
    outcomes : xarray.Dataset
        Dims (scenario, chain, draw, unit[, time]): ``constraint`` and
        ``regime`` paths (regime indices, tracking = 0), ``constraint_final``,
        ``constraint_cumulative``, ``time_decoupled`` (steps in a non-tracking
        regime), ``cost``, ``tau`` (when the scenario acted; missing if never),
        ``acted``, ``active_steps``, ``reset_blocked`` and, with a threshold,
        ``crossing_time`` and ``crossed``.  Coords ``tau_index`` (position of
        fixed timings) and ``observed`` (time within the data).
    scenarios : tuple of Scenario
    """

    outcomes: xr.Dataset
    scenarios: tuple[Scenario, ...]

    def _names(self) -> list[str]:
        return [str(s) for s in self.outcomes[dims.SCENARIO].values]

    def _scenario(self, name: str) -> xr.Dataset:
        if name not in self._names():
            raise InterventionError(f"unknown scenario {name!r}; scenarios: {self._names()}")
        return self.outcomes.sel({dims.SCENARIO: name})

    def table(self, ci: float = 0.9) -> pd.DataFrame:
        """Per-scenario posterior means and equal-tailed intervals of the outcome metrics.

        Parameters
        ----------
        ci : float
            Interval mass, in (0, 1).

        Returns
        -------
        pandas.DataFrame
            Indexed by scenario (and unit with several units); columns
            ``{metric}_mean``, ``{metric}_lo``, ``{metric}_hi`` for each metric,
            ``p_acted`` and ``tau_median``.
        """
        if not 0 < ci < 1:
            raise InterventionError(f"ci must lie in (0, 1); found {ci!r}")
        ds = self.outcomes
        sd = list(dims.SAMPLE_DIMS)
        q = [(1 - ci) / 2, (1 + ci) / 2]
        cols: dict[str, xr.DataArray] = {}
        for m in _METRICS:
            da = ds[m].astype(float)
            qs = da.quantile(q, dim=sd)
            cols[f"{m}_mean"] = da.mean(sd)
            cols[f"{m}_lo"] = qs.isel(quantile=0, drop=True)
            cols[f"{m}_hi"] = qs.isel(quantile=1, drop=True)
        if "crossed" in ds:
            cols["p_crossed"] = ds["crossed"].mean(sd)
        cols["p_acted"] = ds["acted"].mean(sd)
        frame = xr.Dataset(cols).to_dataframe()
        frame = frame.drop(columns=[c for c in frame.columns if c not in cols])
        frame["tau_median"] = self._median_tau().to_series().reindex(frame.index).values
        if self.outcomes.sizes[dims.UNIT] == 1:
            frame = frame.droplevel(dims.UNIT)
        return frame

    def _median_tau(self) -> xr.DataArray:
        ds = self.outcomes
        pos = _tau_positions(ds)
        med = pos.where(pos >= 0).median(list(dims.SAMPLE_DIMS))
        time = ds[dims.TIME].values
        idx = np.where(np.isnan(med.values), -1, np.round(med.values)).astype(int)
        return xr.DataArray(_labels_at(time, idx), coords=med.coords, dims=med.dims)

    def beats(self, a: str, b: str, metric: str = "constraint_final") -> xr.DataArray:
        """Probability that scenario ``a`` ends with a lower ``metric`` than ``b``.

        Draw by draw (common random numbers make the comparison paired); ties
        count one half, so ``beats(a, a) == 0.5``.

        Parameters
        ----------
        a, b : str
            Scenario names.
        metric : str
            ``constraint_final``, ``constraint_cumulative``, ``time_decoupled`` or ``cost``.

        Returns
        -------
        DataArray (unit)
        """
        _check_metric(metric)
        xa = self._scenario(a)[metric]
        xb = self._scenario(b)[metric]
        win = (xa < xb).astype(float) + 0.5 * (xa == xb).astype(float)
        return win.mean(list(dims.SAMPLE_DIMS)).rename(f"p_{a}_beats_{b}")

    def _family(self, scenarios: Sequence[str] | None) -> xr.Dataset:
        ds = self.outcomes
        if scenarios is not None:
            for name in scenarios:
                self._scenario(name)
            ds = ds.sel({dims.SCENARIO: list(scenarios)})
        fam = ds.isel({dims.SCENARIO: np.flatnonzero(ds["tau_index"].values >= 0)})
        if fam.sizes[dims.SCENARIO] == 0:
            raise InterventionError(
                "no fixed-timing (At) scenarios to compare; build them with timing_scenarios"
            )
        order = np.argsort(fam["tau_index"].values, kind="stable")
        fam = fam.isel({dims.SCENARIO: order})
        fam = fam.assign_coords(
            tau=((dims.SCENARIO,), fam[dims.TIME].values[fam["tau_index"].values])
        )
        return fam

    def delay_cost(
        self, metric: str = "constraint_final", scenarios: Sequence[str] | None = None
    ) -> xr.DataArray:
        """Return the expected increase of ``metric`` per step of delay between fixed timings.

        Parameters
        ----------
        metric : str
        scenarios : sequence of str, optional
            The timing family; default every :class:`At` scenario.

        Returns
        -------
        DataArray (scenario, unit)
            Labelled by the later timing of each consecutive pair (coord ``tau``).
        """
        _check_metric(metric)
        fam = self._family(scenarios)
        mean = fam[metric].astype(float).mean(list(dims.SAMPLE_DIMS))
        steps = np.diff(fam["tau_index"].values)
        diff = mean.diff(dims.SCENARIO, label="upper")
        with np.errstate(divide="ignore", invalid="ignore"):
            per = diff / xr.DataArray(np.where(steps > 0, steps, np.nan), dims=dims.SCENARIO)
        return per.rename(f"{metric}_per_step_of_delay")

    def point_of_no_return(
        self,
        target: float,
        level: float = 0.5,
        *,
        metric: str = "constraint_final",
        scenarios: Sequence[str] | None = None,
        ci: float = 0.9,
    ) -> PointOfNoReturn:
        """Find the first timing after which ``P(metric < target)`` stays below ``level``.

        Parameters
        ----------
        target : float
            The level the metric (default the constraint at the horizon) should stay under.
        level : float
            Probability in (0, 1).
        metric : str
        scenarios : sequence of str, optional
            The timing family (default every :class:`At` scenario), sorted by time.
        ci : float
            Mass of the interval of the per-draw points of no return.

        Returns
        -------
        PointOfNoReturn
        """
        _check_metric(metric)
        if not 0 < level < 1:
            raise InterventionError(f"level must lie in (0, 1); found {level!r}")
        if not 0 < ci < 1:
            raise InterventionError(f"ci must lie in (0, 1); found {ci!r}")
        fam = self._family(scenarios)
        sd = list(dims.SAMPLE_DIMS)
        ok = fam[metric].astype(float) < float(target)
        prob = ok.mean(sd)
        n_samples = int(np.prod([fam.sizes[d] for d in sd]))
        stderr = ((prob * (1 - prob) / n_samples) ** 0.5).rename("stderr")
        times = fam["tau"].values
        n_fam = len(times)
        # First position from which on the condition fails for good.
        below = (prob < level).transpose(dims.UNIT, dims.SCENARIO).values
        first = _first_for_good(below)
        time_da = xr.DataArray(
            _labels_at(times, np.where(first < n_fam, first, NEVER)),
            coords={dims.UNIT: fam[dims.UNIT].values},
            dims=(dims.UNIT,),
        )
        passed = xr.DataArray(first == 0, coords=time_da.coords, dims=time_da.dims)
        fails = (~ok).transpose(dims.CHAIN, dims.DRAW, dims.UNIT, dims.SCENARIO).values
        per_pos = _first_for_good(fails)
        per_draw = xr.DataArray(
            _labels_at(times, np.where(per_pos < n_fam, per_pos, NEVER)),
            coords={d: fam[d].values for d in (dims.CHAIN, dims.DRAW, dims.UNIT)},
            dims=(dims.CHAIN, dims.DRAW, dims.UNIT),
        )
        q = np.asarray([(1 - ci) / 2, (1 + ci) / 2])
        # "Never too late within the family" sorts after every timing.
        qpos = np.quantile(per_pos.reshape(-1, per_pos.shape[-1]), q, axis=0, method="lower")
        interval = xr.DataArray(
            _labels_at(times, np.where(qpos < n_fam, qpos, NEVER)).T,
            coords={dims.UNIT: fam[dims.UNIT].values, "quantile": q},
            dims=(dims.UNIT, "quantile"),
        )
        return PointOfNoReturn(
            time=time_da,
            already_passed=passed,
            probability=prob.rename("p_below_target"),
            stderr=stderr,
            per_draw=per_draw,
            interval=interval,
        )


def _first_for_good(cond: NDArray[np.bool_]) -> NDArray[np.int64]:
    """Per row, the first position from which ``cond`` holds to the end (length if never)."""
    n = cond.shape[-1]
    # Reverse cumulative AND: holds_from[i] = all(cond[i:]).
    holds_from = np.flip(np.logical_and.accumulate(np.flip(cond, -1), axis=-1), -1)
    count = holds_from.sum(axis=-1)
    return n - count


def _tau_positions(ds: xr.Dataset) -> xr.DataArray:
    time = ds[dims.TIME].values
    tau = ds["tau"]
    lookup = {v: i for i, v in enumerate(time.tolist())}
    flat = [lookup.get(v, -1) if v is not None else -1 for v in tau.values.ravel().tolist()]
    return xr.DataArray(np.asarray(flat).reshape(tau.shape), coords=tau.coords, dims=tau.dims)


# --------------------------------------------------------------------------
# Saving and loading a comparison
# --------------------------------------------------------------------------

_KINDS: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        ReduceExposure,
        ResetNarrative,
        LowerHazard,
        Relieve,
        At,
        FeedbackRule,
        PosteriorTrigger,
        Never,
    )
}


def _encode(obj: Any) -> dict[str, Any]:
    fields = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, pd.Timestamp | np.datetime64):
            value = {"timestamp": pd.Timestamp(value).isoformat()}
        elif isinstance(value, np.generic):
            value = value.item()
        elif isinstance(value, tuple):
            value = list(value)
        fields[f.name] = value
    return {"kind": type(obj).__name__, **fields}


def _decode(doc: Mapping[str, Any]) -> Any:
    doc = dict(doc)
    cls = _KINDS[doc.pop("kind")]
    for key, value in doc.items():
        if isinstance(value, dict) and "timestamp" in value:
            doc[key] = pd.Timestamp(value["timestamp"])
        elif isinstance(value, list):
            doc[key] = tuple(value)
    return cls(**doc)


def save_timings(result: TimingComparison, path: Any) -> None:
    """Write a :class:`TimingComparison` (outcomes and scenarios) to one netCDF file.

    Parameters
    ----------
    result : TimingComparison
    path : path-like
        Written as given; the CLI writes to a temporary name and renames.
    """
    import json

    doc = [
        {
            "name": s.name,
            "interventions": [_encode(i) for i in s.interventions],
            "policy": _encode(s.policy),
            "cost_per_step": s.cost_per_step,
        }
        for s in result.scenarios
    ]
    ds = result.outcomes.copy()
    ds.attrs = {k: v for k, v in ds.attrs.items() if isinstance(v, str | int | float)}
    ds.attrs["pathlock_scenarios"] = json.dumps(doc)
    ds.to_netcdf(path, engine="h5netcdf")


def load_timings(path: Any) -> TimingComparison:
    """Read a comparison written by :func:`save_timings`.

    Raises
    ------
    InterventionError
        The file holds no pathlock scenarios.
    """
    import json

    ds = xr.load_dataset(path, engine="h5netcdf")
    if "pathlock_scenarios" not in ds.attrs:
        raise InterventionError(f"{path} holds no pathlock timing comparison")
    doc = json.loads(ds.attrs.pop("pathlock_scenarios"))
    scenarios = tuple(
        Scenario(
            d["name"],
            tuple(_decode(i) for i in d["interventions"]),
            _decode(d["policy"]),
            d["cost_per_step"],
        )
        for d in doc
    )
    return TimingComparison(outcomes=ds, scenarios=scenarios)
