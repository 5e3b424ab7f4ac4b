"""Self-contained HTML risk report.

``render_html(result)`` turns a result dict (see ``report.schema.json``) into one
HTML file that works offline: inline CSS, one small inline script (filters for
the flagged-rows table), and a Content-Security-Policy that forbids every
network fetch.  The script is allowed by its sha256 hash, computed here from
``SCRIPT``.

Every string in ``result`` is untrusted (dataset text, paths, reasons, even
trait ids).  The Jinja2 environment autoescapes, and nothing from the result is
ever marked safe: the only ``Markup`` built here is the fixed script text and
excerpts whose every piece went through ``markupsafe.escape`` first.

The small formatting helpers (severity order, number formatting, flag order,
hidden-transfer check) are shared with ``markdown.py``.
"""
from __future__ import annotations

import base64
import hashlib
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup, escape

from auditor.reports.charts import find_charts, interval_chart, is_chart, profile_chart, render_chart

__all__ = [
    "render_html",
    "highlight_excerpt",
    "MAX_FLAGS",
    "SCRIPT",
    "SCRIPT_SHA256",
    "CSP",
]

#: Most flagged rows rendered in the HTML table.
MAX_FLAGS = 500
#: Longest excerpt (in characters) shown per flagged row; longer ones are cut
#: to a window around the first match.
MAX_EXCERPT = 1000
#: Most ``matches`` entries used for highlighting per row.
MAX_MATCH_TERMS = 64
#: Upper bound (estimated bytes) of the flagged-rows table: past it the page lists fewer rows and says so,
#: so a dataset of any size (and rows of any shape) keeps the page well under 2 MB.
FLAG_BYTES_BUDGET = 1_500_000
ROW_OVERHEAD = 900
MAX_REASON = 400
#: Other flags on the same row (by digest) shown in a row's details.
MAX_SAME_ROW = 8
#: Evidence rows per detector section, metric rows per table.
MAX_EVIDENCE_ROWS = 40
MAX_METRIC_ROWS = 60
#: Forest plots per detector (one per kind of evidence) and rows in each.
MAX_FORESTS = 4
FOREST_ROWS = 15

SEVERITY: tuple[str, ...] = ("high", "medium", "low", "inconclusive", "clean")
SEVERITY_RANK = {v: i for i, v in enumerate(SEVERITY)}

HIDDEN_NOT_CHECKED = (
    "only content detectors ran: a silent content check does not clear hidden transfer"
)

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


# --------------------------------------------------------------------------
# shared formatting helpers (also used by markdown.py)
# --------------------------------------------------------------------------

def fmt_num(v: Any, group: bool = True) -> str:
    """Compact number: ints with thousands separators (``group``), floats to ~3 digits."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}" if group else str(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        a = abs(v)
        if a == 0:
            return "0"
        if a >= 1000:
            return f"{v:,.0f}" if group else f"{v:.0f}"
        if a >= 0.01:
            s = f"{v:.3f}".rstrip("0").rstrip(".")
            return s if s not in ("", "-") else "0"
        return f"{v:.3g}"
    return str(v)


def fmt_interval(iv: Any) -> str:
    if not iv or not isinstance(iv, (list, tuple)) or len(iv) != 2:
        return "—"
    return f"[{fmt_num(iv[0])}, {fmt_num(iv[1])}]"


def fmt_duration(s: Any) -> str:
    if not isinstance(s, (int, float)) or isinstance(s, bool) or math.isnan(s):
        return "—"
    if s < 60:
        return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"
    m, sec = divmod(int(round(s)), 60)
    if m < 60:
        return f"{m}m {sec:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m"


def clip(s: str, n: int) -> str:
    return s if len(s) <= n else s[: max(0, n - 1)] + "…"


def fmt_value(v: Any, depth: int = 0, limit: int = 400) -> str:
    """Render a metric/cost/metadata value (maybe nested) as one short line."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        # no grouping commas: they would be ambiguous inside "a, b" lists
        return fmt_num(v, group=False)
    if isinstance(v, str):
        return clip(v, 200 if depth else limit)
    if isinstance(v, Mapping):
        if not v:
            return "{}"
        if depth >= 3:
            return "{…}"
        items = list(v.items())
        parts = [f"{k}: {fmt_value(x, depth + 1)}" for k, x in items[:12]]
        if len(items) > 12:
            parts.append(f"… +{len(items) - 12} more")
        out = ", ".join(parts)
        return clip(out if depth == 0 else "{" + out + "}", limit)
    if isinstance(v, (list, tuple)):
        if not v:
            return "[]"
        if depth >= 3:
            return "[…]"
        parts = [fmt_value(x, depth + 1) for x in v[:12]]
        if len(v) > 12:
            parts.append(f"… +{len(v) - 12} more")
        return clip("[" + ", ".join(parts) + "]", limit)
    return clip(str(v), limit)


