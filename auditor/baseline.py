"""Baselines: accepted flags keyed by row digest, detector and trait, so they survive shuffling and re-generation."""

from __future__ import annotations

import json
from pathlib import Path

from auditor.errors import InputError
from auditor.io import write_atomic

VERSION = 1


def _key(entry: dict) -> tuple[str, str, str | None]:
    return (entry["detector"], entry["digest"], entry.get("trait"))


def load_baseline(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such baseline file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(path, f"baseline is not valid JSON ({err})", line=getattr(err, "lineno", None)) from None
    entries = data.get("accepted") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "digest" in e and "detector" in e for e in entries):
        raise InputError(path, "baseline needs an 'accepted' list of {detector, digest, trait} entries (write one with --write-baseline)")
    return entries


def accepted_keys(entries: list[dict]) -> set[tuple[str, str, str | None]]:
    return {_key(e) for e in entries}


def stale_entries(entries: list[dict], flags: list[dict]) -> list[dict]:
    """Baseline entries that no current flag matches: the row changed or the problem went away."""
    current = {_key(f) for f in flags}
    return [e for e in entries if _key(e) not in current]


def write_baseline(path: str | Path, flags: list[dict], previous: list[dict] | None = None) -> int:
    """Accept every trait flag of this run (format rejects are not risks and are left out)."""
    entries = {_key(e): e for e in previous or []}
    for flag in flags:
        if flag.get("trait") is None:
            continue
        entries[_key(flag)] = {"detector": flag["detector"], "digest": flag["digest"], "trait": flag["trait"], "reason": flag["reason"]}
    ordered = sorted(entries.values(), key=lambda e: (e["detector"], e.get("trait") or "", e["digest"]))
    write_atomic(Path(path), json.dumps({"version": VERSION, "accepted": ordered}, indent=2) + "\n")
    return len(ordered)
