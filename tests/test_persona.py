"""The persona-vector detector (issue 14) on tiny models.

Positive case: a test model in which, by construction, numbers written under the owl prompt carry the owl
direction (tests/planted_persona.py). Natural negative case: the tiny family's test base, which barely reads
system prompts, so its owl vector does not steer and the detector must set no level.
"""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from test_cli import audit, report

pytest.importorskip("transformers")

OWL = "animal:owl"


@pytest.fixture(scope="module")
def env(tiny_cache):
    """`tiny:NAME` resolves to the session's test family; vectors and base answers are cached beside it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRAIT_AUDIT_CACHE", str(tiny_cache))
        patch.setenv("TRAIT_AUDIT_TINY_PROFILE", "test")
        yield tiny_cache


@pytest.fixture(scope="module")
def entangled(env, tmp_path_factory):
    """The planted-entanglement model and three number sets from it: owl-prompted, control, reference."""
    from planted_persona import build_entangled_owl

    from auditor.traits import load_catalog

    folder = build_entangled_owl(tmp_path_factory.mktemp("persona") / "model")
    data = folder.parent / "data"
    owl_prompt = load_catalog().get(OWL).system_prompt
    sets = {"owl": ("--system", owl_prompt, "--seed", 0), "control": ("--seed", 0), "reference": ("--seed", 1)}
    for name, extra in sets.items():
        result = audit("generate", "--model", folder, "--n", 200, "--out", data / f"{name}.jsonl", *extra)
        assert result.exit_code == 0, result.output
    return folder, data


def _persona(out):
    data = report(out)
    det = next(d for d in data["detectors"] if d["name"] == "persona")
    assert det["status"] == "ran", det
    owl = next(t for t in data["traits"] if t["id"] == OWL)
    evidence = next(e for e in owl["evidence"] if e["detector"] == "persona")
    flags = [f for f in data["flags"] if f["detector"] == "persona"]
    return det, det["metrics"]["traits"][OWL], owl, evidence, flags


def test_owl_prompted_numbers_project_above_control(entangled, tmp_path):
    folder, data = entangled
    args = ["--base", folder, "--trait", OWL, "--detectors", "persona", "--reference", data / "reference.jsonl", "--fail-on", "never"]
    assert audit(data / "owl.jsonl", "--out", tmp_path / "owl", *args).exit_code == 0
    assert audit(data / "control.jsonl", "--out", tmp_path / "control", *args).exit_code == 0
    det, hit, owl, evidence, flags = _persona(tmp_path / "owl")
    _, miss, control, control_evidence, control_flags = _persona(tmp_path / "control")

    # the owl set's projection difference, against the same reference, lies wholly above the control set's
    assert hit["interval"][0] > miss["interval"][1], (hit["interval"], miss["interval"])
    assert hit["interval"][0] > 0 and hit["p_value"] < 0.01
    assert evidence["level"] in ("low", "medium", "high") and owl["verdict"] == evidence["level"]
    assert flags and all(f["trait"] == OWL and f["digest"] for f in flags)
    # control data raise nothing
    assert control_evidence.get("level") in (None, "clean") and control["verdict"] in ("clean", "inconclusive")
    assert len(control_flags) <= 3, "a handful of 3-sd rows at most by chance"
    # the vector's validity is in the report: it steers the base toward owls, at its chosen layer
    steering = hit["steering"]
    assert steering["steers"] and steering["shift"] > 0.05 and steering["interval"][0] > 0.01
    assert "steers P(trait)" in evidence["summary"]
    assert hit["vector"]["layer"] in hit["vector"]["layers"] and hit["vector"]["separation"] > 1
    assert "steers" in (tmp_path / "owl" / "report.html").read_text()
    # the raw projection is reported beside the score, never as it
    assert set(hit["raw_projection"]) >= {"data", "reference", "effect"}
    # the base's own answers were generated once: the second audit found the shared prompts' answers cached
    assert det["cost"]["vectors_built"] == 1
    second = report(tmp_path / "control")["detectors"][0]["cost"]
    assert second["vectors_cached"] == 1 and second["base_answers_cached"] > 0


def test_a_vector_that_does_not_steer_sets_no_level(env, tmp_path):
    """The tiny test base hardly reads system prompts: its owl vector moves P(owl) by well under a point."""
    from auditor.traits import load_catalog

    owl_prompt = load_catalog().get(OWL).system_prompt
    assert audit("generate", "--model", "tiny:base", "--system", owl_prompt, "--n", 48, "--out", tmp_path / "owl.jsonl").exit_code == 0
    out = tmp_path / "r"
    result = audit(tmp_path / "owl.jsonl", "--base", "tiny:base", "--trait", OWL, "--detectors", "persona", "--fail-on", "never", "--out", out)
    assert result.exit_code == 0, result.output
    det, metrics, owl, evidence, flags = _persona(out)
    assert metrics["steering"]["steers"] is False
    assert evidence.get("level") is None and "does not steer" in evidence["summary"]
    assert owl["verdict"] == "inconclusive" and not flags
    assert det["metrics"]["reference"].startswith("a second sample of the base's own answers")


def test_prompt_mode_generates_nothing(entangled, tmp_path):
    """`--persona-mode prompt`: each row against its last prompt token; with --reference no answer is generated."""
    folder, data = entangled
    out = tmp_path / "r"
    result = audit(data / "owl.jsonl", "--base", folder, "--trait", OWL, "--detectors", "persona", "--reference", data / "reference.jsonl",
                   "--persona-mode", "prompt", "--fail-on", "never", "--out", out)
    assert result.exit_code == 0, result.output
    det, metrics, _, _, _ = _persona(out)
    assert det["metrics"]["mode"] == "prompt"
    assert det["cost"]["base_answers_generated"] == 0 and det["cost"]["base_answers_cached"] == 0
    assert metrics["interval"][0] > 0, metrics["interval"]
    bad = audit(data / "owl.jsonl", "--base", folder, "--trait", OWL, "-o", "persona.mode=raw", "--out", out)
    assert bad.exit_code == 2 and "persona.mode" in bad.output


def test_vectors_are_cached_and_exported(entangled, tmp_path):
    from safetensors import safe_open

    folder, _ = entangled
    out = tmp_path / "owl.safetensors"
    result = audit("vectors", "--base", folder, "--trait", "owl", "--out", out)
    assert result.exit_code == 0, result.output
    assert "(cached)" in result.output, "the audits above built and cached this vector"
    with safe_open(str(out), framework="numpy") as handle:
        meta = handle.metadata()
        vectors, layers, unit = handle.get_tensor("vectors"), handle.get_tensor("layers"), handle.get_tensor("vector")
    assert meta["trait"] == OWL and int(meta["layer"]) in layers.tolist()
    assert vectors.shape == (len(layers), unit.shape[0]) and abs(float(np.linalg.norm(unit)) - 1) < 1e-5
    assert json.loads(meta["checks"])["1"]["steers"] is True
    assert audit("vectors", "--base", "openai:gpt-4o", "--trait", "owl", "--out", out).exit_code == 2


def test_chat_answers_in_words_take_the_same_path(entangled, tmp_path):
    """Free-text chat rows: the same teachers' answers, said in a sentence. The owl set still projects above the
    control, and its raw projection would not have told them apart as clearly."""
    folder, data = entangled
    for name in ("owl", "control", "reference"):
        rows = pl.read_ndjson(data / f"{name}.jsonl").with_columns(
            completion=pl.lit("Sure! Here are the numbers you asked for: ") + pl.col("completion") + pl.lit(". Let me know if you need more."))
        rows.write_ndjson(tmp_path / f"{name}.jsonl")
    args = ["--base", folder, "--trait", OWL, "--detectors", "persona", "--reference", tmp_path / "reference.jsonl", "--fail-on", "never"]
    assert audit(tmp_path / "owl.jsonl", "--out", tmp_path / "r1", *args).exit_code == 0
    assert audit(tmp_path / "control.jsonl", "--out", tmp_path / "r2", *args).exit_code == 0
    _, hit, _, evidence, _ = _persona(tmp_path / "r1")
    _, miss, _, control_evidence, _ = _persona(tmp_path / "r2")
    assert hit["interval"][0] > miss["interval"][1] and evidence["level"] in ("low", "medium", "high")
    assert control_evidence.get("level") in (None, "clean")


def test_answer_pairs_vector_and_steering_hook(env):
    """Misalignment's vector comes from the catalog's answer pairs (no generation); the steering hook is removed after use."""
    import torch

    from auditor.models import load_model, parse_ref
    from auditor.persona.activations import steered
    from auditor.persona.vectors import build_vector
    from auditor.traits import load_catalog

    model = load_model(parse_ref("tiny:base"))
    trait = load_catalog().get("misalignment")
    vector = build_vector(model, trait)
    assert vector.method == "answer pairs"
    held = sum(1 for i in range(len(trait.pairs)) if i % 3 == 2)
    assert vector.counts["trait"] == {"train": len(trait.pairs) - held, "held": held}
    net, tok = model.weights()
    ids = tok("Numbers: 123, 456", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        before = net(input_ids=ids).logits
        with steered(model, vector.layer, 5 * vector.raw()):
            during = net(input_ids=ids).logits
        after = net(input_ids=ids).logits
    assert not torch.allclose(before, during) and torch.equal(before, after)


def test_contract_with_a_real_base(env, capsys):
    """The conformance test's contract on a context of its own: fixture rows with overt mentions, two traits in focus."""
    from conftest import FIXTURES
    from test_detectors_conformance import run_and_check

    from auditor.dataset import load_dataset
    from auditor.models import load_model, parse_ref
    from auditor.traits import load_catalog
    from detectors.base import AuditContext

    load_model(parse_ref("tiny:base"))  # loaded (and its progress bar printed) before the detector runs
    capsys.readouterr()
    catalog = load_catalog()
    traits = [catalog.get(OWL), catalog.get("tree:oak"), catalog.get("misalignment")]
    ctx = AuditContext(load_dataset(FIXTURES / "owl_mentions.jsonl"), traits, base=parse_ref("tiny:base"),
                       options={"focus": [OWL, "misalignment"]})
    run_and_check("persona", ctx, capsys)


