"""SARIF 2.1.0: every flagged row as a result, located at the dataset file and the row's line.

GitHub code scanning (and any SARIF viewer) then shows flagged rows as alerts on the dataset file. One rule per
detector and trait (``lexical/animal:owl``; a flag without a trait uses the detector's name alone). Levels follow the
trait's verdict: high -> error, medium -> warning, anything else -> note. Rows accepted in a baseline carry an external,
accepted suppression; every result carries the row's content digest as a partial fingerprint, so alerts follow a
row through shuffling and re-generation the way baselines do. Rendered from the JSON result alone.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from auditor.reports.view import clip, fmt_interval, fmt_num
from auditor.result import Flag, Report, as_report

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
    return clip(s, n)


def render_sarif(result: Report | dict[str, Any]) -> str:
    """Render a result (schema_version 1) as a SARIF 2.1.0 log (JSON text)."""
    report = as_report(result)
    ds, gate = report.dataset, report.gate
    path = ds.path or "dataset"
    lines = ds.format in LINE_FORMATS
    verdicts = {t.id: t for t in report.traits}
    detectors = {d.name: d for d in report.detectors}

    rules: dict[str, dict] = {}
    results = []
    for f in report.flags:
        rule_id = f"{f.detector}/{f.trait}" if f.trait is not None else f.detector
        trait = verdicts.get(f.trait) if f.trait is not None else None
        verdict = trait.verdict.value if trait else None
        level = _LEVEL.get(verdict, "note")
        if rule_id not in rules:
            rules[rule_id] = _rule(rule_id, f, detectors.get(f.detector), verdict, level)
        text = f"row {f.row}: {f.reason or 'flagged'}"
        if f.trait is not None:
            text += f" (trait {f.trait}: {verdict or '?'}, score {fmt_num(trait.score if trait else None)} {fmt_interval(trait.interval if trait else None)})"
        physical: dict[str, Any] = {"artifactLocation": {"uri": _uri(path), "index": 0}}
        if lines and f.row >= 1:
            region: dict[str, Any] = {"startLine": f.row}
            if f.excerpt:
                region["snippet"] = {"text": _clip(f.excerpt, MAX_SNIPPET)}
            physical["region"] = region
        entry: dict[str, Any] = {
            "ruleId": rule_id,
            "ruleIndex": list(rules).index(rule_id),
            "level": level,
            "kind": "fail",
            "message": {"text": _clip(text)},
            "locations": [{"physicalLocation": physical}],
            "partialFingerprints": {"rowDigest/v1": f.digest},
            "properties": {"row": f.row, "digest": f.digest, "detector": f.detector, "trait": f.trait, "score": f.score,
                           "matches": list(f.matches[:64]), "field": f.field},
        }
        if f.accepted:
            where = report.baseline.path if report.baseline else "?"
            entry["suppressions"] = [{"kind": "external", "status": "accepted", "justification": f"accepted in baseline {where} (keyed by row digest)"}]
        results.append(entry)

    artifact: dict[str, Any] = {"location": {"uri": _uri(path)}, "roles": ["analysisTarget"]}
    if ds.sha256:
        artifact["hashes"] = {"sha-256": ds.sha256}
    broken = [d for d in report.detectors if d.status == "failed"]
    run: dict[str, Any] = {
        "tool": {"driver": {"name": report.tool.name, "version": report.tool.version, "rules": list(rules.values())}},
        "invocations": [{"executionSuccessful": not broken,
                         "toolExecutionNotifications": [
                             {"level": "error", "message": {"text": _clip(f"detector {d.name} failed: {d.reason or ''}")}} for d in broken]}],
        "artifacts": [artifact],
        "columnKind": "unicodeCodePoints",
        "results": results,
        "properties": {
            "dataset": {"path": path, "format": ds.format, "rows": ds.rows, "sha256": ds.sha256, "rowIsLine": lines},
            "gate": {"failOn": gate.fail_on, "failed": gate.failed, "failingTraits": list(gate.failing_traits)},
            "flagsTotal": report.flags_total if report.flags_total is not None else len(results),
            "flagsTruncated": report.flags_truncated,
        },
    }
    started = _utc(report.created)
    if started is not None:
        run["invocations"][0]["startTimeUtc"] = started
    log = {"$schema": SARIF_SCHEMA_URI, "version": "2.1.0", "runs": [run]}
    return json.dumps(log, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def _rule(rule_id: str, f: Flag, det, verdict: str | None, level: str) -> dict:
    """One rule per detector and trait: what it flags, and whether that detector can see hidden transfer."""
    what = f"rows that {f.detector} flags for {f.trait}" if f.trait is not None else f"rows that {f.detector} flags (no trait)"
    return {
        "id": rule_id,
        "name": rule_id.replace("/", "-").replace(":", "-"),
        "shortDescription": {"text": _clip(what, 200)},
        "fullDescription": {"text": _clip(det.description if det and det.description else what)},
        "defaultConfiguration": {"level": level},
        "properties": {"detector": f.detector, "trait": f.trait, "traitVerdict": verdict,
                       "seesHiddenTransfer": bool(det and det.sees_hidden_transfer)},
    }


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
