"""Posterior analysis of a fit: regime probabilities and paths, decoupling time, comparison.

This module turns a :class:`~pathlock.fit.Fit` into answers a script can use:
smoothed and filtered regime probabilities, regime paths drawn by forward
filtering backward sampling, the posterior of the decoupling time (first
passage out of the tracking regime, with "not yet" as an explicit outcome),
the hidden constraint behind the feedback signals, an early-warning alarm,
the parameter table and the comparison of fits by PSIS-LOO or PSIS-LFO.
Every output is an xarray object (or a frozen result holding them) with the
user's coords and dims from :mod:`pathlock.dims`.  All draws go through the
numba kernels at once (units axis = sample * unit); nothing here loops over
posterior draws in Python.  The module knows the :class:`~pathlock.build.Built`
contract and the decoupling model's parameter names (``feedback_a``,
``feedback_b``, ``feedback_w``, ``constraint``), not how any family builds its
graph.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import arviz_stats  # noqa: F401 - registers the xarray .azstats accessor
import numpy as np
import pandas as pd
import xarray as xr
from numpy.typing import NDArray

from pathlock import dims
from pathlock.errors import DataError, PathlockError

if TYPE_CHECKING:
    from pathlock.fit import Fit

__all__ = [
    "DecouplingTime",
    "EarlyWarning",
    "compare",
    "decoupling_time",
    "early_warning",
    "feedback_rule_alarm",
    "feedback_rule_detection",
    "hidden_constraint",
    "lfo",
    "regime_paths",
    "regime_probabilities",
    "summary",
]

#: Key of ``Built.extras`` mapping kernel states to regimes, for families whose
#: kernel runs on an expanded state space (Hamilton's MS-AR: K^(p+1) states).
#: Either an integer vector (state,) of regime indices or a 0/1 matrix (state, regime).
STATE_TO_REGIME = ("regime_aggregation", "state_to_regime")

Kind = Literal["smoothed", "filtered"]


# --------------------------------------------------------------------------
# labels and kernel plumbing
# --------------------------------------------------------------------------


def _sample_coords(fit: Fit) -> dict[str, NDArray[Any]]:
    post = fit.idata.posterior
    return {dims.CHAIN: post[dims.CHAIN].values, dims.DRAW: post[dims.DRAW].values}


def _unit_time_coords(fit: Fit) -> dict[str, NDArray[Any]]:
    coords = fit.built.model.coords
    return {dims.UNIT: np.asarray(coords[dims.UNIT]), dims.TIME: np.asarray(coords[dims.TIME])}


def _state_map(fit: Fit, n_states: int) -> NDArray[np.int64] | None:
    """Regime index of each kernel state, or None when states are regimes."""
    n_regimes = len(fit.regime_names)
    extras = fit.regime_inputs().extras
    key = next((k for k in STATE_TO_REGIME if k in extras), None)
    if key is None:
        if n_states != n_regimes:
            raise PathlockError(
                f"the kernel has {n_states} states but the model has {n_regimes} regimes "
                f"{fit.regime_names}; a family with an expanded state space must put "
                f"Built.extras[{STATE_TO_REGIME[0]!r}] (state, regime) in its build"
            )
        return None
    raw = np.asarray(extras[key])[0]
    mapping = raw.argmax(axis=-1) if raw.ndim == 2 else raw.astype(np.int64)
    if mapping.shape != (n_states,) or mapping.min() < 0 or mapping.max() >= n_regimes:
        raise PathlockError(
            f"Built.extras[{key!r}] must map each of the {n_states} kernel states "
            f"to one of {n_regimes} regimes; found values {np.unique(mapping)} for "
            f"shape {mapping.shape}"
        )
    return mapping.astype(np.int64)


def _aggregate(probs: NDArray[np.float64], mapping: NDArray[np.int64] | None, k: int) -> Any:
    """Sum state probabilities (..., state) into regime probabilities (..., regime)."""
    if mapping is None:
        return probs
    onehot = np.zeros((mapping.size, k))
    onehot[np.arange(mapping.size), mapping] = 1.0
    return probs @ onehot


def _tracking_regimes(fit: Fit, tracking: str | Sequence[str] | None) -> NDArray[np.bool_]:
    """Boolean mask over regimes: True for the regimes that count as tracking."""
    names = fit.regime_names
    wanted = (
        [names[0]]
        if tracking is None
        else [tracking]
        if isinstance(tracking, str)
        else list(tracking)
    )
    unknown = [w for w in wanted if w not in names]
    if unknown:
        raise PathlockError(f"tracking: unknown regime(s) {unknown}; the regimes are {names}")
    if len(wanted) == len(names):
        raise PathlockError(
            f"tracking: {wanted} names every regime, so no regime counts as decoupled; "
            f"leave at least one of {names} out"
        )
    return np.isin(names, wanted)


def _shape(fit: Fit) -> tuple[int, int, int, int, int]:
    ri = fit.regime_inputs()
    _, u, t, k = ri.log_emit.shape
    return ri.n_chains, ri.n_draws, u, t, k


def _nat_like(values: NDArray[Any]) -> Any:
    if np.issubdtype(values.dtype, np.datetime64) or np.issubdtype(values.dtype, np.timedelta64):
        return np.array("NaT", dtype=values.dtype)[()]
    if np.issubdtype(values.dtype, np.number):
        return np.nan
    return None


def _labels_at(times: NDArray[Any], index: NDArray[np.int64]) -> NDArray[Any]:
    """Return time labels at ``index``; position ``len(times)`` means "not yet" (NaT/NaN/None)."""
    n = times.size
    missing = _nat_like(times)
    if np.issubdtype(times.dtype, np.datetime64) or np.issubdtype(times.dtype, np.timedelta64):
        ext = np.concatenate([times, np.array([missing], dtype=times.dtype)])
    elif np.issubdtype(times.dtype, np.number):
        ext = np.concatenate([times.astype(np.float64), [np.nan]])
    else:
        ext = np.concatenate([times.astype(object), np.array([None], dtype=object)])
    return ext[np.clip(index, 0, n)]


# --------------------------------------------------------------------------
# regime probabilities and paths
# --------------------------------------------------------------------------


def regime_probabilities(fit: Fit, kind: Kind = "smoothed", average: bool = False) -> xr.DataArray:
    """Smoothed or filtered regime probabilities at every posterior draw.

    Parameters
    ----------
    fit : Fit
    kind : {"smoothed", "filtered"}
        ``P(S_t = k | y_1..T, theta)`` or ``P(S_t = k | y_1..t, theta)``.
    average : bool
        Average over the posterior draws.

    Returns
    -------
    DataArray (chain, draw, unit, time, regime), or (unit, time, regime) when ``average``
        Coords carry the fit's chains, draws, unit labels, time labels and
        regime names.  Families with an expanded kernel state (MS-AR) are
        summed back onto their regimes.

    Raises
    ------
    PathlockError
        ``kind`` is not one of the allowed values.

    Notes
    -----
    The averaged filtered probability is the posterior mean (given all data)
    of ``P(S_t | y_1..t, theta)``: regimes are filtered, parameters are not.
    """
    if kind not in ("smoothed", "filtered"):
        raise PathlockError(f"kind must be one of ['smoothed', 'filtered']; found {kind!r}")
    n_chains, n_draws, n_units, n_steps, n_states = _shape(fit)
    fb = fit.forward_backward()
    raw = fb.smoothed if kind == "smoothed" else fb.filtered
    names = fit.regime_names
    probs = _aggregate(raw, _state_map(fit, n_states), len(names))
    probs = probs.reshape(n_chains, n_draws, n_units, n_steps, len(names))
    out = xr.DataArray(
        probs,
        dims=(*dims.SAMPLE_DIMS, dims.UNIT, dims.TIME, dims.REGIME),
        coords={**_sample_coords(fit), **_unit_time_coords(fit), dims.REGIME: names},
        name=f"{kind}_probability",
        attrs={"kind": kind},
    )
    return out.mean(dims.SAMPLE_DIMS, keep_attrs=True) if average else out


def _draw_state_paths(
    fit: Fit, n: int, seed: int | np.random.Generator | None
) -> NDArray[np.int64]:
    """FFBS state paths for every draw at once: (n, sample * unit, time)."""
    from pathlock.hmm import _ffbs, _standardise

    if int(n) < 1:
        raise PathlockError(f"n must be at least 1 path per draw; found {n}")
    li, lt, le = _standardise(*fit.regime_inputs().kernel_arrays(), validate=False)
    rng = np.random.default_rng(seed)
    return _ffbs(li, lt, le, rng.random((int(n), *le.shape[:2])))


def regime_paths(
    fit: Fit, n: int = 1, seed: int | np.random.Generator | None = None
) -> xr.DataArray:
    """Regime paths drawn by forward filtering, backward sampling at every posterior draw.

    Parameters
    ----------
    fit : Fit
    n : int
        Paths per posterior draw.
    seed : int or numpy Generator, optional
        The same seed gives the same paths.

    Returns
    -------
    DataArray of int8 (chain, draw, path, unit, time)
        Regime indices into the ``regime`` coord of the fit; the names are in
        ``attrs["regime_names"]`` and, following the CF conventions for
        categorical data, in ``attrs["flag_values"]`` / ``attrs["flag_meanings"]``.
        ``paths.attrs["regime_names"][i]`` turns an index into its name.

    Raises
    ------
    PathlockError
        ``n`` below 1.
    """
    n_chains, n_draws, n_units, n_steps, n_states = _shape(fit)
    raw = _draw_state_paths(fit, n, seed)
    mapping = _state_map(fit, n_states)
    if mapping is not None:
        raw = mapping[raw]
    paths = raw.astype(np.int8).reshape(int(n), n_chains, n_draws, n_units, n_steps)
    names = fit.regime_names
    return xr.DataArray(
        np.moveaxis(paths, 0, 2),
        dims=(*dims.SAMPLE_DIMS, dims.PATH, dims.UNIT, dims.TIME),
        coords={**_sample_coords(fit), dims.PATH: np.arange(int(n)), **_unit_time_coords(fit)},
        name="regime_path",
        attrs={
            "regime_names": list(names),
            "flag_values": list(range(len(names))),
            "flag_meanings": " ".join(names),
            "seed": "none" if seed is None else str(seed),
        },
    )


# --------------------------------------------------------------------------
# decoupling time
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class DecouplingTime:
    """Posterior of the first time each unit leaves the tracking regime(s).

    Attributes
    ----------
    samples : DataArray (chain, draw, path, unit)
        Decoupling time of each FFBS path as a time label (dates stay dates);
        NaT (NaN for numeric time, None otherwise) where the path never left
        tracking by the end of the data.
    not_yet : DataArray of bool (chain, draw, path, unit)
        True where the path had not decoupled by the last time step.
    index : DataArray of int (chain, draw, path, unit)
        Position of the decoupling time; ``n_steps`` stands for "not yet".
    prob_by_time : DataArray (unit, time)
        ``P(decoupled at or before t | y)``, exact (from the forward-backward
        marginals, not from the paths).
    summary : DataFrame
        One row per unit: ``median``, ``hdi_low``, ``hdi_high`` (time labels;
        NaT where the bound is "not yet"), ``hdi_includes_not_yet``,
        ``p_not_yet`` (exact) and ``p_decoupled`` (= 1 - p_not_yet).
    prob : float
        Probability mass of the highest-density interval.
    tracking : tuple of str
        The regimes that count as tracking.
    """

    samples: xr.DataArray
    not_yet: xr.DataArray
    index: xr.DataArray
    prob_by_time: xr.DataArray
    summary: pd.DataFrame
    prob: float
    tracking: tuple[str, ...]

    @property
    def p_not_yet(self) -> xr.DataArray:
        """``P(not decoupled by the end | y)`` per unit (unit,)."""
        return (1.0 - self.prob_by_time.isel({dims.TIME: -1})).rename("p_not_yet")


def _survival(
    smooth: NDArray[np.float64], pair: NDArray[np.float64], tracking_states: NDArray[np.bool_]
) -> NDArray[np.float64]:
    """``P(S_1..S_t all tracking | y, theta)`` for each row of the marginals: (n, time).

    Parameters are the kernel's smoothed (n, time, state) and pairwise
    (n, time - 1, state, state) marginals.  The posterior of the regime path
    given the data and theta is a Markov chain with transition
    ``pairwise[t-1, i, j] / smoothed[t-1, i]``, so the probability of staying
    in the tracking set is a forward recursion restricted to that set: exact,
    no paths needed.
    """
    a = np.flatnonzero(tracking_states)
    n, n_steps, _ = smooth.shape
    out = np.empty((n, n_steps))
    if a.size == 1:
        i = a[0]
        with np.errstate(divide="ignore", invalid="ignore"):
            stay = np.where(smooth[:, :-1, i] > 0, pair[:, :, i, i] / smooth[:, :-1, i], 0.0)
        out[:, 0] = smooth[:, 0, i]
        out[:, 1:] = smooth[:, :1, i] * np.cumprod(np.clip(stay, 0.0, 1.0), axis=1)
        return out
    v = smooth[:, 0, a]
    out[:, 0] = v.sum(axis=1)
    for t in range(1, n_steps):
        prev = smooth[:, t - 1, a]
        with np.errstate(divide="ignore", invalid="ignore"):
            step = np.where(
                prev[:, :, None] > 0, pair[:, t - 1][:, a][:, :, a] / prev[:, :, None], 0.0
            )
        v = np.einsum("ni,nij->nj", v, step)
        out[:, t] = v.sum(axis=1)
    return out


def decoupling_time(
    fit: Fit,
    *,
    tracking: str | Sequence[str] | None = None,
    n: int = 1,
    seed: int | np.random.Generator | None = None,
    prob: float = 0.9,
) -> DecouplingTime:
    """Posterior of the decoupling time: the first time each unit enters a non-tracking regime.

    Parameters
    ----------
    fit : Fit
    tracking : str or sequence of str, optional
        Regimes that count as tracking (default: the first regime).
    n : int
        FFBS paths per posterior draw used for ``samples`` and the summary.
    seed : int or numpy Generator, optional
        Seed of the FFBS draws.
    prob : float
        Mass of the highest-density interval, in (0, 1).

    Returns
    -------
    DecouplingTime
        Samples (with "not yet" flagged, never dropped), exact ``P(decoupled by t)``
        per unit and time, and a per-unit summary table.

    Raises
    ------
    PathlockError
        Unknown regime names in ``tracking``, or ``prob`` outside (0, 1).

    Notes
    -----
    Let ``D`` be the first ``t`` with ``S_t`` outside the tracking set.  For
    each draw, ``P(D > t | y, theta)`` follows from the forward-backward
    marginals (see ``_survival``); ``prob_by_time`` is one minus its posterior
    mean.  The median and the HDI are computed from the FFBS samples with "not
    yet" placed after the last time step, so a unit that may never have
    decoupled gets an interval reaching "not yet" rather than a falsely narrow
    one.  The HDI is arviz's shortest interval over these integer positions.
    """
    if not 0.0 < float(prob) < 1.0:
        raise PathlockError(f"prob must lie in (0, 1); found {prob}")
    n_chains, n_draws, n_units, n_steps, n_states = _shape(fit)
    regime_mask = _tracking_regimes(fit, tracking)
    names = fit.regime_names
    mapping = _state_map(fit, n_states)
    state_tracking = regime_mask if mapping is None else regime_mask[mapping]

    raw = _draw_state_paths(fit, n, seed)  # (n, S*U, T)
    off = ~state_tracking[raw]
    first = np.where(off.any(axis=-1), off.argmax(axis=-1), n_steps)
    first = np.moveaxis(first.reshape(int(n), n_chains, n_draws, n_units), 0, 2)
    sample_coords = {**_sample_coords(fit), dims.PATH: np.arange(int(n))}
    ut = _unit_time_coords(fit)
    sdims = (*dims.SAMPLE_DIMS, dims.PATH, dims.UNIT)
    coords = {**sample_coords, dims.UNIT: ut[dims.UNIT]}
    index = xr.DataArray(first, dims=sdims, coords=coords, name="decoupling_index")
    not_yet = xr.DataArray(first == n_steps, dims=sdims, coords=coords, name="not_yet")
    samples = xr.DataArray(
        _labels_at(ut[dims.TIME], first), dims=sdims, coords=coords, name="decoupling_time"
    )

    fb = fit.forward_backward()
    surv = _survival(fb.smoothed, fb.pairwise, state_tracking).reshape(
        n_chains * n_draws, n_units, n_steps
    )
    prob_by_time = xr.DataArray(
        1.0 - surv.mean(axis=0),
        dims=(dims.UNIT, dims.TIME),
        coords=ut,
        name="p_decoupled_by",
    )

    flat = index.stack(__sample__=(*dims.SAMPLE_DIMS, dims.PATH)).transpose(dims.UNIT, "__sample__")
    med = np.quantile(flat.values, 0.5, axis=1, method="inverted_cdf").astype(np.int64)
    hdi = index.azstats.hdi(prob=float(prob), dim=[*dims.SAMPLE_DIMS, dims.PATH])
    lo = hdi.sel(ci_bound="lower").values.astype(np.int64)
    hi = hdi.sel(ci_bound="upper").values.astype(np.int64)
    p_not_yet = 1.0 - prob_by_time.values[:, -1]
    table = pd.DataFrame(
        {
            "median": _labels_at(ut[dims.TIME], med),
            "hdi_low": _labels_at(ut[dims.TIME], lo),
            "hdi_high": _labels_at(ut[dims.TIME], hi),
            "hdi_includes_not_yet": hi >= n_steps,
            "p_not_yet": p_not_yet,
            "p_decoupled": 1.0 - p_not_yet,
        },
        index=pd.Index(ut[dims.UNIT], name=dims.UNIT),
    )
    table.attrs["prob"] = float(prob)
    return DecouplingTime(
        samples=samples,
        not_yet=not_yet,
        index=index,
        prob_by_time=prob_by_time,
        summary=table,
        prob=float(prob),
        tracking=tuple(np.asarray(names)[regime_mask]),
    )


# --------------------------------------------------------------------------
# early warning
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class EarlyWarning:
    """Filtered probability of decoupling and the time it first passes a threshold.

    Attributes
    ----------
    probability : DataArray (unit, time)
        Posterior mean of ``P(S_t not tracking | y_1..t, theta)``.
    detection_time : DataArray (unit,)
        First time label at which ``probability >= threshold``; NaT (NaN for
        numeric time, None otherwise) where it never does.
    detected : DataArray of bool (unit,)
    detection_index : DataArray of int (unit,)
        Position of the detection time; ``n_steps`` where never detected.
    threshold : float
    """

    probability: xr.DataArray
    detection_time: xr.DataArray
    detected: xr.DataArray
    detection_index: xr.DataArray
    threshold: float


def _first_crossing(alarm: NDArray[np.bool_]) -> NDArray[np.int64]:
    """Position of the first True along the last axis; its length where none."""
    return np.where(alarm.any(axis=-1), alarm.argmax(axis=-1), alarm.shape[-1])


def early_warning(
    fit: Fit, threshold: float = 0.8, *, tracking: str | Sequence[str] | None = None
) -> EarlyWarning:
    """Compute the filtered probability of being decoupled as data arrive, and its detection time.

    Parameters
    ----------
    fit : Fit
    threshold : float
        Alarm level in (0, 1).
    tracking : str or sequence of str, optional
        Regimes that count as tracking (default: the first regime).

    Returns
    -------
    EarlyWarning

    Raises
    ------
    PathlockError
        ``threshold`` outside (0, 1) or unknown regimes in ``tracking``.

    Notes
    -----
    Regimes are filtered (step ``t`` sees ``y_1..t`` only); parameters and any
    continuous latent path are taken from the posterior given all the data, so
    the alarm is what a fitted model would have said, not a full refit at
    every step.
    """
    if not 0.0 < float(threshold) < 1.0:
        raise PathlockError(f"threshold must lie in (0, 1); found {threshold}")
    mask = _tracking_regimes(fit, tracking)
    filt = regime_probabilities(fit, "filtered", average=True)
    prob = filt.isel({dims.REGIME: np.flatnonzero(~mask)}).sum(dims.REGIME)
    prob = prob.clip(0.0, 1.0).rename("p_decoupled_filtered")
    first = _first_crossing(prob.values >= float(threshold))
    times = prob[dims.TIME].values
    unit = {dims.UNIT: prob[dims.UNIT].values}
    return EarlyWarning(
        probability=prob,
        detection_time=xr.DataArray(
            _labels_at(times, first), dims=(dims.UNIT,), coords=unit, name="detection_time"
        ),
        detected=xr.DataArray(first < times.size, dims=(dims.UNIT,), coords=unit, name="detected"),
        detection_index=xr.DataArray(first, dims=(dims.UNIT,), coords=unit, name="detection_index"),
        threshold=float(threshold),
    )


def feedback_rule_alarm(
    feedback: xr.DataArray | pd.DataFrame | pd.Series,
    *,
    baseline: int = 20,
    n_sd: float = 2.0,
) -> xr.DataArray:
    """Evaluate the rule "act when feedback moves ``n_sd`` sds from its baseline mean" per step.

    Parameters
    ----------
    feedback : DataArray with a ``time`` dim (and any others, e.g. unit, signal), or pandas
        The observed feedback signal; a DataFrame is read as (time, column) and
        a Series as one series indexed by time.  NaN values are skipped.
    baseline : int
        Number of leading time steps that define the normal mean and standard deviation.
    n_sd : float
        Alarm distance from the baseline mean, in baseline standard deviations.

    Returns
    -------
    DataArray of bool
        ``|y_t - mean| >= n_sd * sd`` with the dims of ``feedback`` (``time``
        last); False over the baseline and at missing values.  Unlike
        :func:`feedback_rule_detection` it keeps every alarm, so a study can
        ask when the rule fired after a known event, or how often it went quiet.

    Raises
    ------
    DataError
        No ``time`` dim, or fewer than ``baseline + 1`` time steps.
    """
    if isinstance(feedback, pd.Series):
        feedback = xr.DataArray(
            feedback.to_numpy(float), dims=(dims.TIME,), coords={dims.TIME: feedback.index}
        )
    elif isinstance(feedback, pd.DataFrame):
        feedback = xr.DataArray(
            feedback.to_numpy(float),
            dims=(dims.TIME, dims.SIGNAL),
            coords={dims.TIME: feedback.index, dims.SIGNAL: feedback.columns},
        )
    if dims.TIME not in feedback.dims:
        raise DataError(f"feedback must have a {dims.TIME!r} dim; found dims {feedback.dims}")
    n_steps = feedback.sizes[dims.TIME]
    if int(baseline) < 2 or n_steps <= int(baseline):
        raise DataError(
            f"baseline must be at least 2 and shorter than the series ({n_steps} steps); "
            f"found {baseline}"
        )
    base = feedback.isel({dims.TIME: slice(0, int(baseline))})
    centre, scale = base.mean(dims.TIME, skipna=True), base.std(dims.TIME, skipna=True, ddof=1)
    alarm = (abs(feedback - centre) >= float(n_sd) * scale).fillna(False)
    alarm[{dims.TIME: slice(0, int(baseline))}] = False
    return (
        alarm.transpose(..., dims.TIME)
        .rename("feedback_rule_alarm")
        .assign_attrs(baseline=int(baseline), n_sd=float(n_sd), rule="baseline mean +- n_sd sd")
    )


def feedback_rule_detection(
    feedback: xr.DataArray | pd.DataFrame | pd.Series,
    *,
    baseline: int = 20,
    n_sd: float = 2.0,
) -> xr.DataArray:
    """Find when the rule "act when feedback moves ``n_sd`` sds from its baseline mean" first fires.

    Parameters
    ----------
    feedback : DataArray with a ``time`` dim (and any others, e.g. unit, signal), or pandas
        As for :func:`feedback_rule_alarm`.
    baseline : int
        Number of leading time steps that define the normal mean and standard deviation.
    n_sd : float
        Alarm distance from the baseline mean, in baseline standard deviations.

    Returns
    -------
    DataArray
        The first time label at or after ``baseline`` where the rule's alarm is
        on, with the other dims of ``feedback``; NaT/NaN where it never fires.
        ``attrs`` hold the rule's settings.

    Raises
    ------
    DataError
        No ``time`` dim, or fewer than ``baseline + 1`` time steps.
    """
    alarm = feedback_rule_alarm(feedback, baseline=baseline, n_sd=n_sd)
    first = _first_crossing(alarm.values)
    other = [d for d in alarm.dims if d != dims.TIME]
    return xr.DataArray(
        _labels_at(alarm[dims.TIME].values, first),
        dims=other,
        coords={d: alarm[d].values for d in other if d in alarm.coords},
        name="detection_time",
        attrs=dict(alarm.attrs),
    )


# --------------------------------------------------------------------------
# hidden constraint
# --------------------------------------------------------------------------

_FEEDBACK_NAMES = ("feedback_a", "feedback_b", "feedback_w")


def _full_loading(w: xr.DataArray, names: list[str]) -> xr.DataArray:
    """Return the loading fraction of every regime: 1 for tracking, ``feedback_w`` otherwise."""
    if dims.REGIME in w.dims and w.sizes[dims.REGIME] == len(names):
        return w
    other = [d for d in w.dims if d not in dims.SAMPLE_DIMS]
    if len(other) == 1 and w.sizes[other[0]] == len(names) - 1:
        ones = xr.ones_like(w.isel({other[0]: [0]}))
        full = xr.concat([ones, w], dim=other[0]).rename({other[0]: dims.REGIME})
        return full.assign_coords({dims.REGIME: names})
    if not other and len(names) == 2:
        return xr.concat([xr.ones_like(w), w], dim=dims.REGIME).assign_coords({dims.REGIME: names})
    raise PathlockError(
        f"feedback_w has dims {w.dims} (sizes {dict(w.sizes)}); expected a {dims.REGIME!r} dim "
        f"over the regimes {names} or over the {len(names) - 1} non-tracking regimes"
    )


def _constraint(fit: Fit) -> xr.DataArray:
    post = fit.idata.posterior
    if "constraint" in post:
        return post["constraint"]
    extras = fit.regime_inputs().extras
    if "constraint" not in extras:
        raise PathlockError(
            "hidden_constraint needs the latent constraint: a posterior variable 'constraint' "
            "or Built.extras['constraint']; this fit has neither"
        )
    n_chains, n_draws, n_units, n_steps, _ = _shape(fit)
    c = np.asarray(extras["constraint"]).reshape(n_chains, n_draws, n_units, n_steps)
    return xr.DataArray(
        c,
        dims=(*dims.SAMPLE_DIMS, dims.UNIT, dims.TIME),
        coords={**_sample_coords(fit), **_unit_time_coords(fit)},
    )


def hidden_constraint(
    fit: Fit,
    *,
    prob: float = 0.9,
    kind: Kind = "smoothed",
    per_draw: bool = False,
) -> xr.Dataset:
    """Compare what the feedback would show if it still tracked with what it is expected to show.

    Parameters
    ----------
    fit : Fit
        A fit of a family with feedback signals (the decoupling model).
    prob : float
        Mass of the highest-density intervals, in (0, 1).
    kind : {"smoothed", "filtered"}
        Regime probabilities used for the expected feedback.
    per_draw : bool
        Return the per-draw values (chain, draw, unit, time, signal) instead of summaries.

    Returns
    -------
    Dataset (unit, time, signal)
        ``if_tracking`` (``a_tracking + b * C_t``), ``expected`` (``sum_k P(S_t = k | y)
        (a_k + b w_k C_t)``) and ``gap`` (their difference), each as posterior
        mean with ``*_low`` / ``*_high`` HDI bounds; ``observed`` where the fit
        holds the observed feedback.  On the linear-predictor scale (log scale
        for count signals).

    Raises
    ------
    PathlockError
        The fit's family has no feedback parameters, or ``prob`` is outside (0, 1).
    """
    if not 0.0 < float(prob) < 1.0:
        raise PathlockError(f"prob must lie in (0, 1); found {prob}")
    post = fit.idata.posterior
    missing = [n for n in _FEEDBACK_NAMES if n not in post]
    names = fit.regime_names
    if missing and not (missing == ["feedback_w"] and len(names) == 1):
        raise PathlockError(
            f"hidden_constraint needs a model with feedback signals: posterior variables "
            f"{list(_FEEDBACK_NAMES)}; family {fit.spec.family!r} lacks {missing}"
        )
    a, b = post["feedback_a"], post["feedback_b"]
    w = _full_loading(post["feedback_w"], names)
    c = _constraint(fit)
    p = regime_probabilities(fit, kind)
    a_track = a.sel({dims.REGIME: names[0]}, drop=True) if dims.REGIME in a.dims else a
    if_tracking = a_track + b * c
    expected = (p * (a + b * w * c)).sum(dims.REGIME)
    gap = if_tracking - expected
    order = (*dims.SAMPLE_DIMS, dims.UNIT, dims.TIME, ...)
    out = {
        "if_tracking": if_tracking.transpose(*order),
        "expected": expected.transpose(*order),
        "gap": gap.transpose(*order),
    }
    if per_draw:
        return xr.Dataset(out, attrs={"scale": "linear predictor", "kind": kind})
    summary: dict[str, xr.DataArray] = {}
    for key, da in out.items():
        summary[key] = da.mean(dims.SAMPLE_DIMS)
        bounds = da.azstats.hdi(prob=float(prob), dim=list(dims.SAMPLE_DIMS))
        summary[f"{key}_low"] = bounds.sel(ci_bound="lower", drop=True)
        summary[f"{key}_high"] = bounds.sel(ci_bound="upper", drop=True)
    observed = _observed_feedback(fit)
    if observed is not None:
        summary["observed"] = observed
    return xr.Dataset(
        summary, attrs={"scale": "linear predictor", "kind": kind, "prob": float(prob)}
    )


def _series_specs(spec: Any, kind: str) -> list[Any]:
    """The spec's indicator or feedback series (objects with ``name`` and ``column``), if any."""
    found = getattr(spec, kind, ())
    if not isinstance(found, tuple | list):
        return []
    return [s for s in found if hasattr(s, "column") and hasattr(s, "name")]


