"""What every task of a day's run starts from: the dataset's settings, the history, the logical date, the
run's id and parameters. The logical date picks the data; nothing reads "now" to decide anything.

The serving champion of a day is the one in force after the previous day's run, read from the alias audit
log, so re-running a day or backfilling a range reproduces its decisions.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from ml.config import Settings, load_settings
from ml.data import as_date
from ml.history import History

if TYPE_CHECKING:
    from ml.policy import RetrainPolicy


@lru_cache(maxsize=16)
def settings_for(dataset: str) -> Settings:
    """The dataset's settings, loaded once per process (a task process runs one dataset)."""
    return load_settings(dataset)


@dataclass(frozen=True)
class RunParams:
    """A run's parameters (the DAG's params on a manual run; the defaults otherwise).

    `policy` replaces the dataset's retrain policy (the replay's calendar policies); None: the dataset's
    drift-triggered policy, with `drift_share` / `quality_drop` overrides, or forced by `force_retrain`.
    """

    force_retrain: bool = False
    dry_run: bool = False
    drift_share: float | None = None
    quality_drop: float | None = None
    min_delta: float | None = None
    model_params: dict[str, Any] = field(default_factory=dict)
    policy: RetrainPolicy | None = None
    approval: str | None = None  # auto | manual: override promotion.approval's question (None: as configured)

    @classmethod
    def from_airflow(cls, params: Any) -> RunParams:
        """From an Airflow run's `params` (a mapping; unknown keys such as `dataset` are ignored)."""
        return cls(
            force_retrain=bool(params.get("force_retrain")),
            dry_run=bool(params.get("dry_run")),
            drift_share=params.get("drift_share"),
            quality_drop=params.get("quality_drop"),
            min_delta=params.get("min_delta"),
            model_params=dict(params.get("model_params") or {}),
            approval=params.get("approval"),
        )


@dataclass(frozen=True)
class Day:
    """One dataset's logical date, as one run processes it."""

    settings: Settings
    history: History
    date: dt.date
    run_id: str | None = None
    run_url: str | None = None
    params: RunParams = field(default_factory=RunParams)

    @classmethod
    def of(
        cls,
        dataset: str | Settings,
        date: str | dt.date,
        run_id: str | None = None,
        *,
        run_url: str | None = None,
        params: RunParams | None = None,
    ) -> Day:
        s = dataset if isinstance(dataset, Settings) else settings_for(dataset)
        return cls(s, History(s.history_url), as_date(date), run_id, run_url, params or RunParams())

    @property
    def name(self) -> str:
        return self.settings.name

    def serving_champion(self) -> int | None:
        """The champion that serves this day: the one in force after the previous day's run."""
        return self.history.champion_at(self.settings.name, self.date - dt.timedelta(days=1))

    def row(self) -> dict[str, Any]:
        """The day's history row as recorded so far (empty before validation)."""
        return self.history.get_day(self.settings.name, self.date) or {}

    def record(self, **fields: Any) -> None:
        """Write fields of the day's history row (the record for people, the UI and the CLI)."""
        self.history.update_day(self.settings.name, self.date, **fields)

    def __str__(self) -> str:
        return f"{self.settings.name} {self.date}"
