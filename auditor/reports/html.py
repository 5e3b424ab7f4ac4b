"""Self-contained HTML risk report.

`render_html(result)` turns a result (a `Report`, or a report.json dict) into one HTML file that works offline:
inline CSS, one small inline script (filters for the flagged-rows table), and a Content-Security-Policy that forbids
every network fetch. The script is allowed by its sha256 hash, computed here from `SCRIPT`.

Every string in the result is untrusted (dataset text, paths, reasons, even trait ids). The Jinja2 environment
autoescapes, and nothing from the result is ever marked safe: the only `Markup` built here is the fixed script text,
the charts (auditor/reports/charts.py) and excerpts whose every piece went through `markupsafe.escape` first.
"""
from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup

from auditor.reports.htmltext import highlight_excerpt
from auditor.reports.htmlview import MAX_FLAGS, page_view
from auditor.result import Report, as_report

__all__ = ["render_html", "highlight_excerpt", "MAX_FLAGS", "SCRIPT", "SCRIPT_SHA256", "CSP"]

TEMPLATES = Path(__file__).resolve().parent / "templates"

# The one inline script.  Plain ES5, no network, listeners via addEventListener.
# It must never contain the sequence "</" (it is emitted verbatim).
SCRIPT = """(function () {
  var box = document.getElementById('flag-filters');
  var table = document.getElementById('flag-table');
  if (!box || !table) { return; }
  var q = document.getElementById('flag-q');
  var sel = document.getElementById('flag-trait');
  var det = document.getElementById('flag-detector');
  var acc = document.getElementById('flag-hide-accepted');
  var count = document.getElementById('flag-count');
  var rows = Array.prototype.slice.call(table.tBodies[0].rows);
  var text = rows.map(function (r) { return r.textContent.toLowerCase(); });
  function apply() {
    var s = q.value.trim().toLowerCase();
    var t = sel.value;
    var d = det.value;
    var hideAcc = acc.checked;
    var shown = 0;
    rows.forEach(function (r, i) {
      var ok = (!t || r.getAttribute('data-trait') === t) &&
        (!d || r.getAttribute('data-detector') === d) &&
        (!hideAcc || r.getAttribute('data-accepted') !== '1') &&
        (!s || text[i].indexOf(s) !== -1);
      r.hidden = !ok;
      if (ok) { shown += 1; }
    });
    count.textContent = shown + ' of ' + rows.length + ' rows match';
  }
  q.addEventListener('input', apply);
  sel.addEventListener('change', apply);
  det.addEventListener('change', apply);
  acc.addEventListener('change', apply);
  box.hidden = false;
  apply();
})();"""
assert "</" not in SCRIPT and "<!--" not in SCRIPT

SCRIPT_SHA256 = base64.b64encode(hashlib.sha256(SCRIPT.encode("utf-8")).digest()).decode("ascii")

CSP = (
    "default-src 'none'; "
    "style-src 'unsafe-inline'; "
    f"script-src 'sha256-{SCRIPT_SHA256}'; "
    "img-src data:; "
    "base-uri 'none'; "
    "form-action 'none'"
)

_ENV: Environment | None = None


def _env() -> Environment:
    global _ENV
    if _ENV is None:
        _ENV = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True, undefined=StrictUndefined,
                           trim_blocks=True, lstrip_blocks=True)
    return _ENV


def render_html(result: Report | dict[str, Any]) -> str:
    """Render a result (schema_version 1) as one self-contained HTML page."""
    view = page_view(as_report(result))
    return _env().get_template("report.html.j2").render(csp=CSP, script=Markup(SCRIPT), **view)  # SCRIPT: fixed text, never data