def _observed_feedback(fit: Fit) -> xr.DataArray | None:
    """Observed feedback (unit, time, signal) when the spec names its feedback columns."""
    series = _series_specs(fit.spec, "feedback")
    if not series:
        return None
    ds = fit.data.to_dataset()
    cols = [s.column for s in series]
    if any(c not in ds for c in cols):
        return None
    da = xr.concat([ds[c] for c in cols], dim=dims.SIGNAL, coords="minimal", compat="override")
    da = da.assign_coords({dims.SIGNAL: [s.name for s in series]})
    return da.transpose(dims.UNIT, dims.TIME, dims.SIGNAL).rename("observed")


# --------------------------------------------------------------------------
# summary and comparison
# --------------------------------------------------------------------------


def summary(
    fit: Fit,
    *,
    var_names: Sequence[str] | None = None,
    include_latent: bool = False,
    ci_prob: float = 0.9,
    ci_kind: Literal["hdi", "eti"] = "hdi",
    round_to: int | str = "none",
) -> pd.DataFrame:
    """Parameter table: mean, sd, interval, ESS bulk and tail, R-hat, MCSE; divergences in attrs.

    Parameters
    ----------
    fit : Fit
    var_names : sequence of str, optional
        Variables to include (default: every posterior variable, without the
        latent paths over time unless ``include_latent``).
    include_latent : bool
        Include latent paths: posterior variables with a ``time`` dim or an
        axis of length T or T - 1 (e.g. non-centred innovations).
    ci_prob : float
        Interval mass.
    ci_kind : {"hdi", "eti"}
        Highest-density or equal-tailed interval.
    round_to : int or "none"
        Passed to :func:`arviz.summary`; the default keeps full precision.

    Returns
    -------
    DataFrame
        :func:`arviz.summary`'s table (one row per scalar parameter) with
        ``attrs["divergences"]``, ``attrs["n_samples"]``, ``attrs["divergence_rate"]``
        and ``attrs["max_r_hat"]``.  Entries of the move logits (``hazard_*``)
        that never enter the likelihood are left out: the diagonal (moves are
        relative to staying) and an absorbing regime's row; the posterior
        keeps them, drawn from their priors.
    """
    import arviz as az

    post = fit.idata.posterior
    if var_names is None:
        n_steps = post.sizes.get(dims.TIME, len(fit.built.model.coords[dims.TIME]))
        var_names = [
            str(n)
            for n, v in post.data_vars.items()
            if include_latent or not _is_latent_path(v, n_steps)
        ]
    else:
        unknown = [v for v in var_names if v not in post]
        if unknown:
            raise PathlockError(
                f"var_names: unknown {unknown}; posterior variables are {sorted(post.data_vars)}"
            )
    with warnings.catch_warnings():
        # Fixed quantities (the tracking loading, 1) give 0/0 inside R-hat: NaN, as it should be.
        warnings.simplefilter("ignore", RuntimeWarning)
        table = az.summary(
            fit.idata,
            var_names=list(var_names),
            ci_prob=ci_prob,
            ci_kind=ci_kind,
            round_to=round_to,
        )
    unused = _unused_move_entries(fit, var_names)
    if unused:
        table = table.drop(index=[label for label in unused if label in table.index])
    diverging = fit.idata["sample_stats"]["diverging"]
    table.attrs["divergences"] = int(diverging.sum())
    table.attrs["n_samples"] = int(diverging.size)
    table.attrs["divergence_rate"] = float(diverging.mean())
    if "r_hat" in table:
        table.attrs["max_r_hat"] = float(pd.to_numeric(table["r_hat"], errors="coerce").max())
    return table


