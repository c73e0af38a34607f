"""The full Evidently drift report of a day, rendered when someone wants it, not every day.

`ml.drift.detect_drift` keeps the day's numbers in `drift.json` (a few KB). The report with Evidently's
figures (~5 MB, ~2-3 s of `Report.run`) is rendered from the kept data on demand:

- the "Drift report" tab of a run, the first time it is opened (then served from the file);
- `driftwatch report DAY --dataset NAME`;
- `train_challenger` on a day that triggered a retrain: the report is the evidence logged with the
  challenger in MLflow.

`render_day` reads the day's batch from the lake, its champion scores, and the champion's reference sample
and scores (the model cache, else its MLflow run), and gives Evidently the exact method and threshold of
every column recorded in `drift.json`, so the page shows the numbers the day was decided on (a mismatch is
logged). `prune` deletes rendered reports older than `reports.keep_rendered_days` (the JSON stays; a
rendered report can always be rendered again).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml import drift
from ml.config import Settings
from ml.exceptions import ModelError

if TYPE_CHECKING:
    import pandas as pd

    from ml.history import History

log = logging.getLogger(__name__)

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def path(settings: Settings, day: dt.date) -> Path:
    return settings.report_dir(day) / drift.REPORT_FILE


def summary(settings: Settings, day: dt.date) -> dict[str, Any] | None:
    """The day's drift.json (None when the drift step has not run)."""
    file = settings.report_dir(day) / drift.SUMMARY_FILE
    return json.loads(file.read_text()) if file.is_file() else None


def render_day(settings: Settings, history: History, day: dt.date, *, force: bool = False) -> Path:
    """The day's drift report, rendered from the kept data unless it already is (`force`: again). One
    rendering at a time per file in this process; the file appears atomically.

    Raises:
        FileNotFoundError: no drift.json for the day (the drift step has not run, or had no champion).
        ModelError: the day's champion, its reference or the batch is gone.
    """
    from ml import data as lake
    from ml import registry

    target = path(settings, day)
    with _lock(str(target)):
        if target.is_file() and not force:
            return target
        result = summary(settings, day)
        if result is None:
            raise FileNotFoundError(
                f"{settings.name} {day}: no drift result ({drift.SUMMARY_FILE}) to render"
            )
        # the champion detect_drift compared the day with: the one in force after the previous day's run
        version = history.champion_at(settings.name, day - dt.timedelta(days=1))
        if version is None:
            raise ModelError(f"{settings.name} {day}: the history does not say which champion served the day")
        reference = registry.artifact(settings, history, int(version), "reference.parquet")
        ref_scores = registry.artifact(settings, history, int(version), "reference_scores.parquet")["score"]
        current = lake.read_batch(settings, day)
        if not settings.labels_known(day, day) and settings.label in current.columns:
            current = current.drop(columns=[settings.label])
        preds = lake.read_predictions(settings, day)
        scores = preds["score"].to_numpy() if preds is not None else None
        scored = scores is not None and result.get("prediction_drift") is not None
        keep = None
        if len(reference) > drift.MAX_REFERENCE_ROWS:
            keep = drift._sample_positions(len(reference))
        cur = drift._model_columns(settings, current, scores if scored else None)
        ref = drift._model_columns(settings, reference, ref_scores.to_numpy() if scored else None, keep)
        tested = [c for c, v in result["columns"].items() if not str(v["method"]).startswith("skipped")]
        write(
            settings,
            day,
            cur=cur,
            ref=ref,
            tested=tested,
            columns={c: result["columns"][c] for c in tested},
            prediction=result.get("prediction_drift") if scored else None,
            classification=scored
            and settings.task == "binary"
            and result.get("quality") is not None
            and drift._clean_labels(cur, settings.label)
            and drift._clean_labels(ref, settings.label),
            rows_reference=int(result.get("rows_reference") or len(reference)),
            path=target,
        )
        return target


