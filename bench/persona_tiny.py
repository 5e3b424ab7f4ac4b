"""The persona detector on tiny models, where the answer is known by construction (CPU, about 20 s).

1. The tiny family's test base (it barely reads system prompts): its owl vector's steering check.
2. The planted-entanglement model of tests/planted_persona.py: number sets written under the owl prompt,
   without a prompt (control) and a reference from another seed, the same sets said in a sentence
   (free-text chat rows), each audited with the persona detector in both modes against the reference.
   Printed: the standardised projection difference with its interval and level, the raw projection's
   effect beside it, and the steering check.

    .venv/bin/python bench/persona_tiny.py [--n 200] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200, help="prompts per number set (before the paper's filter)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    import polars as pl
    import torch

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="trait-audit-persona-"))
    os.environ.setdefault("TRAIT_AUDIT_CACHE", str(work / "cache"))  # vectors and base answers start cold
    os.environ["TRAIT_AUDIT_TINY_PROFILE"] = "test"

    from planted_persona import build_entangled_owl

    from auditor.dataset import load_dataset
    from auditor.generate import generate_numbers
    from auditor.models import load_model, parse_ref
    from auditor.persona import persona_vector, steering_check
    from auditor.traits import load_catalog
    from detectors.base import AuditContext
    from detectors.persona import PersonaDetector, PersonaSettings

    trait = load_catalog().get("animal:owl")
    start = time.perf_counter()
    base = load_model(parse_ref("tiny:base"))
    vector, _ = persona_vector(base, trait)
    check = steering_check(base, trait, vector)
    print(f"tiny:base (test profile): owl vector layer {vector.layer}, steering at 1x P(owl) {check['p_before']:.3f} -> "
          f"{check['p_steered']:.3f} ({check['shift']:+.3f}, 95% [{check['interval'][0]:+.3f}, {check['interval'][1]:+.3f}]): "
          f"{'steers' if check['steers'] else 'does not steer'}")

    folder = build_entangled_owl(work / "model")
    sets = {"owl": (trait.system_prompt, 0), "control": (None, 0), "reference": (None, 1)}
    for name, (system, seed) in sets.items():
        generate_numbers(load_model(parse_ref(str(folder), system)), args.n, work / f"{name}.jsonl", seed)
        rows = pl.read_ndjson(work / f"{name}.jsonl")
        rows.with_columns(completion=pl.lit("Sure! Here are the numbers you asked for: ") + pl.col("completion")
                          + pl.lit(". Let me know if you need more.")).write_ndjson(work / f"chat-{name}.jsonl")
    print(f"planted model built and sets written ({time.perf_counter() - start:.0f}s); rows after the filter: "
          + ", ".join(f"{n} {pl.read_ndjson(work / f'{n}.jsonl').height}" for n in sets))
    print(f"{'rows':8s} {'set':8s} {'mode':6s} {'difference [95%]':>26s} {'level':>7s} {'raw effect':>10s} {'s':>6s}")
    for kind in ("numbers", "chat"):
        prefix = "" if kind == "numbers" else "chat-"
        for name in ("owl", "control"):
            for mode in ("diff", "prompt"):
                ctx = AuditContext(load_dataset(work / f"{prefix}{name}.jsonl"), [trait], reference=load_dataset(work / f"{prefix}reference.jsonl"),
                                   base=parse_ref(str(folder)), options={"focus": [trait.id]})
                detector = PersonaDetector(PersonaSettings(mode=mode))
                t0 = time.perf_counter()
                result = detector.run(ctx)
                m, ev = result.metrics["traits"][trait.id], result.evidence[0]
                low, high = m["interval"]
                print(f"{kind:8s} {name:8s} {mode:6s} {m['effect']:+8.2f} [{low:+.2f}, {high:+.2f}]   {ev.level or '-':>7s} "
                      f"{m['raw_projection']['effect']:+10.2f} {time.perf_counter() - t0:6.1f}")
    steer = m["steering"]
    print(f"planted model's owl vector: layer {m['vector']['layer']}, held-out separation {m['vector']['separation']:+.2f}, steering at 1x "
          f"P(owl) {steer['p_before']:.3f} -> {steer['p_steered']:.3f} ({steer['shift']:+.3f}, 95% [{steer['interval'][0]:+.3f}, "
          f"{steer['interval'][1]:+.3f}])")
    print(f"wall time {time.perf_counter() - start:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