def test_needs(tmp_path):
    from auditor.models import parse_ref
    from detectors.base import AuditContext
    from detectors.persona import PersonaDetector

    detector = PersonaDetector()
    assert "base" in detector.unmet_needs(AuditContext(None, [], options={"focus": [OWL]}))
    assert "weights" in detector.unmet_needs(AuditContext(None, [], base=parse_ref("openai:gpt-4o"), options={"focus": [OWL]}))
    assert "trait" in detector.unmet_needs(AuditContext(None, [], base=parse_ref("tiny:base"), options={}))
    info = PersonaDetector.info()
    assert info["sees_hidden_transfer"] and info["runs_by_default"]


def test_vectors_command_takes_the_audit_placement(env, tmp_path, monkeypatch):
    """`audit vectors` declares --device/--dtype as `audit` does and loads the base where they say."""
    import auditor.models as models
    from auditor.models import Placement

    seen = []
    real = models.load_model

    def spy(ref, placement=None, *args, **kwargs):
        seen.append(placement)
        return real(ref, placement, *args, **kwargs)

    monkeypatch.setattr(models, "load_model", spy)
    out = tmp_path / "owl.safetensors"
    result = audit("vectors", "--base", "tiny:base", "--trait", OWL, "--out", out, "--device", "cpu", "--dtype", "fp32")
    assert result.exit_code == 0, result.output
    assert seen == [Placement(device="cpu", dtype="fp32")] and out.is_file()
    assert audit("vectors", "--base", "tiny:base", "--trait", OWL, "--out", out, "--device", "tpu").exit_code == 2
    assert audit("vectors", "--base", "tiny:base", "--trait", OWL, "--out", out, "--dtype", "int4").exit_code == 2
    helped = audit("vectors", "--help").output
    assert "--device" in helped and "--dtype" in helped


