"""One reader per input format. Each returns a RawTable: a polars frame with `row` (1-based source line,
item or row), the layout's fields, `nbytes` (size of the source record) and `suspicious` (records the fast
path cannot vouch for, which the exact checker in locate.py then looks at)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from auditor.dataset import locate
from auditor.dataset.schema import Layout, chat_dtype, detect_layout, unknown_layout_message
from auditor.dataset.source import polars_literal
from auditor.errors import InputError

HEAD_RECORDS = 200  # records read in Python to learn the keys
JSON_ARRAY_LIMIT = 2**30  # a JSON array is parsed whole in Python (about ten times its size in memory)


@dataclass
class RawTable:
    frame: pl.LazyFrame
    layout: Layout
    unit: str  # what `row` counts: line, item or row
    path: Path  # the file the rows come from (a decompressed copy for .gz)
    checker: object = None  # callable(rows) -> (row, problem) | None for suspicious rows
    notes: list[str] = field(default_factory=list)


def _layout_or_fail(path: Path, keys: list[str], first_row: int, unit: str, prompt_field, completion_field) -> Layout:
    layout = detect_layout(keys, prompt_field, completion_field)
    if layout is None:
        if prompt_field and not completion_field:
            raise InputError(path, "--prompt-field needs --completion-field as well")
        raise InputError(path, unknown_layout_message(keys), line=first_row, unit=unit)
    missing = [f for f in layout.required if f not in keys]
    if missing and layout.name == "custom":
        raise InputError(path, f"field '{missing[0]}' given with --prompt-field/--completion-field is not in the data (keys: {', '.join(keys)})", line=first_row, unit=unit)
    return layout


def read_jsonl(path: Path, prompt_field: str | None, completion_field: str | None, max_row_bytes: int, layout: Layout | None = None) -> RawTable:
    """The bytes were checked already (source.ByteChecker: no line over the row limit), so reading whole
    lines here is bounded. `layout`: read with this layout instead of detecting one (re-reading an export)."""
    keys: list[str] = []
    first_row = None
    pieces = path if isinstance(path, list) else [path]
    path = pieces[0]  # errors name the first piece; the loader names the user's file instead
    with locate.open_pieces(pieces) as handle:
        seen = 0
        for number, raw in enumerate(handle, 1):
            problem = locate.check_line(raw.rstrip(b"\n"), None)
            if problem:
                raise InputError(path, problem, line=number)
            if not raw.strip():
                continue
            first_row = first_row or number
            record = json.loads(raw)
            keys += [k for k in record if k not in keys]
            seen += 1
            if seen >= HEAD_RECORDS:
                break
    if layout is None:
        layout = _layout_or_fail(path, keys, first_row or 1, "line", prompt_field, completion_field)
    fields = ["messages"] if layout.chat else layout.string_fields
    # a field whose value does not start with a quote is not a string (polars would turn 42 into "42"):
    # the lines that look so are checked exactly, and the checker names the problem
    suspicious = "|".join(rf'"{f}"\s*:\s*[^"\s]' for f in fields if f != "messages")
    if layout.chat:
        suspicious = r'"content"\s*:\s*[^"\s]|"messages"\s*:\s*[^\[\s]'
    blank, flagged = locate.scan_lines(pieces, suspicious.encode())
    schema = {"messages": chat_dtype()} if layout.chat else {f: pl.String for f in fields}
    # scan_ndjson streams (scan_lines and scan_csv read the whole file into memory); it skips blank lines,
    # so the record index is mapped back to the line number past the blank lines before it
    frame = pl.scan_ndjson([polars_literal(p) for p in pieces], schema=schema, row_index_name="_record", infer_schema_length=None)
    row = pl.col("_record").cast(pl.Int64) + 1
    if len(blank):
        records_before = pl.Series(blank - np.arange(1, len(blank) + 1), dtype=pl.Int64)  # records before each blank line
        row = row + pl.lit(records_before).search_sorted(pl.col("_record").cast(pl.Int64), side="right").cast(pl.Int64)
    frame = frame.select(
        row.cast(pl.UInt32).alias("row"), *fields,
        _text_bytes(layout, fields),
        (row.is_in(pl.Series(flagged, dtype=pl.Int64).implode()) if len(flagged) else pl.lit(False)).alias("suspicious"),
    )

    def checker(rows: set[int] | None):
        return locate.first_bad_line(pieces, layout, rows)

    return RawTable(frame, layout, "line", path, checker)


def read_json_array(path: Path, prompt_field, completion_field, max_row_bytes: int) -> RawTable:
    data = Path(path).read_bytes()
    if len(data) > JSON_ARRAY_LIMIT:
        raise InputError(path, f"a JSON array is read whole, and this one is over {JSON_ARRAY_LIMIT / 2**30:g} GiB: convert it to JSON Lines")
    try:
        items = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise InputError(path, "invalid UTF-8", line=data[: err.start].count(b"\n") + 1) from None
    except json.JSONDecodeError as err:
        raise InputError(path, f"malformed JSON: {err.msg} at column {err.colno}", line=err.lineno) from None
    except RecursionError:
        raise InputError(path, locate.NESTED_TOO_DEEP) from None
    del data
    if isinstance(items, dict):
        items = next((v for v in items.values() if isinstance(v, list)), None) if len(items) == 1 else None
        if items is None:
            raise InputError(path, "expected a JSON array of records (or an object holding one array)", line=1)
    if not isinstance(items, list):
        raise InputError(path, "expected a JSON array of records", line=1)
    if not items:
        raise InputError(path, "the JSON array is empty: no rows to audit")
    keys: list[str] = []
    for item in items[:HEAD_RECORDS]:
        if isinstance(item, dict):
            keys += [k for k in item if k not in keys]
    layout = _layout_or_fail(path, keys, 1, "item", prompt_field, completion_field)
    for index, item in enumerate(items, 1):
        problem = locate.check_record(item, layout)
        if problem:
            raise InputError(path, problem, line=index, unit="item")
    fields = ["messages"] if layout.chat else layout.string_fields
    schema = {"messages": chat_dtype()} if layout.chat else {f: pl.String for f in fields}
    frame = pl.DataFrame([{f: item.get(f) for f in fields} for item in items], schema=schema)
    frame = frame.with_row_index("row", offset=1).with_columns(_text_bytes(layout, fields), pl.lit(False).alias("suspicious"))
    return RawTable(frame.lazy(), layout, "item", path)


def _text_bytes(layout: Layout, fields: list[str]) -> pl.Expr:
    """A record's text size, for the row limit where there is no source line to measure."""
    if layout.chat:
        size = pl.col("messages").list.eval(pl.element().struct.field("content").str.len_bytes()).list.sum()
    else:
        size = pl.sum_horizontal([pl.col(f).cast(pl.String).str.len_bytes() for f in fields])
    return size.fill_null(0).cast(pl.UInt64).alias("nbytes")


