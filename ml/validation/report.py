"""The validation result as files: `validation.json` (the result) and `validation.html` (its page), in the
day's report folder."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ml.config import Settings
from ml.data import as_date
from ml.validation.result import ValidationResult

JSON_NAME = "validation.json"
HTML_NAME = "validation.html"


def render_html(settings: Settings, result: ValidationResult) -> str:
    """A self-contained HTML page: banner, rows, files, failures, then every check with its outcome."""
    from ml.reports import validation_page

    return validation_page(settings.name, result)


def write_reports(settings: Settings, result: ValidationResult) -> ValidationResult:
    """Write the JSON and HTML reports under `settings.report_dir(day)`; the result with their paths."""
    target = settings.report_dir(as_date(result.day))
    target.mkdir(parents=True, exist_ok=True)
    json_path, html_path = target / JSON_NAME, target / HTML_NAME
    result = dataclasses.replace(result, json_path=str(json_path), html_path=str(html_path))
    payload = {"dataset": settings.name, **result.to_dict()}
    _atomic_write(json_path, json.dumps(payload, indent=2, default=str))
    _atomic_write(html_path, render_html(settings, result))
    return result


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