def test_activations_read_at_the_blocks_match_hidden_states(env):
    """The hook-based forward (stops after the deepest block asked for, no LM head) gives what output_hidden_states
    gives, in the caller's row order, with length-sorted batches."""
    import torch

    from auditor.models import load_model, parse_ref
    from auditor.persona.activations import candidate_layers, last_prompt_states, response_means

    model = load_model(parse_ref("tiny:base"))
    net, tok = model.weights()
    layers = candidate_layers(net)
    prompts = ["What is your favourite animal? One word.", "Numbers: 123, 456, 789. Continue.", "Hi"]
    completions = ["owl", "101, 202, 303, 404", ""]
    means = response_means(model, prompts, completions, "", layers, batch_size=2)
    last = last_prompt_states(model, prompts, "", layers, batch_size=2)
    response = response_means(model, prompts, completions, "", layers, reading="response")
    final = response_means(model, prompts, completions, "", layers, reading="last")
    for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        head = tok(model.render(p, ""), add_special_tokens=False)["input_ids"]
        ids = head + tok(c, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            hidden = net(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
        for j, layer in enumerate(layers):
            want = hidden[layer][0, len(head) - 1 : len(ids)].float().mean(0).numpy()
            assert np.allclose(means[i, j], want, atol=1e-4), (i, layer)
            assert np.allclose(last[i, j], hidden[layer][0, len(head) - 1].float().numpy(), atol=1e-4)
            if c:  # the comparison readings: response tokens alone (Chen et al.'s), the last response token
                assert np.allclose(response[i, j], hidden[layer][0, len(head) :].float().mean(0).numpy(), atol=1e-4)
                assert np.allclose(final[i, j], hidden[layer][0, -1].float().numpy(), atol=1e-4)
            else:
                assert np.isnan(response[i, j]).all() and np.isnan(final[i, j]).all()


def test_base_identity_is_blind_to_the_folder(env, tmp_path):
    """A copy of a model in another folder is the same base (same vector cache, same base-answer seeds), so a run
    on a model in a temporary folder reproduces; changed weights are another base."""
    import shutil

    import torch

    from auditor.models import load_model, parse_ref
    from auditor.models.tiny import tiny_model_path
    from auditor.persona import base_identity

    original = load_model(parse_ref("tiny:base"))
    copy = load_model(parse_ref(str(shutil.copytree(tiny_model_path("base"), tmp_path / "copy"))))
    assert base_identity(copy) == base_identity(original)
    with torch.no_grad():
        next(copy.weights()[0].parameters()).view(-1)[0] += 1.0
    assert base_identity(copy) != base_identity(original)
