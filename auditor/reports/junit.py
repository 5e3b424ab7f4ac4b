"""JUnit XML: one test case per trait, failed when its verdict is at or above the gate's --fail-on level.

CI systems (Jenkins, GitLab, GitHub test-report actions, Azure) show each trait as a test: its verdict, score and
interval in the failure message, the evidence and whether hidden transfer was checked in system-out. A detector that
failed (the verdict is unusable, exit 3) becomes an extra test case with an <error>. Rendered from the JSON result
alone, like every report; the layout follows the common Ant/Jenkins JUnit format (tests/schemas/junit.xsd).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from auditor.reports.view import fmt_interval, fmt_num, hidden_checked, sorted_traits
from auditor.reports.xmltext import xml_text
from auditor.result import Report, as_report

__all__ = ["render_junit"]


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


def render_junit(result: Report | dict[str, Any]) -> str:
    """Render a result (schema_version 1) as JUnit XML."""
    report = as_report(result)
    tool, ds, gate = report.tool, report.dataset, report.gate
    traits = sorted_traits(report.traits, report.detectors)
    broken = [d for d in report.detectors if d.status == "failed"]
    duration = report.run.duration_s or 0.0

    failures = sum(1 for t in traits if t.verdict.fails(gate.fail_on))
    tests = len(traits) + len(broken)
    root = ET.Element("testsuites", {"name": xml_text(tool.name), "tests": str(tests), "failures": str(failures),
                                     "errors": str(len(broken)), "time": f"{duration:.3f}"})
    suite = _sub(root, "testsuite", name=f"{tool.name}: {ds.path}", tests=str(tests), failures=str(failures), errors=str(len(broken)),
                 skipped="0", time=f"{duration:.3f}", timestamp=_timestamp(report.created))
    props = _sub(suite, "properties")
    for name, value in (
        ("tool.version", tool.version),
        ("dataset.path", ds.path),
        ("dataset.sha256", ds.sha256),
        ("dataset.rows", ds.rows),
        ("teacher", report.teacher.ref if report.teacher else None),
        ("base", report.base.ref if report.base else None),
        ("gate.fail_on", gate.fail_on),
        ("gate.failed", "true" if gate.failed else "false"),
        ("seed", report.run.seed),
        ("flags_total", report.flags_total if report.flags_total is not None else len(report.flags)),
    ):
        if value is not None:
            _sub(props, "property", name=name, value=str(value))

    for t in traits:
        case = _sub(suite, "testcase", name=t.id, classname=f"trait-audit.{t.family}" if t.family else "trait-audit", time="0")
        checked, by = hidden_checked(t, report.detectors)
        line = f"{t.id}: {t.verdict} (score {fmt_num(t.score)}, 95% interval {fmt_interval(t.interval)})"
        lines = [line, f"hidden transfer checked: {'yes, by ' + ', '.join(by) if checked else 'no (only content detectors saw it; silence is not clean)'}"]
        if t.rationale:
            lines.append(f"rationale: {t.rationale}")
        for e in t.evidence:
            lines.append(f"- {e.detector} [{e.level or 'no level'}] {fmt_num(e.score)} {fmt_interval(e.interval)}: {e.summary}")
        if t.verdict.fails(gate.fail_on):
            _sub(case, "failure", "\n".join(lines), message=f"{line} is at or above --fail-on {gate.fail_on}", type=t.verdict.value)
        _sub(case, "system-out", "\n".join(lines))
    for d in broken:
        case = _sub(suite, "testcase", name=f"detector {d.name}", classname="trait-audit.detectors", time="0")
        _sub(case, "error", d.reason or "", message=f"detector {d.name} failed: the verdict is unusable", type="detector-failed")
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
