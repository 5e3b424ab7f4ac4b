"""The terminal summary, from the result like every other report."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from auditor.result import Level, Report, TraitVerdict, as_report

STYLE = {Level.HIGH: "bold red", Level.MEDIUM: "yellow", Level.LOW: "cyan", Level.INCONCLUSIVE: "dim", Level.CLEAN: "green"}
ORDER = {Level.HIGH: 0, Level.MEDIUM: 1, Level.LOW: 2, Level.CLEAN: 3, Level.INCONCLUSIVE: 4}


def _interval(trait: TraitVerdict) -> str:
    if trait.score is None or not trait.interval:
        return ""
    lo, hi = trait.interval
    return f"{trait.score:.3g} [{lo:.3g}, {hi:.3g}]"


def print_summary(result: Report | dict[str, Any], console: Console, paths: list | None = None) -> None:
    report = as_report(result)
    data = report.dataset
    console.print(f"[bold]trait-audit[/] {data.path}: {data.rows} rows ({data.format}, {data.schema or '?'}, profile {data.profile or '?'})")
    if data.duplicates is not None and data.duplicates.rows:
        console.print(f"[yellow]{data.duplicates.rows} duplicate rows[/] in {len(data.duplicates.groups)}+ groups")
    table = Table(title="Detectors", show_edge=False)
    for col in ("detector", "status", "sees hidden transfer", "note"):
        table.add_column(col)
    for det in report.detectors:
        note = det.reason or ""
        if "format_pass_rate" in det.metrics:
            note = f"format_pass_rate {det.metrics['format_pass_rate']:.3f}"
        if det.name == "probe" and det.ran:
            m = det.metrics
            note = f"{m['seeds_run']} of {m['seeds_requested']} seeds, {m['rows']} rows x {m['epochs']} epochs, {m['backend']} {m['config'].get('method', '')} {m['config'].get('optimizer', '')}".rstrip()
        table.add_row(det.name, det.status, "yes" if det.sees_hidden_transfer else "no", note)
    console.print(table)
    traits = sorted(report.traits, key=lambda t: (ORDER[t.verdict], t.id))
    shown = [t for t in traits if t.verdict is not Level.INCONCLUSIVE or any(e.level for e in t.evidence)]
    quiet = [t for t in traits if t not in shown]
    table = Table(title="Traits", show_edge=False)
    for col in ("trait", "verdict", "score [95% interval]", "why"):
        table.add_column(col)
    for trait in shown:
        table.add_row(trait.id, f"[{STYLE[trait.verdict]}]{trait.verdict}[/]", _interval(trait), trait.rationale)
    if shown:
        console.print(table)
    if quiet:
        console.print(f"[dim]{len(quiet)} traits inconclusive: only content detectors ran and found nothing overt, which does not clear hidden transfer.[/]")
    flags = [f for f in report.flags if f.trait and not f.accepted]
    if flags:
        console.print(f"{len(flags)} flagged rows, e.g. " + "; ".join(f"row {f.row}: {f.reason}" for f in flags[:3]), markup=False, highlight=False)
    judge = report.detector("judge")
    if judge is not None:
        from auditor.risk import JUDGE_STATEMENT

        cost = judge.cost
        if judge.ran:
            console.print(f"judge: {cost.get('calls', 0)} calls, {cost.get('cache_hits', 0)} cached, "
                          f"{cost.get('total_tokens', 0):,} tokens" + (f", about ${cost['usd']:,.4f}" if cost.get("usd") is not None else ""),
                          highlight=False)
        console.print(f"[yellow]{JUDGE_STATEMENT}[/]", highlight=False)
    prof = report.profile
    if prof and prof.status == "ran":
        top = ", ".join(f"{t.id} {t.difference:+.3f}" for t in prof.traits[:3])
        console.print(f"profile (teacher vs base): picked {', '.join(prof.picked) or 'none'}; top differences {top}", highlight=False)
    elif prof:
        console.print(f"[dim]profile skipped: {prof.reason}[/]", highlight=False)
    gate = report.gate
    verdict = "[bold red]FAILED[/]" if gate.failed else "[green]passed[/]"
    failing = f" ({', '.join(gate.failing_traits[:8])})" if gate.failed else ""
    console.print(f"gate (--fail-on {gate.fail_on}): {verdict}{failing}")
    for path in paths or []:
        console.print(f"wrote {path}", highlight=False)
