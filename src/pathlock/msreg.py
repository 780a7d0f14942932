"""Markov-switching regressions: Hamilton's MS-AR family on the forward-backward kernel.

This module owns :class:`MarkovSwitching`, the econometric specification with
statsmodels' argument names (switching intercept, exogenous coefficients and
variance; AR(p) terms with the regime state expanded over lags; time-varying
transition probabilities from exogenous variables), its validated data object
:class:`MarkovSwitchingData`, and the translation of both into the
:class:`~pathlock.build.Built` contract.  It knows nothing of sampling or
posterior analysis; the kernel it runs on lives in :mod:`pathlock.hmm`.
"""

from __future__ import annotations

import math
import os
import tomllib
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
import pymc as pm
import pytensor
import pytensor.tensor as pt
import tomli_w
import xarray as xr
from numpy.typing import NDArray
from pymc.distributions import transforms

from pathlock import dims
from pathlock.build import Built, register_family
from pathlock.errors import DataError, SpecError
from pathlock.hmm import hmm_loglike, marginal_loglike

__all__ = ["MarkovSwitching", "MarkovSwitchingData", "SCHEMA_VERSION"]

#: Version of the TOML layout written by :meth:`MarkovSwitching.to_toml`.
SCHEMA_VERSION = 1

#: Most expanded states (``k_regimes ** (order + 1)``) a model may have.
MAX_EXPANDED_STATES = 1024

_FAMILY = "markov_switching"
_LOG_2PI = math.log(2.0 * math.pi)

# Which prior families each parameter accepts, and their parameters.
_PRIOR_PARAMS: dict[str, tuple[str, ...]] = {
    "normal": ("mu", "sigma"),
    "halfnormal": ("sigma",),
    "dirichlet": ("alpha",),
    "gamma": ("alpha", "beta"),
    "flat": (),
}
_ALLOWED_PRIORS: dict[str, tuple[str, ...]] = {
    "ms_const": ("normal", "flat"),
    "ms_const_gap": ("gamma", "flat"),
    "ms_exog": ("normal", "flat"),
    "ms_ar": ("normal", "flat"),
    "ms_sigma": ("halfnormal", "flat"),
    "ms_trans": ("dirichlet", "flat"),
    "ms_tvtp": ("normal", "flat"),
}
_SAMPLER_KEYS = (
    "draws",
    "tune",
    "chains",
    "target_accept",
    "sampler",
    "adaptation",
    "backend",
)
_ORDERED = ("const", "sigma", "none")
_TRENDS = ("c", "n")


@dataclass(frozen=True, eq=False)
class MarkovSwitchingData:
    """A validated univariate series with its regressors, ready for :class:`MarkovSwitching`.

    Attributes
    ----------
    endog : ndarray (time,)
        The dependent series, including the ``order`` presample observations;
        NaN marks a missing value (allowed only when ``order == 0``).
    time : pandas.Index
        The time labels of ``endog`` (dates stay dates).
    unit : str
        The unit label (the series name).
    exog : ndarray (time, exog)
        Regressors of the mean, in the order of ``exog_names``.
    exog_names : tuple of str
    exog_tvtp : ndarray (time, exog_tvtp)
        Regressors of the transition logits, without the intercept.
    exog_tvtp_names : tuple of str
    """

    endog: NDArray[np.float64]
    time: pd.Index
    unit: str
    exog: NDArray[np.float64]
    exog_names: tuple[str, ...]
    exog_tvtp: NDArray[np.float64]
    exog_tvtp_names: tuple[str, ...]

    def to_frame(self) -> pd.DataFrame:
        """Return the data as a DataFrame indexed by time (the endog column named ``unit``)."""
        cols: dict[str, Any] = {self.unit: self.endog}
        for j, name in enumerate(self.exog_names):
            cols[name] = self.exog[:, j]
        for j, name in enumerate(self.exog_tvtp_names):
            cols[name] = self.exog_tvtp[:, j]
        return pd.DataFrame(cols, index=self.time)

    def split_datasets(self) -> tuple[xr.Dataset, xr.Dataset]:
        """Observed ``y`` and constant ``regressors``, ``tvtp_regressors`` as Datasets.

        The variables are not named after their dims (``exog``, ``exog_tvtp``):
        xarray would take a variable named like a dim for its coordinate.
        """
        # An index name (e.g. "date") would otherwise become a second dim.
        coords = {dims.UNIT: [self.unit], dims.TIME: self.time.rename(None)}
        observed = xr.Dataset({"y": ((dims.UNIT, dims.TIME), self.endog[None])}, coords=coords)
        observed.attrs["endog"] = self.unit
        constant = xr.Dataset(coords=coords)
        if self.exog_names:
            constant["regressors"] = xr.DataArray(
                self.exog[None],
                dims=(dims.UNIT, dims.TIME, dims.EXOG),
                coords={**coords, dims.EXOG: list(self.exog_names)},
            )
        if self.exog_tvtp_names:
            constant["tvtp_regressors"] = xr.DataArray(
                self.exog_tvtp[None],
                dims=(dims.UNIT, dims.TIME, dims.EXOG_TVTP),
                coords={**coords, dims.EXOG_TVTP: list(self.exog_tvtp_names)},
            )
        return observed, constant

    def to_dataset(self) -> xr.Dataset:
        """Return one Dataset: ``y`` (unit, time), ``regressors``, ``tvtp_regressors``."""
        observed, constant = self.split_datasets()
        ds = xr.merge([observed, constant])
        ds.attrs = dict(observed.attrs)
        return ds


