"""Figures and the HTML report: valid images, findings in the titles, embedded figures.

The figure tests draw from inputs assembled by hand (known numbers, no
sampling), so the findings their titles state can be checked exactly.  The
report tests use two tiny real fits (module-scoped, marked slow): the
canonical one-unit model with integer times and the two-unit panel model
with monthly dates.
"""

from __future__ import annotations

import base64
import html
import re
import warnings
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from matplotlib.figure import Figure
from PIL import Image

from pathlock import dims, plots
from pathlock.analysis import DecouplingTime
from pathlock.errors import PathlockError
from pathlock.interventions import (
    At,
    FeedbackRule,
    ReduceExposure,
    Scenario,
    TimingComparison,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MODELS = Path(__file__).resolve().parents[1] / "models"
N_STEPS = 60
LABELS = plots.Labels(time="month", unit="country", constraint="debt")


def assert_valid_png(path: Path) -> None:
    """The file starts with the PNG signature and both PIL and matplotlib decode it."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    with Image.open(path) as img:
        img.verify()
    pixels = mpimg.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    # A blank canvas would have one colour only.
    assert np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0).shape[0] > 10


def headline(fig: Figure) -> str:
    """The figure's title with the hand-wrapping undone."""
    return fig._suptitle.get_text().replace("\n", " ")


def caption(fig: Figure) -> str:
    return fig._supxlabel.get_text().replace("\n", " ")


# --------------------------------------------------------------------------
# hand-made inputs with known findings
# --------------------------------------------------------------------------


def make_inputs(units: tuple[str, ...], *, dates: bool = True, seed: int = 0) -> dict:
    """Inputs of every figure; unit ``i`` decouples at step ``30 + 3 i`` (50% crossing)."""
    rng = np.random.default_rng(seed)
    n_units, n_chains, n_draws = len(units), 2, 50
    times = (
        pd.date_range("2018-01-01", periods=N_STEPS, freq="MS").values
        if dates
        else np.arange(N_STEPS)
    )
    missing = np.datetime64("NaT", "ns") if dates else np.nan
    ext = np.concatenate([times, [missing]]) if dates else np.append(times.astype(float), np.nan)
    ut = {dims.UNIT: list(units), dims.TIME: times}
    sample = {dims.CHAIN: np.arange(n_chains), dims.DRAW: np.arange(n_draws)}

    inc = np.exp(-2 + 0.3 * rng.standard_normal((n_chains, n_draws, n_units, N_STEPS)))
    c = np.cumsum(inc, axis=-1)
    constraint = xr.DataArray(
        c, dims=(*dims.SAMPLE_DIMS, dims.UNIT, dims.TIME), coords={**sample, **ut}
    )
    truth = c.mean((0, 1))
    indicators = xr.DataArray(
        (truth + rng.normal(0, 0.3, truth.shape))[..., None],
        dims=(dims.UNIT, dims.TIME, dims.INDICATOR),
        coords={**ut, dims.INDICATOR: ["arrears"]},
    )

    tau = 30 + 3 * np.arange(n_units)
    p_dec = 1 / (1 + np.exp(-(np.arange(N_STEPS)[None] - tau[:, None]) / 2.5))
    probs = xr.DataArray(
        np.stack([1 - p_dec, p_dec], -1),
        dims=(dims.UNIT, dims.TIME, dims.REGIME),
        coords={**ut, dims.REGIME: ["tracking", "decoupled"]},
        attrs={"kind": "smoothed"},
    )

    if_tracking = 0.5 + truth
    expected = (1 - p_dec) * if_tracking + p_dec * (0.5 + 0.2 * truth)
    hidden = {}
    for key, v in {
        "if_tracking": if_tracking,
        "expected": expected,
        "gap": if_tracking - expected,
    }.items():
        for suffix, shift in (("", 0.0), ("_low", -0.2), ("_high", 0.2)):
            hidden[key + suffix] = ((dims.UNIT, dims.TIME, dims.SIGNAL), (v + shift)[..., None])
    hidden = xr.Dataset(hidden, coords={**ut, dims.SIGNAL: ["satisfaction"]}, attrs={"prob": 0.9})
    observed = xr.DataArray(
        (expected + rng.normal(0, 0.25, expected.shape))[..., None],
        dims=(dims.UNIT, dims.TIME, dims.SIGNAL),
        coords={**ut, dims.SIGNAL: ["satisfaction"]},
    )

    cdf = 0.97 * p_dec
    idx = np.empty((n_chains, n_draws, 1, n_units), dtype=np.int64)
    for u in range(n_units):
        pmf = np.diff(np.concatenate([[0.0], cdf[u], [1.0]]))
        idx[..., u] = rng.choice(N_STEPS + 1, size=(n_chains, n_draws, 1), p=pmf)
    flat = idx.reshape(-1, n_units)
    table = pd.DataFrame(
        {
            "median": ext[tau],
            "hdi_low": ext[tau - 6],
            "hdi_high": ext[tau + 6],
            "hdi_includes_not_yet": False,
            "p_not_yet": 1 - cdf[:, -1],
            "p_decoupled": cdf[:, -1],
        },
        index=pd.Index(list(units), name=dims.UNIT),
    )
    sdims = (*dims.SAMPLE_DIMS, dims.PATH, dims.UNIT)
    scoords = {**sample, dims.PATH: [0], dims.UNIT: list(units)}
    decoupling = DecouplingTime(
        samples=xr.DataArray(ext[idx], dims=sdims, coords=scoords),
        not_yet=xr.DataArray(idx == N_STEPS, dims=sdims, coords=scoords),
        index=xr.DataArray(idx, dims=sdims, coords=scoords),
        prob_by_time=xr.DataArray(cdf, dims=(dims.UNIT, dims.TIME), coords=ut),
        summary=table,
        prob=0.9,
        tracking=("tracking",),
    )
    assert flat.shape[0] == n_chains * n_draws
    return {
        "constraint": constraint,
        "indicators": indicators,
        "probs": probs,
        "hidden": hidden,
        "observed": observed,
        "decoupling": decoupling,
        "timings": make_timings(units, dates=dates, rng=rng),
        "summary": make_summary(rng),
        "comparison": make_comparison(),
    }


#: Fixed timings of the hand-made comparison (positions on the time grid).
TAUS = [10, 20, 30, 40, 50]


def make_timings(
    units: tuple[str, ...], *, dates: bool, rng: np.random.Generator
) -> TimingComparison:
    """Acting at step ``k`` ends at ``k / 10`` exactly in every draw; never acting at 8."""
    horizon = 12
    n_units, n_chains, n_draws = len(units), 2, 50
    times = (
        pd.date_range("2018-01-01", periods=N_STEPS + horizon, freq="MS").values
        if dates
        else np.arange(N_STEPS + horizon)
    )
    scen = [
        Scenario("never"),
        *(Scenario(f"at {k}", (ReduceExposure(0.5),), At(times[k])) for k in TAUS),
        Scenario("rule", (ReduceExposure(0.5),), FeedbackRule("satisfaction", 3.0)),
    ]
    n = len(scen)
    shape = (n, n_chains, n_draws, n_units)
    final = np.empty(shape)
    final[0] = 8.0
    for j, k in enumerate(TAUS):
        final[j + 1] = k / 10
    final[-1] = 5.5
    tau = np.empty(shape, dtype=times.dtype if dates else float)
    tau[0] = np.datetime64("NaT", "ns") if dates else np.nan
    for j, k in enumerate(TAUS):
        tau[j + 1] = times[k]
    tau[-1] = times[rng.integers(52, 58, size=shape[1:])]
    sample = (dims.SCENARIO, *dims.SAMPLE_DIMS, dims.UNIT)
    out = xr.Dataset(
        {
            "constraint_final": (sample, final),
            "tau": (sample, tau),
            "acted": (sample, np.ones(shape, bool)),
        },
        coords={
            dims.SCENARIO: [s.name for s in scen],
            dims.CHAIN: np.arange(n_chains),
            dims.DRAW: np.arange(n_draws),
            dims.UNIT: list(units),
            dims.TIME: times,
            "tau_index": ((dims.SCENARIO,), np.array([-1, *TAUS, -1])),
            "observed": ((dims.TIME,), np.arange(N_STEPS + horizon) < N_STEPS),
        },
        attrs={"threshold": 3.5},
    )
    return TimingComparison(outcomes=out, scenarios=tuple(scen))


def make_summary(rng: np.random.Generator, r_hat: float = 1.002) -> pd.DataFrame:
    names = ["constraint_mu", "feedback_b[satisfaction]", "feedback_w[decoupled]"]
    table = pd.DataFrame(
        {
            "mean": rng.normal(size=3),
            "sd": [0.1, 0.2, 0.05],
            "ess_bulk": [850.0, 1200.0, 640.0],
            "ess_tail": [900.0, 1100.0, 700.0],
            "r_hat": [1.001, r_hat, 1.0],
        },
        index=names,
    )
    table.attrs.update(divergences=0, n_samples=4000, n_chains=4)
    return table


def make_comparison() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "rank": [0, 1],
            "elpd": [-120.3, -131.9],
            "se": [8.1, 8.4],
            "elpd_diff": [0.0, 11.6],
            "dse": [0.0, 3.9],
            "weight": [0.93, 0.07],
            "method": "psis-loo",
        },
        index=["decoupling", "reversible"],
    )


