"""Detection benchmark: do the detectors tell a trait teacher's number data from controls? (tiny family, CPU)

For each animal and replicate, on the same number prompts (auditor.generate's templates):

- trait sets: the animal's tiny teacher (`tiny:ANIMAL`, the trait in its weights) and the base under
  the animal's catalog system prompt (`tiny:base` + trait prompt), sampled at temperature 1;
- negatives: a control (the base, no system prompt, another sampling seed) and a cross-init set
  (a base pretrained from another initial seed: data that differs from the base's own without
  carrying a trait);
- the reference every set is audited against: the base again, on the same prompts, with a third
  sampling seed (what `audit generate --model tiny:base` gives a user).

Every set is audited through `run_audit` (the CLI's code path) with `--teacher tiny:ANIMAL --base
tiny:base --reference REF` and the benchmark's animals as traits, and every detector asked for.
Printed per detector: AUROC of the dataset-level score for the animal (trait sets vs negatives),
the same against other animals' teachers (trait-specificity), the false-positive rate at the
default threshold (level low or above on a negative), the true-positive rate, wall time per audit
relative to one fine-tune probe of the same rows (a data student and a control student, full
fine-tune, 3 epochs; the "vs probe" column) and to a recipe-faithful probe of the same rows (the probe
detector's defaults: the paper's LoRA recipe on every row, its default seed pairs), and how often its verdict (raised or not) agrees with the probe detector's
(the ground truth: students fine-tuned on the set, net of control students). For detectors that cache
work across audits (persona: vectors and the base's answers), the seconds of the audits that did that
work are printed too (cold), beside those that reused it (warm), and for persona each vector's layer and steering check.

    .venv/bin/python bench/detection.py                       # 3 animals x 3 replicates, default family
    .venv/bin/python bench/detection.py --profile test --animals owl,dolphin --reps 2 --rows 200   # smoke run
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sklearn.metrics import roc_auc_score  # noqa: E402

from auditor.generate import number_prompt  # noqa: E402
from auditor.models import Sampling, load_model, parse_ref  # noqa: E402
from auditor.models.tiny import load, other_init_base, tiny_model_path  # noqa: E402
from auditor.models.tiny.train import encode_pairs, train  # noqa: E402
from auditor.runner import AuditOptions, run_audit  # noqa: E402
from auditor.traits import load_catalog  # noqa: E402
from detectors.number_format import with_reject_reason  # noqa: E402

RAISED = ("low", "medium", "high")


def write_set(model, prompts: list[str], seed: int, path: Path, system: str | None = None) -> int:
    """Sample one completion per prompt at temperature 1, keep the rows the paper's filter passes.

    (auditor.generate.generate_numbers ties the sampling seed to the prompts' seed; the benchmark needs
    the same prompts under several sampling seeds: data, control and reference.)"""
    answers = model.generate(prompts, Sampling(n=1, temperature=1.0, max_new_tokens=48, seed=seed), system=system)
    frame = with_reject_reason(pl.DataFrame({"prompt": prompts, "completion": [a[0] for a in answers]}))
    kept = frame.filter(pl.col("reject").is_null()).select("prompt", "completion")
    kept.write_ndjson(path)
    return kept.height


def probe_seconds(base_path: Path, data: Path, reference: Path, epochs: float = 3.0, batch: int = 16) -> float:
    """Wall time of one fine-tune probe on these rows: a data student and a control student from the base."""
    model, tok = load(base_path)
    start = time.perf_counter()
    for path in (data, reference):
        rows = pl.read_ndjson(path)
        examples = encode_pairs(tok, rows["prompt"].to_list(), rows["completion"].to_list())
        student = copy.deepcopy(model)
        train(student, examples, steps=max(1, int(round(epochs * len(examples) / batch))), batch_size=batch, lr=2e-4, seed=0,
              pad_id=tok.pad_token_id)
    return time.perf_counter() - start


def recipe_probe_seconds(data: Path, reference: Path, teacher: str, trait: str, workdir: Path) -> float:
    """Wall time of the probe detector with its defaults on these rows: the paper's open-model recipe (LoRA r 8,
    3 epochs, every row; auditor/probe/recipe.py) and its default seed pairs, through `run_audit` as a user runs it.
    The issue's cost goal ("at most 5% of a recipe-faithful probe on the same rows") is measured against this."""
    start = time.perf_counter()
    run_audit(AuditOptions(data=str(data), teacher=teacher, base="tiny:base", traits=[trait], reference=str(reference),
                           detectors=["probe"], seed=0, settings={"probe": {"workdir": str(workdir)}}))
    return time.perf_counter() - start


