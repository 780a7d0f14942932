"""Figures of a fit: one function per figure, each returning a matplotlib Figure.

Each function takes the xarray object (or result) it draws, or a
:class:`~pathlock.fit.Fit` from which it derives that object, and titles the
figure with the finding it shows ("Feedback stopped tracking around 2021-03
(90% interval ...)"), in the user's names: time and unit columns, regime,
indicator and signal labels, dates as dates.  Multi-unit inputs get one
panel per unit, at most :data:`MAX_PANELS` (a note names what was left out;
``units=`` picks others).  Figures are built on :class:`matplotlib.figure.Figure`
directly, never through pyplot, so nothing here touches global state or needs
a display.  This module computes no posterior quantity itself: those come
from :mod:`pathlock.analysis` and :mod:`pathlock.interventions`; it only
summarises them into quantiles for drawing.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib import dates as mdates
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from pathlock import dims
from pathlock.errors import PathlockError

if TYPE_CHECKING:
    from pathlock.analysis import DecouplingTime
    from pathlock.fit import Fit
    from pathlock.interventions import TimingComparison

__all__ = [
    "MAX_PANELS",
    "Labels",
    "constraint_fan",
    "feedback_gap",
    "regime_ribbon",
    "decoupling_posterior",
    "timing_curve",
    "timing_summary",
    "TimingSummary",
    "diagnostics",
    "comparison",
    "indicators_on_constraint_scale",
    "observed_feedback",
    "time_formatter",
]

#: Most unit panels drawn in one figure; the rest are named in a note.
MAX_PANELS = 6

_TRACK = "#2b6cb0"
_DECOUPLED = "#c53030"
_MIDDLE = ["#dd6b20", "#d69e2e", "#805ad5", "#2f855a"]
_GREY = "#4a5568"
_ACCENT = "#c53030"
_TITLE_PT = 12.0
_MARKERS = ["o", "s", "^", "D", "v"]
_CAPTION_PT = 8.5


@dataclass(frozen=True)
class Labels:
    """The user's names for the axes and titles.

    Attributes
    ----------
    time : str
        The time column (x-axis label; prefix of numeric times in sentences).
    unit : str
        The unit column (panel titles read ``"{unit} = {label}"``).
    constraint : str
        What the latent constraint is called.
    """

    time: str = "time"
    unit: str = "unit"
    constraint: str = "constraint"

    @classmethod
    def from_fit(cls, fit: Fit) -> Labels:
        """Read the time and unit column names from the fit's data."""
        data = fit.data
        time = getattr(data, "time_column", None) or "time"
        unit = getattr(data, "unit_column", None) or "unit"
        return cls(time=str(time), unit=str(unit))


# --------------------------------------------------------------------------
# formatting helpers
# --------------------------------------------------------------------------


def _is_datetime(values: np.ndarray) -> bool:
    return np.issubdtype(np.asarray(values).dtype, np.datetime64)


def time_formatter(times: Sequence[Any] | np.ndarray, name: str = "time") -> Callable[[Any], str]:
    """Return a function that writes a time label as the grid's resolution warrants.

    Parameters
    ----------
    times : array-like
        The time coord (dates or numbers).
    name : str
        The time column's name, used as the prefix of numeric times ("week 12").

    Returns
    -------
    callable
        ``fmt(label) -> str``; missing labels (NaT, NaN, None) read "not yet".
        Monthly grids print ``2021-03``, yearly ``2021``, daily ``2021-03-15``.
    """
    values = np.asarray(times)
    if _is_datetime(values):
        idx = pd.DatetimeIndex(values)
        idx = idx[~idx.isna()]
        if len(idx) and (idx.normalize() == idx).all():
            if (idx.day == 1).all():
                pattern = "%Y" if (idx.month == 1).all() and len(idx) > 1 else "%Y-%m"
            else:
                pattern = "%Y-%m-%d"
        else:
            pattern = "%Y-%m-%d %H:%M"

        def fmt_date(label: Any) -> str:
            if isinstance(label, np.ndarray):
                label = label[()]
            ts = pd.Timestamp(label) if label is not None else pd.NaT
            return "not yet" if pd.isna(ts) else ts.strftime(pattern)

        return fmt_date

    def fmt_other(label: Any) -> str:
        if isinstance(label, np.ndarray | np.generic):
            label = label.item()
        if label is None or (isinstance(label, float | np.floating) and math.isnan(label)):
            return "not yet"
        if isinstance(label, int | float | np.integer | np.floating):
            return f"{name} {float(label):g}"
        return f"{name} {label}"

    return fmt_other


def _num(value: float) -> str:
    """Write a number with three significant digits (scientific only when very large or small)."""
    if value is None or not np.isfinite(value):
        return "n/a"
    a = abs(value)
    if a == 0:
        return "0"
    if 1e-3 <= a < 1e5:
        digits = max(0, 2 - math.floor(math.log10(a)))
        return f"{value:,.{digits}f}"
    return f"{value:.2e}"


def _prob(value: float) -> str:
    """Write a probability with two decimals ("<0.01" and ">0.99" at the ends)."""
    if not np.isfinite(value):
        return "n/a"
    if 0 < value < 0.005:
        return "<0.01"
    if 0.995 < value < 1:
        return ">0.99"
    return f"{value:.2f}"


def _pct(prob: float) -> str:
    return f"{round(100 * prob):d}%"


class _DatedFromStartFormatter(mdates.ConciseDateFormatter):
    """Concise date labels whose first visible tick always carries its year.

    The concise formatter writes the year only at year boundaries (or in the
    offset, for a span inside one year), so a series starting after January
    would show "Jul" with no year until the next January.
    """

    def format_ticks(self, values: Sequence[float]) -> list[str]:
        labels = list(super().format_ticks(values))
        if self.axis is None or not labels:
            return labels
        lo, hi = sorted(self.axis.get_view_interval())
        inside = [i for i, v in enumerate(values) if lo <= v <= hi]
        if inside:
            first = inside[0]
            year = str(mdates.num2date(values[first]).year)
            if year not in labels[first] and year not in self.get_offset():
                labels[first] = f"{labels[first]}\n{year}"
        return labels


def _style_time_axis(ax: Axes, times: np.ndarray, name: str) -> None:
    if _is_datetime(times):
        locator = mdates.AutoDateLocator(minticks=3, maxticks=7)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(_DatedFromStartFormatter(locator))
    ax.set_xlabel(name)


def _half_step(times: np.ndarray) -> Any:
    """Half the grid step, in the coord's own type (for bar widths and margins)."""
    if times.size < 2:
        return np.timedelta64(12, "h") if _is_datetime(times) else 0.5
    step = np.diff(times).min()
    return step / 2