def _unused_move_entries(fit: Fit, var_names: Sequence[str]) -> list[str]:
    """Summary labels of move-logit entries (``hazard_*``) that never enter the likelihood.

    Move logits are relative to staying, so the diagonal is unused, and an
    absorbing regime's row is pinned; those entries are sampled from their
    priors only and would otherwise fill the table with prior draws.
    """
    from arviz_base.labels import BaseLabeller

    regimes = getattr(fit.spec, "regimes", None)
    if regimes is None:
        return []
    post = fit.idata.posterior
    # az.summary names its rows with BaseLabeller (via dataset_to_dataframe).
    labeller = BaseLabeller()
    labels: list[str] = []
    for name in var_names:
        var = post[name]
        if not str(name).startswith("hazard_") or not {
            dims.REGIME_FROM,
            dims.REGIME_TO,
        } <= set(var.dims):
            continue
        last = str(var[dims.REGIME_FROM].values[-1])
        other = [d for d in var.dims if d not in dims.SAMPLE_DIMS]
        for index in np.ndindex(*(var.sizes[d] for d in other)):
            isel = dict(zip(other, index, strict=True))
            sel = {d: var[d].values[i] for d, i in isel.items()}
            i, j = str(sel[dims.REGIME_FROM]), str(sel[dims.REGIME_TO])
            if i == j or (regimes.structure == "absorbing" and i == last):
                labels.append(labeller.make_label_flat(str(name), sel, isel))
    return labels