def trait_sort_key(t: Mapping[str, Any]):
    score = t.get("score")
    has = isinstance(score, (int, float)) and not isinstance(score, bool)
    return (
        SEVERITY_RANK.get(t.get("verdict"), len(SEVERITY)),
        not has,
        -(score if has else 0.0),
        str(t.get("id", "")),
    )


def sorted_traits(traits: Iterable[Mapping[str, Any]]) -> list:
    return sorted(traits or (), key=trait_sort_key)


def flag_sort_key(f: Mapping[str, Any]):
    score = f.get("score")
    has = isinstance(score, (int, float)) and not isinstance(score, bool)
    row = f.get("row")
    return (
        bool(f.get("accepted")),
        not has,
        -(score if has else 0.0),
        row if isinstance(row, int) else 0,
    )


def sorted_flags(flags: Iterable[Mapping[str, Any]]) -> list:
    """Not-yet-accepted first, then highest score, then row number."""
    return sorted(flags or (), key=flag_sort_key)


def hidden_detectors(detectors: Iterable[Mapping[str, Any]]) -> list[str]:
    """Names of detectors that ran and can see hidden (subliminal) transfer."""
    return [
        str(d.get("name"))
        for d in detectors or ()
        if d.get("status") == "ran" and d.get("sees_hidden_transfer")
    ]


def hidden_checked(trait: Mapping[str, Any], detectors: Sequence[Mapping[str, Any]]) -> tuple[bool, list[str]]:
    """(checked?, names of hidden-transfer detectors behind it).

    Uses ``trait.hidden_transfer_checked`` when present; otherwise falls back to
    whether any evidence came from a hidden-transfer detector that ran.
    """
    hidden = hidden_detectors(detectors)
    by_evidence = [
        str(e.get("detector"))
        for e in trait.get("evidence") or ()
        if str(e.get("detector")) in hidden
    ]
    by_evidence = list(dict.fromkeys(by_evidence))
    flag = trait.get("hidden_transfer_checked")
    if isinstance(flag, bool):
        return flag, (by_evidence or hidden) if flag else []
    return bool(by_evidence), by_evidence


def flags_total(result: Mapping[str, Any]) -> int:
    flags = result.get("flags") or []
    total = result.get("flags_total")
    if isinstance(total, int) and not isinstance(total, bool):
        return max(total, len(flags))
    return len(flags)


# --------------------------------------------------------------------------
# excerpt highlighting
# --------------------------------------------------------------------------

# Characters that are invisible or reorder text (controls, zero-width, bidi
# overrides, tag characters, variation selectors).  They are shown as visible
# code points so hidden payloads and "trojan source" tricks cannot hide.
_SUSPECT = re.compile(r"[^\x20-\x7e\t\n]")
_VARIATION = ((0xFE00, 0xFE0F), (0xE0100, 0xE01EF))


def _invisible(c: str) -> bool:
    if c in "\t\n":
        return False
    cat = unicodedata.category(c)
    if cat in ("Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp"):
        return True
    o = ord(c)
    return any(lo <= o <= hi for lo, hi in _VARIATION)


