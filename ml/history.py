"""The platform's memory: one row per dataset and day, the alias audit log, and the trained models.

SQLAlchemy Core; SQLite by default (DRIFTWATCH_DB_URL for PostgreSQL in production). Every write is an
upsert keyed by what it describes, so re-running a day replaces that day's row instead of adding one.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ml import liveness

log = logging.getLogger(__name__)

metadata = sa.MetaData()

days = sa.Table(
    "dw_days",
    metadata,
    sa.Column("dataset", sa.String(100), primary_key=True),
    sa.Column("day", sa.String(10), primary_key=True),
    sa.Column(
        "status", sa.String(20)
    ),  # accepted | invalid (validation failed) | quarantined; None: no batch read
    sa.Column("rows", sa.Integer),
    sa.Column("validation", sa.Text),  # short summary of the validation result
    sa.Column("champion_version", sa.Integer),  # serving champion on that day
    sa.Column("drift_share", sa.Float),
    sa.Column("dataset_drift", sa.Boolean),
    sa.Column("drifted_columns", sa.Text),  # JSON list
    sa.Column("prediction_drift", sa.Float),
    sa.Column("quality", sa.Text),  # JSON {roc_auc, accuracy, f1, log_loss}
    sa.Column("quality_drop", sa.Float),
    sa.Column("decision", sa.String(20)),  # skip | retrain | bootstrap | quarantine | collect
    sa.Column("reason", sa.Text),
    sa.Column("candidate_version", sa.Integer),
    sa.Column("promotion", sa.String(20)),  # promoted | rejected | failed | shadow (in shadow: ml/shadow.py)
    sa.Column("promotion_reason", sa.Text),
    sa.Column("evaluation", sa.Text),  # JSON evidence of the comparison
    sa.Column("error", sa.Text),
    sa.Column("reports", sa.Text),  # JSON {drift: path, validation: path}
    sa.Column("dag_run_id", sa.String(250)),
    sa.Column("updated_at", sa.DateTime(timezone=True)),
    # the model monitors (ml.monitor): bias drift, feature-attribution drift, performance without labels
    sa.Column("bias", sa.Text),  # JSON {columns: {col: gaps, changes, violation}, violation, reasons}
    sa.Column("bias_violation", sa.Boolean),
    sa.Column("attribution", sa.Text),  # JSON {ndcg, importance, baseline_importance, ranks, violation}
    sa.Column("attribution_ndcg", sa.Float),
    sa.Column("attribution_violation", sa.Boolean),
    sa.Column("estimated_quality", sa.Text),  # JSON CBPE {roc_auc, accuracy, ...} from the champion's scores
    sa.Column("estimated_quality_drop", sa.Float),
    sa.Column(
        "labels_known_on", sa.String(10)
    ),  # the run that first read the day's labels (realized quality)
    # a new champion under watch (ml/tasks/watch_champion.py): JSON judgement, and its verdict
    sa.Column("watch", sa.Text),
    sa.Column("watch_verdict", sa.String(20)),  # collecting | watching | keep | roll_back
    # the challenger in shadow (ml/shadow.py): JSON judgement, and its verdict
    sa.Column("shadow", sa.Text),
    sa.Column("shadow_verdict", sa.String(20)),  # shadowing | promote | reject
    # promotion.approval: manual (ml/tasks/approve_challenger.py): {approved, by, comment, at}
    sa.Column("approval", sa.Text),
)

alias_events = sa.Table(
    "dw_alias_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("dataset", sa.String(100), nullable=False, index=True),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("alias", sa.String(50), nullable=False),
    sa.Column("logical_date", sa.String(10), nullable=False),
    sa.Column("before_version", sa.Integer),
    sa.Column("after_version", sa.Integer),
    sa.Column("reason", sa.Text),
    sa.Column("dag_run_id", sa.String(250)),
    sa.Column("actor", sa.String(200)),
    sa.Column("at", sa.DateTime(timezone=True)),  # wall-clock time of the change: audit only, decides nothing
)

models = sa.Table(
    "dw_models",
    metadata,
    sa.Column("dataset", sa.String(100), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("trained_on", sa.String(10)),  # logical date of the run that trained it
    sa.Column("run_id", sa.String(64)),
    sa.Column("experiment_id", sa.String(64)),
    sa.Column("train_days", sa.Text),  # JSON list of ISO days
    sa.Column("holdout_days", sa.Text),  # JSON list of ISO days
    sa.Column("train_rows", sa.Integer),
    sa.Column("data_digest", sa.String(64)),
    sa.Column("holdout_metrics", sa.Text),  # JSON: this model's metrics on its own holdout
    sa.Column("reference_path", sa.Text),
    sa.Column("trigger", sa.Text),
)

locks = sa.Table(
    "dw_locks",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("holder", sa.String(200), nullable=False),
    sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
    # who holds it, so that a waiter can tell a dead holder at once (same host: the process is gone) and a
    # lost one on another host (no heartbeat within the lease)
    sa.Column("host", sa.String(255)),
    sa.Column("pid", sa.Integer),
    sa.Column("pid_started", sa.String(32)),  # the process's start time (/proc): a reused pid is not alive
    sa.Column("heartbeat_at", sa.DateTime(timezone=True)),
)

# Alerts already delivered, one row per dataset, day and event: a re-run of a day does not send them again.
alerts_sent = sa.Table(
    "dw_alerts",
    metadata,
    sa.Column("dataset", sa.String(100), primary_key=True),
    sa.Column("day", sa.String(10), primary_key=True),
    sa.Column("kind", sa.String(20), primary_key=True),
    sa.Column("event", sa.String(64), primary_key=True),  # what happened, e.g. "v5", or a digest of it
    sa.Column("dag_run_id", sa.String(250)),
    sa.Column("message", sa.Text),
    sa.Column("sent_at", sa.DateTime(timezone=True)),
)

JSON_FIELDS = {
    "drifted_columns",
    "quality",
    "evaluation",
    "reports",
    "train_days",
    "holdout_days",
    "holdout_metrics",
    "bias",
    "attribution",
    "estimated_quality",
    "watch",
    "shadow",
    "approval",
}


@lru_cache(maxsize=8)
def engine(url: str) -> Engine:
    if url.startswith("sqlite:///"):
        _private_file(url[len("sqlite:///") :])
        eng = sa.create_engine(url, connect_args={"timeout": 60})
    else:
        eng = sa.create_engine(url, pool_pre_ping=True)
    _create_tables(eng)
    _add_missing_columns(eng)
    return eng


def _private_file(path: str) -> None:
    """The SQLite file readable by its owner only (0600; SQLite gives its journal files the same mode): the
    history holds the audit log every decision relies on."""
    if path in ("", ":memory:"):
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        st = os.stat(path)
        if st.st_uid == os.getuid() and st.st_mode & 0o077:
            os.chmod(path, 0o600)


def _create_tables(eng: Engine, attempts: int = 5) -> None:
    """create_all, safe when several processes open a new database at once (two tasks of a day side by side):
    create_all checks which tables exist, then creates the others, so another process may create one in
    between ("table ... already exists"); the next attempt skips what is there."""
    for attempt in range(attempts):
        try:
            metadata.create_all(eng)
            return
        except sa.exc.DBAPIError:
            if attempt == attempts - 1:
                raise


def _add_missing_columns(eng: Engine) -> None:
    """Columns added by later releases, added to a database created before them (create_all skips
    existing tables). Nullable columns only, so old rows stay valid."""
    inspector = sa.inspect(eng)
    for table in metadata.sorted_tables:
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            kind = column.type.compile(dialect=eng.dialect)
            try:
                with eng.begin() as conn:
                    conn.execute(sa.text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))
            except sa.exc.DBAPIError:  # another process added it first
                if column.name not in {c["name"] for c in sa.inspect(eng).get_columns(table.name)}:
                    raise


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _encode(values: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        if key in JSON_FIELDS and value is not None and not isinstance(value, str):
            value = json.dumps(value, default=str, sort_keys=True)
        out[key] = value
    return out


def _decode(row: Any) -> dict[str, Any]:
    out = dict(row._mapping)
    for key in JSON_FIELDS & out.keys():
        if isinstance(out[key], str):
            try:
                out[key] = json.loads(out[key])
            except ValueError:
                pass
    for key, value in out.items():
        if isinstance(value, dt.datetime):
            out[key] = value.isoformat()
    return out


class History:
    """Access to the history tables of one database URL."""

    def __init__(self, url: str):
        self.url = url
        self.engine = engine(url)

    # ---- days -----------------------------------------------------------------------------------------
    def start_day(self, dataset: str, day: dt.date, **fields: Any) -> None:
        """Replace the day's row: a re-run starts from a clean slate."""
        with self.engine.begin() as conn:
            conn.execute(days.delete().where(days.c.dataset == dataset, days.c.day == day.isoformat()))
            conn.execute(
                days.insert().values(
                    dataset=dataset, day=day.isoformat(), updated_at=_now(), **_encode(fields)
                )
            )

    def update_day(self, dataset: str, day: dt.date, **fields: Any) -> None:
        """Set fields of the day's row, creating it if needed."""
        values = {**_encode(fields), "updated_at": _now()}
        with self.engine.begin() as conn:
            found = conn.execute(
                sa.select(days.c.day).where(days.c.dataset == dataset, days.c.day == day.isoformat())
            ).first()
            if found:
                conn.execute(
                    days.update()
                    .where(days.c.dataset == dataset, days.c.day == day.isoformat())
                    .values(**values)
                )
            else:
                conn.execute(days.insert().values(dataset=dataset, day=day.isoformat(), **values))

    def add_reports(self, dataset: str, day: dt.date, **paths: str) -> None:
        """Add report paths to the day's `reports` (a JSON object) without losing another step's.

        Steps of one day that run at the same time (monitor_model and detect_drift) each add theirs: the
        row is written first, which takes SQLite's write lock or PostgreSQL's row lock, so the read and the
        merge below happen with no other writer in between.
        """
        where = (days.c.dataset == dataset, days.c.day == day.isoformat())
        with self.engine.begin() as conn:
            if not conn.execute(days.update().where(*where).values(updated_at=_now())).rowcount:
                conn.execute(
                    days.insert().values(
                        dataset=dataset, day=day.isoformat(), updated_at=_now(), **_encode({"reports": paths})
                    )
                )
                return
            current = _decode(conn.execute(sa.select(days.c.reports).where(*where)).one()).get("reports")
            merged = {**(current if isinstance(current, dict) else {}), **paths}
            conn.execute(days.update().where(*where).values(**_encode({"reports": merged})))

    def get_day(self, dataset: str, day: dt.date) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(days).where(days.c.dataset == dataset, days.c.day == day.isoformat())
            ).first()
        return _decode(row) if row else None

    def days(self, dataset: str, until: dt.date | None = None) -> list[dict[str, Any]]:
        query = sa.select(days).where(days.c.dataset == dataset)
        if until is not None:
            query = query.where(days.c.day <= until.isoformat())
        with self.engine.connect() as conn:
            return [_decode(r) for r in conn.execute(query.order_by(days.c.day))]

    # ---- models ---------------------------------------------------------------------------------------
    def put_model(self, dataset: str, version: int, **fields: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(models.delete().where(models.c.dataset == dataset, models.c.version == version))
            conn.execute(models.insert().values(dataset=dataset, version=version, **_encode(fields)))

    def get_model(self, dataset: str, version: int) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(models).where(models.c.dataset == dataset, models.c.version == version)
            ).first()
        return _decode(row) if row else None

    def models(self, dataset: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(models).where(models.c.dataset == dataset).order_by(models.c.version)
            )
            return [_decode(r) for r in rows]

    # ---- alias audit log ------------------------------------------------------------------------------
    def add_alias_event(self, conn: sa.Connection | None = None, **fields: Any) -> None:
        values = {
            "at": _now(),
            "actor": f"{os.environ.get('USER', 'airflow')}@{socket.gethostname()}",
            **fields,
        }
        if conn is not None:
            conn.execute(alias_events.insert().values(**values))
        else:
            with self.engine.begin() as c:
                c.execute(alias_events.insert().values(**values))

    def alias_events(self, dataset: str, alias: str | None = None) -> list[dict[str, Any]]:
        query = sa.select(alias_events).where(alias_events.c.dataset == dataset)
        if alias:
            query = query.where(alias_events.c.alias == alias)
        with self.engine.connect() as conn:
            return [_decode(r) for r in conn.execute(query.order_by(alias_events.c.id))]

    def champion_at(self, dataset: str, day: dt.date) -> int | None:
        """The champion version in force after the run of `day` (events in logical-date order)."""
        return self.alias_at(dataset, "champion", day)

    def latest_event_date(self, dataset: str, alias: str = "champion") -> str | None:
        query = sa.select(sa.func.max(alias_events.c.logical_date)).where(
            alias_events.c.dataset == dataset, alias_events.c.alias == alias
        )
        with self.engine.connect() as conn:
            return conn.execute(query).scalar()

    def alias_at(self, dataset: str, alias: str, day: dt.date) -> int | None:
        """The version `alias` named after the run of `day` (its events in logical-date order)."""
        query = (
            sa.select(alias_events.c.after_version)
            .where(
                alias_events.c.dataset == dataset,
                alias_events.c.alias == alias,
                alias_events.c.logical_date <= day.isoformat(),
            )
            .order_by(alias_events.c.logical_date.desc(), alias_events.c.id.desc())
            .limit(1)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return row[0] if row else None

    def latest_alias(self, dataset: str, alias: str) -> dict[str, Any] | None:
        """The latest event of `alias` in the timeline (what the MLflow alias must name now), or None."""
        events = self.alias_events(dataset, alias)
        return max(events, key=lambda e: (e["logical_date"], e["id"])) if events else None

    def record_promotion(
        self,
        *,
        dataset: str,
        model: str,
        day: dt.date,
        version: int,
        before: int | None,
        reason: str,
        dag_run_id: str | None,
    ) -> None:
        """The promotion of `version` on `day`, in one transaction: the `champion` event, the `previous` event
        (when there was a champion) and the day's row. Once this commits the promotion has happened; the
        MLflow aliases and tags are a mirror that `ml.registry` brings up to date (and repairs)."""
        previous_before = self.alias_at(dataset, "previous", day)
        iso = day.isoformat()
        with self.engine.begin() as conn:
            self.add_alias_event(
                conn,
                dataset=dataset,
                model=model,
                alias="champion",
                logical_date=iso,
                before_version=before,
                after_version=version,
                reason=reason,
                dag_run_id=dag_run_id,
            )
            if before is not None:
                self.add_alias_event(
                    conn,
                    dataset=dataset,
                    model=model,
                    alias="previous",
                    logical_date=iso,
                    before_version=previous_before,
                    after_version=before,
                    reason=f"replaced by version {version}",
                    dag_run_id=dag_run_id,
                )
            values = _encode(
                {"promotion": "promoted", "promotion_reason": reason, "candidate_version": version}
            )
            where = (days.c.dataset == dataset, days.c.day == iso)
            if not conn.execute(days.update().where(*where).values(**values, updated_at=_now())).rowcount:
                conn.execute(days.insert().values(dataset=dataset, day=iso, updated_at=_now(), **values))

    # ---- lock -----------------------------------------------------------------------------------------
    def locks(self) -> list[dict[str, Any]]:
        """Every lock row (held, or left by a holder that died and nobody has asked for since)."""
        with self.engine.connect() as conn:
            return [_decode(r) for r in conn.execute(sa.select(locks).order_by(locks.c.name))]

    @contextmanager
    def lock(self, name: str, holder: str, timeout_s: float = 120.0, stale_s: float = 60.0) -> Iterator[None]:
        """A database lock: a row whose primary key only one holder can insert.

        The row says who holds it (host, pid, the process's start time) and the holder renews a heartbeat
        every `stale_s` / 6 seconds from a thread. A waiter takes the lock over at once when its holder is a
        process of this host that no longer exists (killed: kill -9, out of memory), and after `stale_s`
        seconds without a heartbeat when the holder is on another host (a lost worker). A live holder is
        waited for up to `timeout_s`, then PromotionLockedError names it.
        """
        import time

        from ml.exceptions import PromotionLockedError

        me = liveness.this_process()
        deadline = time.monotonic() + timeout_s
        while True:
            now = _now()
            try:
                with self.engine.begin() as conn:
                    conn.execute(
                        locks.insert().values(
                            name=name, holder=holder, acquired_at=now, heartbeat_at=now, **me
                        )
                    )
                break
            except sa.exc.IntegrityError:
                pass
            with self.engine.connect() as conn:
                row = conn.execute(sa.select(locks).where(locks.c.name == name)).first()
            if row is None:  # released in between
                continue
            dead = liveness.why_dead(row._mapping, stale_s)
            if dead:
                with self.engine.begin() as conn:
                    taken = conn.execute(
                        locks.delete().where(
                            locks.c.name == name,
                            locks.c.holder == row.holder,
                            locks.c.acquired_at == row.acquired_at,
                        )
                    ).rowcount
                if taken:
                    log.warning(
                        "lock %r: taken over from %s (%s)", name, liveness.describe(row._mapping), dead
                    )
                continue
            if time.monotonic() > deadline:
                raise PromotionLockedError(
                    f"lock {name!r} is held by another process: {liveness.describe(row._mapping)}; waited {timeout_s:.0f} s"
                )
            time.sleep(0.2)
        # this holding, exactly: a holder taken over (wrongly thought dead) must not release its successor's
        mine = (locks.c.name == name, locks.c.holder == holder, locks.c.acquired_at == now)
        beat = liveness.Heartbeat(self.engine, name, locks.update().where(*mine), max(stale_s / 6, 0.05))
        beat.start()
        try:
            yield
        finally:
            beat.stop()
            with self.engine.begin() as conn:
                conn.execute(locks.delete().where(*mine))
