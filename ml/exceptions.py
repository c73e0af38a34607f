"""Errors driftwatch raises on purpose. Each subclasses a built-in so callers can catch broadly."""

from __future__ import annotations


class DriftwatchError(Exception):
    """Base of every error driftwatch raises deliberately."""


class ConfigError(DriftwatchError, ValueError):
    """A dataset YAML or an environment override is invalid; the message names the key path."""


class BatchMissingError(DriftwatchError, FileNotFoundError):
    """The partition for a logical date is not there (yet)."""


class DataQualityError(DriftwatchError, ValueError):
    """A batch breaks the dataset's expectations; the message names file, column, expected and found."""


class SchemaError(DataQualityError):
    """Columns missing, unexpected, or of the wrong type."""


class UnreadableBatchError(DataQualityError):
    """The batch file cannot be read at all (corrupt parquet, empty file, not parquet)."""


class ReportFormatError(DriftwatchError, ValueError):
    """A stored report is not in a layout driftwatch can re-render safely, so it is not served."""


class ModelError(DriftwatchError, RuntimeError):
    """Training, evaluation or the registry failed; the champion is left as it was."""


class PromotionLockedError(ModelError):
    """Another process holds the promotion lock for this dataset."""


class StepSkipped(DriftwatchError):
    """A step has nothing to do on this run (Airflow marks the task skipped; the in-process runner too)."""
