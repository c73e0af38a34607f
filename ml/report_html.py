"""HTML that shows data without ever running it: the Evidently report made safe, and the security headers of
every page the UI plugin (ml/ui.py) serves.

Evidently 0.7.23 puts a report's data into its HTML as a JavaScript literal inside a `<script>` element
(`evidently/legacy/utils/dashboard.py`, `file_html_template`: `var metric_<id> = <json.dumps(...)>;`).
`json.dumps` leaves `<`, `>` and `&` as they are, so a category or a column name
`</script><script>...</script>` ends that element and runs as a script of the page, with the viewer's
Airflow session when the page is shown in the UI.

`evidently_report_html(snapshot)` renders the report through Evidently's own `Snapshot.get_html_str`, takes
its two data values back out (`parse_evidently_html`) and writes them into a document of ours
(`safe_evidently_html`): the same `<style>`, bundle and `drawDashboard` call as Evidently's page, the data
as JSON whose `<`, `>`, `&`, U+2028 and U+2029 are `\\u` escapes, so nothing inside a string can end the
script or start a comment; under fixed names, so re-rendering a page of ours gives the same bytes. The plugin
serves every stored report through `evidently_page`, which re-renders the file the same way, so a report
written before this change (Evidently's raw page) is served safe too, and a file in neither layout is
refused rather than served.

Defence in depth, for the plugin (`ml/ui.py` sends these headers):

- `evidently_csp(script)`: the only scripts allowed are the four of our document, by SHA-256 (Evidently's
  3.5 MB bundle and two one-line scripts are fixed for the installed Evidently; the data script is hashed
  as it is rendered, by us). No `'unsafe-inline'`, no `'unsafe-eval'`: the bundle needs neither (its only
  `new Function` is a fallback for browsers without `globalThis`), so an injected `<script>`, an `onerror=`
  attribute or a `javascript:` URL is blocked even if the escaping ever failed. `sandbox allow-scripts`
  makes the report run in an opaque origin, without the viewer's cookies or the Airflow UI's DOM, even when
  it is opened directly; `connect-src 'none'` and `form-action 'none'` leave it no way to send anything.
  Styles stay `'unsafe-inline'` (Evidently's components inject their CSS at run time); with
  `default-src 'none'` a style cannot load anything either.
- `PAGE_CSP` for the pages driftwatch writes itself (validation, model monitor, history, messages): no
  script at all (`default-src 'none'` and a `sandbox` without `allow-scripts`), inline styles only.
- `WRAPPER_CSP` for the small page that frames the report (`wrapper_page`): it may frame our own origin
  and nothing else runs in it.

Only the standard library here: the plugin imports this module in the API server, which never imports
Evidently (it takes ~7 s); Evidently's static files are found on disk without importing the package.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

from ml.exceptions import ReportFormatError

# the names inside our document; Evidently's page uses random ones (metric_<uuid4 hex>)
DASHBOARD_VAR = "driftwatch_dashboard"
GRAPHS_VAR = "driftwatch_graphs"
ROOT_ID = "root_driftwatch"
GENERATOR = "driftwatch safe Evidently report 1"

GLOBAL_SCRIPT = "var global = globalThis"
DRAW_SCRIPT = f'window.drawDashboard({DASHBOARD_VAR}, new Map(Object.entries({GRAPHS_VAR})), "{ROOT_ID}");'

COMMON_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
_FRAMING = "frame-ancestors 'self'; base-uri 'none'; form-action 'none'"
PAGE_CSP = (
    f"default-src 'none'; style-src 'unsafe-inline'; img-src data:; {_FRAMING}; sandbox allow-same-origin"
)

WRAPPER_STYLE = "html,body{margin:0;height:100%}iframe{display:block;border:0;width:100%;height:100%}"

# a line `var <name> = <one line of JSON>;`: json.dumps writes no raw line break (not even U+2028/9 with
# its default ensure_ascii), so data can never start such a line of its own
_DATA_LINE = re.compile(r"^[ \t]*var ([A-Za-z_$][\w$]*) = (.*);[ \t]*$", re.MULTILINE)
_JSON_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def script_json(value: Any) -> str:
    """`value` as a JavaScript literal that is safe inside `<script>`: JSON with `<`, `>`, `&`, U+2028 and
    U+2029 as `\\u` escapes (they can only occur inside strings, where the escape means the same character).
    NaN and infinities stay JavaScript literals, as Evidently writes them."""
    text = json.dumps(value)
    for char, escape in _JSON_ESCAPES.items():
        text = text.replace(char, escape)
    return text


def csp_hash(script: str) -> str:
    """The CSP source expression allowing exactly this inline script text."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode() + "'"


# ---------------------------------------------------------------------------------------------- Evidently


def evidently_report_html(snapshot: Any) -> str:
    """The report of an Evidently 0.7 `Snapshot` (what `snapshot.save_html` would write), made safe."""
    dashboard, graphs = parse_evidently_html(snapshot.get_html_str(as_iframe=False))
    return safe_evidently_html(dashboard, graphs)


def write_evidently_report(snapshot: Any, path: Path) -> None:
    """Write `evidently_report_html(snapshot)` to `path` (UTF-8)."""
    Path(path).write_text(evidently_report_html(snapshot), encoding="utf-8")


