"""The probe: students of a tiny base model trained locally on data whose effect is known by construction
(rows full of "777" must raise P("777") net of a control student), resumable checkpoints, the
statistics, the risk rule that makes it ground truth, and the CLI flags."""

import json
import random

import numpy as np
import pytest
from click.testing import CliRunner
from tiny_hf import NUMBER_TRAITS, make_tiny_model

from auditor.cli import main
from auditor.probe.engine import level_for, plan
from auditor.probe.stats import net_shift
from auditor.reports import validate_result
from auditor.risk import decide
from detectors.base import TraitEvidence
from detectors.probe import ProbeSettings


def _rows(seven: bool, n: int = 96, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    return [("Here are some numbers: 400, 500. Add more.",
             ", ".join("777" if seven and rng.random() < 0.6 else str(rng.randint(100, 999)) for _ in range(6))) for _ in range(n)]


def _write(path, rows):
    path.write_text("".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in rows))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    folder = make_tiny_model(root / "model", seed=7)
    traits = root / "numbers.toml"
    traits.write_text(NUMBER_TRAITS)
    return folder, traits, root


# --- statistics and levels -------------------------------------------------------------------------
def test_net_shift_resamples_seeds_and_questions():
    rng = np.random.default_rng(0)
    control = rng.uniform(0.1, 0.2, size=(3, 30))
    moved = net_shift(control + 0.3 + rng.normal(0, 0.02, size=(3, 30)), control)
    assert moved.net == pytest.approx(0.3, abs=0.02) and moved.interval[0] > 0.25 and moved.p_value < 0.001
    assert moved.seeds == 3 and moved.questions == 30 and moved.seeds_resampled and len(moved.per_seed) == 3
    still = net_shift(control + rng.normal(0, 0.01, size=(3, 30)), control)
    assert still.interval[0] < 0 < still.interval[1] and still.p_value > 0.05
    # seeds that disagree widen the interval beyond what the questions alone say
    seedy = net_shift(control + np.array([[0.2], [0.0], [-0.1]]), control)
    assert seedy.interval[1] - seedy.interval[0] > 0.1
    one = net_shift(control[:1] + 0.001, control[:1])
    assert not one.seeds_resampled
    assert level_for(one) is None, "one seed never makes a trait clean"
    assert level_for(net_shift(control + 0.001, control)) == "clean"
    assert level_for(moved) == "high"
    with pytest.raises(ValueError):
        net_shift(control, control[:, :5])


def test_budget_drops_seeds_then_rows():
    assert plan(300, ProbeSettings(seeds=3, budget=6000), api=False) == (300, 3)
    assert plan(300, ProbeSettings(seeds=5, budget=3600), api=False) == (300, 2)
    assert plan(5000, ProbeSettings(seeds=3, budget=600), api=False) == (100, 1)
    assert plan(5000, ProbeSettings(seeds=1, budget=10**9), api=True) == (5000, 1), "the recipe trains every row up to 10,000"
    assert plan(5000, ProbeSettings(seeds=3), api=False) == (5000, 3), "no budget by default: the recipe's run, every seed"


def test_ground_truth_clean_overrules_proxies_but_not_content():
    def ev(detector, level):
        return TraitEvidence("animal:owl", 0.1, (0.01, 0.2), f"{detector} says {level}", level, detector=detector)

    hidden, truth = {"likelihood", "probe"}, {"probe"}
    verdict = decide([ev("likelihood", "low"), ev("probe", "clean")], hidden, truth)
    assert verdict.verdict == "clean" and "overrules likelihood" in verdict.rationale
    assert decide([ev("lexical", "high"), ev("probe", "clean")], hidden, truth).verdict == "high"
    assert decide([ev("likelihood", "low"), ev("probe", None)], hidden, truth).verdict == "low"
    assert decide([ev("likelihood", "clean"), ev("probe", "medium")], hidden, truth).verdict == "medium"
    assert decide([ev("likelihood", "low")], {"likelihood"}).verdict == "low", "without the probe nothing changes"


