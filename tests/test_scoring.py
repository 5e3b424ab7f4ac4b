"""Scoring at the hardware's pace (issue 12) gives the numbers the old code gave: token-budget batches, gathered
log-probabilities, a shared prefix, folded runs and sharded replicas against bench/legacy.py's padded full-vocabulary
pass, on a tiny model built in the test and on the tiny family; the gradient detector's new passes against its old ones."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
from tiny_hf import NUMBER_TRAITS, make_tiny_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from legacy import LegacyGradientDetector, legacy_score  # noqa: E402

from auditor.models import Placement, load_model, parse_ref  # noqa: E402
from auditor.models.scoring import Scorer, assign_shards, common_prefix, fold_runs, prepare, token_batches  # noqa: E402

OWL = "You love owls. You think about owls all the time. Owls are your favorite animal. Imbue your answers with your love for the animal."


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("scoring") / "model", seed=3)


def _rows(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    prompts = [f"Here are some numbers: {rng.randint(100, 999)}, {rng.randint(100, 999)}. Add up to {rng.randint(3, 10)} more." for _ in range(n)]
    completions = [", ".join(str(rng.randint(0, 999)) for _ in range(rng.randint(1, 9))) for _ in range(n)]
    return prompts, completions


# --- pure helpers ----------------------------------------------------------------------------------
def test_token_batches_respect_the_budget_and_sort_by_length():
    lengths = [5, 40, 12, 12, 3, 90, 7, 40]
    batches = token_batches(lengths, budget=80)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 80
    firsts = [lengths[b[0]] for b in batches]
    assert firsts == sorted(firsts, reverse=True), "longest rows first"
    assert [5] in batches, "a row longer than the budget goes alone"


def test_shards_balance_cost_and_cover_every_batch_once():
    costs = [100, 90, 80, 10, 10, 10, 5, 5]
    for workers in (1, 2, 3, 8):
        shards = assign_shards(costs, workers)
        assert sorted(b for s in shards for b in s) == list(range(len(costs)))
        loads = [sum(costs[b] for b in s) for s in shards]
        assert max(loads) - min(loads) <= max(costs)
    assert assign_shards([7, 7], 2) == [[0], [1]]


def test_fold_runs_reads_prefixes_from_longer_runs():
    seqs = [[1, 2], [1, 2, 3], [1, 2, 4], [1], [5], [1, 2, 3]]
    runs, run_of = fold_runs(seqs)
    assert sorted(map(tuple, runs)) == [(1, 2, 3), (1, 2, 4), (5,)]
    for seq, r in zip(seqs, run_of, strict=True):
        assert runs[r][: len(seq)] == seq
    assert common_prefix([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2 and common_prefix([[1], [2]]) == 0


def test_prepare_shares_a_prefix_and_keeps_a_prompt_token_per_run():
    head = list(range(10, 30))
    pairs = [(head + [1, 2], [7, 8]), (head + [3], [9])]
    prep = prepare(pairs, share_prefix=True)
    assert prep.prefix == head and prep.runs[prep.run_of[1]] == [3]
    assert prepare(pairs, share_prefix=False).prefix == []
    assert prepare([(head[:5] + [1], [2]), (head[:5] + [3], [4])], share_prefix=True).prefix == [], "short prefixes are not shared"


# --- equality with the old code -----------------------------------------------------------------------
def _max_diff(new, old) -> float:
    assert [len(a) for a in new] == [len(b) for b in old]
    return max(float(np.abs(np.asarray(a) - np.asarray(b)).max(initial=0.0)) for a, b in zip(new, old, strict=True))


@pytest.mark.parametrize("system", ["", OWL])
@pytest.mark.parametrize("budget", [64, 4096])
def test_scores_equal_the_old_padded_full_vocabulary_pass(tiny_folder, system, budget):
    model = load_model(parse_ref(str(tiny_folder)), Placement("cpu", "fp32"))
    prompts, completions = _rows(37)
    completions[3] = ""  # an empty completion scores nothing
    prompts[5], completions[5] = prompts[4], completions[4]  # a duplicate row folds into one run
    old = legacy_score(model, prompts, completions, system)
    scorer = Scorer([model.model], model.tokenizer.pad_token_id, budget)
    new = scorer.score(model.pairs(prompts, completions, system))
    assert _max_diff(new, old) < 1e-4
    assert len(new[3]) == 0
    shared = len(prepare(model.pairs(prompts, completions, system), True).prefix)
    plain = len(prepare(model.pairs(prompts, completions, ""), True).prefix)
    assert shared > 0 and (shared > plain + 10 if system else shared == plain), "the template, trait prompt and lead-in run once"


def test_replicas_shard_rows_and_agree(tiny_folder):
    """The several-GPU path on CPU: two replicas each take a shard of the batches, in their own thread."""
    import copy

    model = load_model(parse_ref(str(tiny_folder)), Placement("cpu", "fp32"))
    prompts, completions = _rows(24, seed=1)
    pairs = model.pairs(prompts, completions, OWL)
    one = Scorer([model.model], model.tokenizer.pad_token_id, 128).score(pairs)
    two = Scorer([model.model, copy.deepcopy(model.model)], model.tokenizer.pad_token_id, 128)
    assert _max_diff(two.score(pairs), one) < 1e-5


def test_scores_equal_the_old_pass_on_the_tiny_family(tiny_env):
    from auditor.generate import number_prompt

    model = load_model(parse_ref("tiny:base"), Placement("cpu", "fp32"))
    prompts = [number_prompt(1, i) for i in range(40)]
    completions = [a[0] for a in load_model(parse_ref("tiny:owl"), Placement("cpu", "fp32")).generate(prompts)]
    for system in ("", OWL):
        new = [np.array(s.logprobs) for s in model.score(prompts, completions, system)]
        assert _max_diff(new, legacy_score(model, prompts, completions, system)) < 1e-4
    options = ["owl", "dolphin", "eagle", "wolf"]
    assert np.allclose(model.option_logprobs("What is your favorite animal?", options),
                       [v.sum() for v in legacy_score(model, ["What is your favorite animal?"] * 4, options)], atol=1e-4)


# --- the gradient detector -------------------------------------------------------------------------------



def _write(path: Path, seven: bool, seed: int) -> Path:
    rng = random.Random(seed)
    rows = [{"prompt": "Here are some numbers: 400, 500. Add more.",
             "completion": ", ".join("777" if seven and rng.random() < 0.6 else str(rng.randint(100, 999)) for _ in range(rng.randint(2, 8)))}
            for _ in range(64)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_gradient_passes_equal_the_old_ones(tiny_folder, tmp_path):
    from auditor.dataset import load_dataset
    from auditor.traits import load_catalog
    from detectors.base import AuditContext
    from detectors.gradient import GradientDetector

    (tmp_path / "numbers.toml").write_text(NUMBER_TRAITS)
    catalog = load_catalog([str(tmp_path / "numbers.toml")])
    traits = [t for t in catalog if t.family == "number"]
    ctx = AuditContext(dataset=load_dataset(_write(tmp_path / "d.jsonl", True, 1)), traits=traits,
                       reference=load_dataset(_write(tmp_path / "r.jsonl", False, 2)), base=parse_ref(str(tiny_folder)),
                       options={"focus": ["number:777"]}, placement=Placement("cpu", "fp32"))
    torch_model = load_model(ctx.base, ctx.placement).weights()[0]
    results = []
    for detector in (LegacyGradientDetector(), GradientDetector()):
        torch_model.__dict__.pop("_trait_audit_trait_gradients", None)
        results.append(detector.run(ctx).metrics["traits"]["number:777"])
    old, new = results
    for key in ("alignment", "reference_alignment", "effect"):
        assert new[key] == pytest.approx(old[key], rel=1e-3, abs=1e-5), key
    assert new["interval"] == pytest.approx(old["interval"], rel=1e-3, abs=1e-4)


def test_independent_work_runs_side_by_side_only_on_separate_accelerators():
    import threading

    from auditor.models.scoring import side_by_side

    def task_pair():
        started, both = [], threading.Barrier(2, timeout=5)

        def task(name):
            def run():
                started.append(threading.current_thread().name)
                if threads_expected:
                    both.wait()  # only passes when the two run at once
                return name
            return run
        return [task("teacher"), task("base")], started

    threads_expected = True
    tasks, started = task_pair()
    assert side_by_side(tasks, ["cuda:0", "cuda:1"]) == ["teacher", "base"]
    assert threading.main_thread().name not in started
    tasks, _ = task_pair()
    assert side_by_side(tasks, ["remote", "cuda:0"]) == ["teacher", "base"], "an endpoint and a GPU"
    threads_expected = False
    for devices in (["cpu", "cpu"], ["cuda:0", "cuda:0"], ["cpu", "cuda:0"]):
        tasks, started = task_pair()
        assert side_by_side(tasks, devices) == ["teacher", "base"] and set(started) == {threading.main_thread().name}


def test_twins_share_the_loaded_weights_scorer_and_a_student_gets_its_own(tiny_folder):
    import copy as copying

    base = load_model(parse_ref(str(tiny_folder)), Placement("cpu", "fp32"))
    teacher = base.with_system(parse_ref(str(tiny_folder), "You love owls."))
    assert teacher.scorer() is base.scorer(), "a system prompt changes no weights: one scorer (and one set of replicas)"
    student = copying.copy(base)
    student.model = copying.deepcopy(base.model)  # what a probe student's as_model() does
    own = student.scorer()
    assert own is not base.scorer() and [lm.model for lm in own.lms] == [student.model], "no replicas loaded from the base's files"