def _cc_markup(run: str) -> Markup:
    codes = [f"U+{ord(c):04X}" for c in run]
    shown = " ".join(codes[:3]) + (f" …×{len(codes)}" if len(codes) > 3 else "")
    names = ", ".join(dict.fromkeys(unicodedata.name(c, f"U+{ord(c):04X}") for c in run[:8]))
    return Markup('<span class="cc" title="{}">{}</span>').format(names, shown)


def visible(text: str) -> Markup:
    """Escape ``text`` and make invisible/bidi characters visible."""
    if not _SUSPECT.search(text):
        return escape(text)
    out: list[Any] = []
    buf: list[str] = []
    run: list[str] = []
    for c in text:
        if _invisible(c):
            if buf:
                out.append(escape("".join(buf)))
                buf = []
            run.append(c)
        else:
            if run:
                out.append(_cc_markup("".join(run)))
                run = []
            buf.append(c)
    if buf:
        out.append(escape("".join(buf)))
    if run:
        out.append(_cc_markup("".join(run)))
    return Markup("").join(out)


def match_spans(text: str, matches: Iterable[Any] | None) -> list[tuple[int, int]]:
    """Merged [start, end) spans of every case-insensitive occurrence of any match.

    Occurrences may overlap (each term is searched with a lookahead, so
    overlapping hits are all found); overlapping or touching spans are merged.
    """
    terms = sorted(
        {m.replace("\r\n", "\n") for m in (matches or ()) if isinstance(m, str) and m},
        key=len,
        reverse=True,
    )[:MAX_MATCH_TERMS]
    spans: list[tuple[int, int]] = []
    for term in terms:
        rx = re.compile("(?=(" + re.escape(term) + "))", re.IGNORECASE)
        for mo in rx.finditer(text):
            if mo.end(1) > mo.start(1):
                spans.append((mo.start(1), mo.end(1)))
            if len(spans) > 5000:
                break
    spans.sort()
    merged: list[list[int]] = []
    for s, e in spans:
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return [(s, e) for s, e in merged]


def highlight_excerpt(text: Any, matches: Iterable[Any] | None = None, limit: int = MAX_EXCERPT) -> Markup:
    """Escape ``text`` and wrap every occurrence of ``matches`` in ``<mark>``.

    The raw text is split at match boundaries in Python and each piece is
    escaped on its own, so neither the text nor the matches can inject markup.
    Texts longer than ``limit`` are cut to a window around the first match.
    """
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    text = text.replace("\r\n", "\n")
    spans = match_spans(text, matches)
    prefix = suffix = False
    if len(text) > limit:
        start = 0
        if spans and spans[0][0] > limit - 100:
            start = max(0, spans[0][0] - 100)
        end = start + limit
        prefix, suffix = start > 0, end < len(text)
        text = text[start:end]
        spans = [(max(s - start, 0), min(e - start, len(text))) for s, e in spans if e > start and s < end]
    out: list[Any] = [Markup('<span class="cut">…</span>')] if prefix else []
    pos = 0
    for s, e in spans:
        if s > pos:
            out.append(visible(text[pos:s]))
        out.append(Markup("<mark>{}</mark>").format(visible(text[s:e])))
        pos = e
    if pos < len(text):
        out.append(visible(text[pos:]))
    if suffix:
        out.append(Markup('<span class="cut">…</span>'))
    return Markup("").join(out)


# --------------------------------------------------------------------------
# view model
# --------------------------------------------------------------------------

def _s(v: Any, default: str = "") -> str:
    return default if v is None else str(v)


def _model(m: Any) -> dict | None:
    if not isinstance(m, Mapping):
        return None
    return {"ref": _s(m.get("ref"), "?"), "backend": _s(m.get("backend"), "?")}


def _kv(d: Any) -> list[tuple[str, str]]:
    if not isinstance(d, Mapping):
        return []
    return [(str(k), fmt_value(v, depth=1)) for k, v in d.items()]


