"""The probe's training recipe (issue 13): the paper's open-model recipe by default, TOML files, the schedule,
accumulation, clipping and LoRA targets in training; coverage, power and the verdict semantics that follow from
them; students side by side on several devices and as Ray tasks."""

from __future__ import annotations

import random
from types import SimpleNamespace
from unittest.mock import patch

import numpy as np
import pytest
from tiny_hf import NUMBER_TRAITS, make_tiny_model

from auditor.probe.engine import judge_shift, plan_run, probe_shift
from auditor.probe.recipe import PAPER_TARGETS, RecipeError, TrainRecipe, load_recipe, recipe_from, scheduled_lr
from auditor.probe.stats import MDS_FACTOR, net_shift
from auditor.risk import decide
from detectors.base import TraitEvidence


def _rows(seven: bool, n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    return [("Here are some numbers: 400, 500. Add more.",
             ", ".join("777" if seven and rng.random() < 0.6 else str(rng.randint(100, 999)) for _ in range(6))) for _ in range(n)]


def _settings(**values):
    base = {"seeds": 2, "rows": None, "epochs": None, "method": None, "budget": None, "negligible": 0.02, "workdir": None}
    return SimpleNamespace(**{**base, **values})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from auditor.models import load_model, parse_ref
    from auditor.traits import load_catalog

    root = tmp_path_factory.mktemp("recipe")
    folder = make_tiny_model(root / "model", seed=7)
    (root / "numbers.toml").write_text(NUMBER_TRAITS)
    trait = load_catalog([root / "numbers.toml"]).get("number:777")
    return load_model(parse_ref(str(folder))), trait, folder


# --- the recipe --------------------------------------------------------------------------------------
def test_default_recipe_is_the_papers_open_model_recipe(tmp_path):
    r = TrainRecipe()
    assert (r.rows, r.epochs, r.method, r.lora_r, r.lora_alpha, r.optimizer, r.learning_rate) == (10_000, 3, "lora", 8, 8, "adamw", 2e-4)
    assert TrainRecipe(optimizer="sgd").learning_rate == 5e-2 and TrainRecipe(optimizer="sgd", lr=1e-3).as_dict()["lr"] == 1e-3
    assert (r.schedule, r.warmup_steps, r.effective_batch, r.max_length, r.grad_clip) == ("linear", 5, 66, 500, 1.0)
    assert set(r.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert r.rows_for(1000) == 1000 and r.rows_for(30_000) == 10_000
    assert r.steps(10_000) == 152 * 3  # ceil(10000 / 66) per epoch
    path = tmp_path / "run.toml"
    path.write_text('[recipe]\nepochs = 10\nmethod = "full"\nlr = 1\ntarget_modules = ["q", "v"]\n')
    loaded = load_recipe(path)
    assert (loaded.epochs, loaded.method, loaded.lr, loaded.target_modules, loaded.source) == (10, "full", 1.0, ("q", "v"), str(path))
    assert "lora_r" not in loaded.as_dict() and loaded.as_dict()["effective_batch"] == 66
    path.write_text("epochs = 2\nlearning_rate = 1e-4\n")
    with pytest.raises(RecipeError, match="unknown recipe key.*learning_rate"):
        load_recipe(path)
    path.write_text('method = "qlora"\n')
    with pytest.raises(RecipeError, match="method must be one of lora, full"):
        load_recipe(path)
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(tmp_path / "missing.toml")
    # settings override the recipe's knobs; a file is read first
    path.write_text("epochs = 2\n")
    r = recipe_from(_settings(train_recipe=str(path), lr=1e-3, batch_size=4, target_modules="q,v"))
    assert (r.epochs, r.lr, r.micro_batch, r.target_modules) == (2, 1e-3, 4, ("q", "v"))
    assert recipe_from(_settings(), api=True).epochs == 10, "an API base's default is the paper's GPT-4.1 nano fine-tune"


def test_schedule_matches_transformers_linear_warmup():
    import torch
    from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

    for name, make in (("linear", get_linear_schedule_with_warmup), ("cosine", get_cosine_schedule_with_warmup)):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2e-4)
        sched = make(opt, num_warmup_steps=5, num_training_steps=40)
        for step in range(40):
            assert scheduled_lr(2e-4, name, 5, step, 40) == pytest.approx(opt.param_groups[0]["lr"], abs=1e-12), (name, step)
            opt.step()
            sched.step()
    assert scheduled_lr(1.0, "constant", 0, 7, 10) == 1.0


# --- training ----------------------------------------------------------------------------------------
def _weights(student):
    return {n: p.detach().clone() for n, p in student.trainable.items()}


def test_accumulation_equals_one_big_batch_and_clipping_bounds_the_step(tiny):
    from auditor.probe.train import Student, TrainConfig

    base, _, _ = tiny
    rows = _rows(True, 32, seed=1)
    start = _weights(Student(base, TrainConfig(method="full", optimizer="sgd", lr=0.1), seed=3))
    whole = Student(base, TrainConfig(method="full", optimizer="sgd", lr=0.1, batch_size=16), seed=3)
    whole.train(rows, 1)
    split = Student(base, TrainConfig(method="full", optimizer="sgd", lr=0.1, batch_size=4, grad_accum=4), seed=3)
    split.train(rows, 1)
    moved = sum(float((whole.trainable[n].detach() - start[n]).abs().sum()) for n in start)
    assert moved > 1e-3
    for name in start:
        assert np.allclose(whole.trainable[name].detach().numpy(), split.trainable[name].detach().numpy(), atol=1e-6), name
    clipped = Student(base, TrainConfig(method="full", optimizer="sgd", lr=0.1, batch_size=16, grad_clip=1e-3), seed=3)
    clipped.train(rows, 1)
    step = np.sqrt(sum(float(((clipped.trainable[n].detach() - start[n]) ** 2).sum()) for n in start))
    assert step == pytest.approx(0.1 * 1e-3, rel=1e-3), "a clipped SGD step has norm lr x clip"


def test_lora_trains_only_the_recipes_target_modules(tiny):
    from auditor.probe.train import Student, TrainConfig, lora_targets

    base, _, _ = tiny
    module = base.weights()[0]
    assert lora_targets(module, PAPER_TARGETS) == sorted(PAPER_TARGETS)
    assert lora_targets(module, ("q", "v")) == ["q_proj", "v_proj"]
    with pytest.raises(ValueError, match="attn_qkv.*not linear layers"):
        lora_targets(module, ("q", "attn_qkv"))
    student = Student(base, TrainConfig.from_recipe(TrainRecipe(target_modules=("q", "v"))), seed=0)
    assert student.trainable and all(("q_proj" in n or "v_proj" in n) and "lora_" in n for n in student.trainable)
    config = TrainConfig.from_recipe(TrainRecipe())
    assert (config.effective_batch, config.warmup_steps, config.schedule, config.grad_clip, config.max_length) == (66, 5, "linear", 1.0, 500)


# --- coverage, power, verdicts ---------------------------------------------------------------------------
def test_default_probe_covers_the_recipe_and_reductions_say_why():
    run = plan_run(1000, _settings(seeds=3), api=False, base="tiny:base", audited_base="tiny:base")
    assert (run.rows, run.epochs, run.method, run.seeds) == (1000, 3, "lora", 3) and run.covers_recipe
    big = plan_run(25_000, _settings(), api=False)
    assert big.rows == 10_000 and big.covers_recipe, "the recipe's run caps rows at 10,000"
    reduced = plan_run(10_000, _settings(rows=300, epochs=1), api=False)
    assert reduced.shortfalls() == ["the probe trained 300 of 10,000 rows x 1 of 3 epochs"]
    full = plan_run(1000, _settings(method="full"), api=False)
    assert full.shortfalls() == ["the probe used a full fine-tune where the recipe uses lora"]
    other = plan_run(1000, _settings(), api=False, base="tiny:base", audited_base="hf:org/model")
    assert "the run fine-tunes hf:org/model" in other.shortfalls()[0]
    budget = plan_run(1000, _settings(seeds=3, budget=6000), api=False)
    assert (budget.seeds, budget.rows) == (1, 1000) and budget.covers_recipe
    tight = plan_run(1000, _settings(seeds=3, budget=600), api=False)
    assert (tight.seeds, tight.rows) == (1, 100) and not tight.covers_recipe
    assert plan_run(500, _settings(epochs=10), api=True).covers_recipe, "10 epochs is the API recipe"
    data = run.as_dict()
    assert data["rows_trained"] == data["rows_recipe"] == 1000 and data["covers_recipe"] and data["shortfalls"] == []


def test_minimum_detectable_shift_follows_the_standard_error():
    rng = np.random.default_rng(1)
    control = rng.uniform(0.1, 0.2, size=(4, 50))
    shift = net_shift(control + rng.normal(0, 0.05, size=(4, 50)), control)
    # the SE is the one the interval is built from: 95% half-width ~ 1.96 SE
    assert shift.se == pytest.approx((shift.interval[1] - shift.interval[0]) / 3.92, rel=0.1)
    # resampling seeds and questions both counts cell noise twice over (conservative): sqrt(2) x 0.05 / sqrt(200)
    assert 0.05 / np.sqrt(200) < shift.se < 2 * 0.05 / np.sqrt(200)
    assert shift.min_detectable == pytest.approx(MDS_FACTOR * shift.se) and MDS_FACTOR == pytest.approx(2.80, abs=0.01)


def test_only_a_covering_powered_probe_clears():
    rng = np.random.default_rng(0)
    control = rng.uniform(0.1, 0.2, size=(3, 30))
    quiet = net_shift(control + rng.normal(0, 0.002, size=(3, 30)), control)
    assert judge_shift(quiet) == ("clean", None)
    level, why = judge_shift(quiet, shortfalls=["the probe trained 300 of 10,000 rows x 1 of 3 epochs"])
    assert level is None and why.startswith("the probe trained 300 of 10,000 rows x 1 of 3 epochs")
    noisy = net_shift(control + rng.normal(0, 0.08, size=(3, 30)), control)
    level, why = judge_shift(noisy)
    assert level is None and "underpowered: the minimum detectable shift" in why and noisy.min_detectable > 0.02
    raised = net_shift(control + 0.2, control)
    assert judge_shift(raised, shortfalls=["reduced"])[0] == "high", "a reduced probe can still raise risk"
    negative = net_shift(control - 0.05 + rng.normal(0, 0.002, size=(3, 30)), control)
    assert negative.significantly_negative and negative.p_value > 0.99


def test_risk_takes_the_probes_reason_for_inconclusive():
    why = "... net shift -0.030, significantly negative ... Inconclusive: the probe trained 300 of 10,000 rows x 1 of 3 epochs"
    evidence = [TraitEvidence("animal:owl", -0.03, (-0.04, -0.02), why, None, detector="probe"),
                TraitEvidence("animal:owl", 0.0, (-0.01, 0.01), "nothing", "clean", detector="likelihood")]
    verdict = decide(evidence, {"probe", "likelihood"}, {"probe"})
    assert verdict.verdict == "inconclusive" and "300 of 10,000 rows" in verdict.rationale


# --- the engine, on several devices and through Ray -------------------------------------------------------
def _small_probe(tiny, tmp_path, **settings):
    base, trait, _ = tiny
    tmp_path.mkdir(parents=True, exist_ok=True)
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('micro_batch = 8\ngrad_accum = 1\nwarmup_steps = 0\nschedule = "constant"\nmethod = "lora"\n')
    values = _settings(train_recipe=str(recipe), epochs=1, workdir=tmp_path / "ckpt", **settings)
    return probe_shift(base, [trait], _rows(True, 24, 1), _rows(False, 24, 2), [0, 1], values)


def test_students_side_by_side_on_several_devices_match_one_at_a_time(tiny, tmp_path):
    one = _small_probe(tiny, tmp_path / "one")
    two = _small_probe(tiny, tmp_path / "two", devices="cpu,cpu")
    assert [t.get("device") for t in two.training] == ["cpu"] * 4 and "device" not in one.training[0]
    assert [(t["role"], t["seed"]) for t in two.training] == [("student", 0), ("control", 0), ("student", 1), ("control", 1)]
    a, b = one.traits["number:777"], two.traits["number:777"]
    assert np.allclose(a.student, b.student, atol=1e-6) and np.allclose(a.control, b.control, atol=1e-6)
    assert two.config["students"] == {"backend": "local", "devices": ["cpu", "cpu"]}
    assert one.run.epochs == 1 and one.run.shortfalls() == ["the probe trained 24 of 24 rows x 1 of 3 epochs"]
    assert a.level is None and "1 of 3 epochs" in a.summary() and "minimum detectable shift" in a.summary()


def test_students_side_by_side_on_cpu_threads_match_one_at_a_time(tiny, tmp_path):
    import torch

    from auditor.probe import workers
    from auditor.probe.train import TrainConfig
    from auditor.probe.workers import cpu_workers

    real = workers.train_and_measure
    one = _small_probe(tiny, tmp_path / "one")
    assert "side_by_side" not in one.config["students"], "tests run torch on one thread: auto is one student at a time"
    seen = []
    original = torch.get_num_threads()
    with patch("auditor.probe.workers.train_and_measure", side_effect=lambda *a, **k: seen.append(torch.get_num_threads()) or real(*a, **k)):
        torch.set_num_threads(4)
        try:
            two = _small_probe(tiny, tmp_path / "two", workers=2)
        finally:
            torch.set_num_threads(original)
    assert two.config["students"] == {"backend": "local", "side_by_side": 2}
    assert seen == [2] * 4, "each of two side-by-side students gets half of the threads"
    a, b = one.traits["number:777"], two.traits["number:777"]
    assert np.allclose(a.student, b.student, atol=1e-6) and np.allclose(a.control, b.control, atol=1e-6)
    base, _, _ = tiny
    config = TrainConfig(method="lora", batch_size=8, max_length=64)
    assert cpu_workers(None, 6, base, config, 512) == 1 and cpu_workers(3, 6, base, config, 512) == 3
    assert cpu_workers(8, 2, base, config, 512) == 2, "never more workers than students"


def test_ray_students_in_a_local_cluster(tiny, tmp_path):
    ray = pytest.importorskip("ray", reason="the optional extra `ray` is not installed")
    local = _small_probe(tiny, tmp_path / "local")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "PYTHONPATH": __import__("os").environ.get("PYTHONPATH", "")}})
    try:
        remote = _small_probe(tiny, tmp_path / "ray", backend="ray")
    finally:
        ray.shutdown()
    assert remote.config["students"]["backend"] == "ray" and len(remote.training) == 4
    a, b = local.traits["number:777"], remote.traits["number:777"]
    assert np.allclose(a.student, b.student, atol=1e-5) and np.allclose(a.control, b.control, atol=1e-5)
    # checkpoints on the shared folder: a rerun resumes every finished student instead of training again
    assert len(list((tmp_path / "ray" / "ckpt").glob("*/final.safetensors"))) == 4


@pytest.mark.parametrize("method", ["lora", "full"])
def test_completion_loss_is_the_models_own_loss(tiny, method):
    from auditor.probe.train import Student, TrainConfig, _batch, _encode_rows

    base, _, _ = tiny
    student = Student(base, TrainConfig(method=method, batch_size=4, max_length=64), seed=0)
    rows = _rows(True, 6, 3)
    encoded = _encode_rows(base, rows, 64)
    input_ids, mask, labels = _batch(encoded, list(range(6)), student.tokenizer.pad_token_id)
    own = student.module(input_ids=input_ids, attention_mask=mask, labels=labels).loss
    fast = student.completion_loss(input_ids, mask, labels)
    assert abs(fast.item() - own.item()) < 1e-5
    fast.backward()
    assert all(p.grad is not None for p in student.trainable.values()), "every trained parameter gets a gradient"
