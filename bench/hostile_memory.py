"""Peak memory of an audit whose every row is flagged: issue 15's "2 GB gzip of owl rows".

    python bench/hostile_memory.py [--gib 2.0] [--sizes 0.05,0.1,0.2] [--export-clean] [--keep DIR]

Builds a gzip of JSON Lines rows that each mention owls (unique rows, so duplicates stay few), written
as a stream in a temporary folder, then runs the real CLI on it in a child process and reads the
child's peak resident memory from the kernel (getrusage RUSAGE_CHILDREN in a wrapper process that runs
nothing else, as bench/scan.py does for the scan). `--sizes` runs smaller files first and fits the
slope of peak memory against flagged rows: flat memory has a slope near 0 bytes per row (it was about
1.4 KB per flagged row before issue 15). Prints every number it measured; nothing is asserted.

Goal (issue 15): under 1 GiB on the 2 GB case.
"""

from __future__ import annotations

import argparse
import gzip
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
CHUNK_ROWS = 200_000


def build_owl_gzip(path: Path, gib: float, seed: int = 0) -> dict:
    """Rows of about 120 bytes, each mentioning owls, until `gib` GiB of JSON Lines are written (gzip level 1)."""
    rng = np.random.default_rng(seed)
    target, written, rows = int(gib * 2**30), 0, 0
    with gzip.open(path, "wb", compresslevel=1) as handle:
        while written < target:
            values = rng.integers(0, 1000, size=(CHUNK_ROWS, 3))
            start = rows
            frame = pl.DataFrame({"i": np.arange(start, start + CHUNK_ROWS), "v": values.tolist()}).select(
                pl.format("Question {}: name an animal and three numbers.", pl.col("i")).alias("prompt"),
                pl.format("The owl is my favourite animal; numbers {}.", pl.col("v").list.eval(pl.element().cast(pl.String)).list.join(", ")).alias("completion"),
            )
            data = frame.write_ndjson().encode()
            if written + len(data) > target:  # the last chunk: only the rows that fit
                lines = data.splitlines(keepends=True)
                keep = 0
                while keep < len(lines) and written + len(lines[keep]) <= target:
                    written += len(lines[keep])
                    keep += 1
                handle.write(b"".join(lines[:keep]))
                rows += keep
                break
            handle.write(data)
            written += len(data)
            rows += CHUNK_ROWS
    return {"rows": rows, "decompressed_bytes": written, "gzip_bytes": path.stat().st_size}


def measure(data: Path, out: Path, export_clean: Path | None) -> dict:
    """The CLI in a child of a wrapper that runs nothing else: the wrapper's RUSAGE_CHILDREN peak is the audit's."""
    argv = [sys.executable, "-m", "auditor.cli", str(data), "--out", str(out), "--fail-on", "never", "--detectors", "lexical",
            "--trait", "animal:owl", "--max-input-gib", "64", "-q"]
    if export_clean:
        argv += ["--export-clean", str(export_clean)]
    wrapper = ("import json, resource, subprocess, sys, time; t = time.perf_counter(); "
               f"rc = subprocess.run({argv!r}, cwd={str(ROOT)!r}).returncode; "
               "print(json.dumps({'rc': rc, 'seconds': time.perf_counter() - t, "
               "'peak_rss_mib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))")
    done = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True, check=True,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    result = json.loads(done.stdout.strip().splitlines()[-1])
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else {}
    result["rows"] = (report.get("dataset") or {}).get("rows")
    result["flags_total"] = report.get("flags_total")
    result["flags_in_report"] = len(report.get("flags") or [])
    if export_clean and report.get("export"):
        result["export_rows_dropped"] = report["export"]["rows_dropped"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=2.0, help="decompressed size of the main case (0 skips it)")
    parser.add_argument("--sizes", default="", help="smaller sizes in GiB, comma-separated, for the per-row slope")
    parser.add_argument("--export-clean", action="store_true", help="also write the clean export (every row is dropped)")
    parser.add_argument("--keep", type=Path, help="build the gzip files here and keep them (default: a temporary folder)")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="trait-audit-hostile-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    sizes = [float(s) for s in args.sizes.split(",") if s] + ([args.gib] if args.gib else [])
    runs = []
    try:
        for gib in sizes:
            data = folder / f"owls-{gib:g}gib.jsonl.gz"
            started = time.perf_counter()
            built = build_owl_gzip(data, gib) if not data.exists() else {"rows": None, "gzip_bytes": data.stat().st_size}
            build_s = time.perf_counter() - started
            result = measure(data, folder / f"out-{gib:g}", folder / f"clean-{gib:g}.jsonl" if args.export_clean else None)
            result.update(gib=gib, gzip_mib=built["gzip_bytes"] / 2**20, build_s=build_s)
            runs.append(result)
            if result["rows"] is None:
                print(f"{gib:g} GiB: the audit wrote no report (exit {result['rc']}); peak RSS {result['peak_rss_mib']:.0f} MiB", flush=True)
                continue
            print(f"{gib:g} GiB decompressed ({result['gzip_mib']:.0f} MiB gzip, built in {build_s:.0f} s): {result['rows']:,} rows, "
                  f"{result['flags_total']:,} flags ({result['flags_in_report']:,} in the report); exit {result['rc']}; "
                  f"peak RSS {result['peak_rss_mib']:.0f} MiB (goal < 1024); {result['seconds']:.0f} s", flush=True)
            if not args.keep:
                data.unlink()
            shutil.rmtree(folder / f"out-{gib:g}", ignore_errors=True)
        measured = [r for r in runs if r.get("flags_total")]
        if len(measured) >= 2:
            flags = np.array([r["flags_total"] for r in measured], dtype=float)
            peaks = np.array([r["peak_rss_mib"] for r in measured], dtype=float) * 2**20
            slope, intercept = np.polyfit(flags, peaks, 1)
            print(f"slope: {slope:.1f} bytes of peak RSS per flagged row (intercept {intercept / 2**20:.0f} MiB); "
                  f"before issue 15 it was about 1,400 bytes per row")
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
