"""The terminal summary, from the JSON result like every other report."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

STYLE = {"high": "bold red", "medium": "yellow", "low": "cyan", "inconclusive": "dim", "clean": "green"}
ORDER = {"high": 0, "medium": 1, "low": 2, "clean": 3, "inconclusive": 4}


def _interval(trait: dict) -> str:
    if trait.get("score") is None or not trait.get("interval"):
        return ""
    lo, hi = trait["interval"]
    return f"{trait['score']:.3g} [{lo:.3g}, {hi:.3g}]"


def print_summary(result: dict, console: Console, paths: list | None = None) -> None:
    from auditor.inert import for_rich, inert_result

    result = inert_result(result)  # every string from the result is data: no escapes, no markup, no workflow commands
    data = result["dataset"]
    console.print(f"[bold]trait-audit[/] {data['path']}: {data['rows']} rows ({data['format']}, {data.get('schema', '?')}, profile {data.get('profile', '?')})")
    if data.get("duplicates", {}).get("rows"):
        console.print(f"[yellow]{data['duplicates']['rows']} duplicate rows[/] in {len(data['duplicates']['groups'])}+ groups")
    table = Table(title="Detectors", show_edge=False)
    for col in ("detector", "status", "sees hidden transfer", "note"):
        table.add_column(col)
    for det in result["detectors"]:
        note = det.get("reason") or ""
        if "format_pass_rate" in det.get("metrics", {}):
            note = f"format_pass_rate {det['metrics']['format_pass_rate']:.3f}"
        if det["name"] == "probe" and det["status"] == "ran":
            m = det["metrics"]
            note = f"{m['seeds_run']} of {m['seeds_requested']} seeds, {m['rows']} rows x {m['epochs']} epochs, {m['backend']} {m['config'].get('method', '')} {m['config'].get('optimizer', '')}".rstrip()
        table.add_row(det["name"], det["status"], "yes" if det.get("sees_hidden_transfer") else "no", note)
    console.print(table)
    traits = sorted(result["traits"], key=lambda t: (ORDER[t["verdict"]], t["id"]))
    shown = [t for t in traits if t["verdict"] != "inconclusive" or t["evidence"] and any(e.get("level") for e in t["evidence"])]
    quiet = [t for t in traits if t not in shown]
    table = Table(title="Traits", show_edge=False)
    for col in ("trait", "verdict", "score [95% interval]", "why"):
        table.add_column(col)
    for trait in shown:
        table.add_row(trait["id"], f"[{STYLE[trait['verdict']]}]{trait['verdict']}[/]", _interval(trait), trait.get("rationale", ""))
    if shown:
        console.print(table)
    if quiet:
        console.print(f"[dim]{len(quiet)} traits inconclusive: only content detectors ran and found nothing overt, which does not clear hidden transfer.[/]")
    flags = [f for f in result["flags"] if f.get("trait") and not f.get("accepted")]
    if flags:
        console.print(f"{len(flags)} flagged rows, e.g. " + "; ".join(f"row {f['row']}: {f['reason']}" for f in flags[:3]), highlight=False)
    judge = next((d for d in result["detectors"] if d["name"] == "judge"), None)
    if judge is not None:
        from auditor.risk import JUDGE_STATEMENT

        cost = judge.get("cost") or {}
        if judge["status"] == "ran":
            console.print(f"judge: {cost.get('calls', 0)} calls, {cost.get('cache_hits', 0)} cached, "
                          f"{cost.get('total_tokens', 0):,} tokens" + (f", about ${cost['usd']:,.4f}" if cost.get("usd") is not None else ""),
                          highlight=False)
        console.print(f"[yellow]{JUDGE_STATEMENT}[/]", highlight=False)
    prof = result.get("profile")
    if prof and prof.get("status") == "ran":
        top = ", ".join(f"{t['id']} {t['difference']:+.3f}" for t in prof["traits"][:3])
        console.print(f"profile (teacher vs base): picked {', '.join(prof['picked']) or 'none'}; top differences {top}", highlight=False)
    elif prof:
        console.print(f"[dim]profile skipped: {prof['reason']}[/]", highlight=False)
    gate = result["gate"]
    verdict = "[bold red]FAILED[/]" if gate["failed"] else "[green]passed[/]"
    failing = f" ({', '.join(gate.get('failing_traits', [])[:8])})" if gate["failed"] else ""
    console.print(f"gate (--fail-on {gate['fail_on']}): {verdict}{failing}")
    for path in paths or []:
        console.print(f"wrote {for_rich(path)}", highlight=False)