def _select_units(
    available: Sequence[Any], units: Sequence[Any] | Any | None, *, what: str = "units"
) -> tuple[list[Any], str | None]:
    """Return the units to draw and a note on those left out."""
    avail = list(np.asarray(available).tolist())
    if units is None:
        chosen = avail[:MAX_PANELS]
        left = len(avail) - len(chosen)
        note = (
            f"Showing the first {len(chosen)} of {len(avail)} {what}; pass units=[...] for others."
            if left > 0
            else None
        )
        return chosen, note
    wanted = [units] if isinstance(units, str) or np.ndim(units) == 0 else list(units)
    wanted = [w.item() if isinstance(w, np.generic) else w for w in wanted]
    unknown = [w for w in wanted if w not in avail]
    if unknown:
        raise PathlockError(f"units: unknown unit(s) {unknown}; the units are {avail}")
    if len(wanted) > MAX_PANELS:
        return wanted[:MAX_PANELS], (f"Showing {MAX_PANELS} of the {len(wanted)} requested {what}.")
    return wanted, None


def _panel_grid(
    n: int, *, width: float = 9.0, height: float = 3.6, sharey: bool = False
) -> tuple[Figure, list[Axes]]:
    ncols = _ncols(n)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(width if ncols == 1 else 5.2 * ncols, height * nrows + 1.2))
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True, sharey=sharey).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _ncols(n: int) -> int:
    return 1 if n == 1 else 2 if n <= 4 else 3


def _bottom_labels_only(axes: Sequence[Axes]) -> None:
    """Keep the x label and tick labels on the lowest panel of each column only."""
    ncols = _ncols(len(axes))
    for i, ax in enumerate(axes):
        lowest = i + ncols >= len(axes)
        ax.xaxis.set_tick_params(labelbottom=lowest)
        if not lowest:
            ax.set_xlabel("")


def _legend(axes: Sequence[Axes], *, inside: bool | None = None, **kwargs: Any) -> None:
    """One legend for the figure: every distinct label of every panel, in order of appearance.

    Inside the first panel (default for a single panel), or to the right of the
    top-right panel, where the constrained layout makes room for it
    (figure-level legends would collide with the headline or the caption).
    """
    seen: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, handle)
    if not seen:
        return
    options = {"fontsize": 8, "frameon": False, **kwargs}
    if inside is None:
        inside = len(axes) == 1
    if inside:
        axes[0].legend(list(seen.values()), list(seen), loc="upper left", **options)
        return
    anchor = axes[min(_ncols(len(axes)), len(axes)) - 1]
    anchor.legend(
        list(seen.values()),
        list(seen),
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        borderaxespad=0.0,
        **options,
    )


def _finish(fig: Figure, title: str, caption: str, note: str | None = None) -> Figure:
    """Title the figure with its finding, explain the encoding below, and lay it out.

    Text is wrapped by hand to the figure's width (matplotlib's own wrapping
    ignores the layout engine); the caption is the figure's supxlabel, so the
    constrained layout reserves its height.
    """
    width_in = fig.get_size_inches()[0]
    title_chars = int(width_in * 72 / (_TITLE_PT * 0.64))
    caption_chars = int(width_in * 72 / (_CAPTION_PT * 0.6))
    fig.suptitle(
        textwrap.fill(title, title_chars),
        fontsize=_TITLE_PT,
        fontweight="bold",
        x=0.01,
        ha="left",
    )
    text = caption if note is None else f"{caption} {note}"
    # A supxlabel is the one bottom text the constrained layout makes room for.
    fig.supxlabel(
        "\n".join(textwrap.wrap(text, caption_chars)),
        fontsize=_CAPTION_PT,
        color=_GREY,
        x=0.01,
        ha="left",
        va="bottom",
        multialignment="left",
    )
    fig.set_layout_engine("constrained", h_pad=0.06, w_pad=0.06)
    return fig


def _unit_title(unit: Any, labels: Labels, n_units: int) -> str | None:
    return f"{labels.unit} = {unit}" if n_units > 1 else None


def _is_fit(obj: Any) -> bool:
    return hasattr(obj, "idata") and hasattr(obj, "spec") and hasattr(obj, "built")


def _regime_colors(names: Sequence[str]) -> list[str]:
    k = len(names)
    if k == 1:
        return [_TRACK]
    return [_TRACK, *(_MIDDLE[i % len(_MIDDLE)] for i in range(k - 2)), _DECOUPLED]


def _sample_dims(da: xr.DataArray | xr.Dataset, keep: Sequence[str]) -> list[str]:
    return [d for d in da.dims if d not in keep]


def _quantiles(da: xr.DataArray, probs: Sequence[float], keep: Sequence[str]) -> xr.DataArray:
    """Quantiles over every dim not in ``keep`` (the sample dims)."""
    qs = sorted({0.5, *((1 - p) / 2 for p in probs), *((1 + p) / 2 for p in probs)})
    return da.quantile(qs, dim=_sample_dims(da, keep))


# --------------------------------------------------------------------------
# inputs derived from a fit
# --------------------------------------------------------------------------


def _posterior_mean(fit: Fit, name: str) -> xr.DataArray | None:
    post = fit.idata.posterior
    if name not in post:
        return None
    return post[name].mean(list(dims.SAMPLE_DIMS))


def indicators_on_constraint_scale(fit: Fit) -> xr.DataArray | None:
    """Observed indicators mapped onto the constraint's scale with the posterior-mean loadings.

    Parameters
    ----------
    fit : Fit
        A fit of the decoupling family.

    Returns
    -------
    DataArray (unit, time, indicator) or None
        ``(Z - nu) / lambda`` (``(log(Z + 0.5) - nu) / lambda`` for count
        families, whose link is the log), with ``nu`` and ``lambda`` the
        posterior means of ``indicator_nu`` and ``indicator_lambda`` (0 and 1
        where the model fixes them); None when the fit has no indicators.
    """
    spec = fit.spec
    series = getattr(spec, "indicators", ())
    if not series:
        return None
    data = fit.data
    nu = _posterior_mean(fit, "indicator_nu")
    lam = _posterior_mean(fit, "indicator_lambda")
    columns = []
    for s in series:
        z = np.asarray(data.values[s.column], dtype=float)
        if s.family in ("poisson", "negative_binomial"):
            z = np.log(z + 0.5)
        shift = _per_indicator(nu, s.name, 0.0)
        scale = _per_indicator(lam, s.name, 1.0)
        columns.append((z - shift[:, None]) / scale[:, None])
    return xr.DataArray(
        np.stack(columns, axis=-1),
        dims=(dims.UNIT, dims.TIME, dims.INDICATOR),
        coords={
            dims.UNIT: np.asarray(data.units),
            dims.TIME: np.asarray(data.times),
            dims.INDICATOR: [s.name for s in series],
        },
        name="indicator_on_constraint_scale",
    )


def _per_indicator(value: xr.DataArray | None, name: str, default: float) -> np.ndarray:
    """Per-unit value of a parameter for one indicator; ``default`` where the model fixes it."""
    if value is None:
        return np.atleast_1d(default)
    if dims.INDICATOR in value.dims:
        if name not in value[dims.INDICATOR].values.tolist():
            return np.atleast_1d(default)
        value = value.sel({dims.INDICATOR: name})
    return np.atleast_1d(value.values).astype(float)


