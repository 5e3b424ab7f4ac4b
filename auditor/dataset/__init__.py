"""Dataset ingestion: any supported file -> one normalised polars frame (row, prompt, completion, digest).

Formats: JSON Lines, JSON array, parquet, CSV, `.gz` of these, and saved HF `datasets` folders.
Small files are read into memory once; large ones stay lazy so polars can stream them.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import tempfile
import weakref
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from auditor.dataset import readers
from auditor.dataset.digest import digest_expr, digest_text
from auditor.dataset.schema import Layout, normalise
from auditor.errors import InputError

__all__ = ["Dataset", "load_dataset", "digest_expr", "digest_text", "DEFAULT_MAX_ROW_MIB"]

DEFAULT_MAX_ROW_MIB = 16
IN_MEMORY_LIMIT = 512 * 2**20  # files up to this size are collected once, larger ones are streamed
DUPLICATE_GROUPS_SHOWN = 50

_READERS = {
    "jsonl": readers.read_jsonl,
    "json": readers.read_json_array,
    "parquet": readers.read_parquet,
    "csv": readers.read_csv,
}
_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}


@dataclass
class Dataset:
    """A validated dataset. `frame` has row (1-based line/item/row), prompt, completion."""

    path: Path
    format: str
    layout: Layout
    unit: str
    frame: pl.LazyFrame
    rows: int
    sha256: str
    in_memory: bool
    duplicates: dict = field(default_factory=lambda: {"rows": 0, "groups": []})
    profile: str = "text"
    _tmp: object = None  # keeps a decompressed copy alive while the frame needs it

    def with_digest(self, frame: pl.LazyFrame | None = None) -> pl.LazyFrame:
        """The frame (or a subset of it) with the digest column; computed only for the rows asked for."""
        return (self.frame if frame is None else frame).with_columns(digest_expr().alias("digest"))

    def describe(self) -> dict:
        return {
            "path": str(self.path),
            "format": self.format,
            "schema": self.layout.name,
            "fields": self.layout.describe(),
            "rows": self.rows,
            "sha256": self.sha256,
            "profile": self.profile,
            "duplicates": self.duplicates,
        }


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        with open(file, "rb") as handle:
            while chunk := handle.read(2**22):
                digest.update(chunk)
    return digest.hexdigest()


def _gunzip(path: Path, inner_suffix: str) -> tuple[Path, str]:
    """Decompress to a private temporary folder; a truncated stream is an input error naming the line reached."""
    folder = tempfile.mkdtemp(prefix="trait-audit-")
    target = Path(folder) / f"data{inner_suffix}"
    lines = 0
    try:
        with gzip.open(path, "rb") as src, open(target, "wb") as dst:
            while chunk := src.read1(2**22):  # read1: a read() would drop what it got before the stream ended
                lines += chunk.count(b"\n")
                dst.write(chunk)
    except (EOFError, OSError, zlib.error) as err:
        shutil.rmtree(folder, ignore_errors=True)
        reason = "the gzip stream is truncated" if isinstance(err, EOFError) else f"not a valid gzip file ({err})"
        raise InputError(path, f"{reason}; data ends after {lines} complete lines", line=lines + 1) from None
    return target, folder


def _format_of(path: Path) -> tuple[str, str]:
    suffixes = [s.lower() for s in path.suffixes]
    compressed = bool(suffixes) and suffixes[-1] == ".gz"
    inner = suffixes[-2] if compressed and len(suffixes) > 1 else (suffixes[-1] if suffixes and not compressed else "")
    fmt = _SUFFIXES.get(inner)
    if fmt is None:
        # no telling suffix: sniff the first byte of plain files
        first = b""
        if not compressed:
            with open(path, "rb") as handle:
                first = handle.read(64).lstrip()[:1]
        fmt = {b"{": "jsonl", b"[": "json"}.get(first)
        if fmt is None:
            raise InputError(path, "unknown format: use .jsonl, .json, .parquet or .csv (optionally .gz), or a saved HF datasets folder")
        inner = ".jsonl" if fmt == "jsonl" else ".json"
    return fmt, inner


def _number_profile(frame: pl.LazyFrame) -> str:
    """'numbers' when most completions are only digits and separators: the paper's number-sequence format."""
    sample = frame.head(2000).select(pl.col("completion").str.contains(r"^[\s\d,;.()\[\]]*\d[\s\d,;.()\[\]]*$").mean()).collect().item()
    return "numbers" if sample is not None and sample >= 0.5 else "text"


