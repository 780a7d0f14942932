"""From a DataFrame or CSV to validated, labelled (unit, time) arrays on a regular time grid.

:func:`from_dataframe` and :func:`load_csv` read long or wide data with a time
column (dates or integers) and an optional unit column, check it (missing
columns, non-numeric or infinite values, duplicate or unsorted times, short
units, all-missing series), put irregular observation times on a regular
grid (the gaps become missing values) and return a frozen
:class:`DecouplingData`.  Every error names the column and the first bad row.
Checks that need the model (count families, fill rules for exposures) live in
:func:`prepare_for_spec`, which :meth:`pathlock.spec.Spec.prepare_data` calls.
This module knows nothing of PyMC.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import xarray as xr
from numpy.typing import NDArray

from pathlock import dims
from pathlock.errors import DataError

if TYPE_CHECKING:
    from pathlock.spec import Spec

__all__ = [
    "DecouplingData",
    "MIN_STEPS",
    "from_dataframe",
    "load_csv",
    "prepare_for_spec",
]

#: Fewest observed time steps a unit may have.
MIN_STEPS = 10
#: Default separator of wide column names ``<variable>__<unit>``.
WIDE_SEP = "__"

Format = Literal["long", "wide"]
Freq = str | int


@dataclass(frozen=True, eq=False)
class DecouplingData:
    """Observed series of one or more units on a regular time grid.

    Attributes
    ----------
    units : ndarray (unit,)
        Unit labels (a single series has the label ``0``).
    times : ndarray (time,)
        Time labels on the regular grid: ``datetime64`` for dates, ``int64``
        for integer times.
    values : mapping of str to ndarray (unit, time)
        Every column as ``float64``, NaN where missing (including grid points
        with no row).  Read-only.
    freq : str or int
        The grid step: a pandas offset alias (``"MS"``, ``"7D"``) or an integer.
    time_column, unit_column : str, str or None
        The source's column names, kept for messages and round trips.
    rows : ndarray (unit, time) of int64 or None
        Source row of each cell (-1 where the grid has no row); used to name
        rows in later errors.  ``None`` when unknown (e.g. from a Dataset).
    source : str
        Where the data came from (a path), for messages.
    """

    units: NDArray[Any]
    times: NDArray[Any]
    values: Mapping[str, NDArray[np.float64]]
    freq: Freq
    time_column: str = "time"
    unit_column: str | None = None
    rows: NDArray[np.int64] | None = field(default=None, repr=False)
    source: str = ""

    def __post_init__(self) -> None:
        units = np.asarray(self.units)
        times = np.asarray(self.times)
        shape = (units.size, times.size)
        values: dict[str, NDArray[np.float64]] = {}
        for name, arr in self.values.items():
            a = np.array(arr, dtype=np.float64)
            if a.shape != shape:
                raise DataError(
                    f"column {name!r} has shape {a.shape}; expected (unit, time) = {shape}"
                )
            a.flags.writeable = False
            values[name] = a
        units.flags.writeable = False
        times.flags.writeable = False
        object.__setattr__(self, "units", units)
        object.__setattr__(self, "times", times)
        object.__setattr__(self, "values", values)
        if self.rows is not None:
            rows = np.array(self.rows, dtype=np.int64)
            rows.flags.writeable = False
            object.__setattr__(self, "rows", rows)

    # ---- shape and access -------------------------------------------------------

    @property
    def n_units(self) -> int:
        """Number of units."""
        return int(self.units.size)

    @property
    def n_steps(self) -> int:
        """Number of time steps on the grid."""
        return int(self.times.size)

    @property
    def columns(self) -> tuple[str, ...]:
        """Column names, in order."""
        return tuple(self.values)

    def __getitem__(self, column: str) -> NDArray[np.float64]:
        """Return one column as a read-only (unit, time) array."""
        try:
            return self.values[column]
        except KeyError:
            raise DataError(
                f"column {column!r} is not in the data; available columns: {list(self.values)}"
            ) from None

    def __contains__(self, column: object) -> bool:
        return column in self.values

    def array(self, columns: Sequence[str]) -> NDArray[np.float64]:
        """Stack columns into one array.

        Parameters
        ----------
        columns : sequence of str

        Returns
        -------
        ndarray (unit, time, len(columns))
            A fresh, writable copy; NaN where missing.
        """
        if not columns:
            return np.empty((self.n_units, self.n_steps, 0))
        return np.stack([self[c] for c in columns], axis=-1)

    def select(self, columns: Sequence[str]) -> DecouplingData:
        """Return a copy holding only ``columns`` (in that order)."""
        return self.replace_values({c: self[c] for c in columns})

    def replace_values(self, values: Mapping[str, NDArray[np.float64]]) -> DecouplingData:
        """Return a copy with ``values`` as its columns (same units, times and rows)."""
        return DecouplingData(
            self.units,
            self.times,
            values,
            self.freq,
            self.time_column,
            self.unit_column,
            self.rows,
            self.source,
        )

    def where(self, unit: int, step: int) -> str:
        """Describe a cell for error messages: unit label, time label and source row."""
        text = f"unit {_label(self.units[unit])}, time {_label(self.times[step])}"
        if self.rows is not None and self.rows[unit, step] >= 0:
            text += f" ({_row_text(int(self.rows[unit, step]), self.source)})"
        return text

    def __repr__(self) -> str:
        cols = ", ".join(self.values)
        return (
            f"DecouplingData({self.n_units} unit(s) x {self.n_steps} time steps, "
            f"freq {self.freq!r}, {_label(self.times[0])} .. {_label(self.times[-1])}; "
            f"columns: {cols})"
        )

    # ---- xarray -----------------------------------------------------------------

    def to_dataset(self) -> xr.Dataset:
        """Return the data as an xarray Dataset.

        Returns
        -------
        xarray.Dataset
            One variable per column with dims (``unit``, ``time``) and the
            user's labels as coords; ``attrs`` keep ``freq``, ``time_column``
            and ``unit_column`` (``""`` when none).
        """
        return xr.Dataset(
            {name: ((dims.UNIT, dims.TIME), arr.copy()) for name, arr in self.values.items()},
            coords={dims.UNIT: self.units.copy(), dims.TIME: self.times.copy()},
            attrs={
                "freq": self.freq,
                "time_column": self.time_column,
                "unit_column": self.unit_column or "",
            },
        )

    @classmethod
    def from_dataset(cls, ds: xr.Dataset) -> DecouplingData:
        """Rebuild from :meth:`to_dataset` output (e.g. the ``observed_data`` of a fit).

        Parameters
        ----------
        ds : xarray.Dataset
            Variables with dims (``unit``, ``time``); a regular time coord.

        Returns
        -------
        DecouplingData

        Raises
        ------
        DataError
            If dims are missing or a variable has other dims.
        """
        for d in (dims.UNIT, dims.TIME):
            if d not in ds.dims:
                raise DataError(
                    f"the dataset has no {d!r} dim (found {list(ds.dims)}); expected the "
                    "output of DecouplingData.to_dataset()"
                )
        values = {}
        for name, var in ds.data_vars.items():
            if set(var.dims) != {dims.UNIT, dims.TIME}:
                raise DataError(
                    f"variable {name!r} has dims {var.dims}; expected ({dims.UNIT}, {dims.TIME})"
                )
            values[str(name)] = var.transpose(dims.UNIT, dims.TIME).values
        times = ds[dims.TIME].values
        freq = ds.attrs.get("freq")
        if freq is None or freq == "":
            freq = _grid_freq(times)
        elif isinstance(freq, np.integer):
            freq = int(freq)
        return cls(
            units=ds[dims.UNIT].values,
            times=times,
            values=values,
            freq=freq,
            time_column=str(ds.attrs.get("time_column", "time")),
            unit_column=str(ds.attrs.get("unit_column", "")) or None,
        )


# --------------------------------------------------------------------------- helpers


def _label(value: Any) -> str:
    if isinstance(value, np.datetime64):
        return str(pd.Timestamp(value).isoformat()).removesuffix("T00:00:00")
    if isinstance(value, np.generic):
        value = value.item()
    return repr(value)


def _row_text(pos: int, source: str) -> str:
    # CSV: data row `pos` sits on line pos + 2 (line 1 is the header)
    if source:
        return f"line {pos + 2} of {source}"
    return f"row {pos}"


def _grid_freq(times: NDArray[Any]) -> Freq:
    """Step of an already regular grid (used when a Dataset has no ``freq`` attr)."""
    if np.issubdtype(times.dtype, np.datetime64):
        if times.size >= 3:
            inferred = pd.infer_freq(pd.DatetimeIndex(times))
            if inferred is not None:
                return inferred
        if times.size >= 2:
            return pd.tseries.frequencies.to_offset(pd.Timedelta(times[1] - times[0])).freqstr
        return "D"
    if times.size >= 2:
        return int(np.diff(times.astype(np.int64)).min())
    return 1


class _Rows:
    """Names rows of the source in messages: CSV line numbers or DataFrame positions."""

    def __init__(self, source: str, index: pd.Index | None) -> None:
        self.source = source
        default = index is None or index.equals(pd.RangeIndex(len(index)))
        self.index = None if default else index

    def __call__(self, pos: int) -> str:
        text = _row_text(int(pos), self.source)
        if self.index is not None and not self.source:
            text += f", index {self.index[int(pos)]!r}"
        return text


def _missing_column(column: str, role: str, available: Iterable[str]) -> DataError:
    return DataError(
        f"{role} column {column!r} is missing from the data; available columns: {list(available)}"
    )


def _parse_times(raw: pd.Series, column: str, rows: Callable[[int], str]) -> NDArray[Any]:
    """Time column -> ``datetime64`` or ``int64`` values; errors name the first bad row."""
    missing = raw.isna().to_numpy()
    if missing.any():
        pos = int(np.argmax(missing))
        raise DataError(f"time column {column!r} is missing at {rows(pos)}; every row needs a time")
    if pd.api.types.is_datetime64_any_dtype(raw):
        if getattr(raw.dt, "tz", None) is not None:
            raise DataError(
                f"time column {column!r} has time-zone-aware dates ({raw.dt.tz}); convert them "
                "to naive dates first, e.g. df[col].dt.tz_convert(None)"
            )
        return raw.to_numpy()
    if pd.api.types.is_bool_dtype(raw):
        raise DataError(f"time column {column!r} holds booleans; expected dates or integers")
    if pd.api.types.is_integer_dtype(raw):
        return raw.to_numpy(dtype=np.int64)
    if pd.api.types.is_float_dtype(raw):
        values = raw.to_numpy(dtype=np.float64)
        bad = values != np.round(values)
        if bad.any():
            pos = int(np.argmax(bad))
            raise DataError(
                f"time column {column!r} has the non-integer value {values[pos]:g} at "
                f"{rows(pos)}; times must be integers or dates"
            )
        return values.astype(np.int64)
    as_int = pd.to_numeric(raw, errors="coerce")
    if as_int.notna().all() and (as_int == np.round(as_int)).all():
        return as_int.to_numpy(dtype=np.float64).astype(np.int64)
    try:
        parsed = pd.to_datetime(raw, errors="coerce", format="mixed")
    except (TypeError, ValueError):
        parsed = pd.Series(pd.NaT, index=raw.index)
    bad = parsed.isna().to_numpy()
    if bad.any():
        pos = int(np.argmax(bad))
        raise DataError(
            f"time column {column!r} has {raw.iloc[pos]!r} at {rows(pos)}, which is neither "
            "a date nor an integer"
        )
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_convert(None)
    return parsed.to_numpy()


def _parse_values(raw: pd.Series, column: str, rows: Callable[[int], str]) -> NDArray[np.float64]:
    """Value column -> ``float64``; errors name non-numeric and infinite values."""
    if pd.api.types.is_bool_dtype(raw) or pd.api.types.is_numeric_dtype(raw):
        values = raw.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        coerced = pd.to_numeric(raw, errors="coerce")
        bad = (coerced.isna() & raw.notna()).to_numpy()
        if bad.any():
            pos = int(np.argmax(bad))
            raise DataError(
                f"column {column!r} has the non-numeric value {raw.iloc[pos]!r} at {rows(pos)}; "
                "values must be numbers (leave a cell empty for a missing value), or leave "
                "the column out with columns=[...]"
            )
        values = coerced.to_numpy(dtype=np.float64, na_value=np.nan)
    inf = np.isinf(values)
    if inf.any():
        pos = int(np.argmax(inf))
        raise DataError(
            f"column {column!r} has the infinite value {values[pos]} at {rows(pos)}; "
            "use an empty cell (NaN) for a missing value"
        )
    return values


def _infer_freq(times: NDArray[Any]) -> Freq:
    """Coarsest regular step on which every observed time lies."""
    uniq = np.unique(times)
    if np.issubdtype(uniq.dtype, np.integer):
        if uniq.size < 2:
            return 1
        return int(np.gcd.reduce(uniq - uniq[0]))
    index = pd.DatetimeIndex(uniq)
    if uniq.size < 2:
        return "D"
    if uniq.size >= 3:
        inferred = pd.infer_freq(index)
        if inferred is not None:
            return inferred
    # Irregular spacing: calendar steps first (months are not multiples of days),
    # coarsest first, then the largest day or sub-day step dividing every gap.
    for candidate in ("YS", "YE", "QS", "QE", "MS", "ME", "W-SUN", "W-MON"):
        grid = pd.date_range(index[0], index[-1], freq=candidate)
        if grid.size and grid[0] == index[0] and index.isin(grid).all():
            return candidate
    gaps = (uniq - uniq[0]).astype("timedelta64[ns]").astype(np.int64)
    step_ns = int(np.gcd.reduce(gaps))
    day_ns = 86_400 * 10**9
    if step_ns % day_ns == 0:
        return f"{step_ns // day_ns}D"
    return pd.tseries.frequencies.to_offset(pd.Timedelta(step_ns, unit="ns")).freqstr


def _make_grid(times: NDArray[Any], freq: Freq, column: str) -> NDArray[Any]:
    lo, hi = times.min(), times.max()
    if np.issubdtype(times.dtype, np.integer):
        if not isinstance(freq, int | np.integer) or isinstance(freq, bool) or freq < 1:
            raise DataError(
                f"freq={freq!r} does not fit the integer time column {column!r}; give a "
                "positive integer step"
            )
        return np.arange(lo, hi + 1, int(freq), dtype=np.int64)
    if isinstance(freq, int):
        raise DataError(
            f"freq={freq!r} is an integer but time column {column!r} holds dates; give a "
            "pandas offset alias such as 'D', '7D', 'MS'"
        )
    unit = np.datetime_data(times.dtype)[0]
    try:
        grid = pd.date_range(pd.Timestamp(lo), pd.Timestamp(hi), freq=freq, unit=unit)
    except ValueError as exc:
        raise DataError(f"freq={freq!r} is not a pandas frequency: {exc}") from None
    return grid.to_numpy()


def _grid_positions(times: NDArray[Any], grid: NDArray[Any]) -> NDArray[np.int64]:
    if np.issubdtype(times.dtype, np.integer):
        pos = np.searchsorted(grid, times)
        pos = np.minimum(pos, grid.size - 1)
        return np.where(grid[pos] == times, pos, -1).astype(np.int64)
    return pd.DatetimeIndex(grid).get_indexer(pd.DatetimeIndex(times)).astype(np.int64)


# --------------------------------------------------------------------------- readers


def from_dataframe(
    df: pd.DataFrame,
    *,
    time: str = "time",
    unit: str | None = None,
    format: Format = "long",
    columns: Sequence[str] | None = None,
    sort: bool = False,
    freq: Freq | None = None,
    sep: str = WIDE_SEP,
    min_steps: int = MIN_STEPS,
    source: str = "",
) -> DecouplingData:
    """Validate a DataFrame and put it on a regular (unit, time) grid.

    Parameters
    ----------
    df : pandas.DataFrame
        Long data: one row per (unit, time), a ``time`` column, an optional
        ``unit`` column and one column per series.  Wide data: a ``time``
        column and one column per (series, unit) named ``<series><sep><unit>``
        (e.g. ``debt__A``, ``debt__B``), or a two-level column MultiIndex
        ``(series, unit)``; with no separator in any column name the frame is
        one unit.
    time : str
        Time column: dates (datetime dtype or parseable strings) or integers.
    unit : str, optional
        Unit column (long format only); without it the data are one unit,
        labelled ``0``.
    format : {"long", "wide"}
    columns : sequence of str, optional
        Series to keep; default every column except ``time`` and ``unit``.
    sort : bool
        Sort each unit's rows by time; by default unsorted times are an error.
    freq : str or int, optional
        Grid step (pandas alias for dates, integer for integer times); inferred
        by default as the coarsest step on which every time lies.
    sep : str
        Separator of wide column names.
    min_steps : int
        Fewest rows a unit may have.
    source : str
        Name of the source for messages (``load_csv`` passes the path, and rows
        are then named by CSV line).

    Returns
    -------
    DecouplingData

    Raises
    ------
    DataError
        A missing column, a non-numeric or infinite value, a missing, duplicate
        or unsorted time, a unit with fewer than ``min_steps`` rows, a series
        missing for every time of a unit, or a time off the ``freq`` grid; the
        message names the column and the first bad row.

    Warns
    -----
    UserWarning
        When times inside a unit's span had no row: they are inserted as
        missing values and the message gives the inferred step.

    Examples
    --------
    >>> df = pd.DataFrame({"time": range(12), "z": np.arange(12.0), "y": 1.0})
    >>> from_dataframe(df).n_steps
    12
    """
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"expected a pandas DataFrame; found {type(df).__name__}")
    if format not in ("long", "wide"):
        raise DataError(f"format={format!r} is not allowed; allowed values: 'long', 'wide'")
    rows = _Rows(source, df.index)
    if format == "wide":
        if unit is not None:
            raise DataError(
                f"unit={unit!r} is only for long data; wide data name units in the column "
                f"names ('<series>{sep}<unit>')"
            )
        df, unit = _wide_to_long(df, time=time, sep=sep, columns=columns)
    if time not in df.columns:
        raise _missing_column(time, "time", [c for c in df.columns if c != "__row__"])
    if unit is not None and unit not in df.columns:
        raise _missing_column(unit, "unit", [c for c in df.columns if c != "__row__"])
    source_row = (
        df["__row__"].to_numpy(dtype=np.int64)
        if "__row__" in df.columns
        else np.arange(len(df), dtype=np.int64)
    )
    keep = [c for c in df.columns if c not in (time, unit, "__row__")]
    if columns is not None:
        for c in columns:
            if c not in df.columns:
                raise _missing_column(c, "data", keep)
        keep = list(dict.fromkeys(columns))
    if not keep:
        raise DataError(f"the data have no value columns besides {time!r}; nothing to model")
    if len(df) == 0:
        raise DataError("the data have no rows")

    def row_name(i: int) -> str:
        return rows(int(source_row[i]))

    times = _parse_times(df[time], time, row_name)
    values = {c: _parse_values(df[c], c, row_name) for c in keep}

    if unit is None:
        unit_labels = np.zeros(len(df), dtype=np.int64)
    else:
        ucol = df[unit]
        if ucol.isna().any():
            pos = int(np.argmax(ucol.isna().to_numpy()))
            raise DataError(f"unit column {unit!r} is missing at {row_name(pos)}")
        unit_labels = ucol.to_numpy()
    codes, uniques = pd.factorize(unit_labels, sort=False)
    units = np.asarray(uniques)

    for u in range(units.size):
        idx = np.flatnonzero(codes == u)
        t = times[idx]
        if sort:
            perm = np.argsort(t, kind="stable")
            idx, t = idx[perm], t[perm]
        steps = np.diff(t)
        zero = np.zeros((), dtype=steps.dtype)
        bad = np.flatnonzero(steps <= zero)
        if bad.size:
            i = bad[0] + 1
            where = f"time column {time!r}" + (
                f" of unit {_label(units[u])}" if unit is not None else ""
            )
            if t[i] == t[i - 1]:
                raise DataError(
                    f"{where} repeats {_label(t[i])} at {row_name(idx[i])} (first seen at "
                    f"{row_name(idx[i - 1])}); each time may appear once per unit"
                )
            raise DataError(
                f"{where} is not increasing: {_label(t[i])} at {row_name(idx[i])} comes after "
                f"{_label(t[i - 1])}; sort by time or pass sort=True"
            )
        if idx.size < min_steps:
            who = f"unit {_label(units[u])}" if unit is not None else "the series"
            raise DataError(
                f"{who} has {idx.size} time steps (first at {row_name(idx[0])}); at least "
                f"{min_steps} are needed to fit a regime model"
            )

    step = freq if freq is not None else _infer_freq(times)
    grid = _make_grid(times, step, time)
    grid_pos = _grid_positions(times, grid)
    off = np.flatnonzero(grid_pos < 0)
    if off.size:
        i = off[0]
        raise DataError(
            f"time column {time!r} has {_label(times[i])} at {row_name(i)}, which is not on "
            f"the regular grid from {_label(grid[0])} with step {step!r}; pass freq= to "
            "choose the step"
        )

    shape = (units.size, grid.size)
    out = {c: np.full(shape, np.nan) for c in keep}
    cell_rows = np.full(shape, -1, dtype=np.int64)
    for c in keep:
        out[c][codes, grid_pos] = values[c]
    cell_rows[codes, grid_pos] = source_row

    inserted = 0
    for u in range(units.size):
        present = cell_rows[u] >= 0
        span = np.flatnonzero(present)
        inserted += int((~present[span[0] : span[-1] + 1]).sum())
        for c in keep:
            if np.isnan(out[c][u]).all():
                first = row_name(int(np.flatnonzero(codes == u)[0]))
                who = f"unit {_label(units[u])}" if unit is not None else "the series"
                raise DataError(
                    f"column {c!r} is missing at every time of {who} (its rows start at "
                    f"{first}); drop the column or the unit"
                )
    if inserted:
        warnings.warn(
            f"{inserted} time step(s) with no row were inserted as missing values on the "
            f"regular grid (step {step!r}{' inferred' if freq is None else ''}, "
            f"{grid.size} steps from {_label(grid[0])} to {_label(grid[-1])}); pass freq= "
            "to choose another step",
            UserWarning,
            stacklevel=2,
        )
    return DecouplingData(
        units=units,
        times=grid,
        values=out,
        freq=step,
        time_column=time,
        unit_column=unit if format == "long" else None,
        rows=cell_rows,
        source=source,
    )


def _wide_to_long(
    df: pd.DataFrame, *, time: str, sep: str, columns: Sequence[str] | None
) -> tuple[pd.DataFrame, str | None]:
    """Reshape wide data to long, keeping each row's source position in ``__row__``."""
    unit_col = "__unit__"
    if isinstance(df.columns, pd.MultiIndex):
        if df.columns.nlevels != 2:
            raise DataError(
                f"wide data with a column MultiIndex need 2 levels (series, unit); found "
                f"{df.columns.nlevels}"
            )
        time_keys = [c for c in df.columns if c[0] == time]
        if not time_keys:
            raise _missing_column(time, "time", [c[0] for c in df.columns])
        pairs = [(str(c[0]), c[1], c) for c in df.columns if c[0] != time]
        time_values = df[time_keys[0]]
    else:
        if time not in df.columns:
            raise _missing_column(time, "time", list(df.columns))
        others = [c for c in df.columns if c != time]
        split = [str(c).rsplit(sep, 1) for c in others]
        if not any(len(s) == 2 for s in split):
            out = df.copy()
            out["__row__"] = np.arange(len(df))
            return out, None
        for c, s in zip(others, split, strict=True):
            if len(s) != 2 or not s[0] or not s[1]:
                raise DataError(
                    f"wide column {c!r} is not named '<series>{sep}<unit>' like the others; "
                    "rename it or drop it"
                )
        pairs = [(s[0], s[1], c) for s, c in zip(split, others, strict=True)]
        time_values = df[time]
    if columns is not None:
        series = {p[0] for p in pairs}
        for c in columns:
            if c not in series:
                raise _missing_column(c, "data", sorted(series))
        pairs = [p for p in pairs if p[0] in columns]
    units = list(dict.fromkeys(p[1] for p in pairs))
    pieces = []
    for u in units:
        sub = pd.DataFrame({time: time_values.to_numpy()})
        for var, unit_label, col in pairs:
            if unit_label == u:
                sub[var] = df[col].to_numpy()
        sub[unit_col] = u
        sub["__row__"] = np.arange(len(df))
        pieces.append(sub)
    long = pd.concat(pieces, ignore_index=True)
    series_names = list(dict.fromkeys(p[0] for p in pairs))
    missing = [(v, u) for u in units for v in series_names if (v, u) not in {p[:2] for p in pairs}]
    if missing:
        v, u = missing[0]
        raise DataError(
            f"wide data have no column for series {v!r} of unit {u!r}; every series needs one "
            f"column per unit ('{v}{sep}{u}')"
        )
    return long[[time, unit_col, *series_names, "__row__"]], unit_col


