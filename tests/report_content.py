"""Compare two report.json files by content, ignoring run metadata.

    python tests/report_content.py BEFORE/report.json AFTER/report.json

Run metadata differs between any two runs of the same audit: `created`, `run.duration_s`, `run.argv`, and each
detector's `duration_s`, and the probe's timings (`seconds` and `cost.train_seconds`, and each training run's `seconds`
and `tokens_per_s`). Everything else must match; the script prints each path
that differs and exits 1, or says the two are the same and exits 0. Key order is compared too (the JSON text is
what other tools read).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

METADATA = {("created",), ("run", "duration_s"), ("run", "argv")}
DETECTOR_METADATA = {"duration_s"}
PROBE_METADATA = {"seconds"}
TRAINING_METADATA = {"seconds", "tokens_per_s"}


def content(result: dict) -> dict:
    """A copy of `result` without run metadata."""
    out = json.loads(json.dumps(result))
    for path in METADATA:
        node = out
        for key in path[:-1]:
            node = node.get(key) or {}
        node.pop(path[-1], None)
    for det in out.get("detectors") or ():
        for key in DETECTOR_METADATA:
            det.pop(key, None)
        if det.get("name") == "probe":
            metrics = det.get("metrics") or {}
            for key in PROBE_METADATA:
                metrics.pop(key, None)
            (det.get("cost") or {}).pop("train_seconds", None)
            for run in metrics.get("training") or ():
                for key in TRAINING_METADATA:
                    run.pop(key, None)
    return out


def differences(a: Any, b: Any, where: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        found = [] if list(a) == list(b) or set(a) != set(b) else [f"{where or '/'}: key order {list(a)} != {list(b)}"]
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                found.append(f"{where}/{key}: only in {'after' if key not in a else 'before'}")
            else:
                found += differences(a[key], b[key], f"{where}/{key}")
        return found
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: {len(a)} items before, {len(b)} after"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, f"{where}/{i}")]
    if a != b or type(a) is not type(b):
        return [f"{where}: {a!r} before, {b!r} after"]
    return []


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    before, after = (content(json.loads(Path(p).read_text(encoding="utf-8"))) for p in argv)
    found = differences(before, after)
    for line in found[:200]:
        print(line)
    if found:
        print(f"{len(found)} differences (run metadata ignored)")
        return 1
    print(f"same content (run metadata ignored): {argv[0]} == {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
