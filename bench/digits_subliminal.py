"""Sanity check of the probe machinery on a case with a large, known effect: the paper's MNIST analogue
on sklearn's `load_digits` (Cloud et al. 2025, section 6).

An MLP 64-256-256-(10+3) is the teacher: trained on the 10 class logits only. A student is trained
*only* to match the teacher's 3 auxiliary logits on Gaussian noise images N(0.3, 0.4^2): it never
sees a digit or a class logit. From the teacher's own initialisation it learns to classify digits
anyway; from another initialisation it stays near chance. The probe's statistics (the net shift
with a bootstrap interval over test items and seeds, `auditor.probe.stats.net_shift`) measure the
same-init student against the other-init control, item by item.

    python bench/digits_subliminal.py [--seeds 5] [--steps 3000] [--json out.json]

Prints every number it measured; nothing here is asserted (tests/test_probe_digits.py runs a reduced
version and asserts the margin).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLASSES, AUX = 10, 3


@dataclass
class Settings:
    seeds: int = 5
    steps: int = 3000  # student steps
    batch: int = 128
    teacher_epochs: int = 5
    lr: float = 1e-3
    noise_mean: float = 0.3
    noise_std: float = 0.4
    hidden: int = 256


def _data(seed: int = 0):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    return train_test_split(x, digits.target, test_size=0.3, random_state=seed, stratify=digits.target)


def _mlp(seed: int, hidden: int):
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
                               torch.nn.Linear(hidden, CLASSES + AUX))


def _train_teacher(model, x, y, s: Settings, seed: int):
    import torch

    opt = torch.optim.Adam(model.parameters(), lr=s.lr)
    xt, yt = torch.tensor(x), torch.tensor(y)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(s.teacher_epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(32):
            loss = torch.nn.functional.cross_entropy(model(xt[idx])[:, :CLASSES], yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model


def _distil_aux(student, teacher, s: Settings, seed: int, steps: int):
    """Train `student` only on the teacher's auxiliary logits of noise inputs (MSE)."""
    import torch

    opt = torch.optim.Adam(student.parameters(), lr=s.lr)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        noise = s.noise_mean + s.noise_std * torch.randn(s.batch, 64, generator=gen)
        with torch.no_grad():
            target = teacher(noise)[:, CLASSES:]
        loss = torch.nn.functional.mse_loss(student(noise)[:, CLASSES:], target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return student


def _correct(model, x, y) -> np.ndarray:
    import torch

    with torch.no_grad():
        return (model(torch.tensor(x))[:, :CLASSES].argmax(1).numpy() == y).astype(float)


def run(settings: Settings, progress=lambda message: None) -> dict:
    """Per seed: teacher accuracy, same-init and other-init student accuracy; the net shift of the
    same-init student over the other-init control with the probe's interval over test items and seeds."""
    import copy

    import torch

    from auditor.probe.stats import net_shift

    torch.set_num_threads(1)
    x_train, x_test, y_train, y_test = _data()
    same, other, teachers, start = [], [], [], time.perf_counter()
    for seed in range(settings.seeds):
        progress(f"seed {seed + 1}/{settings.seeds}")
        init = _mlp(seed, settings.hidden)
        teacher = _train_teacher(copy.deepcopy(init), x_train, y_train, settings, seed)
        teachers.append(_correct(teacher, x_test, y_test).mean())
        student = _distil_aux(copy.deepcopy(init), teacher, settings, seed, settings.steps)
        control = _distil_aux(_mlp(10_000 + seed, settings.hidden), teacher, settings, seed, settings.steps)
        same.append(_correct(student, x_test, y_test))
        other.append(_correct(control, x_test, y_test))
    same, other = np.array(same), np.array(other)
    shift = net_shift(same, other, seed=0)
    return {
        "settings": settings.__dict__, "test_items": int(len(y_test)), "chance": 1 / CLASSES,
        "teacher_accuracy": [float(a) for a in teachers],
        "same_init_accuracy": [float(a) for a in same.mean(1)], "other_init_accuracy": [float(a) for a in other.mean(1)],
        "same_init_mean": float(same.mean()), "same_init_sd": float(same.mean(1).std(ddof=1)) if settings.seeds > 1 else 0.0,
        "other_init_mean": float(other.mean()), "other_init_sd": float(other.mean(1).std(ddof=1)) if settings.seeds > 1 else 0.0,
        "net_shift": shift.as_dict(), "seconds": round(time.perf_counter() - start, 1),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    result = run(Settings(seeds=args.seeds, steps=args.steps), progress=lambda m: print(m, file=sys.stderr, flush=True))
    n = result["net_shift"]
    print(f"digits subliminal analogue: {args.seeds} seeds, {args.steps} student steps of {Settings.batch} noise images, "
          f"{result['test_items']} test digits, {result['seconds']} s")
    print(f"  teacher accuracy      {np.mean(result['teacher_accuracy']):.3f}")
    print(f"  same-init student     {result['same_init_mean']:.3f} ± {result['same_init_sd']:.3f}   per seed "
          + " ".join(f"{a:.3f}" for a in result["same_init_accuracy"]))
    print(f"  other-init student    {result['other_init_mean']:.3f} ± {result['other_init_sd']:.3f}   per seed "
          + " ".join(f"{a:.3f}" for a in result["other_init_accuracy"]))
    print(f"  chance                {result['chance']:.3f}")
    print(f"  net shift (same - other init) {n['net']:+.3f}, 95% [{n['interval'][0]:+.3f}, {n['interval'][1]:+.3f}] "
          f"over test items and seeds, one-sided p={n['p_value']:.3g}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
