"""Running an expectation suite with Great Expectations 1.x.

Great Expectations takes seconds to import, so it is imported lazily and one ephemeral context is kept per
process; each run validates a batch of the frame against a suite that is never added to the context.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ml.config import Settings
from ml.validation.base import DAY_PARAMETER

if TYPE_CHECKING:
    import pandas as pd

# {expectation id: (success, GX's result dict, the error GX caught while checking, if any)}
Outcomes = dict[str, tuple[bool, dict[str, Any], str | None]]

_GX_LOCK = threading.Lock()
_GX: tuple[Any, Any] | None = None


def _gx_context() -> tuple[Any, Any]:
    """(ephemeral context, whole-dataframe batch definition), created once per process (~3-5 s)."""
    global _GX
    if _GX is None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context = gx.get_context(mode="ephemeral")
        # tqdm bars on stderr would flood task logs
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        batch_definition = (
            context.data_sources.add_pandas("driftwatch")
            .add_dataframe_asset("batch")
            .add_batch_definition_whole_dataframe("whole")
        )
        _GX = (context, batch_definition)
    return _GX


def run_suite(name: str, spec: Sequence[Mapping[str, Any]], frame: pd.DataFrame, day: dt.date) -> Outcomes:
    """Run the expectations of `spec` (`build_suite_spec` entries) on the frame, the suite parameter `day`
    set to the logical day. `name` prefixes the suite's unique name."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    expectations = []
    for entry in spec:
        cls = getattr(gxe, "".join(part.title() for part in entry["type"].split("_")))
        expectations.append(cls(**entry["kwargs"], meta=dict(entry["meta"])))

    with _GX_LOCK:
        _context, batch_definition = _gx_context()
        # validated as GX's `Batch.validate` does it: the suite is not added to the context, so nothing is
        # stored or removed (registering the suite and a validation definition, and storing the result in
        # the context's stores, was ~0.25 s of a task's ~0.9 s of validation); the name is only a label
        suite = gx.ExpectationSuite(name=f"{name}-{day.isoformat()}", expectations=expectations)
        batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
        run = batch.validate(suite, expectation_parameters={DAY_PARAMETER: [day.isoformat()]})

    outcomes: Outcomes = {}
    for r in run.results:
        ident = str((r.expectation_config.meta or {}).get("id"))
        outcomes[ident] = (bool(r.success), dict(r.result or {}), _exception_message(r.exception_info))
    return outcomes


def _exception_message(info: Any) -> str | None:
    """GX reports errors either flat or keyed by metric id; return the first message."""
    if not info:
        return None
    if isinstance(info, Mapping) and "raised_exception" in info:
        return str(info.get("exception_message")) if info.get("raised_exception") else None
    if isinstance(info, Mapping):
        for value in info.values():
            message = _exception_message(value)
            if message:
                return message
    return None


def gx_frame(settings: Settings, frame: pd.DataFrame, usable: set[str]) -> pd.DataFrame:
    """The frame GX sees: the date column as ISO strings, object-typed numeric columns as float."""
    import pandas as pd
    from pandas.api import types as ptypes

    out = frame
    date = settings.date_column
    if date in usable:
        series = frame[date]
        if ptypes.is_datetime64_any_dtype(series):
            normalised = series.dt.strftime("%Y-%m-%d")
        else:
            normalised = series.map(lambda x: x.isoformat()[:10] if isinstance(x, dt.date) else x)
        if not normalised.equals(series):
            out = out.copy()
            out[date] = normalised
    for col in settings.numeric:
        if col in usable and ptypes.is_object_dtype(frame[col]):
            if out is frame:
                out = out.copy()
            out[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    return out
