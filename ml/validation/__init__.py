"""Validate a daily batch: schema pre-checks in pandas, then a Great Expectations 1.x suite.

The suite is derived from the dataset YAML (`validation:` section) and, once a champion exists, from its
training data (the *reference*): numeric ranges widened by `range_tolerance`, categorical domains with an
allowance of `max_unseen_share` unseen rows. Nothing is raised for bad data: every problem becomes a
`Failure` naming file, column, expectation, expected and found, so the pipeline can quarantine the day.

    rules.py    the rules, each declared once: its expectation and its message (pure)
    base.py     what a rule is (Rule, FeatureRule), what it reads and returns, the registry RULES (pure)
    schema.py   the column set and dtypes, checked in pandas before GX runs (pure)
    result.py   Failure, ValidationResult and the wording messages share (pure)
    gx.py       running the suite with Great Expectations (imported lazily, one context per process)
    batch.py    validate_batch / validate_frame / validate_path: read, check, collect the failures
    report.py   validation.json and validation.html (the page: ml/reports/templates/validation.html.j2)
"""

from ml.validation.base import DAY_PARAMETER, RULES
from ml.validation.batch import validate_batch, validate_frame, validate_path
from ml.validation.report import HTML_NAME, JSON_NAME, render_html
from ml.validation.result import Failure, ValidationResult
from ml.validation.rules import build_suite_spec

__all__ = [
    "DAY_PARAMETER",
    "HTML_NAME",
    "JSON_NAME",
    "RULES",
    "Failure",
    "ValidationResult",
    "build_suite_spec",
    "render_html",
    "validate_batch",
    "validate_frame",
    "validate_path",
]
