"""JUnit XML: one test case per trait, failed when its verdict is at or above the gate's --fail-on level.

CI systems (Jenkins, GitLab, GitHub test-report actions, Azure) show each trait as a test: its verdict, score and
interval in the failure message, the evidence and whether hidden transfer was checked in system-out. A detector that
failed (the verdict is unusable, exit 3) becomes an extra test case with an <error>. Rendered from the JSON result
alone, like every report; the layout follows the common Ant/Jenkins JUnit format (tests/schemas/junit.xsd).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

from auditor.reports.html import fmt_interval, fmt_num, hidden_checked, sorted_traits
from auditor.reports.xmltext import xml_text
from auditor.risk import GATE_ORDER

__all__ = ["render_junit", "fails_gate"]


def fails_gate(verdict: Any, fail_on: Any) -> bool:
    """True when ``verdict`` is at or above ``fail_on`` in the gate's order (auditor.risk); ``never`` fails nothing."""
    if fail_on not in GATE_ORDER or verdict not in GATE_ORDER:
        return False
    return GATE_ORDER[verdict] >= GATE_ORDER[fail_on]


def _timestamp(created: Any) -> str | None:
    """JUnit timestamps carry no zone (xs:dateTime without offset, as Ant writes them); the result's is UTC."""
    if not isinstance(created, str) or len(created) < 19:
        return None
    stamp = created[:19]
    return stamp if re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}", stamp) else None


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: Any) -> ET.Element:
    el = ET.SubElement(parent, tag, {k: xml_text(v) for k, v in attrs.items() if v is not None})
    if text is not None:
        el.text = xml_text(text)
    return el


def render_junit(result: dict) -> str:
    """Render a result dict (schema_version 1) as JUnit XML."""
    tool = result.get("tool") or {}
    ds = result.get("dataset") or {}
    gate = result.get("gate") or {}
    fail_on = gate.get("fail_on")
    detectors = [d for d in result.get("detectors") or () if isinstance(d, Mapping)]
    traits = sorted_traits(t for t in result.get("traits") or () if isinstance(t, Mapping))
    broken = [d for d in detectors if d.get("status") == "failed"]
    run = result.get("run") if isinstance(result.get("run"), Mapping) else {}
    duration = run.get("duration_s") if isinstance(run.get("duration_s"), (int, float)) else 0.0

    failures = sum(1 for t in traits if fails_gate(t.get("verdict"), fail_on))
    tests = len(traits) + len(broken)
    suite_name = f"{tool.get('name') or 'trait-audit'}: {ds.get('path', '?')}"
    root = ET.Element("testsuites", {"name": xml_text(tool.get("name") or "trait-audit"), "tests": str(tests),
                                     "failures": str(failures), "errors": str(len(broken)), "time": f"{duration:.3f}"})
    suite = _sub(root, "testsuite", name=suite_name, tests=str(tests), failures=str(failures), errors=str(len(broken)),
                 skipped="0", time=f"{duration:.3f}", timestamp=_timestamp(result.get("created")))
    props = _sub(suite, "properties")
    for name, value in (
        ("tool.version", tool.get("version")),
        ("dataset.path", ds.get("path")),
        ("dataset.sha256", ds.get("sha256")),
        ("dataset.rows", ds.get("rows")),
        ("teacher", (result.get("teacher") or {}).get("ref") if isinstance(result.get("teacher"), Mapping) else None),
        ("base", (result.get("base") or {}).get("ref") if isinstance(result.get("base"), Mapping) else None),
        ("gate.fail_on", fail_on),
        ("gate.failed", "true" if gate.get("failed") else "false"),
        ("seed", run.get("seed")),
        ("flags_total", result.get("flags_total", len(result.get("flags") or ()))),
    ):
        if value is not None:
            _sub(props, "property", name=name, value=str(value))

    for t in traits:
        tid = str(t.get("id", "?"))
        verdict = str(t.get("verdict", "inconclusive"))
        family = t.get("family")
        case = _sub(suite, "testcase", name=tid, classname=f"trait-audit.{family}" if family else "trait-audit", time="0")
        checked, by = hidden_checked(t, detectors)
        line = f"{tid}: {verdict} (score {fmt_num(t.get('score'))}, 95% interval {fmt_interval(t.get('interval'))})"
        lines = [line, f"hidden transfer checked: {'yes, by ' + ', '.join(by) if checked else 'no (only content detectors saw it; silence is not clean)'}"]
        if t.get("rationale"):
            lines.append(f"rationale: {t['rationale']}")
        for e in t.get("evidence") or ():
            if isinstance(e, Mapping):
                lines.append(f"- {e.get('detector', '?')} [{e.get('level') or 'no level'}] {fmt_num(e.get('score'))} "
                             f"{fmt_interval(e.get('interval'))}: {e.get('summary', '')}")
        if fails_gate(verdict, fail_on):
            _sub(case, "failure", "\n".join(lines), message=f"{line} is at or above --fail-on {fail_on}", type=verdict)
        _sub(case, "system-out", "\n".join(lines))
    for d in broken:
        case = _sub(suite, "testcase", name=f"detector {d.get('name', '?')}", classname="trait-audit.detectors", time="0")
        _sub(case, "error", str(d.get("reason") or ""), message=f"detector {d.get('name', '?')} failed: the verdict is unusable",
             type="detector-failed")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
