"""The model-history timeline (ml.plots) from a real history database, and the report-store guard of the UI
plugin (ml.ui.safe_report_path) on a real directory tree."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

D = dt.date(2013, 2, 1)


def _fill(settings) -> None:
    from ml.history import History

    h = History(settings.history_url)
    for i in range(10):
        day = D + dt.timedelta(days=i)
        fields = {
            "status": "accepted",
            "rows": 900,
            "champion_version": 1 if i < 6 else 2,
            "drift_share": 0.1 * i,
            "quality": {"roc_auc": 0.70 - 0.01 * i},
            "decision": "skip",
            "reason": "below thresholds",
        }
        if i == 3:
            fields = {
                "status": "quarantined",
                "decision": "quarantine",
                "reason": "batch quarantined: 'distance'",
            }
        if i == 5:
            fields.update(
                decision="retrain",
                reason="retrain: drift share 0.5",
                candidate_version=2,
                promotion="promoted",
                promotion_reason="promoted: gain CI above 0",
            )
        if i == 8:
            fields.update(
                decision="retrain",
                reason="retrain: AUC drop",
                candidate_version=3,
                promotion="rejected",
                promotion_reason="rejected: gain CI straddles 0",
            )
        h.start_day(settings.name, day, **fields)
    h.add_alias_event(
        dataset=settings.name,
        model=settings.registered_model,
        alias="champion",
        logical_date=(D - dt.timedelta(days=1)).isoformat(),
        before_version=None,
        after_version=1,
        reason="first champion",
    )
    h.add_alias_event(
        dataset=settings.name,
        model=settings.registered_model,
        alias="champion",
        logical_date=(D + dt.timedelta(days=5)).isoformat(),
        before_version=1,
        after_version=2,
        reason="promoted: gain CI above 0",
    )


def test_timeline_carries_every_day_and_event(settings):
    from ml.plots import timeline

    _fill(settings)
    data = timeline(settings)
    assert [p["day"] for p in data["days"]] == [(D + dt.timedelta(days=i)).isoformat() for i in range(10)]
    assert data["days"][3]["status"] == "quarantined" and data["days"][3]["drift_share"] is None
    assert data["days"][2]["roc_auc"] == pytest.approx(0.68)
    assert [(p["day"], p["version"]) for p in data["promotions"]] == [
        ((D - dt.timedelta(days=1)).isoformat(), 1),
        ((D + dt.timedelta(days=5)).isoformat(), 2),
    ]
    assert data["drift_threshold"] == settings.thresholds.drift_share


def test_write_history_writes_png_svg_and_a_self_contained_page(settings, tmp_path):
    from ml.plots import write_history

    _fill(settings)
    paths = write_history(settings, tmp_path / "out")
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths["svg"].read_text().lstrip().startswith("<?xml") and "<svg" in paths["svg"].read_text()
    page = paths["html"].read_text()
    assert page.count("<svg") == 1 and "<?xml" not in page  # inlined, no prolog inside HTML
    assert "src=" not in page and "<script" not in page  # opens offline, nothing to fetch
    events = page[page.index('id="history-events"') :]
    assert "quarantined" in events and "promoted v2" in events and "rejected v3" in events
    assert "gain CI straddles 0" in events


def test_an_empty_history_still_plots(settings, tmp_path):
    from ml.plots import write_history

    page = write_history(settings, tmp_path)["html"].read_text()
    assert "no events yet" in page and "<svg" in page


def test_overview_shows_each_dataset(settings, tmp_path):
    from ml.plots import overview_html

    _fill(settings)
    other = settings.with_overrides(name="other")
    page = overview_html([(settings, "/a"), (other, "/b")])
    assert page.count("<svg") == 2 and "href='/a'" in page and "href='/b'" in page


@pytest.fixture
def store(tmp_path) -> Path:
    root = tmp_path / "reports" / "flights"
    (root / "date=2013-01-07").mkdir(parents=True)
    (root / "date=2013-01-07" / "drift.html").write_text("<html>report</html>")
    (root / "date=2013-01-07" / "notes.txt").write_text("not served")
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"key": "s3cr3t"}))
    (root / "date=2013-01-07" / "escape.json").symlink_to(secret)
    (root / "outside").symlink_to(tmp_path, target_is_directory=True)
    return root


def test_report_path_inside_the_store_is_served(store):
    from ml.ui import safe_report_path

    assert (
        safe_report_path(store, "date=2013-01-07/drift.html")
        == (store / "date=2013-01-07" / "drift.html").resolve()
    )


@pytest.mark.parametrize(
    "relative",
    [
        "",
        "/etc/passwd",
        "../secret.json",
        "date=2013-01-07/../../secret.json",
        "./date=2013-01-07/drift.html",
        "date=2013-01-07//drift.html",
        "date=2013-01-07\\..\\..\\secret.json",
        "date=2013-01-07/\x00drift.html",
        "date=2013-01-07/escape.json",
        "outside/secret.json",
        "date=2013-01-07",
        "date=2013-01-07/notes.txt",
        "date=2013-01-07/missing.html",
    ],
)
def test_report_paths_outside_or_unserved_are_refused(store, relative):
    from fastapi import HTTPException

    from ml.ui import safe_report_path

    with pytest.raises(HTTPException) as err:
        safe_report_path(store, relative)
    assert err.value.status_code == 404