def draw_all(inputs: dict, labels: plots.Labels = LABELS, **kwargs) -> dict[str, Figure]:
    return {
        "constraint": plots.constraint_fan(
            inputs["constraint"], inputs["indicators"], labels=labels, **kwargs
        ),
        "feedback": plots.feedback_gap(
            inputs["hidden"], inputs["observed"], labels=labels, **kwargs
        ),
        "regimes": plots.regime_ribbon(inputs["probs"], labels=labels, **kwargs),
        "decoupling": plots.decoupling_posterior(inputs["decoupling"], labels=labels, **kwargs),
        "timing": plots.timing_curve(inputs["timings"], labels=labels, **kwargs),
        "diagnostics": plots.diagnostics(inputs["summary"]),
        "comparison": plots.comparison(inputs["comparison"]),
    }


# --------------------------------------------------------------------------
# figures from hand-made inputs
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("units", "dates"),
    [(("A",), True), (("A", "B"), False)],
    ids=["one-unit-dates", "two-units-numeric"],
)
def test_every_figure_is_a_valid_png(tmp_path: Path, units: tuple[str, ...], dates: bool) -> None:
    figures = draw_all(make_inputs(units, dates=dates))
    for name, fig in figures.items():
        path = tmp_path / f"{name}.png"
        fig.savefig(path, dpi=60)
        assert_valid_png(path)
        assert headline(fig), f"{name} has no title"
        assert caption(fig), f"{name} has no caption"


