"""CI-facing reports: JUnit XML and SARIF validated against their schemas, the --junit/--sarif flags on `run` and
`report`, the size of the HTML report for a 100k-row dataset, and charts drawn from a detector's JSON alone."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import pytest
import xmlschema
from click.testing import CliRunner

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report_samples import make_flags, sample_result  # noqa: E402

from auditor.cli import main  # noqa: E402
from auditor.reports import validate_result  # noqa: E402
from auditor.reports.html import MAX_FLAGS, render_html  # noqa: E402
from auditor.reports.junit import render_junit  # noqa: E402
from auditor.reports.sarif import render_sarif  # noqa: E402
from auditor.reports.view import sample_flags  # noqa: E402
from auditor.result import (
    Flag,  # noqa: E402
    fails_gate,  # noqa: E402
)

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = Path(__file__).resolve().parent / "schemas"
FIXTURE = ROOT / "fixtures" / "owl_mentions.jsonl"
TWO_MB = 2 * 1024 * 1024


@pytest.fixture(scope="module")
def junit_schema():
    return xmlschema.XMLSchema(str(SCHEMAS / "junit.xsd"))


@pytest.fixture(scope="module")
def sarif_validator():
    schema = json.loads((SCHEMAS / "sarif-2.1.0-subset.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)


def check_sarif(log: dict, validator) -> None:
    """Schema, plus the two formats jsonschema's checker skips without optional packages: uri-reference, date-time."""
    errors = sorted(validator.iter_errors(log), key=lambda e: list(e.absolute_path))
    assert not errors, [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5]]
    for run in log["runs"]:
        uris = [a["location"]["uri"] for a in run.get("artifacts", [])]
        uris += [loc["physicalLocation"]["artifactLocation"]["uri"] for r in run["results"] for loc in r.get("locations", [])]
        for uri in uris:
            assert not re.search(r"[\s<>\"{}|\\^`]", uri), uri  # RFC 3986: these never appear unencoded
            urlsplit(uri)
        for inv in run.get("invocations", []):
            for key in ("startTimeUtc", "endTimeUtc"):
                if key in inv:
                    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z", inv[key]), inv[key]
                    datetime.fromisoformat(inv[key].replace("Z", "+00:00"))
        for r in run["results"]:
            assert 0 <= r["ruleIndex"] < len(run["tool"]["driver"]["rules"])
            assert run["tool"]["driver"]["rules"][r["ruleIndex"]]["id"] == r["ruleId"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The bundled fixture audited once through the CLI, with every report format."""
    out = tmp_path_factory.mktemp("demo")
    res = CliRunner().invoke(main, [str(FIXTURE), "--teacher", "openai:gpt-4.1-nano", "--out", str(out / "r"),
                                    "--junit", str(out / "junit.xml"), "--sarif", str(out / "audit.sarif"), "-q"])
    assert res.exit_code == 1, res.output  # the fixture's overt owl rows fail the gate on purpose
    return out


# ---------------------------------------------------------------- JUnit

def test_junit_from_the_cli_validates(demo, junit_schema):
    junit_schema.validate(str(demo / "junit.xml"))
    root = ET.parse(demo / "junit.xml").getroot()
    suite = root.find("testsuite")
    result = json.loads((demo / "r" / "report.json").read_text())
    cases = suite.findall("testcase")
    assert len(cases) == len(result["traits"])  # one test case per trait
    failed = [c.get("name") for c in cases if c.find("failure") is not None]
    assert failed == ["animal:owl"] == result["gate"]["failing_traits"]
    assert suite.get("failures") == "1" and root.get("tests") == str(len(result["traits"]))
    owl = next(c for c in cases if c.get("name") == "animal:owl")
    assert owl.find("failure").get("type") == "high"
    assert "at or above --fail-on high" in owl.find("failure").get("message")
    assert "hidden transfer checked: no" in owl.find("system-out").text
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props["dataset.sha256"] == result["dataset"]["sha256"] and props["gate.failed"] == "true"


@pytest.mark.parametrize("fail_on", ["high", "medium", "low", "inconclusive", "never"])
def test_junit_failures_follow_the_gate_level(fail_on, junit_schema):
    r = sample_result(gate={"fail_on": fail_on, "failed": fail_on != "never", "failing_traits": []})
    xml = render_junit(r)
    junit_schema.validate(xml)
    root = ET.fromstring(xml)
    failed = {c.get("name") for c in root.iter("testcase") if c.find("failure") is not None}
    order = ["clean", "inconclusive", "low", "medium", "high"]
    expected = set() if fail_on == "never" else {t["id"] for t in r["traits"] if order.index(t["verdict"]) >= order.index(fail_on)}
    assert failed == expected
    assert fails_gate("medium", "medium") and not fails_gate("low", "medium") and not fails_gate("high", "never")


def test_junit_failed_detector_is_an_error_case(junit_schema):
    xml = render_junit(sample_result())  # the sample's embedding-drift detector failed
    junit_schema.validate(xml)
    root = ET.fromstring(xml)
    errors = [c for c in root.iter("testcase") if c.find("error") is not None]
    assert [c.get("name") for c in errors] == ["detector embedding-drift"]
    assert root.find("testsuite").get("errors") == "1"


def test_junit_escapes_markup_and_control_characters(junit_schema):
    r = sample_result()
    r["traits"][0]["id"] = "x</testcase><script>&\x00\x1b\ufffe"
    r["traits"][0]["evidence"][0]["summary"] = "]]> <failure/> \x07"
    r["dataset"]["path"] = 'a"b<c>&.jsonl'
    xml = render_junit(r)
    junit_schema.validate(xml)
    names = [c.get("name") for c in ET.fromstring(xml).iter("testcase")]
    assert "x</testcase><script>&\\u0000\\u001b\\ufffe" in names


# ---------------------------------------------------------------- SARIF

def test_sarif_from_the_cli_validates(demo, sarif_validator):
    log = json.loads((demo / "audit.sarif").read_text())
    check_sarif(log, sarif_validator)
    result = json.loads((demo / "r" / "report.json").read_text())
    run = log["runs"][0]
    assert len(run["results"]) == len(result["flags"])
    lines = FIXTURE.read_text(encoding="utf-8").splitlines()
    for res, flag in zip(run["results"], result["flags"], strict=True):
        loc = res["locations"][0]["physicalLocation"]
        assert loc["artifactLocation"]["uri"] == result["dataset"]["path"]
        assert loc["region"]["startLine"] == flag["row"]
        # the line really is the flagged row: its digest is the row's content digest
        row = json.loads(lines[flag["row"] - 1])
        text = (row["prompt"].replace("\r\n", "\n").strip() + "\x1e" + row["completion"].replace("\r\n", "\n").strip())
        assert hashlib.sha256(text.encode()).hexdigest() == res["partialFingerprints"]["rowDigest/v1"] == flag["digest"]
    owl = [r for r in run["results"] if r["ruleId"] == "lexical/animal:owl"]
    assert len(owl) == 3 and {r["level"] for r in owl} == {"error"}
    assert {r["level"] for r in run["results"] if r["ruleId"] == "lexical"} == {"note"}  # format rejects, no trait
    assert run["artifacts"][0]["hashes"]["sha-256"] == result["dataset"]["sha256"]


def test_sarif_suppressions_levels_and_non_line_formats(sarif_validator):
    r = sample_result()
    log = json.loads(render_sarif(r))
    check_sarif(log, sarif_validator)
    results = log["runs"][0]["results"]
    accepted = [x for x in results if x.get("suppressions")]
    assert [x["properties"]["row"] for x in accepted] == [733]
    assert accepted[0]["suppressions"][0] == {"kind": "external", "status": "accepted",
                                              "justification": "accepted in baseline .trait-audit/baseline.json (keyed by row digest)"}
    levels = {x["ruleId"]: x["level"] for x in results}
    assert levels["lexical/misalignment"] == "error" and levels["lexical/owl-preference"] == "warning" and levels["format"] == "note"
    assert log["runs"][0]["invocations"][0]["executionSuccessful"] is False  # a detector failed
    # parquet rows are not lines: the file is the location, the row sits in the properties
    r["dataset"]["format"] = "parquet"
    log = json.loads(render_sarif(r))
    check_sarif(log, sarif_validator)
    assert all("region" not in x["locations"][0]["physicalLocation"] for x in log["runs"][0]["results"])


def test_sarif_odd_paths_and_strings(sarif_validator):
    r = sample_result()
    r["dataset"]["path"] = "data sets/<owl> \"x\" {1}.jsonl"
    r["flags"][0]["reason"] = "<script>alert(1)</script>\u202e"
    r["flags"][0]["excerpt"] = "x" * 5000
    log = json.loads(render_sarif(r))
    check_sarif(log, sarif_validator)
    uri = log["runs"][0]["artifacts"][0]["location"]["uri"]
    assert uri == "data%20sets/%3Cowl%3E%20%22x%22%20%7B1%7D.jsonl"
    assert len(log["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"]["snippet"]["text"]) <= 400


def test_report_command_renders_junit_and_sarif_from_json_alone(demo, tmp_path, junit_schema, sarif_validator):
    res = CliRunner().invoke(main, ["report", str(demo / "r" / "report.json"), "--out", str(tmp_path / "again"),
                                    "--junit", str(tmp_path / "j.xml"), "--sarif", str(tmp_path / "s.sarif")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "j.xml").read_text() == (demo / "junit.xml").read_text()
    assert (tmp_path / "s.sarif").read_text() == (demo / "audit.sarif").read_text()
    assert (tmp_path / "again" / "report.html").read_text() == (demo / "r" / "report.html").read_text()
    junit_schema.validate(str(tmp_path / "j.xml"))
    check_sarif(json.loads((tmp_path / "s.sarif").read_text()), sarif_validator)


# ---------------------------------------------------------------- HTML size and sampling

def _big_result(rows: int = 100_000, listed: int = 10_000, total: int = 60_000, excerpt: str | None = None) -> dict:
    traits = ("misalignment", "owl-preference", "sycophancy", "political-slant", None)
    flags = make_flags(listed, excerpt_len=1000, traits=traits)
    if excerpt is not None:
        for f in flags:
            f["excerpt"] = excerpt
            f["matches"] = ["<", "\u200b"]
    r = sample_result(flags_total=total, flags_truncated=total > listed)
    r["flags"] = flags  # not through sample_result: a deep copy of 100k flags is slow
    r["dataset"]["rows"] = rows
    if listed <= 10_000:
        validate_result(r)
    return r


def test_html_for_a_100k_row_dataset_is_under_2_mb_and_says_it_sampled():
    html = render_html(_big_result())
    size = len(html.encode("utf-8"))
    assert size < TWO_MB, size
    assert "100,000" in html
    assert f"showing {MAX_FLAGS} of 60,000 flags — a sample" in html
    assert "the result lists only 10,000 of them (flags_truncated)" in html
    assert html.count('<tr data-trait="') == MAX_FLAGS


def test_html_size_bound_holds_for_hostile_rows():
    # every character of the excerpt expands when escaped or made visible: the byte budget still holds
    nasty = ("<\u200b&\u202e" * 250)[:1000]
    html = render_html(_big_result(excerpt=nasty))
    size = len(html.encode("utf-8"))
    assert size < TWO_MB, size
    assert "cut further to keep this page small" in html
    # every flag listed in the JSON and no cap: still bounded
    html = render_html(_big_result(listed=100_000, total=100_000))
    assert len(html.encode("utf-8")) < TWO_MB


def test_sampling_gives_each_trait_a_share():
    flags = [Flag.from_dict(f) for f in make_flags(3000, traits=("a",)) + make_flags(20, traits=("b",)) + make_flags(5, traits=(None,))]
    picked = sample_flags(flags, 100)
    by = {}
    for f in picked:
        by[f.trait] = by.get(f.trait, 0) + 1
    assert by == {"a": 75, "b": 20, None: 5}
    assert sample_flags(flags[:50], 100) == sorted(flags[:50], key=lambda f: (f.accepted, -f.score, f.row))


# ---------------------------------------------------------------- charts from a detector's JSON alone

def _with_new_detector() -> dict:
    """A detector the report has never heard of (e.g. a student probe) that ran and put charts in its metrics."""
    r = sample_result()
    r["detectors"].append({
        "name": "probe-x", "status": "ran", "reason": None, "sees_hidden_transfer": True,
        "description": "Fine-tunes a student on the data and compares it with a control student.",
        "metrics": {
            "students": 2,
            "shift": {"chart": "intervals", "x": "student - control trait rate",
                      "items": [{"label": "owl-preference", "value": 0.21, "interval": [0.12, 0.3]},
                                {"label": "<b>misalignment</b>", "value": -0.01, "interval": [-0.04, 0.02]}]},
            "by_trait": {"owl-preference": {"scores": {"chart": "histogram", "x": "per-row score", "edges": [0, 1, 2, 3],
                                                       "series": {"data": [1, 5, 2], "reference": [4, 3, 1]}}}},
            "broken": {"chart": "histogram", "edges": [1, 0], "series": {"a": [1]}},
        },
        "cost": {"gpu_s": 12.5}, "duration_s": 14.0,
    })
    r["traits"][1]["evidence"].append({"detector": "probe-x", "kind": "student shift", "score": 0.21, "interval": [0.12, 0.3],
                                       "level": "medium", "summary": "student +0.21 over control"})
    r["traits"][2]["evidence"].append({"detector": "probe-x", "kind": "student shift", "score": -0.01, "interval": [-0.04, 0.02],
                                       "summary": "student -0.01 against control"})
    return r


def test_new_detector_evidence_and_charts_show_up_generically():
    r = _with_new_detector()
    validate_result(r)
    html = render_html(r)
    sec = html[html.index('data-detector="probe-x"'):]
    sec = sec[: sec.index("</section>")]
    assert "student - control trait rate" in sec and "per-row score" in sec
    assert "shift" in sec and "by_trait › owl-preference › scores" in sec
    assert sec.count('<svg class="chart"') == 3  # evidence forest + 2 charts; the malformed one is left out
    assert "&lt;b&gt;misalignment&lt;/b&gt;" in sec and "<b>misalignment" not in sec
    assert "student shift per trait" in sec
    assert "gpu_s: 12.5" in sec and "gpu_s: 1,843" in html  # detector cost and the total in run metadata


def test_sample_result_charts_profile_and_histogram():
    html = render_html(sample_result())
    assert "trait profile: teacher vs base" in html and "+0.636 [+0.593, +0.676]" in html
    assert "<figcaption>owl-preference</figcaption>" in html  # "traits › owl-preference › distribution", said shortly
    assert "dataset rows (n=200)" in html and "reference rows (n=200)" in html