def observed_feedback(fit: Fit) -> xr.DataArray | None:
    """Observed feedback on the scale of :func:`~pathlock.analysis.hidden_constraint`.

    Returns
    -------
    DataArray (unit, time, signal) or None
        The data's feedback columns, ``log(y + 0.5)`` for count families.
    """
    series = getattr(fit.spec, "feedback", ())
    if not series:
        return None
    data = fit.data
    columns = []
    for s in series:
        y = np.asarray(data.values[s.column], dtype=float)
        columns.append(np.log(y + 0.5) if s.family in ("poisson", "negative_binomial") else y)
    return xr.DataArray(
        np.stack(columns, axis=-1),
        dims=(dims.UNIT, dims.TIME, dims.SIGNAL),
        coords={
            dims.UNIT: np.asarray(data.units),
            dims.TIME: np.asarray(data.times),
            dims.SIGNAL: [s.name for s in series],
        },
        name="feedback",
    )


# --------------------------------------------------------------------------
# 1. constraint fan chart
# --------------------------------------------------------------------------


def constraint_fan(
    constraint: Fit | xr.DataArray,
    indicators: xr.DataArray | None = None,
    *,
    units: Sequence[Any] | None = None,
    probs: tuple[float, float] = (0.5, 0.9),
    labels: Labels | None = None,
) -> Figure:
    """Fan chart of the latent constraint with the indicators overlaid.

    Parameters
    ----------
    constraint : Fit or DataArray (chain, draw, unit, time)
        Posterior draws of the constraint (any sample dims), or a fit whose
        posterior holds ``constraint``; a fit also supplies ``indicators``
        (:func:`indicators_on_constraint_scale`) and ``labels``.
    indicators : DataArray (unit, time, indicator), optional
        Indicator observations on the constraint scale.
    units : sequence, optional
        Unit labels to draw (default the first :data:`MAX_PANELS`).
    probs : (float, float)
        Masses of the inner and outer central intervals.
    labels : Labels, optional

    Returns
    -------
    Figure
        Titled with the constraint's change over the data and its final
        interval (for several units: how many rose, and the highest).
    """
    if _is_fit(constraint):
        fit = constraint
        from pathlock.analysis import _constraint

        constraint = _constraint(fit)
        indicators = indicators if indicators is not None else indicators_on_constraint_scale(fit)
        labels = labels or Labels.from_fit(fit)
    labels = labels or Labels()
    inner, outer = sorted(probs)
    lo_q, hi_q = (1 - outer) / 2, (1 + outer) / 2
    q = _quantiles(constraint, (inner, outer), (dims.UNIT, dims.TIME))
    times = constraint[dims.TIME].values
    fmt = time_formatter(times, labels.time)
    all_units = constraint[dims.UNIT].values.tolist()
    med = q.sel(quantile=0.5)
    first = med.isel({dims.TIME: 0}).values
    last = med.isel({dims.TIME: -1}).values
    low = q.sel(quantile=lo_q).isel({dims.TIME: -1}).values
    high = q.sel(quantile=hi_q).isel({dims.TIME: -1}).values
    chosen, note = _select_units(all_units, units)
    fig, axes = _panel_grid(len(chosen))
    name = labels.constraint
    for ax, unit in zip(axes, chosen, strict=True):
        qu = q.sel({dims.UNIT: unit})
        for mass, alpha in ((outer, 0.18), (inner, 0.35)):
            ax.fill_between(
                times,
                qu.sel(quantile=(1 - mass) / 2),
                qu.sel(quantile=(1 + mass) / 2),
                color=_TRACK,
                alpha=alpha,
                lw=0,
                label=f"{_pct(mass)} interval",
            )
        ax.plot(times, qu.sel(quantile=0.5), color=_TRACK, lw=2, label="posterior median")
        if indicators is not None and unit in indicators[dims.UNIT].values.tolist():
            ind = indicators.sel({dims.UNIT: unit})
            for j, ind_name in enumerate(ind[dims.INDICATOR].values):
                ax.plot(
                    ind[dims.TIME].values,
                    ind.sel({dims.INDICATOR: ind_name}).values,
                    ls="none",
                    marker=_MARKERS[j % len(_MARKERS)],
                    ms=3.2,
                    color="black",
                    alpha=0.55,
                    label=f"{ind_name} (observed)",
                )
        ax.set_ylabel(name)
        _style_time_axis(ax, times, labels.time)
        ax.grid(alpha=0.25)
        i = all_units.index(unit)
        if len(chosen) > 1:
            verb = "rose" if last[i] > first[i] else "fell"
            ax.set_title(
                f"{labels.unit} = {unit}: {verb} to {_num(last[i])} "
                f"({_num(low[i])} to {_num(high[i])})",
                fontsize=10,
                loc="left",
            )
    _bottom_labels_only(axes)
    _legend(axes)
    if len(all_units) == 1:
        verb = "rose" if last[0] > first[0] else "fell"
        title = (
            f"{name.capitalize()} {verb} from {_num(first[0])} to {_num(last[0])} by "
            f"{fmt(times[-1])} ({_pct(outer)} interval {_num(low[0])} to {_num(high[0])})"
        )
    else:
        top = int(np.argmax(last))
        title = (
            f"{name.capitalize()} rose in {int((last > first).sum())} of {len(all_units)} "
            f"{labels.unit} series by {fmt(times[-1])}; highest: {labels.unit} {all_units[top]} at "
            f"{_num(last[top])} ({_pct(outer)} interval {_num(low[top])} to {_num(high[top])})"
        )
    caption = (
        f"Line: posterior median of the latent {name}; bands: central {_pct(inner)} and "
        f"{_pct(outer)} intervals. Dots: indicators mapped onto the {name} scale with their "
        "posterior-mean intercepts and loadings."
    )
    return _finish(fig, title, caption, note)


# --------------------------------------------------------------------------
# 2. feedback against the hidden constraint
# --------------------------------------------------------------------------


def _first_clear_gap(hidden: xr.Dataset) -> int | None:
    """First position from which the gap's interval excludes zero to the end.

    ``hidden`` is one unit (and signal) of :meth:`Fit.hidden_constraint`.  The
    interval must clear zero by 0.1 % of the tracked signal's range (under a
    pixel of the figure): a step before a sharp switch has a gap of order
    P(already decoupled) x the drop, say 1e-5, whose interval excludes zero in
    floating point but not visibly.
    """
    low, high = hidden["gap_low"].values, hidden["gap_high"].values
    tracked = hidden["if_tracking"].values
    tol = 1e-3 * float(np.ptp(tracked)) if np.isfinite(tracked).all() else 0.0
    clear = (low > tol) | (high < -tol)
    if not clear[-1]:
        return None
    run = np.flatnonzero(~clear)
    return 0 if run.size == 0 else int(run[-1] + 1)