def load_csv(
    path: str | Path,
    *,
    time: str = "time",
    unit: str | None = None,
    format: Format = "long",
    columns: Sequence[str] | None = None,
    sort: bool = False,
    freq: Freq | None = None,
    sep: str = WIDE_SEP,
    min_steps: int = MIN_STEPS,
    **read_csv_kwargs: Any,
) -> DecouplingData:
    """Read a CSV file and validate it with :func:`from_dataframe`.

    Parameters
    ----------
    path : str or Path
    time, unit, format, columns, sort, freq, sep, min_steps
        As for :func:`from_dataframe`.
    **read_csv_kwargs
        Passed to :func:`pandas.read_csv` (e.g. ``sep=";"`` is ``delimiter=";"`` here).

    Returns
    -------
    DecouplingData
        Errors name rows by their line in the file.

    Raises
    ------
    DataError
        The file cannot be read, or any check of :func:`from_dataframe` fails.
    """
    path = Path(path)
    try:
        df = pd.read_csv(path, **read_csv_kwargs)
    except FileNotFoundError:
        raise DataError(f"data file {str(path)!r} does not exist") from None
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {str(path)!r} as CSV: {exc}") from None
    return from_dataframe(
        df,
        time=time,
        unit=unit,
        format=format,
        columns=columns,
        sort=sort,
        freq=freq,
        sep=sep,
        min_steps=min_steps,
        source=str(path),
    )


