"""Dataset ingestion: any supported file -> one normalised polars frame (row, prompt, completion, digest).

Formats: JSON Lines, JSON array, parquet, CSV, `.gz` of these, and saved HF `datasets` folders.
Small files are read into memory once; large ones stay lazy so polars can stream them.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import weakref
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from auditor import tempfiles
from auditor.dataset import readers
from auditor.dataset.digest import digest_expr, digest_text
from auditor.dataset.hf_folder import HFFolder, is_hf_folder
from auditor.dataset.schema import Layout, normalise
from auditor.dataset.source import (
    CHUNK,
    DEFAULT_MAX_INPUT_GIB,
    ByteChecker,
    HashingReader,
    Source,
    check_kind,
    hash_and_check,
    open_source,
)
from auditor.errors import InputError, OutputError

__all__ = ["Dataset", "load_dataset", "digest_expr", "digest_text", "DEFAULT_MAX_ROW_MIB", "DEFAULT_MAX_INPUT_GIB"]

DEFAULT_MAX_ROW_MIB = 16
IN_MEMORY_LIMIT = 512 * 2**20  # files up to this size are collected once, larger ones are streamed
PIECE_BYTES = 64 * 2**20  # a decompressed JSON Lines copy is kept in pieces of about this size
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
    _kept: object = None  # open input files and a decompressed copy, alive while the frame needs them
    _finalizer: object = None

    def check_unchanged(self) -> None:
        """InputError when a file the lazy frame still reads was modified or replaced during the audit:
        the report's sha256 would then not describe what the detectors saw."""
        if self._kept is not None:
            self._kept.check_unchanged(self.path)

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


def _gunzip(source: Source, inner_suffix: str, checker: ByteChecker, piece_bytes: int | None = None) -> tuple[list[Path], Path]:
    """Decompress to a private temporary folder, hashing the compressed bytes and checking the decompressed
    ones as they stream (size cap, row limit). A truncated stream is an input error naming the line reached.

    With piece_bytes (JSON Lines), the copy is cut at line ends into pieces of about that size: polars maps
    the file it reads into memory, and pieces keep that to one piece at a time rather than the whole file."""
    folder = tempfiles.private_dir()
    pieces = [folder / f"data-{0:05d}{inner_suffix}"]
    digest = hashlib.sha256()
    try:
        with source.open() as raw:
            dst = open(pieces[0], "wb")  # noqa: SIM115 (closed below, piece by piece)
            written = 0
            hashed = HashingReader(raw, digest)
            with gzip.GzipFile(fileobj=hashed, mode="rb") as src:
                while chunk := src.read1(CHUNK):  # read1: a read() would drop what it got before the stream ended
                    checker.feed(chunk)
                    while piece_bytes and written + len(chunk) > piece_bytes:
                        # end this piece at the last line end within its size (or the first one after it)
                        cut = (chunk.rfind(b"\n", 0, max(piece_bytes - written, 0)) + 1) or (chunk.find(b"\n") + 1)
                        if not cut:
                            break  # the line goes on into the next chunk
                        dst.write(chunk[:cut])
                        dst.close()
                        pieces.append(folder / f"data-{len(pieces):05d}{inner_suffix}")
                        dst = open(pieces[-1], "wb")  # noqa: SIM115
                        chunk, written = chunk[cut:], 0
                    dst.write(chunk)
                    written += len(chunk)
            dst.close()
            while hashed.read(CHUNK):  # gzip stops at its end marker: the hash covers every byte of the file
                pass
        checker.finish()
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        tempfiles.remove(folder)
        reason = "the gzip stream is truncated" if isinstance(err, EOFError) else f"not a valid gzip file ({err})"
        raise InputError(source.path, f"{reason}; data ends after {checker.lines} complete lines", line=checker.lines + 1) from None
    except OSError as err:
        tempfiles.remove(folder)
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OutputError(folder, "no space left to decompress the input here (point TMPDIR at a larger disk)") from None
        raise InputError(source.path, f"not a valid gzip file ({err})", line=checker.lines + 1) from None
    except BaseException:
        tempfiles.remove(folder)
        raise
    source.sha256, source.size = digest.hexdigest(), hashed.size
    return [p for p in pieces if p.stat().st_size or p == pieces[0]], folder


def _format_of(path: Path, source: Source) -> tuple[str, str]:
    suffixes = [s.lower() for s in path.suffixes]
    compressed = bool(suffixes) and suffixes[-1] == ".gz"
    inner = suffixes[-2] if compressed and len(suffixes) > 1 else (suffixes[-1] if suffixes and not compressed else "")
    fmt = _SUFFIXES.get(inner)
    if fmt is None:
        # no telling suffix: sniff the first byte of plain files
        first = b""
        if not compressed:
            with source.open() as handle:
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


def _parquet_bytes(read_from: str | Path) -> int:
    """The data's size once decompressed, from the parquet footer (pages are decompressed as they are read)."""
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(str(read_from)).metadata
    except Exception:  # a damaged file: the reader names the problem
        return 0
    return sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))


