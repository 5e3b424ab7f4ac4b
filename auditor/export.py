"""--export-clean: a new file without the flagged rows (the input stays untouched).

- Which rows: every row flagged for a trait and not accepted by the baseline, and every other row with
  the same content digest (rows are identified by content, not position). Every flag counts, not the
  sample the report keeps: they are read from the flag spool.
- JSON Lines input (plain or gzipped) is copied byte for byte: lines split on b"\\n" alone, as the
  reader numbered them, so a bare carriage return inside a line stays inside it; kept lines, blank
  lines and a missing final newline are exactly as they were. Other formats become prompt/completion
  JSON Lines. A name ending in .gz is gzipped.
- Verified before the atomic rename: the input is re-read and must hash to the report's sha256; the
  output is re-read, must hold the bytes written, the number of rows kept, and no dropped digest.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

from auditor import tempfiles
from auditor.dataset import readers
from auditor.dataset.digest import digest_expr
from auditor.dataset.schema import Layout, normalise
from auditor.dataset.source import CHUNK, HashingReader, open_source
from auditor.errors import InputError, InternalError, OutputError
from auditor.flagspool import digest_key, iter_batches
from auditor.io import _problem, refuse_overwrites

DROPPED_SHOWN = 1000
PAIRS = Layout("prompt/completion", completion="completion", prompt="prompt")


def export_clean(dataset, spool, out: Path) -> dict:
    out = Path(out)
    refuse_overwrites({"DATA": dataset.path}, {"--export-clean": out})
    dropped = spool.dropped_keys().collect(engine="streaming").lazy()  # two 8-byte keys per dropped row: read the spool once
    drop = _rows_to_drop(dataset, dropped)
    lines = dataset.format in ("jsonl", "jsonl.gz")
    scratch = spool.scratch("export")
    compress = out.suffix.lower() == ".gz"
    # the plain text is staged beside the target, or in the scratch folder when it is gzipped afterwards
    plain = _stage(scratch if compress else out.parent, out.name.removesuffix(".gz"))
    final = None
    try:
        with open(plain, "wb") as handle:
            writer = _HashingWriter(handle)
            kept = _copy_lines(dataset, drop, writer) if lines else _write_pairs(dataset, drop, writer, scratch)
            handle.flush()
            os.fsync(handle.fileno())
        _verify(plain, writer.sha256, kept, dataset.layout if lines else PAIRS, dropped)
        final = _gzip(plain, out, writer.sha256) if compress else plain
        os.replace(final, out)
        tempfiles.unregister(final)  # renamed into place
    except OSError as err:
        raise OutputError(out, _problem(err)) from None
    finally:
        for staged in {plain, final} - {None}:
            if staged in tempfiles.registered():  # not renamed: a failure on the way
                tempfiles.remove(staged)
    return {"path": str(out), "rows_kept": kept, "rows_dropped": int(len(drop)), "dropped_rows": drop[:DROPPED_SHOWN].tolist(),
            "sha256_content": writer.sha256, "verified": True,
            "format": "the input's own lines, byte for byte" if lines else "prompt/completion JSON Lines",
            "note": "rows flagged for a trait (not accepted by the baseline), and rows with the same content, are dropped"}


def _stage(folder: Path, name: str) -> str:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    except OSError as err:
        raise OutputError(folder / name, _problem(err)) from None
    os.close(fd)
    tempfiles.register(tmp)
    return tmp


def _rows_to_drop(dataset, keys: pl.LazyFrame) -> np.ndarray:
    """Sorted row numbers whose digest a dropped flag carries."""
    rows = (dataset.with_digest().select("row", *digest_key()).join(keys, on=["_k0", "_k1"], how="semi")
            .select(pl.col("row").cast(pl.Int64)).collect(engine="streaming"))
    return np.sort(rows["row"].to_numpy())


class _HashingWriter:
    def __init__(self, handle):
        self.handle, self.digest, self.size = handle, hashlib.sha256(), 0

    def write(self, data: bytes) -> None:
        self.handle.write(data)
        self.digest.update(data)
        self.size += len(data)

    @property
    def sha256(self) -> str:
        return self.digest.hexdigest()


def _lines(handle):
    """Lines split on b"\\n" alone (the reader's numbering), each with its newline; the last may lack one."""
    pending = b""
    while chunk := handle.read(CHUNK):
        parts = (pending + chunk).split(b"\n")
        pending = parts.pop()
        for part in parts:
            yield part + b"\n"
    if pending:
        yield pending


def _copy_lines(dataset, drop: np.ndarray, writer: _HashingWriter) -> int:
    """The input's lines but the dropped ones; the input must still hash to what the report says."""
    dropped = bytearray(int(drop[-1]) + 1 if len(drop) else 0)  # one byte per line up to the last dropped one
    for row in drop:
        dropped[row] = 1
    source = open_source(dataset.path)
    kept = 0
    try:
        with source.open() as raw:
            hashed = HashingReader(raw)
            text = gzip.GzipFile(fileobj=hashed, mode="rb") if dataset.format.endswith(".gz") else hashed
            for number, line in enumerate(_lines(text), 1):
                if number < len(dropped) and dropped[number]:
                    continue
                writer.write(line)
                kept += bool(line.strip())
            while hashed.read(CHUNK):
                pass
    finally:
        source.close()
    if hashed.digest.hexdigest() != dataset.sha256:
        raise InputError(dataset.path, "changed since it was audited: the clean export was not written (audit it again)")
    return kept


def _write_pairs(dataset, drop: np.ndarray, writer: _HashingWriter, scratch: Path) -> int:
    frame = dataset.frame.select(pl.col("row").cast(pl.Int64), "prompt", "completion")
    if len(drop):
        frame = frame.join(pl.DataFrame({"row": drop}, schema={"row": pl.Int64}).lazy(), on="row", how="anti", maintain_order="left")
    kept = 0
    for batch in iter_batches(frame.select("prompt", "completion"), scratch, "kept"):
        writer.write("".join(json.dumps({"prompt": p, "completion": c}, ensure_ascii=False) + "\n" for p, c in batch.iter_rows()).encode())
        kept += batch.height
    return kept


def _verify(plain: str, sha256: str, kept: int, layout: Layout, dropped: pl.LazyFrame) -> None:
    """Re-read the staged output: the bytes written, the rows kept, no dropped digest."""
    digest = hashlib.sha256()
    with open(plain, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    if digest.hexdigest() != sha256:
        raise InternalError(f"the clean export read back differs from what was written ({plain}); nothing was renamed")
    raw = readers.read_jsonl(Path(plain), None, None, 0, layout=layout)
    rows = normalise(raw.frame, layout).with_columns(digest_expr().alias("digest")).select(*digest_key())
    found = rows.select(pl.len()).collect(engine="streaming").item()
    leaked = rows.join(dropped, on=["_k0", "_k1"], how="semi").select(pl.len()).collect(engine="streaming").item()
    if found != kept or leaked:
        raise InternalError(f"the clean export did not verify ({found} rows read back, {kept} written, {leaked} flagged rows); nothing was renamed")


def _gzip(plain: str, out: Path, sha256: str) -> str:
    staged = _stage(out.parent, out.name)
    with open(plain, "rb") as src, open(staged, "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as dst:
            while chunk := src.read(CHUNK):
                dst.write(chunk)
        raw.flush()
        os.fsync(raw.fileno())
    digest = hashlib.sha256()
    with gzip.open(staged, "rb") as back:
        while chunk := back.read(CHUNK):
            digest.update(chunk)
    if digest.hexdigest() != sha256:
        tempfiles.remove(staged)
        raise InternalError(f"the gzipped clean export read back differs from what was written ({staged})")
    return staged
