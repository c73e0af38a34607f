"""The model-history timeline: what the platform saw and did, day by day, from the history database.

Three panels sharing the date axis:
1. drift share of each monitored day against its threshold; quarantined and failed days marked;
2. the serving champion's ROC AUC on each day's labels (and a 7-day mean), its estimate without labels
   (CBPE), bias and attribution violations, retrains (triangles), promotions (green lines, labelled with
   the new version) and rejected challengers (orange crosses);
3. the serving champion version as a step line.

`write_history(settings, out_dir)` writes `history.png`, `history.svg` and a self-contained `history.html`
(the SVG inline plus the event table, `ml.reports.history_page`) a user can open without the UI; the
plugin's "Model history" view serves the same page. matplotlib runs with the Agg backend (no display).
"""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path
from typing import Any

from ml import reports
from ml.config import Settings
from ml.history import History

PNG_NAME, SVG_NAME, HTML_NAME = "history.png", "history.svg", "history.html"


def timeline(settings: Settings, history: History | None = None) -> dict[str, Any]:
    """The series the plot draws, as plain lists (also served as JSON)."""
    h = history or History(settings.history_url)
    rows = sorted(h.days(settings.name), key=lambda r: r["day"])
    points = []
    for r in rows:
        quality = r.get("quality") or {}
        points.append(
            {
                "day": r["day"],
                "status": r.get("status"),
                "rows": r.get("rows"),
                "drift_share": r.get("drift_share"),
                # the task's primary metric (AUC for a binary task) under the key the plot and its JSON know
                "roc_auc": quality.get(settings.objective.primary) if isinstance(quality, dict) else None,
                "estimated_roc_auc": (r.get("estimated_quality") or {}).get("roc_auc"),
                "attribution_ndcg": r.get("attribution_ndcg"),
                "attribution_violation": r.get("attribution_violation"),
                "bias_violation": r.get("bias_violation"),
                "champion_version": r.get("champion_version"),
                "decision": r.get("decision"),
                "candidate_version": r.get("candidate_version"),
                "promotion": r.get("promotion"),
                "reason": r.get("reason"),
                "promotion_reason": r.get("promotion_reason"),
                "error": r.get("error"),
            }
        )
    promotions = [
        {
            "day": e["logical_date"],
            "version": e["after_version"],
            "before": e["before_version"],
            "reason": e["reason"],
            "actor": e.get("actor"),
        }
        for e in sorted(h.alias_events(settings.name, "champion"), key=lambda e: (e["logical_date"], e["id"]))
    ]
    return {
        "dataset": settings.name,
        "model": settings.registered_model,
        "drift_threshold": settings.thresholds.drift_share,
        "metric": "ROC AUC" if settings.task == "binary" else settings.objective.label,
        "days": points,
        "promotions": promotions,
    }


def _d(value: str) -> dt.date:
    return dt.date.fromisoformat(value)


