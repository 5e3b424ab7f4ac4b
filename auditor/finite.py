"""No NaN or infinity reaches report.json: a statistic has a value, or it is null and listed as unavailable.

JSON has no NaN, and a report that cannot be written is a crash. Detectors should say themselves why a
statistic is missing (lexical does: "no numbers to compare"); this is the net under them. It replaces
every non-finite float with None and records where, and why, so nothing is hidden.
"""

from __future__ import annotations

import math
from typing import Any


def _why(value: float) -> str:
    return "not a number (NaN): too little data for this statistic" if math.isnan(value) else "infinite: a division by zero or an overflow"


def scrub(value: Any, path: str = "", found: dict[str, str] | None = None) -> Any:
    """A copy of value with every non-finite float replaced by None; `found` gets {path: reason}."""
    found = {} if found is None else found
    if isinstance(value, float) and not math.isfinite(value):
        found[path or "value"] = _why(value)
        return None
    if isinstance(value, dict):
        return {k: scrub(v, f"{path}.{k}" if path else str(k), found) for k, v in value.items()}
    if isinstance(value, list | tuple):
        items = [scrub(v, f"{path}[{i}]", found) for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    if hasattr(value, "item") and hasattr(value, "dtype"):  # a numpy scalar
        return scrub(value.item(), path, found)
    return value


def scrub_metrics(metrics: dict) -> dict:
    """A detector's metrics with non-finite values null and listed under metrics['unavailable']."""
    found: dict[str, str] = {}
    clean = scrub(metrics, "", found)
    if found:
        clean["unavailable"] = {**(clean.get("unavailable") or {}), **found}
    return clean


def scrub_evidence(evidence) -> None:
    """A TraitEvidence whose score or interval is not finite gets None there (and says so in its summary)."""
    bad = []
    if isinstance(evidence.score, float) and not math.isfinite(evidence.score):
        evidence.score, bad = None, ["score"]
    if evidence.interval is not None and not all(isinstance(x, int | float) and math.isfinite(x) for x in evidence.interval):
        evidence.interval, bad = None, [*bad, "interval"]
    if bad:
        evidence.summary = f"{evidence.summary} ({' and '.join(bad)} unavailable: too little data)"