def _level_cls(v: Any) -> str:
    """CSS class suffix for a level; data never reaches a class name verbatim."""
    return v if v in SEVERITY_RANK else "inconclusive"


def _trait_key(trait: Any) -> str:
    return "none" if trait is None else "t:" + str(trait)


def judge_view(detectors: Sequence[Mapping[str, Any]]) -> dict | None:
    """The LLM judge's section (also used by markdown.py): None when no judge entry is in the result.
    The statement that a clean judge result does not clear hidden transfer is always there."""
    from auditor.risk import JUDGE_STATEMENT

    entry = next((d for d in detectors if d.get("name") == "judge"), None)
    if entry is None:
        return None
    m = entry.get("metrics") if isinstance(entry.get("metrics"), Mapping) else {}
    c = entry.get("cost") if isinstance(entry.get("cost"), Mapping) else {}
    rates = m.get("flagged_rate") if isinstance(m.get("flagged_rate"), Mapping) else {}
    flagged = [(str(t), v) for t, v in rates.items() if isinstance(v, Mapping) and v.get("flagged")]
    flagged.sort(key=lambda tv: (-(tv[1].get("rate") or 0), tv[0]))
    rows, total = m.get("rows_judged"), m.get("dataset_rows")
    if rows is None:
        scope = ""
    elif m.get("sampled"):
        scope = f"a seeded sample of {fmt_num(rows)} of {fmt_num(total)} rows (seed {_s(m.get('sample_seed'))}); intervals estimate the whole dataset's rate"
    else:
        scope = f"all {fmt_num(rows)} rows"
    usd = c.get("usd")
    return {
        "status": _s(entry.get("status"), "?"),
        "reason": _s(entry.get("reason")),
        "statement": _s(m.get("statement")) or JUDGE_STATEMENT,
        "model": _s(m.get("model")),
        "endpoint": _s(m.get("endpoint")),
        "scope": scope,
        "traits_judged": len(m.get("traits_judged") or ()),
        "flagged": [{"trait": t, "flagged": fmt_num(v.get("flagged")), "rate": fmt_num(v.get("rate")),
                     "interval": fmt_interval(v.get("interval"))} for t, v in flagged],
        "injection_rows": fmt_num(m.get("injection_rows")) if m.get("injection_rows") is not None else "",
        "calls": fmt_num(c.get("calls")) if c.get("calls") is not None else "",
        "cache_hits": fmt_num(c.get("cache_hits")) if c.get("cache_hits") is not None else "",
        "retries": fmt_num((m.get("http_retries") or 0) + (m.get("parse_retries") or 0)) if m else "",
        "tokens": (f"{fmt_num(c.get('prompt_tokens'))} prompt + {fmt_num(c.get('completion_tokens'))} completion = "
                   f"{fmt_num(c.get('total_tokens'))} tokens this run") if c.get("total_tokens") is not None else "",
        "cached_tokens": fmt_num((c.get("cached_prompt_tokens") or 0) + (c.get("cached_completion_tokens") or 0)) if c else "",
        "usd": f"${usd:,.4f}" if isinstance(usd, (int, float)) else "",
    }


def _evidence_view(e: Mapping[str, Any]) -> dict:
    """The fields every evidence row shows, in the verdict banner and in the detector sections alike."""
    return {"level": _s(e.get("level")), "lcls": _level_cls(e.get("level")), "score": fmt_num(e.get("score")),
            "interval": fmt_interval(e.get("interval")), "summary": _s(e.get("summary"))}