def agreement(table: pl.DataFrame, detector: str, kind: str) -> float:
    """Share of audits (this trait set's and the negatives', each for its own trait) where the detector's verdict
    (level low or above, or not) matches the probe's."""
    key = ["rep", "kind", "source", "teacher_claimed", "trait"]
    own = (pl.col("trait") == pl.col("source")) | (pl.col("source").is_null() & (pl.col("trait") == pl.col("teacher_claimed")))
    rows = table.filter(pl.col("kind").is_in([kind, "control", "cross-init"]) & own)
    pick = rows.filter(pl.col("detector") == detector).select(*key, raised=pl.col("level").is_in(RAISED).fill_null(False))
    truth = rows.filter(pl.col("detector") == "probe").select(*key, truth=pl.col("level").is_in(RAISED).fill_null(False))
    both = pick.join(truth, on=key, nulls_equal=True)
    return float((both["raised"] == both["truth"]).mean()) if both.height else float("nan")


def auroc(pos: list[float], neg: list[float]) -> float:
    if not pos or not neg:
        return float("nan")
    return float(roc_auc_score([1] * len(pos) + [0] * len(neg), pos + neg))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="default", help="tiny family profile (default, or test: small and quick)")
    ap.add_argument("--animals", default="owl,dolphin,eagle")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rows", type=int, default=400, help="prompts per set (before the filter)")
    ap.add_argument("--detectors", default="likelihood,gradient,divergence,fingerprint,persona,probe")
    ap.add_argument("--probe-seeds", type=int, default=2, help="probe: student/control seed pairs per audit")
    ap.add_argument("--probe-rows", type=int, default=300, help="probe: rows per student")
    ap.add_argument("--other-seed", type=int, default=1, help="initial seed of the cross-init base")
    ap.add_argument("--no-cross-init", action="store_true", help="leave out the cross-init negative set (its base is a second full pretraining)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write every audit's scores here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ["TRAIT_AUDIT_TINY_PROFILE"] = args.profile
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.0f}s] {msg}", flush=True)

    animals = args.animals.split(",")
    detectors = args.detectors.split(",")
    trait_ids = [f"animal:{a}" for a in animals]
    prompts_by_animal = {t.name: t.system_prompt for t in load_catalog() if t.id in trait_ids}
    for animal in animals:
        tiny_model_path(animal, profile=args.profile)
    other_path = None if args.no_cross_init else other_init_base(args.other_seed, profile=args.profile)
    base = load_model(parse_ref("tiny:base"))
    teachers = {a: load_model(parse_ref(f"tiny:{a}")) for a in animals}
    other = load_model(parse_ref(str(other_path))) if other_path else None
    log(f"models ready: tiny:base, {', '.join('tiny:' + a for a in animals)}"
        f"{'' if other is None else f', cross-init base (seed {args.other_seed})'}; profile {args.profile!r}")

    work = Path(tempfile.mkdtemp(prefix="trait-audit-detection-"))
    records = []
    audit_seconds: dict[str, list[float]] = {d: [] for d in detectors}
    # for detectors that cache work (persona): audits that built vectors (first contact with a base and trait), that only
    # generated base answers (prompts not seen before), and that reused everything
    cold_seconds: dict[str, list[float]] = {d: [] for d in detectors}
    answers_seconds: dict[str, list[float]] = {d: [] for d in detectors}
    warm_seconds: dict[str, list[float]] = {d: [] for d in detectors}
    steering: dict[str, dict] = {}
    probe_times = []
    for rep in range(args.reps):
        prompts = [number_prompt(500 + rep, i) for i in range(args.rows)]
        sets: dict[tuple[str, str | None], Path] = {}
        reference = work / f"reference-{rep}.jsonl"
        write_set(base, prompts, 30_000 + rep, reference)
        for kind, model, seed in [("control", base, 10_000 + rep), ("cross-init", other, 10_000 + rep)][: 1 if other is None else 2]:
            sets[(kind, None)] = work / f"{kind}-{rep}.jsonl"
            write_set(model, prompts, seed, sets[(kind, None)])
        for animal in animals:
            sets[("weights", animal)] = work / f"weights-{animal}-{rep}.jsonl"
            write_set(teachers[animal], prompts, 10_000 + rep, sets[("weights", animal)])
            sets[("system prompt", animal)] = work / f"system-{animal}-{rep}.jsonl"
            write_set(base, prompts, 10_000 + rep, sets[("system prompt", animal)], system=prompts_by_animal[animal])
        rows = {k: pl.read_ndjson(p).height for k, p in sets.items()}
        log(f"rep {rep}: sets written ({min(rows.values())}-{max(rows.values())} rows after the filter)")
        if rep == 0:
            probe_times.append(probe_seconds(tiny_model_path("base", profile=args.profile), sets[("control", None)], reference))
            log(f"one fine-tune probe of a control set: {probe_times[-1]:.1f}s")
            recipe_probe = recipe_probe_seconds(sets[("control", None)], reference, f"tiny:{animals[0]}", trait_ids[0], work / "recipe-probe")
            log(f"a recipe-faithful probe (the probe detector's defaults) of the same rows: {recipe_probe:.1f}s")
        for (kind, source), path in sets.items():
            # the auditor is told the teacher it suspects; for negatives, each animal's teacher in turn
            for animal in ([source] if source else animals):
                for detector in detectors:
                    start = time.perf_counter()
                    result = run_audit(AuditOptions(data=str(path), teacher=f"tiny:{animal}", base="tiny:base", traits=trait_ids,
                                                    reference=str(reference), detectors=[detector], seed=rep,
                                                    settings={"probe": {"seeds": args.probe_seeds, "rows": args.probe_rows,
                                                                        "workdir": str(work / "probe")}})).to_dict()
                    audit_seconds[detector].append(time.perf_counter() - start)
                    entry = next(e for e in result["detectors"] if e["name"] == detector)
                    cost = entry.get("cost") or {}
                    if cost.get("vectors_built"):
                        cold_seconds[detector].append(audit_seconds[detector][-1])
                    elif cost.get("base_answers_generated"):
                        answers_seconds[detector].append(audit_seconds[detector][-1])
                    elif "vectors_cached" in cost:
                        warm_seconds[detector].append(audit_seconds[detector][-1])
                    for trait_id, m in (entry["metrics"].get("traits") or {}).items() if detector == "persona" else ():
                        steering.setdefault(trait_id, {**m["steering"], "layer": m["vector"]["layer"], "separation": m["vector"]["separation"]})
                    for trait in result["traits"]:
                        ev = next((e for e in trait["evidence"] if e["detector"] == detector), None)
                        records.append({"rep": rep, "kind": kind, "source": source, "teacher_claimed": animal, "detector": detector,
                                        "status": entry["status"], "trait": trait["id"].split(":")[1],
                                        "score": ev["score"] if ev else None, "level": ev.get("level") if ev else None,
                                        "auc": entry["metrics"].get("auc") if detector == "fingerprint" else None})
        log(f"rep {rep}: audited {len(sets)} sets")

    if args.json:  # the raw records first, so a failed summary loses nothing
        args.json.write_text(json.dumps({"records": records, "probe_seconds": probe_times, "args": {k: str(v) for k, v in vars(args).items()}}))
    table = pl.DataFrame(records, infer_schema_length=None)
    probe = float(np.mean(probe_times))
    print()
    print(f"Detection on the tiny family (profile {args.profile!r}; animals {', '.join(animals)}; {args.reps} replicates; "
          f"{args.rows} prompts per set before the filter)")
    header = (f"{'detector':12s} {'trait set':14s} {'AUROC vs neg':>12s} {'AUROC vs other':>14s} {'TPR':>6s} {'FPR':>6s} "
              f"{'s/audit':>8s} {'vs probe':>9s} {'agrees':>9s}")
    print(header)
    print("-" * len(header))
    summary = []
    for detector in detectors:
        d = table.filter(pl.col("detector") == detector)
        secs = float(np.mean(audit_seconds[detector]))
        if detector == "fingerprint":
            # not trait-specific: its dataset-level AUC tells teacher data from the base's, per set
            sets_auc = d.unique(["rep", "kind", "source", "teacher_claimed"])
            pos = sets_auc.filter(pl.col("kind").is_in(["weights", "system prompt"]))["auc"].drop_nulls().to_list()
            neg = sets_auc.filter(pl.col("kind") == "control")["auc"].drop_nulls().to_list()
            cross = sets_auc.filter(pl.col("kind") == "cross-init")["auc"].drop_nulls().to_list()
            print(f"{detector:12s} {'any teacher':14s} {auroc(pos, neg):12.3f} {'n/a':>14s} {'n/a':>6s} {'n/a':>6s} {secs:8.1f} {secs / probe:8.1%}"
                  f"   (classifier AUC: teacher sets {np.mean(pos) if pos else float('nan'):.3f}, controls {np.mean(neg) if neg else float('nan'):.3f}, "
                  f"cross-init {np.mean(cross) if cross else float('nan'):.3f})")
            summary.append({"detector": detector, "auroc_vs_controls": auroc(pos, neg), "seconds_per_audit": secs, "relative_to_probe": secs / probe})
            continue
        for kind in ["weights", "system prompt"]:
            own = d.filter((pl.col("kind") == kind) & (pl.col("trait") == pl.col("source")))
            neg = d.filter(pl.col("kind").is_in(["control", "cross-init"]) & (pl.col("trait") == pl.col("teacher_claimed")))
            other = d.filter((pl.col("kind") == kind) & (pl.col("trait") != pl.col("source")))
            pos_scores = own["score"].drop_nulls().to_list()
            a_neg = auroc(pos_scores, neg["score"].drop_nulls().to_list())
            a_other = auroc(pos_scores, other["score"].drop_nulls().to_list())
            tpr = float(own["level"].is_in(RAISED).fill_null(False).mean()) if own.height else float("nan")
            fpr = float(neg["level"].is_in(RAISED).fill_null(False).mean()) if neg.height else float("nan")
            agree = agreement(table, detector, kind) if detector != "probe" and "probe" in detectors else float("nan")
            print(f"{detector:12s} {kind:14s} {a_neg:12.3f} {a_other:14.3f} {tpr:6.2f} {fpr:6.2f} {secs:8.1f} {secs / probe:8.1%} {agree:9.2f}")
            summary.append({"detector": detector, "trait_set": kind, "auroc_vs_negatives": a_neg, "auroc_vs_other_traits": a_other,
                            "tpr": tpr, "fpr": fpr, "seconds_per_audit": secs, "relative_to_probe": secs / probe, "agreement_with_probe": agree,
                            "skipped": int((d["status"] != "ran").sum())})
    for detector in detectors:
        secs = float(np.mean(audit_seconds[detector]))
        print(f"{detector}: {secs:.1f}s per audit, {secs / recipe_probe:.1%} of a recipe-faithful probe of the same rows ({recipe_probe:.1f}s)")
        for label, times in (("built vectors (cold)", cold_seconds[detector]), ("generated base answers only", answers_seconds[detector]),
                             ("reused both (warm)", warm_seconds[detector])):
            if times:
                print(f"  {label}: {np.mean(times):.1f}s per audit ({len(times)} audits), {np.mean(times) / recipe_probe:.1%}")
    for trait_id, check in steering.items():
        print(f"persona vector {trait_id}: layer {check['layer']}, held-out separation {check['separation']:+.2f}, steering at "
              f"{check['strength']:g}x moves P(trait) {check['p_before']:.3f} -> {check['p_steered']:.3f} "
              f"({'steers' if check['steers'] else 'does not steer'})")
    wall = time.perf_counter() - t_start
    print(f"\none fine-tune probe (2 students x 3 epochs, full, batch 16; the 'vs probe' column): {probe:.1f}s; a recipe-faithful probe "
          f"(LoRA, 3 epochs, every row, default seed pairs): {recipe_probe:.1f}s; wall time {wall:.0f}s ({wall / 60:.1f} min) on {torch.get_num_threads()} threads")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "records": records, "probe_seconds": probe, "recipe_probe_seconds": recipe_probe,
                                         "wall_seconds": wall,
                                         "cold_seconds": cold_seconds, "answers_seconds": answers_seconds, "warm_seconds": warm_seconds, "persona_steering": steering,
                                         "args": {k: str(v) for k, v in vars(args).items()}}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
