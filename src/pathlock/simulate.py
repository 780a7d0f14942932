"""Synthetic data with known ground truth from a decoupling spec.

:func:`simulate` draws a constraint path with the model's own process
definitions (:func:`pathlock.processes.simulate_paths`), regimes with the
model's transition structure (:mod:`pathlock.regimes`) and observations with
the model's emission families (:mod:`pathlock.observations`), and returns a
long DataFrame shaped like the data users bring plus a :class:`Truth`.  It
knows nothing of PyMC models or fitting.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from pathlock import dims
from pathlock.errors import SpecError
from pathlock.observations import draw
from pathlock.processes import PROCESSES, simulate_paths
from pathlock.regimes import (
    hazard_logits,
    hold_tracking_probabilities,
    transition_probabilities,
)
from pathlock.spec import Fixed

if TYPE_CHECKING:
    import xarray as xr

    from pathlock.spec import Spec

__all__ = ["simulate", "Truth", "DEFAULT_TRUTH", "draw_parameters", "NOT_YET"]

#: Decoupling time of a unit that never left the tracking regime.
NOT_YET = -1

#: Parameter values used when ``simulate`` gets no ``params`` (natural scale).
#: The ratchet grows by about 0.09 per step, the lock-in logit is
#: ``-6 + 1.0 * C_(t-1)``, so decoupling typically happens around step 40-60.
DEFAULT_TRUTH: dict[str, Any] = {
    "constraint_init": 0.0,
    "constraint_mu": -2.5,
    "constraint_sigma": 0.5,
    "constraint_beta": 0.3,
    "constraint_phi": 0.95,
    "constraint_rho": 0.2,
    "constraint_kappa": 2.0,
    "constraint_width": 0.25,
    "regime_init": None,
    "trans_p": None,
    "hazard_intercept": -6.0,
    "hazard_slope": 1.0,
    "hazard_eta": 0.0,
    "indicator_nu": 0.0,
    "indicator_lambda": 1.0,
    "indicator_sigma": 0.25,
    "indicator_df": 5.0,
    "indicator_alpha": 10.0,
    "feedback_a": None,
    "feedback_b": 1.0,
    "feedback_w": None,  # 1 (tracking), then 0.2 decreasing to 0.05
    "feedback_sigma": 0.3,
    "feedback_df": 5.0,
    "feedback_alpha": 10.0,
}


@dataclass(frozen=True)
class Truth:
    """Ground truth of a simulation.

    Attributes
    ----------
    params : dict of str to ndarray
        Every parameter used, natural scale (per-unit values have a leading unit axis).
    constraint : ndarray (unit, time)
    regimes : ndarray (unit, time) of int
        Regime index; names in ``regime_names``.
    regime_names : tuple of str
    decoupling_time : ndarray (unit,) of int
        First time index in a non-tracking regime; :data:`NOT_YET` (-1) if never.
    decoupled : ndarray (unit,) of bool
        Whether the unit ever left the tracking regime (the explicit "not yet" flag).
    units, times : ndarray
        Labels of the ``unit`` and ``time`` dims, as in the returned DataFrame.
    """

    params: Mapping[str, NDArray[Any]]
    constraint: NDArray[np.float64]
    regimes: NDArray[np.int64]
    regime_names: tuple[str, ...]
    decoupling_time: NDArray[np.int64]
    decoupled: NDArray[np.bool_]
    units: NDArray[Any]
    times: NDArray[Any]

    def to_dataset(self) -> xr.Dataset:
        """Return constraint, regime and decoupling time as a labelled xarray Dataset."""
        import xarray as xr

        names = np.asarray(self.regime_names)
        return xr.Dataset(
            {
                "constraint": ((dims.UNIT, dims.TIME), self.constraint),
                "regime": ((dims.UNIT, dims.TIME), names[self.regimes]),
                "decoupling_time": ((dims.UNIT,), self.decoupling_time),
                "decoupled": ((dims.UNIT,), self.decoupled),
            },
            coords={dims.UNIT: self.units, dims.TIME: self.times},
        )


def _default(spec: Spec, name: str) -> Any:
    k = spec.n_regimes
    if name == "feedback_w":
        return np.concatenate([[1.0], np.linspace(0.2, 0.05, k - 1)])
    if name == "feedback_a":
        return np.linspace(0.0, 1.0, k)
    if name == "trans_p":
        p = np.full((k, k), 0.05 / max(k - 1, 1))
        np.fill_diagonal(p, 0.95)
        if spec.regimes.structure == "absorbing":
            p[-1] = 0.0
            p[-1, -1] = 1.0
        return p
    if name == "regime_init":
        return np.full(k, 1.0 / k)
    if name == "constraint_mu" and spec.constraint.process == "random_walk":
        return 0.05
    if name == "constraint_mu" and spec.constraint.process == "ar1":
        return 2.0
    if name == "constraint_sigma" and not PROCESSES[spec.constraint.process].log_increment:
        return 0.1
    return DEFAULT_TRUTH[name]


def draw_parameters(spec: Spec, rng: np.random.Generator, n_units: int = 1) -> dict[str, Any]:
    """Draw every parameter the spec's model uses from its prior (fixed ones keep their value).

    Parameters
    ----------
    spec : Spec
    rng : numpy.random.Generator
    n_units : int
        Hierarchical parameters get one value per unit; ``constraint_init`` too.

    Returns
    -------
    dict of str to ndarray
        Natural-scale values by name; ``feedback_w`` is the full (regime,)
        vector with 1 for tracking, sorted decreasing when ``ordered_loadings``.
    """
    import pymc as pm

    out: dict[str, Any] = {}
    params = spec.parameters()
    coords = {
        dims.REGIME: spec.n_regimes,
        dims.REGIME_FROM: spec.n_regimes,
        dims.REGIME_TO: spec.n_regimes,
        dims.INDICATOR: len(spec.indicators),
        dims.SIGNAL: len(spec.feedback),
        dims.EXPOSURE: len(spec.constraint.exposures),
        dims.EXOG: len(spec.regimes.covariates),
        dims.UNIT: n_units,
    }
    for name, p in params.items():
        if name.endswith("_unit_sigma"):
            continue
        shape = tuple(coords[d] for d in p.dims)
        prior = p.default
        if not isinstance(prior, Fixed):
            dist = getattr(pm, prior.dist).dist(
                **{k: np.asarray(v, dtype=float) for k, v in prior.kwargs.items()}
            )
            seed = int(rng.integers(2**31))
            if name in ("trans_p", "regime_init"):
                value = pm.draw(dist, random_seed=seed)
            else:
                value = pm.draw(dist, draws=int(np.prod(shape)) or 1, random_seed=seed)
                value = np.reshape(value, shape) if shape else float(np.ravel(value)[0])
        else:
            value = np.broadcast_to(np.asarray(prior.value, dtype=float), shape)
        out[name] = np.asarray(value, dtype=float)
    if "feedback_w" in out or spec.n_regimes > 1:
        w = np.ones(spec.n_regimes)
        drawn = np.ravel(out.get("feedback_w", np.zeros(spec.n_regimes)))
        for i, r in enumerate(spec.regime_names[1:], start=1):
            prior = spec.loading(r)
            w[i] = float(np.asarray(prior.value)) if isinstance(prior, Fixed) else drawn[i]
        if spec.regimes.ordered_loadings:
            w[1:] = np.sort(w[1:])[::-1]
        out["feedback_w"] = w
    if "constraint_init" in out:
        out["constraint_init"] = np.broadcast_to(out["constraint_init"], (n_units,)).copy()
    return out


def _agrees(name: str, given: Any, fixed: NDArray[np.float64]) -> None:
    """A value given for a parameter the spec fixes must be that value."""
    try:
        same = np.allclose(*np.broadcast_arrays(np.asarray(given, dtype=float), fixed))
    except ValueError:
        same = False
    if not same:
        raise SpecError(
            f"simulate: params gives {name} = {np.asarray(given).tolist()}, but the spec fixes "
            f"it at {fixed.tolist()}; leave it out of params or change the spec"
        )


def _resolve(spec: Spec, params: Mapping[str, Any] | None, n_units: int) -> dict[str, Any]:
    used = set(spec.parameters())
    given = dict(params or {})
    unknown = sorted(set(given) - set(DEFAULT_TRUTH) - used)
    if unknown:
        raise SpecError(
            f"simulate: unknown parameter(s) {unknown}; allowed: {sorted(set(DEFAULT_TRUTH))}"
        )
    out: dict[str, Any] = {}
    k, n_ind, n_sig = spec.n_regimes, len(spec.indicators), len(spec.feedback)
    meta = spec.parameters()
    for name in used | {"constraint_init", "constraint_mu", "constraint_sigma"}:
        if name.endswith("_unit_sigma"):
            continue
        prior = meta[name].default if name in meta else None
        if name != "feedback_w" and isinstance(prior, Fixed):
            # A value fixed in the spec is part of the model: the data must come from it.
            value = np.asarray(prior.value, dtype=float)
            if name in given:
                _agrees(name, given[name], value)
        else:
            value = given[name] if name in given else _default(spec, name)
        out[name] = np.asarray(value, dtype=float)
    # full loading vector (tracking = 1), also when fixed in the spec
    w = np.ones(k)
    given_w = np.ravel(given["feedback_w"]) if "feedback_w" in given else None
    for i, r in enumerate(spec.regime_names[1:], start=1):
        prior = spec.loading(r)
        if isinstance(prior, Fixed):
            w[i] = float(np.asarray(prior.value))
            if given_w is not None:
                _agrees(f"feedback_w ({r})", given_w[i if given_w.size == k else i - 1], w[i])
        elif given_w is not None:
            w[i] = given_w[i] if given_w.size == k else given_w[i - 1]
        else:
            w[i] = _default(spec, "feedback_w")[i]
    if np.any((w[1:] < 0) | (w[1:] >= 1)):
        raise SpecError(
            f"simulate: feedback_w of non-tracking regimes must lie in [0, 1); found {w}"
        )
    out["feedback_w"] = w
    out["constraint_init"] = np.broadcast_to(out["constraint_init"], (n_units,)).copy()
    out["indicator_nu"] = np.broadcast_to(out.get("indicator_nu", 0.0), (n_ind,)).copy()
    out["indicator_lambda"] = np.broadcast_to(out.get("indicator_lambda", 1.0), (n_ind,)).copy()
    out["indicator_nu"][0], out["indicator_lambda"][0] = 0.0, 1.0
    a = out.get("feedback_a", _default(spec, "feedback_a"))
    out["feedback_a"] = np.broadcast_to(
        a if np.ndim(a) != 1 or a.size != k else a[None], (n_sig, k)
    )
    return out


def simulate(
    spec: Spec,
    params: Mapping[str, Any] | Literal["prior"] | None = None,
    *,
    n_steps: int,
    n_units: int = 1,
    seed: int | np.random.Generator | None = None,
) -> tuple[pd.DataFrame, Truth]:
    """Simulate data from a decoupling spec with known ground truth.

    Parameters
    ----------
    spec : Spec
    params : mapping, "prior" or None
        Natural-scale parameter values by name (missing ones take the value
        the spec fixes them at, else the documented defaults in
        :data:`DEFAULT_TRUTH`; a value that contradicts one the spec fixes
        is a ``SpecError``); ``"prior"`` draws every
        parameter from the spec's priors (seeded); ``None`` uses the defaults.
        Scalars broadcast over their dims; ``feedback_w`` may list the
        non-tracking regimes only.
    n_steps : int
        Number of time steps (at least 2).
    n_units : int
        Number of units (a ``unit`` column is added when more than one).
    seed : int or Generator, optional

    Returns
    -------
    DataFrame
        Long format: the spec's time column (integers 0..n_steps-1), the unit
        column (``spec.data.unit`` or ``"unit"``) when ``n_units > 1``, every
        indicator and feedback column, exposures and covariates (drawn
        standard normal).
    Truth
        Constraint and regime paths, decoupling times (-1 and ``decoupled =
        False`` when a unit never decoupled) and the parameters used.

    Raises
    ------
    SpecError
        Unknown parameter names, loading fractions outside [0, 1), or a value
        that contradicts one the spec fixes.

    Examples
    --------
    >>> import pathlock as pl
    >>> spec = pl.Spec.from_toml("models/decoupling.toml")  # doctest: +SKIP
    >>> df, truth = pl.simulate(spec, n_steps=150, seed=1)  # doctest: +SKIP
    """
    if int(n_steps) < 2:
        raise SpecError(f"simulate: n_steps must be at least 2; found {n_steps}")
    if int(n_units) < 1:
        raise SpecError(f"simulate: n_units must be at least 1; found {n_units}")
    rng = np.random.default_rng(seed)
    n_steps, n_units = int(n_steps), int(n_units)
    if isinstance(params, str):
        if params != "prior":
            raise SpecError(f"simulate: params = {params!r}; expected a mapping, 'prior' or None")
        p = _resolve(spec, draw_parameters(spec, rng, n_units), n_units)
    else:
        p = _resolve(spec, params, n_units)
    process = spec.constraint.process
    k = spec.n_regimes

    def per_unit(x: Any) -> NDArray[np.float64]:
        x = np.asarray(x, dtype=float)
        return (
            x
            if x.ndim >= 1 and x.shape[0] == n_units and x.ndim > 0
            else np.broadcast_to(x, (n_units, *x.shape))
        )

    exposures = rng.standard_normal((n_units, n_steps, len(spec.constraint.exposures)))
    covariates = rng.standard_normal((n_units, n_steps, len(spec.regimes.covariates)))
    proc_params = {
        "mu": per_unit(p["constraint_mu"]).reshape(n_units),
        "sigma": np.broadcast_to(p["constraint_sigma"], (n_units,)),
        "baseline": p["constraint_init"],
    }
    for extra in PROCESSES[process].parameters:
        if extra != "baseline":
            proc_params[extra] = np.broadcast_to(p[f"constraint_{extra}"], (n_units,))
    if spec.constraint.exposures:
        beta = np.asarray(p["constraint_beta"], dtype=float)
        proc_params["beta"] = np.broadcast_to(beta, (n_units, len(spec.constraint.exposures)))
    shocks = rng.standard_normal((n_units, n_steps - 1))
    rest = simulate_paths(
        process,
        proc_params,
        shocks,
        init=p["constraint_init"],
        exposures=exposures[:, 1:] if spec.constraint.exposures else None,
    )
    constraint = np.concatenate([p["constraint_init"][:, None], rest], axis=1)

    # regimes
    regimes = np.zeros((n_units, n_steps), dtype=np.int64)
    if k > 1:
        if spec.regimes.initial == "free":
            init_p = np.asarray(p["regime_init"], dtype=float)
            regimes[:, 0] = rng.choice(k, size=n_units, p=init_p / init_p.sum())
        if spec.time_varying:
            g0 = (
                np.broadcast_to(p["hazard_intercept"], (k, k))
                if np.ndim(p["hazard_intercept"]) < 3
                else p["hazard_intercept"]
            )
            g1 = None
            if spec.regimes.hazard_on_constraint:
                g1 = np.broadcast_to(p["hazard_slope"], np.shape(g0))
            eta = None
            if spec.regimes.covariates:
                eta = np.broadcast_to(
                    p["hazard_eta"], (*np.shape(g0), len(spec.regimes.covariates))
                )
            lagged = np.concatenate([constraint[:, :1], constraint[:, :-1]], axis=1)
            logits = hazard_logits(
                np.asarray(g0),
                None if g1 is None else np.asarray(g1),
                lagged,
                None if eta is None else np.asarray(eta),
                covariates if spec.regimes.covariates else None,
                xp=np,
            )
            probs = transition_probabilities(logits, spec.regimes.structure)
        else:
            rows = np.asarray(p["trans_p"], dtype=float)
            probs = np.broadcast_to(rows, (n_units, n_steps, k, k))
        probs = hold_tracking_probabilities(probs, spec.regimes.known_tracking)
        u = rng.random((n_units, n_steps))
        for t in range(1, n_steps):
            row = probs[np.arange(n_units), t, regimes[:, t - 1]]
            regimes[:, t] = np.minimum((np.cumsum(row, axis=1) < u[:, t, None]).sum(1), k - 1)

    # observations
    columns: dict[str, NDArray[np.float64]] = {}
    for j, series in enumerate(spec.indicators):
        eta = p["indicator_nu"][j] + p["indicator_lambda"][j] * constraint
        nuis = {
            "sigma": np.ravel(p.get("indicator_sigma", np.ones(1)))[
                j % np.size(p.get("indicator_sigma", 1))
            ],
            "df": np.ravel(p.get("indicator_df", np.ones(1)))[
                j % np.size(p.get("indicator_df", 1))
            ],
            "alpha": np.ravel(p.get("indicator_alpha", np.ones(1)))[
                j % np.size(p.get("indicator_alpha", 1))
            ],
        }
        columns[series.column] = draw(series.family, eta, nuis, rng)
    w = p["feedback_w"]
    for m, series in enumerate(spec.feedback):
        a_m = np.asarray(p["feedback_a"])[m]
        b_m = np.ravel(np.broadcast_to(p["feedback_b"], (len(spec.feedback),)))[m]
        eta = a_m[regimes] + b_m * w[regimes] * constraint
        sig = np.asarray(p.get("feedback_sigma", 1.0), dtype=float)
        sig = (
            np.broadcast_to(
                sig if sig.ndim == 2 else np.reshape(sig, (-1, 1)), (len(spec.feedback), k)
            )
            if sig.ndim
            else np.full((len(spec.feedback), k), float(sig))
        )
        nuis = {
            "sigma": sig[m][regimes],
            "df": np.ravel(np.broadcast_to(p.get("feedback_df", 5.0), (len(spec.feedback),)))[m],
            "alpha": np.ravel(
                np.broadcast_to(p.get("feedback_alpha", 10.0), (len(spec.feedback),))
            )[m],
        }
        columns[series.column] = draw(series.family, eta, nuis, rng)
    for e, name in enumerate(spec.constraint.exposures):
        columns[name] = exposures[:, :, e]
    for c, name in enumerate(spec.regimes.covariates):
        columns[name] = covariates[:, :, c]

    units = np.arange(n_units)
    times = np.arange(n_steps)
    frame: dict[str, Any] = {}
    if n_units > 1:
        frame[spec.data.unit or "unit"] = np.repeat(units, n_steps)
    frame[spec.data.time] = np.tile(times, n_units)
    for name, arr in columns.items():
        frame[name] = arr.reshape(-1)
    df = pd.DataFrame(frame)

    off = regimes > 0
    decoupled = off.any(axis=1)
    tau = np.where(decoupled, off.argmax(axis=1), NOT_YET).astype(np.int64)
    truth = Truth(
        params={kk: np.asarray(v) for kk, v in p.items()},
        constraint=constraint,
        regimes=regimes,
        regime_names=tuple(spec.regime_names),
        decoupling_time=tau,
        decoupled=decoupled,
        units=units,
        times=times,
    )
    return df, truth
