"""Markdown risk report, sized for a GitHub Actions step summary.

``render_markdown(result)`` gives: a title with the gate result, a traits
table, a detectors table and the top flagged rows.  Every data cell goes
through ``md_cell`` so that no string from the result (dataset text, reasons,
paths) can end a table row, open a code span, or inject HTML.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

from .html import (
    HIDDEN_NOT_CHECKED,
    clip,
    flags_total,
    fmt_duration,
    fmt_interval,
    fmt_num,
    fmt_value,
    hidden_checked,
    judge_view,
    sorted_flags,
    sorted_traits,
)

__all__ = ["render_markdown", "md_cell", "MAX_MD_FLAGS", "MD_EXCERPT"]

#: Flagged rows listed in the Markdown summary.
MAX_MD_FLAGS = 20
#: Characters of excerpt kept per flagged row (before escaping).
MD_EXCERPT = 80

_ICON = {"high": "🔴", "medium": "🟠", "low": "🟡", "inconclusive": "⚪", "clean": "🟢"}
_STATUS_ICON = {"ran": "✅", "skipped": "⏭️", "failed": "❌"}

# Line breaks of every kind (incl. U+2028/9, NEL, VT, FF) become spaces.
_BREAKS = re.compile(r"\r\n|[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]")
# Characters with Markdown/HTML meaning in a table cell.  Backslash first so an
# escape we add is never itself re-escaped.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]~|$])")


def _visible(text: str) -> str:
    """Replace invisible/bidi/control characters with a visible code point."""
    out = []
    for c in text:
        cat = unicodedata.category(c)
        o = ord(c)
        if cat in ("Cc", "Cf", "Co", "Cs", "Cn") or 0xFE00 <= o <= 0xFE0F or 0xE0100 <= o <= 0xE01EF:
            out.append(f"⟨U+{o:04X}⟩")
        else:
            out.append(c)
    return "".join(out)


def md_cell(value: Any, limit: int | None = None) -> str:
    """Escape one value for a GitHub-flavoured Markdown table cell (one line).

    Newlines become spaces, whitespace runs collapse, the text is cut to
    ``limit`` characters (before escaping, so an escape is never cut in two),
    then ``& < >`` become entities and Markdown punctuation gets a backslash.
    """
    text = "" if value is None else str(value)
    text = _BREAKS.sub(" ", text)
    text = _visible(text.replace("\t", " "))
    text = re.sub(r" {2,}", " ", text).strip()
    if limit is not None:
        text = clip(text, limit)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _MD_SPECIAL.sub(r"\\\1", text)
    # "@user" in a summary would ping; a zero-width joiner is not allowed here,
    # so break it with an entity instead.
    text = text.replace("@", "&#64;")
    # "::" or "##[" at the start of a line is a GitHub Actions workflow command when the file is printed in a
    # CI log: the escaped colon renders the same and is no command
    return text.replace("::", "\\:\\:").replace("##\\[", "\\#\\#\\[")


def _row(cells: Iterable[Any]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(header: list[str], rows: list[list[str]], align: list[str] | None = None) -> list[str]:
    align = align or ["---"] * len(header)
    return [_row(header), _row(align)] + [_row(r) for r in rows]


def render_markdown(result: dict) -> str:
    """Render a result dict (schema_version 1) as GitHub-flavoured Markdown."""
    tool = result.get("tool") or {}
    ds = result.get("dataset") or {}
    gate = result.get("gate") or {}
    detectors = [d for d in result.get("detectors") or () if isinstance(d, Mapping)]
    traits = sorted_traits(t for t in result.get("traits") or () if isinstance(t, Mapping))
    flags = [f for f in result.get("flags") or () if isinstance(f, Mapping)]
    out: list[str] = []

    fail_on = md_cell(gate.get("fail_on", "?"))
    if gate.get("failed"):
        verdict = f"❌ gate failed (fail_on: {fail_on})"
    elif gate.get("fail_on") == "never":
        verdict = "⚪ gate not enforced (fail_on: never)"
    else:
        verdict = f"✅ gate passed (fail_on: {fail_on})"
    out.append(f"## {md_cell(tool.get('name') or 'trait-audit')}: {verdict}")
    out.append("")

    sha = str(ds.get("sha256") or "")
    meta = [
        f"**Dataset** {md_cell(ds.get('path'))}",
        f"{md_cell(fmt_num(ds.get('rows'))) if ds.get('rows') is not None else '?'} rows",
        f"sha256 {md_cell(sha[:12])}",
    ]
    for label in ("teacher", "base"):
        m = result.get(label)
        if isinstance(m, Mapping):
            meta.append(f"**{label}** {md_cell(m.get('ref'))} ({md_cell(m.get('backend'))})")
        else:
            meta.append(f"**{label}** none")
    meta.append(f"{md_cell(tool.get('name') or 'trait-audit')} {md_cell(tool.get('version') or '?')}")
    out.append(" · ".join(meta))
    out.append("")
    failing = [md_cell(x) for x in gate.get("failing_traits") or ()]
    if gate.get("failed") and failing:
        out.append(f"**Failing traits:** {', '.join(failing)}")
        out.append("")

    # traits
    out.append("### Traits")
    out.append("")
    if traits:
        rows, unchecked = [], 0
        for t in traits:
            checked, by = hidden_checked(t, detectors)
            unchecked += not checked
            v = str(t.get("verdict"))
            rows.append([
                md_cell(t.get("id")),
                f"{_ICON.get(v, '')} {md_cell(v)}".strip(),
                md_cell(fmt_num(t.get("score"))),
                md_cell(fmt_interval(t.get("interval"))),
                ("yes" + (f" ({md_cell(', '.join(by))})" if by else "")) if checked else "**no**",
            ])
        out += _table(["Trait", "Verdict", "Score", "Interval", "Hidden transfer checked"], rows,
                      ["---", "---", "---:", "---:", "---"])
        if unchecked:
            out.append("")
            out.append(f"> ⚠️ {unchecked} trait{'s' if unchecked != 1 else ''} not checked for hidden transfer: "
                       f"{HIDDEN_NOT_CHECKED}.")
    else:
        out.append("_No traits audited._")
    out.append("")

    # detectors
    out.append("### Detectors")
    out.append("")
    if detectors:
        rows = []
        for d in detectors:
            st = str(d.get("status"))
            rows.append([
                md_cell(d.get("name")),
                f"{_STATUS_ICON.get(st, '')} {md_cell(st)}".strip(),
                "yes" if d.get("sees_hidden_transfer") else "no",
                fmt_duration(d.get("duration_s")) if d.get("duration_s") is not None else "—",
                md_cell(d.get("reason"), 200) if d.get("reason") else "",
            ])
        out += _table(["Detector", "Status", "Sees hidden transfer", "Time", "Reason"], rows,
                      ["---", "---", "---", "---:", "---"])
    else:
        out.append("_No detectors recorded._")
    out.append("")

    # the LLM judge, with its plain statement
    judge = judge_view(detectors)
    if judge is not None:
        out.append("### LLM judge")
        out.append("")
        out.append(f"> **{md_cell(judge['statement'])}**")
        out.append("")
        if judge["model"]:
            out.append(f"{md_cell(judge['model'])} at {md_cell(judge['endpoint'])} read {md_cell(judge['scope'])} for "
                       f"{judge['traits_judged']} traits; {md_cell(judge['injection_rows'] or '0')} rows tried to instruct it.")
            out.append("")
            if judge["flagged"]:
                out += _table(["Trait", "Rows flagged", "Rate", "95% Wilson interval"],
                              [[md_cell(f["trait"]), md_cell(f["flagged"]), md_cell(f["rate"]), md_cell(f["interval"])] for f in judge["flagged"]],
                              ["---", "---:", "---:", "---:"])
                out.append("")
            usd = f" · about {md_cell(judge['usd'])}" if judge["usd"] else ""
            out.append(f"Calls {md_cell(judge['calls'])} · cache hits {md_cell(judge['cache_hits'])} · retries {md_cell(judge['retries'])} · "
                       f"{md_cell(judge['tokens'])}{usd}")
        else:
            out.append(f"Judge {md_cell(judge['status'])}: {md_cell(judge['reason'], 300)}")
        out.append("")

    # flags
    total = flags_total(result)
    top = sorted_flags(flags)[:MAX_MD_FLAGS]
    out.append(f"### Flagged rows ({fmt_num(total)})")
    out.append("")
    if top:
        if len(top) < total:
            out.append(f"Top {len(top)} of {fmt_num(total)} (not yet accepted first, then highest score); "
                       "the HTML report has the rest.")
            out.append("")
        rows = []
        for f in top:
            row = md_cell(f.get("row"))
            if f.get("accepted"):
                row += " (accepted)"
            rows.append([
                row,
                md_cell(f.get("trait")) if f.get("trait") is not None else "—",
                md_cell(f.get("detector")),
                md_cell(fmt_num(f.get("score"))),
                md_cell(f.get("reason"), 120),
                md_cell(f.get("excerpt"), MD_EXCERPT),
            ])
        out += _table(["Row", "Trait", "Detector", "Score", "Reason", "Excerpt"], rows,
                      ["---:", "---", "---", "---:", "---", "---"])
    else:
        out.append("_No rows flagged._")
    out.append("")

    # dataset extras
    extras = []
    dup = ds.get("duplicates")
    if isinstance(dup, Mapping):
        extras.append(f"**Duplicates:** {md_cell(fmt_num(dup.get('rows') or 0))} rows in "
                      f"{fmt_num(len(dup.get('groups') or ()))} groups")
    bl = result.get("baseline")
    if isinstance(bl, Mapping):
        extras.append(f"**Baseline** {md_cell(bl.get('path'))}: "
                      f"{md_cell(fmt_num(bl.get('accepted'))) if bl.get('accepted') is not None else '—'} accepted, "
                      f"{fmt_num(len(bl.get('stale') or ()))} stale")
    else:
        extras.append("**Baseline:** none")
    run = result.get("run")
    if isinstance(run, Mapping) and run:
        bits = []
        if "seed" in run:
            bits.append(f"seed {md_cell(fmt_value(run.get('seed')))}")
        if "started" in run:
            bits.append(f"started {md_cell(run.get('started'))}")
        if "duration_s" in run:
            bits.append(f"took {fmt_duration(run.get('duration_s'))}")
        if bits:
            extras.append("**Run:** " + ", ".join(bits))
    out.append(" · ".join(extras))
    out.append("")
    return "\n".join(out)
