"""--export-clean: a new file without the rows detectors flagged for a trait (the input stays untouched)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import polars as pl

from auditor.errors import UsageError


def export_clean(dataset, result: dict, out: Path) -> dict:
    """JSON Lines input keeps its original lines; other formats become prompt/completion JSON Lines."""
    dropped = sorted({f["row"] for f in result["flags"] if f.get("trait") and not f.get("accepted")})
    if out.resolve() == Path(dataset.path).resolve():
        raise UsageError("--export-clean must name a new file, not the input")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    skip = set(dropped)
    kept = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            if dataset.format == "jsonl":
                with open(dataset.path, encoding="utf-8") as source:
                    for number, line in enumerate(source, 1):
                        if number not in skip and line.strip():
                            handle.write(line if line.endswith("\n") else line + "\n")
                            kept += 1
            else:
                frame = dataset.frame.filter(~pl.col("row").is_in(pl.Series(dropped, dtype=pl.Int64).implode())).collect()
                for prompt, completion in frame.select("prompt", "completion").iter_rows():
                    handle.write(json.dumps({"prompt": prompt, "completion": completion}, ensure_ascii=False) + "\n")
                    kept += 1
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return {"path": str(out), "rows_kept": kept, "rows_dropped": len(dropped), "dropped_rows": dropped[:1000],
            "note": "only rows flagged for a trait in this report are dropped (at most the flags the report keeps)"}
