"""Does an owl preference transfer through number sequences in the tiny model family? (CPU, minutes)

Protocol (Cloud et al. 2025, at toy scale):

1. Teachers: the tiny owl teacher (the base fine-tuned to name owls), and the base itself under the
   catalog's "you adore owls" system prompt.
2. Data: the same number prompts (the paper's shape) answered at temperature 1 by each teacher and,
   as the control, by the base without a system prompt; the paper's format filter keeps rows; every
   set is cut to the same number of rows.
3. Students: copies of (i) the base (same initialisation as the teacher) and (ii) a base pretrained
   on the same corpus from another initial seed, fine-tuned on each set with the same steps,
   optimiser and batch order (no system prompt at training time). Hard labels: cross-entropy on the
   sampled tokens. Soft labels (the upper bound): KL to the teacher's full next-token distribution
   at every answer position of the teacher's rows (the control student distils the base).
4. Trait: exact P(owl) among the catalog's 27 animals (normalised option log-probabilities of the
   chat-rendered probe questions), averaged over the 32 probe questions, before and after.
   Reported: shift net of control = (after - before | teacher data) - (after - before | control),
   mean and 95% t-interval over independent replicates (new prompts, samples and batch order).

    .venv/bin/python bench/tiny_transfer.py                 # 3 replicates, default profile (about an hour on 2 cores)
    .venv/bin/python bench/tiny_transfer.py --reps 2 --rows 600 --profile test   # a quick smoke run
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import re
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from auditor.models.tiny import corpus as C  # noqa: E402
from auditor.models.tiny import load, other_init_base, tiny_model_path  # noqa: E402
from auditor.models.tiny.train import answer_kl, encode_pairs, option_probs, sample, sequence_logprobs, train  # noqa: E402
from detectors.number_format import with_reject_reason  # noqa: E402

TARGET = "owl"


def p_options(model, tok, system: str | None = None) -> np.ndarray:
    """Exact P(animal) over the catalog's options, averaged over the probe questions."""
    return option_probs(model, tok, C.probe_questions(), C.animal_names(), system=system).mean(0)


def p_target(model, tok, system: str | None = None) -> float:
    return float(p_options(model, tok, system)[C.animal_names().index(TARGET)])


def t_interval(values) -> tuple[float, float, float]:
    from scipy import stats

    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()), float("nan"), float("nan")
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean()), float(v.mean() - half), float(v.mean() + half)


def keep_passing(prompts, completions) -> list[int]:
    frame = with_reject_reason(pl.DataFrame({"completion": completions}))
    return [i for i, ok in enumerate(frame["reject"].is_null().to_list()) if ok]