def feedback_gap(
    hidden: Fit | xr.Dataset,
    observed: xr.DataArray | None = None,
    *,
    units: Sequence[Any] | None = None,
    signal: str | None = None,
    labels: Labels | None = None,
) -> Figure:
    """Observed feedback, what it would show if it still tracked, and the gap between them.

    Parameters
    ----------
    hidden : Fit or Dataset (unit, time, signal)
        The output of :func:`pathlock.analysis.hidden_constraint` (variables
        ``if_tracking``, ``expected``, ``gap`` with ``*_low`` / ``*_high``),
        or a fit to compute it from.
    observed : DataArray (unit, time, signal), optional
        Observed feedback on the same scale (:func:`observed_feedback`).
    units : sequence, optional
    signal : str, optional
        Which signal to draw (default the first).
    labels : Labels, optional

    Returns
    -------
    Figure
        Titled with the time from which the gap's interval excludes zero for
        good and the gap's size at the end (or "no clear gap").
    """
    if _is_fit(hidden):
        fit = hidden
        from pathlock.analysis import hidden_constraint

        hidden = hidden_constraint(fit)
        observed = observed if observed is not None else observed_feedback(fit)
        labels = labels or Labels.from_fit(fit)
    labels = labels or Labels()
    prob = float(hidden.attrs.get("prob", 0.9))
    if dims.SIGNAL in hidden.dims:
        names = hidden[dims.SIGNAL].values.tolist()
        if signal is None:
            signal = names[0]
        elif signal not in names:
            raise PathlockError(f"signal: unknown signal {signal!r}; the signals are {names}")
        hidden = hidden.sel({dims.SIGNAL: signal})
        if observed is not None and dims.SIGNAL in observed.dims:
            observed = observed.sel({dims.SIGNAL: signal})
    signal_name = str(signal) if signal is not None else "feedback"
    times = hidden[dims.TIME].values
    fmt = time_formatter(times, labels.time)
    all_units = hidden[dims.UNIT].values.tolist()
    opened: dict[Any, int | None] = {}
    for unit in all_units:
        h = hidden.sel({dims.UNIT: unit})
        opened[unit] = _first_clear_gap(h)
    chosen, note = _select_units(all_units, units)
    fig, axes = _panel_grid(len(chosen))
    for ax, unit in zip(axes, chosen, strict=True):
        h = hidden.sel({dims.UNIT: unit})
        track, exp = h["if_tracking"].values, h["expected"].values
        ax.fill_between(times, exp, track, color=_ACCENT, alpha=0.16, lw=0, label="hidden gap")
        ax.fill_between(
            times, h["if_tracking_low"], h["if_tracking_high"], color=_TRACK, alpha=0.15, lw=0
        )
        ax.plot(times, track, color=_TRACK, lw=2, ls="--", label="if it still tracked")
        ax.fill_between(times, h["expected_low"], h["expected_high"], color=_GREY, alpha=0.15, lw=0)
        ax.plot(times, exp, color=_GREY, lw=2, label="expected under the fitted regimes")
        if observed is not None and unit in observed[dims.UNIT].values.tolist():
            obs = observed.sel({dims.UNIT: unit})
            ax.plot(
                obs[dims.TIME].values,
                obs.values,
                ls="none",
                marker="o",
                ms=3.2,
                color="black",
                alpha=0.6,
                label=f"{signal_name} (observed)",
            )
        ax.set_ylabel(signal_name)
        _style_time_axis(ax, times, labels.time)
        ax.grid(alpha=0.25)
        if len(chosen) > 1:
            gap = float(h["gap"][-1])
            start = opened[unit]
            short = "no clear gap" if start is None else f"gap from {fmt(times[start])}"
            ax.set_title(
                f"{labels.unit} = {unit}: {short}, {_num(gap)} at the end",
                fontsize=10,
                loc="left",
            )
    _bottom_labels_only(axes)
    _legend(axes)
    if len(all_units) == 1:
        h = hidden.isel({dims.UNIT: 0})
        gap, low, high = (float(h[k][-1]) for k in ("gap", "gap_low", "gap_high"))
        interval = f"{_pct(prob)} interval {_num(low)} to {_num(high)}"
        start = opened[all_units[0]]
        if start is None:
            title = (
                f"No clear gap: {signal_name} still tracks the {labels.constraint} "
                f"(gap {_num(gap)} at {fmt(times[-1])}, {interval})"
            )
        else:
            side = "lower" if gap > 0 else "higher"
            title = (
                f"{signal_name.capitalize()} stopped tracking the {labels.constraint} around "
                f"{fmt(times[start])}: by {fmt(times[-1])} it reads {_num(abs(gap))} {side} "
                f"than if it still tracked ({interval})"
            )
    else:
        gapped = [u for u in all_units if opened[u] is not None]
        title = (
            f"{signal_name.capitalize()} stopped tracking the {labels.constraint} in "
            f"{len(gapped)} of {len(all_units)} {labels.unit} series"
        )
        if gapped:
            early = min(gapped, key=lambda u: opened[u])
            title += f"; earliest: {labels.unit} {early} from {fmt(times[opened[early]])}"
    scale = hidden.attrs.get("scale", "linear predictor")
    caption = (
        f"Dashed: what {signal_name} would show if it still tracked the {labels.constraint}; "
        f"solid: what the fitted regimes expect it to show; shaded red: the gap (posterior "
        f"means; light bands: {_pct(prob)} intervals; {scale} scale). The gap 'opens' where "
        "its interval excludes zero from then on."
    )
    return _finish(fig, title, caption, note)


# --------------------------------------------------------------------------
# 3. regime probability ribbon
# --------------------------------------------------------------------------