@dataclass(frozen=True)
class MarkovSwitching:
    r"""Markov-switching regression with AR(p) terms and time-varying transitions.

    The model of statsmodels' ``MarkovRegression`` (``order = 0``) and
    ``MarkovAutoregression`` (``order > 0``), with the same conventions, so
    published tables can be checked in one line with :func:`pathlock.loglike`.

    Parameters
    ----------
    k_regimes : int
        Number of regimes, at least 2.
    order : int
        Autoregressive order ``p`` (0 for a switching regression).
    endog : str, optional
        Column of the DataFrame holding the dependent series; ``None`` takes a
        Series or the only column of a one-column DataFrame.
    trend : {"c", "n"}
        ``"c"``: an intercept; ``"n"``: none.
    switching_trend : bool
        Whether the intercept switches with the regime.
    exog : sequence of str
        DataFrame columns entering the mean.
    switching_exog : bool
        Whether the ``exog`` coefficients switch (statsmodels' ``MarkovRegression``
        default; ``MarkovAutoregression``'s default is ``False``).
    switching_ar : bool
        Whether the AR coefficients switch (statsmodels' default ``True``;
        Hamilton (1989) uses ``False``).
    switching_variance : bool
        Whether the innovation standard deviation switches.
    exog_tvtp : sequence of str
        DataFrame columns driving time-varying transition probabilities; an
        intercept is always added (statsmodels' users add it by hand).  Empty:
        a constant transition matrix.
    regime_names : sequence of str, optional
        Regime labels, lowest intercept first; default ``regime_0``, ``regime_1``...
    ordered : {"const", "sigma", "none"}, optional
        Which switching parameter is constrained increasing across regimes to
        remove label switching.  Default: the intercept if it switches, else
        the standard deviation if it switches, else ``"none"`` (with a warning
        at build time).
    priors : mapping, optional
        Priors by variable name, each ``"flat"`` or ``{"dist": ..., ...}``; see Notes.
    sampler : mapping, optional
        Default sampler options for :func:`pathlock.fit` (``draws``, ``tune``,
        ``chains``, ``target_accept``, ``sampler``, ``adaptation``, ``backend``).
    schema_version : int
        Version of the TOML layout; only 1 exists.

    Raises
    ------
    SpecError
        Any invalid argument, named in the message with what was expected.

    Notes
    -----
    With :math:`z_t(k) = y_t - c_k - x_t'\beta_k` the mean-adjusted series in
    regime :math:`k`, the emission given the current and ``p`` previous regimes
    is (Hamilton 1989; statsmodels' ``MarkovAutoregression``)

    .. math::

        y_t \mid S_t, \dots, S_{t-p} \sim N\Big(y_t - z_t(S_t)
        + \sum_{i=1}^p \phi_{i}(S_t)\, z_{t-i}(S_{t-i}),\; \sigma^2(S_t)\Big).

    The kernel therefore runs on the expanded state :math:`X_t = (S_t, S_{t-1},
    \dots, S_{t-p})` with ``k_regimes ** (order + 1)`` values, numbered in
    C order with the current regime most significant (statsmodels' layout); its
    transition matrix is time-invariant unless there are ``exog_tvtp``, with
    forbidden moves at probability zero.  ``Built.extras["regime_aggregation"]``
    is the 0/1 matrix (state, regime) that maps expanded-state marginals onto
    regimes: ``smoothed @ aggregation``.  With ``order = 0`` it is the identity.

    The likelihood conditions on the first ``order`` observations.  The
    regime distribution one period before the first observation is the
    stationary distribution of the transition matrix (of the first period's
    matrix with time-varying transitions, as statsmodels does), pushed forward
    through the transitions of the presample periods.  With time-varying
    transitions, ``P(S_t = j | S_(t-1) = i)`` uses the ``exog_tvtp`` row of
    period ``t`` (lag the regressors yourself for a predictive model) with
    logits relative to the last regime: ``log P_ij - log P_i,K-1 =
    (1, w_t')gamma_ij``.

    Variables (``{component}_{param}``): ``ms_const`` (regime) or scalar;
    ``ms_exog`` (regime, exog) or (exog); ``ms_ar`` (regime, lag) or (lag);
    ``ms_sigma`` (regime) or scalar; ``ms_trans`` (regime_from, regime_to)
    with ``ms_trans[i, j] = P(S_t = j | S_(t-1) = i)``; or with time-varying
    transitions ``ms_tvtp`` (regime_from, regime_to, exog_tvtp) where
    ``regime_to`` holds every regime but the last (the reference).

    Default priors, scaled by the mean :math:`m` and standard deviation
    :math:`s` of the modelled observations (override by name): ``ms_const``
    normal(m, 2s), times ``ms_const_gap`` gamma(2, 1/s) on each gap between
    consecutive (ordered) intercepts, a ``pm.Potential`` whose density
    vanishes where two regimes merge (the likelihood is flat in the
    transition probabilities there, which NUTS cannot traverse);
    ``ms_exog`` normal(0, 2s / sd(x)); ``ms_ar`` normal(0, 1);
    ``ms_sigma`` halfnormal(2s); ``ms_trans`` rows dirichlet with concentration 4
    on the diagonal and 1 elsewhere (regimes persist: a prior mean stay
    probability of 4 / (k_regimes + 3), 0.8 with two regimes, without which
    NUTS wanders into the unidentified region where the regimes merge);
    ``ms_tvtp`` normal(0, 3).  ``"flat"`` gives an improper flat prior
    (half-flat for ``ms_sigma``, uniform rows for ``ms_trans``), so the
    posterior mode is the maximum-likelihood estimate: see :meth:`with_flat_priors`.

    Examples
    --------
    >>> import pathlock as pl
    >>> spec = pl.MarkovSwitching(k_regimes=2, order=4, switching_ar=False,
    ...                           regime_names=("recession", "expansion"))
    >>> spec.n_states
    32
    """

    k_regimes: int = 2
    order: int = 0
    endog: str | None = None
    trend: Literal["c", "n"] = "c"
    switching_trend: bool = True
    exog: tuple[str, ...] = ()
    switching_exog: bool = True
    switching_ar: bool = True
    switching_variance: bool = False
    exog_tvtp: tuple[str, ...] = ()
    regime_names: tuple[str, ...] | None = None
    ordered: Literal["const", "sigma", "none"] | None = None
    priors: Mapping[str, Any] = field(default_factory=dict, hash=False)
    sampler: Mapping[str, Any] = field(default_factory=dict, hash=False)
    schema_version: int = SCHEMA_VERSION

    family: ClassVar[str] = _FAMILY

    # -- validation ------------------------------------------------------
    def __post_init__(self) -> None:
        for name in ("k_regimes", "order", "schema_version"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise SpecError(f"{name} must be an integer; found {value!r}")
        if self.schema_version != SCHEMA_VERSION:
            raise SpecError(
                f"schema_version {self.schema_version} is not supported; this pathlock reads "
                f"schema_version {SCHEMA_VERSION}"
            )
        if self.k_regimes < 2:
            raise SpecError(f"k_regimes must be at least 2; found {self.k_regimes}")
        if self.order < 0:
            raise SpecError(f"order must be a non-negative integer; found {self.order}")
        if self.k_regimes ** (self.order + 1) > MAX_EXPANDED_STATES:
            raise SpecError(
                f"k_regimes ** (order + 1) = {self.k_regimes ** (self.order + 1)} expanded states "
                f"exceeds {MAX_EXPANDED_STATES}; lower order or k_regimes"
            )
        for name in ("switching_trend", "switching_exog", "switching_ar", "switching_variance"):
            if not isinstance(getattr(self, name), bool | np.bool_):
                raise SpecError(f"{name} must be True or False; found {getattr(self, name)!r}")
        if self.trend not in _TRENDS:
            raise SpecError(f"trend must be one of {list(_TRENDS)}; found {self.trend!r}")
        if self.endog is not None and not isinstance(self.endog, str):
            raise SpecError(f"endog must be a column name (str) or None; found {self.endog!r}")
        object.__setattr__(self, "exog", _names_tuple("exog", self.exog))
        object.__setattr__(self, "exog_tvtp", _names_tuple("exog_tvtp", self.exog_tvtp))
        if self.regime_names is not None:
            names = _names_tuple("regime_names", self.regime_names)
            if len(names) != self.k_regimes:
                raise SpecError(
                    f"regime_names has {len(names)} names {list(names)}; expected k_regimes = "
                    f"{self.k_regimes}"
                )
            object.__setattr__(self, "regime_names", names)
        if self.endog is not None and self.endog in self.exog + self.exog_tvtp:
            raise SpecError(f"endog column {self.endog!r} is also listed in exog or exog_tvtp")
        switching = self._switching_components()
        if not switching:
            raise SpecError(
                "nothing switches: set switching_trend (with trend='c'), switching_exog (with "
                "exog), switching_ar (with order > 0) or switching_variance"
            )
        if self.ordered is not None:
            if self.ordered not in _ORDERED:
                raise SpecError(f"ordered must be one of {list(_ORDERED)}; found {self.ordered!r}")
            if self.ordered == "const" and "const" not in switching:
                raise SpecError("ordered='const' needs trend='c' and switching_trend=True")
            if self.ordered == "sigma" and not self.switching_variance:
                raise SpecError("ordered='sigma' needs switching_variance=True")
        object.__setattr__(self, "priors", self._validated_priors(self.priors))
        object.__setattr__(self, "sampler", _validated_sampler(self.sampler))

    def _switching_components(self) -> list[str]:
        out = []
        if self.trend == "c" and self.switching_trend:
            out.append("const")
        if self.exog and self.switching_exog:
            out.append("exog")
        if self.order > 0 and self.switching_ar:
            out.append("ar")
        if self.switching_variance:
            out.append("sigma")
        return out

    def _variable_names(self) -> list[str]:
        names = []
        if self.trend == "c":
            names.append("ms_const")
            if self.switching_trend:
                names.append("ms_const_gap")
        if self.exog:
            names.append("ms_exog")
        if self.order > 0:
            names.append("ms_ar")
        names.append("ms_sigma")
        names.append("ms_tvtp" if self.exog_tvtp else "ms_trans")
        return names

    def _validated_priors(self, priors: Any) -> dict[str, dict[str, Any]]:
        if not isinstance(priors, Mapping):
            raise SpecError(f"priors must be a mapping of variable name to prior; found {priors!r}")
        known = self._variable_names()
        out: dict[str, dict[str, Any]] = {}
        for name, prior in priors.items():
            if name not in known:
                raise SpecError(
                    f"priors[{name!r}]: this model has no variable {name!r}; its variables are "
                    f"{known}"
                )
            if isinstance(prior, str):
                prior = {"dist": prior}
            if not isinstance(prior, Mapping) or "dist" not in prior:
                raise SpecError(
                    f"priors[{name!r}] must be 'flat' or a table with a 'dist' key; found {prior!r}"
                )
            dist = str(prior["dist"]).lower()
            if dist not in _ALLOWED_PRIORS[name]:
                raise SpecError(
                    f"priors[{name!r}]: dist {prior['dist']!r} is not allowed; allowed: "
                    f"{list(_ALLOWED_PRIORS[name])}"
                )
            params = {k: v for k, v in prior.items() if k != "dist"}
            unknown = sorted(set(params) - set(_PRIOR_PARAMS[dist]))
            if unknown:
                raise SpecError(
                    f"priors[{name!r}]: unknown parameters {unknown} for dist {dist!r}; allowed: "
                    f"{list(_PRIOR_PARAMS[dist])}"
                )
            for key, value in params.items():
                arr = np.asarray(value, dtype=float)
                if not np.all(np.isfinite(arr)):
                    raise SpecError(f"priors[{name!r}].{key} must be finite; found {value!r}")
                if key in ("sigma", "alpha", "beta") and np.any(arr <= 0):
                    raise SpecError(f"priors[{name!r}].{key} must be positive; found {value!r}")
            out[name] = {"dist": dist, **params}
        return out

    # -- derived properties ----------------------------------------------
    @property
    def names(self) -> tuple[str, ...]:
        """Regime labels in model order."""
        if self.regime_names is not None:
            return self.regime_names
        return tuple(f"regime_{k}" for k in range(self.k_regimes))

    @property
    def n_states(self) -> int:
        """Number of expanded states the kernel runs on, ``k_regimes ** (order + 1)``."""
        return self.k_regimes ** (self.order + 1)

    @property
    def identification(self) -> str:
        """The ordering constraint actually used (``"const"``, ``"sigma"`` or ``"none"``)."""
        if self.ordered is not None:
            return self.ordered
        if self.trend == "c" and self.switching_trend:
            return "const"
        if self.switching_variance:
            return "sigma"
        return "none"

    def state_digits(self) -> NDArray[np.int64]:
        """Regimes of each expanded state, (state, lag 0..order), current regime first."""
        grid = np.indices((self.k_regimes,) * (self.order + 1)).reshape(self.order + 1, -1)
        return np.ascontiguousarray(grid.T)

    def regime_aggregation(self) -> NDArray[np.float64]:
        """0/1 matrix (state, regime) summing expanded-state probabilities into regimes."""
        agg = np.zeros((self.n_states, self.k_regimes))
        agg[np.arange(self.n_states), self.state_digits()[:, 0]] = 1.0
        return agg

    def with_flat_priors(self) -> MarkovSwitching:
        """Return a copy with flat priors on every parameter (posterior mode = MLE)."""
        return replace(self, priors=dict.fromkeys(self._variable_names(), "flat"))

    # -- data ------------------------------------------------------------
    def prepare_data(self, data: Any) -> MarkovSwitchingData:
        """Validate raw input into :class:`MarkovSwitchingData`.

        Parameters
        ----------
        data : DataFrame, Series, path or MarkovSwitchingData
            A time-indexed DataFrame with the ``endog``, ``exog`` and
            ``exog_tvtp`` columns, a Series (no regressors), a CSV path (first
            column the index, parsed as dates when possible) or a data object.

        Returns
        -------
        MarkovSwitchingData

        Raises
        ------
        DataError
            Missing columns, non-numeric or non-finite values where they are
            not allowed, a time index that is not strictly increasing, or too
            few observations for ``order``.
        """
        if isinstance(data, MarkovSwitchingData):
            frame: pd.DataFrame | pd.Series = data.to_frame()
            endog_name = self.endog if self.endog is not None else data.unit
        elif isinstance(data, str | os.PathLike):
            path = Path(data)
            if not path.exists():
                raise DataError(f"data: no file at {path}")
            frame = pd.read_csv(path, index_col=0, parse_dates=True)
            endog_name = self.endog
        elif isinstance(data, pd.Series | pd.DataFrame):
            frame = data
            endog_name = self.endog
        else:
            raise DataError(
                "data must be a pandas DataFrame or Series with a time index, a CSV path or "
                f"MarkovSwitchingData; found {type(data).__name__}"
            )
        if isinstance(frame, pd.Series):
            if self.exog or self.exog_tvtp:
                raise DataError(
                    f"data is a Series but the spec needs columns exog={list(self.exog)}, "
                    f"exog_tvtp={list(self.exog_tvtp)}; pass a DataFrame"
                )
            name = endog_name or (str(frame.name) if frame.name is not None else "y")
            frame = frame.to_frame(name)
            endog_name = name
        if endog_name is None:
            if frame.shape[1] != 1:
                raise DataError(
                    f"endog is not set and the DataFrame has {frame.shape[1]} columns "
                    f"{[str(c) for c in frame.columns]}; set MarkovSwitching(endog=...)"
                )
            endog_name = str(frame.columns[0])
        columns = [str(c) for c in frame.columns]
        frame = frame.set_axis(columns, axis=1)
        for arg, wanted in (
            ("endog", [endog_name]),
            ("exog", self.exog),
            ("exog_tvtp", self.exog_tvtp),
        ):
            missing = [c for c in wanted if c not in columns]
            if missing:
                raise DataError(f"{arg}: columns {missing} not in the data; available: {columns}")
        index = frame.index
        if index.has_duplicates:
            raise DataError(
                f"time index has duplicate labels, e.g. {index[index.duplicated()][0]!r}"
            )
        if not index.is_monotonic_increasing:
            pos = int(np.argmax(~_increasing(index)))
            raise DataError(
                f"time index is not increasing (first bad row {pos}, label {index[pos]!r}); "
                "sort by time"
            )
        n_min = self.order + 2
        if len(frame) < n_min:
            raise DataError(
                f"endog has {len(frame)} observations; order={self.order} needs at least {n_min}"
            )
        y = _numeric("endog", frame[endog_name])
        if np.isinf(y).any():
            raise DataError(
                f"endog column {endog_name!r} contains inf at {_first(index, np.isinf(y))}"
            )
        if self.order > 0 and np.isnan(y).any():
            raise DataError(
                f"endog column {endog_name!r} has a missing value at {_first(index, np.isnan(y))}; "
                f"missing values are allowed only with order=0 (order={self.order}): drop or "
                "impute them"
            )
        if np.isnan(y[self.order :]).all():
            raise DataError(f"endog column {endog_name!r} has no observed values")
        exog = _regressors("exog", frame, self.exog, index)
        tvtp = _regressors("exog_tvtp", frame, self.exog_tvtp, index)
        return MarkovSwitchingData(
            endog=y,
            time=index.copy(),
            unit=str(endog_name),
            exog=exog,
            exog_names=self.exog,
            exog_tvtp=tvtp,
            exog_tvtp_names=self.exog_tvtp,
        )

    def data_from_dataset(self, ds: xr.Dataset) -> MarkovSwitchingData:
        """Rebuild the data object from :meth:`MarkovSwitchingData.to_dataset` output."""
        if "y" not in ds:
            raise DataError(f"dataset has no 'y' variable; found {sorted(map(str, ds.data_vars))}")
        unit = str(ds.attrs.get("endog", ds[dims.UNIT].values[0]))
        index = pd.Index(ds[dims.TIME].values)
        frame = pd.DataFrame({unit: ds["y"].values[0]}, index=index)
        for var, dim in (("regressors", dims.EXOG), ("tvtp_regressors", dims.EXOG_TVTP)):
            if var in ds:
                for name in ds[dim].values:
                    frame[str(name)] = ds[var].sel({dim: name}).values[0]
        return replace(self, endog=unit).prepare_data(frame)

    # -- model -------------------------------------------------------------
    def build(self, data: Any) -> Built:
        """Build the PyMC model and the kernel's symbolic inputs.

        Parameters
        ----------
        data : data object, DataFrame, Series or path
            Anything :meth:`prepare_data` accepts.

        Returns
        -------
        Built
            ``log_init`` (1, state), ``log_trans`` (1, 1 or time, state,
            state), ``log_emit`` (1, time, state) over the expanded states;
            ``extras["regime_aggregation"]`` (state, regime).  The model's
            ``time`` coord drops the ``order`` presample observations.
        """
        data = self.prepare_data(data)
        k, p = self.k_regimes, self.order
        names = list(self.names)
        y = data.endog
        y_model = y[p:]
        y_mean = float(np.nanmean(y_model))
        y_sd = float(np.nanstd(y_model)) or 1.0
        coords: dict[str, Any] = {
            dims.UNIT: [data.unit],
            dims.TIME: data.time[p:].rename(None),
            dims.REGIME: names,
            dims.REGIME_FROM: names,
            dims.REGIME_TO: names[:-1] if self.exog_tvtp else names,
        }
        if self.exog:
            coords[dims.EXOG] = list(self.exog)
        if p > 0:
            coords[dims.LAG] = list(range(1, p + 1))
        if self.exog_tvtp:
            coords[dims.EXOG_TVTP] = ["const", *self.exog_tvtp]
        ident = self.identification
        if ident == "none":
            warnings.warn(
                "no ordering constraint identifies the regimes (ordered='none'): regime labels "
                "may switch between chains",
                UserWarning,
                stacklevel=2,
            )
        digits = self.state_digits()
        with pm.Model(coords=coords) as model:
            params: dict[str, pt.TensorVariable] = {}
            if self.trend == "c":
                switching = self.switching_trend
                params["ms_const"] = self._rv(
                    "ms_const",
                    dims.REGIME if switching else (),
                    default={"dist": "normal", "mu": y_mean, "sigma": 2.0 * y_sd},
                    ordered=ident == "const",
                    initval=_spread(y_model, k) if switching else y_mean,
                )
                gap_prior = self.priors.get(
                    "ms_const_gap", {"dist": "gamma", "alpha": 2.0, "beta": 1.0 / y_sd}
                )
                if switching and ident == "const" and gap_prior["dist"] == "gamma":
                    c = params["ms_const"]
                    gaps = c[1:] - c[:-1]
                    pm.Potential(
                        "ms_const_gap",
                        pm.logp(
                            pm.Gamma.dist(alpha=gap_prior["alpha"], beta=gap_prior["beta"]), gaps
                        ).sum(),
                    )
            if self.exog:
                x_sd = np.nanstd(data.exog[p:], axis=0)
                x_sd = np.where(x_sd > 0, x_sd, 1.0)
                params["ms_exog"] = self._rv(
                    "ms_exog",
                    (dims.REGIME, dims.EXOG) if self.switching_exog else (dims.EXOG,),
                    default={"dist": "normal", "mu": 0.0, "sigma": 2.0 * y_sd / x_sd},
                    initval=np.zeros(
                        (k, len(self.exog)) if self.switching_exog else len(self.exog)
                    ),
                )
            if p > 0:
                params["ms_ar"] = self._rv(
                    "ms_ar",
                    (dims.REGIME, dims.LAG) if self.switching_ar else (dims.LAG,),
                    default={"dist": "normal", "mu": 0.0, "sigma": 1.0},
                    initval=np.zeros((k, p) if self.switching_ar else p),
                )
            params["ms_sigma"] = self._rv(
                "ms_sigma",
                dims.REGIME if self.switching_variance else (),
                default={"dist": "halfnormal", "sigma": 2.0 * y_sd},
                ordered=ident == "sigma",
                positive=True,
                initval=(
                    y_sd * np.linspace(0.5, 1.0, k) if self.switching_variance else 0.75 * y_sd
                ),
            )
            sticky = _sticky(k)
            if self.exog_tvtp:
                init = np.zeros((k, k - 1, 1 + len(self.exog_tvtp)))
                init[:, :, 0] = np.log(sticky[:, :-1] / sticky[:, -1:])
                params["ms_tvtp"] = self._rv(
                    "ms_tvtp",
                    (dims.REGIME_FROM, dims.REGIME_TO, dims.EXOG_TVTP),
                    default={"dist": "normal", "mu": 0.0, "sigma": 3.0},
                    initval=init,
                )
            else:
                params["ms_trans"] = self._rv(
                    "ms_trans",
                    (dims.REGIME_FROM, dims.REGIME_TO),
                    default={"dist": "dirichlet", "alpha": _sticky_alpha(k)},
                    initval=sticky,
                )
            log_init, log_trans, log_emit = _kernel_graph(self, data, params, digits)
            pm.Potential("ms_loglike", hmm_loglike(log_init, log_trans, log_emit).sum())
        extras = {"regime_aggregation": pt.as_tensor_variable(self.regime_aggregation())}
        return Built(model, log_init, log_trans, log_emit, extras)

    def _rv(
        self,
        name: str,
        rv_dims: str | tuple[str, ...],
        *,
        default: dict[str, Any],
        initval: Any,
        ordered: bool = False,
        positive: bool = False,
    ) -> pt.TensorVariable:
        prior = self.priors.get(name, default)
        dist = prior["dist"]
        kwargs: dict[str, Any] = {"dims": rv_dims, "initval": np.asarray(initval, dtype=float)}
        if ordered:
            kwargs["transform"] = transforms.ordered
        if dist == "flat":
            if name == "ms_trans":
                k = self.k_regimes
                return pm.Dirichlet(name, a=np.ones((k, k)), **kwargs)
            return (pm.HalfFlat if positive else pm.Flat)(name, **kwargs)
        if dist == "normal":
            return pm.Normal(name, mu=prior.get("mu", 0.0), sigma=prior.get("sigma", 1.0), **kwargs)
        if dist == "halfnormal":
            return pm.HalfNormal(name, sigma=prior.get("sigma", 1.0), **kwargs)
        alpha = np.broadcast_to(
            np.asarray(prior.get("alpha", 1.0), dtype=float), (self.k_regimes, self.k_regimes)
        )
        return pm.Dirichlet(name, a=alpha, **kwargs)

    # -- likelihood at given parameters --------------------------------------
    def kernel_inputs(
        self, data: Any, params: Mapping[str, Any]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """The kernel's numeric inputs at named parameters in their natural scale.

        Parameters
        ----------
        data : data object, DataFrame, Series or path
        params : mapping
            Values by variable name (``ms_const``, ``ms_exog``, ``ms_ar``,
            ``ms_sigma`` or ``ms_sigma2``, ``ms_trans`` or ``ms_tvtp``), with
            the shapes documented in the class Notes.

        Returns
        -------
        tuple of ndarray
            ``log_init`` (1, state), ``log_trans`` (1, 1 or time, state, state),
            ``log_emit`` (1, time, state), ready for :func:`pathlock.hmm.forward_backward`.

        Raises
        ------
        SpecError
            Unknown, missing or wrongly shaped parameters, or values outside
            their support.
        """
        built = self.build(data)
        values = self._parameter_values(built.model, params)
        rvs = list(built.model.free_RVs)
        inputs = [rv.type(name=rv.name) for rv in rvs]
        outputs = pytensor.graph.replace.clone_replace(
            [built.log_init, built.log_trans, built.log_emit], dict(zip(rvs, inputs, strict=True))
        )
        fn = pytensor.function(inputs, outputs, on_unused_input="ignore")
        li, lt, le = fn(*(values[rv.name] for rv in rvs))
        return np.asarray(li), np.asarray(lt), np.asarray(le)

    def loglike(self, data: Any, params: Mapping[str, Any]) -> float:
        """Marginal log-likelihood at named parameters in their natural scale.

        Parameters
        ----------
        data : data object, DataFrame, Series or path
        params : mapping
            As for :meth:`kernel_inputs`.

        Returns
        -------
        float
            The log-likelihood, conditional on the first ``order`` observations.

        Examples
        --------
        Hamilton (1989), as published (statsmodels' ``TestHamiltonAR4``)::

            spec = MarkovSwitching(k_regimes=2, order=4, switching_ar=False)
            spec.loglike(gnp["rgnp"], {
                "ms_const": [-0.358811, 1.163516], "ms_sigma": np.exp(-0.262658),
                "ms_ar": [0.013486, -0.057521, -0.246983, -0.212923],
                "ms_trans": [[0.754673, 0.245327], [0.095915, 0.904085]]})
            # -181.26339
        """
        return float(marginal_loglike(*self.kernel_inputs(data, params)).sum())

    def _parameter_values(
        self, model: pm.Model, params: Mapping[str, Any]
    ) -> dict[str, NDArray[np.float64]]:
        params = dict(params)
        if "ms_sigma2" in params:
            if "ms_sigma" in params:
                raise SpecError("params: give ms_sigma or ms_sigma2, not both")
            s2 = np.asarray(params.pop("ms_sigma2"), dtype=float)
            if np.any(s2 <= 0):
                raise SpecError(f"params['ms_sigma2'] must be positive; found {s2}")
            params["ms_sigma"] = np.sqrt(s2)
        shapes = {rv.name: tuple(int(s) for s in rv.shape.eval()) for rv in model.free_RVs}
        unknown = sorted(set(params) - set(shapes))
        if unknown:
            raise SpecError(
                f"params: unknown names {unknown}; this model's parameters are {sorted(shapes)}"
            )
        missing = sorted(set(shapes) - set(params))
        if missing:
            raise SpecError(
                f"params: missing {missing}; this model's parameters are {sorted(shapes)}"
            )
        out = {}
        for name, shape in shapes.items():
            value = np.asarray(params[name], dtype=float)
            if value.shape != shape:
                try:
                    value = np.broadcast_to(value, shape).copy()
                except ValueError:
                    raise SpecError(
                        f"params[{name!r}] has shape {value.shape}; expected {shape} "
                        f"({_shape_doc(model, name)})"
                    ) from None
            if not np.all(np.isfinite(value)):
                raise SpecError(f"params[{name!r}] must be finite; found {value}")
            if name == "ms_sigma" and np.any(value <= 0):
                raise SpecError(f"params['ms_sigma'] must be positive; found {value}")
            if name == "ms_trans":
                if np.any(value < 0) or np.any(np.abs(value.sum(axis=-1) - 1) > 1e-8):
                    raise SpecError(
                        "params['ms_trans'] rows must be probabilities summing to one "
                        "(ms_trans[i, j] = P(S_t = j | S_(t-1) = i)); "
                        f"row sums {value.sum(axis=-1)}"
                    )
            out[name] = value
        return out

    # -- serialisation -------------------------------------------------------
    def to_toml(self) -> str:
        """Serialise the spec as TOML text (with ``schema_version`` and ``family``)."""
        doc: dict[str, Any] = {"schema_version": self.schema_version, "family": self.family}
        for f in fields(self):
            if f.name in ("schema_version", "priors", "sampler"):
                continue
            value = getattr(self, f.name)
            if value is None:
                continue
            doc[f.name] = list(value) if isinstance(value, tuple) else value
        if self.priors:
            doc["priors"] = {k: _toml_value(v) for k, v in self.priors.items()}
        if self.sampler:
            doc["sampler"] = dict(self.sampler)
        return tomli_w.dumps(doc)

    @classmethod
    def from_toml_string(cls, text: str) -> MarkovSwitching:
        """Read a spec from TOML text written by :meth:`to_toml` or by hand.

        Raises
        ------
        SpecError
            Invalid TOML, a different family, unknown keys (the message lists
            the allowed ones) or invalid values.
        """
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise SpecError(f"invalid TOML: {exc}") from exc
        family = doc.pop("family", _FAMILY)
        if family != _FAMILY:
            raise SpecError(f"family is {family!r}; MarkovSwitching reads family {_FAMILY!r}")
        if "schema_version" not in doc:
            raise SpecError(
                f"schema_version is missing; expected schema_version = {SCHEMA_VERSION}"
            )
        allowed = [f.name for f in fields(cls)]
        unknown = sorted(set(doc) - set(allowed))
        if unknown:
            raise SpecError(f"unknown keys {unknown}; allowed keys: {allowed}")
        for key in ("exog", "exog_tvtp", "regime_names"):
            if key in doc and isinstance(doc[key], list):
                doc[key] = tuple(doc[key])
        return cls(**doc)

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> MarkovSwitching:
        """Read a spec from a TOML file; see :meth:`from_toml_string`."""
        p = Path(path)
        if not p.exists():
            raise SpecError(f"no spec file at {p}")
        try:
            return cls.from_toml_string(p.read_text())
        except SpecError as exc:
            raise SpecError(f"{p}: {exc}") from None


# ----------------------------------------------------------------------------
# the symbolic model: expanded-state emissions, transitions and initial law
# ----------------------------------------------------------------------------


def _kernel_graph(
    spec: MarkovSwitching,
    data: MarkovSwitchingData,
    params: Mapping[str, pt.TensorVariable],
    digits: NDArray[np.int64],
) -> tuple[pt.TensorVariable, pt.TensorVariable, pt.TensorVariable]:
    """Return ``log_init`` (1, S), ``log_trans`` (1, 1|T, S, S), ``log_emit`` (1, T, S)."""
    k, p = spec.k_regimes, spec.order
    n_full = data.endog.size
    n = n_full - p
    missing = np.isnan(data.endog)
    y = pt.as_tensor_variable(np.where(missing, 0.0, data.endog))

    # z[t, k] = y_t - c_k - x_t'beta_k over every period, presample included.
    mean = pt.zeros((n_full, k))
    if "ms_const" in params:
        c = params["ms_const"]
        mean = mean + (c[None, :] if spec.switching_trend else c)
    if "ms_exog" in params:
        x = pt.as_tensor_variable(data.exog)
        b = params["ms_exog"]
        mean = mean + (pt.dot(x, b.T) if spec.switching_exog else pt.dot(x, b)[:, None])
    z = y[:, None] - mean

    d0 = digits[:, 0]
    resid = z[p:, :][:, d0]
    if p > 0:
        phi = params["ms_ar"]
        phi = phi if spec.switching_ar else pt.broadcast_to(phi[None, :], (k, p))
        phi_state = phi[d0]
        for lag in range(1, p + 1):
            resid = (
                resid
                - phi_state[None, :, lag - 1] * z[p - lag : n_full - lag, :][:, digits[:, lag]]
            )
    sigma = params["ms_sigma"]
    sigma_state = sigma[d0][None, :] if spec.switching_variance else sigma
    log_emit = -0.5 * pt.sqr(resid / sigma_state) - pt.log(sigma_state) - 0.5 * _LOG_2PI
    if missing[p:].any():
        log_emit = pt.where(missing[p:, None], 0.0, log_emit)

    # Expanded transition: X=(s_{t-1},...,s_{t-1-p}) -> Y=(s_t,...,s_{t-p}) is allowed
    # only when Y shifts X; its probability is P(s_t | s_{t-1}).
    compatible = np.all(digits[None, :, 1:] == digits[:, None, :-1], axis=-1)
    log_mask = np.where(compatible, 0.0, -np.inf)
    if "ms_tvtp" in params:
        gamma = params["ms_tvtp"]
        w = np.column_stack([np.ones(n_full), data.exog_tvtp])
        logits = pt.tensordot(pt.as_tensor_variable(w), gamma, axes=[[1], [2]])  # (T, K, K-1)
        logits = pt.concatenate([logits, pt.zeros((n_full, k, 1))], axis=-1)
        log_p = logits - pt.logsumexp(logits, axis=-1, keepdims=True)
        trans = pt.exp(log_p)
        first = trans[0]
        presample = [trans[m] for m in range(p + 1)]
        log_trans_full = log_p[:, d0[:, None], d0[None, :]] + log_mask
        log_trans = log_trans_full[p:][None]
    else:
        trans = params["ms_trans"]
        log_p = pt.log(trans)
        first = trans
        presample = [trans] * (p + 1)
        log_trans = (log_p[d0[:, None], d0[None, :]] + log_mask)[None, None]

    # Law of (S_p, ..., S_0): stationary law one period before the first
    # observation, pushed through the transitions of periods 0..p.
    joint = _stationary(first)
    for a in presample:
        joint = a.T.reshape((k, k) + (1,) * (joint.ndim - 1)) * joint[None]
        if joint.ndim > p + 1:
            joint = joint.sum(axis=-1)
    log_init = pt.log(joint.reshape((1, k ** (p + 1))))
    del n
    return log_init, log_trans, log_emit[None]


def _stationary(trans: pt.TensorVariable) -> pt.TensorVariable:
    """Stationary law ``pi = pi P`` of a right-stochastic matrix, by one linear solve."""
    k = trans.shape[0]
    system = (pt.eye(k) - trans + 1.0).T
    return pt.linalg.solve(system, pt.ones(k))


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------


def _names_tuple(arg: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise SpecError(f"{arg} must be a sequence of column names (str); found {value!r}")
    names = tuple(value)
    dup = sorted({v for v in names if names.count(v) > 1})
    if dup:
        raise SpecError(f"{arg} lists {dup} more than once")
    return names


def _validated_sampler(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise SpecError(f"sampler must be a mapping of options; found {value!r}")
    unknown = sorted(set(value) - set(_SAMPLER_KEYS))
    if unknown:
        raise SpecError(f"sampler: unknown options {unknown}; allowed: {list(_SAMPLER_KEYS)}")
    return dict(value)


def _toml_value(prior: Mapping[str, Any]) -> Any:
    if set(prior) == {"dist"}:
        return prior["dist"]
    return {k: (np.asarray(v).tolist() if k != "dist" else v) for k, v in prior.items()}


def _increasing(index: pd.Index) -> NDArray[np.bool_]:
    values = index.to_numpy()
    ok = np.ones(len(values), dtype=bool)
    try:
        ok[1:] = values[1:] > values[:-1]
    except TypeError:
        pass
    return ok


def _numeric(arg: str, column: pd.Series) -> NDArray[np.float64]:
    try:
        return np.asarray(pd.to_numeric(column, errors="raise"), dtype=float)
    except (TypeError, ValueError):
        raise DataError(
            f"{arg} column {column.name!r} is not numeric (dtype {column.dtype}); expected numbers"
        ) from None


def _first(index: pd.Index, mask: NDArray[np.bool_]) -> str:
    pos = int(np.argmax(mask))
    return f"row {pos} (time {index[pos]!r})"


def _regressors(
    arg: str, frame: pd.DataFrame, columns: tuple[str, ...], index: pd.Index
) -> NDArray[np.float64]:
    out = np.empty((len(frame), len(columns)))
    for j, name in enumerate(columns):
        values = _numeric(arg, frame[name])
        bad = ~np.isfinite(values)
        if bad.any():
            raise DataError(
                f"{arg} column {name!r} has a missing or non-finite value at {_first(index, bad)}; "
                "regressors must be complete: drop those rows or impute"
            )
        out[:, j] = values
    return out


def _spread(y: NDArray[np.float64], k: int) -> NDArray[np.float64]:
    """Strictly increasing starting intercepts from the quantiles of the data."""
    q = np.nanquantile(y, (np.arange(k) + 0.5) / k)
    return q + 1e-3 * np.arange(k)


def _sticky_alpha(k: int) -> NDArray[np.float64]:
    """Default Dirichlet concentration: 4 on the diagonal, 1 elsewhere (persistent regimes)."""
    return np.ones((k, k)) + 3.0 * np.eye(k)


def _sticky(k: int, stay: float = 0.9) -> NDArray[np.float64]:
    out = np.full((k, k), (1.0 - stay) / (k - 1))
    np.fill_diagonal(out, stay)
    return out


def _shape_doc(model: pm.Model, name: str) -> str:
    rv_dims = model.named_vars_to_dims.get(name, ())
    return "dims " + (", ".join(rv_dims) if rv_dims else "scalar")


register_family(_FAMILY, MarkovSwitching)