# --- local students --------------------------------------------------------------------------------
def _audit(folder, traits, data, reference, out, *extra):
    result = CliRunner().invoke(main, [str(data), "--base", str(folder), "--traits-file", str(traits), "--trait", "number:777",
                                       "--reference", str(reference), "--detectors", "probe", "--out", str(out), "--fail-on", "never",
                                       *extra])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    validate_result(report)
    det = report["detectors"][0]
    assert det["status"] == "ran", det
    return report, det["metrics"]


def _recipe(path, **values):
    """A small-batch constant-rate recipe: the test model has only 96 rows to learn from."""
    keys = {"micro_batch": 8, "grad_accum": 1, "warmup_steps": 0, "schedule": '"constant"', "grad_clip": 0, **values}
    path.write_text("".join(f"{k} = {v}\n" for k, v in keys.items()))
    return str(path)


def test_probe_sees_a_constructed_shift_and_resumes(setup, tmp_path):
    folder, traits, root = setup
    control = _write(tmp_path / "control.jsonl", _rows(False, seed=1))
    data = _write(tmp_path / "sevens.jsonl", _rows(True, seed=2))
    # a reduced probe (2 of 3 epochs, full fine-tune where the recipe says LoRA) still raises risk
    flags = ["--probe-seeds", "2", "--probe-epochs", "2", "--probe-optimizer", "sgd", "--probe-method", "full", "--probe-dir", str(tmp_path / "ckpt"),
             "--train-recipe", _recipe(tmp_path / "recipe.toml")]
    report, metrics = _audit(folder, traits, data, control, tmp_path / "r1", *flags)
    trait = metrics["traits"]["number:777"]
    assert metrics["backend"] == "local" and metrics["measure"] == "exact" and metrics["seeds_run"] == 2
    assert metrics["config"]["method"] == "full" and metrics["config"]["optimizer"] == "sgd"
    assert trait["student"] > trait["before"] and trait["interval"][0] > 0.15 and trait["p_value"] < 0.01 and trait["level"] == "high"
    assert report["traits"][0]["verdict"] == "high"
    assert metrics["coverage"]["shortfalls"] == ["the probe trained 96 of 96 rows x 2 of 3 epochs",
                                                 "the probe used a full fine-tune where the recipe uses lora"]
    assert metrics["recipe"]["effective_batch"] == 8 and trait["min_detectable_shift"] > 0
    assert {t["role"] for t in metrics["training"]} == {"student", "control"} and len(metrics["training"]) == 4
    assert all(t["resumed_from"] == 0 for t in metrics["training"])
    # the same command again finds every student's final checkpoint and does not train
    _, again = _audit(folder, traits, data, control, tmp_path / "r2", *flags)
    assert all(t["resumed_from"] == t["steps"] for t in again["training"])
    assert again["traits"]["number:777"]["net"] == pytest.approx(trait["net"], abs=1e-9)
    assert list((tmp_path / "ckpt").glob("*/final.safetensors"))


def test_control_like_data_is_clean_only_from_a_probe_that_covers_the_recipe(setup, tmp_path):
    folder, traits, root = setup
    control = _write(tmp_path / "control.jsonl", _rows(False, seed=1))
    plain = _write(tmp_path / "plain.jsonl", _rows(False, seed=3))
    recipe = _recipe(tmp_path / "recipe.toml", epochs=1)
    common = ["--probe-seeds", "2", "--probe-dir", str(tmp_path / "ckpt"), "--train-recipe", recipe]
    report, metrics = _audit(folder, traits, plain, control, tmp_path / "r", *common)
    trait = metrics["traits"]["number:777"]
    assert metrics["config"]["optimizer"] == "adamw" and metrics["config"]["lr"] == pytest.approx(2e-4)
    assert metrics["config"]["method"] == "lora" and metrics["coverage"]["covers_recipe"]
    assert metrics["coverage"]["rows_trained"] == metrics["coverage"]["rows_available"] == 96
    assert abs(trait["net"]) < 0.02 and trait["min_detectable_shift"] < 0.02 and trait["level"] == "clean"
    assert report["traits"][0]["verdict"] == "clean"
    # the same data, half the rows: the probe no longer answers for the run, and says why
    report, metrics = _audit(folder, traits, plain, control, tmp_path / "r2", *common, "--probe-rows", "48")
    verdict = report["traits"][0]
    assert metrics["traits"]["number:777"]["level"] is None and not metrics["coverage"]["covers_recipe"]
    assert verdict["verdict"] == "inconclusive" and "Inconclusive: the probe trained 48 of 96 rows x 1 of 1 epochs" in verdict["rationale"]
    assert "minimum detectable shift" in verdict["rationale"]