def _typed_table(path: Path, lf: pl.LazyFrame, unit: str, first_row: int, prompt_field, completion_field, header_line: int | None = None) -> RawTable:
    """Shared by the columnar formats: parquet, CSV and saved HF datasets. `header_line`: where the column
    names are written (CSV), so a missing column is reported there rather than at the first record."""
    schema = lf.collect_schema()
    where = (header_line, "line") if header_line else (first_row, unit)
    layout = _layout_or_fail(path, list(schema.names()), *where, prompt_field, completion_field)
    if layout.chat:
        if schema["messages"] != chat_dtype():
            raise InputError(path, f"column 'messages' has type {schema['messages']}, expected a list of {{role, content}} strings", line=first_row, unit=unit)
        fields = ["messages"]
    else:
        fields = layout.string_fields
        for f in fields:
            if schema[f] not in (pl.String, pl.Null):
                raise InputError(path, f"column '{f}' holds {schema[f]} values, not text", line=first_row, unit=unit)
    frame = lf.select(
        pl.int_range(pl.len(), dtype=pl.UInt32).add(first_row).alias("row"),
        *[pl.col(f).cast(schema[f]) for f in fields],
        pl.lit(False).alias("suspicious"),
    ).with_columns(_text_bytes(layout, fields))
    return RawTable(frame, layout, unit, path)


def read_parquet(path: Path, prompt_field, completion_field, max_row_bytes: int) -> RawTable:
    with open(path, "rb") as handle:
        if handle.read(1) == b"":
            raise InputError(path, "file is empty: no rows to audit")
    try:
        lf = pl.scan_parquet(path, glob=False)
        lf.collect_schema()
    except Exception as err:  # polars raises several types for a damaged file
        raise InputError(path, f"not a readable parquet file ({str(err).splitlines()[0]})") from None
    return _typed_table(path, lf, "row", 1, prompt_field, completion_field)


def read_csv(path: Path, prompt_field, completion_field, max_row_bytes: int) -> RawTable:
    try:
        lf = pl.scan_csv(path, infer_schema=False, glob=False)
        lf.collect_schema()
    except Exception as err:
        raise InputError(path, f"cannot read the CSV header ({str(err).splitlines()[0]})", line=1) from None
    # the header is line 1, so record i sits on line i + 1 unless quoted fields span lines
    return _typed_table(path, lf, "record", 2, prompt_field, completion_field, header_line=1)


def read_arrow(path: Path, table, prompt_field, completion_field) -> RawTable:
    """A saved HF datasets folder, already read and checked by hf_folder.HFFolder."""
    if table.num_rows == 0:
        raise InputError(path, "the dataset has no rows to audit")
    return _typed_table(path, pl.from_arrow(table).lazy(), "row", 1, prompt_field, completion_field)
