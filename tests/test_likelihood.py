"""The likelihood-shift detector on a tiny model whose teacher is, by construction, the base with the
trait prompt: its rows must come out likelier under that prompt than the base's own rows."""

import json

import pytest
from click.testing import CliRunner
from tiny_hf import make_tiny_model

from auditor.cli import main
from auditor.models import load_model, parse_ref
from auditor.traits import load_catalog


@pytest.fixture(scope="module")
def paired(tmp_path_factory):
    from tiny_hf import train_entangled

    folder = make_tiny_model(tmp_path_factory.mktemp("lik") / "model", seed=5)
    return train_entangled(folder, load_catalog().get("animal:owl").system_prompt), None


def _write_all(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_trait_teacher_rows_shift_up_and_control_does_not(paired, tmp_path):
    folder, out = paired
    from auditor.generate import number_prompt

    teacher = load_model(parse_ref(str(folder), load_catalog().get("animal:owl").system_prompt))
    base = load_model(parse_ref(str(folder)))
    from auditor.models import Sampling

    prompts = [number_prompt(9, i) for i in range(160)]
    t_rows = [{"prompt": p, "completion": a[0]} for p, a in zip(prompts, teacher.generate(prompts, Sampling(max_new_tokens=12, seed=2)), strict=True)]
    c_rows = [{"prompt": p, "completion": a[0]} for p, a in zip(prompts, base.generate(prompts, Sampling(max_new_tokens=12, seed=3)), strict=True)]
    c2_rows = [{"prompt": p, "completion": a[0]} for p, a in zip(prompts, base.generate(prompts, Sampling(max_new_tokens=12, seed=4)), strict=True)]
    _write_all(tmp_path / "t.jsonl", t_rows)
    _write_all(tmp_path / "c.jsonl", c_rows)
    _write_all(tmp_path / "c2.jsonl", c2_rows)
    runner = CliRunner()
    args = ["--base", str(folder), "--trait", "animal:owl", "--detectors", "lexical,likelihood", "--reference", str(tmp_path / "c.jsonl")]
    hit = runner.invoke(main, [str(tmp_path / "t.jsonl"), "--out", str(tmp_path / "r1"), *args])
    assert hit.exit_code in (0, 1), hit.output
    report = json.loads((tmp_path / "r1" / "report.json").read_text())
    lik = next(d for d in report["detectors"] if d["name"] == "likelihood")
    assert lik["status"] == "ran", lik
    metrics = lik["metrics"]["traits"]["animal:owl"]
    assert metrics["interval"][0] > 0 and metrics["p_value"] < 0.01
    owl = next(t for t in report["traits"] if t["id"] == "animal:owl")
    evidence = next(e for e in owl["evidence"] if e["detector"] == "likelihood")
    assert owl["hidden_transfer_checked"] and evidence["level"] in ("low", "medium", "high")
    miss = runner.invoke(main, [str(tmp_path / "c2.jsonl"), "--out", str(tmp_path / "r2"), *args])
    assert miss.exit_code in (0, 1), miss.output
    report = json.loads((tmp_path / "r2" / "report.json").read_text())
    metrics = next(d for d in report["detectors"] if d["name"] == "likelihood")["metrics"]["traits"]["animal:owl"]
    assert metrics["interval"][0] <= 0 <= metrics["interval"][1] or metrics["p_value"] > 0.01
    owl = next(t for t in report["traits"] if t["id"] == "animal:owl")
    evidence = next(e for e in owl["evidence"] if e["detector"] == "likelihood")
    assert evidence.get("level") in (None, "clean"), "two control sets must not raise risk"


def test_skipped_without_base_or_traits(tmp_path):
    from conftest import FIXTURES

    result = CliRunner().invoke(main, [str(FIXTURES / "numbers_clean.jsonl"), "--out", str(tmp_path / "o")])
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    lik = next(d for d in report["detectors"] if d["name"] == "likelihood")
    assert result.exit_code == 0 and lik["status"] == "skipped" and "--base" in lik["reason"]


def test_divergence_ranks_teacher_rows_above_base_rows(paired, tmp_path):
    folder, _ = paired
    from auditor.generate import number_prompt
    from auditor.models import Sampling

    owl = load_catalog().get("animal:owl").system_prompt
    teacher = load_model(parse_ref(str(folder), owl))
    prompts = [number_prompt(11, i) for i in range(120)]
    rows = [{"prompt": p, "completion": a[0]} for p, a in zip(prompts, teacher.generate(prompts, Sampling(max_new_tokens=12, seed=6)), strict=True)]
    _write_all(tmp_path / "t.jsonl", rows)
    result = CliRunner().invoke(main, [str(tmp_path / "t.jsonl"), "--teacher", str(folder), "--teacher-system", owl, "--base", str(folder),
                                       "--trait", "animal:owl", "--detectors", "divergence", "--out", str(tmp_path / "r")])
    assert result.exit_code in (0, 1), result.output
    det = json.loads((tmp_path / "r" / "report.json").read_text())["detectors"][0]
    assert det["status"] == "ran", det
    m = det["metrics"]
    assert m["mean_divergence"] > m["reference_mean_divergence"] and m["interval"][0] > 0
    assert m["top_tokens"] and all({"token", "mean_divergence", "count"} <= set(t) for t in m["top_tokens"])