def _is_latent_path(var: xr.DataArray, n_steps: int) -> bool:
    """Whether a posterior variable is a path over time (a ``time`` dim or a T or T-1 axis)."""
    if dims.TIME in var.dims:
        return True
    other = [var.sizes[d] for d in var.dims if d not in dims.SAMPLE_DIMS]
    return n_steps > 3 and any(n in (n_steps, n_steps - 1) for n in other)


def _name_fits(fits: Mapping[str, Fit] | Sequence[Fit]) -> dict[str, Fit]:
    if isinstance(fits, Mapping):
        named = {str(k): v for k, v in fits.items()}
    else:
        named = {}
        for i, f in enumerate(fits):
            base = getattr(f.spec, "name", None) or f.spec.family
            named[f"{base}_{i}"] = f
    if len(named) < 2:
        raise PathlockError(f"compare needs at least 2 fits; found {len(named)}")
    return named


def _loglik_tree(fit: Fit, *, joint_units: bool) -> xr.DataTree:
    """Return a DataTree arviz can read: the posterior and the pointwise log-likelihood."""
    ll = fit.idata["log_likelihood"].to_dataset()
    if joint_units:
        ll = ll.sum(dims.UNIT)
    return xr.DataTree.from_dict(
        {
            "posterior": xr.DataTree(fit.idata.posterior.to_dataset()),
            "log_likelihood": xr.DataTree(ll),
            "sample_stats": xr.DataTree(fit.idata["sample_stats"].to_dataset()),
        }
    )