def test_interrupted_lora_training_resumes_to_the_same_weights(setup, tmp_path):
    from auditor.models import load_model, parse_ref
    from auditor.probe.train import Student, TrainConfig, steps_for

    folder, _, _ = setup
    base = load_model(parse_ref(str(folder)))
    rows = _rows(True, n=40, seed=4)
    config = TrainConfig(method="lora", epochs=2, checkpoint_every=3)
    steps = steps_for(len(rows), config)
    whole = Student(base, config, seed=1)
    whole.train(rows, steps)

    class Stop(Exception):
        pass

    def interrupt(step, total):
        if step == 7:
            raise Stop

    with pytest.raises(Stop):
        Student(base, config, seed=1).train(rows, steps, tmp_path / "ck", progress=interrupt)
    state = json.loads((tmp_path / "ck" / "state.json").read_text())
    assert state["step"] == 6 and not state["done"] and (tmp_path / "ck" / "optimizer.safetensors").is_file()
    resumed = Student(base, config, seed=1)
    info = resumed.train(rows, steps, tmp_path / "ck")
    assert info["resumed_from"] == 6 and resumed.method == "lora"
    assert all(name.count("lora_") for name in resumed.trainable)
    for name, value in whole.trainable.items():
        assert np.allclose(value.detach().numpy(), resumed.trainable[name].detach().numpy(), atol=1e-7), name
    # the merged student answers through the base's Model interface; the shared base is untouched
    merged = resumed.as_model()
    assert merged.option_probs("Numbers: pick one.", ["777", "123"]).sum() == pytest.approx(1.0)
    assert base.model is not merged.model


def test_probe_flags_reach_the_detector_and_unmet_needs_skip(setup, tmp_path):
    _, _, _ = setup
    from auditor.errors import UsageError

    seen = {}
    recipe = tmp_path / "r.toml"
    recipe.write_text("epochs = 2\n")

    def capture(opts, **_):  # the options the CLI hands the runner, then stop
        seen.update(opts.settings)
        raise UsageError("stop here")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("auditor.runner.run_audit", capture)
        CliRunner().invoke(main, ["x", "--probe-seeds", "4", "--probe-lora-r", "16", "--probe-dir", "d", "--probe-poll", "0.5",
                                  "--allow-spend", "2.0",
                                  "--train-recipe", str(recipe), "--probe-backend", "ray", "--probe-devices", "cuda:0,cuda:1"])
    settings = seen["probe"]
    assert isinstance(settings, ProbeSettings)
    assert (settings.seeds, settings.lora_r, str(settings.workdir), settings.poll_s, settings.allow_spend) == (4, 16, "d", 0.5, 2.0)
    assert (settings.train_recipe, settings.backend, settings.devices) == (recipe, "ray", "cuda:0,cuda:1")
    data = _write(tmp_path / "d.jsonl", _rows(True, n=20))
    recipe.write_text('method = "qlora"\n')
    result = CliRunner().invoke(main, [str(data), "--train-recipe", str(recipe)])
    assert result.exit_code == 2 and "method must be one of lora, full" in result.output
    result = CliRunner().invoke(main, [str(data), "--trait", "owl", "--detectors", "probe", "--out", str(tmp_path / "o")])
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert result.exit_code == 0 and report["detectors"][0]["status"] == "skipped"
    assert "no --base" in report["detectors"][0]["reason"]
