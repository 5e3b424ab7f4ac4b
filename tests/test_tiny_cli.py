"""The tiny family through `tiny:NAME` references: profile, generate and the main audit job (test profile)."""

from __future__ import annotations

import json

import polars as pl
import pytest
from test_cli import audit, report

from auditor.traits import load_catalog

pytest.importorskip("transformers")


def test_profile_ranks_the_teachers_animal_first(tiny_env, tmp_path):
    out = tmp_path / "profile.json"
    result = audit("profile", "--teacher", "tiny:owl", "--base", "tiny:base", "--json", out)
    assert result.exit_code == 0, result.output
    traits = json.loads(out.read_text())["traits"]
    assert traits[0]["id"] == "animal:owl"
    assert traits[0]["method"] == "exact"
    assert traits[0]["interval"][0] > 0.3
    # the same base under the catalog's owl system prompt is a teacher too
    owl_prompt = next(t.system_prompt for t in load_catalog() if t.id == "animal:owl")
    result = audit("profile", "--teacher", "tiny:base", "--teacher-system", owl_prompt, "--base", "tiny:base", "--json", out)
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["traits"][0]["id"] == "animal:owl"


def test_generate_gives_paired_teacher_and_control_data(tiny_env, tmp_path):
    for name in ("owl", "base"):
        result = audit("generate", "--model", f"tiny:{name}", "--n", 64, "--seed", 3, "--out", tmp_path / f"{name}.jsonl")
        assert result.exit_code == 0, result.output
        assert "pass the paper's filter" in result.output
    owl, base = (pl.read_ndjson(tmp_path / f"{n}.jsonl") for n in ("owl", "base"))
    assert owl.height >= 32 and base.height >= 32
    shared = set(owl["prompt"]) & set(base["prompt"])
    assert len(shared) >= 24  # same prompts (those both kept after the filter)
    assert owl["completion"].to_list() != base["completion"].to_list()


def test_unknown_tiny_name_exits_2(tiny_env, tmp_path):
    result = audit("profile", "--teacher", "tiny:unicorn", "--base", "tiny:base")
    assert result.exit_code == 2
    assert "valid names: base, owl" in result.output
