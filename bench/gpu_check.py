"""The GPU check (`make gpu-check`): the tiny family's main job on CUDA and on CPU must agree, then the throughput bench.

1. tiny:owl writes number sequences and tiny:base the control on the same prompts (on CPU, so the data is the same
   for every run below).
2. `audit OWL_DATA --teacher tiny:owl --base tiny:base --reference CONTROL` with the white-box detectors runs three
   times: --device cpu --dtype fp32 (the reference), --device cuda --dtype fp32 and --device cuda --dtype auto (bf16).
3. Each CUDA run must give the same picked traits and verdicts as the CPU run, and every detector's per-trait score
   (a standardised effect) within the tolerance: 0.01 in fp32 (float sums in another order), 0.15 in bf16 (about
   three significant digits in the weights and activations).
4. bench/throughput.py --device cuda: likelihood scoring and probe training against bare loops, on SmolLM2-135M,
   Qwen2.5-7B and Qwen2.5-14B shapes with random weights.

Exit 0 when everything agrees, 1 when something differs (the lines say what), 2 on a machine without CUDA.

    python bench/gpu_check.py                   # default tiny family (the demo's), 300 prompts
    python bench/gpu_check.py --profile test --skip-throughput
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOLERANCE = {"fp32": 0.01, "bf16": 0.15}
DETECTORS = ["lexical", "likelihood", "gradient", "divergence"]


def main_job(data: Path, control: Path, device: str, dtype: str) -> dict:
    from auditor.runner import AuditOptions, run_audit

    opts = AuditOptions(data=str(data), teacher="tiny:owl", base="tiny:base", reference=str(control), detectors=DETECTORS, fail_on="never",
                        device=device, dtype=dtype)
    started = time.perf_counter()
    result = run_audit(opts)
    result["_seconds"] = time.perf_counter() - started
    return result


def scores(result: dict) -> dict[tuple[str, str], float]:
    return {(t["id"], e["detector"]): e["score"] for t in result["traits"] for e in t["evidence"] if e.get("score") is not None}


def compare(name: str, reference: dict, other: dict, tolerance: float) -> list[str]:
    problems = []
    if reference["profile"]["picked"] != other["profile"]["picked"]:
        problems.append(f"{name}: profiling picked {other['profile']['picked']}, CPU picked {reference['profile']['picked']}")
    verdicts = {t["id"]: t["verdict"] for t in reference["traits"]}
    for trait in other["traits"]:
        if trait["verdict"] != verdicts[trait["id"]]:
            problems.append(f"{name}: {trait['id']} is {trait['verdict']}, on CPU {verdicts[trait['id']]}")
    status = {d["name"]: d["status"] for d in reference["detectors"]}
    for det in other["detectors"]:
        if det["status"] != status[det["name"]]:
            problems.append(f"{name}: detector {det['name']} {det['status']}, on CPU {status[det['name']]}")
    base, mine = scores(reference), scores(other)
    for key, value in base.items():
        if key in mine and abs(mine[key] - value) > tolerance:
            problems.append(f"{name}: {key[1]} score for {key[0]} is {mine[key]:+.4f}, on CPU {value:+.4f} (tolerance {tolerance})")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="default", help="tiny family profile (default: the demo's)")
    parser.add_argument("--n", type=int, default=300, help="prompts each tiny model answers")
    parser.add_argument("--work", type=Path, default=ROOT / "reports" / "gpu-check", help="data and report folder")
    parser.add_argument("--skip-throughput", action="store_true", help="only the CPU/CUDA agreement")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print(f"bench/gpu_check.py needs a CUDA GPU and torch.cuda.is_available() is False here (torch {torch.__version__}, "
              f"CUDA build: {torch.version.cuda or 'none'}). Nothing was checked; the CPU test suite covers CPU.", file=sys.stderr)
        return 2
    os.environ["TRAIT_AUDIT_TINY_PROFILE"] = args.profile
    from auditor.generate import generate_numbers
    from auditor.models import Placement, load_model, parse_ref

    print(f"GPU check on {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}, torch {torch.__version__}, tiny profile {args.profile}",
          flush=True)
    args.work.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in ("owl", "base"):
        paths[name] = args.work / f"{name}_numbers.jsonl"
        if not paths[name].exists():
            summary = generate_numbers(load_model(parse_ref(f"tiny:{name}"), Placement("cpu", "fp32")), args.n, paths[name], seed=0)
            print(f"tiny:{name} wrote {summary['kept']} rows on CPU", flush=True)
    runs = {}
    for device, dtype in (("cpu", "fp32"), ("cuda", "fp32"), ("cuda", "auto")):
        runs[(device, dtype)] = main_job(paths["owl"], paths["base"], device, dtype)
        result = runs[(device, dtype)]
        verdicts = ", ".join(f"{t['id']}={t['verdict']}" for t in result["traits"] if t["evidence"] and t["verdict"] != "inconclusive")
        print(f"main job --device {device} --dtype {dtype}: {result['_seconds']:.1f} s; picked {result['profile']['picked']}; {verdicts or 'no verdict'}; "
              + ", ".join(f"{d['name']} {d['duration_s']:.1f} s" for d in result["detectors"]), flush=True)
    problems = compare("cuda fp32", runs[("cpu", "fp32")], runs[("cuda", "fp32")], TOLERANCE["fp32"])
    problems += compare("cuda bf16", runs[("cpu", "fp32")], runs[("cuda", "auto")], TOLERANCE["bf16"])
    worst = {name: max((abs(scores(runs[key]).get(k, v) - v) for k, v in scores(runs[("cpu", "fp32")]).items()), default=0.0)
             for name, key in (("fp32", ("cuda", "fp32")), ("bf16", ("cuda", "auto")))}
    print(f"largest score difference from CPU: fp32 {worst['fp32']:.2e} (tolerance {TOLERANCE['fp32']}), bf16 {worst['bf16']:.2e} "
          f"(tolerance {TOLERANCE['bf16']})")
    for line in problems:
        print("DIFFERS:", line)
    print("CPU and CUDA agree: same verdicts, scores within tolerance" if not problems else f"{len(problems)} differences", flush=True)
    code = 1 if problems else 0
    if not args.skip_throughput:
        bench = subprocess.run([sys.executable, str(ROOT / "bench" / "throughput.py"), "--device", "cuda"], cwd=ROOT)
        code = code or (1 if bench.returncode else 0)
    return code


if __name__ == "__main__":
    sys.exit(main())
