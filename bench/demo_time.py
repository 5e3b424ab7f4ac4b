"""How long the first five minutes take: `make demo` on an empty cache, timed line by line.

Runs `make demo` (after `make install`, timed apart) with a fresh TRAIT_AUDIT_CACHE and a fresh
output folder, reads its merged stdout/stderr as it comes, and prints: the seconds to the first line, the
seconds each command took (make echoes a command before running it), the total, and the load average before
and after (the goal, under 3 minutes, is for 2 idle cores: a load near 0 at the start says they were).

    python bench/demo_time.py [--keep-output DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keep-output", type=Path, help="write the demo's reports here (default: a temporary folder, removed)")
    args = ap.parse_args(argv)
    began = time.monotonic()
    if subprocess.run(["make", "-s", "install"], cwd=ROOT).returncode != 0:
        return 2
    installed = time.monotonic() - began  # the whole install on a fresh clone; near 0 when .venv is current
    work = Path(tempfile.mkdtemp(prefix="trait-audit-demo-time-"))
    out = args.keep_output or work / "demo"
    env = {**os.environ, "TRAIT_AUDIT_CACHE": str(work / "cache"), "TRAIT_AUDIT_PROGRESS": "plain"}
    load_before = os.getloadavg()
    started = time.monotonic()
    process = subprocess.Popen(["make", "demo", f"DEMO={out}"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, bufsize=1)
    first, commands, current, waiting, latencies = None, [], None, None, []
    for line in process.stdout:
        now = time.monotonic() - started
        first = now if first is None else first
        print(f"{now:7.1f}s  {line.rstrip()}")
        if line.startswith(".venv/bin/audit") or "/bin/audit " in line.split("#")[0][:80]:
            if current:
                commands.append((current[0], now - current[1]))
            current = waiting = (line.split("--out")[0].strip()[:100], now)
        elif waiting is not None:  # the command's own first line (make's echo of it came just before)
            latencies.append(now - waiting[1])
            waiting = None
    process.wait()
    total = time.monotonic() - started
    if current:
        commands.append((current[0], total - current[1]))
    print(f"\nmake demo exited {process.returncode}; {os.cpu_count()} CPUs, load average {load_before[0]:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after")
    for command, seconds in commands:
        print(f"{seconds:7.1f}s  {command}")
    print(f"first line after {first:.2f} s (make's echo); each command's own first line after at most {max(latencies, default=0):.2f} s "
          "(goal < 2 s)")
    print(f"total {total:.1f} s ({total / 60:.2f} min; goal < 3 min on 2 idle cores); make install before it: {installed:.1f} s")
    if args.keep_output is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if process.returncode == 0 else 3


if __name__ == "__main__":
    sys.exit(main())
