"""The model the server scores with, following a registry alias (`serving.alias`, default `champion`).
MLflow's own server resolves `models:/name@alias` once at start and never again (mlflow/mlflow#4039).

`Follower` holds the served version behind one reference (`served`): a request reads it once and scores with
that model to the end, so a switch never fails nor delays a request in flight. A background thread asks the
registry every `serving.poll_seconds` which version the alias names; on a change it loads that version beside
the old one (through the local model cache the tasks use, `registry._local_model_dir`), scores a probe with it
(the model's own input example, else a row of missing values) and only then swaps the reference.

A version that cannot be loaded or fails the probe is not served: the old one stays, `health()` says
`degraded` with the error, one `serving` alert is sent per version (ml/alerts.py), and the load is tried
again on later polls (backing off to once a minute). An alias that names nothing any more keeps the current
model, and so does an unreachable registry; both are reported by `health()`.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml.config import Settings

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

log = logging.getLogger(__name__)

RETRY_MAX_SECONDS = (
    60.0  # a version that failed is tried again after poll_seconds, then 2x, 4x ... up to this
)


@dataclass(frozen=True)
class Served:
    """One loaded version. Never changed: a switch builds another."""

    version: int
    run_id: str | None
    model: Any
    loaded_at: dt.datetime
    fast: Callable[[pd.DataFrame], np.ndarray] | None = None  # ml/serving/fast.py, when exact for this model

    def score(self, settings: Settings, features: pd.DataFrame) -> np.ndarray:
        """Positive-class probabilities of `features`: the numpy path when it was proven exact at load, else
        the pipeline's."""
        return self.fast(features) if self.fast is not None else score(settings, self.model, features)


def score(settings: Settings, model: Any, features: pd.DataFrame) -> np.ndarray:
    """Positive-class probabilities of `features` (columns in the model's order), exactly as the pipeline
    scores a batch (`ml.train.predict_proba`; the label it splits off is not needed here)."""
    import numpy as np

    from ml.train import predict_proba

    if settings.label not in features.columns:
        features = features.assign(**{settings.label: None})
    return np.asarray(predict_proba(model, settings, features), dtype="float64")