def _view(result: Mapping[str, Any]) -> dict:
    detectors = [d for d in result.get("detectors") or () if isinstance(d, Mapping)]
    tool = result.get("tool") or {}
    ds = result.get("dataset") or {}
    gate = result.get("gate") or {}
    all_traits = [x for x in result.get("traits") or () if isinstance(x, Mapping)]

    # detectors that could see hidden transfer, and those that only read content
    hidden_capable = [d for d in detectors if d.get("sees_hidden_transfer")]
    content_only = [d for d in detectors if d.get("sees_hidden_transfer") is False]

    def _why_not(d: Mapping[str, Any], trait_id: str) -> str:
        status = d.get("status")
        if status == "skipped":
            return "skipped: " + clip(_s(d.get("reason"), "no reason given"), 160)
        if status == "failed":
            return "failed: " + clip(_s(d.get("reason"), "no reason given"), 160)
        return "ran, but not for this trait"

    traits, collapsed = [], []
    for t in sorted_traits(all_traits):
        evidence = [e for e in t.get("evidence") or () if isinstance(e, Mapping)]
        # inconclusive with nothing raised (e.g. only "no overt mention"): one compact list keeps the page short
        if t.get("verdict") == "inconclusive" and not any(e.get("level") in ("low", "medium", "high") for e in evidence):
            collapsed.append(_s(t.get("id"), "?"))
            continue
        tid = _s(t.get("id"), "?")
        checked, by = hidden_checked(t, detectors)
        with_evidence = {str(e.get("detector")) for e in evidence}
        hidden_not = [(_s(d.get("name"), "?"), _why_not(d, tid)) for d in hidden_capable
                      if not (d.get("status") == "ran" and str(d.get("name")) in with_evidence) and str(d.get("name")) not in by]
        content_by = [str(d.get("name")) for d in content_only if str(d.get("name")) in with_evidence]
        traits.append({
            "id": tid,
            "family": _s(t.get("family")),
            "verdict": _s(t.get("verdict"), "inconclusive"),
            "vcls": _level_cls(t.get("verdict")),
            "score": fmt_num(t.get("score")),
            "interval": fmt_interval(t.get("interval")),
            "rationale": _s(t.get("rationale")),
            "hidden_checked": checked,
            "hidden_by": ", ".join(by),
            "hidden_not": hidden_not,
            "content_by": ", ".join(content_by),
            "open": t.get("verdict") in ("high", "medium"),
            "evidence": [{"detector": _s(e.get("detector"), "?"), "kind": _s(e.get("kind")), **_evidence_view(e)} for e in evidence],
        })

    coverage = {
        "hidden": [{"name": _s(d.get("name"), "?"), "status": _s(d.get("status"), "?"), "scls": _status_cls(d.get("status")),
                    "reason": clip(_s(d.get("reason")), 200)} for d in hidden_capable],
        "content": [{"name": _s(d.get("name"), "?"), "status": _s(d.get("status"), "?"), "scls": _status_cls(d.get("status"))}
                    for d in content_only],
    }

    # per-detector sections: metrics, charts found in the metrics, the detector's evidence across traits
    dets = []
    for d in detectors:
        name = _s(d.get("name"), "?")
        status = _s(d.get("status"), "?")
        metrics = d.get("metrics") if isinstance(d.get("metrics"), Mapping) else {}
        charts = []
        for where, chart in find_charts(metrics):
            svg = render_chart(chart)
            if svg is not None:
                charts.append({"title": where, "svg": svg})
        ev = []
        for t in all_traits:
            for e in t.get("evidence") or ():
                if isinstance(e, Mapping) and str(e.get("detector")) == str(d.get("name")):
                    ev.append((t, e))
        ev.sort(key=lambda te: (SEVERITY_RANK.get(te[1].get("level"), len(SEVERITY)), -_score(te[1]), str(te[0].get("id"))))
        shown_ev = ev[:MAX_EVIDENCE_ROWS]
        # one forest plot per kind of evidence: kinds of one detector may sit on different scales
        by_kind: dict[str, list] = {}
        for t, e in ev:
            by_kind.setdefault(_s(e.get("kind")), []).append((t, e))
        forests = []
        for kind, pairs in list(by_kind.items())[:MAX_FORESTS]:
            svg = interval_chart([
                {"label": _s(t.get("id"), "?"), "value": e.get("score"), "interval": e.get("interval"), "level": e.get("level")}
                for t, e in pairs[:FOREST_ROWS]
            ], f"{kind or 'score'}: estimate with its 95% interval, per trait")
            if svg is not None:
                forests.append({"svg": svg, "title": f"{kind or 'evidence'} per trait" + (f" (top {FOREST_ROWS} of {len(pairs)})" if len(pairs) > FOREST_ROWS else "")})
        dets.append({
            "name": name,
            "anchor": "det-" + str(len(dets)),
            "status": status,
            "scls": _status_cls(status),
            "reason": _s(d.get("reason")),
            "hidden": d.get("sees_hidden_transfer"),
            "description": _s(d.get("description")),
            "metrics": _kv(_strip_charts(metrics))[:MAX_METRIC_ROWS],
            "metrics_more": max(0, len(metrics) - MAX_METRIC_ROWS),
            "charts": charts,
            "forests": forests,
            "evidence": [{"trait": _s(t.get("id"), "?"), **_evidence_view(e)} for t, e in shown_ev],
            "evidence_total": len(ev),
            "cost": fmt_value(d.get("cost")) if d.get("cost") else "",
            "duration": fmt_duration(d.get("duration_s")) if d.get("duration_s") is not None else "",
        })

    flag_view = _flags_view(result)

    dup = ds.get("duplicates") if isinstance(ds.get("duplicates"), Mapping) else None
    duplicates = None
    if dup is not None:
        groups = [g for g in dup.get("groups") or () if isinstance(g, Mapping)]
        groups.sort(key=lambda g: -len(g.get("rows") or ()))
        duplicates = {
            "rows": fmt_num(dup.get("rows") if isinstance(dup.get("rows"), int) else 0),
            "n_groups": fmt_num(len(groups)),
            "groups": [{
                "digest": _s(g.get("digest")),
                "count": len(g.get("rows") or ()),
                "rows": fmt_value(list(g.get("rows") or ())),
            } for g in groups[:20]],
            "more": max(0, len(groups) - 20),
        }

    bl = result.get("baseline")
    baseline = None
    if isinstance(bl, Mapping):
        stale = list(bl.get("stale") or ())
        baseline = {
            "path": _s(bl.get("path"), "?"),
            "accepted": fmt_num(bl.get("accepted")) if bl.get("accepted") is not None else "—",
            "n_stale": fmt_num(len(stale)),
            "stale": [fmt_value(x, depth=1) for x in stale[:20]],
            "more": max(0, len(stale) - 20),
        }

    run = result.get("run") if isinstance(result.get("run"), Mapping) else {}
    run_rows = []
    for k, v in list(run.items())[:MAX_METRIC_ROWS]:
        if k == "duration_s":
            run_rows.append((str(k), fmt_duration(v)))
        else:
            run_rows.append((str(k), fmt_value(v, depth=1)))

    # costs: per detector, plus totals of every numeric cost key
    totals: dict[str, float] = {}
    cost_rows = []
    for d in detectors:
        cost = d.get("cost") if isinstance(d.get("cost"), Mapping) else {}
        for k, v in cost.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                totals[str(k)] = totals.get(str(k), 0) + v
        if cost or d.get("duration_s") is not None:
            cost_rows.append((_s(d.get("name"), "?"), _s(d.get("status")), fmt_duration(d.get("duration_s")) if d.get("duration_s") is not None else "—",
                              fmt_value(cost) if cost else "—"))
    not_run = [(_s(d.get("name"), "?"), _s(d.get("status")), _status_cls(d.get("status")), _s(d.get("reason"), "no reason given"))
               for d in detectors if d.get("status") in ("skipped", "failed")]

    prof = result.get("profile") if isinstance(result.get("profile"), Mapping) else None
    profile = None
    if prof is not None:
        rows = [r for r in prof.get("traits") or () if isinstance(r, Mapping)]
        profile = {
            "status": _s(prof.get("status"), "?"),
            "reason": _s(prof.get("reason")),
            "picked": [str(x) for x in prof.get("picked") or ()],
            "notes": [str(x) for x in prof.get("notes") or ()][:10],
            "chart": profile_chart(rows),
            "n": len(rows),
        }

    sha = _s(ds.get("sha256"))
    ref = result.get("reference")
    fail_on = _s(gate.get("fail_on"), "?")

    def _model_full(m: Any) -> dict | None:
        base = _model(m)
        if base is not None:
            base["system"] = clip(_s(m.get("system_prompt")), 400)
        return base

    return {
        "csp": CSP,
        "script": Markup(SCRIPT),  # fixed text defined above, never data
        "tool": {"name": _s(tool.get("name"), "trait-audit"), "version": _s(tool.get("version"), "?")},
        "created": _s(result.get("created")),
        "dataset": {
            "path": _s(ds.get("path"), "?"),
            "format": _s(ds.get("format")),
            "schema": _s(ds.get("schema")),
            "profile": _s(ds.get("profile")),
            "rows": fmt_num(ds.get("rows")) if ds.get("rows") is not None else "?",
            "sha": sha,
            "sha_short": sha[:12],
        },
        "reference": {
            "path": _s(ref.get("path"), "?"),
            "rows": fmt_num(ref.get("rows")) if ref.get("rows") is not None else "?",
            "sha": _s(ref.get("sha256")),
        } if isinstance(ref, Mapping) else None,
        "teacher": _model_full(result.get("teacher")),
        "base": _model_full(result.get("base")),
        "gate": {
            "failed": bool(gate.get("failed")),
            "fail_on": fail_on,
            "disabled": fail_on == "never",
            "failing": [str(x) for x in gate.get("failing_traits") or ()],
            "broken": [str(x) for x in gate.get("detectors_failed") or ()],
        },
        "traits": traits,
        "collapsed": collapsed,
        "counts": [(v, sum(1 for t in all_traits if t.get("verdict") == v)) for v in SEVERITY],
        "hidden_ran": hidden_detectors(detectors),
        "coverage": coverage,
        "detectors": dets,
        "judge": judge_view(detectors),
        **flag_view,
        "duplicates": duplicates,
        "baseline": baseline,
        "run": run_rows,
        "seed": fmt_value(run.get("seed")) if "seed" in run else "",
        "costs": cost_rows,
        "cost_totals": [(k, fmt_num(v)) for k, v in totals.items()],
        "not_run": not_run,
        "profile": profile,
    }


