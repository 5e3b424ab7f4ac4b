"""Markdown risk report, sized for a GitHub Actions step summary.

``render_markdown(result)`` gives: a title with the gate result, a traits
table, a detectors table and the top flagged rows.  Every data cell goes
through ``md_cell`` so that no string from the result (dataset text, reasons,
paths) can end a table row, open a code span, or inject HTML.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import Any

from auditor.reports.view import (
    HIDDEN_NOT_CHECKED,
    QUIET_TRAITS,
    clip,
    fmt_duration,
    fmt_interval,
    fmt_num,
    fmt_value,
    hidden_checked,
    judge_view,
    profile_sentences,
    sorted_flags,
    sorted_traits,
    unlooked,
)
from auditor.result import Level, Report, as_report

__all__ = ["render_markdown", "md_cell", "MAX_MD_FLAGS", "MD_EXCERPT"]

#: Flagged rows listed in the Markdown summary.
MAX_MD_FLAGS = 20
#: Characters of excerpt kept per flagged row (before escaping).
MD_EXCERPT = 80

_ICON = {Level.HIGH: "🔴", Level.MEDIUM: "🟠", Level.LOW: "🟡", Level.INCONCLUSIVE: "⚪", Level.CLEAN: "🟢"}
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


def render_markdown(result: Report | dict[str, Any]) -> str:
    """Render a result (schema_version 1) as GitHub-flavoured Markdown."""
    report = as_report(result)
    tool, ds, gate = report.tool, report.dataset, report.gate
    out: list[str] = []

    fail_on = md_cell(gate.fail_on)
    if gate.failed:
        verdict = f"❌ gate failed (fail_on: {fail_on})"
    elif gate.fail_on == "never":
        verdict = "⚪ gate not enforced (fail_on: never)"
    else:
        verdict = f"✅ gate passed (fail_on: {fail_on})"
    out += [f"## {md_cell(tool.name)}: {verdict}", ""]

    meta = [f"**Dataset** {md_cell(ds.path)}", f"{md_cell(fmt_num(ds.rows))} rows", f"sha256 {md_cell(ds.sha256[:12])}"]
    for label, m in (("teacher", report.teacher), ("base", report.base)):
        meta.append(f"**{label}** {md_cell(m.ref)} ({md_cell(m.backend)})" if m is not None else f"**{label}** none")
    meta.append(f"{md_cell(tool.name)} {md_cell(tool.version)}")
    out += [" · ".join(meta), ""]
    if gate.failed and gate.failing_traits:
        out += [f"**Failing traits:** {', '.join(md_cell(x) for x in gate.failing_traits)}", ""]

    out += _traits(report) + _detectors(report) + _judge(report) + _flags(report)
    out += [" · ".join(_extras(report)), ""]
    return "\n".join(out)


def _traits(report: Report) -> list[str]:
    out = ["### Traits", ""]
    if not report.traits:
        return out + ["_No traits audited._", ""]
    quiet = unlooked(report.traits, report.detectors)
    quiet_ids = {t.id for t in quiet}  # ids: comparing verdicts would compare all their evidence
    rows, unchecked = [], 0
    for t in sorted_traits(report.traits, report.detectors):
        if t.id in quiet_ids:
            continue
        checked, by = hidden_checked(t, report.detectors)
        unchecked += not checked
        rows.append([
            md_cell(t.id),
            f"{_ICON.get(t.verdict, '')} {md_cell(t.verdict.value)}".strip(),
            md_cell(fmt_num(t.score)),
            md_cell(fmt_interval(t.interval)),
            ("yes" + (f" ({md_cell(', '.join(by))})" if by else "")) if checked else "**no**",
        ])
    if rows:
        out += _table(["Trait", "Verdict", "Score", "Interval", "Hidden transfer checked"], rows, ["---", "---", "---:", "---:", "---"])
    if quiet:
        names = ", ".join(md_cell(t.id) for t in quiet)
        out += ["", f"{_ICON[Level.INCONCLUSIVE]} {len(quiet)} more trait{'s' if len(quiet) != 1 else ''} inconclusive ({QUIET_TRAITS}): {names}"]
    if unchecked:
        out += ["", f"> ⚠️ {unchecked} trait{'s' if unchecked != 1 else ''} not checked for hidden transfer: {HIDDEN_NOT_CHECKED}."]
    return out + [""] + _profile(report)


def _profile(report: Report) -> list[str]:
    """Why the model-based detectors tested the traits they did."""
    prof = report.profile
    if prof is None:
        return []
    if prof.status != "ran" or not prof.picked:
        return [f"**Profile:** {md_cell(prof.reason or prof.status)}", ""]
    return ["**Profile (teacher vs base):**", ""] + [f"- {md_cell(line)}" for line in profile_sentences(report)] + [""]


def _detectors(report: Report) -> list[str]:
    out = ["### Detectors", ""]
    if not report.detectors:
        return out + ["_No detectors recorded._", ""]
    rows = [[
        md_cell(d.name),
        f"{_STATUS_ICON.get(d.status, '')} {md_cell(d.status)}".strip(),
        "yes" if d.sees_hidden_transfer else "no",
        fmt_duration(d.duration_s) if d.duration_s is not None else "—",
        md_cell(d.reason or d.metrics.get("finding") or "", 200),  # why it did not run, or its dataset-level finding
    ] for d in report.detectors]
    return out + _table(["Detector", "Status", "Sees hidden transfer", "Time", "Note"], rows, ["---", "---", "---", "---:", "---"]) + [""]


def _judge(report: Report) -> list[str]:
    """The LLM judge, with its plain statement."""
    judge = judge_view(report)
    if judge is None:
        return []
    out = ["### LLM judge", "", f"> **{md_cell(judge['statement'])}**", ""]
    if not judge["model"]:
        return out + [f"Judge {md_cell(judge['status'])}: {md_cell(judge['reason'], 300)}", ""]
    out += [f"{md_cell(judge['model'])} at {md_cell(judge['endpoint'])} read {md_cell(judge['scope'])} for "
            f"{judge['traits_judged']} traits; {md_cell(judge['injection_rows'] or '0')} rows tried to instruct it.", ""]
    if judge["flagged"]:
        out += _table(["Trait", "Rows flagged", "Rate", "95% Wilson interval"],
                      [[md_cell(f["trait"]), md_cell(f["flagged"]), md_cell(f["rate"]), md_cell(f["interval"])] for f in judge["flagged"]],
                      ["---", "---:", "---:", "---:"]) + [""]
    usd = f" · about {md_cell(judge['usd'])}" if judge["usd"] else ""
    out.append(f"Calls {md_cell(judge['calls'])} · cache hits {md_cell(judge['cache_hits'])} · retries {md_cell(judge['retries'])} · "
               f"{md_cell(judge['tokens'])}{usd}")
    return out + [""]


def _flags(report: Report) -> list[str]:
    total = report.flag_count
    top = sorted_flags(report.flags)[:MAX_MD_FLAGS]
    out = [f"### Flagged rows ({fmt_num(total)})", ""]
    if not top:
        return out + ["_No rows flagged._", ""]
    if len(top) < total:
        out += [f"Top {len(top)} of {fmt_num(total)} (not yet accepted first, then highest score); the HTML report has the rest.", ""]
    rows = [[
        md_cell(f.row) + (" (accepted)" if f.accepted else ""),
        md_cell(f.trait) if f.trait is not None else "—",
        md_cell(f.detector),
        md_cell(fmt_num(f.score)),
        md_cell(f.reason, 120),
        md_cell(f.excerpt, MD_EXCERPT),
    ] for f in top]
    return out + _table(["Row", "Trait", "Detector", "Score", "Reason", "Excerpt"], rows, ["---:", "---", "---", "---:", "---", "---"]) + [""]


def _extras(report: Report) -> list[str]:
    """Duplicates, baseline and run, on one line."""
    extras = []
    dup = report.dataset.duplicates
    if dup is not None:
        extras.append(f"**Duplicates:** {md_cell(fmt_num(dup.rows))} rows in {fmt_num(len(dup.groups))} groups")
    bl = report.baseline
    if bl is not None:
        extras.append(f"**Baseline** {md_cell(bl.path)}: {md_cell(fmt_num(bl.accepted)) if bl.accepted is not None else '—'} accepted, "
                      f"{fmt_num(len(bl.stale))} stale")
    else:
        extras.append("**Baseline:** none")
    run = report.run
    bits = []
    if run.seed is not None:
        bits.append(f"seed {md_cell(fmt_value(run.seed))}")
    if "started" in run.extra:
        bits.append(f"started {md_cell(run.extra['started'])}")
    if run.duration_s is not None:
        bits.append(f"took {fmt_duration(run.duration_s)}")
    if bits:
        extras.append("**Run:** " + ", ".join(bits))
    return extras