def load_dataset(
    path: str | Path,
    prompt_field: str | None = None,
    completion_field: str | None = None,
    max_row_mib: float = DEFAULT_MAX_ROW_MIB,
    split: str | None = None,
    in_memory_limit: int | None = None,
    max_input_gib: float = DEFAULT_MAX_INPUT_GIB,
) -> Dataset:
    path = Path(path)
    in_memory_limit = IN_MEMORY_LIMIT if in_memory_limit is None else in_memory_limit
    max_row_bytes = int(max_row_mib * 2**20)
    max_bytes = int(max_input_gib * 2**30)
    kept = _Kept()
    try:
        if check_kind(path) == "folder":
            if not is_hf_folder(path):
                raise InputError(path, "is a folder, not a dataset file (and not a saved HF datasets folder)")
            folder = HFFolder(path)
            kept.sources = folder.sources  # the same list: filled while reading
            table = folder.read(split, max_bytes)
            raw = readers.read_arrow(path, table, prompt_field, completion_field)
            fmt, size, sha256 = "hf-datasets", sum(s.size for s in folder.sources), folder.sha256
        else:
            source = open_source(path)
            kept.sources.append(source)
            fmt, inner = _format_of(path, source)
            compressed = path.suffix.lower() == ".gz"
            if not compressed and source.stat.st_size > max_bytes:
                raise InputError(path, f"holds more than {max_input_gib:g} GiB of data (--max-input-gib raises the limit)")
            text = fmt in ("jsonl", "json")
            checker = ByteChecker(path, text_format=text, max_line_bytes=max_row_bytes if fmt in ("jsonl", "csv") else None,
                                  max_bytes=max_bytes) if fmt != "parquet" or compressed else None
            if compressed:
                pieces, kept.tmp = _gunzip(source, inner, checker, PIECE_BYTES if fmt == "jsonl" else None)
                source.close()  # the private copy holds exactly the bytes hashed
                read_from = pieces if fmt == "jsonl" else pieces[0]
                size = sum(p.stat().st_size for p in pieces)
            else:
                hash_and_check(source, checker)
                read_from, size = Path(source.read_path), source.size
            if fmt == "parquet" and _parquet_bytes(read_from) > max_bytes:
                raise InputError(path, f"decompresses to more than {max_input_gib:g} GiB of data (--max-input-gib raises the limit)")
            raw = _READERS[fmt](read_from, prompt_field, completion_field, max_row_bytes)
            raw.path = path  # errors name the file the user gave
            fmt = fmt + (".gz" if compressed else "")
            sha256 = source.sha256
        dataset = _validate(path, fmt, raw, max_row_bytes, in_memory=size <= in_memory_limit, sha256=sha256)
        if dataset.in_memory:  # collected: the bytes read are the bytes hashed, unless the file changed meanwhile
            kept.check_unchanged(path)
            kept.release()
    except BaseException as err:
        kept.release()
        if isinstance(err, InputError) and err.path != str(path):
            raise InputError(path, err.problem, line=err.line, unit=err.unit) from None  # a reader named the copy
        raise
    dataset._kept = kept
    dataset._finalizer = weakref.finalize(dataset, kept.release)
    return dataset


class _Kept:
    """What a dataset's lazy frame needs while it lives: open input files and a decompressed copy."""

    def __init__(self):
        self.sources: list[Source] = []
        self.tmp: Path | None = None

    def unchanged(self) -> bool:
        return all(s.closed or s.unchanged() for s in self.sources)

    def check_unchanged(self, path: Path) -> None:
        if not self.unchanged():
            raise InputError(path, "changed while it was being read: audit a copy that nothing else writes to")

    def close_sources(self) -> None:
        for source in self.sources:
            source.close()

    def release(self) -> None:
        self.close_sources()
        if self.tmp is not None:
            tempfiles.remove(self.tmp)
            self.tmp = None


def _first(expr: pl.Expr) -> pl.Expr:
    return pl.col("row").filter(expr).first()


def _validate(path: Path, fmt: str, raw: readers.RawTable, max_row_bytes: int, in_memory: bool, sha256: str) -> Dataset:
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
        sha256=sha256,
        in_memory=in_memory,
    )
    dataset.duplicates = _duplicates(dataset)
    dataset.profile = _number_profile(frame)
    return dataset


def _duplicates(dataset: Dataset) -> dict:
    """Rows whose normalised text repeats: reported, never fatal."""
    keyed = dataset.frame.select("row", pl.struct(pl.col("prompt").str.strip_chars(), pl.col("completion").str.strip_chars()).hash().alias("key"))
    # find repeated keys by sorting, then fetch only their rows: a hash table over every row of a 10M-row file would
    # cost more memory than the rest of the audit. The low 32 bits first (4 bytes a row), then the full 64-bit keys of
    # the few rows whose low bits repeat
    low32 = (pl.col("key") % 2**32).cast(pl.UInt32)
    low = np.sort(keyed.select(low32.alias("low")).collect(engine="streaming")["low"].to_numpy())
    maybe = np.unique(low[1:][low[1:] == low[:-1]])
    del low
    keys = np.sort(keyed.filter(low32.is_in(pl.Series(maybe, dtype=pl.UInt32).implode())).select("key").collect(engine="streaming")["key"].to_numpy())
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