def regime_ribbon(
    probabilities: Fit | xr.DataArray,
    *,
    units: Sequence[Any] | None = None,
    labels: Labels | None = None,
) -> Figure:
    """Stacked regime probabilities over time.

    Parameters
    ----------
    probabilities : Fit or DataArray (unit, time, regime)
        Posterior-averaged probabilities (e.g. ``fit.regime_probabilities(average=True)``);
        sample dims, if present, are averaged.  The first regime is the tracking one.
    units : sequence, optional
    labels : Labels, optional

    Returns
    -------
    Figure
        Titled with the first time the probability of having left the first
        regime passes 50%, and its value at the end.
    """
    if _is_fit(probabilities):
        fit = probabilities
        probabilities = fit.regime_probabilities(average=True)
        labels = labels or Labels.from_fit(fit)
    labels = labels or Labels()
    kind = str(probabilities.attrs.get("kind", "smoothed"))
    extra = [d for d in probabilities.dims if d not in (dims.UNIT, dims.TIME, dims.REGIME)]
    if extra:
        probabilities = probabilities.mean(extra)
    probabilities = probabilities.transpose(dims.UNIT, dims.REGIME, dims.TIME)
    names = [str(r) for r in probabilities[dims.REGIME].values]
    colors = _regime_colors(names)
    times = probabilities[dims.TIME].values
    fmt = time_formatter(times, labels.time)
    all_units = probabilities[dims.UNIT].values.tolist()
    off = 1.0 - probabilities.values[:, 0, :]
    passed = {u: np.flatnonzero(off[i] >= 0.5) for i, u in enumerate(all_units)}
    chosen, note = _select_units(all_units, units)
    fig, axes = _panel_grid(len(chosen), height=3.0, sharey=True)
    track = names[0]
    for ax, unit in zip(axes, chosen, strict=True):
        p = probabilities.sel({dims.UNIT: unit}).values
        ax.stackplot(times, p, colors=colors, labels=names, alpha=0.85, lw=0)
        ax.axhline(0.5, color="white", lw=1, ls=":")
        ax.set_ylim(0, 1)
        ax.set_xlim(times[0], times[-1])
        ax.set_ylabel("probability")
        _style_time_axis(ax, times, labels.time)
        if len(chosen) > 1:
            when = passed[unit]
            short = f"past 50% at {fmt(times[when[0]])}" if when.size else "never past 50%"
            ax.set_title(f"{labels.unit} = {unit}: P(not {track}) {short}", fontsize=10, loc="left")
    _bottom_labels_only(axes)
    _legend(axes, inside=False, title="regime", reverse=True)
    if len(names) == 1:
        title = f"One regime ({track}): nothing to switch"
    elif len(all_units) == 1:
        when = passed[all_units[0]]
        if when.size:
            title = (
                f"Left {track}: P(not {track}) first passed 50% at {fmt(times[when[0]])} and "
                f"is {_prob(off[0, -1])} at {fmt(times[-1])}"
            )
        else:
            title = (
                f"Still {track}: P(not {track}) stays below 50% "
                f"({_prob(off[0, -1])} at {fmt(times[-1])})"
            )
    else:
        left = [u for u in all_units if passed[u].size]
        title = f"P(not {track}) passed 50% in {len(left)} of {len(all_units)} {labels.unit} series"
        if left:
            early = min(left, key=lambda u: passed[u][0])
            title += f"; first: {labels.unit} {early} at {fmt(times[passed[early][0]])}"
    caption = (
        f"{kind.capitalize()} regime probabilities (posterior mean of P(regime at t | data)), "
        "stacked to 1; dotted line at 50%."
    )
    return _finish(fig, title, caption, note)


# --------------------------------------------------------------------------
# 4. decoupling time posterior
# --------------------------------------------------------------------------


def decoupling_posterior(
    decoupling: Fit | DecouplingTime,
    *,
    units: Sequence[Any] | None = None,
    labels: Labels | None = None,
    seed: int | None = 0,
) -> Figure:
    """Posterior of the decoupling time, with a "not yet" bar.

    Parameters
    ----------
    decoupling : Fit or DecouplingTime
        :func:`pathlock.analysis.decoupling_time`'s result, or a fit to compute
        it from (with ``seed``).
    units : sequence, optional
    labels : Labels, optional
    seed : int, optional
        Seed of the FFBS paths behind the median and interval when given a fit.

    Returns
    -------
    Figure
        Bars: ``P(decoupling at t)``, exact from ``prob_by_time``; the narrow
        right panel of each unit holds ``P(not yet decoupled by the end)``.
        The median and highest-density interval come from ``summary``.
    """
    if _is_fit(decoupling):
        fit = decoupling
        decoupling = fit.decoupling_time(seed=seed)
        labels = labels or Labels.from_fit(fit)
    labels = labels or Labels()
    by_time = decoupling.prob_by_time.transpose(dims.UNIT, dims.TIME)
    table = decoupling.summary
    prob = float(decoupling.prob)
    times = by_time[dims.TIME].values
    fmt = time_formatter(times, labels.time)
    all_units = by_time[dims.UNIT].values.tolist()
    cdf = np.clip(np.maximum.accumulate(by_time.values.astype(float), axis=-1), 0.0, 1.0)
    pmf = np.diff(cdf, axis=-1, prepend=0.0)
    p_not_yet = 1.0 - cdf[:, -1]
    chosen, note = _select_units(all_units, units)
    n = len(chosen)
    ncols = _ncols(n)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(9.0 if ncols == 1 else 5.4 * ncols, 3.4 * nrows + 1.2))
    outer_grid = fig.add_gridspec(nrows, ncols)
    width = _half_step(times) * 1.6
    main_axes: list[Axes] = []
    for k, unit in enumerate(chosen):
        i = all_units.index(unit)
        cell = outer_grid[k // ncols, k % ncols].subgridspec(
            1, 2, width_ratios=(12, 1), wspace=0.04
        )
        ax = fig.add_subplot(cell[0], sharex=main_axes[0] if main_axes else None)
        ax_ny = fig.add_subplot(cell[1], sharey=ax)
        main_axes.append(ax)
        row = table.loc[unit]
        median, lo, hi = row["median"], row["hdi_low"], row["hdi_high"]
        if not _missing(lo):
            right = times[-1] + width if _missing(hi) else hi
            ax.axvspan(
                lo, right, color=_DECOUPLED, alpha=0.08, lw=0, label=f"{_pct(prob)} interval"
            )
        ax.bar(times, pmf[i], width=width, color=_DECOUPLED, alpha=0.85, label="P(decoupled at t)")
        if not _missing(median):
            ax.axvline(median, color="black", lw=1.5, ls="--", label="median")
        ax.set_ylabel("probability")
        _style_time_axis(ax, times, labels.time)
        ax.grid(alpha=0.25, axis="y")
        ax_ny.bar([0], [p_not_yet[i]], width=0.8, color=_TRACK, alpha=0.85)
        ax_ny.set_xticks([0], ["not\nyet"])
        ax_ny.set_xlim(-0.7, 0.7)
        ax_ny.tick_params(axis="y", labelleft=False)
        ax_ny.grid(alpha=0.25, axis="y")
        ax_ny.text(0, p_not_yet[i], _prob(p_not_yet[i]), ha="center", va="bottom", fontsize=8)
        ax.set_ylim(0, max(float(pmf[i].max()), p_not_yet[i], 1e-9) * 1.18)
        if n > 1:
            ax.set_title(
                f"{labels.unit} = {unit}: {_decoupling_phrase(row, p_not_yet[i], fmt, short=True)}",
                fontsize=10,
                loc="left",
            )
    _bottom_labels_only(main_axes)
    _legend(main_axes, inside=True)
    if len(all_units) == 1:
        row = table.loc[all_units[0]]
        title = _decoupling_phrase(row, p_not_yet[0], fmt, prob=prob, end=fmt(times[-1]))
    else:
        gone = [u for u in all_units if p_not_yet[all_units.index(u)] <= 0.5]
        title = (
            f"Feedback stopped tracking in {len(gone)} of {len(all_units)} {labels.unit} "
            f"series (P(decoupled by {fmt(times[-1])}) > 0.5)"
        )
        dated = [u for u in gone if not _missing(table.loc[u, "median"])]
        if dated:
            early = min(
                dated,
                key=lambda u: (
                    pd.Timestamp(table.loc[u, "median"])
                    if _is_datetime(times)
                    else table.loc[u, "median"]
                ),
            )
            title += f"; earliest: {labels.unit} {early} around {fmt(table.loc[early, 'median'])}"
    tracking = ", ".join(decoupling.tracking)
    caption = (
        f"Bars: posterior probability that the first step out of the {tracking} regime falls "
        f"at each time (exact, from the forward-backward marginals); right bar: probability it "
        f"had not happened by {fmt(times[-1])}. Dashed: median; shaded: {_pct(prob)} "
        "highest-density interval of the decoupling time."
    )
    return _finish(fig, title, caption, note)


