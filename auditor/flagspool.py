"""Flagged rows on disk, so memory stays flat however many rows are flagged.

Each detector's flags are written to an Arrow IPC file in a private temporary folder (removed when the
audit ends, or on SIGINT/SIGTERM). The report keeps a capped sample; --export-clean, --write-baseline,
the accepted count and stale baseline entries read every flag, through streaming polars queries.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pyarrow as pa

from auditor import tempfiles

BATCH_ROWS = 50_000
# the columns a flag carries (detectors/base.FLAG_SCHEMA) plus the detector's name
COLUMNS = ("row", "digest", "detector", "trait", "score", "reason", "field", "matches", "excerpt")
_HASH_SEEDS = (0x5EED, 0xA0D1)  # two 64-bit hashes of a digest: a 128-bit key that fits a join in memory


def digest_key(column: str = "digest") -> list[pl.Expr]:
    """A compact join key for a row digest: two independent 64-bit hashes (16 bytes instead of 64 characters)."""
    return [pl.col(column).hash(seed).alias(f"_k{i}") for i, seed in enumerate(_HASH_SEEDS)]


def iter_batches(frame: pl.LazyFrame, folder: Path, name: str, rows: int = BATCH_ROWS) -> Iterator[pl.DataFrame]:
    """The frame's rows in order, `rows` at a time: streamed to an IPC file first, then read back batch by
    batch (a slice of a lazy file scan would rescan the file from its start every time)."""
    path = folder / f"{name}.ipc"
    frame.sink_ipc(path, record_batch_size=rows, compression="lz4", engine="streaming")
    try:
        # plain reads, not a memory map: mapped pages of a large spool would stay resident as it is walked
        with pa.OSFile(str(path)) as source:
            reader = pa.ipc.open_file(source)
            for i in range(reader.num_record_batches):
                yield pl.from_arrow(reader.get_batch(i))
    finally:
        path.unlink(missing_ok=True)


class FlagSpool:
    """Every flag of one audit. Use as a context manager, or call close()."""

    def __init__(self):
        self.folder = tempfiles.private_dir("trait-audit-flags-")
        self.files: list[Path] = []
        self.accepted: set[tuple[str, str, str | None]] = set()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        tempfiles.remove(self.folder)

    def scratch(self, name: str) -> Path:
        """A private folder for a detector's own spooled batches."""
        folder = self.folder / f"scratch-{len(list(self.folder.glob('scratch-*')))}-{name}"
        folder.mkdir()
        return folder

    def add(self, detector: str, flags: pl.DataFrame | pl.LazyFrame) -> None:
        path = self.folder / f"{len(self.files):03d}-{detector}.ipc"
        frame = flags.lazy().with_columns(pl.lit(detector).alias("detector")).select(COLUMNS)
        frame.sink_ipc(path, compression="lz4", record_batch_size=BATCH_ROWS, engine="streaming")
        self.files.append(path)

    def _keys(self) -> pl.DataFrame:
        return pl.DataFrame([list(k) for k in self.accepted], schema={"detector": pl.String, "digest": pl.String, "trait": pl.String},
                            orient="row").with_columns(pl.lit(True).alias("accepted"))

    def batches(self) -> Iterator[pl.DataFrame]:
        """Every flag, BATCH_ROWS at a time, with `accepted`: plain reads, so memory holds one batch."""
        keys = self._keys()
        for path in self.files:
            with pa.OSFile(str(path)) as source:
                reader = pa.ipc.open_file(source)
                for i in range(reader.num_record_batches):
                    batch = pl.from_arrow(reader.get_batch(i))
                    if not self.accepted:  # no baseline: nothing to join
                        yield batch.with_columns(pl.lit(False).alias("accepted"))
                        continue
                    yield (batch.join(keys, on=["detector", "digest", "trait"], how="left", nulls_equal=True, maintain_order="left")
                           .with_columns(pl.col("accepted").fill_null(False)))

    def frame(self) -> pl.LazyFrame:
        """Every flag, with `accepted` (a baseline accepts its detector, digest and trait)."""
        if not self.files:
            from detectors.base import FLAG_SCHEMA

            empty = pl.DataFrame(schema={**FLAG_SCHEMA, "detector": pl.String}).select(COLUMNS)
            return empty.lazy().with_columns(pl.lit(False).alias("accepted"))
        flags = pl.concat([pl.scan_ipc(path, glob=False) for path in self.files], how="vertical_relaxed")
        if not self.accepted:
            return flags.with_columns(pl.lit(False).alias("accepted"))
        return (flags.join(self._keys().lazy(), on=["detector", "digest", "trait"], how="left", nulls_equal=True, maintain_order="left")
                .with_columns(pl.col("accepted").fill_null(False)))

    def summary(self, limit: int) -> tuple[list[dict], dict[str, int]]:
        """In one pass over the flags: at most `limit` of them for the report (trait flags first, as they drive
        verdicts, then by row) and the counts {total, accepted}."""
        order = [pl.col("trait").is_null(), "row", "detector", "trait", "field"]
        best, total, accepted = None, 0, 0
        for batch in self.batches():  # the best `limit` so far, merged with one batch at a time: memory stays flat
            total += batch.height
            accepted += int(batch["accepted"].sum())
            merged = batch if best is None else pl.concat([best, batch], how="vertical_relaxed")
            best = merged.sort(order, nulls_last=True).head(limit)
        return ([] if best is None else best.to_dicts()), {"total": total, "accepted": accepted}

    def stale(self, entries: list[dict]) -> list[dict]:
        """Baseline entries that no flag of this run matches: the row changed or the problem went away."""
        if not entries:
            return []
        keys = pl.DataFrame({"detector": [e["detector"] for e in entries], "digest": [e["digest"] for e in entries],
                             "trait": [e.get("trait") for e in entries]}, schema={"detector": pl.String, "digest": pl.String, "trait": pl.String})
        current = self.frame().select("detector", "digest", "trait").unique()
        matched = keys.lazy().with_row_index("_i").join(current, on=["detector", "digest", "trait"], how="semi", nulls_equal=True)
        found = set(matched.select("_i").collect(engine="streaming")["_i"].to_list())
        return [e for i, e in enumerate(entries) if i not in found]

    def dropped_keys(self) -> pl.LazyFrame:
        """Digest keys (see digest_key) of the rows --export-clean removes: flagged for a trait, not accepted."""
        return self.frame().filter(pl.col("trait").is_not_null() & ~pl.col("accepted")).select(digest_key()).unique()

    def trait_flags(self) -> pl.LazyFrame:
        """Flags a baseline can accept: trait flags (format rejects are not risks)."""
        return self.frame().filter(pl.col("trait").is_not_null()).select("detector", "digest", "trait", "reason")