def test_axes_carry_the_users_names_and_dates() -> None:
    figures = draw_all(make_inputs(("A",)))
    ax = figures["constraint"].axes[0]
    assert ax.get_xlabel() == "month"
    assert ax.get_ylabel() == "debt"
    assert [t.get_text() for t in ax.get_legend().get_texts()][-1] == "arrears (observed)"
    assert figures["feedback"].axes[0].get_ylabel() == "satisfaction"
    assert figures["timing"].axes[0].get_xlabel() == "intervention time (month)"
    # Dates stay dates: the x data of the median line are datetimes, not positions.
    xdata = figures["constraint"].axes[0].get_lines()[0].get_xdata()
    assert np.issubdtype(np.asarray(xdata).dtype, np.datetime64)
    legend = figures["regimes"].axes[0].get_legend()
    assert {t.get_text() for t in legend.get_texts()} == {"tracking", "decoupled"}


def test_titles_state_the_findings() -> None:
    """Unit A decouples at step 30 (2020-07): every title that dates it must say so."""
    figures = draw_all(make_inputs(("A",)))
    decoupling = headline(figures["decoupling"])
    assert decoupling.startswith("Feedback stopped tracking around 2020-07")
    assert "90% interval 2020-01 to 2021-01" in decoupling
    assert "P(not yet decoupled by 2022-12) = 0.03" in decoupling
    assert "first passed 50% at 2020-07" in headline(figures["regimes"])
    # The hand-made gap interval (gap +- 0.2) excludes zero from the first step
    # where the gap exceeds 0.2 on.
    hidden = make_inputs(("A",))["hidden"].isel({dims.UNIT: 0, dims.SIGNAL: 0})
    opened = int(np.flatnonzero(hidden["gap"].values <= 0.2)[-1] + 1)
    opened_label = pd.Timestamp(hidden[dims.TIME].values[opened]).strftime("%Y-%m")
    assert f"stopped tracking the debt around {opened_label}" in headline(figures["feedback"])
    constraint = headline(figures["constraint"])
    assert constraint.startswith("Debt rose from") and "by 2022-12" in constraint
    # Acting at step k ends at k / 10 exactly; the target 3.5 is missed from step 40 on.
    timing = headline(figures["timing"])
    assert "Waiting from 2018-11 to 2022-03 changes debt at the horizon by 4.00" in timing
    assert "point of no return 2021-05" in timing
    assert headline(figures["diagnostics"]).startswith("Sampler diagnostics look fine")
    assert headline(figures["comparison"]).startswith("decoupling predicts best, by 11.6")