def _decoupling_phrase(
    row: pd.Series,
    p_not_yet: float,
    fmt: Callable[[Any], str],
    *,
    short: bool = False,
    prob: float = 0.9,
    end: str = "the end",
) -> str:
    median, lo, hi = row["median"], row["hdi_low"], row["hdi_high"]
    hi_text = "not yet" if bool(row["hdi_includes_not_yet"]) or _missing(hi) else fmt(hi)
    if p_not_yet > 0.5 or _missing(median):
        if short:
            return f"probably still tracking, P(not yet) = {_prob(p_not_yet)}"
        return f"Feedback probably still tracks: P(not yet decoupled by {end}) = {_prob(p_not_yet)}"
    span = f"{fmt(lo)} to {hi_text}" if fmt(lo) != hi_text else f"{fmt(lo)} only"
    if short:
        return f"around {fmt(median)} ({span})"
    return (
        f"Feedback stopped tracking around {fmt(median)} ({_pct(prob)} interval {span}); "
        f"P(not yet decoupled by {end}) = {_prob(p_not_yet)}"
    )


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


# --------------------------------------------------------------------------
# 5. intervention timing curve
# --------------------------------------------------------------------------


_METRIC_NAMES = {
    "constraint_final": "{c} at the horizon",
    "constraint_cumulative": "cumulative {c}",
    "time_decoupled": "steps decoupled",
    "cost": "cost",
}


@dataclass(frozen=True)
class TimingSummary:
    """Numbers behind the timing figure for one unit (used by the report's sentences).

    Attributes
    ----------
    unit : label
    earliest, latest : label
        The earliest and latest fixed timings.
    delay : tuple of float
        Lower, median and upper quantile of ``metric(latest) - metric(earliest)``
        over the draws (paired by common random numbers).
    per_step : float
        The median delay divided by the number of steps between the two timings.
    point_of_no_return : label or None
        None where no timing of the family is too late or there is no target.
    already_passed : bool
    target : float or None
    """

    unit: Any
    earliest: Any
    latest: Any
    delay: tuple[float, float, float]
    per_step: float
    point_of_no_return: Any
    already_passed: bool
    target: float | None


def timing_summary(
    timings: TimingComparison,
    *,
    metric: str = "constraint_final",
    target: float | None = None,
    level: float = 0.5,
    prob: float = 0.9,
) -> list[TimingSummary]:
    """Summarise a timing comparison per unit: the cost of delay and the point of no return.

    Parameters
    ----------
    timings : TimingComparison
    metric : str
    target : float, optional
        Default: the comparison's ``threshold`` if it had one.
    level : float
    prob : float
        Mass of the delay's interval.

    Returns
    -------
    list of TimingSummary
        One per unit, in the comparison's order.

    Raises
    ------
    PathlockError
        An unknown metric or no fixed-timing scenarios.
    """
    fam, _, _ = _timing_family(timings, metric)
    target = _default_target(timings, target)
    pnr = (
        None
        if target is None
        else timings.point_of_no_return(
            target, level, metric=metric, scenarios=fam[dims.SCENARIO].values.tolist()
        )
    )
    taus = fam["tau"].values
    steps = int(fam["tau_index"].values[-1] - fam["tau_index"].values[0])
    q = [(1 - prob) / 2, 0.5, (1 + prob) / 2]
    values = fam[metric].astype(float)
    delay = (values.isel({dims.SCENARIO: -1}) - values.isel({dims.SCENARIO: 0})).quantile(
        q, dim=list(dims.SAMPLE_DIMS)
    )
    out = []
    for unit in fam[dims.UNIT].values.tolist():
        d = delay.sel({dims.UNIT: unit}).values
        point = None
        passed = False
        if pnr is not None:
            t = pnr.time.sel({dims.UNIT: unit}).values
            point = None if _missing(t.item() if hasattr(t, "item") else t) else t
            passed = bool(pnr.already_passed.sel({dims.UNIT: unit}))
        out.append(
            TimingSummary(
                unit=unit,
                earliest=taus[0],
                latest=taus[-1],
                delay=(float(d[0]), float(d[1]), float(d[2])),
                per_step=float(d[1]) / steps if steps > 0 else float("nan"),
                point_of_no_return=point,
                already_passed=passed,
                target=target,
            )
        )
    return out


def _default_target(timings: TimingComparison, target: float | None) -> float | None:
    if target is not None:
        return float(target)
    threshold = float(timings.outcomes.attrs.get("threshold", np.nan))
    return threshold if np.isfinite(threshold) else None


def _timing_family(
    timings: TimingComparison, metric: str
) -> tuple[xr.Dataset, list[str], list[str]]:
    """The fixed-timing scenarios sorted by time (with coord ``tau``), the baseline, the others."""
    from pathlock.interventions import Never

    if metric not in _METRIC_NAMES:
        raise PathlockError(f"metric must be one of {list(_METRIC_NAMES)}; found {metric!r}")
    ds = timings.outcomes
    fam_idx = np.flatnonzero(ds["tau_index"].values >= 0)
    if fam_idx.size == 0:
        raise PathlockError(
            "timings has no fixed-timing (At) scenarios to draw; build them with "
            "pathlock.interventions.timing_scenarios"
        )
    order = fam_idx[np.argsort(ds["tau_index"].values[fam_idx], kind="stable")]
    fam = ds.isel({dims.SCENARIO: order})
    fam = fam.assign_coords(tau=((dims.SCENARIO,), ds[dims.TIME].values[fam["tau_index"].values]))
    fam_names = [str(s) for s in fam[dims.SCENARIO].values]
    baseline = [s.name for s in timings.scenarios if isinstance(s.policy, Never)]
    others = [s.name for s in timings.scenarios if s.name not in fam_names + baseline]
    return fam, baseline, others