def _short(exc: BaseException, limit: int = 500) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _where(uri: str) -> str:
    """The tracking URI for a message, without a password should it carry one."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


class Follower:
    """The served version of `settings.registered_model`, kept on the version `serving.alias` names.

    `alert(version, serving, error)` is called once per version that cannot be served (default: a `serving`
    alert through ml.alerts, sent once per dataset, day and version).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        alert: Callable[[int, int | None, str], None] | None = None,
        alias: str | None = None,
        drop_when_gone: bool = False,
    ):
        self.settings = settings
        self.alias = alias or settings.serving.alias
        # the alias removed: stop serving (a shadow test that ended) rather than keep the last version
        self.drop_when_gone = drop_when_gone
        self.poll_seconds = settings.serving.poll_seconds
        self._alert = alert or self._send_alert
        self._served: Served | None = None
        self.alias_version: int | None = None  # what the registry answered last (None: no such alias)
        self.alias_known = False  # the registry has answered at least once
        self.registry_error: str | None = None
        self.failed: dict[str, Any] | None = None  # {"version", "error", "at"}: the version not served
        self._retry: dict[int, tuple[int, float]] = {}  # version -> (failures, monotonic time of next try)
        self._alerted: set[int] = set()
        self._client: Any = None
        self._poll_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def served(self) -> Served | None:
        """The version requests are scored with now. Read it once per request."""
        return self._served

    def start(self) -> Follower:
        """Load what the alias names now (synchronously), then follow it from a background thread."""
        if self._thread is None:
            self.poll()
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name=f"follow-{self.alias}", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            # a poll in progress may be downloading a model: it ends with the process (daemon thread)
            self._thread.join(timeout=5)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - the follower must outlive any one poll
                log.exception("serving: a poll of alias %r failed", self.alias)

    def _registry(self) -> Any:
        if self._client is None:
            from ml.registry import client

            self._client = client(self.settings)
        return self._client

    def poll(self) -> Served | None:
        """Ask the registry once; load and switch when the alias names another version. Returns the served."""
        from ml.promotion import _alias_version

        with self._poll_lock:
            t0 = time.monotonic()
            try:
                version = _alias_version(self._registry(), self.settings, self.alias)
            except Exception as exc:  # noqa: BLE001 - unreachable, auth, timeouts: keep serving, report it
                if self.registry_error is None:
                    log.warning(
                        "serving: registry unreachable, still serving what was loaded: %s", _short(exc)
                    )
                self.registry_error = (
                    f"registry {_where(self.settings.tracking_uri)} unreachable: {_short(exc)}"
                )
                return self._served
            if self.registry_error is not None:
                log.info("serving: the registry answers again")
            self.registry_error = None
            if version != self.alias_version or not self.alias_known:
                log.info(
                    "serving: alias %r of %s names %s",
                    self.alias,
                    self.settings.registered_model,
                    f"v{version}" if version is not None else "no version",
                )
            self.alias_version, self.alias_known = version, True
            current = self._served
            if self.failed is not None and self.failed["version"] != version:
                self.failed = None  # the alias moved on from the version that failed
            if version is None and self.drop_when_gone and current is not None:
                log.info("serving: alias %r removed: v%s no longer used", self.alias, current.version)
                self._served = current = None
            if version is None or (current is not None and current.version == version):
                return current
            failures, next_try = self._retry.get(version, (0, 0.0))
            if time.monotonic() >= next_try:
                self._switch(version, current, failures, t0)
            return self._served

    def _switch(self, version: int, current: Served | None, failures: int, t0: float) -> None:
        was = current.version if current is not None else None
        try:
            loaded = self._load(version)
        except Exception as exc:  # noqa: BLE001 - a broken version must never stop the one being served
            error = _short(exc)
            failures += 1
            delay = min(RETRY_MAX_SECONDS, self.poll_seconds * 2 ** (failures - 1))
            self._retry[version] = (failures, time.monotonic() + delay)
            self.failed = {"version": version, "error": error, "at": _now().isoformat(timespec="seconds")}
            log.error(
                "serving: v%s cannot be served (%s); %s; trying again in %.0f s",
                version,
                error,
                f"still serving v{was}" if was is not None else "serving nothing",
                delay,
            )
            if version not in self._alerted:
                self._alerted.add(version)
                self._alert(version, was, error)
            return
        self._served = loaded  # the switch: one reference; requests in flight keep the model they read
        self.failed = None
        self._retry.pop(version, None)
        log.info(
            "serving v%s (was %s), switched in %.1f s",
            version,
            f"v{was}" if was is not None else "nothing",
            time.monotonic() - t0,
        )

    def _load(self, version: int) -> Served:
        import mlflow

        from ml.registry import _local_model_dir

        mv = self._registry().get_model_version(self.settings.registered_model, str(version))
        path = _local_model_dir(self.settings, version, mv.run_id)
        model = mlflow.sklearn.load_model(str(path))
        self._probe(model, path, version)
        from ml.serving.fast import check_rows, compile_scorer

        fast = compile_scorer(
            self.settings,
            model,
            check_rows(self.settings, _input_example(path)),
            lambda rows: score(self.settings, model, rows),
        )
        return Served(version=version, run_id=mv.run_id, model=model, loaded_at=_now(), fast=fast)

    def _probe(self, model: Any, path: Path, version: int) -> None:
        """Score the model's input example (else one row of missing values): it must give one probability
        in [0, 1] per row.

        Raises:
            ModelError: it did not.
        """
        import numpy as np
        import pandas as pd

        from ml.exceptions import ModelError

        rows = _input_example(path)
        features = self.settings.features
        if rows is None or len(rows) == 0 or any(c not in rows.columns for c in features):
            rows = pd.DataFrame(
                {
                    **{c: [np.nan] for c in self.settings.numeric},
                    **{c: [None] for c in self.settings.categorical},
                }
            )
        rows = rows[features]
        scores = score(self.settings, model, rows)
        if (
            scores.shape != (len(rows),)
            or not np.all(np.isfinite(scores))
            or scores.min() < 0
            or scores.max() > 1
        ):
            raise ModelError(
                f"v{version} failed the probe: scoring {len(rows)} rows gave {scores.shape} values "
                f"{scores[:3].tolist()}..., expected {len(rows)} probabilities in [0, 1]"
            )

    def _send_alert(self, version: int, serving: int | None, error: str) -> None:
        from ml import alerts

        try:
            alerts.send_once(
                self.settings, alerts.serving_alert(self.settings, self.alias, version, serving, error)
            )
        except Exception as exc:  # noqa: BLE001 - alerting must not stop the follower
            log.error("serving: the alert about v%s was not sent: %s", version, _short(exc))

    def health(self) -> dict[str, Any]:
        """{"status": ok | degraded | no_model, "model_version", "alias_version", "alias", "error"}."""
        served = self._served
        problems = []
        if self.failed is not None:
            problems.append(f"v{self.failed['version']} cannot be served: {self.failed['error']}")
        if self.registry_error is not None:
            problems.append(self.registry_error)
        elif self.alias_known and self.alias_version is None:
            problems.append(f"no version of {self.settings.registered_model} has the alias '{self.alias}'")
        if served is None:
            status = "no_model"
            problems.insert(0, "no champion yet")
        else:
            status = "degraded" if problems else "ok"
            if problems:
                problems.append(f"still serving v{served.version}")
        return {
            "status": status,
            "model_version": served.version if served is not None else None,
            "alias_version": self.alias_version,
            "alias": self.alias,
            "error": "; ".join(problems) or None,
        }


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _input_example(path: Path) -> pd.DataFrame | None:
    """The input example logged with the model (`log_challenger` logs five training rows), if any."""
    try:
        from mlflow.models import Model

        example = Model.load(str(path)).load_input_example(str(path))
    except Exception:  # noqa: BLE001 - no example, or an unreadable one: the probe uses a synthetic row
        return None
    import pandas as pd

    return example if isinstance(example, pd.DataFrame) else None