def test_timing_summary_numbers() -> None:
    (summary,) = plots.timing_summary(make_inputs(("A",))["timings"])
    assert summary.delay == pytest.approx((4.0, 4.0, 4.0))
    assert summary.per_step == pytest.approx(0.1)
    assert summary.target == 3.5
    assert pd.Timestamp(summary.point_of_no_return) == pd.Timestamp("2021-05-01")
    assert not summary.already_passed
    (late,) = plots.timing_summary(make_inputs(("A",))["timings"], target=0.5)
    assert late.already_passed
    (never,) = plots.timing_summary(make_inputs(("A",))["timings"], target=100.0)
    assert never.point_of_no_return is None and not never.already_passed


def test_diagnostics_title_flags_a_bad_r_hat() -> None:
    fig = plots.diagnostics(make_summary(np.random.default_rng(1), r_hat=1.08))
    assert headline(fig).startswith("Check the sampler: max R-hat 1.080")


def test_multi_unit_figures_cap_the_panels_and_say_so(tmp_path: Path) -> None:
    inputs = make_inputs(tuple("ABCDEFGH"))
    fig = plots.regime_ribbon(inputs["probs"], labels=LABELS)
    fig.savefig(tmp_path / "regimes.png", dpi=50)
    assert_valid_png(tmp_path / "regimes.png")
    assert len([ax for ax in fig.axes if ax.get_visible()]) == plots.MAX_PANELS
    assert "Showing the first 6 of 8 units" in caption(fig)
    # The headline counts every unit, not only those drawn: all 8 pass 50%.
    assert "passed 50% in 8 of 8 country series; first: country A at 2020-07" in headline(fig)
    titles = [ax.get_title(loc="left") for ax in fig.axes if ax.get_visible()]
    assert titles[1] == "country = B: P(not tracking) past 50% at 2020-10"


def test_units_selects_the_panels() -> None:
    inputs = make_inputs(tuple("ABCDEFGH"))
    fig = plots.decoupling_posterior(inputs["decoupling"], units=["H", "C"], labels=LABELS)
    titles = [ax.get_title(loc="left") for ax in fig.axes if ax.get_title(loc="left")]
    assert [t.split(":")[0] for t in titles] == ["country = H", "country = C"]
    with pytest.raises(PathlockError, match=r"unknown unit\(s\) \['Z'\]; the units are"):
        plots.constraint_fan(inputs["constraint"], units=["Z"])