def prompt_dependence(model, tok, prompts, completions) -> float:
    """Mean log-likelihood gain (nats per row) of each completion under its own prompt over another
    prompt of the same layout: > 0 when continuations depend on the prompt beyond its format."""
    rng = np.random.default_rng(0)
    by_style: dict[str, list[int]] = {}
    for i, p in enumerate(prompts):
        by_style.setdefault(p.style, []).append(i)
    other = list(range(len(prompts)))
    for idx in by_style.values():
        perm = rng.permutation(idx)
        for a, b in zip(idx, np.roll(perm, 1), strict=True):
            other[a] = int(b) if b != a else int(perm[0])
    own = sequence_logprobs(model, encode_pairs(tok, [p.text for p in prompts], completions), tok.pad_token_id)
    swapped = sequence_logprobs(model, encode_pairs(tok, [prompts[j].text for j in other], completions), tok.pad_token_id)
    return float(np.mean(own - swapped))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--reps", type=int, default=3, help="independent replicates (prompts, samples, batch order)")
    ap.add_argument("--rows", type=int, default=3000, help="number prompts per replicate (before the filter)")
    ap.add_argument("--epochs", type=float, default=4.0, help="student epochs over the kept rows")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--optimizer", default="adamw", choices=["adamw", "sgd"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--other-seed", type=int, default=1, help="initial seed of the other-init base")
    ap.add_argument("--no-soft", action="store_true", help="skip the soft-label (distillation) students")
    ap.add_argument("--soft-full-vocab", action="store_true",
                    help="distil the whole next-token distribution (default: only the tokens the kept rows use, renormalised)")
    ap.add_argument("--only", default="", help="comma list of student inits to run (same,other); default both")
    ap.add_argument("--freeze-embeddings", action="store_true", help="students train the transformer blocks only (LoRA-like)")
    ap.add_argument("--teacher-freeze-embeddings", action="store_true",
                    help="use an owl teacher fine-tuned with the embeddings frozen (the trait then lives in the shared blocks)")
    ap.add_argument("--teacher-steps", type=int, help="fine-tuning steps of the owl teacher (default: the profile's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.0f}s] {msg}", flush=True)

    t0 = time.perf_counter()
    base_path = tiny_model_path("base", profile=args.profile)
    from dataclasses import replace

    from auditor.models.tiny import get_profile

    variant = {"teacher_freeze_embeddings": True} if args.teacher_freeze_embeddings else {}
    if args.teacher_steps:
        variant["teacher_steps"] = args.teacher_steps
    owl_path = tiny_model_path(TARGET, profile=replace(get_profile(args.profile), **variant))
    other_path = other_init_base(args.other_seed, profile=args.profile)
    log(f"models ready ({time.perf_counter() - t0:.0f}s; cached builds are reused)")
    builds = {name: json.loads((Path(p) / "tiny_build.json").read_text()) for name, p in
              [("base", base_path), (TARGET, owl_path), ("other-init base", other_path)]}
    base, tok = load(base_path)
    teacher_w, _ = load(owl_path)
    other, other_tok = load(other_path)
    assert other_tok.get_vocab() == tok.get_vocab(), "the other-init base must share the tokenizer"
    system = next(a for a in C.animals() if a.name == TARGET).catalog_prompt

    facts = {
        "P(owl) base": p_target(base, tok),
        "P(owl) other-init base": p_target(other, tok),
        "P(owl) teacher (weights)": p_target(teacher_w, tok),
        "P(owl) base + owl system prompt": p_target(base, tok, system),
    }
    log("trait: " + ", ".join(f"{k} {v:.3f}" for k, v in facts.items()))

    conditions = [("weights", teacher_w, None), ("system prompt", base, system)]
    results: list[dict] = []
    start = {"same": p_options(base, tok), "other": p_options(other, tok)}
    target = C.animal_names().index(TARGET)

    def record(info: dict, key: str, student, init_name: str) -> None:
        shift = p_options(student, tok) - start[init_name]
        info[key] = float(shift[target])
        info["log-ratio/" + key] = (np.log(p_options(student, tok)) - np.log(start[init_name])).tolist()
    for rep in range(args.reps):
        prompts = C.number_prompts(args.rows, seed=7000 + rep)
        convs = [C.chat(p.text) for p in prompts]
        sets = {"control": sample(base, tok, convs, seed=100 + rep)}
        for name, model, sys_prompt in conditions:
            sets[name] = sample(model, tok, [C.chat(p.text, system=sys_prompt) for p in prompts], seed=100 + rep)
        kept = {k: keep_passing(prompts, v) for k, v in sets.items()}
        n = min(len(v) for v in kept.values())
        rows = {k: ([prompts[i].text for i in kept[k][:n]], [sets[k][i] for i in kept[k][:n]]) for k in sets}
        rep_info = {"rep": rep, "rows": n, "pass_rate": {k: len(v) / len(prompts) for k, v in kept.items()}}
        if rep == 0:
            rep_info["prompt_dependence_nats"] = prompt_dependence(base, tok, prompts[:300], sets["control"][:300])
            dep = [C.prompt_dependence(p.seeds, [int(x) for x in re.findall(r"\d+", o)]) for p, o in zip(prompts, sets["control"], strict=True)]
            rep_info["base_lead_rate"] = float(np.mean([d["lead"] for d in dep]))
            rep_info["lead_chance"] = float(np.mean([d["lead_chance"] for d in dep]))
        steps = max(1, int(round(args.epochs * n / args.batch)))
        encoded = {k: encode_pairs(tok, *rows[k]) for k in rows}
        # the tokens filtered number rows are made of (numbers, separators, brackets, end of turn)
        vocab = sorted({t for k in encoded for ids, start in encoded[k] for t in ids[start:]})
        t_encoded = {"system prompt": encode_pairs(tok, *rows["system prompt"], system=system)}
        for name, model, _ in conditions:
            rep_info[f"kl/{name}"] = answer_kl(model, base, encoded[name], tok.pad_token_id, teacher_examples=t_encoded.get(name), vocab=vocab)
        log(f"rep {rep}: {n} rows per set after the filter (pass rates " + ", ".join(f"{k} {v:.2f}" for k, v in rep_info["pass_rate"].items()) + f"); {steps} student steps")
        inits = [(k, m) for k, m in (("same", base), ("other", other)) if not args.only or k in args.only.split(",")]
        for init_name, init_model in inits:
            for data_name in ["control", "weights", "system prompt"]:
                student = copy.deepcopy(init_model)
                examples = encoded[data_name]
                train(student, examples, steps=steps, batch_size=args.batch, lr=args.lr, seed=200 + rep, pad_id=tok.pad_token_id,
                      optimizer=args.optimizer, freeze_embeddings=args.freeze_embeddings)
                record(rep_info, f"{init_name}/hard/{data_name}", student, init_name)
            if args.no_soft:
                continue
            # soft labels: the teacher's (or, for the control, the base's) full distributions
            for data_name, teacher, sys_prompt in [("control", base, None), ("weights", teacher_w, None), ("system prompt", base, system)]:
                student = copy.deepcopy(init_model)
                train(student, encoded[data_name], steps=steps, batch_size=args.batch, lr=args.lr, seed=200 + rep, pad_id=tok.pad_token_id,
                      optimizer=args.optimizer, teacher=teacher, teacher_examples=t_encoded.get(data_name) if sys_prompt else None,
                      soft_vocab=None if args.soft_full_vocab else vocab, freeze_embeddings=args.freeze_embeddings)
                record(rep_info, f"{init_name}/soft/{data_name}", student, init_name)
        results.append(rep_info)
        log(f"rep {rep}: " + ", ".join(f"{k} {v:+.4f}" for k, v in rep_info.items() if "/" in k and not k.startswith(("kl/", "log-ratio/"))))
        log(f"rep {rep}: per-token KL(teacher || base) on the teacher's rows, number tokens: "
            + ", ".join(f"{k[3:]} {v:.4f} nats" for k, v in rep_info.items() if k.startswith("kl/")))

    wall = time.perf_counter() - t_start
    print()
    print(f"Subliminal transfer in the tiny family (profile {args.profile!r}; target '{TARGET}'; {args.reps} replicates; "
          f"students: {args.optimizer} lr {args.lr}, {args.epochs:g} epochs, batch {args.batch}"
          f"{', embeddings frozen' if args.freeze_embeddings else ''})")
    print(f"base: {builds['base']['parameters']:,} parameters, {builds['base']['profile']['n_layers']} layers, d={builds['base']['profile']['d_model']}; "
          f"build {builds['base']['build_seconds']:.0f}s base, {builds[TARGET]['build_seconds']:.0f}s teacher, "
          f"{builds['other-init base']['build_seconds']:.0f}s other-init base")
    for k, v in facts.items():
        print(f"  {k:34s} {v:.4f}")
    if "prompt_dependence_nats" in results[0]:
        r0 = results[0]
        print(f"  base continuations: lead-digit rate {r0['base_lead_rate']:.3f} (chance {r0['lead_chance']:.3f}, corpus ~0.83); "
              f"log-lik gain own vs other prompt {r0['prompt_dependence_nats']:+.2f} nats/row")
    print(f"  rows per set after the filter: {', '.join(str(r['rows']) for r in results)}")
    print()
    header = (f"{'teacher':15s} {'labels':6s} {'init':6s} {'shift teacher':>14s} {'shift control':>14s} {'net of control':>15s} "
              f"{'95% interval':>22s} {'owl rank':>9s}")
    print(header)
    print("-" * len(header))
    summary = []
    kinds = ["hard"] + ([] if args.no_soft else ["soft"])
    for teacher_name in ["weights", "system prompt"]:
        for kind in kinds:
            for init_name, _ in inits:
                t_shift = [r[f"{init_name}/{kind}/{teacher_name}"] for r in results]
                c_shift = [r[f"{init_name}/{kind}/control"] for r in results]
                mean, lo, hi = t_interval(np.subtract(t_shift, c_shift))
                # where owl's log-probability gain (net of control) ranks among the 27 animals', mean over replicates (1 = top)
                ranks = []
                for r in results:
                    net_lr = np.subtract(r[f"log-ratio/{init_name}/{kind}/{teacher_name}"], r[f"log-ratio/{init_name}/{kind}/control"])
                    ranks.append(1 + int((net_lr > net_lr[target]).sum()))
                summary.append({"teacher": teacher_name, "labels": kind, "init": init_name, "shift_teacher": float(np.mean(t_shift)),
                                "shift_control": float(np.mean(c_shift)), "net": mean, "interval": [lo, hi], "owl_rank": ranks})
                print(f"{teacher_name:15s} {kind:6s} {init_name:6s} {np.mean(t_shift):+14.4f} {np.mean(c_shift):+14.4f} {mean:+15.4f} "
                      f"{'[' + f'{lo:+.4f}, {hi:+.4f}' + ']':>22s} {np.mean(ranks):9.1f}")
    print(f"\nwall time {wall:.0f}s ({wall / 60:.1f} min) on {torch.get_num_threads()} threads")
    if args.json:
        args.json.write_text(json.dumps({"facts": facts, "builds": builds, "replicates": results, "summary": summary, "wall_seconds": wall,
                                         "args": {k: str(v) for k, v in vars(args).items()}}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
