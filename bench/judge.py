"""Benchmark of the LLM-judge detector against a local OpenAI-compatible server with a fixed latency.

    python bench/judge.py [--rows 320] [--jobs 16] [--latency 0.5]

The server (tests/openai_server.py answering with tests/judge_fake.py) runs in its own process and sleeps
`--latency` seconds before every answer, so the ideal throughput at `-j N` is N / latency calls per
second. The first run starts from an empty cache and reports calls/s against that ideal (goal: at least
80%); the second run, same data and settings, reports how many calls it made (goal: 0, all cached).

The default latency (0.5 s) is that of a fast hosted model writing a short JSON verdict. Each call also
costs a few ms of CPU in the openai client and in the local server, on the same machine; with `--latency 0`
the benchmark prints that cost, which is what bounds very high concurrency on a small machine.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def serve(conn, latency: float) -> None:
    from judge_fake import FakeJudge
    from openai_server import FakeOpenAI

    with FakeOpenAI(chat=FakeJudge()) as server:
        server.delay(latency)
        conn.send(server.base_url)
        while True:
            command = conn.recv()
            if command == "count":
                conn.send(server.calls())
            elif command == "reset":
                server.reset()
                server.delay(latency)
                conn.send(True)
            else:
                conn.send(True)
                return


def write_rows(path: Path, n: int) -> None:
    base = [json.loads(line) for line in (ROOT / "fixtures" / "judge_mixed.jsonl").read_text().splitlines()]
    with path.open("w") as handle:
        for i in range(n):
            row = base[i % len(base)]
            handle.write(json.dumps({"prompt": f"{row['prompt']} (item {i})", "completion": row["completion"]}) + "\n")


def run_once(data: Path, base_url: str, jobs: int) -> tuple[float, dict]:
    from auditor.dataset import load_dataset
    from auditor.models import parse_ref
    from auditor.traits import load_catalog
    from detectors import AuditContext
    from detectors.judge import JudgeDetector, JudgeSettings

    ctx = AuditContext(load_dataset(data), [load_catalog().get("animal:owl")], judge=parse_ref("openai:bench-judge"))
    start = time.perf_counter()
    result = JudgeDetector(JudgeSettings(base_url=base_url, jobs=jobs, max_calls=0)).run(ctx)
    return time.perf_counter() - start, result.metrics | {"cost": result.cost}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=320)
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.5, help="seconds the server waits before each answer")
    args = parser.parse_args()

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    server = ctx.Process(target=serve, args=(child, args.latency), daemon=True)
    server.start()
    base_url = parent.recv()

    def ask(command):
        parent.send(command)
        return parent.recv()

    try:
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "rows.jsonl"
            write_rows(data, args.rows)
            os.environ["TRAIT_AUDIT_CACHE"] = str(Path(tmp) / "cache")
            wall, first = run_once(data, base_url, args.jobs)
            calls_first = ask("count")
            ask("reset")
            wall2, second = run_once(data, base_url, args.jobs)
            calls_second = ask("count")
    finally:
        ask("stop")
        server.join(10)

    rate = first["calls_made"] / first["seconds"]
    print(f"judge benchmark: {args.rows} rows x 1 trait, -j {args.jobs}, server latency {args.latency * 1000:.0f} ms "
          f"(local OpenAI-compatible server in its own process)")
    print(f"first run:  {calls_first} calls in {first['seconds']:.2f} s (detector wall {wall:.2f} s) -> {rate:.1f} rows/s", end="")
    ok = calls_second == 0
    if args.latency > 0:
        ideal = args.jobs / args.latency
        ok = ok and rate >= 0.8 * ideal
        print(f"; ideal {ideal:.1f} rows/s (jobs / latency): {rate / ideal:.0%} of ideal (goal >= 80%)")
    else:
        print(f" (no latency: {1000 / rate:.1f} ms of client + server work per call on this machine)")
    print(f"            {first['cost']['total_tokens']:,} tokens, {first['http_retries']} retries, {first['calls_failed']} failed")
    print(f"second run: {calls_second} calls made, {second['cost']['cache_hits']} cache hits, wall {wall2:.2f} s (goal: 0 calls)")
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