def _score(m: Mapping[str, Any]) -> float:
    s = m.get("score")
    return float(s) if isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s) else float("-inf")


def _status_cls(status: Any) -> str:
    return status if status in ("ran", "skipped", "failed") else "skipped"


def _strip_charts(metrics: Any, depth: int = 0) -> Any:
    """Metrics without the chart objects (they are drawn, not listed)."""
    if isinstance(metrics, Mapping) and depth < 4:
        return {k: ("(chart)" if is_chart(v) else _strip_charts(v, depth + 1)) for k, v in metrics.items()}
    return metrics


def sample_flags(flags: Sequence[Mapping[str, Any]], limit: int = MAX_FLAGS) -> list[Mapping[str, Any]]:
    """The flags the page shows when there are more than ``limit``: an equal share per trait, best first.

    Each trait (and "no trait") is one stratum, ordered not-yet-accepted first, then highest score, then row;
    strata take turns, so a trait with thousands of flags cannot crowd out one with ten. The result is in
    display order (not yet accepted first, then highest score).
    """
    if len(flags) <= limit:
        return sorted_flags(flags)
    strata: dict[str, list] = {}
    for f in flags:
        strata.setdefault(_trait_key(f.get("trait")), []).append(f)
    queues = [sorted_flags(v) for _, v in sorted(strata.items())]
    picked: list[Mapping[str, Any]] = []
    i = 0
    while len(picked) < limit:
        progressed = False
        for q in queues:
            if i < len(q) and len(picked) < limit:
                picked.append(q[i])
                progressed = True
        if not progressed:
            break
        i += 1
    return sorted_flags(picked)