def timing_curve(
    timings: TimingComparison,
    *,
    metric: str = "constraint_final",
    target: float | None = None,
    level: float = 0.5,
    probs: tuple[float, float] = (0.5, 0.9),
    units: Sequence[Any] | None = None,
    labels: Labels | None = None,
) -> Figure:
    """Outcome against intervention time, with intervals, the baseline and the point of no return.

    Parameters
    ----------
    timings : TimingComparison
        :func:`pathlock.compare_timings`'s result with a family of fixed
        timings (:class:`~pathlock.interventions.At` scenarios).
    metric : str
        ``constraint_final``, ``constraint_cumulative``, ``time_decoupled`` or ``cost``.
    target : float, optional
        Level the metric should stay under, for the point of no return
        (default the comparison's ``threshold``, if it had one).
    level : float
        Probability of staying under ``target`` below which a timing is too late.
    probs : (float, float)
        Inner and outer interval masses.
    units : sequence, optional
    labels : Labels, optional

    Returns
    -------
    Figure
        Titled with the cost of waiting from the earliest to the latest timing
        and the point of no return.
    """
    labels = labels or Labels()
    fam, baseline, others = _timing_family(timings, metric)
    inner, outer = sorted(probs)
    summaries = {
        s.unit: s
        for s in timing_summary(timings, metric=metric, target=target, level=level, prob=outer)
    }
    target = _default_target(timings, target)
    ds = timings.outcomes
    taus = fam["tau"].values
    all_times = ds[dims.TIME].values
    metric_name = _METRIC_NAMES[metric].format(c=labels.constraint)
    fmt = time_formatter(all_times, labels.time)
    sd = list(dims.SAMPLE_DIMS)
    all_units = ds[dims.UNIT].values.tolist()
    chosen, note = _select_units(all_units, units)
    fig, axes = _panel_grid(len(chosen), height=3.8)
    observed = ds["observed"].values if "observed" in ds.coords else None
    for ax, unit in zip(axes, chosen, strict=True):
        values = fam[metric].sel({dims.UNIT: unit}).astype(float)
        q = _quantiles(values, (inner, outer), (dims.SCENARIO,))
        if baseline:
            base = ds[metric].sel({dims.SCENARIO: baseline[0], dims.UNIT: unit}).astype(float)
            bq = base.quantile([(1 - outer) / 2, 0.5, (1 + outer) / 2], dim=sd).values
            ax.axhspan(bq[0], bq[2], color=_GREY, alpha=0.10, lw=0)
            ax.axhline(bq[1], color=_GREY, lw=1.5, ls="--", label="no intervention (median)")
        for mass, alpha in ((outer, 0.18), (inner, 0.35)):
            ax.fill_between(
                taus,
                q.sel(quantile=(1 - mass) / 2),
                q.sel(quantile=(1 + mass) / 2),
                color=_TRACK,
                alpha=alpha,
                lw=0,
                label=f"{_pct(mass)} interval",
            )
        ax.plot(
            taus,
            q.sel(quantile=0.5),
            color=_TRACK,
            lw=2,
            marker="o",
            ms=4,
            label="acting at this time (median)",
        )
        for j, name in enumerate(others):
            sc = ds.sel({dims.SCENARIO: name, dims.UNIT: unit})
            y = float(sc[metric].astype(float).median(sd))
            tau_med = _median_label(sc["tau"].values.ravel(), all_times)
            color = _MIDDLE[j % len(_MIDDLE)]
            if tau_med is None:
                ax.axhline(y, color=color, lw=1.2, ls=":", label=f"{name} (never acted)")
            else:
                ax.plot(
                    [tau_med],
                    [y],
                    marker="D",
                    ms=7,
                    ls="none",
                    color=color,
                    label=f"{name} (at its median time)",
                )
        if target is not None:
            ax.axhline(target, color="black", lw=1, ls=":", label=f"target {_num(target)}")
        if observed is not None and not observed.all():
            ax.axvline(
                all_times[observed][-1],
                color=_GREY,
                lw=1,
                ls="-.",
                alpha=0.7,
                label="end of data",
            )
        s = summaries[unit]
        if s.point_of_no_return is not None:
            ax.axvspan(s.point_of_no_return, taus[-1], color=_DECOUPLED, alpha=0.08, lw=0)
            ax.axvline(s.point_of_no_return, color=_DECOUPLED, lw=2, label="point of no return")
        ax.set_ylabel(metric_name)
        xlabel = "intervention time"
        _style_time_axis(
            ax, all_times, xlabel if labels.time == "time" else f"{xlabel} ({labels.time})"
        )
        ax.grid(alpha=0.25)
        if len(chosen) > 1:
            ax.set_title(
                f"{labels.unit} = {unit}: {_pnr_phrase(s, fmt, short=True)}",
                fontsize=10,
                loc="left",
            )
    _bottom_labels_only(axes)
    _legend(axes, inside=False)
    if len(all_units) == 1:
        s = summaries[all_units[0]]
        title = (
            f"Waiting from {fmt(s.earliest)} to {fmt(s.latest)} changes {metric_name} by "
            f"{_num(s.delay[1])} ({_pct(outer)} interval {_num(s.delay[0])} to "
            f"{_num(s.delay[2])}); {_pnr_phrase(s, fmt)}"
        )
    else:
        too_late = [u for u in all_units if summaries[u].point_of_no_return is not None]
        mean_delay = float(np.mean([summaries[u].delay[1] for u in all_units]))
        s0 = summaries[all_units[0]]
        title = (
            f"Waiting from {fmt(s0.earliest)} to {fmt(s0.latest)} changes {metric_name} by "
            f"{_num(mean_delay)} on average over {len(all_units)} {labels.unit} series"
        )
        if target is not None:
            title += (
                f"; {len(too_late)} of {len(all_units)} pass a point of no return among "
                "these timings"
            )
    caption = (
        f"Outcome if the intervention starts at each time (median, {_pct(inner)} and "
        f"{_pct(outer)} posterior intervals; common random numbers across timings). Dashed "
        "grey: no intervention, with its interval."
    )
    if target is not None:
        caption += (
            f" Red: the point of no return, the first timing from which P({metric_name} < "
            f"{_num(target)}) stays below {_prob(level)}."
        )
    return _finish(fig, title, caption, note)


def _pnr_phrase(s: TimingSummary, fmt: Callable[[Any], str], *, short: bool = False) -> str:
    if s.target is None:
        return (
            f"{_num(s.per_step)} per step" if short else (f"{_num(s.per_step)} per step of delay")
        )
    if s.already_passed:
        return f"already too late at {fmt(s.earliest)}"
    if s.point_of_no_return is not None:
        return f"point of no return {fmt(s.point_of_no_return)}"
    return "no timing here is too late"


def _median_label(values: np.ndarray, times: np.ndarray) -> Any:
    """Median of acted time labels (None if the scenario never acted)."""
    pos = pd.Index(times).get_indexer(pd.Index(values))
    pos = pos[pos >= 0]
    if pos.size == 0:
        return None
    return times[int(np.quantile(pos, 0.5, method="inverted_cdf"))]


# --------------------------------------------------------------------------
# 6. diagnostics and model comparison
# --------------------------------------------------------------------------