def parse_evidently_html(text: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(dashboard, additional graphs) of a stored report: Evidently's own page or ours.

    Both carry the data in the first two `var ... = ...;` lines, before any script of the page: Evidently's
    as `metric_<id>` / `additional_graphs_metric_<id>`, ours as `driftwatch_dashboard` / `driftwatch_graphs`.

    Raises:
        ReportFormatError: no such pair of lines, or their values are not JSON objects.
    """
    lines = _DATA_LINE.finditer(text)
    found = [next(lines, None), next(lines, None)]
    if found[0] is None or found[1] is None:
        raise ReportFormatError(
            "not an Evidently report: expected its data as two 'var <name> = <JSON>;' lines. "
            "Re-run detect_drift for the day to write the report again."
        )
    (first, first_json), (second, second_json) = found[0].groups(), found[1].groups()
    if (first, second) != (DASHBOARD_VAR, GRAPHS_VAR) and second != f"additional_graphs_{first}":
        raise ReportFormatError(
            f"not an Evidently report: data variables {first!r} and {second!r} do not belong together. "
            "Re-run detect_drift for the day to write the report again."
        )
    values = []
    for name, raw in ((first, first_json), (second, second_json)):
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise ReportFormatError(f"not an Evidently report: {name} is not JSON ({exc}).") from None
        if not isinstance(value, dict):
            raise ReportFormatError(
                f"not an Evidently report: {name} is a {type(value).__name__}, not an object."
            )
        values.append(value)
    return values[0], values[1]


def data_script(dashboard: dict[str, Any], graphs: dict[str, Any]) -> str:
    """The text of the document's data script (its CSP hash changes with the report)."""
    return f"\n    var {DASHBOARD_VAR} = {script_json(dashboard)};\n    var {GRAPHS_VAR} = {script_json(graphs)};\n"


def safe_evidently_html(dashboard: dict[str, Any], graphs: dict[str, Any], script: str | None = None) -> str:
    """Evidently 0.7.23's standalone page (`file_html_template`: its style with the embedded icon font, its
    bundle, the same `drawDashboard` call) around `dashboard` and `graphs` written by `script_json`
    (`script`: their `data_script`, when already rendered)."""
    static = _evidently_static()
    script = data_script(dashboard, graphs) if script is None else script
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<meta name="generator" content="{GENERATOR}">
<style>
/* fallback */
@font-face {{
  font-family: 'Material Icons';
  font-style: normal;
  font-weight: 400;
  src: url(data:font/ttf;base64,{static["font"]}) format('woff2');
}}
.center-align {{ text-align: center; }}
.material-icons {{
  font-family: 'Material Icons'; font-weight: normal; font-style: normal; font-size: 24px; line-height: 1;
  letter-spacing: normal; text-transform: none; display: inline-block; white-space: nowrap;
  word-wrap: normal; direction: ltr; text-rendering: optimizeLegibility; -webkit-font-smoothing: antialiased;
}}
</style>
<script>{script}</script>
</head>
<body>
<div id="{ROOT_ID}"></div>
<script>{GLOBAL_SCRIPT}</script>
<script>{static["bundle"]}</script>
<script>{DRAW_SCRIPT}</script>
</body>
</html>
"""


def evidently_csp(script: str) -> str:
    """The Content-Security-Policy for the page `safe_evidently_html` renders around `script`, its data script."""
    scripts = " ".join([csp_hash(script), *_static_hashes()])
    return (
        f"default-src 'none'; script-src {scripts}; style-src 'unsafe-inline'; img-src data: blob:; "
        f"font-src data:; connect-src 'none'; {_FRAMING}; sandbox allow-scripts"
    )


def evidently_page(text: str) -> tuple[str, str]:
    """(document, Content-Security-Policy) to serve for a stored report, whichever layout it has.

    Raises:
        ReportFormatError: see `parse_evidently_html`.
    """
    dashboard, graphs = parse_evidently_html(text)
    script = data_script(dashboard, graphs)
    return safe_evidently_html(dashboard, graphs, script), evidently_csp(script)


def is_evidently_html(text: str) -> bool:
    """Whether a stored HTML file is an Evidently report (ours or Evidently's own page)."""
    return "window.drawDashboard(" in text


@functools.cache
def _evidently_static() -> dict[str, str]:
    """Evidently's bundle and icon font from its package directory, read without importing Evidently."""
    spec = importlib.util.find_spec("evidently")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("evidently is not installed: its report bundle is needed to show a report")
    static = Path(next(iter(spec.submodule_search_locations))) / "nbextension" / "static"
    bundle = (static / "index.js").read_text(encoding="utf-8")
    if "</script" in bundle.lower():  # Evidently's own page inlines it the same way
        raise ReportFormatError(
            f"{static / 'index.js'}: the bundle contains '</script' and cannot be inlined."
        )
    return {
        "bundle": bundle,
        "font": base64.b64encode((static / "material-ui-icons.woff2").read_bytes()).decode(),
    }


@functools.cache
def _static_hashes() -> tuple[str, ...]:
    return csp_hash(GLOBAL_SCRIPT), csp_hash(_evidently_static()["bundle"]), csp_hash(DRAW_SCRIPT)


# ---------------------------------------------------------------------------------------------- our pages


def wrapper_page(title: str, src: str) -> str:
    """A page of ours that shows `src` (the report route) in an iframe sandboxed to scripts only: no
    `allow-same-origin`, so the report runs in an opaque origin whatever its own headers say."""
    e = html.escape
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{e(title)}</title>"
        f"<style>{WRAPPER_STYLE}</style></head><body>"
        f"<iframe id='driftwatch-report' sandbox='allow-scripts' referrerpolicy='no-referrer' "
        f"src='{e(src)}' title='{e(title)}'></iframe></body></html>"
    )


WRAPPER_CSP = f"default-src 'none'; frame-src 'self'; style-src {csp_hash(WRAPPER_STYLE)}; {_FRAMING}"
