"""The Jinja2 environment of the pages driftwatch writes (templates in ml/reports/templates/).

Every value is escaped (`autoescape=True`, whatever the template's name), and a name a template uses but the
page does not pass fails the rendering (`StrictUndefined`) instead of showing an empty string. The pages run
no script: they are served under `report_html.PAGE_CSP` (no script at all), and no template has a
`<script>`, an event handler attribute or a `|safe` filter; the only markup passed in is the history plot,
matplotlib's SVG (`Markup` in `ml.reports.pages.history_page`).
"""

from __future__ import annotations

import functools
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

DASH = "—"  # a number that is not known


def number(value: Any, digits: int = 3) -> str:
    """A number for a page: floats (numpy's too) with `digits` decimals, None as '', anything else as str."""
    if value is None:
        return ""
    if isinstance(value, float) or type(value).__name__.startswith("float"):
        return f"{float(value):.{digits}f}"
    return str(value)


def number_or_dash(value: Any, digits: int = 3) -> str:
    """`number(value)`, or a dash when there is nothing to show."""
    return number(value, digits) or DASH


@functools.cache
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("ml.reports", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["number"] = number
    env.filters["number_or_dash"] = number_or_dash
    return env


def render(template: str, **context: Any) -> str:
    """The page `template` (a file name under templates/) rendered with `context`."""
    return environment().get_template(template).render(**context)
