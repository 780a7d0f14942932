"""The report of a fit: one self-contained HTML page and the figures as PNG files.

:func:`write_report` takes a :class:`~pathlock.fit.Fit` and, optionally, an
intervention timing comparison (:func:`pathlock.compare_timings`) and a model
comparison table (:func:`pathlock.compare`), draws the figures of
:mod:`pathlock.plots`, states the main findings in sentences with numbers,
and writes ``report.html`` (figures embedded as base64 PNG data URIs, so the
page stands alone) with the PNG files beside it.  It samples nothing and
simulates nothing: everything it reports comes from its inputs (the FFBS
paths behind the decoupling-time summary are seeded).  Writing the output
directory atomically is the caller's job.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pathlock import dims, plots
from pathlock.errors import PathlockError

if TYPE_CHECKING:
    from pathlock.fit import Fit
    from pathlock.interventions import TimingComparison

__all__ = ["FIGURES", "HTML_NAME", "Report", "build_report", "write_report"]

#: File stem and heading of every figure a report can hold, in page order.
FIGURES: dict[str, str] = {
    "decoupling": "When did the feedback stop tracking?",
    "feedback": "Feedback against the hidden constraint",
    "constraint": "The latent constraint",
    "regimes": "Regime probabilities over time",
    "timing": "What acting earlier would have changed",
    "diagnostics": "Sampler diagnostics",
    "comparison": "Model comparison",
}

#: Name of the HTML page inside the output directory.
HTML_NAME = "report.html"

_DPI = 110


@dataclass(frozen=True, eq=False)
class Report:
    """Everything a report shows, before it is written.

    Attributes
    ----------
    title : str
    findings : tuple of str
        The main findings, one sentence each.
    figures : dict of str to Figure
        Keyed by the stems of :data:`FIGURES` (only those that apply to the fit).
    tables : dict of str to DataFrame
        Headed tables: decoupling time by unit, timing outcomes, parameter
        summary, model comparison (those that apply).
    notes : tuple of str
        What was left out and why (e.g. no timing comparison given).
    meta : dict of str to str
        Dataset, model, sampler and package facts for the page header.
    """

    title: str
    findings: tuple[str, ...]
    figures: dict[str, Figure]
    tables: dict[str, pd.DataFrame]
    notes: tuple[str, ...] = ()
    meta: dict[str, str] = field(default_factory=dict)


def build_report(
    fit: Fit,
    *,
    timings: TimingComparison | None = None,
    comparison: pd.DataFrame | None = None,
    title: str | None = None,
    target: float | None = None,
    metric: str = "constraint_final",
    units: Sequence[Any] | None = None,
    prob: float = 0.9,
    seed: int | None = 0,
) -> Report:
    """Compute the figures, findings and tables of a report without writing anything.

    Parameters are those of :func:`write_report`.

    Returns
    -------
    Report
    """
    if not 0.0 < float(prob) < 1.0:
        raise PathlockError(f"prob must lie in (0, 1); found {prob}")
    labels = plots.Labels.from_fit(fit)
    post = fit.idata.posterior
    times = np.asarray(fit.built.model.coords[dims.TIME])
    fmt = plots.time_formatter(times, labels.time)
    figures: dict[str, Figure] = {}
    tables: dict[str, pd.DataFrame] = {}
    findings: list[str] = []
    notes: list[str] = []
    n_regimes = len(fit.regime_names)

    if n_regimes > 1:
        decoupling = fit.decoupling_time(seed=seed, prob=prob)
        figures["decoupling"] = plots.decoupling_posterior(decoupling, units=units, labels=labels)
        findings.extend(_decoupling_findings(decoupling, fmt, labels, prob))
        tables["Decoupling time by unit"] = _decoupling_table(decoupling, fmt)
    else:
        notes.append("One regime: the feedback always tracks, so there is no decoupling time.")

    hidden = None
    if all(name in post for name in ("feedback_a", "feedback_b")) and _has_constraint(fit):
        from pathlock.analysis import hidden_constraint

        hidden = hidden_constraint(fit, prob=prob)
        figures["feedback"] = plots.feedback_gap(
            hidden, plots.observed_feedback(fit), units=units, labels=labels
        )
        findings.extend(_gap_findings(hidden, fmt, labels, prob))
    if _has_constraint(fit):
        figures["constraint"] = plots.constraint_fan(fit, units=units, labels=labels)
    if n_regimes > 1:
        figures["regimes"] = plots.regime_ribbon(
            fit.regime_probabilities(average=True), units=units, labels=labels
        )

    if timings is not None:
        figures["timing"] = plots.timing_curve(
            timings, metric=metric, target=target, units=units, labels=labels
        )
        findings.extend(_timing_findings(timings, metric, target, fmt, labels, prob))
        tables["Intervention scenarios"] = timings.table(ci=prob)
    else:
        notes.append(
            "No intervention timing comparison was given (pathlock.compare_timings); "
            "the timing figure is left out."
        )

    summary = fit.summary(ci_prob=prob)
    figures["diagnostics"] = plots.diagnostics(summary)
    findings.append(_diagnostics_finding(summary))
    tables["Parameter summary"] = summary

    if comparison is not None:
        figures["comparison"] = plots.comparison(comparison)
        findings.append(_comparison_finding(comparison))
        tables["Model comparison"] = comparison

    spec = fit.spec
    name = getattr(spec, "name", None) or spec.family
    source = str(getattr(fit.data, "source", "") or "")
    heading = title or (f"pathlock report: {name}" + (f" on {Path(source).name}" if source else ""))
    from pathlock import __version__

    n_units = len(fit.built.model.coords[dims.UNIT])
    meta = {
        "model": f"{name} (family {spec.family})",
        "data": source or "(in memory)",
        "grid": f"{len(times)} steps, {fmt(times[0])} to {fmt(times[-1])}; {n_units} "
        f"{labels.unit}{'' if n_units == 1 else ' series'}",
        "regimes": ", ".join(fit.regime_names),
        "sampling": f"{post.sizes[dims.CHAIN]} chains x {post.sizes[dims.DRAW]} draws",
        "pathlock": __version__,
    }
    return Report(
        title=heading,
        findings=tuple(findings),
        figures=figures,
        tables=tables,
        notes=tuple(notes),
        meta=meta,
    )


def write_report(
    fit: Fit,
    out_dir: str | os.PathLike[str],
    *,
    timings: TimingComparison | None = None,
    comparison: pd.DataFrame | None = None,
    title: str | None = None,
    target: float | None = None,
    metric: str = "constraint_final",
    units: Sequence[Any] | None = None,
    prob: float = 0.9,
    seed: int | None = 0,
) -> Path:
    """Write ``report.html`` and one PNG per figure into ``out_dir``.

    Parameters
    ----------
    fit : Fit
    out_dir : path-like
        Created if missing; existing report files in it are replaced.
    timings : TimingComparison, optional
        :func:`pathlock.compare_timings`'s result, for the timing figure, the
        cost of delay and the point of no return.
    comparison : DataFrame, optional
        :func:`pathlock.compare`'s table.
    title : str, optional
        Page heading (default: the spec's name and the data file).
    target : float, optional
        Level the timing metric should stay under, for the point of no return
        (default: the timing comparison's ``threshold``, if it had one).
    metric : str
        Timing outcome drawn and reported (``constraint_final``,
        ``constraint_cumulative``, ``time_decoupled`` or ``cost``).
    units : sequence, optional
        Units to draw (default: the first :data:`pathlock.plots.MAX_PANELS`).
    prob : float
        Mass of every interval reported.
    seed : int, optional
        Seed of the FFBS paths behind the decoupling-time median and interval.

    Returns
    -------
    Path
        The HTML file; the PNG files lie beside it, named after :data:`FIGURES`.

    Raises
    ------
    PathlockError
        ``prob`` outside (0, 1), unknown units or metric.
    """
    report = build_report(
        fit,
        timings=timings,
        comparison=comparison,
        title=title,
        target=target,
        metric=metric,
        units=units,
        prob=prob,
        seed=seed,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images: dict[str, bytes] = {}
    for stem, fig in report.figures.items():
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=_DPI)
        images[stem] = buffer.getvalue()
        (out / f"{stem}.png").write_bytes(images[stem])
    page = out / HTML_NAME
    page.write_text(render_html(report, images), encoding="utf-8")
    return page


# --------------------------------------------------------------------------
# findings
# --------------------------------------------------------------------------


def _has_constraint(fit: Fit) -> bool:
    if "constraint" in fit.idata.posterior:
        return True
    return "constraint" in getattr(fit.built, "extras", {})


def _decoupling_findings(decoupling: Any, fmt: Any, labels: plots.Labels, prob: float) -> list[str]:
    table = decoupling.summary
    by_time = decoupling.prob_by_time
    end = fmt(by_time[dims.TIME].values[-1])
    out = []
    multi = len(table) > 1
    for unit, row in table.iterrows():
        prefix = f"{labels.unit} {unit}: " if multi else ""
        p_dec = float(row["p_decoupled"])
        if p_dec <= 0.5 or plots._missing(row["median"]):
            out.append(
                f"{prefix}the feedback probably still tracks: P(decoupled by {end}) = "
                f"{plots._prob(p_dec)}."
            )
            continue
        hi = "not yet" if bool(row["hdi_includes_not_yet"]) else fmt(row["hdi_high"])
        out.append(
            f"{prefix}the feedback stopped tracking around {fmt(row['median'])} "
            f"({plots._pct(prob)} interval {fmt(row['hdi_low'])} to {hi}); "
            f"P(decoupled by {end}) = {plots._prob(p_dec)}."
        )
    return [s[0].upper() + s[1:] for s in out]


def _decoupling_table(decoupling: Any, fmt: Any) -> pd.DataFrame:
    table = decoupling.summary.copy()
    for col in ("median", "hdi_low", "hdi_high"):
        table[col] = [fmt(v) for v in table[col]]
    return table


def _gap_findings(hidden: Any, fmt: Any, labels: plots.Labels, prob: float) -> list[str]:
    out = []
    signals = hidden[dims.SIGNAL].values.tolist() if dims.SIGNAL in hidden.dims else [None]
    times = hidden[dims.TIME].values
    units = hidden[dims.UNIT].values.tolist()
    for signal in signals:
        h = hidden if signal is None else hidden.sel({dims.SIGNAL: signal})
        for unit in units:
            hu = h.sel({dims.UNIT: unit})
            gap, low, high = (float(hu[k][-1]) for k in ("gap", "gap_low", "gap_high"))
            opened = plots._first_clear_gap(hu)
            if opened is None:
                continue
            prefix = f"{labels.unit} {unit}: " if len(units) > 1 else ""
            name = signal if signal is not None else "the feedback"
            side = "below" if gap > 0 else "above"
            out.append(
                f"{prefix}{name} has read {side} what the {labels.constraint} implies since "
                f"{fmt(times[opened])}; by {fmt(times[-1])} the hidden gap is {plots._num(gap)} "
                f"({plots._pct(prob)} interval {plots._num(low)} to {plots._num(high)})."
            )
    return [s[0].upper() + s[1:] for s in out]


def _timing_findings(
    timings: TimingComparison,
    metric: str,
    target: float | None,
    fmt: Any,
    labels: plots.Labels,
    prob: float,
) -> list[str]:
    metric_name = plots._METRIC_NAMES[metric].format(c=labels.constraint)
    out = []
    summaries = plots.timing_summary(timings, metric=metric, target=target, prob=prob)
    for s in summaries:
        prefix = f"{labels.unit} {s.unit}: " if len(summaries) > 1 else ""
        sentence = (
            f"{prefix}waiting from {fmt(s.earliest)} to {fmt(s.latest)} changes {metric_name} "
            f"by {plots._num(s.delay[1])} ({plots._pct(prob)} interval "
            f"{plots._num(s.delay[0])} to {plots._num(s.delay[2])}), "
            f"{plots._num(s.per_step)} per step of delay."
        )
        if s.target is not None:
            if s.already_passed:
                sentence += (
                    f" Even acting at {fmt(s.earliest)} leaves {metric_name} probably above "
                    f"{plots._num(s.target)}: the point of no return had already passed."
                )
            elif s.point_of_no_return is not None:
                sentence += (
                    f" The point of no return for keeping {metric_name} below "
                    f"{plots._num(s.target)} is {fmt(s.point_of_no_return)}."
                )
            else:
                sentence += (
                    f" Every timing compared keeps {metric_name} probably below "
                    f"{plots._num(s.target)}."
                )
        out.append(sentence[0].upper() + sentence[1:])
    return out


def _diagnostics_finding(summary: pd.DataFrame) -> str:
    n_div = int(summary.attrs.get("divergences", 0))
    r = pd.to_numeric(summary.get("r_hat", pd.Series(dtype=float)), errors="coerce")
    ess = pd.to_numeric(summary.get("ess_bulk", pd.Series(dtype=float)), errors="coerce")
    max_r = float(r.max()) if r.notna().any() else float("nan")
    min_ess = float(ess.min()) if ess.notna().any() else float("nan")
    ok = n_div == 0 and not max_r > 1.01
    verdict = "The sampler converged" if ok else "Treat these numbers with care: the sampler"
    detail = (
        f"max R-hat {max_r:.3f}, min bulk ESS {plots._num(min_ess)}, {n_div} divergent transitions"
    )
    if ok:
        return f"{verdict} ({detail})."
    return f"{verdict} shows problems ({detail}); run longer or raise target_accept."


def _comparison_finding(table: pd.DataFrame) -> str:
    t = table.sort_values("elpd", ascending=False)
    names = [str(i) for i in t.index]
    if len(names) < 2:
        return f"Model comparison: {names[0]} only."
    d = float(pd.to_numeric(t["elpd_diff"]).iloc[1])
    dse = float(pd.to_numeric(t["dse"]).iloc[1])
    clear = d > 2 * dse
    method = str(t["method"].iloc[0]) if "method" in t else "elpd"
    verdict = "clearly" if clear else "but not clearly (within two standard errors)"
    return (
        f"{names[0]} predicts better than {names[1]}, {verdict}: elpd difference "
        f"{plots._num(d)} ± {plots._num(dse)} ({method})."
    )


# --------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1em; color: #1a202c; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #e2e8f0; }
.meta { color: #4a5568; font-size: 0.9em; }
.meta span { margin-right: 1.5em; }
ul.findings li { margin: 0.35em 0; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #edf2f7; }
table { border-collapse: collapse; font-size: 0.82em; margin: 0.5em 0 1.5em; }
th, td { padding: 0.25em 0.6em; border-bottom: 1px solid #edf2f7; text-align: right; }
th { background: #f7fafc; }
.note { color: #718096; font-size: 0.9em; }
footer { margin-top: 3em; color: #718096; font-size: 0.85em; }
"""


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _table_html(frame: pd.DataFrame) -> str:
    shown = frame.copy()
    for col in shown.columns:
        if pd.api.types.is_float_dtype(shown[col]):
            shown[col] = [plots._num(float(v)) if pd.notna(v) else "" for v in shown[col]]
    return shown.to_html(border=0, escape=True, na_rep="")


def render_html(report: Report, images: dict[str, bytes]) -> str:
    """Render a report as one self-contained HTML page.

    Parameters
    ----------
    report : Report
    images : dict of str to bytes
        PNG bytes of each figure, keyed like ``report.figures``.

    Returns
    -------
    str
    """
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(report.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(report.title)}</h1>",
        '<p class="meta">'
        + "".join(f"<span><b>{esc(k)}</b>: {esc(v)}</span>" for k, v in report.meta.items())
        + "</p>",
        "<h2>Main findings</h2>",
        '<ul class="findings">' + "".join(f"<li>{esc(s)}</li>" for s in report.findings) + "</ul>",
    ]
    parts.extend(f'<p class="note">{esc(n)}</p>' for n in report.notes)
    for stem, heading in FIGURES.items():
        if stem not in images:
            continue
        parts.append(f'<h2 id="{stem}">{esc(heading)}</h2>')
        parts.append(
            f'<figure><img src="{_data_uri(images[stem])}" alt="{esc(heading)}">'
            f'<figcaption class="note">Also saved as {stem}.png</figcaption></figure>'
        )
    for heading, frame in report.tables.items():
        parts.append(f"<h2>{esc(heading)}</h2>")
        parts.append(_table_html(frame))
    version = report.meta.get("pathlock", "")
    parts.append(f"<footer>Made by pathlock {esc(version)}.</footer></body></html>")
    return "\n".join(parts) + "\n"