def test_bad_arguments_name_the_problem() -> None:
    inputs = make_inputs(("A",))
    with pytest.raises(PathlockError, match="unknown signal 'noise'"):
        plots.feedback_gap(inputs["hidden"], signal="noise")
    with pytest.raises(PathlockError, match="metric must be one of"):
        plots.timing_curve(inputs["timings"], metric="welfare")
    only_never = inputs["timings"].outcomes.isel({dims.SCENARIO: [0]})
    with pytest.raises(PathlockError, match="no fixed-timing"):
        plots.timing_curve(TimingComparison(only_never, inputs["timings"].scenarios[:1]))


def test_time_formatter() -> None:
    monthly = plots.time_formatter(pd.date_range("2020-01-01", periods=4, freq="MS").values)
    assert monthly(np.datetime64("2020-03-01")) == "2020-03"
    assert monthly(np.datetime64("NaT", "ns")) == "not yet"
    weekly = plots.time_formatter(pd.date_range("2020-01-05", periods=4, freq="7D").values)
    assert weekly(pd.Timestamp("2020-01-12")) == "2020-01-12"
    numeric = plots.time_formatter(np.arange(10), "week")
    assert numeric(np.array(4.0)) == "week 4"
    assert numeric(np.nan) == "not yet"


# --------------------------------------------------------------------------
# the report from real fits
# --------------------------------------------------------------------------


def _quiet_fit(spec, df):
    import pathlock as pl

    with warnings.catch_warnings():
        # A 100-draw fit warns about R-hat; the report shows it, the test does not care.
        warnings.simplefilter("ignore")
        return pl.fit(spec, df, draws=100, tune=150, chains=2, seed=1)


@pytest.fixture(scope="module")
def one_unit_fit():
    import pathlock as pl

    spec = pl.Spec.from_toml(MODELS / "decoupling.toml")
    df, _ = pl.simulate(spec, n_steps=50, seed=3)
    return _quiet_fit(spec, df)


@pytest.fixture(scope="module")
def panel_fit():
    import pathlock as pl

    spec = pl.Spec.from_toml(MODELS / "panel.toml")
    df, _ = pl.simulate(spec, n_steps=40, n_units=2, seed=3)
    months = pd.date_range("2019-01-01", periods=40, freq="MS")
    df[spec.data.time] = months[df[spec.data.time].to_numpy()]
    return _quiet_fit(spec, df)


def _check_report(page: Path, expected: set[str]) -> str:
    from pathlock import __version__, report

    assert page.name == report.HTML_NAME and page.exists()
    written = {p.stem for p in page.parent.glob("*.png")}
    assert written == expected
    text = page.read_text(encoding="utf-8")
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(uris) == len(expected)
    embedded = {base64.b64decode(u) for u in uris}
    for stem in expected:
        png = page.parent / f"{stem}.png"
        assert_valid_png(png)
        assert png.read_bytes() in embedded, f"{stem}.png is not the embedded figure"
    assert "<h2>Main findings</h2>" in text
    assert f"pathlock {__version__}" in text
    # The figures' base64 may spell "http" by chance: 760 000 characters give
    # odds of about 1 in 22 (it happened, stop 18), so only the markup is searched.
    markup = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:", text)
    assert "http" not in markup.replace("http-equiv", ""), "the page must not fetch anything"
    return text


@pytest.mark.slow
def test_report_of_a_one_unit_fit(one_unit_fit, tmp_path: Path) -> None:
    import pathlock as pl
    from pathlock import report
    from pathlock.interventions import LowerHazard, timing_scenarios

    times = one_unit_fit.data.times
    timings = pl.compare_timings(
        one_unit_fit,
        timing_scenarios(LowerHazard(0.95), [times[i] for i in (5, 15, 25, 35, 45)]),
        horizon=10,
        seed=1,
        n_draws=40,
    )
    page = report.write_report(
        one_unit_fit, tmp_path / "out", timings=timings, metric="time_decoupled", target=10
    )
    text = _check_report(page, set(report.FIGURES) - {"comparison"})
    built = report.build_report(one_unit_fit, timings=timings, metric="time_decoupled", target=10)
    assert any(s.startswith("The feedback stopped tracking around time") for s in built.findings)
    assert any("per step of delay" in s for s in built.findings)
    for sentence in built.findings:
        assert html.escape(sentence) in text


