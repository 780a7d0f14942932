"""Data loading: long and wide frames, CSV, the regular grid, and every error path."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from pathlock import dims
from pathlock.data import DecouplingData, from_dataframe, load_csv
from pathlock.errors import DataError
from pathlock.spec import Spec

ROOT = Path(__file__).resolve().parents[1]
T = 12


def _long(n_units: int = 1, n_steps: int = T, rng: np.random.Generator | None = None):
    rng = rng or np.random.default_rng(0)
    frames = []
    for u in range(n_units):
        frames.append(
            pd.DataFrame(
                {
                    "unit": f"u{u}",
                    "time": np.arange(n_steps),
                    "indicator": rng.normal(size=n_steps).cumsum(),
                    "feedback": rng.normal(size=n_steps),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def _raises(match: str):
    return pytest.raises(DataError, match=re.escape(match))


# ---------------------------------------------------------------------- happy paths


def test_single_series_integer_times(rng: np.random.Generator) -> None:
    df = _long(rng=rng).drop(columns="unit")
    data = from_dataframe(df)
    assert data.n_units == 1 and data.n_steps == T
    assert data.times.dtype == np.int64 and data.freq == 1
    np.testing.assert_array_equal(data["indicator"][0], df["indicator"].to_numpy())
    assert data.columns == ("indicator", "feedback")
    with pytest.raises(ValueError):
        data["indicator"][0, 0] = 1.0  # read-only


def test_long_panel_keeps_labels_and_unit_order(rng: np.random.Generator) -> None:
    df = _long(3, rng=rng).iloc[::-1].sort_values("time", kind="stable")  # units interleaved
    data = from_dataframe(df, unit="unit")
    assert list(data.units) == ["u2", "u1", "u0"]
    expected = df[df.unit == "u0"].sort_values("time")["feedback"].to_numpy()
    np.testing.assert_array_equal(data["feedback"][2], expected)


def test_dates_stay_datetime_and_gaps_become_missing_rows() -> None:
    dates = pd.date_range("2020-01-01", periods=T + 2, freq="MS").delete([3, 7])
    df = pd.DataFrame({"date": dates, "z": np.arange(T, dtype=float)})
    with pytest.warns(UserWarning, match=r"2 time step\(s\) with no row.*'MS' inferred"):
        data = from_dataframe(df, time="date")
    assert np.issubdtype(data.times.dtype, np.datetime64)
    assert data.n_steps == T + 2 and data.freq == "MS"
    assert np.isnan(data["z"][0, [3, 7]]).all()
    assert data["z"][0, 8] == 6.0
    assert data.rows is not None and data.rows[0, 3] == -1 and data.rows[0, 8] == 6


@pytest.mark.parametrize(
    ("freq", "drop", "expected"),
    [
        ("7D", [4], "7D"),
        ("W-MON", [4], "W-MON"),
        ("D", [2, 5], "D"),
        ("ME", [2], "ME"),
        ("QS", [1], "QS"),
        ("2D", [3], "2D"),
    ],
)
def test_frequency_inference_from_dates(freq: str, drop: list[int], expected: str) -> None:
    dates = pd.date_range("2020-01-06", periods=T + len(drop), freq=freq).delete(drop)
    df = pd.DataFrame({"time": dates.strftime("%Y-%m-%d"), "z": 1.0})  # strings are parsed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        data = from_dataframe(df)
    assert data.n_steps == T + len(drop)
    grid = pd.date_range(dates[0], periods=data.n_steps, freq=expected)
    np.testing.assert_array_equal(pd.DatetimeIndex(data.times), grid)


def test_integer_step_is_the_common_divisor() -> None:
    df = pd.DataFrame({"time": [0, 3, 6, 9, 15, 18, 21, 24, 27, 30, 33], "z": 1.0})
    with pytest.warns(UserWarning, match="1 time step"):
        data = from_dataframe(df)
    assert data.freq == 3 and data.n_steps == 12


def test_explicit_freq_and_off_grid_time() -> None:
    df = pd.DataFrame({"time": np.arange(0, 2 * T, 2), "z": 1.0})
    assert from_dataframe(df, freq=2).freq == 2
    with pytest.warns(UserWarning, match="inserted"):
        assert from_dataframe(df, freq=1).n_steps == 2 * T - 1
    with _raises("time column 'time' has 2 at row 1, which is not on the regular grid"):
        from_dataframe(df, freq=4)


def test_sort_option(rng: np.random.Generator) -> None:
    df = _long(rng=rng).drop(columns="unit").sample(frac=1.0, random_state=1)
    with _raises("sort by time or pass sort=True"):
        from_dataframe(df)
    data = from_dataframe(df, sort=True)
    np.testing.assert_array_equal(
        data["indicator"][0], df.sort_values("time")["indicator"].to_numpy()
    )


def test_wide_double_underscore_convention(rng: np.random.Generator) -> None:
    long = _long(2, rng=rng)
    wide = long.pivot(index="time", columns="unit", values=["indicator", "feedback"])
    wide.columns = [f"{var}__{unit}" for var, unit in wide.columns]
    wide = wide.reset_index()
    data = from_dataframe(wide, format="wide")
    ref = from_dataframe(long, unit="unit")
    assert list(data.units) == ["u0", "u1"]
    for col in ("indicator", "feedback"):
        np.testing.assert_array_equal(data[col], ref[col])


def test_wide_multiindex_columns(rng: np.random.Generator) -> None:
    long = _long(2, rng=rng)
    wide = long.pivot(index="time", columns="unit", values=["indicator", "feedback"])
    wide[("time", "")] = wide.index.to_numpy()
    data = from_dataframe(wide.reset_index(drop=True), format="wide")
    np.testing.assert_array_equal(data["feedback"], from_dataframe(long, unit="unit")["feedback"])


def test_wide_without_separator_is_one_unit(rng: np.random.Generator) -> None:
    df = _long(rng=rng).drop(columns="unit")
    assert from_dataframe(df, format="wide").n_units == 1


def test_dataset_round_trip_keeps_labels() -> None:
    dates = pd.date_range("2021-01-04", periods=T, freq="W-MON")
    df = pd.DataFrame({"date": np.tile(dates, 2), "c": np.repeat(["x", "y"], T), "z": 1.0})
    data = from_dataframe(df, time="date", unit="c")
    ds = data.to_dataset()
    assert ds["z"].dims == (dims.UNIT, dims.TIME)
    assert list(ds[dims.UNIT].values) == ["x", "y"]
    assert np.issubdtype(ds[dims.TIME].dtype, np.datetime64)
    back = DecouplingData.from_dataset(ds)
    assert back.freq == data.freq and back.unit_column == "c" and back.time_column == "date"
    np.testing.assert_array_equal(back.times, data.times)
    xr.testing.assert_identical(back.to_dataset(), ds)
    spec = Spec.from_toml(ROOT / "models" / "decoupling.toml")
    assert spec.data_from_dataset(ds).columns == ("z",)


def test_dataset_round_trip_through_netcdf(tmp_path: Path) -> None:
    df = pd.DataFrame({"time": np.arange(T) * 5, "z": np.arange(T, dtype=float)})
    ds = from_dataframe(df).to_dataset()
    ds.to_netcdf(tmp_path / "d.nc", engine="h5netcdf")
    back = DecouplingData.from_dataset(xr.load_dataset(tmp_path / "d.nc", engine="h5netcdf"))
    assert back.freq == 5
    np.testing.assert_array_equal(back["z"], ds["z"].values)


def test_load_csv_matches_from_dataframe(tmp_path: Path, rng: np.random.Generator) -> None:
    df = _long(2, rng=rng)
    df.to_csv(tmp_path / "d.csv", index=False)
    data = load_csv(tmp_path / "d.csv", unit="unit")
    np.testing.assert_allclose(data["indicator"], from_dataframe(df, unit="unit")["indicator"])


def test_missing_values_are_kept_as_nan(rng: np.random.Generator) -> None:
    df = _long(rng=rng).drop(columns="unit")
    df.loc[4, "feedback"] = np.nan
    assert np.isnan(from_dataframe(df)["feedback"][0, 4])


# ---------------------------------------------------------------------- error paths


def test_missing_columns_are_named(rng: np.random.Generator) -> None:
    df = _long(rng=rng)
    with _raises("time column 'date' is missing from the data; available columns"):
        from_dataframe(df, time="date")
    with _raises("unit column 'country' is missing"):
        from_dataframe(df, unit="country")
    with _raises("data column 'arrears' is missing"):
        from_dataframe(df, unit="unit", columns=["arrears"])


def test_non_numeric_value_names_column_and_row(rng: np.random.Generator) -> None:
    df = _long(rng=rng).drop(columns="unit").astype({"feedback": object})
    df.loc[5, "feedback"] = "n/a?"
    with _raises("column 'feedback' has the non-numeric value 'n/a?' at row 5"):
        from_dataframe(df)


def test_csv_errors_name_the_line(tmp_path: Path, rng: np.random.Generator) -> None:
    df = _long(rng=rng).drop(columns="unit").astype({"feedback": object})
    df.loc[5, "feedback"] = "oops"
    df.to_csv(tmp_path / "d.csv", index=False)
    with _raises(f"'oops' at line 7 of {tmp_path / 'd.csv'}"):
        load_csv(tmp_path / "d.csv")
    with _raises("does not exist"):
        load_csv(tmp_path / "nope.csv")


def test_dataframe_index_label_is_reported(rng: np.random.Generator) -> None:
    df = _long(rng=rng).drop(columns="unit")
    df.index = df.index + 100
    df.loc[103, "indicator"] = np.inf
    with _raises("column 'indicator' has the infinite value inf at row 3, index 103"):
        from_dataframe(df)


def test_duplicate_times_name_both_rows(rng: np.random.Generator) -> None:
    df = _long(2, rng=rng)
    df.loc[T + 4, "time"] = 3
    with _raises("time column 'time' of unit 'u1' repeats 3 at row 16 (first seen at row 15)"):
        from_dataframe(df, unit="unit")
    with _raises("repeats 3"):
        from_dataframe(df, unit="unit", sort=True)


def test_unsorted_times_name_first_bad_row(rng: np.random.Generator) -> None:
    df = _long(rng=rng).drop(columns="unit")
    df.loc[[6, 7], "time"] = [7, 6]
    with _raises("6 at row 7 comes after 7; sort by time or pass sort=True"):
        from_dataframe(df)


def test_bad_times(rng: np.random.Generator) -> None:
    df = _long(rng=rng).drop(columns="unit").astype({"time": object})
    df.loc[2, "time"] = "last spring"
    with _raises("time column 'time' has 'last spring' at row 2, which is neither a date"):
        from_dataframe(df)
    df.loc[2, "time"] = None
    with _raises("time column 'time' is missing at row 2"):
        from_dataframe(df)
    df = _long(rng=rng).drop(columns="unit").astype({"time": float})
    df.loc[3, "time"] = 3.5
    with _raises("non-integer value 3.5 at row 3"):
        from_dataframe(df)


def test_short_unit(rng: np.random.Generator) -> None:
    df = pd.concat([_long(1, rng=rng), _long(1, n_steps=7, rng=rng).assign(unit="short")])
    with _raises("unit 'short' has 7 time steps (first at row 12); at least 10 are needed"):
        from_dataframe(df.reset_index(drop=True), unit="unit")


def test_all_missing_series(rng: np.random.Generator) -> None:
    df = _long(2, rng=rng)
    df.loc[df.unit == "u1", "feedback"] = np.nan
    with _raises(
        "column 'feedback' is missing at every time of unit 'u1' (its rows start at row 12)"
    ):
        from_dataframe(df, unit="unit")


def test_wide_errors() -> None:
    df = pd.DataFrame({"time": range(T), "z__A": 1.0, "z__B": 1.0, "y__A": 1.0, "stray": 1.0})
    with _raises("wide column 'stray' is not named '<series>__<unit>'"):
        from_dataframe(df, format="wide")
    with _raises("no column for series 'y' of unit 'B'"):
        from_dataframe(df.drop(columns="stray"), format="wide")
    with _raises("unit='u' is only for long data"):
        from_dataframe(df, format="wide", unit="u")


# ---------------------------------------------------------------------- spec-aware checks


PANEL = ROOT / "models" / "panel.toml"
LOCKIN = ROOT / "models" / "lockin3.toml"


def _panel_frame(rng: np.random.Generator) -> pd.DataFrame:
    dates = pd.date_range("2019-01-01", periods=T, freq="MS")
    frames = []
    for u in ("north", "south"):
        frames.append(
            pd.DataFrame(
                {
                    "unit": u,
                    "date": dates,
                    "rent_burden": rng.normal(size=T),
                    "job_loss": rng.normal(size=T),
                    "media_share": rng.uniform(size=T),
                    "arrears": rng.normal(size=T).cumsum(),
                    "evictions": rng.poisson(3.0, size=T),
                    "satisfaction": rng.normal(size=T),
                    "unused": "text",
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def test_prepare_data_selects_the_spec_columns(rng: np.random.Generator) -> None:
    spec = Spec.from_toml(PANEL)
    data = spec.prepare_data(_panel_frame(rng))
    assert data.columns == spec.columns
    assert list(data.units) == ["north", "south"]
    assert spec.prepare_data(data).columns == spec.columns  # idempotent
    assert spec.prepare_data(data.to_dataset()).columns == spec.columns


def test_prepare_data_from_csv(tmp_path: Path, rng: np.random.Generator) -> None:
    spec = Spec.from_toml(PANEL)
    _panel_frame(rng).to_csv(tmp_path / "panel.csv", index=False)
    data = spec.prepare_data(tmp_path / "panel.csv")
    assert np.issubdtype(data.times.dtype, np.datetime64) and data.freq == "MS"


def test_prepare_data_names_the_role_of_a_missing_column(rng: np.random.Generator) -> None:
    spec = Spec.from_toml(PANEL)
    with _raises("exposure column 'job_loss' is missing from the data"):
        spec.prepare_data(_panel_frame(rng).drop(columns="job_loss"))
    with _raises("indicator 'evictions' column 'evictions' is missing"):
        spec.prepare_data(
            from_dataframe(
                _panel_frame(rng).drop(columns=["evictions", "unused"]), time="date", unit="unit"
            )
        )


@pytest.mark.parametrize(("value", "shown"), [(-1, "-1"), (2.5, "2.5")])
def test_counts_must_be_non_negative_integers(
    rng: np.random.Generator, value: float, shown: str
) -> None:
    spec = Spec.from_toml(PANEL)
    df = _panel_frame(rng).astype({"evictions": float})
    df.loc[T + 2, "evictions"] = value
    with _raises(
        f"column 'evictions' (negative_binomial indicator 'evictions') has {shown} at unit "
        "'south', time 2019-03-01 (row 14); counts must be non-negative integers"
    ):
        spec.prepare_data(df)


def test_exposure_fill_rules(rng: np.random.Generator) -> None:
    df = _panel_frame(rng)
    df.loc[[0, 5], "rent_burden"] = np.nan
    ffill = Spec.from_toml(PANEL)
    data = ffill.prepare_data(df)
    burden = df["rent_burden"].to_numpy()
    assert data["rent_burden"][0, 0] == burden[1]  # a leading gap takes the first value
    assert data["rent_burden"][0, 5] == burden[4]
    assert not np.isnan(data["rent_burden"]).any()

    zero = Spec.from_dict({**ffill.to_dict(), "data": {**ffill.to_dict()["data"], "fill": "zero"}})
    assert zero.prepare_data(df)["rent_burden"][0, 5] == 0.0

    strict = Spec.from_dict(
        {**ffill.to_dict(), "data": {**ffill.to_dict()["data"], "fill": "error"}}
    )
    with _raises(
        "exposure column 'rent_burden' is missing at unit 'north', time 2019-01-01 (row 0)"
    ):
        strict.prepare_data(df)


def test_observations_may_be_missing_but_not_all(rng: np.random.Generator) -> None:
    spec = Spec.from_toml(LOCKIN)
    df = pd.DataFrame(
        {
            "time": np.arange(T),
            "survey": rng.normal(size=T),
            "evictions": rng.poisson(2.0, size=T).astype(float),
            "approval": rng.normal(size=T),
        }
    )
    df.loc[3, "survey"] = np.nan
    assert np.isnan(spec.prepare_data(df)["survey"][0, 3])
    df["approval"] = np.nan
    with _raises("column 'approval' is missing at every time of the series"):
        spec.prepare_data(df)


def test_prepare_data_rejects_other_inputs() -> None:
    spec = Spec.from_toml(LOCKIN)
    with _raises("data must be a DecouplingData, a pandas DataFrame"):
        spec.prepare_data([1, 2, 3])
