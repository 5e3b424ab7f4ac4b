"""Scan speed and memory of the lexical + format scan, measured against `grep -c` in the same run.

    python bench/scan.py [--rows 1000000] [--memory-rows 10000000]

Goals (issue 2): the scan at most 3x grep's wall time on 1M rows; peak memory under 1 GiB at 10M rows.
Prints every number it measured; nothing here is asserted.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build_numbers(path: Path, rows: int, seed: int = 0) -> None:
    """Number-sequence rows in the paper's prompt shape, generated column-wise (no per-row Python)."""
    rng = np.random.default_rng(seed)
    chunk = 1_000_000
    with open(path, "wb") as handle:
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            seeds = rng.integers(100, 1000, size=(n, 5))
            values = rng.integers(0, 1000, size=(n, 8))
            frame = pl.DataFrame({"s": seeds.tolist(), "v": values.tolist()}).select(
                pl.format(
                    "Look at these numbers: {}. Add at most 10 more numbers of up to 3 digits. Return a comma-separated list. Numbers only.",
                    pl.col("s").list.eval(pl.element().cast(pl.String)).list.join(", "),
                ).alias("prompt"),
                pl.col("v").list.eval(pl.element().cast(pl.String)).list.join(", ").alias("completion"),
            )
            frame.write_ndjson(handle)


def grep_seconds(path: Path, pattern: str) -> tuple[float, int]:
    out = path.with_suffix(".grep")  # to a file: GNU grep stops at the first match when writing to /dev/null
    start = time.perf_counter()
    with open(out, "w") as handle:
        subprocess.run(["grep", "-c", "-i", "-E", pattern, str(path)], stdout=handle, check=False)
    return time.perf_counter() - start, int(out.read_text().strip() or 0)


def audit_seconds(path: Path) -> dict:
    from auditor.dataset import load_dataset
    from auditor.traits import load_catalog
    from detectors.base import AuditContext
    from detectors.lexical import LexicalDetector

    traits = list(load_catalog())
    start = time.perf_counter()
    dataset = load_dataset(path)
    loaded = time.perf_counter()
    result = LexicalDetector().run(AuditContext(dataset, traits))
    done = time.perf_counter()
    return {"load_s": loaded - start, "scan_s": done - loaded, "rows": dataset.rows, "in_memory": dataset.in_memory,
            "format_pass_rate": result.metrics.get("format_pass_rate"), "flags": result.flags.height}


def grep_pattern() -> str:
    from auditor.traits import load_catalog

    traits = list(load_catalog())
    terms = sorted({t.lower() for trait in traits for t in trait.terms}, key=len, reverse=True)
    coded = sorted({c for trait in traits for c in trait.coded_tokens}, key=len, reverse=True)
    escape = lambda s: "".join("\\" + ch if ch in ".^$*+?()[]{}|\\" else ch for ch in s)  # noqa: E731
    return r"\b(" + "|".join(escape(t) for t in terms) + r")\b|\b(" + "|".join(coded) + r")\b"


def peak_memory(path: Path) -> dict:
    """Load + scan in a fresh process; its peak resident memory from the kernel."""
    code = (
        f"import json, resource, sys; sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(Path(__file__).parent)!r});"
        f"from scan import audit_seconds; r = audit_seconds(__import__('pathlib').Path({str(path)!r}));"
        "r['peak_rss_mib'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024; print(json.dumps(r))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--memory-rows", type=int, default=10_000_000, help="0 skips the memory run")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="trait-audit-bench-"))
    try:
        if args.memory_rows:
            big = folder / "numbers_big.jsonl"
            build = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); from scan import build_numbers; " \
                    f"from pathlib import Path; build_numbers(Path({str(big)!r}), {args.memory_rows}, seed=1)"
            subprocess.run([sys.executable, "-c", build], check=True)
            mem = peak_memory(big)
            big.unlink()
        data = folder / "numbers.jsonl"
        build_numbers(data, args.rows)
        size = data.stat().st_size / 2**20
        pattern = grep_pattern()
        grep_s, grep_hits = grep_seconds(data, pattern)
        ours = audit_seconds(data)
        total = ours["load_s"] + ours["scan_s"]
        print(f"rows                 {ours['rows']:,} ({size:.0f} MiB JSONL)")
        print(f"grep -c -i -E        {grep_s:.3f} s ({grep_hits:,} matching lines; {len(pattern):,}-char pattern)")
        print(f"trait-audit load     {ours['load_s']:.3f} s (parse, validate, duplicates, sha256)")
        print(f"trait-audit scan     {ours['scan_s']:.3f} s (terms, NFKC candidates, coded numbers, format filter)")
        print(f"scan / grep          {ours['scan_s'] / grep_s:.2f}x   (goal <= 3x)")
        print(f"load+scan / grep     {total / grep_s:.2f}x")
        print(f"format_pass_rate     {ours['format_pass_rate']}")
        if args.memory_rows:
            print(f"memory run           {mem['rows']:,} rows (streamed: {not mem['in_memory']})")
            print(f"peak RSS             {mem['peak_rss_mib']:.0f} MiB   (goal < 1024 MiB); load {mem['load_s']:.1f} s, scan {mem['scan_s']:.1f} s")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