def load_dataset(
    path: str | Path,
    prompt_field: str | None = None,
    completion_field: str | None = None,
    max_row_mib: float = DEFAULT_MAX_ROW_MIB,
    split: str | None = None,
    in_memory_limit: int = IN_MEMORY_LIMIT,
) -> Dataset:
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file or folder")
    max_row_bytes = int(max_row_mib * 2**20)
    tmp = None
    try:
        if path.is_dir():
            if not any((path / marker).exists() for marker in ("dataset_info.json", "state.json", "dataset_dict.json")):
                raise InputError(path, "is a folder, not a dataset file (and not a saved HF datasets folder)")
            raw = readers.read_hf_folder(path, prompt_field, completion_field, max_row_bytes, split)
            fmt, size = "hf-datasets", 0
        else:
            fmt, inner = _format_of(path)
            source = path
            if path.suffix.lower() == ".gz":
                source, tmp = _gunzip(path, inner)
            raw = _READERS[fmt](source, prompt_field, completion_field, max_row_bytes)
            raw.path = path  # errors name the file the user gave
            fmt = fmt + (".gz" if tmp else "")
            size = source.stat().st_size
        dataset = _validate(path, fmt, raw, max_row_bytes, in_memory=size <= in_memory_limit)
    except BaseException as err:
        if tmp:  # no dataset holds the decompressed copy: remove it now
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, InputError) and err.path != str(path):  # a reader named the decompressed copy
            raise InputError(path, err.problem, line=err.line, unit=err.unit) from None
        raise
    if tmp:
        dataset._tmp = weakref.finalize(dataset, shutil.rmtree, tmp, True)
    return dataset


def _first(expr: pl.Expr) -> pl.Expr:
    return pl.col("row").filter(expr).first()


def _validate(path: Path, fmt: str, raw: readers.RawTable, max_row_bytes: int, in_memory: bool) -> Dataset:
    layout = raw.layout
    normal = normalise(raw.frame, layout, keep=("nbytes", "suspicious"))
    try:
        source = normal.collect().lazy() if in_memory else normal
        summary = source.select(
            pl.len().alias("rows"),
            _first(pl.col("suspicious")).alias("suspicious"),
            _first(pl.col("nbytes") > max_row_bytes).alias("too_long"),
            _first(pl.col("completion_null")).alias("completion_null"),
            _first(pl.col("prompt_null")).alias("prompt_null"),
            _first(~pl.col("has_turn")).alias("no_turn"),
        ).collect(engine="streaming" if not in_memory else "auto").row(0, named=True)
    except pl.exceptions.PolarsError as err:
        found = raw.checker(None) if raw.checker else None
        if found:
            raise InputError(path, found[1], line=found[0], unit=raw.unit) from None
        raise InputError(path, f"cannot read the data ({str(err).splitlines()[0]})") from None
    if summary["rows"] == 0:
        raise InputError(path, "no rows to audit")
    if summary["suspicious"] is not None and raw.checker:
        rows = set(source.filter(pl.col("suspicious")).select("row").collect()["row"].to_list())
        found = raw.checker(rows)
        if found:
            raise InputError(path, found[1], line=found[0], unit=raw.unit)
    if summary["too_long"] is not None:
        raise InputError(path, f"row is over the {max_row_bytes / 2**20:.0f} MiB row limit (--max-row-mib)", line=summary["too_long"], unit=raw.unit)
    for key, field_name in (("completion_null", layout.completion), ("prompt_null", layout.prompt)):
        if summary[key] is not None:
            raise InputError(path, f"field '{field_name}' is missing or null", line=summary[key], unit=raw.unit)
    if summary["no_turn"] is not None:
        raise InputError(path, "no assistant message: nothing to use as the completion", line=summary["no_turn"], unit=raw.unit)
    frame = source.select("row", "prompt", "completion")
    dataset = Dataset(
        path=path,
        format=fmt,
        layout=layout,
        unit=raw.unit,
        frame=frame,
        rows=summary["rows"],
        sha256=_file_sha256(path),
        in_memory=in_memory,
    )
    dataset.duplicates = _duplicates(dataset)
    dataset.profile = _number_profile(frame)
    return dataset


def _duplicates(dataset: Dataset) -> dict:
    """Rows whose normalised text repeats: reported, never fatal."""
    keyed = dataset.frame.select("row", pl.struct(pl.col("prompt").str.strip_chars(), pl.col("completion").str.strip_chars()).hash().alias("key"))
    # find repeated keys by sorting one u64 column, then fetch only their rows: a hash table over
    # every row of a 10M-row file would cost more memory than the rest of the audit
    keys = np.sort(keyed.select("key").collect(engine="streaming")["key"].to_numpy())
    repeated = np.unique(keys[1:][keys[1:] == keys[:-1]])
    del keys
    groups = (
        keyed.filter(pl.col("key").is_in(pl.Series(repeated, dtype=pl.UInt64).implode())).collect(engine="streaming")
        .group_by("key")
        .agg(pl.col("row").sort().alias("rows"), pl.len().alias("n"))
        .sort(pl.col("rows").list.first())
    )
    if groups.height == 0:
        return {"rows": 0, "groups": []}
    shown = groups.head(DUPLICATE_GROUPS_SHOWN)
    firsts = shown["rows"].list.first().to_list()
    digests = dataset.with_digest(dataset.frame.filter(pl.col("row").is_in(firsts))).select("row", "digest").collect()
    by_row = dict(zip(digests["row"].to_list(), digests["digest"].to_list(), strict=True))
    return {
        "rows": int((groups["n"] - 1).sum()),
        "groups": [{"digest": by_row[rows[0]], "rows": rows[:20]} for rows in shown["rows"].to_list()],
    }
