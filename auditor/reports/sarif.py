"""SARIF 2.1.0: every flagged row as a result, located at the dataset file and the row's line.

GitHub code scanning (and any SARIF viewer) then shows flagged rows as alerts on the dataset file. One rule per
detector and trait (``lexical/animal:owl``; a flag without a trait uses the detector's name alone). Levels follow the
trait's verdict: high -> error, medium -> warning, anything else -> note. Rows accepted in a baseline carry an external,
accepted suppression; every result carries the row's content digest as a partial fingerprint, so alerts follow a
row through shuffling and re-generation the way baselines do. Rendered from the JSON result alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from auditor.reports.html import fmt_interval, fmt_num

__all__ = ["render_sarif", "SARIF_SCHEMA_URI", "LINE_FORMATS"]

SARIF_SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json"
#: Formats whose ``row`` is a line of the file (JSON Lines: the source line; CSV: the record's line).
LINE_FORMATS = ("jsonl", "jsonl.gz", "csv", "csv.gz")
_LEVEL = {"high": "error", "medium": "warning"}
MAX_MESSAGE = 1000
MAX_SNIPPET = 400


def _uri(path: str) -> str:
    """A URI reference for a local path: relative paths stay relative (so SARIF viewers resolve them
    against the checkout), characters outside the URI grammar are percent-encoded."""
    return quote(path.replace("\\", "/"), safe="/:@!$&'()*+,;=-._~")


def _clip(s: str, n: int = MAX_MESSAGE) -> str:
    return s if len(s) <= n else s[: n - 1] + "…"


def render_sarif(result: dict) -> str:
    """Render a result dict (schema_version 1) as a SARIF 2.1.0 log (JSON text)."""
    tool = result.get("tool") or {}
    ds = result.get("dataset") or {}
    gate = result.get("gate") or {}
    fmt = str(ds.get("format") or "")
    path = str(ds.get("path") or "dataset")
    lines = fmt in LINE_FORMATS
    verdicts = {str(t.get("id")): t for t in result.get("traits") or () if isinstance(t, Mapping)}
    detectors = {str(d.get("name")): d for d in result.get("detectors") or () if isinstance(d, Mapping)}
    baseline = result.get("baseline") if isinstance(result.get("baseline"), Mapping) else None

    rules: dict[str, dict] = {}
    results = []
    for f in result.get("flags") or ():
        if not isinstance(f, Mapping):
            continue
        detector = str(f.get("detector") or "?")
        trait = f.get("trait")
        rule_id = f"{detector}/{trait}" if trait is not None else detector
        verdict = verdicts.get(str(trait), {}).get("verdict") if trait is not None else None
        level = _LEVEL.get(verdict, "note")
        if rule_id not in rules:
            det = detectors.get(detector, {})
            what = f"rows that {detector} flags for {trait}" if trait is not None else f"rows that {detector} flags (no trait)"
            rules[rule_id] = {
                "id": rule_id,
                "name": rule_id.replace("/", "-").replace(":", "-"),
                "shortDescription": {"text": _clip(what, 200)},
                "fullDescription": {"text": _clip(str(det.get("description") or what))},
                "defaultConfiguration": {"level": level},
                "properties": {"detector": detector, "trait": trait, "traitVerdict": verdict,
                               "seesHiddenTransfer": bool(det.get("sees_hidden_transfer"))},
            }
        row = f.get("row")
        score = f.get("score")
        text = f"row {row}: {f.get('reason') or 'flagged'}"
        if trait is not None:
            t = verdicts.get(str(trait), {})
            text += f" (trait {trait}: {verdict or '?'}, score {fmt_num(t.get('score'))} {fmt_interval(t.get('interval'))})"
        physical: dict[str, Any] = {"artifactLocation": {"uri": _uri(path), "index": 0}}
        if lines and isinstance(row, int) and row >= 1:
            region: dict[str, Any] = {"startLine": row}
            excerpt = f.get("excerpt")
            if isinstance(excerpt, str) and excerpt:
                region["snippet"] = {"text": _clip(excerpt, MAX_SNIPPET)}
            physical["region"] = region
        entry: dict[str, Any] = {
            "ruleId": rule_id,
            "ruleIndex": list(rules).index(rule_id),
            "level": level,
            "kind": "fail",
            "message": {"text": _clip(text)},
            "locations": [{"physicalLocation": physical}],
            "partialFingerprints": {"rowDigest/v1": str(f.get("digest") or "")},
            "properties": {"row": row, "digest": f.get("digest"), "detector": detector, "trait": trait,
                           "score": score if isinstance(score, (int, float)) and not isinstance(score, bool) else None,
                           "matches": [m for m in f.get("matches") or () if isinstance(m, str)][:64],
                           "field": f.get("field")},
        }
        if f.get("accepted"):
            entry["suppressions"] = [{"kind": "external", "status": "accepted",
                                      "justification": f"accepted in baseline {baseline.get('path') if baseline else '?'} (keyed by row digest)"}]
        results.append(entry)

    artifact: dict[str, Any] = {"location": {"uri": _uri(path)}, "roles": ["analysisTarget"]}
    if isinstance(ds.get("sha256"), str):
        artifact["hashes"] = {"sha-256": ds["sha256"]}
    broken = [str(d.get("name")) for d in detectors.values() if d.get("status") == "failed"]
    run: dict[str, Any] = {
        "tool": {"driver": {"name": str(tool.get("name") or "trait-audit"), "version": str(tool.get("version") or "0"),
                            "rules": list(rules.values())}},
        "invocations": [{"executionSuccessful": not broken,
                         "toolExecutionNotifications": [
                             {"level": "error", "message": {"text": _clip(f"detector {name} failed: {detectors[name].get('reason') or ''}")}}
                             for name in broken]}],
        "artifacts": [artifact],
        "columnKind": "unicodeCodePoints",
        "results": results,
        "properties": {
            "dataset": {"path": path, "format": fmt, "rows": ds.get("rows"), "sha256": ds.get("sha256"),
                        "rowIsLine": lines},
            "gate": {"failOn": gate.get("fail_on"), "failed": bool(gate.get("failed")),
                     "failingTraits": list(gate.get("failing_traits") or [])},
            "flagsTotal": result.get("flags_total", len(results)),
            "flagsTruncated": bool(result.get("flags_truncated")),
        },
    }
    started = _utc(result.get("created"))
    if started is not None:
        run["invocations"][0]["startTimeUtc"] = started
    log = {"$schema": SARIF_SCHEMA_URI, "version": "2.1.0", "runs": [run]}
    return json.dumps(log, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def _utc(created: Any) -> str | None:
    """SARIF wants UTC date-times ending in Z; the result's ``created`` is ISO 8601 in UTC."""
    from datetime import UTC, datetime

    if not isinstance(created, str):
        return None
    try:
        stamp = datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
