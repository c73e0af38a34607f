"""What the replays measured, for people: a markdown table of the policies, the daily-AUC plot, and the
bench's sections of docs/benchmarks.md."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ml.replay import HORIZON_DAYS

log = logging.getLogger(__name__)


# ---- report helpers -------------------------------------------------------------------------------------
def replace_section(text: str, name: str, body: str) -> str:
    """Replace what lies between `<!-- bench:NAME:start -->` and `<!-- bench:NAME:end -->` (appended at the
    end, markers included, when the markers are not there yet)."""
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    block = f"{start}\n{body.strip()}\n{end}"
    if start in text and end in text and text.index(start) < text.index(end):
        return text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    return text.rstrip("\n") + "\n\n" + block + "\n"


def format_table(summaries: Sequence[Mapping[str, Any]], metric: str = "AUC") -> str:
    """A markdown table of `summarize` results, one row per policy; `metric` names the days' primary metric
    (a regression's RMSE, a multiclass task's macro F1)."""

    def num(value: float | None, digits: int) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    lines = [
        f"| policy | days scored | quarantined | mean {metric} | mean accuracy | retrains | training CPU s | promoted "
        f"| rejected | promotions worse over the next {HORIZON_DAYS} days | rolled back | worse and kept |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in summaries:
        lines.append(
            f"| {m['label']} | {m['days_scored']} | {m['quarantined']} | {num(m['mean_auc'], 4)} "
            f"| {num(m['mean_accuracy'], 4)} "
            f"| {m['retrains']} | {m['train_cpu_s']:.0f} | {m['promotions']} | {m['rejected']} "
            f"| {m['worse_next_days']} | {m.get('rolled_back', 0)} | {m.get('worse_kept', m['worse_next_days'])} |"
        )
    return "\n".join(lines)


def plot_auc(
    results: Mapping[str, Mapping[str, Any]],
    path: Path,
    *,
    title: str,
    split: dt.date | None = None,
    window: int = 7,
) -> Path:
    """Daily AUC of the serving champion per policy (a `window`-day rolling mean) above a strip of each
    policy's retrains (filled: promoted, open: rejected)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    fig, (ax, rug) = plt.subplots(
        2, 1, figsize=(10, 5.2), dpi=100, sharex=True, gridspec_kw={"height_ratios": [3.2, 1]}
    )
    labels = []
    for i, result in enumerate(results.values()):
        frame = pd.DataFrame(result["days"])
        scored = frame[frame["auc"].notna()]
        if scored.empty:
            continue
        (line,) = ax.plot(
            pd.to_datetime(scored["day"]),
            scored["auc"].astype(float).rolling(window, min_periods=1).mean(),
            lw=1.3,
            label=result["label"],
        )
        color = line.get_color()
        trained = frame[frame["trained"] & ~frame["bootstrap"]]
        promoted, rejected = trained[trained["promoted"]], trained[trained["rejected"]]
        rug.scatter(pd.to_datetime(promoted["day"]), [i] * len(promoted), marker="|", s=40, color=color, lw=1)
        rug.scatter(
            pd.to_datetime(rejected["day"]),
            [i] * len(rejected),
            marker="o",
            s=9,
            facecolors="none",
            edgecolors=color,
            lw=0.8,
        )
        labels.append(result["label"].split(" (")[0])
    rug.set_yticks(range(len(labels)), labels, fontsize=7)
    rug.set_ylim(-0.7, len(labels) - 0.3)
    rug.invert_yaxis()
    rug.set_title("retrains: | promoted, o rejected", fontsize=8, loc="left")
    for a in (ax, rug):
        a.grid(alpha=0.3)
        if split is not None:
            a.axvline(pd.Timestamp(split), color="0.4", ls="--", lw=1)
    if split is not None:
        ax.text(pd.Timestamp(split), ax.get_ylim()[1], " tuning | test", va="top", fontsize=8, color="0.3")
    ax.set_ylabel(f"champion AUC on the day's labels\n({window}-day rolling mean)", fontsize=9)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="best", ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
