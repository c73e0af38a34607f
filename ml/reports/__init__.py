"""The HTML pages driftwatch writes itself, from Jinja2 templates (ml/reports/templates/*.html.j2).

    validation_page   a day's validation result               (the Validation tab, validation.html)
    monitor_page      a day's model monitors                  (the Model monitor tab, model_monitor.html)
    history_page      a dataset's model history               (the Model history tab, history.html)
    overview_page     every dataset's history                 (the Model history view, several datasets)
    missing_page      why a report is not there               (the UI's 404 pages)

One layout (`base.html.j2`: the stylesheet, once), every value escaped, no script: the UI serves these pages
under a Content-Security-Policy that allows none (`ml.report_html.PAGE_CSP`). The Evidently report is not one
of them: `ml.report_html` makes it safe.
"""

from ml.reports.pages import (
    OverviewSection,
    history_events,
    history_page,
    missing_page,
    monitor_page,
    overview_page,
    validation_page,
)

__all__ = [
    "OverviewSection",
    "history_events",
    "history_page",
    "missing_page",
    "monitor_page",
    "overview_page",
    "validation_page",
]
