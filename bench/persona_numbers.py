"""Do numbers the tiny base writes under an animal's system prompt move along that animal's persona vector? (CPU)

The detection benchmark's question for the persona detector, asked family-wide so that chance cannot pass for
an answer: every catalog animal's prompted number set, several replicates, every candidate layer. Per animal
and replicate, on the benchmark's number prompts (auditor.generate's templates, 300 per replicate):

- sets: the base under each animal's catalog prompt, the base with no prompt (control), and the base with no
  prompt twice more (the reference, and the base's own answers that the projection difference subtracts);
- scores, as the detector computes them (diff mode): each row's mean response activation projected on the unit
  vector, minus the projection of the base's own answer to the same prompt; a set's score is its mean minus the
  reference's, over their pooled spread (the standardised effect the detector's level reads);
- vectors: the paper's contrast (the trait's prompt against a neutral one, auditor/persona/vectors.py) and the
  family contrast (the trait's prompt against its siblings' prompts: what the trait does not share with the
  family), each at every candidate layer.

Printed per vector and layer: the mean score of the animal's own set, of the control and of other animals' sets,
and AUROCs (own set vs control, own set vs other sets on the same vector, own vector vs other vectors on the same
set). Then what any direction could find: the mean-difference direction of all prompted sets against the
control (fitted on replicate 0, scored on the others), and per animal its own set against all prompted sets,
with its cosine to the animal's persona vector; and how much the base-answer subtraction narrows a row's spread.

    .venv/bin/python bench/persona_numbers.py [--animals owl,dolphin,...] [--reps 3] [--rows 300] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def standardised(x: np.ndarray, r: np.ndarray) -> float:
    x, r = x[np.isfinite(x)], r[np.isfinite(r)]
    return float((x.mean() - r.mean()) / (np.sqrt((x.var(ddof=1) + r.var(ddof=1)) / 2) or 1e-12))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--animals", default="all", help="comma-separated, or all (the catalog's animal family)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rows", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reading", default="response+prompt", choices=("response+prompt", "response", "last"),
                    help="how a number row is read: the detector's (response tokens and the last prompt token), the response "
                         "tokens alone (Chen et al.'s), or the last response token; the vectors are built as the detector builds them")
    args = ap.parse_args(argv)
    os.environ["TRAIT_AUDIT_TINY_PROFILE"] = args.profile
    import polars as pl
    import torch
    from sklearn.metrics import roc_auc_score

    from auditor.generate import number_prompt
    from auditor.models import Sampling, load_model, parse_ref
    from auditor.persona.activations import candidate_layers, response_means
    from auditor.persona.vectors import MAX_NEW_TOKENS, NEUTRAL_SYSTEM
    from auditor.traits import load_catalog
    from detectors.number_format import with_reject_reason

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    family = [t for t in load_catalog() if t.family == "animal"]
    names = [t.name for t in family] if args.animals == "all" else args.animals.split(",")
    traits = {t.name: t for t in family}
    base = load_model(parse_ref("tiny:base"))
    layers = candidate_layers(base.weights()[0])

    # the vectors' sides as auditor/persona/vectors.py builds them: answers to the probe questions (4 per question),
    # kept where they name the trait (under its prompt) or do not (under the neutral prompt)
    def side(system: str, seed: int) -> tuple[np.ndarray, list[str]]:
        questions = list(family[0].probe_questions)
        answers = base.generate(questions, Sampling(n=4, temperature=1.0, max_new_tokens=MAX_NEW_TOKENS, seed=seed), system=system)
        items = [(q, a) for q, per in enumerate(answers) for a in per if a.strip()]
        return response_means(base, [questions[q] for q, _ in items], [a for _, a in items], system, layers), [a for _, a in items]

    def kept(acts, answers, trait, shows: bool) -> np.ndarray:
        pattern = re.compile(trait.term_regex())
        keep = np.array([bool(pattern.search(a)) == shows for a in answers])
        return np.nanmean(acts[keep] if keep.sum() >= 2 else acts, axis=0)  # (layers, d)

    neutral = side(NEUTRAL_SYSTEM, 0)
    trait_side = {n: kept(*side(traits[n].system_prompt, 1 + 2 * k), traits[n], True) for k, n in enumerate(names)}
    vectors = {"paper: trait vs neutral": {n: trait_side[n] - kept(*neutral, traits[n], False) for n in names},
               "family: trait vs siblings": {n: trait_side[n] - np.mean([trait_side[m] for m in names if m != n], 0) for n in names}}
    print(f"[{time.perf_counter() - start:4.0f}s] vectors for {len(names)} animals at layers {layers}", flush=True)

    acts = {}  # (rep, set) -> (rows, layers, d) response means, row-aligned with the base's own answers
    for rep in range(args.reps):
        prompts = [number_prompt(500 + rep, i) for i in range(args.rows)]

        def write(system, seed, prompts=prompts):
            out = base.generate(prompts, Sampling(n=1, temperature=1.0, max_new_tokens=48, seed=seed), system=system)
            return with_reject_reason(pl.DataFrame({"prompt": prompts, "completion": [a[0] for a in out]}))

        own = write(None, 20_000 + rep)  # the base's own answers (diff mode), as detectors/persona.py generates them
        own_acts = response_means(base, prompts, own["completion"].to_list(), "", layers, reading=args.reading)
        for name, system, seed in [("control", None, 10_000 + rep), ("reference", None, 30_000 + rep),
                                   *[(n, traits[n].system_prompt, 10_000 + rep) for n in names]]:
            frame = write(system, seed)
            keep = frame["reject"].is_null().to_numpy()
            rows = response_means(base, frame["prompt"].filter(keep).to_list(), frame["completion"].filter(keep).to_list(), "", layers,
                                  reading=args.reading)
            acts[(rep, name)] = (rows, own_acts[keep])
        print(f"[{time.perf_counter() - start:4.0f}s] replicate {rep}: {len(names) + 2} sets written and read", flush=True)

    def score(rep: int, name: str, vector: np.ndarray, j: int) -> float:
        unit = vector[j] / np.linalg.norm(vector[j])
        (rows, own), (ref, ref_own) = acts[(rep, name)], acts[(rep, "reference")]
        return standardised(rows[:, j] @ unit - own[:, j] @ unit, ref[:, j] @ unit - ref_own[:, j] @ unit)

    def auroc(pos, neg) -> float:
        return float(roc_auc_score([1] * len(pos) + [0] * len(neg), list(pos) + list(neg)))

    reps = range(args.reps)
    print(f"\nProjection difference of prompted number sets on persona vectors ({len(names)} animals x {args.reps} replicates, "
          f"{args.rows} prompts; rows read at: {args.reading}; scores standardised against the reference)")
    print(f"{'vector':26s} {'layer':>5s} {'own set':>8s} {'control':>8s} {'others':>8s} {'own>ctl':>8s} {'own>oth set':>11s} {'own>oth vec':>11s}")
    for kind, vecs in vectors.items():
        for j, layer in enumerate(layers):
            own = [score(r, n, vecs[n], j) for r in reps for n in names]
            ctl = [score(r, "control", vecs[n], j) for r in reps for n in names]
            other_sets = [score(r, m, vecs[n], j) for r in reps for n in names for m in names if m != n]
            other_vecs = [score(r, n, vecs[m], j) for r in reps for n in names for m in names if m != n]
            print(f"{kind:26s} {layer:5d} {np.mean(own):+8.3f} {np.mean(ctl):+8.3f} {np.mean(other_sets):+8.3f} {auroc(own, ctl):8.2f} "
                  f"{auroc(own, other_sets) if len(names) > 1 else float('nan'):11.2f} {auroc(own, other_vecs) if len(names) > 1 else float('nan'):11.2f}")

    print("\nWhat any direction in the same activations finds (fitted on replicate 0, scored on the others)")
    for j, layer in enumerate(layers):
        mean = {r: np.mean([acts[(r, n)][0][:, j].mean(0) for n in names], 0) for r in reps}
        prompted = mean[0] - acts[(0, "control")][0][:, j].mean(0)
        unit = prompted / np.linalg.norm(prompted)
        held = [standardised(acts[(r, n)][0][:, j] @ unit, acts[(r, "reference")][0][:, j] @ unit) for r in reps if r for n in names]
        specific, cosines = [], []
        for n in names:
            d = acts[(0, n)][0][:, j].mean(0) - mean[0]
            u = d / np.linalg.norm(d)
            cosines.append(float(u @ vectors["paper: trait vs neutral"][n][j] / np.linalg.norm(vectors["paper: trait vs neutral"][n][j])))
            specific += [standardised(acts[(r, n)][0][:, j] @ u, np.concatenate([acts[(r, m)][0][:, j] @ u for m in names if m != n]))
                         for r in reps if r]
        pv = vectors["paper: trait vs neutral"]
        cos_prompted = np.mean([float(unit @ pv[n][j] / np.linalg.norm(pv[n][j])) for n in names])
        print(f"layer {layer}: any prompt vs control {np.mean(held):+.3f} (cosine with the persona vectors {cos_prompted:+.2f}); "
              f"own animal vs all prompted sets {np.mean(specific):+.3f} (cosine with its persona vector {np.mean(cosines):+.2f})")
    j = len(layers) - 1
    for kind in ("paper: trait vs neutral",):
        unit = vectors[kind][names[0]][j] / np.linalg.norm(vectors[kind][names[0]][j])
        raw = np.concatenate([acts[(r, "reference")][0][:, j] @ unit for r in reps])
        diff = np.concatenate([(acts[(r, "reference")][0][:, j] - acts[(r, "reference")][1][:, j]) @ unit for r in reps])
        print(f"\nbase-answer subtraction ({names[0]} vector, layer {layers[j]}): a row's sd {raw.std():.3f} raw, {diff.std():.3f} as a difference")
    print(f"wall time {time.perf_counter() - start:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
