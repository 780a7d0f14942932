"""The decoupling model's specification: frozen objects, TOML round trip, validation, priors.

A :class:`Spec` says *what* model to build: the constraint process and its
exposures, the named regimes and how they switch, which columns are
indicators and which are feedback signals, the priors (weakly informative
defaults in :data:`PARAMETERS`, each overridable by name), how units are
pooled, default sampler options and the default column mapping of the data.
It validates itself once, at construction, and every error names the key,
what was found and what is allowed.  It does not know how the PyMC graph is
built (:mod:`pathlock.decoupling`) nor how data are read (:mod:`pathlock.data`);
:meth:`Spec.build` and :meth:`Spec.loglike` delegate to the former,
:meth:`Spec.prepare_data` to the latter.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import tomllib
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np
import tomli_w

from pathlock import dims
from pathlock.build import Adaptation, Backend, SamplerName, register_family
from pathlock.errors import SpecError

if TYPE_CHECKING:
    import xarray as xr

    from pathlock.build import Built
    from pathlock.data import DecouplingData

__all__ = [
    "SCHEMA_VERSION",
    "FAMILY",
    "PARAMETERS",
    "DEFAULT_PRIORS",
    "POOLABLE",
    "Parameter",
    "Prior",
    "Fixed",
    "ConstraintSpec",
    "RegimeSpec",
    "SeriesSpec",
    "UnitSpec",
    "SamplerSpec",
    "DataSpec",
    "Spec",
    "prior_table",
]

#: Newest ``schema_version`` this code reads and the one it writes.
SCHEMA_VERSION = 1
FAMILY = "decoupling"

Process = Literal["ratchet", "hysteresis", "random_walk", "ar1"]
Structure = Literal["free", "sticky", "absorbing"]
ObservationFamily = Literal["normal", "student_t", "poisson", "negative_binomial"]
Pooling = Literal["shared", "hierarchical"]
Parameterization = Literal[
    "auto",
    "centered",
    "noncentered",
    "whitened",
    "data_centered",
    "partial",
]
InitialRegime = Literal["first", "free"]
Fill = Literal["error", "ffill", "zero"]
DataFormat = Literal["long", "wide"]
Support = Literal["real", "positive", "unit_interval", "simplex"]

COUNT_FAMILIES: frozenset[str] = frozenset({"poisson", "negative_binomial"})


# --------------------------------------------------------------------------- priors


def _freeze(value: Any) -> Any:
    """Turn lists into tuples (recursively) so that priors compare and print stably."""
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, np.ndarray):
        return _freeze(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _is_numeric_array(value: Any) -> bool:
    if _is_number(value):
        return True
    if isinstance(value, list | tuple) and value:
        return all(_is_numeric_array(v) for v in value)
    return False


def _fmt(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Prior:
    """A prior distribution: any PyMC distribution by name with its keyword arguments.

    Written in TOML as an inline table, e.g. ``{ dist = "Normal", mu = 0, sigma = 1 }``.

    Attributes
    ----------
    dist : str
        Name of a distribution class in ``pymc`` (``"Normal"``, ``"HalfNormal"``, ``"Beta"``...).
    kwargs : mapping
        Its parameters; numbers or (nested) lists of numbers, stored as tuples.

    Examples
    --------
    >>> Prior("Normal", {"mu": 0, "sigma": 1})
    Prior('Normal(mu=0, sigma=1)')
    """

    dist: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kwargs", {k: _freeze(v) for k, v in dict(self.kwargs).items()})

    def create(self, name: str, *, dims: Sequence[str] | None = None, **extra: Any) -> Any:
        """Create the random variable in the model on the context stack.

        Parameters
        ----------
        name : str
            Variable name (the parameter name, ``{component}_{param}``).
        dims : sequence of str, optional
            Dims of the variable; a scalar ``kwargs`` entry broadcasts over them.
        **extra
            Passed on to the distribution (e.g. ``transform``).

        Returns
        -------
        TensorVariable
        """
        import pymc as pm

        cls = getattr(pm, self.dist)
        kwargs = {k: np.asarray(v, dtype=float) for k, v in self.kwargs.items()}
        return cls(name, dims=dims, **kwargs, **extra)

    def to_dict(self) -> dict[str, Any]:
        """Return the TOML table form ``{"dist": ..., **kwargs}``."""
        return {"dist": self.dist, **{k: _thaw(v) for k, v in self.kwargs.items()}}

    def __str__(self) -> str:
        args = ", ".join(f"{k}={_fmt(v)}" for k, v in self.kwargs.items())
        return f"{self.dist}({args})"

    def __repr__(self) -> str:
        return f"Prior({str(self)!r})"


@dataclass(frozen=True)
class Fixed:
    """A parameter held at a known value instead of being sampled.

    Written in TOML as a bare number (or an array of numbers), e.g. ``constraint_width = 0.25``.

    Attributes
    ----------
    value : float or tuple of float
    """

    value: float | tuple[Any, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", _freeze(self.value))

    def create(self, name: str | None = None, *, dims: Sequence[str] | None = None) -> Any:
        """Return the value as a PyTensor constant (``float64``); ``name`` and ``dims`` unused."""
        import pytensor.tensor as pt

        return pt.as_tensor_variable(np.asarray(self.value, dtype=float))

    def to_dict(self) -> Any:
        """Return the TOML form: the bare number or list."""
        return _thaw(self.value)

    def __str__(self) -> str:
        return f"fixed at {_fmt(self.value)}"


PriorLike = Prior | Fixed


@dataclass(frozen=True)
class Parameter:
    """One named parameter of the decoupling model: its default prior, dims and meaning.

    Attributes
    ----------
    name : str
        ``{component}_{param}``; the PyMC variable name.
    default : Prior or Fixed
        Default prior (some defaults depend on the spec; see :meth:`Spec.prior`).
    dims : tuple of str
        Dims before unit pooling (a hierarchical parameter gains a leading ``unit``).
    support : {"real", "positive", "unit_interval", "simplex"}
        Where the parameter lives; fixed values are checked against it.
    used_when : str
        Which specs use it.
    description : str
        What it means, in the notation of the model (see :class:`Spec` Notes).
    """

    name: str
    default: PriorLike
    dims: tuple[str, ...]
    support: Support
    used_when: str
    description: str


def _p(dist: str, **kwargs: Any) -> Prior:
    return Prior(dist, kwargs)


_R, _RF, _RT = dims.REGIME, dims.REGIME_FROM, dims.REGIME_TO

#: Every parameter of the decoupling model, by name.  The dynamics code reads
#: names, dims and defaults from here; ``Spec.prior(name)`` resolves overrides.
# fmt: off
PARAMETERS: dict[str, Parameter] = {
    p.name: p
    for p in [
        # ---- constraint process
        Parameter(
            "constraint_init", _p("Normal", mu=0, sigma=2), (dims.UNIT,), "real", "always",
            "C_1, the constraint at the first time step, per unit; for `hysteresis` also "
            "the baseline it recovers toward.",
        ),
        Parameter(
            "constraint_mu", _p("Normal", mu=-2, sigma=1.5), (), "real", "always",
            "Process location.  ratchet, hysteresis: location of the log increments, "
            "increment_t = exp(mu + x_t'beta + sigma eps_t); random_walk: drift (default "
            "Normal(0, 0.5)); ar1: long-run level (default Normal(0, 2)).",
        ),
        Parameter(
            "constraint_sigma", _p("HalfNormal", sigma=1), (), "positive", "always",
            "Innovation scale: of the log increments (ratchet, hysteresis) or of the level "
            "changes (random_walk, ar1).",
        ),
        Parameter(
            "constraint_beta", _p("Normal", mu=0, sigma=1), (dims.EXPOSURE,), "real",
            "constraint.exposures is not empty",
            "Exposure effects on the log increments (ratchet, hysteresis) or on the level "
            "changes (random_walk, ar1).",
        ),
        Parameter(
            "constraint_phi", _p("Beta", alpha=5, beta=2), (), "unit_interval", "ar1",
            "Persistence of the AR(1) process, in (0, 1).",
        ),
        Parameter(
            "constraint_rho", _p("Beta", alpha=2, beta=8), (), "unit_interval", "hysteresis",
            "Recovery rate: the fraction of (C_{t-1} - C_1) undone per step while below "
            "the threshold (C_1 = constraint_init is the baseline).",
        ),
        Parameter(
            "constraint_kappa", _p("Normal", mu=2, sigma=2), (), "real", "hysteresis",
            "Tipping threshold (a level of C): recovery switches off smoothly once "
            "C_{t-1} exceeds kappa.",
        ),
        Parameter(
            "constraint_width", Fixed(0.25), (), "positive", "hysteresis",
            "Width of the smooth switch-off: recovery is weighted by "
            "sigmoid((kappa - C_{t-1}) / width).  Fixed by default because data rarely "
            "inform it; give a prior to learn it.",
        ),
        # ---- regimes
        Parameter(
            "regime_init", _p("Dirichlet", a=[1, 1]), (_R,), "simplex", "regimes.initial = 'free'",
            "Initial regime probabilities (default Dirichlet with a = 1 for every regime; "
            "shown for two).  "
            "With regimes.initial = 'first' every unit starts in the tracking regime.",
        ),
        Parameter(
            "trans_p", _p("Dirichlet", a=[[11, 1], [1, 11]]), (_RF, _RT), "simplex",
            "constant transitions (hazard_on_constraint = false and no covariates)",
            "Transition matrix rows P(S_t = j | S_{t-1} = i).  Default Dirichlet(a = 1) per "
            "row (shown for two sticky regimes), plus trans_stickiness on the diagonal for "
            "'sticky' and 'absorbing'; the "
            "last row of 'absorbing' is fixed at (0, ..., 0, 1).",
        ),
        Parameter(
            "trans_stickiness", Fixed(10.0), (), "positive",
            "constant transitions with structure 'sticky' or 'absorbing'",
            "Extra Dirichlet concentration on staying in the same regime.",
        ),
        Parameter(
            "hazard_intercept", _p("Normal", mu=-3, sigma=1.5), (_RF, _RT), "real",
            "time-varying transitions",
            "g0_ij: baseline logit of moving i -> j relative to staying (the diagonal is the "
            "reference and unused).  Default Normal(-3, 1.5) (about 5 % per step) for "
            "'sticky' and 'absorbing', Normal(-1, 1.5) for 'free'.",
        ),
        Parameter(
            "hazard_slope", _p("Normal", mu=0, sigma=1), (_RF, _RT), "real",
            "regimes.hazard_on_constraint = true",
            "g1_ij: change of the i -> j logit per unit of the lagged constraint C_{t-1} "
            "(positive: lock-in hazard rises with the constraint).",
        ),
        Parameter(
            "hazard_eta", _p("Normal", mu=0, sigma=1), (_RF, _RT, dims.EXOG), "real",
            "regimes.covariates is not empty",
            "eta_ij: effects of the transition covariates w_t on the i -> j logit.",
        ),
        # ---- indicators: Z_jt = nu_j + lambda_j C_t + noise (log link for counts)
        Parameter(
            "indicator_nu", _p("Normal", mu=0, sigma=2), (dims.INDICATOR,), "real",
            "two or more indicators (the first is fixed at 0)",
            "Indicator intercepts nu_j.",
        ),
        Parameter(
            "indicator_lambda", _p("Normal", mu=1, sigma=0.5), (dims.INDICATOR,), "real",
            "two or more indicators (the first is fixed at 1)",
            "Indicator loadings lambda_j on the constraint.",
        ),
        Parameter(
            "indicator_sigma", _p("HalfNormal", sigma=1), (dims.INDICATOR,), "positive",
            "normal and student_t indicators",
            "Indicator noise scales.",
        ),
        Parameter(
            "indicator_df", _p("Gamma", alpha=2, beta=0.1), (dims.INDICATOR,), "positive",
            "student_t indicators",
            "Degrees of freedom of Student-t indicators.",
        ),
        Parameter(
            "indicator_alpha", _p("Gamma", alpha=2, beta=0.1), (dims.INDICATOR,), "positive",
            "negative_binomial indicators",
            "Negative-binomial dispersion (PyMC's alpha; variance mu + mu^2 / alpha).",
        ),
        # ---- feedback: Y_mt = a_mk + b_m w_k C_t + noise_mk
        Parameter(
            "feedback_a", _p("Normal", mu=0, sigma=2), (dims.SIGNAL, _R), "real", "always",
            "Feedback intercepts a_mk; dims (signal, regime) with "
            "regimes.feedback_intercepts = true, else (signal,).",
        ),
        Parameter(
            "feedback_b", _p("Normal", mu=0, sigma=1), (dims.SIGNAL,), "real", "always",
            "Feedback loading b_m on the constraint in the tracking regime.",
        ),
        Parameter(
            "feedback_w", _p("Beta", alpha=1, beta=2), (_R,), "unit_interval",
            "more than one regime",
            "Loading fraction w_k of each non-tracking regime, in [0, 1) (w_tracking = 1).  "
            "The prior applies to every non-tracking regime not fixed in regimes.loading; "
            "Beta(1, 2) mildly favours a real loss of tracking.",
        ),
        Parameter(
            "feedback_sigma", _p("HalfNormal", sigma=1), (dims.SIGNAL, _R), "positive",
            "normal and student_t signals",
            "Feedback noise scales; dims (signal, regime) with regimes.feedback_noise = true, "
            "else (signal,).",
        ),
        Parameter(
            "feedback_df", _p("Gamma", alpha=2, beta=0.1), (dims.SIGNAL,), "positive",
            "student_t signals",
            "Degrees of freedom of Student-t feedback signals.",
        ),
        Parameter(
            "feedback_alpha", _p("Gamma", alpha=2, beta=0.1), (dims.SIGNAL,), "positive",
            "negative_binomial signals",
            "Negative-binomial dispersion of count feedback signals.",
        ),
    ]
}
# fmt: on

#: Parameters that may get unit-level deviations with ``units.pooling = "hierarchical"``.
POOLABLE: tuple[str, ...] = (
    "constraint_mu",
    "constraint_beta",
    "hazard_intercept",
    "hazard_slope",
    "indicator_nu",
    "feedback_a",
    "feedback_b",
)

#: Default prior of the scale ``{p}_unit_sigma`` of every hierarchical parameter ``p``.
UNIT_SIGMA_DEFAULT = Prior("HalfNormal", {"sigma": 0.5})
UNIT_SIGMA_SUFFIX = "_unit_sigma"

#: name -> default prior (the spec-independent form; see :meth:`Spec.prior`).
DEFAULT_PRIORS: dict[str, PriorLike] = {n: p.default for n, p in PARAMETERS.items()}


def prior_table() -> str:
    """Return the default prior table as Markdown (for the README and docs).

    Returns
    -------
    str
    """
    lines = [
        "| parameter | default prior | dims | used when | meaning |",
        "|---|---|---|---|---|",
    ]
    for p in PARAMETERS.values():
        d = ", ".join(p.dims) if p.dims else "scalar"
        lines.append(f"| `{p.name}` | {p.default} | ({d}) | {p.used_when} | {p.description} |")
    lines.append(
        f"| `<p>{UNIT_SIGMA_SUFFIX}` | {UNIT_SIGMA_DEFAULT} | scalar | p in units.hierarchical "
        "| Scale of the unit-level deviations of p (non-centred). |"
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------- parsing helpers


def _type_name(value: Any) -> str:
    return type(value).__name__


class _Table:
    """A TOML table being parsed: typed look-ups by key, and a check for unknown keys."""

    def __init__(self, raw: Any, path: str, allowed: Sequence[str]) -> None:
        if not isinstance(raw, Mapping):
            raise SpecError(f"{path or 'spec'} must be a table; found {_type_name(raw)} {raw!r}")
        self.raw = dict(raw)
        self.path = path
        unknown = [k for k in self.raw if k not in allowed]
        if unknown:
            key = self.key(unknown[0])
            hint = difflib.get_close_matches(unknown[0], allowed, n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise SpecError(f"unknown key {key!r}{extra}; allowed keys: {', '.join(allowed)}")

    def key(self, k: str) -> str:
        return f"{self.path}.{k}" if self.path else k

    def has(self, k: str) -> bool:
        return k in self.raw

    def text(self, k: str, default: Any) -> Any:
        v = self.raw.get(k, default)
        if v is not default and not isinstance(v, str):
            raise SpecError(f"{self.key(k)} must be a string; found {_type_name(v)} {v!r}")
        return v

    def choice(self, k: str, choices: Sequence[str], default: str) -> str:
        v = self.text(k, default)
        if v not in choices:
            raise SpecError(
                f"{self.key(k)} = {v!r} is not allowed; allowed values: "
                + ", ".join(repr(c) for c in choices)
            )
        return v

    def flag(self, k: str, default: bool) -> bool:
        v = self.raw.get(k, default)
        if not isinstance(v, bool):
            raise SpecError(f"{self.key(k)} must be true or false; found {_type_name(v)} {v!r}")
        return v

    def integer(self, k: str, default: int | None, *, minimum: int = 0) -> int | None:
        v = self.raw.get(k, default)
        if v is None and default is None:
            return None
        if not isinstance(v, int | np.integer) or isinstance(v, bool):
            raise SpecError(f"{self.key(k)} must be an integer; found {_type_name(v)} {v!r}")
        if v < minimum:
            raise SpecError(f"{self.key(k)} must be >= {minimum}; found {v}")
        return int(v)

    def number(self, k: str, default: float, *, low: float, high: float) -> float:
        v = self.raw.get(k, default)
        if not _is_number(v):
            raise SpecError(f"{self.key(k)} must be a number; found {_type_name(v)} {v!r}")
        if not low < v < high:
            raise SpecError(f"{self.key(k)} must lie in ({low:g}, {high:g}); found {v!r}")
        return float(v)

    def str_list(self, k: str) -> tuple[str, ...]:
        v = self.raw.get(k, [])
        if isinstance(v, str) or not isinstance(v, list | tuple):
            raise SpecError(f"{self.key(k)} must be a list of strings; found {_type_name(v)} {v!r}")
        for item in v:
            if not isinstance(item, str):
                raise SpecError(
                    f"{self.key(k)} must be a list of strings; found {_type_name(item)} "
                    f"{item!r} in it"
                )
        dup = _first_duplicate(v)
        if dup is not None:
            raise SpecError(f"{self.key(k)} lists {dup!r} twice; names must be unique")
        return tuple(v)


def _first_duplicate(items: Sequence[str]) -> str | None:
    seen: set[str] = set()
    for item in items:
        if item in seen:
            return item
        seen.add(item)
    return None


def _distribution_names() -> list[str]:
    import pymc as pm

    return sorted(
        n
        for n in dir(pm)
        if isinstance(getattr(pm, n), type)
        and issubclass(getattr(pm, n), pm.Distribution)
        and not n.startswith("_")
    )


def _parse_prior(raw: Any, key: str) -> PriorLike:
    """Parse a prior from its TOML form: a number/array (fixed) or a ``{dist = ...}`` table."""
    if isinstance(raw, Prior | Fixed):
        raw = raw.to_dict()
    if _is_numeric_array(raw):
        return Fixed(raw)
    if not isinstance(raw, Mapping):
        raise SpecError(
            f'{key} must be a prior table such as {{ dist = "Normal", mu = 0, sigma = 1 }} '
            f"or a number (a fixed value); found {_type_name(raw)} {raw!r}"
        )
    raw = dict(raw)
    dist = raw.pop("dist", None)
    if not isinstance(dist, str):
        raise SpecError(
            f"{key}.dist is missing or not a string (found {dist!r}); give a PyMC "
            'distribution name, e.g. dist = "Normal"'
        )
    import pymc as pm

    cls: Any = getattr(pm, dist, None)
    if not (isinstance(cls, type) and issubclass(cls, pm.Distribution)):
        names = _distribution_names()
        hint = difflib.get_close_matches(dist, names, n=3)
        extra = f" (did you mean {', '.join(hint)}?)" if hint else ""
        raise SpecError(
            f"{key}.dist = {dist!r} is not a PyMC distribution{extra}; allowed: " + ", ".join(names)
        )
    factory: Any = cls  # isinstance narrowed cls to `type`, which hides `.dist`
    params = [
        n
        for n, p in inspect.signature(factory.dist).parameters.items()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    for k, v in raw.items():
        if k not in params:
            raise SpecError(
                f"{key}.{k} is not a parameter of pymc.{dist}; allowed: {', '.join(params)}"
            )
        if not _is_numeric_array(v):
            raise SpecError(
                f"{key}.{k} must be a number or an array of numbers; found {_type_name(v)} {v!r}"
            )
    try:
        factory.dist(**{k: np.asarray(v, dtype=float) for k, v in raw.items()})
    except Exception as exc:  # PyMC raises many types for bad arguments
        raise SpecError(f"{key}: pymc.{dist} rejects {raw}: {exc}") from None
    return Prior(dist, raw)


def _check_fixed(prior: PriorLike, key: str, support: Support) -> None:
    if not isinstance(prior, Fixed):
        return
    values = np.asarray(prior.value, dtype=float)
    ok = {
        "real": np.isfinite(values),
        "positive": np.isfinite(values) & (values > 0),
        "unit_interval": (values >= 0) & (values < 1),
        "simplex": (values >= 0) & (values <= 1),
    }[support]
    if not np.all(ok):
        expected = {
            "real": "finite",
            "positive": "> 0",
            "unit_interval": "in [0, 1)",
            "simplex": "probabilities in [0, 1]",
        }[support]
        raise SpecError(f"{key} is fixed at {_fmt(prior.value)}; fixed values must be {expected}")


# --------------------------------------------------------------------------- spec sections


@dataclass(frozen=True)
class ConstraintSpec:
    """The latent constraint process (TOML table ``[constraint]``).

    Attributes
    ----------
    process : {"ratchet", "hysteresis", "random_walk", "ar1"}
        ``ratchet`` and ``hysteresis`` are monotone/path-dependent, ``random_walk``
        and ``ar1`` are their reversible counterparts.
    exposures : tuple of str
        Data columns driving the increments (coefficients ``constraint_beta``).
    parameterization : {"auto", "whitened", "partial", "data_centered", "centered", "noncentered"}
        How the builder parameterises the latent path (see
        :func:`pathlock.decoupling.build`); ``auto`` lets the process and the
        data choose (:meth:`Spec.parameterization_for`).
    """

    process: Process = "ratchet"
    exposures: tuple[str, ...] = ()
    parameterization: Parameterization = "auto"

    _KEYS = ("process", "exposures", "parameterization")

    @classmethod
    def _parse(cls, raw: Any) -> ConstraintSpec:
        t = _Table(raw, "constraint", cls._KEYS)
        return cls(
            process=t.choice("process", get_args(Process), "ratchet"),  # type: ignore[arg-type]
            exposures=t.str_list("exposures"),
            parameterization=t.choice(  # type: ignore[arg-type]
                "parameterization", get_args(Parameterization), "auto"
            ),
        )

    def _to_dict(self) -> dict[str, Any]:
        return {
            "process": self.process,
            "exposures": list(self.exposures),
            "parameterization": self.parameterization,
        }


@dataclass(frozen=True)
class RegimeSpec:
    """The hidden regimes and their transitions (TOML table ``[regimes]``).

    Attributes
    ----------
    names : tuple of str
        Regime labels; the first is the tracking regime (feedback loading 1).
        One name gives a model whose feedback always tracks.
    structure : {"free", "sticky", "absorbing"}
        ``free``: any move, flat prior; ``sticky``: staying is favoured a priori;
        ``absorbing``: sticky, and the last regime is never left.
    hazard_on_constraint : bool
        Transition logits depend on the lagged constraint (``hazard_slope``).
    covariates : tuple of str
        Data columns entering the transition logits (``hazard_eta``).
    initial : {"first", "free"}
        ``first``: every unit starts in the tracking regime; ``free``: initial
        probabilities ``regime_init`` are estimated.
    loading : mapping of str to Prior or Fixed
        Per-regime loading fraction overriding ``feedback_w`` for that regime,
        e.g. ``decoupled = 0.0``; fixed values must lie in [0, 1); the tracking
        regime cannot be named (its loading is 1).
    ordered_loadings : bool
        Constrain non-tracking loadings to decrease along ``names`` (removes label
        switching among non-tracking regimes; irrelevant with two regimes).
    feedback_intercepts : bool
        Feedback intercepts ``feedback_a`` differ by regime.
    feedback_noise : bool
        Feedback noise scales ``feedback_sigma`` differ by regime.
    known_tracking : int
        Number of leading time steps in which every unit is known to be in the
        tracking regime (a calibration period in which the feedback is trusted):
        no move is possible before time position ``known_tracking``.  It identifies
        the tracking loading ``feedback_b`` from at least that many steps, which
        rules out the near-equivalent reading "decoupled from the first few
        steps on, with a loading that still tracks".  Needs ``initial =
        "first"``; 0 (default) assumes nothing.
    """

    names: tuple[str, ...] = ("tracking", "decoupled")
    structure: Structure = "absorbing"
    hazard_on_constraint: bool = True
    covariates: tuple[str, ...] = ()
    initial: InitialRegime = "first"
    loading: Mapping[str, PriorLike] = field(default_factory=dict)
    ordered_loadings: bool = True
    feedback_intercepts: bool = True
    feedback_noise: bool = False
    known_tracking: int = 0

    _KEYS = (
        "names",
        "structure",
        "hazard_on_constraint",
        "covariates",
        "initial",
        "loading",
        "ordered_loadings",
        "feedback_intercepts",
        "feedback_noise",
        "known_tracking",
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(self.names))
        object.__setattr__(self, "covariates", tuple(self.covariates))
        object.__setattr__(
            self,
            "loading",
            {k: _parse_prior(v, f"regimes.loading.{k}") for k, v in dict(self.loading).items()},
        )
        if not self.names:
            raise SpecError("regimes.names is empty; give at least one regime name")
        dup = _first_duplicate(self.names)
        if dup is not None:
            raise SpecError(
                f"regimes.names uses {dup!r} twice; regime names must be unique "
                f"(found {list(self.names)})"
            )
        held = self.known_tracking
        if not isinstance(held, int | np.integer) or isinstance(held, bool):
            raise SpecError(
                "regimes.known_tracking must be an integer number of time steps; found "
                f"{_type_name(held)} {held!r}"
            )
        if held < 0:
            raise SpecError(f"regimes.known_tracking must be >= 0; found {held}")
        if held > 0 and self.initial != "first":
            raise SpecError(
                f"regimes.known_tracking = {held} puts the first steps in the tracking regime, "
                f"so it needs regimes.initial = 'first'; found {self.initial!r}"
            )
        object.__setattr__(self, "known_tracking", int(held))
        for name, prior in self.loading.items():
            key = f"regimes.loading.{name}"
            if name == self.names[0]:
                raise SpecError(
                    f"{key}: {name!r} is the tracking regime, whose loading is 1 by "
                    f"definition; allowed regimes: {list(self.names[1:])}"
                )
            if name not in self.names:
                raise SpecError(
                    f"{key}: unknown regime {name!r}; allowed regimes: {list(self.names[1:])}"
                )
            _check_fixed(prior, key, "unit_interval")

    @classmethod
    def _parse(cls, raw: Any) -> RegimeSpec:
        t = _Table(raw, "regimes", cls._KEYS)
        loading = t.raw.get("loading", {})
        if not isinstance(loading, Mapping):
            raise SpecError(
                "regimes.loading must be a table of regime name -> fixed value or prior; "
                f"found {_type_name(loading)} {loading!r}"
            )
        return cls(
            names=t.str_list("names") if t.has("names") else cls.names,
            structure=t.choice("structure", get_args(Structure), "absorbing"),  # type: ignore[arg-type]
            hazard_on_constraint=t.flag("hazard_on_constraint", True),
            covariates=t.str_list("covariates"),
            initial=t.choice("initial", get_args(InitialRegime), "first"),  # type: ignore[arg-type]
            loading=loading,
            ordered_loadings=t.flag("ordered_loadings", True),
            feedback_intercepts=t.flag("feedback_intercepts", True),
            feedback_noise=t.flag("feedback_noise", False),
            known_tracking=t.integer("known_tracking", 0),  # type: ignore[arg-type]
        )

    def _to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "names": list(self.names),
            "structure": self.structure,
            "hazard_on_constraint": self.hazard_on_constraint,
            "covariates": list(self.covariates),
            "initial": self.initial,
            "ordered_loadings": self.ordered_loadings,
            "feedback_intercepts": self.feedback_intercepts,
            "feedback_noise": self.feedback_noise,
            "known_tracking": self.known_tracking,
        }
        if self.loading:
            out["loading"] = {k: v.to_dict() for k, v in self.loading.items()}
        return out


@dataclass(frozen=True)
class SeriesSpec:
    """One observed series: an indicator (``[[indicators]]``) or a feedback signal.

    TOML: one ``[[indicators]]`` or ``[[feedback]]`` table per series.

    Attributes
    ----------
    name : str
        Label on the ``indicator`` or ``signal`` dim (defaults to ``column``).
    column : str
        Data column holding it.
    family : {"normal", "student_t", "poisson", "negative_binomial"}
        Observation family; counts use a log link.
    """

    name: str
    column: str
    family: ObservationFamily = "normal"

    _KEYS = ("name", "column", "family")

    @classmethod
    def _parse(cls, raw: Any, path: str) -> SeriesSpec:
        t = _Table(raw, path, cls._KEYS)
        column = t.text("column", None)
        if column is None:
            raise SpecError(f"{path}.column is missing; give the data column of this series")
        return cls(
            name=t.text("name", column),
            column=column,
            family=t.choice("family", get_args(ObservationFamily), "normal"),  # type: ignore[arg-type]
        )

    @property
    def is_count(self) -> bool:
        """Whether the family is a count family (values must be non-negative integers)."""
        return self.family in COUNT_FAMILIES

    def _to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "column": self.column, "family": self.family}


@dataclass(frozen=True)
class UnitSpec:
    """How units (several series in one model) share parameters (TOML table ``[units]``).

    Attributes
    ----------
    pooling : {"shared", "hierarchical"}
        ``shared``: one value of every parameter for all units (only
        ``constraint_init`` is per unit).  ``hierarchical``: the parameters in
        ``hierarchical`` get unit-level deviations, ``p_u = p + p_unit_sigma * z_u``,
        ``z_u ~ N(0, 1)`` (non-centred).
    hierarchical : tuple of str or None
        Which parameters (from :data:`POOLABLE`).  ``None`` means the default:
        ``constraint_mu`` (the process location) and ``feedback_a``.
    """

    pooling: Pooling = "shared"
    hierarchical: tuple[str, ...] | None = None

    _KEYS = ("pooling", "hierarchical")

    def __post_init__(self) -> None:
        if self.hierarchical is None:
            return
        object.__setattr__(self, "hierarchical", tuple(self.hierarchical))
        if self.pooling != "hierarchical":
            raise SpecError(
                "units.hierarchical is only used with units.pooling = 'hierarchical'; "
                f"found pooling = {self.pooling!r}"
            )
        for name in self.hierarchical:
            if name not in POOLABLE:
                raise SpecError(
                    f"units.hierarchical: {name!r} cannot be pooled hierarchically; "
                    f"allowed: {', '.join(POOLABLE)}"
                )

    @classmethod
    def _parse(cls, raw: Any) -> UnitSpec:
        t = _Table(raw, "units", cls._KEYS)
        return cls(
            pooling=t.choice("pooling", get_args(Pooling), "shared"),  # type: ignore[arg-type]
            hierarchical=t.str_list("hierarchical") if t.has("hierarchical") else None,
        )

    def _to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pooling": self.pooling}
        if self.hierarchical is not None:
            out["hierarchical"] = list(self.hierarchical)
        return out


#: Series at least this long get the smaller target acceptance rate and the
#: draw-based mass matrix by default.
LONG_SERIES = 500


def default_target_accept(n_steps: int) -> float:
    """NUTS's target acceptance rate for the decoupling model when the spec sets none.

    0.98 for series shorter than :data:`LONG_SERIES` time steps, 0.85 from
    there on (measured in benchmarks/README.md, sections "A disk cache for
    nutpie's callbacks, and the target acceptance rate by series length" and
    "target_accept 0.98 in short series").
    """
    return 0.98 if n_steps < LONG_SERIES else 0.85


def default_adaptation(n_steps: int) -> Adaptation:
    """The mass-matrix adaptation for the decoupling model when the spec sets none.

    ``"diag"`` (nutpie's default: the draws' and the gradients' variances) for
    series shorter than :data:`LONG_SERIES` time steps, ``"draw_diag"`` (the
    draws' variances alone) from there on. At T = 1000 the draw-based
    diagonal doubled the bulk ESS of ``feedback_a``, ``feedback_b`` and
    ``feedback_w`` at the same wall time; at T = 200 it doubled that of
    ``constraint_sigma`` too, but in the SBC study (T = 60, 2 x 500+500) it
    left 20 fits of 100 with a divergence against 12 and took 809 s against
    464 (benchmarks/README.md, "nutpie's draw-based diagonal metric").
    """
    return "diag" if n_steps < LONG_SERIES else "draw_diag"


@dataclass(frozen=True)
class SamplerSpec:
    """Default sampler options (TOML table ``[sampler]``); ``fit`` arguments override them.

    Attributes
    ----------
    draws, tune, chains : int
    target_accept : float or None
        In (0, 1). None (the default) chooses by series length
        (:func:`default_target_accept`): 0.98 below 500 time steps, 0.85 from
        500 on. In short series the divergences left after the path's
        whitening sit where the prior leaves ``constraint_sigma`` large, and
        the smaller step size removes most of them (T = 200, 5 fit seeds:
        56-131 divergent draws per fit at 0.9, 1-19 at 0.95, none at 0.98;
        SBC at T = 60: 37 of 100 fits with a divergence at 0.95, 19 at 0.98).
        In long series a high rate only costs time and a smaller step lowers
        the ESS at the same tree length (T = 1000, 5 fit seeds: no divergent
        draw at 0.85, min bulk ESS 705-840 against 547-650 at 0.9; trees of 31
        leapfrog steps, 63 at 0.95; benchmarks/README.md).
    sampler : {"nutpie", "pymc"}
    adaptation : {"draw_diag", "diag", "low_rank"} or None
        nutpie's mass-matrix adaptation; ignored by ``pymc``. None (the
        default) chooses by series length (:func:`default_adaptation`):
        ``"diag"`` below 500 time steps, ``"draw_diag"`` from 500 on.
        ``"draw_diag"`` is a diagonal estimated from the draws' variances
        alone; ``"diag"`` (nutpie's default) estimates it from the draws and
        the gradients, and at T = 1000 gave half the bulk ESS of
        ``feedback_a``, ``feedback_b`` and ``feedback_w``. ``"low_rank"`` adds
        a low-rank correction learnt from the gradients, which follows a few
        strongly correlated directions but makes each leapfrog step about 3.6
        times dearer at T = 1000.
    backend : {"numba", "jax"}
        What nutpie compiles the model with; ignored by ``pymc``. ``"numba"``
        (the default) samples fastest but compiles a new spec for about a
        minute the first time a machine sees it (seconds in every later
        process); ``"jax"`` compiles in seconds every time and samples more
        slowly (:func:`pathlock.fit.fit`'s ``backend`` has the numbers).
    """

    draws: int = 1000
    tune: int = 1000
    chains: int = 4
    target_accept: float | None = None
    sampler: SamplerName = "nutpie"
    adaptation: Adaptation | None = None
    backend: Backend = "numba"

    _KEYS = ("draws", "tune", "chains", "target_accept", "sampler", "adaptation", "backend")

    @classmethod
    def _parse(cls, raw: Any) -> SamplerSpec:
        t = _Table(raw, "sampler", cls._KEYS)
        return cls(
            draws=t.integer("draws", 1000, minimum=1),  # type: ignore[arg-type]
            tune=t.integer("tune", 1000, minimum=0),  # type: ignore[arg-type]
            chains=t.integer("chains", 4, minimum=1),  # type: ignore[arg-type]
            target_accept=(
                t.number("target_accept", 0.0, low=0.0, high=1.0)
                if "target_accept" in t.raw
                else None
            ),
            sampler=t.choice("sampler", get_args(SamplerName), "nutpie"),  # type: ignore[arg-type]
            adaptation=(
                t.choice("adaptation", get_args(Adaptation), "diag")  # type: ignore[arg-type]
                if "adaptation" in t.raw
                else None
            ),
            backend=t.choice("backend", get_args(Backend), "numba"),  # type: ignore[arg-type]
        )

    def _to_dict(self) -> dict[str, Any]:
        # TOML has no null: an unset target_accept or adaptation is left out, and read
        # back unset.
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class DataSpec:
    """Default column mapping and cleaning rules of the data (TOML table ``[data]``).

    Attributes
    ----------
    time : str
        Time column (dates or integers).
    unit : str or None
        Unit column in long data; ``None`` for a single series.
    format : {"long", "wide"}
        See :func:`pathlock.data.from_dataframe` for the wide convention.
    freq : str or int or None
        Time step: a pandas offset alias for dates (``"MS"``, ``"7D"``) or an
        integer step; ``None`` infers it.
    sort : bool
        Sort rows by time instead of rejecting unsorted data.
    fill : {"error", "ffill", "zero"}
        What to do with missing exposures and transition covariates: reject
        them, carry the last value forward (leading gaps take the first
        observed value), or set them to zero.
    """

    time: str = "time"
    unit: str | None = None
    format: DataFormat = "long"
    freq: str | int | None = None
    sort: bool = False
    fill: Fill = "error"

    _KEYS = ("time", "unit", "format", "freq", "sort", "fill")

    @classmethod
    def _parse(cls, raw: Any) -> DataSpec:
        t = _Table(raw, "data", cls._KEYS)
        freq = t.raw.get("freq")
        if freq is not None and not (
            isinstance(freq, str) or (isinstance(freq, int) and not isinstance(freq, bool))
        ):
            raise SpecError(
                f'data.freq must be a pandas offset alias (e.g. "MS") or an integer step; '
                f"found {_type_name(freq)} {freq!r}"
            )
        if isinstance(freq, int) and freq < 1:
            raise SpecError(f"data.freq must be a positive integer step; found {freq}")
        return cls(
            time=t.text("time", "time"),
            unit=t.text("unit", None),
            format=t.choice("format", get_args(DataFormat), "long"),  # type: ignore[arg-type]
            freq=freq,
            sort=t.flag("sort", False),
            fill=t.choice("fill", get_args(Fill), "error"),  # type: ignore[arg-type]
        )

    def _to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


# --------------------------------------------------------------------------- the spec

_TOP_KEYS = (
    "schema_version",
    "family",
    "name",
    "description",
    "constraint",
    "regimes",
    "indicators",
    "feedback",
    "priors",
    "units",
    "sampler",
    "data",
)


@dataclass(frozen=True)
class Spec:
    r"""Specification of the decoupling model (family ``"decoupling"``).

    Build one from TOML (:meth:`from_toml`, :meth:`from_toml_string`), from a
    dict (:meth:`from_dict`) or directly; it validates itself and raises
    :class:`~pathlock.errors.SpecError` naming the offending key.  Specs are
    immutable: derive variants with :meth:`with_priors` or
    ``dataclasses.replace``.

    Attributes
    ----------
    indicators : tuple of SeriesSpec
        At least one.  Indicators measure the constraint directly; without one,
        "the feedback stopped tracking" and "the constraint stopped growing"
        predict the same data and cannot be told apart.
    feedback : tuple of SeriesSpec
        At least one: without a feedback signal the regimes have no observable
        consequence.
    constraint : ConstraintSpec
    regimes : RegimeSpec
    priors : mapping of str to Prior or Fixed
        Overrides of the defaults in :data:`PARAMETERS` (only what the user set;
        :meth:`prior` resolves).  Also ``<p>_unit_sigma`` for hierarchical ``p``.
    units : UnitSpec
    sampler : SamplerSpec
    data : DataSpec
    name, description : str
        Free text.
    schema_version : int
        Always :data:`SCHEMA_VERSION` once loaded.

    Notes
    -----
    The model, for unit u (dropped) and t = 1..T, regime S_t in K states::

        ratchet      C_t = C_{t-1} + exp(mu + x_t'beta + sigma eps_t)
        hysteresis   C_t = C_{t-1} + exp(mu + x_t'beta + sigma eps_t)
                           - rho (C_{t-1} - C_1) sigmoid((kappa - C_{t-1}) / width)
        random_walk  C_t = C_{t-1} + mu + x_t'beta + sigma eps_t
        ar1          C_t = mu + phi (C_{t-1} - mu) + x_t'beta + sigma eps_t
        (t = 2..T; C_1 = constraint_init, eps_t ~ N(0, 1))
        transitions  logit P(i -> j) = g0_ij + g1_ij C_{t-1} + w_t'eta_ij   (j != i,
                     staying is the reference), or constant Dirichlet rows
        indicators   Z_jt = nu_j + lambda_j C_t + noise_j    (nu_1 = 0, lambda_1 = 1;
                     counts: log E Z_jt = nu_j + lambda_j C_t)
        feedback     Y_mt = a_mk + b_m w_k C_t + noise_mk    (w_1 = 1, 0 <= w_k < 1)

    TOML layout (every key optional except the series; defaults shown)::

        schema_version = 1
        family = "decoupling"
        name = ""
        description = ""

        [constraint]
        process = "ratchet"            # ratchet | hysteresis | random_walk | ar1
        exposures = []                 # columns driving the increments
        # auto | whitened | partial | data_centered | centered | noncentered
        parameterization = "auto"

        [regimes]
        names = ["tracking", "decoupled"]   # first = tracking regime
        structure = "absorbing"        # free | sticky | absorbing
        hazard_on_constraint = true
        covariates = []                # columns in the transition logits
        initial = "first"              # first | free
        ordered_loadings = true
        feedback_intercepts = true
        feedback_noise = false
        known_tracking = 0             # leading steps known to be tracking
        [regimes.loading]              # optional, per non-tracking regime
        decoupled = 0.0                # fixed value in [0, 1) or a prior table

        [[indicators]]                 # one table per indicator, >= 1
        name = "debt"                  # default: the column
        column = "debt"
        family = "normal"              # normal | student_t | poisson | negative_binomial

        [[feedback]]                   # one table per feedback signal, >= 1
        name = "satisfaction"
        column = "satisfaction"
        family = "normal"

        [priors]                       # any name in PARAMETERS
        constraint_mu = { dist = "Normal", mu = -1, sigma = 1 }
        constraint_width = 0.5         # a number fixes the parameter

        [units]
        pooling = "shared"             # shared | hierarchical
        # hierarchical = ["constraint_mu", "feedback_a"]

        [sampler]
        draws = 1000
        tune = 1000
        chains = 4
        # target_accept = 0.85         # default: 0.98 below 500 steps, 0.85 from 500
        sampler = "nutpie"             # nutpie | pymc
        # adaptation = "draw_diag"     # draw_diag | diag | low_rank (nutpie's mass matrix);
                                       # default: diag below 500 steps, draw_diag from 500
        # backend = "jax"              # numba | jax: what nutpie compiles with (default numba)

        [data]
        time = "time"
        # unit = "country"
        format = "long"                # long | wide
        # freq = "MS"                  # inferred when absent
        sort = false
        fill = "error"                 # error | ffill | zero (exposures, covariates)

    Default priors (:func:`prior_table` prints this as Markdown)::

        constraint_init    Normal(mu=0, sigma=2)        (unit)
        constraint_mu      Normal(mu=-2, sigma=1.5)     ratchet, hysteresis (log increments)
                           Normal(mu=0, sigma=0.5)      random_walk (drift)
                           Normal(mu=0, sigma=2)        ar1 (long-run level)
        constraint_sigma   HalfNormal(sigma=1)
        constraint_beta    Normal(mu=0, sigma=1)        (exposure)
        constraint_phi     Beta(alpha=5, beta=2)        ar1
        constraint_rho     Beta(alpha=2, beta=8)        hysteresis
        constraint_kappa   Normal(mu=2, sigma=2)        hysteresis
        constraint_width   fixed at 0.25                hysteresis
        regime_init        Dirichlet(a=1 per regime)    (regime); initial = "free"
        trans_p            Dirichlet(a=1 + stickiness on the diagonal)  (regime_from, regime_to)
        trans_stickiness   fixed at 10                  sticky / absorbing, constant transitions
        hazard_intercept   Normal(mu=-3, sigma=1.5); free: Normal(mu=-1, sigma=1.5)
        hazard_slope       Normal(mu=0, sigma=1)        (regime_from, regime_to)
        hazard_eta         Normal(mu=0, sigma=1)        (regime_from, regime_to, exog)
        indicator_nu       Normal(mu=0, sigma=2)        (indicator); first fixed at 0
        indicator_lambda   Normal(mu=1, sigma=0.5)      (indicator); first fixed at 1
        indicator_sigma    HalfNormal(sigma=1)          (indicator)
        indicator_df       Gamma(alpha=2, beta=0.1)     (indicator); student_t
        indicator_alpha    Gamma(alpha=2, beta=0.1)     (indicator); negative_binomial
        feedback_a         Normal(mu=0, sigma=2)        (signal, regime) or (signal)
        feedback_b         Normal(mu=0, sigma=1)        (signal)
        feedback_w         Beta(alpha=1, beta=2)        (regime), non-tracking only
        feedback_sigma     HalfNormal(sigma=1)          (signal, regime) or (signal)
        feedback_df        Gamma(alpha=2, beta=0.1)     (signal); student_t
        feedback_alpha     Gamma(alpha=2, beta=0.1)     (signal); negative_binomial
        <p>_unit_sigma     HalfNormal(sigma=0.5)        hierarchical p

    The defaults assume indicators of order one (the first indicator fixes the
    constraint's scale); rescale data or override priors otherwise.

    Examples
    --------
    >>> spec = Spec.from_toml_string('''
    ... schema_version = 1
    ... family = "decoupling"
    ... [[indicators]]
    ... column = "debt"
    ... [[feedback]]
    ... column = "satisfaction"
    ... ''')
    >>> spec.regime_names
    ('tracking', 'decoupled')
    >>> spec.prior("constraint_mu")
    Prior('Normal(mu=-2, sigma=1.5)')
    """

    indicators: tuple[SeriesSpec, ...]
    feedback: tuple[SeriesSpec, ...]
    constraint: ConstraintSpec = field(default_factory=ConstraintSpec)
    regimes: RegimeSpec = field(default_factory=RegimeSpec)
    priors: Mapping[str, PriorLike] = field(default_factory=dict)
    units: UnitSpec = field(default_factory=UnitSpec)
    sampler: SamplerSpec = field(default_factory=SamplerSpec)
    data: DataSpec = field(default_factory=DataSpec)
    name: str = ""
    description: str = ""
    schema_version: int = SCHEMA_VERSION
    family: str = FAMILY

    def __post_init__(self) -> None:
        object.__setattr__(self, "indicators", tuple(self.indicators))
        object.__setattr__(self, "feedback", tuple(self.feedback))
        object.__setattr__(
            self,
            "priors",
            {k: _parse_prior(v, f"priors.{k}") for k, v in dict(self.priors).items()},
        )
        self._validate()

    # ---- validation -------------------------------------------------------------

    def _validate(self) -> None:
        if self.family != FAMILY:
            raise SpecError(f"family = {self.family!r} is not allowed here; expected {FAMILY!r}")
        _check_schema_version(self.schema_version)
        if not self.indicators:
            raise SpecError(
                "indicators: at least one [[indicators]] entry is required; without a direct "
                "measure of the constraint, 'the feedback stopped tracking' and 'the "
                "constraint stopped growing' predict the same data and cannot be told apart"
            )
        if not self.feedback:
            raise SpecError(
                "feedback: at least one [[feedback]] entry is required; without a feedback "
                "signal the regimes have no observable consequence"
            )
        for group, dim in (("indicators", "indicator"), ("feedback", "signal")):
            dup = _first_duplicate([s.name for s in getattr(self, group)])
            if dup is not None:
                raise SpecError(f"{group}: name {dup!r} is used twice; {dim} names must be unique")
        roles: dict[str, str] = {}
        for role, columns in (
            ("indicators", [s.column for s in self.indicators]),
            ("feedback", [s.column for s in self.feedback]),
            ("constraint.exposures", list(self.constraint.exposures)),
            ("regimes.covariates", list(self.regimes.covariates)),
        ):
            for col in columns:
                if col in roles and not (
                    {roles[col], role} <= {"constraint.exposures", "regimes.covariates"}
                ):
                    raise SpecError(
                        f"{role}: column {col!r} is already used by {roles[col]}; an observed "
                        "series cannot play two roles"
                    )
                roles.setdefault(col, role)
        for col, role in roles.items():
            for key in ("time", "unit"):
                if col == getattr(self.data, key):
                    raise SpecError(
                        f"{role}: column {col!r} is also data.{key}; the {key} column cannot "
                        "be a series of the model"
                    )
        for name, prior in self.priors.items():
            key = f"priors.{name}"
            base = self._unit_sigma_base(name)
            if base is not None:
                if base not in self.hierarchical_parameters:
                    raise SpecError(
                        f"{key}: {base!r} is not pooled hierarchically in this spec; "
                        f"hierarchical parameters: {list(self.hierarchical_parameters)}"
                    )
                _check_fixed(prior, key, "positive")
                continue
            if name not in PARAMETERS:
                hint = difflib.get_close_matches(name, list(PARAMETERS), n=1)
                extra = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise SpecError(
                    f"{key}: no parameter named {name!r}{extra}; allowed: "
                    + ", ".join(PARAMETERS)
                    + f", and <p>{UNIT_SIGMA_SUFFIX} for hierarchical p"
                )
            _check_fixed(prior, key, PARAMETERS[name].support)
            if not self.uses(name):
                warnings.warn(
                    f"{key} is set but this spec does not use {name!r} (used when: "
                    f"{PARAMETERS[name].used_when}); it is ignored",
                    UserWarning,
                    stacklevel=4,
                )

    @staticmethod
    def _unit_sigma_base(name: str) -> str | None:
        if name.endswith(UNIT_SIGMA_SUFFIX):
            base = name[: -len(UNIT_SIGMA_SUFFIX)]
            if base in PARAMETERS:
                return base
        return None

    # ---- construction -----------------------------------------------------------

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Spec:
        """Build a spec from its dict form (as parsed from TOML).

        Parameters
        ----------
        raw : mapping
            Keys as in the TOML layout (see the class Notes).

        Returns
        -------
        Spec

        Raises
        ------
        SpecError
            Unknown keys, wrong types, unknown choices, a missing or too new
            ``schema_version``, and every check listed in the class docstring.
        """
        t = _Table(raw, "", _TOP_KEYS)
        if "schema_version" not in t.raw:
            raise SpecError(
                f"schema_version is missing; add 'schema_version = {SCHEMA_VERSION}' at the "
                "top of the spec"
            )
        version = t.raw["schema_version"]
        if not isinstance(version, int) or isinstance(version, bool):
            raise SpecError(
                f"schema_version must be an integer; found {_type_name(version)} {version!r}"
            )
        _check_schema_version(version)
        family = t.text("family", FAMILY)
        if family != FAMILY:
            raise SpecError(
                f"family = {family!r} cannot be read by pathlock.Spec (expected {FAMILY!r}); "
                "use pathlock.build.spec_class(family) for other families"
            )

        def series(key: str) -> tuple[SeriesSpec, ...]:
            items = t.raw.get(key, [])
            if not isinstance(items, list | tuple):
                raise SpecError(
                    f"{key} must be an array of tables ([[{key}]] in TOML); found "
                    f"{_type_name(items)} {items!r}"
                )
            return tuple(SeriesSpec._parse(item, f"{key}[{i}]") for i, item in enumerate(items))

        priors = t.raw.get("priors", {})
        if not isinstance(priors, Mapping):
            raise SpecError(f"priors must be a table; found {_type_name(priors)} {priors!r}")
        return cls(
            indicators=series("indicators"),
            feedback=series("feedback"),
            constraint=ConstraintSpec._parse(t.raw.get("constraint", {})),
            regimes=RegimeSpec._parse(t.raw.get("regimes", {})),
            priors=priors,
            units=UnitSpec._parse(t.raw.get("units", {})),
            sampler=SamplerSpec._parse(t.raw.get("sampler", {})),
            data=DataSpec._parse(t.raw.get("data", {})),
            name=t.text("name", ""),
            description=t.text("description", ""),
            schema_version=version,
        )

    @classmethod
    def from_toml_string(cls, text: str) -> Spec:
        """Parse a spec from TOML text; TOML syntax errors become :class:`SpecError`.

        Parameters
        ----------
        text : str

        Returns
        -------
        Spec
        """
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise SpecError(f"not valid TOML: {exc}") from None
        return cls.from_dict(raw)

    @classmethod
    def from_toml(cls, path: str | Path) -> Spec:
        """Read a spec from a TOML file.

        Parameters
        ----------
        path : str or Path

        Returns
        -------
        Spec

        Raises
        ------
        SpecError
            The file is missing, is not TOML, or holds an invalid spec (the
            message starts with the path).
        """
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SpecError(f"cannot read spec file {str(path)!r}: {exc.strerror}") from None
        try:
            return cls.from_toml_string(text)
        except SpecError as exc:
            raise SpecError(f"{path}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """Return the dict form that :meth:`from_dict` reads back to an equal spec.

        Returns
        -------
        dict
        """
        out: dict[str, Any] = {"schema_version": self.schema_version, "family": self.family}
        if self.name:
            out["name"] = self.name
        if self.description:
            out["description"] = self.description
        out["constraint"] = self.constraint._to_dict()
        out["regimes"] = self.regimes._to_dict()
        out["indicators"] = [s._to_dict() for s in self.indicators]
        out["feedback"] = [s._to_dict() for s in self.feedback]
        out["priors"] = {k: v.to_dict() for k, v in self.priors.items()}
        out["units"] = self.units._to_dict()
        out["sampler"] = self.sampler._to_dict()
        out["data"] = self.data._to_dict()
        return out

    def to_toml(self) -> str:
        """Serialise as TOML text (with ``schema_version`` and ``family``).

        Returns
        -------
        str
        """
        return _dump_toml(self.to_dict())

    def with_priors(self, **overrides: Any) -> Spec:
        """Return a copy with priors overridden by name.

        Parameters
        ----------
        **overrides
            ``name=Prior(...)``, ``name=Fixed(...)``, a dict ``{"dist": ..., ...}``
            or a number (fixed value).

        Returns
        -------
        Spec

        Examples
        --------
        >>> spec = Spec(indicators=[SeriesSpec("z", "z")], feedback=[SeriesSpec("y", "y")])
        >>> spec.with_priors(constraint_mu={"dist": "Normal", "mu": 0, "sigma": 1}).prior(
        ...     "constraint_mu")
        Prior('Normal(mu=0, sigma=1)')
        """
        return dataclasses.replace(self, priors={**self.priors, **overrides})

    # ---- questions the builder asks ---------------------------------------------

    @property
    def regime_names(self) -> tuple[str, ...]:
        """Regime labels; the first is the tracking regime."""
        return self.regimes.names

    @property
    def n_regimes(self) -> int:
        """Number of regimes K."""
        return len(self.regimes.names)

    @property
    def indicator_names(self) -> tuple[str, ...]:
        """Labels of the ``indicator`` dim."""
        return tuple(s.name for s in self.indicators)

    @property
    def signal_names(self) -> tuple[str, ...]:
        """Labels of the ``signal`` dim."""
        return tuple(s.name for s in self.feedback)

    @property
    def time_varying(self) -> bool:
        """Whether transitions vary over time (hazard on the constraint or covariates)."""
        return self.n_regimes > 1 and (
            self.regimes.hazard_on_constraint or bool(self.regimes.covariates)
        )

    @property
    def columns(self) -> tuple[str, ...]:
        """Every data column the model reads: indicators, feedback, exposures, covariates."""
        cols = [s.column for s in (*self.indicators, *self.feedback)]
        cols += [c for c in (*self.constraint.exposures, *self.regimes.covariates) if c not in cols]
        return tuple(cols)

    @property
    def count_columns(self) -> dict[str, str]:
        """Columns of count-family series, mapped to their role (for data checks)."""
        out = {s.column: f"{s.family} indicator {s.name!r}" for s in self.indicators if s.is_count}
        out.update(
            {
                s.column: f"{s.family} feedback signal {s.name!r}"
                for s in self.feedback
                if s.is_count
            }
        )
        return out

    @property
    def hierarchical_parameters(self) -> tuple[str, ...]:
        """Parameters with unit-level deviations (empty with shared pooling)."""
        if self.units.pooling == "shared":
            return ()
        if self.units.hierarchical is not None:
            return self.units.hierarchical
        return ("constraint_mu", "feedback_a")

    def uses(self, name: str) -> bool:
        """Whether the model of this spec has the parameter ``name``.

        Parameters
        ----------
        name : str
            A key of :data:`PARAMETERS` or ``<p>_unit_sigma``.

        Returns
        -------
        bool
        """
        base = self._unit_sigma_base(name)
        if base is not None:
            return base in self.hierarchical_parameters
        process = self.constraint.process
        families_i = {s.family for s in self.indicators}
        families_f = {s.family for s in self.feedback}
        k = self.n_regimes
        rules: dict[str, Callable[[], bool]] = {
            "constraint_beta": lambda: bool(self.constraint.exposures),
            "constraint_phi": lambda: process == "ar1",
            "constraint_rho": lambda: process == "hysteresis",
            "constraint_kappa": lambda: process == "hysteresis",
            "constraint_width": lambda: process == "hysteresis",
            "regime_init": lambda: k > 1 and self.regimes.initial == "free",
            "trans_p": lambda: k > 1 and not self.time_varying,
            "trans_stickiness": lambda: (
                k > 1 and not self.time_varying and self.regimes.structure != "free"
            ),
            "hazard_intercept": lambda: self.time_varying,
            "hazard_slope": lambda: self.time_varying and self.regimes.hazard_on_constraint,
            "hazard_eta": lambda: self.time_varying and bool(self.regimes.covariates),
            "indicator_nu": lambda: len(self.indicators) > 1,
            "indicator_lambda": lambda: len(self.indicators) > 1,
            "indicator_sigma": lambda: bool(families_i & {"normal", "student_t"}),
            "indicator_df": lambda: "student_t" in families_i,
            "indicator_alpha": lambda: "negative_binomial" in families_i,
            "feedback_w": lambda: k > 1 and len(self.regimes.loading) < k - 1,
            "feedback_sigma": lambda: bool(families_f & {"normal", "student_t"}),
            "feedback_df": lambda: "student_t" in families_f,
            "feedback_alpha": lambda: "negative_binomial" in families_f,
        }
        if name not in PARAMETERS:
            return False
        return rules.get(name, lambda: True)()

    def parameters(self) -> dict[str, Parameter]:
        """Return the parameters this spec's model has, with dims and priors resolved.

        Returns
        -------
        dict of str to Parameter
            ``default`` holds the resolved prior (:meth:`prior`); ``dims`` drops
            the regime dim of ``feedback_a`` / ``feedback_sigma`` when those are
            shared across regimes and gains a leading ``unit`` for hierarchical
            parameters.  ``<p>_unit_sigma`` entries are included.
        """
        out: dict[str, Parameter] = {}
        hier = self.hierarchical_parameters
        for name, p in PARAMETERS.items():
            if not self.uses(name):
                continue
            d = p.dims
            if (name == "feedback_a" and not self.regimes.feedback_intercepts) or (
                name == "feedback_sigma" and not self.regimes.feedback_noise
            ):
                d = (dims.SIGNAL,)
            if name in hier:
                d = (dims.UNIT, *d)
            out[name] = dataclasses.replace(p, default=self.prior(name), dims=d)
            if name in hier:
                s = name + UNIT_SIGMA_SUFFIX
                out[s] = Parameter(
                    s,
                    self.prior(s),
                    (),
                    "positive",
                    f"{name} is hierarchical",
                    f"Scale of the unit-level deviations of {name}.",
                )
        return out

    def prior(self, name: str) -> PriorLike:
        """Return the prior of ``name`` in this spec: the override if set, else the default.

        Defaults that depend on the spec are resolved here: ``regime_init`` and
        ``trans_p`` get Dirichlet concentrations of the right length (``trans_p``:
        a (K, K) matrix with ``trans_stickiness`` added on the diagonal for
        'sticky' and 'absorbing'), ``hazard_intercept`` is centred at -1
        instead of -3 for 'free' transitions, and ``constraint_mu`` follows
        the process (log-increment location, drift or level).

        Parameters
        ----------
        name : str
            A key of :data:`PARAMETERS` or ``<p>_unit_sigma``.

        Returns
        -------
        Prior or Fixed

        Raises
        ------
        SpecError
            If no parameter has this name.
        """
        if name in self.priors:
            return self.priors[name]
        if self._unit_sigma_base(name) is not None:
            return UNIT_SIGMA_DEFAULT
        if name not in PARAMETERS:
            raise SpecError(f"no parameter named {name!r}; allowed: {', '.join(PARAMETERS)}")
        k = self.n_regimes
        if name == "regime_init":
            return Prior("Dirichlet", {"a": [1.0] * k})
        if name == "trans_p":
            extra: Any = 0.0
            if self.regimes.structure != "free":
                stick = self.prior("trans_stickiness")
                extra = np.asarray(stick.value, dtype=float) if isinstance(stick, Fixed) else 10.0
            a = np.ones((k, k)) + extra * np.eye(k)
            return Prior("Dirichlet", {"a": a.tolist()})
        if name == "hazard_intercept" and self.regimes.structure == "free":
            return Prior("Normal", {"mu": -1, "sigma": 1.5})
        if name == "constraint_mu" and self.constraint.process == "random_walk":
            return Prior("Normal", {"mu": 0, "sigma": 0.5})
        if name == "constraint_mu" and self.constraint.process == "ar1":
            return Prior("Normal", {"mu": 0, "sigma": 2})
        return PARAMETERS[name].default

    def loading(self, regime: str) -> PriorLike:
        """Prior (or fixed value) of the feedback loading fraction of ``regime``.

        Parameters
        ----------
        regime : str

        Returns
        -------
        Prior or Fixed
            ``Fixed(1.0)`` for the tracking regime, ``regimes.loading[regime]``
            if set, else the ``feedback_w`` prior (a ``feedback_w`` fixed at one
            value per non-tracking regime gives this regime's).
        """
        if regime not in self.regime_names:
            raise SpecError(f"unknown regime {regime!r}; regimes: {list(self.regime_names)}")
        if regime == self.regime_names[0]:
            return Fixed(1.0)
        if regime in self.regimes.loading:
            return self.regimes.loading[regime]
        prior = self.prior("feedback_w")
        if isinstance(prior, Fixed) and np.ndim(prior.value):
            value = np.asarray(prior.value, dtype=float)
            others = list(self.regime_names[1:])
            if value.shape != (len(others),):
                raise SpecError(
                    f"priors.feedback_w is fixed at a value of shape {value.shape}; expected a "
                    f"number or one value per non-tracking regime, {others}"
                )
            return Fixed(float(value[others.index(regime)]))
        return prior

    # ---- the ModelSpec protocol ---------------------------------------------------

    def prepare_data(self, data: Any) -> DecouplingData:
        """Validate raw input against this spec's columns and families.

        Parameters
        ----------
        data : DecouplingData, pandas.DataFrame, xarray.Dataset, str or Path
            Raw input; DataFrames and CSV paths are read with the ``[data]``
            column mapping.

        Returns
        -------
        DecouplingData
            Restricted to :attr:`columns`, with exposures and covariates filled by
            ``data.fill``.

        Raises
        ------
        DataError
            Missing columns, non-integer or negative counts, missing exposures
            with ``fill = "error"``, and the checks of :func:`pathlock.data.from_dataframe`.
        """
        from pathlock.data import prepare_for_spec

        return prepare_for_spec(self, data)

    def data_from_dataset(self, ds: xr.Dataset) -> DecouplingData:
        """Rebuild the data object from ``DecouplingData.to_dataset()`` output."""
        from pathlock.data import DecouplingData

        return DecouplingData.from_dataset(ds)

    def build(self, data: Any) -> Built:
        """Build the PyMC model (delegates to :func:`pathlock.decoupling.build`)."""
        from pathlock.decoupling import build

        return build(self, self.prepare_data(data))

    def target_accept_for(self, data: DecouplingData) -> float:
        """NUTS's target acceptance rate for ``data``: ``[sampler]``'s, else by length.

        :func:`pathlock.fit` asks for it when its own ``target_accept`` is not
        given; where ``[sampler]`` sets none it is :func:`default_target_accept`
        of the series length.
        """
        if self.sampler.target_accept is not None:
            return float(self.sampler.target_accept)
        return default_target_accept(data.n_steps)

    def adaptation_for(self, data: DecouplingData) -> Adaptation:
        """The mass-matrix adaptation for ``data``: ``[sampler]``'s, else by path and length.

        :func:`pathlock.fit` asks for it when its own ``adaptation`` is not
        given. Where ``[sampler]`` sets none it is ``"low_rank"`` for a
        ``partial`` path (:meth:`parameterization_for`), whose centred steps
        still move with ``constraint_sigma`` and the mean step along one
        direction (bursty ratchet data, T = 120: ``constraint_sigma``'s bulk
        ESS 48 / 222 with ``diag`` against 539 / 602, benchmarks/README.md),
        else :func:`default_adaptation` of the series length.
        """
        if self.sampler.adaptation is not None:
            return self.sampler.adaptation
        data = self.prepare_data(data)
        if self.parameterization_for(data) == "partial":
            return "low_rank"
        return default_adaptation(data.n_steps)

    def parameterization_for(self, data: Any) -> str:
        """The latent path's parameterisation for ``data``: ``auto`` resolved.

        :func:`pathlock.decoupling.resolved_parameterization`; any other
        ``constraint.parameterization`` is returned as it is.
        """
        from pathlock.decoupling import resolved_parameterization

        return resolved_parameterization(self, self.prepare_data(data))

    def loglike(self, data: Any, params: Mapping[str, Any]) -> float:
        """Marginal log-likelihood at named parameters (delegates to :mod:`pathlock.decoupling`)."""
        from pathlock.decoupling import loglike

        return float(loglike(self, self.prepare_data(data), params))

    def __str__(self) -> str:
        return self.to_toml()


def _toml_value(value: Any) -> str:
    """Format a value inline (arrays on one line, tables as inline tables)."""
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    # tomli_w owns quoting and number formatting; only the layout is ours
    return tomli_w.dumps({"v": value}).strip()[len("v = ") :]


def _dump_toml(doc: Mapping[str, Any]) -> str:
    """Write the spec's dict form as readable TOML.

    Sections become ``[section]`` tables, lists of tables ``[[section]]``, and
    priors one inline table per line, so saved specs look like hand-written ones.
    """
    lines = [f"{k} = {_toml_value(v)}" for k, v in doc.items() if not isinstance(v, Mapping | list)]
    for key, value in doc.items():
        if isinstance(value, list):
            for item in value:
                lines += ["", f"[[{key}]]"]
                lines += [f"{k} = {_toml_value(v)}" for k, v in item.items()]
        elif isinstance(value, Mapping):
            if not value:
                continue
            lines += ["", f"[{key}]"]
            nested = key != "priors"
            lines += [
                f"{k} = {_toml_value(v)}"
                for k, v in value.items()
                if not (nested and isinstance(v, Mapping))
            ]
            for k, v in value.items():
                if nested and isinstance(v, Mapping) and v:
                    lines += ["", f"[{key}.{k}]"]
                    lines += [f"{kk} = {_toml_value(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


def _check_schema_version(version: int) -> None:
    if version < 1:
        raise SpecError(f"schema_version = {version} is not valid; versions start at 1")
    if version > SCHEMA_VERSION:
        raise SpecError(
            f"schema_version = {version} is newer than this pathlock supports "
            f"(<= {SCHEMA_VERSION}); upgrade pathlock"
        )


register_family(FAMILY, Spec)
