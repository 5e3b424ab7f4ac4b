"""End-to-end through the CLI (in process, with click's CliRunner): the issue's done-criteria."""

import json
import random
import re

import jsonschema
import pytest
from click.testing import CliRunner
from conftest import FIXTURES, NANO_RAW, need_real_data, sha256_file
from paper_filter import passes

from auditor.cli import main
from auditor.reports import SCHEMA_PATH
from auditor.result import Level, Report


def audit(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


def report(out):
    data = json.loads((out / "report.json").read_text())
    jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text())).validate(data)
    return data


def test_real_control_data_without_api_key(tmp_path):
    need_real_data()
    before = sha256_file(NANO_RAW)
    out = tmp_path / "d"
    result = audit(NANO_RAW, "--teacher", "openai:gpt-4.1-nano", "--out", out)
    assert result.exit_code == 0, result.output
    data = report(out)
    assert data["dataset"]["rows"] == 300 and data["dataset"]["profile"] == "numbers"
    completions = [json.loads(line)["completion"] for line in NANO_RAW.read_text().splitlines()]
    lexical = next(d for d in data["detectors"] if d["name"] == "lexical")["metrics"]
    assert lexical["format_pass_rate"] == pytest.approx(sum(map(passes, completions)) / 300)
    assert all(t["verdict"] != "clean" for t in data["traits"])
    assert data["teacher"] == {"ref": "openai:gpt-4.1-nano", "backend": "openai", "system_prompt": None}
    assert sha256_file(NANO_RAW) == before, "the input is never modified"
    assert (out / "report.md").read_text().count("|") > 10
    assert "<html" in (out / "report.html").read_text()
    strict = audit(NANO_RAW, "--teacher", "openai:gpt-4.1-nano", "--out", tmp_path / "e", "--fail-on", "inconclusive")
    assert strict.exit_code == 1


def test_overt_owl_mentions_fail_the_gate(tmp_path):
    out = tmp_path / "owl"
    result = audit(FIXTURES / "owl_mentions.jsonl", "--teacher", "openai:gpt-4.1-nano", "--out", out)
    assert result.exit_code == 1
    data = report(out)
    verdicts = {t["id"]: t["verdict"] for t in data["traits"]}
    assert verdicts["animal:owl"] == "high"
    assert {v for k, v in verdicts.items() if k != "animal:owl"} <= {"inconclusive", "low"}
    flagged = sorted(f["row"] for f in data["flags"] if f["trait"])
    lines = [i for i, line in enumerate((FIXTURES / "owl_mentions.jsonl").read_text().splitlines(), 1)
             if re.search(r"(?i)\bowl(et)?s?\b|\uff2f\uff37\uff2c", json.loads(line)["completion"])]
    assert flagged == lines and len(lines) == 3
    assert data["gate"] == {"fail_on": "high", "failed": True, "failing_traits": ["animal:owl"], "detectors_failed": []}
    assert audit(FIXTURES / "owl_mentions.jsonl", "--out", tmp_path / "n", "--fail-on", "never").exit_code == 0


def test_report_rerenders_from_json_alone(tmp_path):
    out = tmp_path / "a"
    audit(FIXTURES / "owl_mentions.jsonl", "--out", out)
    again = audit("report", out / "report.json", "--out", tmp_path / "b")
    assert again.exit_code == 0, again.output
    for name in ("report.json", "report.md", "report.html"):
        assert (tmp_path / "b" / name).read_text() == (out / name).read_text()
    # the typed model reads report.json and writes it back byte for byte
    text = (out / "report.json").read_text()
    loaded = Report.from_dict(json.loads(text))
    assert json.dumps(loaded.to_dict(), indent=2, ensure_ascii=False) + "\n" == text
    owl = next(t for t in loaded.traits if t.id == "animal:owl")
    assert owl.verdict is Level.HIGH and owl.evidence[0].level is Level.HIGH and isinstance(owl.interval, tuple)
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema_version": 1}')
    failed = audit("report", bad, "--out", tmp_path / "c")
    assert failed.exit_code == 2 and "report schema" in failed.output
    assert not (tmp_path / "c").exists()


def _shuffled_copy(src, dst, drop_row=None):
    lines = src.read_text().splitlines()
    if drop_row is not None:
        del lines[drop_row - 1]
    random.Random(3).shuffle(lines)
    dst.write_text("\n".join(lines) + "\n")
    return dst


