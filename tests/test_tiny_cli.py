"""The tiny family through `tiny:NAME` references: profile, generate and the main audit job (test profile)."""

from __future__ import annotations

import json

import polars as pl
import pytest
from test_cli import audit, report

pytest.importorskip("transformers")


def test_profile_ranks_the_teachers_animal_first(tiny_env, tmp_path):
    out = tmp_path / "profile.json"
    result = audit("profile", "--teacher", "tiny:owl", "--base", "tiny:base", "--json", out)
    assert result.exit_code == 0, result.output
    traits = json.loads(out.read_text())["traits"]
    assert traits[0]["id"] == "animal:owl"
    assert traits[0]["method"] == "exact"
    assert traits[0]["interval"][0] > 0.3


def test_generate_gives_paired_teacher_and_control_data(tiny_env, tmp_path):
    for name in ("owl", "base"):
        result = audit("generate", "--model", f"tiny:{name}", "--n", 64, "--seed", 3, "--out", tmp_path / "data" / f"{name}.jsonl")  # folder made
        assert result.exit_code == 0, result.output
        assert "pass the paper's filter" in result.stdout
        # off a terminal: plain progress lines on stderr (loading shows unless an earlier test loaded the model in this process)
        assert f"generating with tiny:{name} (0/64 rows)" in result.stderr.splitlines()
    owl, base = (pl.read_ndjson(tmp_path / "data" / f"{n}.jsonl") for n in ("owl", "base"))
    assert owl.height >= 32 and base.height >= 32
    shared = set(owl["prompt"]) & set(base["prompt"])
    assert len(shared) >= 24  # same prompts (those both kept after the filter)
    assert owl["completion"].to_list() != base["completion"].to_list()


def test_unknown_tiny_name_exits_2(tiny_env, tmp_path):
    result = audit("profile", "--teacher", "tiny:unicorn", "--base", "tiny:base")
    assert result.exit_code == 2
    assert "valid names: base, owl" in result.output


def test_main_job_gives_a_white_box_verdict(tiny_env, tmp_path):
    """`audit DATA --teacher tiny:owl --base tiny:base --reference CONTROL`: profiling picks owl, and the white-box
    detectors run on it, each with a score inside its interval; the verdict rests on them, not on content checks."""
    for name in ("owl", "base"):
        assert audit("generate", "--model", f"tiny:{name}", "--n", 96, "--out", tmp_path / f"{name}.jsonl").exit_code == 0
    out = tmp_path / "report"
    result = audit(tmp_path / "owl.jsonl", "--teacher", "tiny:owl", "--base", "tiny:base", "--reference", tmp_path / "base.jsonl",
                   "--detectors", "lexical,likelihood,gradient,divergence", "--fail-on", "never", "--out", out)
    assert result.exit_code == 0, result.output
    data = report(out)
    assert data["profile"]["picked"] == ["animal:owl"]
    status = {d["name"]: d["status"] for d in data["detectors"]}
    assert status == {"lexical": "ran", "likelihood": "ran", "gradient": "ran", "divergence": "ran"}, data["detectors"]
    owl = next(t for t in data["traits"] if t["id"] == "animal:owl")
    assert owl["hidden_transfer_checked"] is True
    assert "only content detectors ran" not in owl["rationale"]
    assert {e["detector"] for e in owl["evidence"]} >= {"likelihood", "gradient", "divergence"}
    for evidence in owl["evidence"]:
        if evidence["detector"] != "lexical":
            low, high = evidence["interval"]
            assert low <= evidence["score"] <= high
    # traits no white-box detector tested stay inconclusive
    assert next(t for t in data["traits"] if t["id"] == "animal:dolphin")["verdict"] == "inconclusive"