def compare(
    fits: Mapping[str, Fit] | Sequence[Fit],
    method: Literal["loo", "lfo"] = "loo",
    *,
    weights: Literal["stacking", "BB-pseudo-BMA", "pseudo-BMA"] = "stacking",
    **lfo_kwargs: Any,
) -> pd.DataFrame:
    """Compare fits by expected log predictive density: PSIS-LOO or PSIS leave-future-out.

    Parameters
    ----------
    fits : dict of {name: Fit} or list of Fit
        At least two fits of the same data (list entries are named
        ``{family}_{i}`` or ``{spec.name}_{i}``).
    method : {"loo", "lfo"}
        ``"loo"``: Pareto-smoothed importance-sampling leave-one-out over every
        (unit, time) point of ``log_likelihood["y"]`` (:func:`arviz.loo`).
        ``"lfo"``: M-step-ahead leave-future-out (one step by default),
        Pareto-smoothed with refits (see :func:`lfo`; ``lfo_kwargs`` go there).
    weights : {"stacking", "BB-pseudo-BMA", "pseudo-BMA"}
        How :func:`arviz.compare` weighs the models.
    **lfo_kwargs
        ``min_observations``, ``forecast_horizon``, ``k_threshold``, ``draws``,
        ``tune``, ``chains``, ``seed`` for ``method="lfo"``.

    Returns
    -------
    DataFrame
        :func:`arviz.compare`'s table, best first: ``rank``, ``elpd``, ``se``,
        ``elpd_diff``, ``dse``, ``p``, ``weight``, ``p_worse``, ``diag_elpd``,
        ``diag_diff``; plus ``method`` and ``n_high_k`` (LOO: points whose
        Pareto k exceeds the good-k threshold; LFO: number of refits).
        ``attrs["method"]`` says which estimate it is.

    Raises
    ------
    PathlockError
        Fewer than two fits, or an unknown ``method``.
    """
    import arviz as az

    if method not in ("loo", "lfo"):
        raise PathlockError(f"method must be one of ['loo', 'lfo']; found {method!r}")
    named = _name_fits(fits)
    elpds: dict[str, Any] = {}
    extra: dict[str, int] = {}
    for name, f in named.items():
        if method == "loo":
            with warnings.catch_warnings():
                # The high-k count goes into the table, where it is seen.
                warnings.filterwarnings("ignore", message=".*[Pp]areto.*")
                res = az.loo(_loglik_tree(f, joint_units=False), pointwise=True, var_name="y")
            extra[name] = int((np.asarray(res.pareto_k) > res.good_k).sum())
        else:
            res = lfo(f, **lfo_kwargs)
            extra[name] = int(res.n_refits)
        elpds[name] = res
    table = az.compare(elpds, method=weights, round_to="none")
    label = f"psis-lfo ({lfo_kwargs.get('forecast_horizon', 1)}-step)"
    table.insert(0, "method", "psis-loo" if method == "loo" else label)
    table["n_high_k" if method == "loo" else "n_refits"] = pd.Series(extra)
    table.attrs["method"] = method
    return table