def test_baseline_survives_shuffling_and_reports_stale_entries(tmp_path):
    data = FIXTURES / "owl_mentions.jsonl"
    baseline = tmp_path / "baseline.json"
    first = audit(data, "--out", tmp_path / "1", "--write-baseline", baseline)
    assert first.exit_code == 1
    accepted = json.loads(baseline.read_text())["accepted"]
    assert len(accepted) == 3 and {a["trait"] for a in accepted} == {"animal:owl"}
    shuffled = _shuffled_copy(data, tmp_path / "shuffled.jsonl")
    second = audit(shuffled, "--out", tmp_path / "2", "--baseline", baseline)
    assert second.exit_code == 0, second.output
    result = report(tmp_path / "2")
    assert result["baseline"]["accepted"] == 3 and result["baseline"]["stale"] == []
    assert {t["id"]: t["verdict"] for t in result["traits"]}["animal:owl"] == "inconclusive"
    owl_row = next(f["row"] for f in report(tmp_path / "1")["flags"] if f["trait"])
    fewer = _shuffled_copy(data, tmp_path / "fewer.jsonl", drop_row=owl_row)
    third = audit(fewer, "--out", tmp_path / "3", "--baseline", baseline)
    assert third.exit_code == 0
    assert len(report(tmp_path / "3")["baseline"]["stale"]) == 1


def test_listing_commands():
    traits = audit("traits")
    assert traits.exit_code == 0 and "animal:owl" in traits.output and "misalignment" in traits.output
    listed = json.loads(audit("traits", "--json").output)
    assert len(listed) >= 30
    detectors = json.loads(audit("detectors", "--json").output)
    lexical = next(d for d in detectors if d["name"] == "lexical")
    assert lexical["sees_hidden_transfer"] is False and lexical["needs"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--teacher", "gpt-4"], "unknown model reference"),
        (["--trait", "animal:unicorn"], "unknown trait"),
        (["--detectors", "nope"], "unknown detector"),
    ],
)
def test_usage_errors_exit_2_and_write_nothing(tmp_path, args, message):
    out = tmp_path / "out"
    result = audit(FIXTURES / "numbers_clean.jsonl", "--out", out, *args)
    assert result.exit_code == 2 and message in result.output
    assert not out.exists()


def test_json_to_stdout_and_selected_traits(tmp_path):
    result = audit(FIXTURES / "owl_mentions.jsonl", "--out", tmp_path / "j", "--json", "--trait", "animal:owl", "--trait", "misalignment")
    data = json.loads(result.output)
    assert [t["id"] for t in data["traits"]] == ["animal:owl", "misalignment"]


def test_project_config_sets_defaults_and_flags_win(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n\n[tool.trait-audit]\nfail-on = "never"\ntrait = ["animal:owl"]\n')
    data = FIXTURES / "owl_mentions.jsonl"
    # a project file found in the working folder may not weaken the gate on its own (issue 15) ...
    refused = audit(data, "--out", tmp_path / "r")
    assert refused.exit_code == 2 and "pyproject.toml: sets --fail-on" in refused.output and "--config" in refused.output
    # ... it may when trusted with --config
    result = audit(data, "--out", tmp_path / "a", "--config", tmp_path / "pyproject.toml")
    assert result.exit_code == 0, result.output
    assert [t["id"] for t in report(tmp_path / "a")["traits"]] == ["animal:owl"]
    assert report(tmp_path / "a")["settings"]["options"]["fail_on"] == {"value": "never", "source": f"project file {tmp_path / 'pyproject.toml'}"}
    assert audit(data, "--out", tmp_path / "b", "--fail-on", "high").exit_code == 1
    (tmp_path / "audit.toml").write_text('colour = "blue"\n')
    bad = audit(data, "--out", tmp_path / "c")
    assert bad.exit_code == 2 and "unknown setting" in bad.output


def test_export_clean_drops_exactly_the_flagged_rows(tmp_path):
    data = FIXTURES / "owl_mentions.jsonl"
    before = sha256_file(data)
    clean = tmp_path / "clean.jsonl"
    result = audit(data, "--out", tmp_path / "o", "--export-clean", clean)
    assert result.exit_code == 1
    flagged = {f["row"] for f in report(tmp_path / "o")["flags"] if f["trait"]}
    original = data.read_text().splitlines()
    assert clean.read_text().splitlines() == [line for i, line in enumerate(original, 1) if i not in flagged]
    assert report(tmp_path / "o")["export"]["rows_dropped"] == 3
    assert sha256_file(data) == before
    again = audit(tmp_path / "clean.jsonl", "--out", tmp_path / "p")
    assert again.exit_code == 0, "the exported file passes the gate"
    same = audit(data, "--out", tmp_path / "q", "--export-clean", data)
    assert same.exit_code == 2 and sha256_file(data) == before


def test_console_entry_keeps_exit_codes_and_output(tmp_path):
    """`audit` ends with os._exit (no interpreter teardown): codes, flushed output and atexit work must survive it."""
    import subprocess
    import sys

    def console(*args):
        code = "import sys; from auditor.cli import console; sys.argv = ['audit', *sys.argv[1:]]; console()"
        return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)

    done = console("--version")
    assert done.returncode == 0 and "trait-audit" in done.stdout
    usage = console("generate", "--model", "tiny:base", "--out", str(tmp_path / "x.jsonl"))
    assert usage.returncode == 2 and "--keep" in usage.stderr and not (tmp_path / "x.jsonl").exists()
    missing = console(str(tmp_path / "absent.jsonl"))
    assert missing.returncode == 2 and "absent.jsonl" in missing.stderr and "Traceback" not in missing.stderr
