"""Real traffic for the model server: the rows of chosen days sent as scoring requests, their labels later.

`driftwatch traffic --dataset flights_live --from D --to D --rps N` reads the rows of each day from the lake
(of `serving.traffic_from`, or the dataset's own), sends them to `POST /invocations` without their label, with
deterministic inference ids (`<day>-<row>`: a replay sent twice is captured once), and after each day sends
the labels of the day `label_delay_days` before it to `POST /ground-truth`: the loop of a production model,
traffic -> capture -> the DAG -> retrain/promote -> the server switches -> the next captures carry the new
version. `driftwatch labels add FILE` stores labels that arrive some other way.

`prepare_history` gives a captured dataset its original window: the labelled history the first champion is
trained on (there is no model to serve, hence no capture, before it), copied from the source dataset's lake.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml import data as lake
from ml.config import Settings, load_settings
from ml.exceptions import ConfigError

if TYPE_CHECKING:
    import pandas as pd


def source_settings(settings: Settings) -> Settings:
    """The dataset whose lake partitions are the traffic (and the history) of `settings`."""
    name = settings.serving.traffic_from
    if not name or name == settings.name:
        if settings.captured:
            raise ConfigError(
                f"{settings.yaml_path}: serving.traffic_from: a dataset with `source: capture` has no batches of "
                "its own to send: name the dataset whose lake partitions are its traffic (e.g. flights)."
            )
        return settings
    source = load_settings(name)
    missing = [
        c for c in [settings.date_column, *settings.features, settings.label] if c not in source.columns
    ]
    if missing:
        raise ConfigError(
            f"{settings.yaml_path}: serving.traffic_from: {name} has no columns {missing[:5]}; expected every "
            f"feature, the date column and the label of {settings.name}."
        )
    return source


def prepare_history(settings: Settings, *, force: bool = False) -> tuple[int, int]:
    """Copy the original window's partitions from the source dataset's lake (the labelled history the first
    champion is trained on). Returns (days written, days already there)."""
    source = source_settings(settings)
    written = skipped = 0
    columns = settings.columns
    for day in lake.daterange(settings.original_start, settings.original_end):
        target = settings.partition_dir(day)
        if lake.batch_files(target) and not force:
            skipped += 1
            continue
        frame = lake.read_batch(source, day)
        target.mkdir(parents=True, exist_ok=True)
        from ml.capture import atomic_parquet

        atomic_parquet(frame[[c for c in columns if c in frame.columns]], target / "history.parquet")
        written += 1
    return written, skipped


def inference_ids(day: dt.date, rows: int) -> list[str]:
    return [f"{day.isoformat()}-{i:05d}" for i in range(rows)]


def requests_of(
    settings: Settings, frame: pd.DataFrame, day: dt.date, batch: int
) -> Iterator[dict[str, Any]]:
    """JSON bodies of `batch` rows each (MLflow's dataframe_split, with our inference ids), label withheld."""
    import numpy as np

    columns = [settings.date_column, *settings.features]
    data = frame[columns].copy()
    data[settings.date_column] = day.isoformat()
    data = data.astype(object)
    ids = inference_ids(day, len(frame))
    values = data.to_numpy().tolist()
    for start in range(0, len(values), batch):
        rows = [
            [None if isinstance(v, float) and np.isnan(v) else v for v in row]
            for row in values[start : start + batch]
        ]
        yield {
            "dataframe_split": {"columns": columns, "data": rows},
            "inference_ids": ids[start : start + batch],
        }


def label_bodies(
    settings: Settings, frame: pd.DataFrame, day: dt.date, chunk: int = 1000
) -> Iterator[dict[str, Any]]:
    ids = inference_ids(day, len(frame))
    values = frame[settings.label].tolist()
    for start in range(0, len(ids), chunk):
        yield {
            "labels": [
                {"inference_id": i, "label": _plain(v)}
                for i, v in zip(ids[start : start + chunk], values[start : start + chunk], strict=True)
            ]
        }


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


@dataclass
class DayReport:
    day: str
    rows: int = 0
    requests: int = 0
    failed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    versions: Counter[int] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    labels_sent: str | None = None  # the day whose labels were sent after this one

    def line(self) -> str:
        lat = sorted(self.latencies_ms)
        p50 = statistics.median(lat) if lat else float("nan")
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else float("nan")
        versions = ", ".join(f"v{v}: {n}" for v, n in sorted(self.versions.items())) or "none"
        text = (
            f"{self.day}: {self.rows} rows in {self.requests} requests, {self.failed} failed, served by {versions}; "
            f"p50 {p50:.1f} ms, p99 {p99:.1f} ms"
        )
        if self.errors:
            text += f"; errors {dict(self.errors.most_common(3))}"
        if self.labels_sent:
            text += f"; labels of {self.labels_sent} sent"
        return text


class Client:
    """A pooled JSON client of one model server."""

    def __init__(self, url: str, *, workers: int = 4, timeout: float = 30.0) -> None:
        import urllib3

        self.url = url.rstrip("/")
        self.pool = urllib3.PoolManager(
            maxsize=workers, timeout=urllib3.Timeout(total=timeout), retries=False
        )

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        import urllib3

        try:
            r = self.pool.request(
                "POST",
                self.url + path,
                body=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )
        except urllib3.exceptions.HTTPError as exc:
            return 0, {"error": f"{type(exc).__name__}: {exc}"}
        try:
            payload = json.loads(r.data or b"{}")
        except ValueError:
            payload = {"error": r.data[:200].decode(errors="replace")}
        return r.status, payload if isinstance(payload, dict) else {"body": payload}


def send(
    settings: Settings,
    url: str,
    start: dt.date,
    end: dt.date,
    *,
    rps: float = 200.0,
    batch: int = 1,
    workers: int = 4,
    label_delay_days: int | None = None,
    final_labels: bool = False,
    echo: Callable[[str], None] = print,
) -> list[DayReport]:
    """Send the rows of days `start`..`end` at `rps` rows a second, and each day's labels `label_delay_days`
    days later (in traffic days); `final_labels` also sends the labels still due at the end."""
    source = source_settings(settings)
    delay = settings.label_delay_days if label_delay_days is None else label_delay_days
    client = Client(url, workers=workers)
    reports: list[DayReport] = []
    frames: dict[dt.date, pd.DataFrame] = {}
    lock = threading.Lock()

    def send_labels(day: dt.date) -> bool:
        frame = frames.pop(day, None)
        if frame is None and day < start and lake.partition_exists(source, day):
            # a day served by an earlier call (traffic sent a day at a time): its labels are due now
            from ml.capture import read_capture

            if len(read_capture(settings, day)):
                frame = lake.read_batch(source, day)
        if frame is None:
            return False
        for body in label_bodies(settings, frame, day):
            status, payload = client.post("/ground-truth", body)
            if status != 200:
                raise RuntimeError(f"POST {url}/ground-truth for {day}: HTTP {status}: {payload}")
        return True

    interval = batch / rps if rps > 0 else 0.0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for day in lake.daterange(start, end):
            report = DayReport(day.isoformat())
            if not lake.partition_exists(source, day):
                echo(f"{day}: no batch in {source.partition_dir(day)}: nothing sent")
                continue
            frame = lake.read_batch(source, day)
            frames[day] = frame
            report.rows = len(frame)
            bodies = list(requests_of(settings, frame, day, batch))
            t0 = time.monotonic()

            def one(i_body: tuple[int, dict[str, Any]], report: DayReport = report, t0: float = t0) -> None:
                i, body = i_body
                wait = t0 + i * interval - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                began = time.perf_counter()
                status, payload = client.post("/invocations", body)
                took = (time.perf_counter() - began) * 1000
                with lock:
                    report.requests += 1
                    report.latencies_ms.append(took)
                    if status == 200:
                        report.versions[int(payload.get("model_version") or 0)] += len(body["inference_ids"])
                    else:
                        report.failed += 1
                        report.errors[f"HTTP {status}"] += 1

            list(pool.map(one, enumerate(bodies)))
            due = day - dt.timedelta(days=delay)
            if send_labels(due):
                report.labels_sent = due.isoformat()
            reports.append(report)
            echo(report.line())
    if final_labels:
        for day in sorted(frames):
            send_labels(day)
            echo(f"labels of {day} sent")
    return reports


def read_label_file(settings: Settings, path: Path) -> pd.DataFrame:
    """A CSV or parquet file of labels: columns `inference_id` and the dataset's label column.

    Raises:
        ConfigError: the file cannot be read or lacks a column; the message names the file and the column.
    """
    import pandas as pd

    from ml.capture import INFERENCE_ID

    if not path.is_file():
        raise ConfigError(f"{path}: no such file. Expected a CSV or parquet file of labels.")
    try:
        frame = (
            pd.read_parquet(path)
            if path.suffix == ".parquet"
            else pd.read_csv(path, dtype={INFERENCE_ID: str})
        )
    except Exception as exc:  # noqa: BLE001 - pandas raises many types for a bad file
        raise ConfigError(f"{path}: cannot be read ({type(exc).__name__}: {exc}).") from None
    missing = [c for c in (INFERENCE_ID, settings.label) if c not in frame.columns]
    if missing:
        raise ConfigError(
            f"{path}: missing column {missing[0]!r}. Expected columns '{INFERENCE_ID}' and '{settings.label}' "
            f"(the label of {settings.name}). Got {list(frame.columns)[:10]}."
        )
    return frame


def add_labels(settings: Settings, path: Path) -> int:
    """Store the labels of `path` (see read_label_file) beside the capture; returns how many."""
    from ml import capture

    frame = read_label_file(settings, path)
    ids, values = capture.check_labels(
        settings,
        [
            {"inference_id": i, "label": v}
            for i, v in zip(frame["inference_id"].tolist(), frame[settings.label].tolist(), strict=True)
        ],
        where=str(path),
    )
    writer = capture.label_writer(settings)
    writer.add(capture.label_frame(settings, ids, values))
    writer.close()
    if writer.stats.buffered:
        raise OSError(f"{settings.labels_dir}: could not write the labels: {writer.stats.last_error}")
    return len(ids)


# ---- the command line (registered by ml/cli.py) -----------------------------------------------------------
def add_commands(sub: Any, dataset_arg: Callable[..., None]) -> None:
    sp = sub.add_parser(
        "traffic",
        help="send the real rows of some days to a model server as requests, and their labels later",
    )
    dataset_arg(sp)
    sp.add_argument("--from", dest="start", required=True, help="first day, YYYY-MM-DD")
    sp.add_argument("--to", dest="end", help="last day, YYYY-MM-DD (default: --from)")
    sp.add_argument("--url", default="http://127.0.0.1:5080", help="the model server (driftwatch serve)")
    sp.add_argument(
        "--rps", type=float, default=200.0, help="rows a second (default 200; 0: as fast as it goes)"
    )
    sp.add_argument("--batch", type=int, default=1, help="rows per request (default 1)")
    sp.add_argument("--workers", type=int, default=4, help="requests in flight (default 4)")
    sp.add_argument(
        "--label-delay",
        type=int,
        help="send a day's labels after this many more days (default: label_delay_days)",
    )
    sp.add_argument("--final-labels", action="store_true", help="at the end, send the labels still due")
    sp.set_defaults(func=_traffic)

    sp = sub.add_parser("labels", help="ground truth that arrives after the predictions")
    lsub = sp.add_subparsers(dest="labels_command", required=True)
    add = lsub.add_parser(
        "add", help="store labels from a CSV/parquet file (columns inference_id and the label)"
    )
    add.add_argument("file")
    dataset_arg(add)
    add.set_defaults(func=_labels_add)


def _traffic(args: Any) -> int:
    from ml.data import as_date

    settings = load_settings(args.dataset)
    start = as_date(args.start)
    end = as_date(args.end) if args.end else start
    reports = send(
        settings,
        args.url,
        start,
        end,
        rps=args.rps,
        batch=max(1, args.batch),
        workers=max(1, args.workers),
        label_delay_days=args.label_delay,
        final_labels=args.final_labels,
    )
    failed = sum(r.failed for r in reports)
    print(f"{sum(r.rows for r in reports)} rows sent over {len(reports)} days; {failed} requests failed")
    return 1 if failed else 0


def _labels_add(args: Any) -> int:
    settings = load_settings(args.dataset)
    n = add_labels(settings, Path(args.file))
    print(f"{n} labels of {settings.name} stored under {settings.labels_dir}")
    return 0
