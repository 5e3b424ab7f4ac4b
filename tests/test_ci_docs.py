"""docs/reports-and-ci.md stays runnable: its GitHub Actions workflow is parsed and its shell steps (audit, step summary, gate)
run on the bundled fixture as GitHub would run them (bash -eo pipefail, GITHUB_OUTPUT, GITHUB_STEP_SUMMARY); the
upload steps' paths must exist. The install step and the `uses:` actions are GitHub's and are not run here. The
pre-commit hook definition is checked and its entry point run on the fixtures."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "reports-and-ci.md"


def workflow() -> dict:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    flows = [yaml.safe_load(b) for b in blocks]
    flows = [f for f in flows if isinstance(f, dict) and "jobs" in f]
    assert len(flows) == 1
    return flows[0]


def test_workflow_shape():
    wf = workflow()
    steps = wf["jobs"]["audit"]["steps"]
    names = [s.get("name") or s.get("uses") for s in steps]
    assert names[:3] == ["actions/checkout@v4", "actions/setup-python@v5", "Install trait-audit"]
    audit = next(s for s in steps if s.get("id") == "audit")
    assert "--junit" in audit["run"] and "--sarif" in audit["run"] and 'echo "code=$?" >> "$GITHUB_OUTPUT"' in audit["run"]
    after = steps[steps.index(audit) + 1:]
    assert all(s.get("if") == "always()" for s in after), "summary, upload and gate must run when the gate fails"
    assert any("GITHUB_STEP_SUMMARY" in s.get("run", "") and "report.md" in s["run"] for s in after)
    upload = next(s for s in after if str(s.get("uses", "")).startswith("actions/upload-artifact"))
    assert "report.html" in upload["with"]["path"]
    assert after[-1]["name"] == "Gate"
    install = next(s for s in steps if s.get("name") == "Install trait-audit")["run"]
    assert "-c constraints.txt" in install and "torch==2.13.0" in install


def _shim(tmp: Path) -> Path:
    """`audit` and `audit-pre-commit` on PATH, running this checkout's code with this interpreter."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    for name, module in (("audit", "auditor.cli"), ("audit-pre-commit", "auditor.precommit")):
        shim = bin_dir / name
        shim.write_text(f'#!/bin/sh\nPYTHONPATH="{ROOT}${{PYTHONPATH:+:$PYTHONPATH}}" exec "{sys.executable}" -m {module} "$@"\n')
        shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    return bin_dir


def _run_step(step: dict, env: dict, cwd: Path, outputs: dict) -> subprocess.CompletedProcess:
    step_env = dict(env)
    for key, value in (step.get("env") or {}).items():
        step_env[key] = re.sub(r"\$\{\{\s*steps\.(\w+)\.outputs\.(\w+)\s*\}\}", lambda m: outputs.get(m.group(2), ""), str(value))
    script = cwd / "step.sh"
    script.write_text(step["run"])
    # what GitHub runs for `run:` on Linux
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)], cwd=cwd, env=step_env,
                          capture_output=True, text=True, timeout=300)


def test_workflow_runs_end_to_end_on_the_bundled_fixture(tmp_path):
    wf = workflow()
    work = tmp_path / "checkout"
    work.mkdir()
    (work / "fixtures").symlink_to(ROOT / "fixtures")
    summary, output = tmp_path / "summary.md", tmp_path / "output"
    summary.touch()
    output.touch()
    env = {**os.environ, **{k: str(v) for k, v in wf["env"].items()},
           "PATH": f"{_shim(tmp_path)}:{os.environ['PATH']}", "GITHUB_STEP_SUMMARY": str(summary), "GITHUB_OUTPUT": str(output)}
    results = {}
    for step in wf["jobs"]["audit"]["steps"]:
        if "run" not in step or step.get("name") == "Install trait-audit":
            continue
        outputs = dict(line.split("=", 1) for line in output.read_text().splitlines() if "=" in line)
        results[step.get("id") or step["name"]] = _run_step(step, env, work, outputs)
    assert results["audit"].returncode == 0, results["audit"].stderr  # the step records the code, the Gate acts on it
    assert output.read_text().strip() == "code=1"  # the fixture fails the gate on purpose
    assert summary.read_text().startswith("## trait-audit: ❌ gate failed (fail_on: high)")
    gate = results["Gate"]
    assert gate.returncode == 1 and "::error::trait-audit gate failed" in gate.stdout
    for step in wf["jobs"]["audit"]["steps"]:
        if str(step.get("uses", "")).startswith("actions/upload-artifact"):
            for path in step["with"]["path"].split():
                assert (work / path).is_file(), path
    report = json.loads((work / "reports/ci/report.json").read_text())
    assert report["gate"]["failing_traits"] == ["animal:owl"]
    assert (work / "reports/ci/report.html").stat().st_size < 2 * 1024 * 1024


def test_pre_commit_hooks(tmp_path):
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert {h["id"] for h in hooks} == {"trait-audit", "trait-audit-system"}
    for hook in hooks:
        assert hook["entry"] == "audit-pre-commit" and hook["pass_filenames"] and hook["require_serial"]
        pattern = re.compile(hook["files"])
        for name in ("data/a.jsonl", "b.json", "c.parquet", "d.csv.gz", "e.ndjson"):
            assert pattern.search(name), name
        assert not pattern.search("README.md") and not pattern.search("x.py")
    scripts = (ROOT / "pyproject.toml").read_text()
    assert 'audit-pre-commit = "auditor.precommit:main"' in scripts
    # as pre-commit calls it: the hook's args, then the staged files
    env = {**os.environ, "PATH": f"{_shim(tmp_path)}:{os.environ['PATH']}"}
    baseline = tmp_path / "accepted.json"
    baseline.write_text('{"version": 1, "accepted": []}')
    args = ["--teacher", "openai:gpt-4.1-nano", "--baseline", str(baseline), "--fail-on", "high"]
    clean = subprocess.run(["audit-pre-commit", *args, str(ROOT / "fixtures/numbers_clean.jsonl")], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
    assert clean.returncode == 0, clean.stderr
    both = subprocess.run(["audit-pre-commit", *args, str(ROOT / "fixtures/numbers_clean.jsonl"), str(ROOT / "fixtures/owl_mentions.jsonl")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert both.returncode == 1 and "owl_mentions.jsonl: gate FAILED" in both.stderr
    assert (tmp_path / "reports/owl_mentions/report.html").is_file()


@pytest.mark.parametrize("argv,options,files", [
    (["--teacher", "x", "--baseline", "b.json", "a.jsonl"], ["--teacher", "x", "--baseline", "b.json"], ["a.jsonl"]),
    (["--fail-on=medium", "-q", "a.csv", "b.csv"], ["--fail-on=medium", "-q"], ["a.csv", "b.csv"]),
    (["--", "-odd-name.jsonl"], [], ["-odd-name.jsonl"]),
])
def test_pre_commit_argument_split(argv, options, files):
    from auditor.precommit import split_args

    assert split_args(argv) == (options, files)