def diagnostics(
    summary: Fit | pd.DataFrame,
    *,
    max_parameters: int = 30,
    rhat_max: float = 1.01,
    ess_min: float | None = None,
) -> Figure:
    """R-hat and effective sample sizes of every parameter, with the divergence count.

    Parameters
    ----------
    summary : Fit or DataFrame
        :func:`pathlock.analysis.summary`'s table (``r_hat``, ``ess_bulk``,
        ``ess_tail``; ``attrs["divergences"]`` and ``attrs["n_samples"]``), or a fit.
    max_parameters : int
        Show at most this many parameters, the worst by R-hat and ESS first.
    rhat_max : float
        R-hat reference line.
    ess_min : float, optional
        ESS reference line; default 100 per chain (``attrs["n_chains"]`` of the
        table, taken from the fit when given one), else 400.

    Returns
    -------
    Figure
    """
    if _is_fit(summary):
        n_chains = summary.idata.posterior.sizes[dims.CHAIN]
        summary = summary.summary()
        summary.attrs.setdefault("n_chains", n_chains)
    if ess_min is None:
        chains = summary.attrs.get("n_chains")
        ess_min = 100.0 * int(chains) if chains else 400.0
    table = summary.copy()
    for col in ("r_hat", "ess_bulk", "ess_tail"):
        if col in table:
            table[col] = pd.to_numeric(table[col], errors="coerce")
    n_div = int(summary.attrs.get("divergences", 0))
    n_samples = summary.attrs.get("n_samples")
    rhat = table.get("r_hat", pd.Series(np.nan, index=table.index))
    ess = table[["ess_bulk", "ess_tail"]].min(axis=1) if "ess_bulk" in table else rhat * np.nan
    worst = (
        pd.DataFrame({"r": rhat.fillna(0), "e": -ess.fillna(np.inf)})
        .sort_values(["r", "e"], ascending=False)
        .index[:max_parameters]
    )
    shown = table.loc[list(worst)].iloc[::-1]
    n = len(shown)
    fig = Figure(figsize=(9.5, max(3.0, 0.24 * n + 1.8)))
    ax_r, ax_e = fig.subplots(1, 2, sharey=True)
    y = np.arange(n)
    r = shown["r_hat"].values if "r_hat" in shown else np.full(n, np.nan)
    bad = r > rhat_max
    ax_r.scatter(r[~bad], y[~bad], color=_TRACK, s=18, zorder=3)
    ax_r.scatter(r[bad], y[bad], color=_DECOUPLED, s=24, zorder=3)
    ax_r.axvline(rhat_max, color=_DECOUPLED, ls=":", lw=1)
    ax_r.axvline(1.0, color=_GREY, lw=0.8)
    ax_r.set_yticks(y, [str(i) for i in shown.index], fontsize=8)
    ax_r.set_xlabel("R-hat (rank-normalised split)")
    ax_r.grid(alpha=0.25, axis="x")
    finite_r = r[np.isfinite(r)]
    ax_r.set_xlim(
        0.995, max(rhat_max + 0.01, float(finite_r.max()) + 0.005) if finite_r.size else 1.05
    )
    if "ess_bulk" in shown:
        ax_e.scatter(shown["ess_bulk"], y, color=_TRACK, s=18, label="bulk", zorder=3)
        ax_e.scatter(
            shown["ess_tail"], y, color=_MIDDLE[0], s=18, marker="s", label="tail", zorder=3
        )
        ax_e.axvline(ess_min, color=_DECOUPLED, ls=":", lw=1)
        ax_e.legend(fontsize=8, loc="lower right")
        top = np.nanmax(shown[["ess_bulk", "ess_tail"]].to_numpy(float), initial=ess_min)
        ax_e.set_xlim(0, 1.08 * max(top, ess_min))
    ax_e.set_xlabel("effective sample size")
    ax_e.grid(alpha=0.25, axis="x")
    max_r = float(np.nanmax(rhat.values)) if rhat.notna().any() else float("nan")
    min_ess = float(np.nanmin(ess.values)) if ess.notna().any() else float("nan")
    ok = (
        (not n_div)
        and (np.isnan(max_r) or max_r <= rhat_max)
        and (np.isnan(min_ess) or min_ess >= ess_min)
    )
    of = f" of {n_samples} draws" if n_samples else ""
    verdict = "Sampler diagnostics look fine" if ok else "Check the sampler"
    title = f"{verdict}: max R-hat {max_r:.3f}, min ESS {_num(min_ess)}, {n_div} divergences{of}"
    caption = (
        f"Each row is a parameter (worst first, {n} of {len(table)} shown). Dotted red lines: "
        f"R-hat {rhat_max} and ESS {_num(ess_min)}; points beyond them need a longer run or a "
        "reparameterisation; any divergence means the posterior may be biased."
    )
    return _finish(fig, title, caption)


def comparison(table: pd.DataFrame) -> Figure:
    """Expected log predictive density of compared models, best first.

    Parameters
    ----------
    table : DataFrame
        :func:`pathlock.analysis.compare`'s table (``elpd``, ``se``,
        ``elpd_diff``, ``dse``, ``weight``; index: model names).

    Returns
    -------
    Figure
    """
    t = table.sort_values("elpd", ascending=False)
    names = [str(i) for i in t.index]
    n = len(names)
    fig = Figure(figsize=(9.0, max(2.6, 0.5 * n + 1.8)))
    ax = fig.subplots()
    y = np.arange(n)[::-1]
    elpd = pd.to_numeric(t["elpd"]).values
    se = pd.to_numeric(t["se"]).values
    ax.errorbar(elpd, y, xerr=se, fmt="o", color=_TRACK, capsize=3, label="elpd ± se")
    if "elpd_diff" in t and "dse" in t and n > 1:
        diff = pd.to_numeric(t["elpd_diff"]).values
        dse = pd.to_numeric(t["dse"]).values
        ax.errorbar(
            elpd[0] - diff[1:],
            y[1:] - 0.18,
            xerr=dse[1:],
            fmt="^",
            color=_GREY,
            capsize=3,
            ms=5,
            label="difference to the best ± se",
        )
    ax.axvline(elpd[0], color=_GREY, lw=0.8, ls=":")
    ax.set_yticks(y, names)
    ax.set_ylim(-0.7, n - 0.3)
    method = str(t["method"].iloc[0]) if "method" in t else "elpd"
    ax.set_xlabel(f"expected log predictive density ({method}); higher is better")
    ax.grid(alpha=0.25, axis="x")
    fig.legend(loc="outside lower right", fontsize=8, frameon=False, ncols=2)
    if n > 1:
        d = float(pd.to_numeric(t["elpd_diff"]).iloc[1]) if "elpd_diff" in t else elpd[0] - elpd[1]
        ds = float(pd.to_numeric(t["dse"]).iloc[1]) if "dse" in t else float("nan")
        clear = np.isfinite(ds) and d > 2 * ds
        title = f"{names[0]} predicts best, by {_num(d)} ± {_num(ds)} over {names[1]}" + (
            "" if clear else " (within two standard errors: no clear winner)"
        )
    else:
        title = f"{names[0]}: elpd {_num(elpd[0])}"
    caption = (
        "Circles: each model's estimated elpd with its standard error; triangles: the "
        "difference to the best model with the standard error of the difference."
    )
    return _finish(fig, title, caption)
