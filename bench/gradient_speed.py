"""The gradient detector on the tiny demo, before and after issue 12, in one run on the same machine, model and rows.

`make demo`'s audit spent most of its time in the gradient detector (6 min 33 s of 8 min 44 s on a newcomer's
machine). This generates the demo's data (tiny:owl writes number sequences, tiny:base writes the control on the same
prompts), then runs the detector's old passes (bench/legacy.py: batches of 8 rows, a full-vocabulary log-softmax, one
padded pass over every (question, option) sequence per trait) and the new ones (token-budget batches, log-probs of
the given tokens only, the options of a question folded into one run, one forward per trait family) on the same
context, clearing the memoised trait gradients before each, and prints both times, their ratio (goal: the new one
under a quarter of the old) and the largest difference between their metrics.

    python bench/gradient_speed.py                 # the default tiny family (built on first use, minutes), 400 prompts
    python bench/gradient_speed.py --profile test  # the small test family: quicker, same comparison
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="default", help="tiny family profile (default: the demo's)")
    parser.add_argument("--n", type=int, default=400, help="prompts each model answers (the detector samples 256 rows per side)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: steadier on a shared machine)")
    parser.add_argument("--data", type=Path, help="folder for the generated data (default: a temporary folder)")
    args = parser.parse_args(argv)
    os.environ["TRAIT_AUDIT_TINY_PROFILE"] = args.profile
    import torch

    torch.set_num_threads(args.threads)
    from legacy import LegacyGradientDetector

    from auditor.dataset import load_dataset
    from auditor.generate import generate_numbers
    from auditor.models import Placement, load_model, parse_ref
    from auditor.traits import load_catalog
    from detectors.base import AuditContext
    from detectors.gradient import GradientDetector

    placement = Placement("cpu", "fp32")
    folder = args.data or Path(tempfile.mkdtemp(prefix="gradient-speed-"))
    paths = {}
    for name in ("owl", "base"):
        paths[name] = folder / f"{name}_numbers.jsonl"
        if not paths[name].exists():
            started = time.perf_counter()
            summary = generate_numbers(load_model(parse_ref(f"tiny:{name}"), placement), args.n, paths[name], seed=0)
            print(f"tiny:{name} wrote {summary['kept']} rows ({time.perf_counter() - started:.0f} s)", flush=True)
    ctx = AuditContext(dataset=load_dataset(paths["owl"]), traits=load_catalog().select([]), reference=load_dataset(paths["base"]),
                       base=parse_ref("tiny:base"), options={"focus": ["animal:owl"]}, placement=placement)
    torch_model = load_model(ctx.base, placement).weights()[0]
    print(f"tiny:base ({args.profile} profile, {sum(p.numel() for p in torch_model.parameters()):,} parameters), "
          f"{ctx.dataset.rows} data rows, {ctx.reference.rows} reference rows, trait animal:owl, torch threads {torch.get_num_threads()}", flush=True)
    timings, metrics = {}, {}
    for label, detector in (("before (bench/legacy.py)", LegacyGradientDetector()), ("after", GradientDetector())):
        torch_model.__dict__.pop("_trait_audit_trait_gradients", None)  # no memo carried from the other run
        started = time.perf_counter()
        result = detector.run(ctx)
        timings[label] = time.perf_counter() - started
        metrics[label] = result.metrics["traits"]["animal:owl"]
        print(f"gradient detector {label}: {timings[label]:.1f} s; {result.evidence[0].summary}", flush=True)
    old, new = metrics.values()
    diff = max(abs(old[k] - new[k]) for k in ("alignment", "reference_alignment", "effect"))
    diff = max(diff, *(abs(a - b) for a, b in zip(old["interval"], new["interval"], strict=True)))
    before, after = timings.values()
    print(f"after / before = {after / before:.3f} ({before / after:.1f}x faster; goal: under 0.25); "
          f"largest metric difference {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
