"""The pages driftwatch writes, one function each: the inputs in, a self-contained HTML document out.

Each function gathers what its template shows and renders it (`ml.reports.render`); the templates escape
every value. Nothing here reads or writes a file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from markupsafe import Markup

from ml.reports.render import render

if TYPE_CHECKING:
    from ml.validation import ValidationResult

MAX_LISTED = 12  # values of a list argument shown in the validation page's kwargs column
MAX_REASON = 400  # characters of an event's reason in the history table
RETRAINS = ("retrain", "bootstrap")


# ---------------------------------------------------------------------------------------------- validation


def validation_page(dataset: str, result: ValidationResult) -> str:
    """A day's validation result: banner, rows, files, failures, then every check with its outcome."""
    verdict = "PASSED" if result.success else "FAILED"
    headline = result.summary().splitlines()[0] if result.success else f"{len(result.failures)} failure(s)"
    checks = []
    for rec in result.expectations:
        kwargs = {k: _short(v) for k, v in (rec.get("kwargs") or {}).items() if k != "column"}
        checks.append(
            {
                "type": str(rec.get("type")),
                "column": str(rec.get("column") or ""),
                "kwargs": json.dumps(kwargs, default=str),
                "status": "novelty"
                if rec.get("success") is False and rec.get("novelty") and result.success
                else {True: "pass", False: "FAIL", None: "skipped"}[rec.get("success")],
                "observed": str(rec.get("observed") or ""),
                "source": str(rec.get("source") or ""),
            }
        )
    return render(
        "validation.html.j2",
        title=f"Validation — {dataset} {result.day}",
        verdict=verdict,
        headline=headline,
        rows=result.rows,
        checked=result.checked,
        files=result.files,
        failures=[f.message for f in result.failures],
        novelty=[f.message for f in result.novelty],
        checks=checks,
    )


def _short(value: Any, limit: int = MAX_LISTED) -> Any:
    if isinstance(value, list) and len(value) > limit:
        return [*value[:limit], f"... ({len(value)} values)"]
    return value


# ---------------------------------------------------------------------------------------------- monitor


def monitor_page(
    day: str,
    dataset: str,
    *,
    champion_version: int | None,
    bias: dict[str, Any] | None,
    attribution: dict[str, Any] | None,
    estimated: dict[str, Any] | None,
    realized: dict[str, Any] | None,
    calibration: dict[str, Any] | None,
    labels_note: str,
    task: str = "binary",
    estimation_note: str | None = None,
) -> str:
    """The day's self-contained monitor page, shown in an Airflow UI tab (same arguments as the former
    `ml.monitor.render_html`).

    `bias` is bias_drift's output, plus optionally "segments" (the day's segment_stats output, for the
    per-value tables) and "labels_day", "labels_day_violation", "labels_day_reasons" (accuracy gaps of an
    earlier day whose labels arrived today). `attribution` is attribution_drift's output; `estimated` is
    estimate_performance's; `realized` has "roc_auc", "accuracy", "positive_rate"; `calibration` has
    "ece_raw", "ece_calibrated", "rows". A None section is shown as "not computed". `task` picks the metrics
    and gap names (`ml.monitor_tasks`); `estimation_note` says why there is no estimate (a regression).
    """
    from ml.monitor_tasks import BIAS_KEYS

    metrics = {
        "binary": (
            ("roc_auc", "ROC AUC"),
            ("accuracy", f"accuracy at {float((estimated or {}).get('threshold', 0.5)):.2f}"),
            ("positive_rate", "share of positive labels"),
        ),
        "multiclass": (("macro_f1", "macro F1"), ("accuracy", "accuracy"), ("log_loss", "log loss")),
        "regression": (("rmse", "RMSE"), ("mae", "MAE"), ("r2", "R²")),
    }[task] + (("rows", "rows"),)
    return render(
        "monitor.html.j2",
        title=f"Model monitor — {dataset} {day}",
        champion_version=champion_version,
        bias=bias,
        attribution=attribution,
        estimated=estimated,
        realized=realized,
        calibration=calibration,
        labels_note=labels_note,
        task=task,
        metrics=metrics,
        gaps=[(key, label) for key, _, label in BIAS_KEYS[task]],
        estimation_note=estimation_note,
    )


# ---------------------------------------------------------------------------------------------- history


def history_page(data: Mapping[str, Any], plot_svg: str, *, links: Mapping[str, str] | None = None) -> str:
    """A dataset's model history: counts, the plot and the table of events (promotions, rejections,
    quarantines, failures) with their reasons.

    Args:
        data: `ml.plots.timeline`'s series.
        plot_svg: the plot as matplotlib wrote it, from `<svg` on. Inlined as markup: matplotlib's SVG
            writer escapes every text it carries (titles, labels, comments).
        links: {name: href} shown after the counts (the PNG and JSON of the same data).
    """
    days = data["days"]
    counts = {
        "days": len(days),
        "quarantined": sum(p["status"] == "quarantined" for p in days),
        "retrains": sum(p["decision"] in RETRAINS for p in days),
        "promotions": len(data["promotions"]),
        "rejections": sum(p["promotion"] == "rejected" for p in days),
        "failed": sum(bool(p["error"]) for p in days),
    }
    return render(
        "history.html.j2",
        title=f"driftwatch · {data['dataset']} · model history",
        dataset=data["dataset"],
        model=data["model"],
        counts=counts,
        links=dict(links or {}),
        days=len(days),
        plot=Markup(plot_svg),
        events=history_events(days),
    )


def history_events(days: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, str]]:
    """(day, event, reason) of every quarantine, promotion decision, undecided retrain and failure."""
    events = []
    for p in days:
        if p["status"] == "quarantined":
            events.append((p["day"], "quarantined", p["reason"] or ""))
        if p["promotion"] in ("promoted", "rejected", "failed"):
            events.append(
                (p["day"], f"{p['promotion']} v{p['candidate_version']}", p["promotion_reason"] or "")
            )
        elif p["decision"] in RETRAINS and not p["promotion"]:
            events.append((p["day"], "retrain decided", p["reason"] or ""))
        if p["error"]:
            events.append((p["day"], "failed", p["error"]))
    return [(day, kind, text[:MAX_REASON]) for day, kind, text in events]


@dataclass(frozen=True)
class OverviewSection:
    """One dataset on the overview page."""

    name: str
    model: str
    link: str  # the dataset's own history page
    days: int
    promotions: int
    plot_svg: str  # as for `history_page`


def overview_page(sections: Sequence[OverviewSection]) -> str:
    """Every dataset's timeline on one page (the navigation view when there are several datasets)."""
    shown = [
        {
            "name": s.name,
            "model": s.model,
            "link": s.link,
            "days": s.days,
            "promotions": s.promotions,
            "plot": Markup(s.plot_svg),
        }
        for s in sections
    ]
    return render("overview.html.j2", title="driftwatch · model history", sections=shown)


# ---------------------------------------------------------------------------------------------- messages


def missing_page(title: str, text: str) -> str:
    """A short page saying why a report is not there (`text` is shown with id `driftwatch-missing`)."""
    return render("missing.html.j2", title=title, text=text)
