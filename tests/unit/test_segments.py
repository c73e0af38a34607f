"""The segment guardrail: a challenger better overall may not lose more than a tolerance on any segment.

`compare` on synthetic scores (the rule), the `evaluation:` config section, the evidence it leaves on the
model version, and the evaluate_challenger task passing the holdout's segment columns (real partitions, stand-in
models). Also here: the drift report that triggered a challenger is logged with its training run.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.special import expit

from ml import promotion, registry
from ml.config import BUNDLED_DATASETS, load_settings
from ml.day import Day
from ml.evaluate import compare
from ml.exceptions import ConfigError
from ml.history import History
from ml.tasks import evaluate_challenger

SEGMENT_CHECK = "worst_segment_auc_drop"


@pytest.fixture
def fast(settings):
    """The flights settings with segments origin and carrier, pinned to tolerance 0.02 and 200 rows (so tuning
    flights.yaml cannot move these tests), and a cheap bootstrap."""
    assert settings.evaluation.segments == ("origin", "carrier")
    settings = _with(settings, segment_tolerance=0.02, min_segment_rows=200)
    return settings.with_overrides(
        thresholds=dataclasses.replace(settings.thresholds, bootstrap_resamples=200)
    )


def _with(settings, **evaluation):
    return settings.with_overrides(evaluation=dataclasses.replace(settings.evaluation, **evaluation))


def _calibrated(x: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """A calibrated score of the true log-odds 2x seen through `noise` (0: the true probability)."""
    return expit(2.0 * (x + rng.normal(scale=noise, size=len(x))) / np.sqrt(1 + 4 * noise**2))


def _scores(bad_noise: float, *, ev_rows: int = 800, seed: int = 0):
    """Carrier AA (3000 rows), EV (`ev_rows`), XX (120, small), ZZ (300, all on time: one class).

    The champion sees the signal through noise 1.0 everywhere; the challenger sees it exactly, except on EV
    where it sees it through `bad_noise`. Returns (y, p_champion, p_challenger, carrier).
    """
    rng = np.random.default_rng(seed)
    carrier = np.array(["AA"] * 3000 + ["EV"] * ev_rows + ["XX"] * 120 + ["ZZ"] * 300, dtype=object)
    x = rng.normal(size=len(carrier))
    y = (rng.random(len(x)) < expit(2.0 * x)).astype(int)
    y[carrier == "ZZ"] = 0
    p_champion = _calibrated(x, 1.0, rng)
    p_challenger = expit(2.0 * x)
    ev = carrier == "EV"
    p_challenger[ev] = _calibrated(x[ev], bad_noise, rng)
    return y, p_champion, p_challenger, carrier


# ---------------------------------------------------------------------------------------------- the rule
def test_better_overall_but_much_worse_on_one_segment_is_rejected_naming_it(fast):
    y, champion, challenger, carrier = _scores(bad_noise=3.0)

    out = compare(fast, y, champion, challenger, segments={"carrier": carrier})

    assert out["checks"]["roc_auc_gain_ci_low"]["passed"] and out["checks"]["log_loss_increase"]["passed"]
    assert out["promote"] is False
    check = out["checks"][SEGMENT_CHECK]
    assert check["passed"] is False and check["threshold"] == 0.02 and check["rule"] == "<="
    assert check["segment"] == "carrier=EV"
    worst = out["segments"][0]
    assert (worst["column"], worst["value"], worst["rows"]) == ("carrier", "EV", 800)
    assert worst["drop"] == pytest.approx(worst["champion_auc"] - worst["challenger_auc"])
    assert check["value"] == worst["drop"] > 0.1
    assert re.search(rf"segment carrier=EV loses {worst['drop']:.3f} AUC \(tolerance 0\.02\)", out["reason"])
    assert out["reason"].startswith("rejected") and "gain not shown" not in out["reason"]
    assert SEGMENT_CHECK in out["mlflow_validation"]


def test_a_segment_drop_within_tolerance_is_promoted(fast):
    y, champion, challenger, carrier = _scores(bad_noise=1.0)

    out = compare(fast, y, champion, challenger, segments={"carrier": carrier})

    check = out["checks"][SEGMENT_CHECK]
    assert 0 < check["value"] < 0.02, "precondition: EV loses a little, within the tolerance"
    assert out["promote"] is True, out["reason"]
    assert check["passed"] is True and check["segment"] == "carrier=EV"
    assert out["reason"].startswith("promoted") and "no segment loses more than 0.02 AUC" in out["reason"]


def test_the_tolerance_is_the_configured_one(dw_env, monkeypatch):
    monkeypatch.setenv("DRIFTWATCH__EVALUATION__SEGMENT_TOLERANCE", "0.2")
    s = load_settings("flights")
    s = s.with_overrides(thresholds=dataclasses.replace(s.thresholds, bootstrap_resamples=200))
    y, champion, challenger, carrier = _scores(bad_noise=3.0)

    out = compare(s, y, champion, challenger, segments={"carrier": carrier})

    assert s.evaluation.segment_tolerance == 0.2
    assert out["promote"] is True, out["reason"]
    assert out["checks"][SEGMENT_CHECK]["threshold"] == 0.2


def test_small_and_single_class_segments_are_ignored(fast):
    """EV below min_segment_rows, XX (120 rows) and ZZ (one class) are not segments: AUC is noise there."""
    y, champion, challenger, carrier = _scores(bad_noise=3.0, ev_rows=150)

    out = compare(fast, y, champion, challenger, segments={"carrier": carrier})

    assert [(r["column"], r["value"]) for r in out["segments"]] == [("carrier", "AA")]
    assert out["checks"][SEGMENT_CHECK]["segments_checked"] == 1
    assert out["promote"] is True, out["reason"]

    smaller = compare(
        _with(fast, min_segment_rows=100), y, champion, challenger, segments={"carrier": carrier}
    )

    assert {r["value"] for r in smaller["segments"]} == {"AA", "EV", "XX"}  # ZZ still has one class
    assert smaller["promote"] is False and "carrier=EV" in smaller["reason"]


def test_no_eligible_segment_passes_with_a_zero_drop(fast):
    y, champion, challenger, _ = _scores(bad_noise=3.0)

    out = compare(
        fast,
        y,
        champion,
        challenger,
        segments={"carrier": np.array(["tiny"] * 150 + [None] * (len(y) - 150))},
    )

    assert out["segments"] == []
    assert out["checks"][SEGMENT_CHECK] == {
        "value": 0.0,
        "threshold": 0.02,
        "rule": "<=",
        "segment": None,
        "segments_checked": 0,
        "passed": True,
    }


def test_without_a_champion_segments_are_not_checked(fast):
    y, _, challenger, carrier = _scores(bad_noise=3.0)

    out = compare(fast, y, None, challenger, segments={"carrier": carrier})

    assert out["promote"] is True, out["reason"]
    assert list(out["checks"]) == ["roc_auc"]
    assert out["segments"] == []


def test_without_segments_only_the_overall_checks_run(fast):
    y, champion, challenger, _ = _scores(bad_noise=3.0)

    out = compare(fast, y, champion, challenger)

    assert list(out["checks"]) == ["roc_auc_gain_ci_low", "log_loss_increase"]
    assert out["segments"] == [] and out["promote"] is True


def test_every_configured_column_is_checked_and_the_worst_named(fast):
    y, champion, challenger, carrier = _scores(bad_noise=3.0)
    origin = np.where(np.arange(len(y)) % 2 == 0, "EWR", "JFK")

    out = compare(fast, y, champion, challenger, segments={"origin": origin, "carrier": carrier})

    assert {(r["column"], r["value"]) for r in out["segments"]} == {
        ("origin", "EWR"),
        ("origin", "JFK"),
        ("carrier", "AA"),
        ("carrier", "EV"),
    }
    assert [r["drop"] for r in out["segments"]] == sorted((r["drop"] for r in out["segments"]), reverse=True)
    assert out["checks"][SEGMENT_CHECK]["segment"] == "carrier=EV"


def test_segment_values_not_aligned_with_the_holdout_are_rejected(fast):
    y, champion, challenger, carrier = _scores(bad_noise=3.0)

    with pytest.raises(
        ValueError,
        match=re.escape(
            f"compare: segment column 'carrier' has {len(y) - 1} values for {len(y)} holdout rows"
        ),
    ):
        compare(fast, y, champion, challenger, segments={"carrier": carrier[1:]})


# ---------------------------------------------------------------------------------------------- evidence
def test_the_segment_check_is_in_the_version_tags_and_description(fast):
    y, champion, challenger, carrier = _scores(bad_noise=3.0)
    out = json.loads(json.dumps(compare(fast, y, champion, challenger, segments={"carrier": carrier})))

    tags = promotion.evidence_tags(out)
    text = promotion._description(fast, dt.date(2013, 2, 20), out, before=1)

    assert tags["guardrail.worst_segment_drop"] == out["checks"][SEGMENT_CHECK]["value"]
    assert tags["guardrail.worst_segment"] == "carrier=EV"
    assert (
        f"- {SEGMENT_CHECK}: {out['checks'][SEGMENT_CHECK]['value']:.5f} <= 0.02 -> FAIL (worst: carrier=EV)"
        in text
    )


def test_no_segment_tags_without_the_check(fast):
    y, champion, challenger, _ = _scores(bad_noise=3.0)

    tags = promotion.evidence_tags(compare(fast, y, champion, challenger))

    assert not any(key.startswith("guardrail.") for key in tags)


# ---------------------------------------------------------------------------------------------- config
def _write(tmp_path: Path, evaluation) -> Path:
    raw = yaml.safe_load((BUNDLED_DATASETS / "flights.yaml").read_text())
    if evaluation is None:
        raw.pop("evaluation")
    else:
        raw["evaluation"] = evaluation
    path = tmp_path / "flights.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_evaluation_section_is_optional(dw_env, tmp_path):
    s = load_settings(_write(tmp_path, None))

    assert (s.evaluation.segments, s.evaluation.segment_tolerance, s.evaluation.min_segment_rows) == (
        (),
        0.02,
        200,
    )


@pytest.mark.parametrize(
    ("evaluation", "message"),
    [
        (
            {"segments": ["origin", "airline"]},
            "evaluation.segments: ['airline'] are not columns of the dataset",
        ),
        ({"segments": "origin"}, "evaluation.segments: expected a list of column names. Got 'origin'."),
        ({"segment_tolerance": -0.1}, "evaluation.segment_tolerance: expected an AUC drop >= 0. Got -0.1."),
        ({"min_segment_rows": "many"}, "evaluation.min_segment_rows: expected an integer. Got 'many'."),
        ({"min_segment_rows": 0}, "evaluation.min_segment_rows: expected at least 1. Got 0."),
        ({"segment": ["origin"]}, "evaluation: unknown keys ['segment']"),
    ],
)
def test_bad_evaluation_values_are_rejected_by_key_path(dw_env, tmp_path, evaluation, message):
    path = _write(tmp_path, evaluation)

    with pytest.raises(ConfigError, match=re.escape(f"{path}: {message}")):
        load_settings(path)


# ---------------------------------------------------------------------------------------------- the task
HOLDOUT = [dt.date(2013, 2, d) for d in range(1, 8)]


class FakeClient:
    """Records what the task logs to MLflow."""

    def __init__(self):
        self.metrics: dict[str, float] = {}
        self.artifacts: list[tuple[str, str, str | None]] = []

    def log_metric(self, run_id, key, value):
        self.metrics[key] = value

    def log_artifact(self, run_id, local_path, artifact_path=None):
        self.artifacts.append((run_id, local_path, artifact_path))


def test_evaluate_step_checks_the_holdouts_origin_and_carrier(fast, add_partitions, monkeypatch):
    """Champion v1 and challenger v2 stand-ins: v2 is sharper everywhere but scores EV's flights at random."""
    import ml.train

    add_partitions(fast, HOLDOUT)
    history = History(fast.history_url)
    history.put_model(
        fast.name, 2, trained_on="2013-02-08", run_id="run-2", holdout_days=[d.isoformat() for d in HOLDOUT]
    )
    history.add_alias_event(
        dataset=fast.name,
        model=fast.registered_model,
        alias="champion",
        logical_date="2013-01-31",
        before_version=None,
        after_version=1,
    )
    fake = FakeClient()
    monkeypatch.setattr(registry, "load_model", lambda s, version, **_: version)
    monkeypatch.setattr(registry, "client", lambda s: fake)

    def predict_proba(version, s, frame):
        rng = np.random.default_rng(version)
        y = (frame[s.label] == s.positive).to_numpy().astype(float)
        noise = 1.0 if version == 1 else 0.5
        p = expit(2.0 * (y - 0.5 + rng.normal(scale=noise, size=len(y))))
        if version == 2:
            ev = (frame["carrier"] == "EV").to_numpy()
            p[ev] = rng.random(ev.sum())
        return p

    monkeypatch.setattr(ml.train, "predict_proba", predict_proba)

    out = evaluate_challenger.run(Day.of(fast, "2013-02-08"), {"version": 2})

    assert out["promote"] is False and out["champion_version"] == 1
    assert "segment carrier=EV loses" in out["reason"]
    saved = json.loads((fast.report_dir(dt.date(2013, 2, 8)) / "evaluation.json").read_text())
    assert {r["value"] for r in saved["segments"] if r["column"] == "origin"} == {"EWR", "JFK", "LGA"}
    assert all(r["rows"] >= 200 for r in saved["segments"])
    assert saved["checks"][SEGMENT_CHECK]["segment"] == "carrier=EV"
    assert fake.metrics["eval_worst_segment_auc_drop"] == saved["checks"][SEGMENT_CHECK]["value"]
    assert history.get_day(fast.name, dt.date(2013, 2, 8))["evaluation"]["segments"] == saved["segments"]
