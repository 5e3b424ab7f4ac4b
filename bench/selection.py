"""Does a per-row score pick the rows that carry the transfer? Probe the top and the bottom fifth of rows by the
score (same size, same recipe, same control students) and report the difference in transfer with its interval.

Score (--score): the likelihood shift of a row under the trait's hypothesised system prompt on the base,
log p(row | trait prompt) - log p(row | neutral) (the likelihood detector's per-row score). Reference on
Qwen2.5-14B (jeqcho/LLS-subliminal-learning): students on the top half of rows by this shift reached
100/100/80% target rate (eagle/lion/phoenix) against 42/0/11% for the bottom half. Or the persona detector's
projection difference (--score persona): the row's projection on the trait's persona vector minus the base's
own answer's; on Qwen2.5-14B number data a raw projection selected inversely (top half 17%, bottom half 93%).

Transfer of each selection = P(trait) of its students net of control students trained on as many control rows
(same seeds, same steps); the difference top - bottom is paired by seed and question, so the control cancels,
and its 95% interval resamples seeds and questions (auditor/probe/stats.py).

    # the tiny family (test profile): the owl teacher's numbers against the base's, generated on the fly
    PYTHONPATH=. python bench/selection.py --rows 1500 --seeds 3
    # any data set: teacher data, control data, base, trait
    PYTHONPATH=. python bench/selection.py --data owl.jsonl --reference control.jsonl --base tiny:base --trait animal:owl
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def likelihood_shift(model, trait, rows) -> np.ndarray:
    prompts, completions = [p for p, _ in rows], [c for _, c in rows]
    return model.logprob(prompts, completions, system=trait.system_prompt) - model.logprob(prompts, completions, system="")


def persona_difference(model, trait, rows) -> np.ndarray:
    """The persona detector's per-row score: the row's projection on the trait's persona vector minus the base's own answer's."""
    from auditor.persona import base_answers, base_identity, persona_vector, projections

    vector, _ = persona_vector(model, trait)
    prompts, completions = [p for p, _ in rows], [c for _, c in rows]
    own, _ = base_answers(model, prompts, 0, base_identity(model))
    return projections(model, vector, prompts, completions) - projections(model, vector, prompts, own)


SCORES = {"likelihood": (likelihood_shift, "likelihood shift", "nats"), "persona": (persona_difference, "persona projection difference", "")}


def tiny_sets(rows: int, teacher: str) -> tuple[list, list]:
    """The tiny teacher's filtered number rows and the base's on the same prompts."""
    from positive_control import number_rows

    from auditor.models import load_model, parse_ref
    from auditor.models.tiny import corpus as C

    prompts = C.number_prompts(rows, seed=31)
    teacher_net, tok = load_model(parse_ref(f"tiny:{teacher}")).weights()
    base_net, _ = load_model(parse_ref("tiny:base")).weights()
    return number_rows(teacher_net, tok, prompts, seed=41), number_rows(base_net, tok, prompts, seed=42)


def read_rows(path) -> list[tuple[str, str]]:
    return list(pl.read_ndjson(path).select("prompt", "completion").iter_rows())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, help="teacher data (JSONL with prompt, completion); default: the tiny owl teacher's numbers")
    ap.add_argument("--reference", type=Path, help="control data; default: the tiny base's numbers on the same prompts")
    ap.add_argument("--base", default="tiny:base")
    ap.add_argument("--trait", default="animal:owl")
    ap.add_argument("--profile", default="test", help="tiny family profile when the tiny family is used")
    ap.add_argument("--rows", type=int, default=1500, help="number prompts to generate (tiny family only)")
    ap.add_argument("--score", choices=sorted(SCORES), default="likelihood", help="the per-row score that selects the rows")
    ap.add_argument("--fraction", type=float, default=0.2, help="share of rows in each selection (a fifth)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--train-recipe", help="recipe TOML (default: the paper's open-model recipe)")
    ap.add_argument("--lr", type=float, help="override the recipe's learning rate")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    os.environ.setdefault("TRAIT_AUDIT_TINY_PROFILE", args.profile)
    started = time.perf_counter()

    def log(message):
        print(f"[{time.perf_counter() - started:6.0f}s] {message}", flush=True)

    from auditor.models import load_model, parse_ref
    from auditor.probe.engine import probe_shift
    from auditor.probe.stats import net_shift
    from auditor.traits import load_catalog

    trait = load_catalog().get(args.trait)
    base = load_model(parse_ref(args.base))
    if args.data:
        data, control = read_rows(args.data), read_rows(args.reference)
    else:
        data, control = tiny_sets(args.rows, trait.name)
    score, label, unit = SCORES[args.score]
    scores = score(base, trait, data)
    order = np.argsort(scores)
    k = max(10, int(len(data) * args.fraction))
    top, bottom = [data[i] for i in order[-k:]], [data[i] for i in order[:k]]
    control_k = random.Random(0).sample(control, min(k, len(control)))
    log(f"{len(data)} rows scored; top fifth {label} {scores[order[-k:]].mean():+.3f} {unit}, bottom {scores[order[:k]].mean():+.3f}; "
        f"{k} rows per selection, {len(control_k)} control rows")

    settings = SimpleNamespace(seeds=args.seeds, rows=None, epochs=None, method=None, budget=None, negligible=0.02,
                               workdir=Path(tempfile.mkdtemp(prefix="selection-")), train_recipe=args.train_recipe, lr=args.lr)
    seeds = list(range(args.seeds))
    results = {}
    for name, rows in (("top", top), ("bottom", bottom)):
        result = probe_shift(base, [trait], rows, control_k, seeds, settings)  # the same control students both times (reused checkpoints)
        results[name] = result.traits[trait.id]
        s = results[name].shift
        log(f"{name} fifth: net shift {s.net:+.5f} [{s.interval[0]:+.5f}, {s.interval[1]:+.5f}] (MDS {s.min_detectable:.5f})")
    diff = net_shift(results["top"].student, results["bottom"].student)
    print(f"\nSelection by {label} ({trait.id}, base {args.base}, {k} rows per fifth, {args.seeds} seeds, recipe "
          f"{args.train_recipe or 'default'}{'' if args.lr is None else f', lr {args.lr:g}'})")
    for name in ("top", "bottom"):
        s = results[name].shift
        print(f"  {name:6s} fifth: P(trait) student {results[name].student.mean():.5f}, control {results[name].control.mean():.5f}, "
              f"net {s.net:+.5f} [{s.interval[0]:+.5f}, {s.interval[1]:+.5f}]")
    print(f"  top - bottom: {diff.net:+.5f} (95% [{diff.interval[0]:+.5f}, {diff.interval[1]:+.5f}], minimum detectable "
          f"{diff.min_detectable:.5f})")
    print(f"wall time {time.perf_counter() - started:.0f}s")
    if args.json:
        args.json.write_text(json.dumps({name: r.as_dict() for name, r in results.items()} | {"difference": diff.as_dict(), "rows": k},
                                        indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