# --------------------------------------------------------------------------- spec checks


def prepare_for_spec(spec: Spec, data: Any) -> DecouplingData:
    """Read and validate data for a decoupling :class:`~pathlock.spec.Spec`.

    Parameters
    ----------
    spec : Spec
    data : DecouplingData, pandas.DataFrame, xarray.Dataset, str or Path
        DataFrames and CSV paths are read with the spec's ``[data]`` mapping
        (time and unit columns, format, freq, sort).

    Returns
    -------
    DecouplingData
        Only the spec's columns (indicators, feedback, exposures, covariates),
        with exposures and covariates filled by ``spec.data.fill``.

    Raises
    ------
    DataError
        A column the spec needs is missing; a count series has a negative or
        fractional value; an exposure or covariate is missing with
        ``fill = "error"`` (or has no value to carry with ``"ffill"``); a series
        is missing at every time of a unit.
    """
    roles = _roles(spec)
    opts = spec.data
    if isinstance(data, DecouplingData):
        obj = data
    elif isinstance(data, xr.Dataset):
        obj = DecouplingData.from_dataset(data)
    elif isinstance(data, pd.DataFrame | str | Path):
        if isinstance(data, pd.DataFrame) and opts.format == "long":
            for col, role in roles.items():
                if col not in data.columns:
                    raise _missing_column(col, role, list(data.columns))
        kwargs: dict[str, Any] = {
            "time": opts.time,
            "unit": opts.unit,
            "format": opts.format,
            "columns": list(roles),
            "sort": opts.sort,
            "freq": opts.freq,
        }
        if isinstance(data, pd.DataFrame):
            obj = from_dataframe(data, **kwargs)
        else:
            obj = load_csv(data, **kwargs)
    else:
        raise DataError(
            "data must be a DecouplingData, a pandas DataFrame, an xarray Dataset or a CSV "
            f"path; found {type(data).__name__}"
        )
    for col, role in roles.items():
        if col not in obj:
            raise _missing_column(col, role, obj.columns)
    values = {c: np.array(obj[c]) for c in roles}

    for col, role in spec.count_columns.items():
        a = values[col]
        bad = ~np.isnan(a) & ((a < 0) | (a != np.round(a)))
        if bad.any():
            u, t = np.argwhere(bad)[0]
            raise DataError(
                f"column {col!r} ({role}) has {a[u, t]:g} at {obj.where(u, t)}; counts must "
                "be non-negative integers (use a normal or student_t family for other values)"
            )

    driving = [*spec.constraint.exposures, *spec.regimes.covariates]
    for col in dict.fromkeys(driving):
        values[col] = _fill(values[col], col, roles[col], opts.fill, obj)

    held = spec.regimes.known_tracking
    if held and held >= obj.n_steps:
        raise DataError(
            f"regimes.known_tracking = {held} holds every unit in the tracking regime for the "
            f"first {held} time steps, but the data have {obj.n_steps}; a move needs at "
            "least one step after them"
        )

    for col, role in roles.items():
        empty = np.isnan(values[col]).all(axis=1)
        if empty.any():
            u = int(np.argmax(empty))
            raise DataError(
                f"column {col!r} ({role}) is missing at every time of unit "
                f"{_label(obj.units[u])}; drop the unit or the series"
            )
    return obj.replace_values(values)


