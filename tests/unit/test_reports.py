"""ml.reports: the pages driftwatch writes, from templates: one layout, values escaped, nothing that runs.

What each page shows is pinned where its data comes from (test_validation.py, test_monitor.py,
test_plots_ui.py) and what hostile values do in test_report_html.py; here: the templates themselves, and
that the model monitor page shows what the hand-built page of ml.monitor showed.
"""

from __future__ import annotations

import re
import tomllib
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from ml import reports
from ml.reports.render import environment, render

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = sorted(
    p for p in resources.files("ml.reports").joinpath("templates").iterdir() if p.name.endswith(".j2")
)


def test_the_templates_are_package_data():
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "templates/*.html.j2" in package_data["ml.reports"]
    assert {p.name for p in TEMPLATES} == {
        "base.html.j2",
        "validation.html.j2",
        "monitor.html.j2",
        "history.html.j2",
        "overview.html.j2",
        "missing.html.j2",
    }


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_no_template_runs_or_fetches_anything(template):
    text = template.read_text()
    assert "<script" not in text.lower()
    assert not re.search(r"\|\s*safe\b", text)  # data is never marked safe
    assert not re.search(r"\son[a-z]+\s*=", text)  # no event handler attribute
    assert not re.search(r"\bsrc=|https?:|javascript:", text)  # self-contained, opens offline
    if template.name != "base.html.j2":
        assert text.count('{% extends "base.html.j2" %}') == 1 and "<style" not in text  # styles once


def test_the_environment_escapes_and_refuses_unknown_names():
    env = environment()
    assert env.autoescape is True
    with pytest.raises(Exception, match="'text' is undefined"):
        render("missing.html.j2", title="no text given")


def test_every_page_has_the_one_stylesheet():
    pages = [
        reports.missing_page("t", "x"),
        reports.history_page(
            {"dataset": "d", "model": "m", "days": [], "promotions": []}, "<svg></svg>", links=None
        ),
        reports.overview_page([]),
        reports.monitor_page(
            "2013-02-01",
            "flights",
            champion_version=1,
            bias=None,
            attribution=None,
            estimated=None,
            realized=None,
            calibration=None,
            labels_note="",
        ),
    ]
    styles = [re.findall(r"<style>(.*?)</style>", p, re.S) for p in pages]
    assert all(len(s) == 1 for s in styles) and len({s[0] for s in styles}) == 1


def test_the_missing_page_quotes_its_text():
    page = reports.missing_page("No report for <x>", "Status: 'quarantined'. </p><script>alert(1)</script>")
    assert "<title>No report for &lt;x&gt;</title>" in page
    assert "<p id='driftwatch-missing'>Status: &#39;quarantined&#39;. &lt;/p&gt;&lt;script&gt;" in page


def test_history_events_are_listed_with_their_reasons():
    days = [
        {"day": "d1", "status": "quarantined", "decision": "quarantine", "promotion": None,
         "candidate_version": None, "reason": "bad", "promotion_reason": None, "error": None},
        {"day": "d2", "status": "accepted", "decision": "retrain", "promotion": None,
         "candidate_version": None, "reason": "drift", "promotion_reason": None, "error": "boom" * 200},
        {"day": "d3", "status": "accepted", "decision": "retrain", "promotion": "failed",
         "candidate_version": 4, "reason": "drift", "promotion_reason": None, "error": None},
    ]  # fmt: skip
    assert reports.history_events(days) == [
        ("d1", "quarantined", "bad"),
        ("d2", "retrain decided", "drift"),
        ("d2", "failed", ("boom" * 200)[:400]),
        ("d3", "failed v4", ""),
    ]


# ---------------------------------------------------------------------------------------------- monitor page


class Blocks(HTMLParser):
    """What a page shows: the text of each block element (whitespace collapsed), with the classes, ids and
    links of the elements, in document order; styles and the <body> element's attributes left out."""

    BLOCKS = {"title", "h1", "h2", "h3", "p", "li", "ul", "table", "tr", "td", "th", "div", "section", "code"}

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.shown: list[str] = []
        self._text: list[str] = []
        self._style = False
        self.feed(text)
        self._flush()

    def _flush(self) -> None:
        text = " ".join("".join(self._text).split())
        if text:
            self.shown.append(text)
        self._text = []

    def handle_starttag(self, tag, attrs):
        self._style = tag == "style"
        if tag in self.BLOCKS:
            self._flush()
        if tag != "body":
            self.shown += [f"@{tag}.{k}={v}" for k, v in attrs if k in ("class", "id", "href") and v]

    def handle_endtag(self, tag):
        self._style = False
        if tag in self.BLOCKS:
            self._flush()

    def handle_data(self, data):
        if not self._style:
            self._text.append(data)


def _monitor_cases() -> list[dict]:
    from ml import monitor as m

    stats = m.segment_stats(
        {"carrier": np.array(["<script>x</script>"] * 60 + ["AA"] * 60 + ["B6"] * 10)},
        np.linspace(0, 1, 130),
        np.r_[np.ones(65), np.zeros(65)],
    )
    bias = m.bias_drift(
        {"carrier": {"positive_rate_gap": 0.1, "accuracy_gap": 0.05}},
        stats,
        max_positive_rate_gap_change=0.1,
        max_accuracy_gap_change=0.1,
    )
    bias.update(
        segments=stats,
        labels_day="2013-01-25",
        labels_day_violation=True,
        labels_day_reasons=["carrier: <b>gap</b>"],
    )
    attribution = m.attribution_drift(
        {"a": 2.0, "b": 1.0, "c": np.float32(0.5)}, {"a": 0.5, "b": 1.5, "d": 0.1}
    )
    return [
        dict(
            champion_version=3,
            bias=bias,
            attribution=attribution,
            estimated=m.estimate_performance(np.array([0.9, 0.1, 0.7])),
            realized={"roc_auc": np.float64(0.71), "accuracy": 0.5, "rows": 3},
            calibration={"ece_raw": 0.05, "ece_calibrated": 0.0123, "rows": 100},
            labels_note="labels <i>later</i>",
        ),
        dict(
            champion_version=None,
            bias=None,
            attribution=None,
            estimated=None,
            realized=None,
            calibration=None,
            labels_note="",
        ),
        dict(
            champion_version=1,
            bias={"violation": False, "reasons": [], "columns": {}},
            attribution={"ndcg": None},
            estimated=None,
            realized={"roc_auc": None},
            calibration={"rows": None},
            labels_note="",
        ),
        dict(
            champion_version=1,
            bias={
                "violation": False,
                "columns": {"origin": {}},
                "segments": {"origin": {"segments": {}, "skipped": 2, "min_rows": 50}},
            },
            attribution={"violation": True, "reason": None, "current_rank": ["x"], "baseline_rank": []},
            estimated={"threshold": 0.3},
            realized=None,
            calibration=None,
            labels_note="n",
        ),
    ]
