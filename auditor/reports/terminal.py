"""The terminal summary, from the result like every other report.

A plain list, not a table: each item is one short line, its explanation wrapped and indented below it, so it reads at
80 columns, in a narrow CI log and when piped (rich drops colours off a terminal). Data never reaches rich markup:
every piece is a `Text`, so a reason containing "[red]" prints as written.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.text import Text

from auditor.reports.view import (
    QUIET_TRAITS,
    fmt_interval,
    fmt_num,
    hidden_checked,
    profile_sentences,
    sorted_traits,
    unlooked,
)
from auditor.result import DetectorRun, Level, Report, as_report

STYLE = {Level.HIGH: "bold red", Level.MEDIUM: "yellow", Level.LOW: "cyan", Level.INCONCLUSIVE: "dim", Level.CLEAN: "green"}
INDENT = 4
MAX_WIDTH = 100  # wider lines are harder to read, even on a wide terminal


def _line(console: Console, *parts: tuple[str, str] | str, indent: int = 0, hang: int | None = None) -> None:
    """One item, wrapped to the console's width: the first line at `indent`, the rest at `hang` (default `indent`)."""
    from auditor.inert import inert

    hang = indent if hang is None else hang
    width = max(20, min(console.width, MAX_WIDTH) - max(indent, hang))
    # data may hold escapes, control characters and CI workflow commands: every piece is made inert first
    text = Text.assemble(*((inert(p[0]), p[1]) if isinstance(p, tuple) else inert(p) for p in parts))
    for i, line in enumerate(text.wrap(console, width)):
        line.rstrip()
        console.print(Text(" " * (indent if i == 0 else hang)) + line, highlight=False, soft_wrap=True)


def _detector_note(d: DetectorRun) -> str:
    if d.name == "probe" and d.ran:
        m, config = d.metrics, d.metrics.get("config") or {}
        how = " ".join(str(x) for x in (m.get("backend"), config.get("method"), config.get("optimizer")) if x)
        return f"{m.get('seeds_run')} of {m.get('seeds_requested')} seeds, {m.get('rows')} rows x {m.get('epochs')} epochs, {how}"
    if "format_pass_rate" in d.metrics:
        return f"format pass rate {fmt_num(d.metrics['format_pass_rate'])}"
    if d.name == "fingerprint" and d.ran and d.metrics.get("finding"):
        return str(d.metrics["finding"])
    return d.reason or ""


def print_summary(result: Report | dict[str, Any], console: Console, paths: list | None = None) -> None:
    report = as_report(result)
    data = report.dataset
    _line(console, ("trait-audit ", "bold"), data.path)
    _line(console, f"{fmt_num(data.rows)} rows · {data.format} · {data.schema or '?'} · profile {data.profile or '?'}", indent=INDENT)
    if data.duplicates is not None and data.duplicates.rows:
        _line(console, (f"{data.duplicates.rows} duplicate rows", "yellow"), f" in {len(data.duplicates.groups)}+ groups", indent=INDENT)

    _line(console, ("Detectors", "bold"))
    width = max((len(d.name) for d in report.detectors), default=0)
    for d in report.detectors:
        sees = "sees hidden transfer" if d.sees_hidden_transfer else "content only"
        status_style = {"ran": "green", "failed": "bold red"}.get(d.status, "dim")
        _line(console, f"{d.name:<{width}}  ", (f"{d.status:<7}", status_style), f"  {sees}", indent=2, hang=INDENT + 2)
        note = _detector_note(d)
        if note:
            _line(console, (note, "dim"), indent=INDENT + 2)

    _line(console, ("Traits", "bold"), " (checked or raised first)")
    quiet = unlooked(report.traits, report.detectors)
    quiet_ids = {t.id for t in quiet}  # ids: comparing verdicts would compare all their evidence
    for t in sorted_traits(report.traits, report.detectors):
        if t.id in quiet_ids:
            continue
        checked, by = hidden_checked(t, report.detectors)
        score = f"  {fmt_num(t.score)} {fmt_interval(t.interval)}" if t.score is not None else ""
        coverage = f"  hidden transfer checked by {', '.join(by)}" if checked and by else "" if checked else "  hidden transfer not checked"
        _line(console, f"{t.id}  ", (t.verdict.value, STYLE[t.verdict]), score, (coverage, "dim"), indent=2, hang=INDENT + 2)
        if t.rationale:
            _line(console, t.rationale, indent=INDENT + 2)
    if quiet:
        _line(console, (f"{len(quiet)} more traits inconclusive: {QUIET_TRAITS}.", "dim"), indent=2, hang=INDENT + 2)

    flags = [f for f in report.flags if f.trait and not f.accepted]
    if flags:
        _line(console, ("Flagged rows", "bold"), f" ({len(flags)} for a trait), e.g.")
        for f in flags[:3]:
            _line(console, f"row {f.row} ({f.detector}, {f.trait}): {f.reason}", indent=2, hang=INDENT + 2)

    judge = report.detector("judge")
    if judge is not None:
        from auditor.risk import JUDGE_STATEMENT

        cost = judge.cost
        if judge.ran:
            usd = f", about ${cost['usd']:,.4f}" if cost.get("usd") is not None else ""
            _line(console, f"judge: {fmt_num(cost.get('calls', 0))} calls, {fmt_num(cost.get('cache_hits', 0))} cached, "
                           f"{fmt_num(cost.get('total_tokens', 0))} tokens{usd}", hang=INDENT)
        _line(console, (JUDGE_STATEMENT, "yellow"), hang=INDENT)

    prof = report.profile
    if prof and prof.status == "ran":
        _line(console, ("Profile", "bold"), " (teacher vs base)")
        for sentence in profile_sentences(report) or [prof.reason or "no trait picked"]:
            _line(console, sentence, indent=2, hang=INDENT + 2)
    elif prof:
        _line(console, (f"profile skipped: {prof.reason}", "dim"), hang=INDENT)

    gate = report.gate
    failing = f" ({', '.join(gate.failing_traits[:8])})" if gate.failed else ""
    _line(console, f"gate (--fail-on {gate.fail_on}): ", ("FAILED", "bold red") if gate.failed else ("passed", "green"), failing)
    for path in paths or []:
        _line(console, f"wrote {path}")