# --------------------------------------------------------------------------
# leave-future-out
# --------------------------------------------------------------------------


def _mask_after(fit: Fit, cutoff: int) -> Any:
    """Return the fit's data with every observation at positions >= ``cutoff`` set missing.

    The time grid is kept, so the refit has the same parameters as the full
    fit (latent paths beyond the cutoff are drawn from their prior) and its
    draws can be scored on the full data.
    """
    ds = fit.data.to_dataset()
    spec = fit.spec
    # Only outcomes are masked: exposures (covariates) stay known.
    series = [*_series_specs(spec, "indicators"), *_series_specs(spec, "feedback")]
    if series:
        observed = [s.column for s in series]
    elif hasattr(fit.data, "split_datasets"):
        observed = list(fit.data.split_datasets()[0].data_vars)
    else:
        observed = [str(n) for n, v in ds.data_vars.items() if dims.TIME in v.dims]
    keep = xr.DataArray(np.arange(ds.sizes[dims.TIME]) < int(cutoff), dims=(dims.TIME,))
    masked = ds.copy()
    for name in observed:
        masked[name] = ds[name].where(keep)
    masked.attrs = dict(ds.attrs)
    return spec.data_from_dataset(masked)


def _refit_predictive(full: Fit, refit: Fit) -> xr.DataArray:
    """``log p(y_t | y_1..t-1, theta)`` on the full data at the refit's draws, summed over units.

    ``theta`` includes the latent path as the refit sampled it: beyond the
    cutoff, a draw from its prior given the path up to there.
    """
    from pathlock.fit import scored_on

    scored = scored_on(full, refit)
    fb = scored.forward_backward()
    n_chains, n_draws, n_units, n_steps, _ = _shape(scored)
    ll = fb.predictive_log_density.reshape(n_chains, n_draws, n_units, n_steps).sum(axis=2)
    return xr.DataArray(
        ll,
        dims=(*dims.SAMPLE_DIMS, dims.TIME),
        coords={**_sample_coords(scored), dims.TIME: _unit_time_coords(full)[dims.TIME]},
    )


