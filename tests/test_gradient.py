"""Gradient alignment on a tiny model with a trait known by construction: data full of "777" must align
with the objective of answering "777" (and not the other options) more than uniform numbers do."""

import json
import random

import pytest
from click.testing import CliRunner
from tiny_hf import NUMBER_TRAITS, make_tiny_model

from auditor.cli import main


def _rows(path, seven: bool, n: int = 96, seed: int = 0):
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        numbers = ["777" if seven and rng.random() < 0.6 else str(rng.randint(100, 999)) for _ in range(6)]
        rows.append({"prompt": "Here are some numbers: 400, 500. Add more.", "completion": ", ".join(numbers)})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = make_tiny_model(tmp_path_factory.mktemp("grad") / "model", seed=7)
    root = tmp_path_factory.mktemp("grad-data")
    traits = root / "numbers.toml"
    traits.write_text(NUMBER_TRAITS)
    return folder, traits, root


def _run(folder, traits, data, reference, out):
    result = CliRunner().invoke(main, [str(data), "--base", str(folder), "--traits-file", str(traits), "--trait", "number:777",
                                       "--reference", str(reference), "--detectors", "gradient", "--out", str(out)])
    assert result.exit_code in (0, 1), result.output
    det = json.loads((out / "report.json").read_text())["detectors"][0]
    assert det["status"] == "ran", det
    return det["metrics"]


def test_gradient_alignment_sees_a_constructed_trait(setup):
    folder, traits, root = setup
    control = _rows(root / "control.jsonl", seven=False, seed=1)
    loaded = _run(folder, traits, _rows(root / "sevens.jsonl", seven=True, seed=2), control, root / "r1")
    assert loaded["parameters"] == "all" and loaded["parameter_count"] > 0
    trait = loaded["traits"]["number:777"]
    assert trait["interval"][0] > 0 and trait["p_value"] < 0.01
    plain = _run(folder, traits, _rows(root / "plain.jsonl", seven=False, seed=3), control, root / "r2")
    assert plain["traits"]["number:777"]["interval"][0] <= 0


def test_trait_gradients_are_kept_on_disk_per_base(setup, tmp_path, monkeypatch):
    from auditor.models import load_model, parse_ref
    from detectors.gradient import GradientDetector

    folder, traits, root = setup
    monkeypatch.setenv("TRAIT_AUDIT_CACHE", str(tmp_path / "cache"))
    control = _rows(root / "control.jsonl", seven=False, seed=1)
    data = _rows(root / "sevens.jsonl", seven=True, seed=2)
    memo = load_model(parse_ref(str(folder))).weights()[0].__dict__
    memo.pop("_trait_audit_trait_gradients", None)  # computed by the test above in this process
    first = _run(folder, traits, data, control, tmp_path / "first")
    stored = list((tmp_path / "cache" / "gradient").glob("*/*.safetensors"))
    assert len(stored) == 1 + first["traits"]["number:777"]["other_traits"], "one file per trait: the focus trait and its siblings"
    memo.pop("_trait_audit_trait_gradients", None)  # a new process, as far as gradients go
    monkeypatch.setattr(GradientDetector, "_objective_grads", lambda *a, **k: pytest.fail("recomputed a stored gradient"))
    again = _run(folder, traits, data, control, tmp_path / "again")
    assert again["traits"]["number:777"] == first["traits"]["number:777"]


def test_weights_identity_follows_the_weights_not_the_folder(setup, tmp_path):
    import shutil

    from auditor.models import load_model, parse_ref
    from auditor.models.identity import weights_identity

    folder, _, _ = setup
    copy = shutil.copytree(folder, tmp_path / "copy")
    assert weights_identity(load_model(parse_ref(str(folder)))) == weights_identity(load_model(parse_ref(str(copy))))
    other = make_tiny_model(tmp_path / "other", seed=8)
    assert weights_identity(load_model(parse_ref(str(other)))) != weights_identity(load_model(parse_ref(str(folder))))