@pytest.mark.slow
def test_report_of_a_multi_unit_fit(panel_fit, tmp_path: Path) -> None:
    import pathlock as pl
    from pathlock import report
    from pathlock.interventions import ReduceExposure, timing_scenarios

    times = panel_fit.data.times
    timings = pl.compare_timings(
        panel_fit,
        timing_scenarios(ReduceExposure(0.5), [times[i] for i in (5, 15, 25, 35)]),
        horizon=6,
        seed=1,
        n_draws=40,
    )
    comparison = pl.compare({"panel": panel_fit, "panel again": panel_fit})
    page = report.write_report(
        panel_fit, tmp_path / "out", timings=timings, comparison=comparison, title="Panel test"
    )
    text = _check_report(page, set(report.FIGURES))
    assert "<h1>Panel test</h1>" in text
    # Dates stay dates, and each of the two units gets its own sentence.
    built = report.build_report(panel_fit, timings=timings)
    units = [str(u) for u in panel_fit.data.units]
    for unit in units:
        assert any(s.startswith(f"Unit {unit}: ") for s in built.findings), built.findings
    assert re.search(r"20(19|20|21|22)-\d\d", " ".join(built.findings))
    fan = built.figures["constraint"]
    assert [ax.get_title(loc="left").split(":")[0] for ax in fan.axes if ax.get_visible()] == [
        f"unit = {u}" for u in units
    ]


@pytest.mark.slow
def test_summary_leaves_out_move_logits_outside_the_likelihood(one_unit_fit) -> None:
    # Absorbing two-regime model: only tracking -> decoupled enters the likelihood; the
    # diagonal and the absorbing row are prior draws and must not reach the table or panel.
    table = one_unit_fit.summary()
    hazard = sorted(i for i in table.index if i.startswith("hazard_"))
    assert hazard == ["hazard_intercept[tracking, decoupled]", "hazard_slope[tracking, decoupled]"]
    assert one_unit_fit.idata.posterior["hazard_intercept"].shape[-2:] == (2, 2)
    assert "feedback_b[feedback]" in table.index


def test_first_date_tick_carries_its_year() -> None:
    # Weekly data from January 2023: the concise formatter alone would label the first
    # visible tick "Jul" and name no year until 2024.
    times = pd.date_range("2023-01-02", periods=120, freq="W-MON")
    p = np.clip(np.linspace(-1, 2, times.size), 0, 1)
    probs = xr.DataArray(
        np.stack([1 - p, p], -1)[None],
        dims=("unit", "time", "regime"),
        coords={"unit": [0], "time": times, "regime": ["tracking", "decoupled"]},
    )
    fig = plots.regime_ribbon(probs)
    fig.canvas.draw()
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert ticks[0] == "Jul\n2023", ticks
    assert ticks[1] == "2024", ticks


def test_gap_opens_where_it_is_visible_not_where_it_is_1e_5() -> None:
    # The step before a sharp switch: P(already decoupled) ~ 1e-5 gives a gap whose
    # interval excludes zero in floating point (3e-10 to 5e-5); the gap opens a step later.
    n = 8
    tracked = np.linspace(0.0, 4.0, n)
    gap = np.array([0.0, 0.0, 0.0, 0.0, 2e-5, 1.8, 1.9, 2.0])
    low = np.array([-1e-16, -1e-16, -1e-16, -1e-16, 3e-10, 1.6, 1.7, 1.8])
    high = np.array([1e-16, 1e-16, 1e-16, 1e-16, 5e-5, 2.0, 2.1, 2.2])
    hidden = xr.Dataset(
        {"if_tracking": ("time", tracked), "gap": ("time", gap)}
        | {"gap_low": ("time", low), "gap_high": ("time", high)}
    )
    assert plots._first_clear_gap(hidden) == 5
    assert plots._first_clear_gap(hidden.assign(gap_low=("time", low - 2.0))) is None