def _flags_view(result: Mapping[str, Any]) -> dict:
    all_flags = [f for f in result.get("flags") or () if isinstance(f, Mapping)]
    total = flags_total(result)
    candidates = sample_flags(all_flags, MAX_FLAGS)
    by_digest: dict[str, list] = {}
    for f in all_flags:
        dg = f.get("digest")
        if isinstance(dg, str) and dg:
            by_digest.setdefault(dg, []).append(f)
    flags = []
    trait_opts: dict[str, str] = {}
    det_opts: set[str] = set()
    spent = 0
    budget_hit = False
    for f in candidates:
        trait = f.get("trait")
        key = _trait_key(trait)
        excerpt = highlight_excerpt(f.get("excerpt") or "", f.get("matches"))
        reason = visible(clip(_s(f.get("reason")), MAX_REASON))
        digest = _s(f.get("digest"))
        others = [o for o in by_digest.get(digest, ()) if o is not f][:MAX_SAME_ROW]
        matches = [m for m in f.get("matches") or () if isinstance(m, str)][:MAX_MATCH_TERMS]
        cost = len(excerpt) + len(reason) + sum(len(m) for m in matches) + 160 * len(others) + ROW_OVERHEAD
        if spent + cost > FLAG_BYTES_BUDGET:
            budget_hit = True
            break
        spent += cost
        trait_opts.setdefault(key, "(no trait)" if trait is None else str(trait))
        det = _s(f.get("detector"), "?")
        det_opts.add(det)
        flags.append({
            "row": _s(f.get("row"), "?"),
            "digest": digest,
            "trait": "—" if trait is None else str(trait),
            "trait_key": key,
            "detector": det,
            "reason": reason,
            "score": fmt_num(f.get("score")),
            "field": _s(f.get("field")),
            "excerpt": excerpt,
            "matches": [visible(clip(m, 80)) for m in matches],
            "accepted": bool(f.get("accepted")),
            "others": [{"detector": _s(o.get("detector"), "?"), "trait": "—" if o.get("trait") is None else str(o.get("trait")),
                        "score": fmt_num(o.get("score")), "reason": visible(clip(_s(o.get("reason")), 160))} for o in others],
        })
    options = sorted(trait_opts.items(), key=lambda kv: (kv[0] == "none", kv[1]))
    listed = len(all_flags)
    sampled = len(flags) < listed
    per_trait: dict[str, int] = {}
    for f in all_flags:
        k = "(no trait)" if f.get("trait") is None else str(f.get("trait"))
        per_trait[k] = per_trait.get(k, 0) + 1
    return {
        "flags": flags,
        "flag_options": options,
        "detector_options": sorted(det_opts),
        "flags_total": fmt_num(total),
        "flags_shown": fmt_num(len(flags)),
        "flags_listed": fmt_num(listed),
        "flags_capped": len(flags) < total or bool(result.get("flags_truncated")),
        "flags_sampled": sampled,
        "flags_budget_hit": budget_hit,
        "flags_truncated": bool(result.get("flags_truncated")) and listed < total,
        "flags_accepted": fmt_num(sum(1 for f in all_flags if f.get("accepted"))),
        "flags_per_trait": sorted(((k, fmt_num(v)) for k, v in per_trait.items()), key=lambda kv: kv[0] == "(no trait)"),
        "flags_max": fmt_num(MAX_FLAGS),
    }


_ENV: Environment | None = None


def _env() -> Environment:
    global _ENV
    if _ENV is None:
        _ENV = Environment(
            loader=FileSystemLoader(str(TEMPLATES)),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
    return _ENV


def render_html(result: dict) -> str:
    """Render a result dict (schema_version 1) as one self-contained HTML page."""
    return _env().get_template("report.html.j2").render(**_view(result))
