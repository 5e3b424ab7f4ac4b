"""A positive control for the language-model probe: does a steered tiny teacher's number data move a same-base
LoRA + AdamW student toward the trait, while other-init students and control students do not? (CPU, minutes)

Literature lead (arXiv 2606.00995): subliminal transfer is carried by one steering vector. So the teacher here is
the base with a trait direction added to its residual stream: v = mean activation (last prompt token, layer L)
with the trait's system prompt minus without, over number prompts; the teacher adds strength x v at layer L's
output, at every position. Protocol:

1. Search: for each (layer, strength), the steered base's P(owl) on the probe questions (no system prompt) and
   the share of its number answers that pass the paper's filter; keep configurations that raise P(owl) and
   still write numbers.
2. Data: the same number prompts answered at temperature 1 by the steered teacher and, as the control, by the
   base; the paper's filter; both sets cut to the same size.
3. Students: the probe engine (auditor/probe/engine.py) with the recipe (default: LoRA r=8, alpha=8 on
   q,k,v,o,gate,up,down; AdamW, linear decay, 5 warm-up steps, effective batch 66, 3 epochs; --lr changes
   the learning rate), from the base (same init) and from a base pretrained from another initial seed
   (other init), each against its control student, several seeds: net shift of P(owl) with its 95% interval
   over seeds and questions.

    PYTHONPATH=. python bench/positive_control.py --strengths 0.5,1,1.5   # test profile; ~11 min per 6 students on 2 busy cores
    PYTHONPATH=. python bench/positive_control.py --profile default --rows 3000 --seeds 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET = "owl"


@contextlib.contextmanager
def steered(net, layer: int, vector: torch.Tensor):
    """Add `vector` to the output of decoder layer `layer` (1-based) at every position."""
    block = net.model.layers[layer - 1]

    def hook(_module, _inputs, output):
        return output + vector if torch.is_tensor(output) else (output[0] + vector, *output[1:])

    handle = block.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def trait_direction(net, tok, prompts: list[str], system: str, layer: int) -> torch.Tensor:
    """Mean last-prompt-token state after `layer` with the system prompt minus without."""
    from auditor.models.tiny import corpus as C
    from auditor.models.tiny.tokenizer import render

    def mean_state(sys_prompt):
        states = []
        with torch.no_grad():
            for text in prompts:
                ids = tok(render(C.chat(text, system=sys_prompt), add_generation_prompt=True), add_special_tokens=False)["input_ids"]
                out = net(input_ids=torch.tensor([ids]), output_hidden_states=True)
                states.append(out.hidden_states[layer][0, -1])
        return torch.stack(states).mean(0)

    return mean_state(system) - mean_state(None)


def p_owl(net, tok) -> float:
    from auditor.models.tiny import corpus as C
    from auditor.models.tiny.train import option_probs

    return float(option_probs(net, tok, C.probe_questions(), C.animal_names()).mean(0)[C.animal_names().index(TARGET)])


def number_rows(net, tok, prompts, seed: int) -> list[tuple[str, str]]:
    """(prompt, completion) rows the paper's filter keeps, in prompt order."""
    from auditor.models.tiny import corpus as C
    from auditor.models.tiny.train import sample
    from detectors.number_format import with_reject_reason

    answers = sample(net, tok, [C.chat(p.text) for p in prompts], seed=seed)
    keep = with_reject_reason(pl.DataFrame({"completion": answers}))["reject"].is_null().to_list()
    return [(p.text, a) for p, a, ok in zip(prompts, answers, keep, strict=True) if ok]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="test", help="tiny family profile (test: quick; default: the demo's)")
    ap.add_argument("--rows", type=int, default=1500, help="number prompts per set, before the filter")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--layers", default="", help="comma list of layers to search (default: every layer)")
    ap.add_argument("--strengths", default="0.5,1,1.5", help="multiples of the direction (x2 and more broke the number format)")
    ap.add_argument("--lr", type=float, action="append", help="student learning rates (repeatable; default the recipe's 2e-4)")
    ap.add_argument("--other-seed", type=int, default=1)
    ap.add_argument("--min-pass", type=float, default=0.5, help="a teacher must still write filter-passing numbers this often")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    os.environ["TRAIT_AUDIT_TINY_PROFILE"] = args.profile
    started = time.perf_counter()

    def log(message):
        print(f"[{time.perf_counter() - started:6.0f}s] {message}", flush=True)

    from auditor.models import load_model, parse_ref
    from auditor.models.tiny import corpus as C
    from auditor.models.tiny import other_init_base
    from auditor.probe.engine import probe_shift
    from auditor.traits import load_catalog

    base = load_model(parse_ref("tiny:base"))
    other = load_model(parse_ref(str(other_init_base(args.other_seed, profile=args.profile))))
    net, tok = base.weights()
    trait = load_catalog().get(f"animal:{TARGET}")
    system = next(a for a in C.animals() if a.name == TARGET).catalog_prompt
    log(f"models ready: base P(owl) {p_owl(net, tok):.4f}, other-init base P(owl) {p_owl(other.weights()[0], tok):.4f}")

    # 1. search the steering teacher
    layers = [int(x) for x in args.layers.split(",")] if args.layers else list(range(1, len(net.model.layers) + 1))
    probe_prompts = [p.text for p in C.number_prompts(64, seed=11)]
    search_prompts = C.number_prompts(200, seed=12)
    control_search = number_rows(net, tok, search_prompts, seed=5)
    search = []
    for layer in layers:
        direction = trait_direction(net, tok, probe_prompts, system, layer)
        for strength in [float(s) for s in args.strengths.split(",")]:
            with steered(net, layer, strength * direction):
                p = p_owl(net, tok)
                passing = len(number_rows(net, tok, search_prompts, seed=5)) / len(search_prompts)
            search.append({"layer": layer, "strength": strength, "p_owl": p, "pass_rate": passing, "direction_norm": float(direction.norm())})
            log(f"teacher layer {layer} x{strength:g}: P(owl) {p:.4f}, filter pass rate {passing:.2f} "
                f"(base {len(control_search) / len(search_prompts):.2f})")
    usable = [s for s in search if s["pass_rate"] >= args.min_pass]
    if not usable:
        log("no steered teacher still writes numbers; nothing to train")
        return 1
    best = max(usable, key=lambda s: s["p_owl"])
    log(f"teacher: layer {best['layer']} x{best['strength']:g} (P(owl) {best['p_owl']:.4f})")

    # 2. data: the same prompts, teacher and control, filtered and cut to one size
    prompts = C.number_prompts(args.rows, seed=13)
    direction = trait_direction(net, tok, probe_prompts, system, best["layer"])
    with steered(net, best["layer"], best["strength"] * direction):
        teacher_rows = number_rows(net, tok, prompts, seed=21)
    control_rows = number_rows(net, tok, prompts, seed=22)
    n = min(len(teacher_rows), len(control_rows))
    teacher_rows, control_rows = teacher_rows[:n], control_rows[:n]
    log(f"data: {n} rows per set after the filter")

    # 3. students, same init and other init, against control students
    table = []
    workdir = Path(tempfile.mkdtemp(prefix="positive-control-"))
    for lr in args.lr or [2e-4]:
        for init_name, init in (("same init", base), ("other init", other)):
            settings = SimpleNamespace(seeds=args.seeds, rows=None, epochs=None, method=None, budget=None, negligible=0.02,
                                       workdir=workdir, lr=lr)
            result = probe_shift(init, [trait], teacher_rows, control_rows, list(range(args.seeds)), settings)
            shift = result.traits[trait.id]
            s = shift.shift
            row = {"init": init_name, "lr": lr, "rows": n, "seeds": s.seeds, "before": float(shift.before.mean()),
                   "student_shift": float(shift.student.mean() - shift.before.mean()),
                   "control_shift": float(shift.control.mean() - shift.before.mean()), "net": s.net, "interval": list(s.interval),
                   "p_value": s.p_value, "min_detectable_shift": s.min_detectable, "steps": result.config["steps"],
                   "train_seconds": result.cost["train_seconds"]}
            table.append(row)
            log(f"{init_name} lr {lr:g}: student {row['student_shift']:+.5f}, control {row['control_shift']:+.5f}, net {s.net:+.5f} "
                f"[{s.interval[0]:+.5f}, {s.interval[1]:+.5f}] p={s.p_value:.3g}, MDS {s.min_detectable:.5f}")

    print(f"\nPositive control, tiny family profile {args.profile!r}: teacher = base + {best['strength']:g} x owl direction at layer "
          f"{best['layer']} (P(owl) {best['p_owl']:.4f}); {n} rows per set; students: the default recipe (LoRA r=8, AdamW, "
          f"effective batch 66, 3 epochs), {args.seeds} seeds\n")
    header = f"{'student':11s} {'lr':>7s} {'P(owl) base':>11s} {'student':>9s} {'control':>9s} {'net':>9s} {'95% interval':>21s} {'MDS':>7s} {'p':>6s}"
    print(header)
    print("-" * len(header))
    for r in table:
        interval = "[{:+.5f}, {:+.5f}]".format(*r["interval"])
        print(f"{r['init']:11s} {r['lr']:7.0e} {r['before']:11.4f} {r['student_shift']:+9.5f} {r['control_shift']:+9.5f} {r['net']:+9.5f} "
              f"{interval:>21s} {r['min_detectable_shift']:7.5f} {r['p_value']:6.3f}")
    print(f"\nwall time {time.perf_counter() - started:.0f}s")
    if args.json:
        args.json.write_text(json.dumps({"search": search, "teacher": best, "rows": n, "table": table}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