def lfo(
    fit: Fit,
    *,
    min_observations: int | None = None,
    forecast_horizon: int = 1,
    k_threshold: float = 0.7,
    draws: int = 500,
    tune: int = 500,
    chains: int = 2,
    seed: int | None = None,
    **fit_kwargs: Any,
) -> Any:
    """Approximate M-step-ahead leave-future-out cross-validation (PSIS-LFO with refits).

    Parameters
    ----------
    fit : Fit
    min_observations : int, optional
        First forecast origin (default: half the series).
    forecast_horizon : int
        M: each origin ``i`` is scored on the joint density of the next M
        observations, ``log p(y_(i+1)..y_(i+M) | y_1..i)`` (default 1, one step
        ahead).  Overlapping windows count one surprising step up to M times.
    k_threshold : float
        Pareto k above which the model is refitted at the current origin
        (Bürkner, Gabry and Vehtari recommend 0.7; 0.6 is more cautious).
    draws, tune, chains, seed, **fit_kwargs
        Sampler settings of the refits (:func:`pathlock.fit`); refit ``i`` uses
        ``seed + cutoff`` when a seed is given.

    Returns
    -------
    arviz_stats.ELPDDataLFO
        With ``elpd``, ``se``, ``p``, per-origin ``elpd_i`` and ``pareto_k``,
        ``refits`` and ``n_refits``.

    Notes
    -----
    Bürkner, Gabry & Vehtari (2020), "Approximate leave-future-out
    cross-validation for Bayesian time series models", via
    :func:`arviz.lfo_cv`.  The model is fitted on ``y_1..L`` (observations
    after ``L`` set missing, the time grid kept), and the posterior is moved to
    later origins ``i`` with importance ratios ``prod_{L < t <= i} p(y_t |
    y_1..t-1, theta)`` until their Pareto k exceeds ``k_threshold``, where it
    refits.  Units are scored jointly: the score of origin ``i`` is
    ``log p(y_(i+1)..y_(i+M) | y_1..i)`` summed over units, the product of the
    one-step densities ``p(y_t | y_1..t-1, theta)`` averaged over the draws.
    ``theta`` includes a latent path (the decoupling model's constraint) as
    the refit sampled it: beyond the cutoff, a draw from its prior given the
    path up to there, so averaging over draws integrates the future path out
    (:func:`pathlock.fit.scored_on`).  Each refit is a full NUTS run, so this
    costs minutes per fit.
    """
    import arviz as az
    from arviz_stats.loo.wrapper import SamplingWrapper

    from pathlock.fit import fit as run_fit

    n_steps = _shape(fit)[3]
    min_obs = int(n_steps // 2 if min_observations is None else min_observations)
    if not 2 <= min_obs < n_steps:
        raise PathlockError(
            f"min_observations must lie in [2, {n_steps - 1}]; found {min_observations}"
        )
    horizon = int(forecast_horizon)
    if horizon != forecast_horizon or not 1 <= horizon <= n_steps - min_obs:
        raise PathlockError(
            f"forecast_horizon must be an integer in [1, {n_steps - min_obs}] "
            f"(steps after min_observations = {min_obs}); found {forecast_horizon!r}"
        )

    spec = fit.spec
    if hasattr(spec, "parameterization_for"):
        # The refits sample in the full fit's coordinates: masked data could resolve
        # ``auto`` otherwise (a jump after the cutoff), and the draws are scored in
        # the full fit's model.
        mode = spec.parameterization_for(fit.data)
        spec = replace(spec, constraint=replace(spec.constraint, parameterization=mode))

    class _Wrapper(SamplingWrapper):
        """Refits on masked data; scores the full data at the refit's draws."""

        last: Fit | None = None

        def sel_observations(self, idx):
            cutoff = int(np.min(idx))
            return (_mask_after(fit, cutoff), cutoff), cutoff

        def sample(self, modified_observed_data):
            data, cutoff = modified_observed_data
            s = None if seed is None else int(seed) + cutoff
            return run_fit(
                spec,
                data,
                draws=draws,
                tune=tune,
                chains=chains,
                seed=s,
                check=False,
                **fit_kwargs,
            )

        def get_inference_data(self, fitted_model):
            self.last = fitted_model
            return fitted_model.idata

        def log_likelihood__i(self, excluded_obs, idata__i):
            return _refit_predictive(fit, self.last).isel(
                {dims.TIME: slice(int(excluded_obs), None)}
            )

    wrapper = _Wrapper(model=fit)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="pymc")
        return az.lfo_cv(
            _loglik_tree(fit, joint_units=True),
            wrapper,
            min_observations=min_obs,
            forecast_horizon=horizon,
            time_dim=dims.TIME,
            pointwise=True,
            var_name="y",
            method="approx",
            k_threshold=float(k_threshold),
        )