def write(
    settings: Settings,
    day: dt.date,
    *,
    cur: pd.DataFrame,
    ref: pd.DataFrame,
    tested: Sequence[str],
    columns: Mapping[str, Mapping[str, Any]],
    prediction: Mapping[str, Any] | None,
    classification: bool,
    rows_reference: int,
    path: Path,
) -> None:
    """Run Evidently's report on the prepared frames with each column's recorded method and threshold, and
    write it with its data escaped (`ml.report_html`), atomically."""
    from ml import report_html

    fixed = {c: {"method": v["method"], "threshold": v["threshold"]} for c, v in columns.items()}
    if prediction is not None:
        fixed[drift.PREDICTION_COLUMN] = {
            "method": prediction["method"],
            "threshold": prediction["threshold"],
        }
    snapshot = _run_report(
        settings,
        day,
        cur=cur,
        ref=ref,
        tested=list(tested),
        overrides=fixed,
        prediction_drift=prediction is not None,
        classification=classification,
        rows_reference=rows_reference,
    )
    shown = _snapshot_results(snapshot)
    recorded = {**columns, **({drift.PREDICTION_COLUMN: prediction} if prediction is not None else {})}
    differ = sorted(c for c, v in recorded.items() if shown.get(c, {}).get("drifted") != v["drifted"])
    if differ:
        log.warning(
            "%s %s: the rendered report flags %s differently from drift.json", settings.name, day, differ
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # not snapshot.save_html: Evidently writes the data unescaped into a <script>, so a category such as
    # '</script><script>...' would run in whoever opens the report
    report_html.write_evidently_report(snapshot, tmp)
    tmp.replace(path)


def prune(settings: Settings, today: dt.date, keep: Sequence[dt.date] = ()) -> list[Path]:
    """Delete the rendered drift reports of days more than `reports.keep_rendered_days` before `today`
    (0: keep them all), except `keep`'s; drift.json files stay. Returns the deleted paths."""
    days = settings.reports.keep_rendered_days
    root = settings.paths.reports / settings.name
    if days <= 0 or not root.is_dir():
        return []
    oldest = today - dt.timedelta(days=days)
    kept = {d.isoformat() for d in keep}
    gone = []
    for file in root.glob(f"*/{drift.REPORT_FILE}"):
        try:
            day = dt.date.fromisoformat(file.parent.name.removeprefix("date="))  # Settings.report_dir
        except ValueError:
            continue
        if day < oldest and day.isoformat() not in kept:
            file.unlink(missing_ok=True)
            gone.append(file)
    return gone


def add_commands(sub: Any, dataset_arg: Any) -> None:
    """`driftwatch report DAY [--dataset NAME] [--force]`."""
    sp = sub.add_parser(
        "report", help="render a day's full Evidently drift report (kept as numbers until opened)"
    )
    sp.add_argument("date", help="YYYY-MM-DD")
    dataset_arg(sp)
    sp.add_argument("--force", action="store_true", help="render again, even if it was rendered")
    sp.set_defaults(func=_report_command)


def _report_command(args: Any) -> int:
    import sys
    import time

    from ml.config import load_settings
    from ml.data import as_date
    from ml.history import History

    s = load_settings(args.dataset)
    day = as_date(args.date)
    started = time.perf_counter()
    try:
        out = render_day(s, History(s.history_url), day, force=args.force)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{out} ({out.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - started:.1f} s)")
    return 0


def _lock(key: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


def _run_report(
    settings: Settings,
    day: dt.date,
    *,
    cur: pd.DataFrame,
    ref: pd.DataFrame,
    tested: list[str],
    overrides: Mapping[str, Mapping[str, Any]],
    prediction_drift: bool,
    classification: bool,
    rows_reference: int,
) -> Any:
    """One Evidently report: DataDriftPreset on the tested features (+ ValueDrift on the scores, + quality)."""
    from evidently import BinaryClassification, DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import ClassificationPreset, DataDriftPreset

    numeric = [c for c in settings.numeric if c in tested]
    categorical = [c for c in settings.categorical if c in tested]
    methods = {c: o["method"] for c, o in overrides.items() if c in tested and o.get("method")}
    thresholds = {
        c: float(o["threshold"])
        for c, o in overrides.items()
        if c in tested and o.get("threshold") is not None
    }
    items: list[Any] = [
        DataDriftPreset(
            columns=tested,
            drift_share=settings.thresholds.drift_share,
            per_column_method=methods or None,
            per_column_threshold=thresholds or None,
        )
    ]
    cols = [*tested]
    task: list[Any] = []
    if prediction_drift:
        (categorical if settings.task == "multiclass" else numeric).append(drift.PREDICTION_COLUMN)
        cols.append(drift.PREDICTION_COLUMN)
        spec = overrides.get(drift.PREDICTION_COLUMN, {})
        threshold = spec.get("threshold")
        items.append(
            ValueDrift(
                column=drift.PREDICTION_COLUMN,
                method=spec.get("method"),
                threshold=None if threshold is None else float(threshold),
            )
        )
    if classification:
        # Evidently's classification metrics need scores and two label classes on both sides (its by-class
        # table raises KeyError on a one-class batch, and a reference without scores is "partially present").
        # labels as int64: with a float target Evidently rejects probas_threshold ("only with binary ...")
        cur = cur.assign(**{settings.label: cur[settings.label].astype("int64")})
        ref = ref.assign(**{settings.label: ref[settings.label].astype("int64")})
        cols.append(settings.label)
        task = [
            BinaryClassification(
                target=settings.label, prediction_probas=drift.PREDICTION_COLUMN, pos_label=1
            )
        ]
        items.append(ClassificationPreset(probas_threshold=drift.DECISION_THRESHOLD))
    definition = DataDefinition(
        numerical_columns=numeric, categorical_columns=categorical, classification=task
    )
    report = Report(
        items,
        include_tests=True,
        metadata={"dataset": settings.name, "day": day.isoformat(), "rows_reference_given": rows_reference},
        tags=[settings.name, "drift"],
    )
    return report.run(
        current_data=Dataset.from_pandas(cur[cols], data_definition=definition),
        reference_data=Dataset.from_pandas(ref[cols], data_definition=definition),
        timestamp=dt.datetime.combine(day, dt.time(0), tzinfo=dt.UTC),
    )


def _snapshot_results(snapshot: Any) -> dict[str, dict[str, Any]]:
    """Per column {method, score, threshold, drifted} as the report's ValueDrift metrics and tests show them."""
    from ml import calibration as calib

    data = snapshot.dict()
    status = {
        t["metric_config"]["metric_id"]: t["status"] for t in data.get("tests", []) if "metric_config" in t
    }
    names = calib.method_names()
    out: dict[str, dict[str, Any]] = {}
    for metric in data["metrics"]:
        config = metric.get("config", {})
        if str(config.get("type", "")).rsplit(":", 1)[-1] != "ValueDrift" or metric["id"] not in status:
            continue
        method = str(config["method"])
        out[config["column"]] = {
            "method": names.get(method, method),
            "score": drift._finite(metric["value"]),
            "threshold": drift._finite(config["threshold"]),
            "drifted": status[metric["id"]] == "FAIL",
        }
    return out
