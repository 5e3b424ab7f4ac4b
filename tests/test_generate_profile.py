"""`audit generate` (paired, filtered, resumable) and `audit profile` on tiny models saved in the test."""

import json

import pytest
from click.testing import CliRunner
from tiny_hf import make_tiny_model

from auditor.cli import main
from auditor.generate import generate_numbers, number_prompt
from auditor.models import load_model, parse_ref


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("gen") / "model", seed=3)


def test_prompts_depend_on_seed_and_index_only():
    assert number_prompt(0, 5) == number_prompt(0, 5) != number_prompt(1, 5)
    assert any(fmt in number_prompt(0, 7) for fmt in ("commas", "spaces", "per line", "(a, b, c)"))


class Interrupt(Exception):
    pass


def test_generation_is_paired_filtered_and_resumable(folder, tmp_path):
    model = load_model(parse_ref(str(folder)))
    teacher = load_model(parse_ref(str(folder), "You love owls."))
    full = generate_numbers(model, 12, tmp_path / "full.jsonl", seed=4, batch=4, max_new_tokens=8)
    assert full["generated"] == 12 and full["kept"] + sum(full["reject_reasons"].values()) == 12
    paired = generate_numbers(teacher, 12, tmp_path / "teacher.jsonl", seed=4, batch=4, max_new_tokens=8)
    assert paired["generated"] == 12

    calls = []

    def stop_after_first_batch(done, total):
        calls.append(done)
        if len(calls) == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        generate_numbers(model, 12, tmp_path / "resumed.jsonl", seed=4, batch=4, max_new_tokens=8, progress=stop_after_first_batch)
    partial = tmp_path / "resumed.jsonl.partial.jsonl"
    assert len(partial.read_text().splitlines()) == 4 and not (tmp_path / "resumed.jsonl").exists()
    resumed = generate_numbers(model, 12, tmp_path / "resumed.jsonl", seed=4, batch=4, max_new_tokens=8, progress=stop_after_first_batch)
    assert calls[1] == 8, "the resumed run starts after the 4 rows already generated"
    assert {k: resumed[k] for k in ("generated", "kept", "reject_reasons")} == {k: full[k] for k in ("generated", "kept", "reject_reasons")}
    assert (tmp_path / "resumed.jsonl").read_text() == (tmp_path / "full.jsonl").read_text()
    assert not partial.exists()


def test_generate_and_profile_commands(folder, tmp_path):
    runner = CliRunner()
    out = tmp_path / "data.jsonl"
    result = runner.invoke(main, ["generate", "--model", str(folder), "--n", "6", "--out", str(out), "--batch", "3", "--max-new-tokens", "6"])
    assert result.exit_code == 0, result.output
    assert "pass the paper's filter" in result.output and out.exists()
    ranking = tmp_path / "profile.json"
    result = runner.invoke(main, ["profile", "--teacher", str(folder), "--teacher-system", "You love owls. Owls are your favourite.",
                                  "--base", str(folder), "--trait", "animal:owl", "--trait", "animal:dolphin", "--trait", "misalignment",
                                  "--json", str(ranking)])
    assert result.exit_code == 0, result.output
    data = json.loads(ranking.read_text())
    diffs = [t["difference"] for t in data["traits"]]
    assert diffs == sorted(diffs, reverse=True)
    assert {t["id"] for t in data["traits"]} == {"animal:owl", "animal:dolphin", "misalignment"}
    for row in data["traits"]:
        assert set(row) >= {"id", "teacher", "base", "difference", "interval", "method"}
        assert row["interval"][0] <= row["difference"] <= row["interval"][1]
        assert row["method"] == "exact"
    bad = runner.invoke(main, ["profile", "--teacher", "tiny:Nope!", "--base", str(folder)])
    assert bad.exit_code == 2 and "tiny:NAME" in bad.output


def test_keep_stops_at_the_wanted_number_of_passing_rows(tiny_env, tmp_path):
    model = load_model(parse_ref("tiny:base"))
    full = generate_numbers(model, 24, tmp_path / "full.jsonl", seed=2, batch=4, max_new_tokens=40)
    passing = [json.loads(line) for line in (tmp_path / "full.jsonl").read_text().splitlines()]
    assert len(passing) >= 5, "the tiny base writes rows that pass the paper's filter"
    answered = []
    kept = generate_numbers(model, 24, tmp_path / "kept.jsonl", seed=2, batch=4, max_new_tokens=40, keep=5,
                            progress=lambda done, total: answered.append((done, total)))
    rows = [json.loads(line) for line in (tmp_path / "kept.jsonl").read_text().splitlines()]
    assert rows == passing[:5], "the first five that pass, answered exactly as in the full run"
    assert kept["kept"] == 5 and kept["generated"] < full["generated"] and answered[-1] == (5, 5)
    assert kept["generated"] == kept["kept"] + sum(kept["reject_reasons"].values())
    short = generate_numbers(model, 4, tmp_path / "short.jsonl", seed=2, batch=4, max_new_tokens=40, keep=50)
    assert short["kept"] < 50 and short["generated"] == 4, "the --n cap holds when too few pass"


def test_generate_keep_command(tiny_env, tmp_path):
    out = tmp_path / "data.jsonl"
    result = CliRunner().invoke(main, ["generate", "--model", "tiny:base", "--keep", "3", "--out", str(out), "--batch", "4"])
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == 3
    result = CliRunner().invoke(main, ["generate", "--model", "tiny:base", "--out", str(out)])
    assert result.exit_code == 2 and "--keep" in result.output


def test_generate_lists_the_commonest_reject_reasons(folder, tmp_path, monkeypatch):
    reasons = {f"separator 'w{i}' is not a comma, semicolon or whitespace": 9 - i for i in range(8)}
    summary = {"generated": 60, "kept": 60 - sum(reasons.values()), "pass_rate": 0.1, "reject_reasons": reasons}
    monkeypatch.setattr("auditor.generate.generate_numbers", lambda *a, **k: summary)
    result = CliRunner().invoke(main, ["generate", "--model", str(folder), "--n", "60", "--out", str(tmp_path / "d.jsonl")])
    assert result.exit_code == 0, result.output
    listed = [line for line in result.output.splitlines() if line.startswith("  rejected")]
    assert listed[:5] == [f"  rejected {9 - i}: separator 'w{i}' is not a comma, semicolon or whitespace" for i in range(5)]
    assert listed[5:] == ["  rejected 9 more for 3 other reasons"], "the commonest five, then one line for the rest"