def _roles(spec: Spec) -> dict[str, str]:
    roles: dict[str, str] = {}
    for s in spec.indicators:
        roles[s.column] = f"indicator {s.name!r}"
    for s in spec.feedback:
        roles[s.column] = f"feedback signal {s.name!r}"
    for c in spec.constraint.exposures:
        roles.setdefault(c, "exposure")
    for c in spec.regimes.covariates:
        roles.setdefault(c, "transition covariate")
    return roles


def _fill(
    a: NDArray[np.float64], col: str, role: str, rule: str, obj: DecouplingData
) -> NDArray[np.float64]:
    """Apply the spec's fill rule to an exposure or covariate (unit, time)."""
    missing = np.isnan(a)
    if not missing.any():
        return a
    if rule == "error":
        u, t = np.argwhere(missing)[0]
        raise DataError(
            f"{role} column {col!r} is missing at {obj.where(u, t)} ({int(missing.sum())} "
            "missing cell(s), counting grid steps with no row); exposures drive the "
            'constraint at every step, so fill them, or set fill = "ffill" or "zero" in '
            "the spec's [data] table"
        )
    if rule == "zero":
        return np.where(missing, 0.0, a)
    filled = pd.DataFrame(a.T).ffill().bfill().to_numpy().T
    if np.isnan(filled).any():
        u = int(np.argmax(np.isnan(filled).all(axis=1)))
        raise DataError(
            f"{role} column {col!r} has no value at all for unit {_label(obj.units[u])}; "
            "nothing to carry forward"
        )
    return filled