def figure(data: dict[str, Any]):
    """A matplotlib Figure of the timeline (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    days = data["days"]
    fig = Figure(figsize=(14, 8.5), layout="constrained")
    ax_drift, ax_auc, ax_version = fig.subplots(3, 1, sharex=True, height_ratios=[3, 4, 1.6])
    fig.suptitle(f"driftwatch · {data['dataset']} · model {data['model']}: {len(days)} days", fontsize=13)

    monitored = [p for p in days if p["drift_share"] is not None]
    ax_drift.plot(
        [_d(p["day"]) for p in monitored],
        [p["drift_share"] for p in monitored],
        ".-",
        color="#4c72b0",
        lw=0.8,
        ms=3,
        label="drift share (Evidently)",
    )
    ax_drift.axhline(
        data["drift_threshold"],
        color="#c44e52",
        ls="--",
        lw=1,
        label=f"threshold {data['drift_threshold']:g}",
    )
    for kind, color, label in (
        ("quarantined", "#dd8452", "quarantined batch"),
        ("failed", "#c44e52", "failed run"),
    ):
        marked = [_d(p["day"]) for p in days if p["status"] == kind or (kind == "failed" and p["error"])]
        for i, day in enumerate(marked):
            ax_drift.axvspan(
                day,
                day + dt.timedelta(days=1),
                color=color,
                alpha=0.35,
                lw=0,
                label=label if i == 0 else None,
            )
    ax_drift.set_ylim(-0.02, 1.02)
    ax_drift.set_ylabel("drifted columns share")
    ax_drift.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False)

    scored = [p for p in days if p["roc_auc"] is not None]
    xs = [_d(p["day"]) for p in scored]
    ys = [p["roc_auc"] for p in scored]
    ax_auc.plot(
        xs,
        ys,
        ".",
        color="#8172b3",
        ms=3.5,
        alpha=0.6,
        label=f"champion {data.get('metric', 'ROC AUC')} on the day's labels",
    )
    if len(ys) >= 7:
        mean7 = [sum(ys[max(0, i - 6) : i + 1]) / len(ys[max(0, i - 6) : i + 1]) for i in range(len(ys))]
        ax_auc.plot(xs, mean7, "-", color="#8172b3", lw=1.4, label="7-day mean")
    estimated = [p for p in days if p.get("estimated_roc_auc") is not None]
    if estimated:
        ax_auc.plot(
            [_d(p["day"]) for p in estimated],
            [p["estimated_roc_auc"] for p in estimated],
            "-",
            color="#937860",
            lw=1,
            alpha=0.8,
            label="estimated AUC, no labels (CBPE)",
        )
    for key, marker, label in (
        ("bias_violation", "s", "bias drift"),
        ("attribution_violation", "D", "attribution drift (nDCG)"),
    ):
        flagged = [_d(p["day"]) for p in days if p.get(key)]
        if flagged:
            y_flag = (min(ys) - 0.02) if ys else 0.5
            ax_auc.plot(
                flagged, [y_flag] * len(flagged), marker, color="#c44e52", ms=4, alpha=0.7, label=label
            )
    retrains = [p for p in days if p["decision"] in ("retrain", "bootstrap")]
    if retrains:
        y_top = max(ys) + 0.02 if ys else 0.8
        ax_auc.plot(
            [_d(p["day"]) for p in retrains],
            [y_top] * len(retrains),
            "v",
            color="#55a868",
            ms=6,
            label="retrain decided",
        )
    rejected = [p for p in days if p["promotion"] == "rejected"]
    if rejected:
        y_rej = (max(ys) + 0.035) if ys else 0.82
        ax_auc.plot(
            [_d(p["day"]) for p in rejected],
            [y_rej] * len(rejected),
            "x",
            color="#dd8452",
            ms=6,
            label="challenger rejected",
        )
    for i, e in enumerate(data["promotions"]):
        day = _d(e["day"])
        ax_auc.axvline(day, color="#55a868", lw=1, alpha=0.8, label="promotion" if i == 0 else None)
        ax_auc.annotate(
            f"v{e['version']}",
            (day, 1),
            xycoords=("data", "axes fraction"),
            xytext=(2, -10),
            textcoords="offset points",
            fontsize=7,
            color="#2d6a3e",
        )
    ax_auc.set_ylabel(data.get("metric", "ROC AUC"))
    ax_auc.legend(loc="upper left", bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False)
    ax_auc.grid(alpha=0.25)

    served = [p for p in days if p["champion_version"] is not None]
    ax_version.step(
        [_d(p["day"]) for p in served], [p["champion_version"] for p in served], where="post", color="#937860"
    )
    ax_version.set_ylabel("champion\nversion")
    ax_version.grid(alpha=0.25)
    locator = mdates.AutoDateLocator(minticks=4, maxticks=14)
    ax_version.xaxis.set_major_locator(locator)
    ax_version.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax_version.yaxis.set_major_locator(MaxNLocator(integer=True))
    if not days:
        ax_auc.text(0.5, 0.5, "no day processed yet", transform=ax_auc.transAxes, ha="center")
    plt.close("all")
    return fig


def render(data: dict[str, Any], fmt: str) -> bytes:
    buf = io.BytesIO()
    figure(data).savefig(buf, format=fmt, dpi=110)
    return buf.getvalue()


def overview_html(entries: list[tuple[Settings, str]]) -> str:
    """Every dataset's timeline on one page (the navigation view when there are several datasets).
    `entries`: (settings, link to that dataset's own page)."""
    sections = []
    for st, link in entries:
        data = timeline(st)
        sections.append(
            reports.OverviewSection(
                name=st.name,
                model=st.registered_model,
                link=link,
                days=len(data["days"]),
                promotions=len(data["promotions"]),
                plot_svg=_inline(render(data, "svg").decode()),
            )
        )
    return reports.overview_page(sections)


def history_html(
    settings: Settings, history: History | None = None, *, links: dict[str, str] | None = None
) -> str:
    """The dataset's model-history page (the plot inline), as the UI serves it; `links` after the counts."""
    data = timeline(settings, history)
    return reports.history_page(data, _inline(render(data, "svg").decode()), links=links)


def _inline(svg: str) -> str:
    """matplotlib's SVG without its XML prolog and DOCTYPE, to be inlined in HTML."""
    return svg[svg.find("<svg") :]


def write_history(
    settings: Settings, out_dir: Path | None = None, history: History | None = None
) -> dict[str, Path]:
    """Write history.png, history.svg and history.html (default: <reports>/<dataset>/). Returns the paths."""
    out = Path(out_dir) if out_dir else settings.paths.reports / settings.name
    out.mkdir(parents=True, exist_ok=True)
    data = timeline(settings, history)
    fig = figure(data)
    paths = {"png": out / PNG_NAME, "svg": out / SVG_NAME, "html": out / HTML_NAME}
    fig.savefig(paths["png"], format="png", dpi=110)
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    svg = buf.getvalue()
    paths["svg"].write_text(svg)
    paths["html"].write_text(reports.history_page(data, _inline(svg)))
    return paths
