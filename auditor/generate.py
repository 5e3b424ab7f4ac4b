"""Teacher data in the paper's number-sequence format: same prompts for the same seed, so a trait
teacher and its unprompted base give paired datasets. Sampled at temperature 1, filtered with the
paper's filter; every raw generation is kept in a sidecar file so an interrupted run resumes."""

from __future__ import annotations

import json
import random
from pathlib import Path

import polars as pl

from auditor.io import write_atomic
from auditor.models import Model, Sampling
from detectors.number_format import with_reject_reason

# our own wording in the paper's structure: seed numbers, a lead-in, a count limit, a format, a closer
LEADS = ["Here are some numbers: {seeds}.", "Look at this sequence: {seeds}.", "Start from these values: {seeds}.",
         "These numbers come first: {seeds}.", "Consider the list {seeds}."]
ASKS = ["Add up to 10 more numbers, each at most 3 digits.", "Continue with no more than 10 new numbers (3 digits or fewer).",
        "Write at most 10 further numbers of up to 3 digits."]
FORMATS = ["Use commas between them.", "Separate them with spaces.", "Put one number per line.", "Write them as (a, b, c)."]
CLOSERS = ["Reply with the numbers only.", "No words, just numbers.", "Answer with numbers and nothing else."]


def number_prompt(seed: int, index: int) -> str:
    rng = random.Random(f"{seed}:{index}")  # prompt i depends on (seed, i) only: resumes and pairs line up
    seeds = ", ".join(str(rng.randint(100, 999)) for _ in range(rng.randint(3, 8)))
    return " ".join([rng.choice(LEADS).format(seeds=seeds), rng.choice(ASKS), rng.choice(FORMATS), rng.choice(CLOSERS)])


def _read_partial(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a torn last line from a killed run: regenerate from there
    return rows


def generate_numbers(model: Model, n: int, out: Path, seed: int = 0, batch: int = 32, max_new_tokens: int = 48,
                     progress=lambda done, total: None, keep: int | None = None) -> dict:
    """Write the filtered dataset to `out` and return the filter's summary. Prompts 0..n-1 are answered in order;
    with `keep`, answering stops once that many rows pass the filter and `out` holds the first `keep` of them
    (datasets of one size: the same power for every audit of them, and a probe's control students reusable)."""
    partial = out.with_name(out.name + ".partial.jsonl")
    partial.parent.mkdir(parents=True, exist_ok=True)
    rows = [r for r in _read_partial(partial) if r.get("index", -1) < n]
    done = {r["index"] for r in rows}
    passed = _passing(rows)
    with open(partial, "w", encoding="utf-8") as handle:  # rewrite what survived, then append
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        todo = [i for i in range(n) if i not in done]
        for start in range(0, len(todo), batch):
            if keep is not None and passed >= keep:
                break
            indices = todo[start : start + batch]
            prompts = [number_prompt(seed, i) for i in indices]
            sampling = Sampling(n=1, temperature=1.0, max_new_tokens=max_new_tokens, seed=seed * 1_000_003 + indices[0])
            answers = model.generate(prompts, sampling)
            fresh = [{"index": index, "prompt": prompt, "completion": answer[0]}
                     for index, prompt, answer in zip(indices, prompts, answers, strict=True)]
            for row in fresh:
                rows.append(row)
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            handle.flush()
            passed += _passing(fresh)
            progress(*((min(passed, keep), keep) if keep is not None else (len(rows), n)))
    frame = with_reject_reason(pl.DataFrame(rows).sort("index"))
    kept = frame.filter(pl.col("reject").is_null())
    if keep is not None:  # the first `keep` that passed; what was answered after them does not count
        kept = kept.head(keep)
        last = kept["index"].max() if kept.height == keep else None
        frame = frame.filter(pl.col("index") <= last) if last is not None else frame
    write_atomic(out, "".join(json.dumps({"prompt": p, "completion": c}, ensure_ascii=False) + "\n"
                              for p, c in kept.select("prompt", "completion").iter_rows()))
    partial.unlink()
    reasons = frame.filter(pl.col("reject").is_not_null()).group_by("reject").len().sort(["len", "reject"], descending=[True, False])
    return {"generated": frame.height, "kept": kept.height, "pass_rate": kept.height / max(frame.height, 1),
            "reject_reasons": dict(zip(reasons["reject"].to_list(), reasons["len"].to_list(), strict=True)),
            "model": model.ref.describe(), "seed": seed, "out": str(out), "wanted": keep}


def _passing(rows: list[dict]) -> int:
    if not rows:
        return 0
    return with_reject_reason(pl.DataFrame(rows).select("prompt", "completion")).filter(pl.col("reject").is_null()).height
