"""From a specification and data to a PyMC model: the contract every model family meets.

A model family (the decoupling model of :mod:`pathlock.spec`, the
Markov-switching regressions of :mod:`pathlock.msreg`) turns its spec and
validated data into a :class:`Built`: the ``pm.Model`` with labelled coords and
stably named variables, plus the three symbolic regime inputs of the
forward-backward kernel.  Everything downstream (fit, analysis,
interventions) goes through this contract and never through a family's
internals.  This module does not know how any family builds its graph.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import pymc as pm
import pytensor.tensor as pt

__all__ = [
    "Built",
    "ModelSpec",
    "ModelData",
    "build_model",
    "load_spec",
    "loglike",
    "register_family",
    "spec_class",
]

#: The samplers and nutpie's mass-matrix adaptations, for every family's
#: ``[sampler]`` and for ``fit``.
SamplerName = Literal["nutpie", "pymc"]
Adaptation = Literal["draw_diag", "diag", "low_rank"]
Backend = Literal["numba", "jax"]


@dataclass(frozen=True)
class Built:
    """A built model and the symbolic inputs of its regime kernel.

    Attributes
    ----------
    model : pm.Model
        The model, with coords for ``unit``, ``time``, ``regime`` (and
        ``indicator``, ``signal`` where they exist) carrying the user's labels.
    log_init : TensorVariable (unit or 1, regime)
        Initial regime log-probabilities.
    log_trans : TensorVariable (unit or 1, time or 1, regime, regime)
        ``log P(S_t = j | S_(t-1) = i)``.
    log_emit : TensorVariable (unit, time, regime)
        Log-density of everything observed at ``t`` given regime ``k`` (and
        the continuous latent state); zero where nothing was observed, so the
        kernel's predictive log-density is the pointwise log-likelihood
        ``log p(y_t | y_1..t-1)``.
    extras : dict
        Family-specific symbolic quantities (e.g. ``"constraint"``), each a
        TensorVariable, which analysis may evaluate per posterior draw.
    data_shared : bool
        True when every data-dependent value of the graph is a ``pm.Data``
        of ``model`` (none is a constant), so a compiled model can sample
        another data set of the same shapes by swapping the data in.
    unjittered : frozenset of str
        Free variables whose initial value is derived from the data and which
        every chain starts from exactly (the sampler jitters the others).
    run_time_dims : frozenset of str
        Dims whose lengths (shared variables of ``model``) the graph reads at
        run time: one compiled graph then serves every length of them
        (:func:`pathlock.compiled.compile_nutpie`).
    """

    model: pm.Model
    log_init: pt.TensorVariable
    log_trans: pt.TensorVariable
    log_emit: pt.TensorVariable
    extras: Mapping[str, pt.TensorVariable] = field(default_factory=dict)
    data_shared: bool = False
    unjittered: frozenset[str] = frozenset()
    run_time_dims: frozenset[str] = frozenset()


@runtime_checkable
class ModelData(Protocol):
    """Validated data a family accepts; round-trips through an xarray Dataset."""

    def to_dataset(self) -> Any:
        """Return an ``xarray.Dataset`` with the observed data and its coords."""
        ...


@runtime_checkable
class ModelSpec(Protocol):
    """What every model specification provides.

    A family may also define ``target_accept_for(data) -> float``: the NUTS
    target acceptance rate :func:`pathlock.fit` uses for validated ``data`` when
    its own ``target_accept`` is not given (the decoupling ``Spec`` chooses it
    by series length), and likewise ``adaptation_for(data) -> str``, nutpie's
    mass-matrix adaptation. Without them, ``fit`` reads the spec's ``sampler``
    options.
    """

    family: str

    def build(self, data: Any) -> Built:
        """Return the built model for validated or raw data."""
        ...

    def prepare_data(self, data: Any) -> ModelData:
        """Validate raw input (DataFrame, path, data object) into the family's data object."""
        ...

    def data_from_dataset(self, ds: Any) -> ModelData:
        """Rebuild the data object from :meth:`ModelData.to_dataset` output."""
        ...

    def loglike(self, data: Any, params: Mapping[str, Any]) -> float:
        """Marginal log-likelihood at named parameter values (natural scale)."""
        ...

    def to_toml(self) -> str:
        """Serialise the spec as TOML text (with ``schema_version`` and ``family``)."""
        ...


_FAMILIES: dict[str, type] = {}


def register_family(name: str, spec_cls: type) -> None:
    """Register a spec class under its ``family`` name (used when loading saved fits)."""
    _FAMILIES[name] = spec_cls


def spec_class(name: str) -> type:
    """Return the spec class registered for ``name``; the error lists the known families."""
    from pathlock.errors import SpecError

    try:
        return _FAMILIES[name]
    except KeyError:
        raise SpecError(
            f"unknown model family {name!r}; known families: {sorted(_FAMILIES)}"
        ) from None


def build_model(spec: ModelSpec, data: Any) -> pm.Model:
    """Build the PyMC model for ``spec`` on ``data``.

    Parameters
    ----------
    spec : Spec or MarkovSwitching
        A model specification.
    data : data object, DataFrame or path
        Anything ``spec.prepare_data`` accepts.

    Returns
    -------
    pm.Model
        A model the user may extend inside ``with model:``.
    """
    return spec.build(spec.prepare_data(data)).model


def loglike(spec: ModelSpec, data: Any, params: Mapping[str, Any]) -> float:
    """Marginal log-likelihood of ``data`` at named parameters in their natural scale.

    Parameters
    ----------
    spec : Spec or MarkovSwitching
    data : data object, DataFrame or path
    params : mapping
        Parameter values by name, e.g. ``{"const": [1.16, -0.36], "sigma2": 0.59, ...}``.

    Returns
    -------
    float
        The log-likelihood, summed over units.
    """
    return float(spec.loglike(spec.prepare_data(data), params))


def load_spec(path: Any) -> ModelSpec:
    """Read any pathlock model file, dispatching on its ``family`` key.

    Parameters
    ----------
    path : path-like
        A TOML model file; ``family`` defaults to ``"decoupling"``.

    Returns
    -------
    Spec or MarkovSwitching

    Raises
    ------
    SpecError
        Unreadable TOML or an unknown family (the message lists the known ones).
    """
    import tomllib
    from pathlib import Path

    from pathlock import _register_families
    from pathlock.errors import SpecError

    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise SpecError(f"model file {p} does not exist") from None
    except OSError as exc:
        raise SpecError(f"model file {p} cannot be read: {exc}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"model file {p} is not valid TOML: {exc}") from None
    _register_families()
    cls = spec_class(str(doc.get("family", "decoupling")))
    return cls.from_toml_string(text)  # type: ignore[attr-defined, no-any-return]
