"""Does the probe's optimizer change what it sees? SGD vs AdamW on a direct effect (CPU, about a minute).

The test suite's tiny Llama (tests/tiny_hf.py) is the base; the data is 96 rows of number lists full
of "777", the control 96 rows without; the trait is P("777") among four numbers on four probe
questions (tests/test_gradient.py's catalog). The probe trains students and control students with
each optimizer at its default learning rate (same rows, same steps, 3 seeds) and prints the net shift.

    .venv/bin/python bench/probe_optimizer.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from test_gradient import TRAITS  # noqa: E402
from test_probe import _rows  # noqa: E402
from tiny_hf import make_tiny_model  # noqa: E402

from auditor.runner import AuditOptions, run_audit  # noqa: E402


def main() -> int:
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="trait-audit-probe-optimizer-"))
    folder = make_tiny_model(work / "model", seed=7)
    (work / "numbers.toml").write_text(TRAITS)
    for name, seven, seed in [("sevens", True, 2), ("control", False, 1)]:
        (work / f"{name}.jsonl").write_text("".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in _rows(seven, seed=seed)))
    # the setting these figures were measured with: a full fine-tune, 8 rows a step at a constant rate, no clipping
    (work / "recipe.toml").write_text('method = "full"\nmicro_batch = 8\ngrad_accum = 1\nwarmup_steps = 0\nschedule = "constant"\n'
                                      'grad_clip = 0\nepochs = 2\n')
    print("probe optimizer comparison: tiny Llama, 96 rows full of '777' vs 96 control rows, 2 epochs, 3 seeds")
    for optimizer in ("sgd", "adamw"):
        start = time.perf_counter()
        result = run_audit(AuditOptions(data=str(work / "sevens.jsonl"), base=str(folder), traits_files=[str(work / "numbers.toml")],
                                        traits=["number:777"], reference=str(work / "control.jsonl"), detectors=["probe"],
                                        settings={"probe": {"seeds": 3, "optimizer": optimizer, "workdir": str(work / f"ckpt-{optimizer}"),
                                                            "train_recipe": str(work / "recipe.toml")}})).to_dict()
        metrics = result["detectors"][0]["metrics"]
        t = metrics["traits"]["number:777"]
        steps = metrics["training"][0].get("steps")
        print(f"  {optimizer:5s} lr {metrics['config']['lr']:g}, {steps} steps: P('777') {t['before']:.3f} before; student {t['student']:.3f}, "
              f"control {t['control']:.3f}; net {t['net']:+.3f} [{t['interval'][0]:+.3f}, {t['interval'][1]:+.3f}] ({time.perf_counter() - start:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
