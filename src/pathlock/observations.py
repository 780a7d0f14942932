"""Emission families of indicators and feedback signals: log-densities and draws.

Each family maps a linear predictor ``eta`` (the mean for ``normal`` and
``student_t``, the log-mean for the count families) and its nuisance
parameters to a pointwise log-density, symbolic (:func:`log_density`, where a
missing observation contributes exactly zero) or a random draw (:func:`draw`,
NumPy, for the simulator).  This module knows nothing of regimes, processes or
specs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import pymc as pm
import pytensor.tensor as pt
from numpy.typing import ArrayLike, NDArray

from pathlock.errors import SpecError

__all__ = ["FAMILIES", "Family", "NUISANCE", "log_density", "draw", "link_inverse"]

Family = Literal["normal", "student_t", "poisson", "negative_binomial"]

#: Nuisance parameters of each family (names as in the spec without the component prefix).
NUISANCE: dict[str, tuple[str, ...]] = {
    "normal": ("sigma",),
    "student_t": ("sigma", "df"),
    "poisson": (),
    "negative_binomial": ("alpha",),
}
FAMILIES: tuple[str, ...] = tuple(NUISANCE)


def _check(family: str) -> None:
    if family not in NUISANCE:
        raise SpecError(f"unknown observation family {family!r}; allowed: {list(FAMILIES)}")


def link_inverse(family: str, eta: Any, xp=np) -> Any:
    """Mean of the observation given the linear predictor (``exp`` for counts)."""
    _check(family)
    return xp.exp(eta) if family in ("poisson", "negative_binomial") else eta


def _dist(family: str, eta: Any, params: Mapping[str, Any]) -> Any:
    if family == "normal":
        return pm.Normal.dist(mu=eta, sigma=params["sigma"])
    if family == "student_t":
        return pm.StudentT.dist(nu=params["df"], mu=eta, sigma=params["sigma"])
    if family == "poisson":
        return pm.Poisson.dist(mu=pt.exp(eta))
    return pm.NegativeBinomial.dist(mu=pt.exp(eta), alpha=params["alpha"])


def log_density(
    family: str,
    observed: Any,
    eta: Any,
    params: Mapping[str, Any],
    missing: Any = None,
) -> pt.TensorVariable:
    """Pointwise log-density of ``observed`` given the linear predictor, zero where missing.

    Parameters
    ----------
    family : {"normal", "student_t", "poisson", "negative_binomial"}
    observed : array_like or TensorVariable
        Data: an array with NaN marking missing values (a constant of the
        graph), or a tensor (e.g. ``pm.Data``) of valid values with the
        missing entries given by ``missing``.
    eta : TensorLike
        Linear predictor broadcastable against ``observed``: the mean, or the
        log-mean for counts.
    params : mapping
        Nuisance parameters (:data:`NUISANCE`), broadcastable against ``observed``.
    missing : TensorVariable of bool, optional
        Only with a tensor ``observed``: True where the observation is missing.

    Returns
    -------
    TensorVariable
        Same shape as the broadcast of ``observed`` and ``eta``.

    Notes
    -----
    Missing entries are filled with a valid value before evaluation and then
    masked with ``switch``, so neither the value nor the gradient sees a NaN.
    """
    _check(family)
    if not isinstance(observed, pt.Variable):
        y = np.asarray(observed, dtype=float)
        mask = np.isnan(y)
        observed = np.where(mask, 0.0, y)
        missing = pt.as_tensor_variable(mask) if mask.any() else None
    logp = pm.logp(_dist(family, eta, params), observed)
    return logp if missing is None else pt.switch(missing, 0.0, logp)


def draw(
    family: str, eta: ArrayLike, params: Mapping[str, ArrayLike], rng: np.random.Generator
) -> NDArray[np.float64]:
    """Random observations given the linear predictor (NumPy; used by the simulator).

    Parameters
    ----------
    family : str
    eta : array_like
        Linear predictor.
    params : mapping of array_like
        Nuisance parameters broadcastable against ``eta``.
    rng : numpy.random.Generator

    Returns
    -------
    ndarray
        Same shape as ``eta``; counts are returned as floats.
    """
    _check(family)
    eta = np.asarray(eta, dtype=float)
    if family == "normal":
        return eta + np.asarray(params["sigma"]) * rng.standard_normal(eta.shape)
    if family == "student_t":
        df = np.broadcast_to(np.asarray(params["df"], dtype=float), eta.shape)
        return eta + np.asarray(params["sigma"]) * rng.standard_t(df)
    mean = np.exp(eta)
    if family == "poisson":
        return rng.poisson(mean).astype(float)
    alpha = np.broadcast_to(np.asarray(params["alpha"], dtype=float), eta.shape)
    # numpy's parameterisation: n successes, success probability p; mean n(1-p)/p.
    return rng.negative_binomial(alpha, alpha / (alpha + mean)).astype(float)
