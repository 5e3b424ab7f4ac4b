"""Slow, exact checks that find the first bad record of a JSON Lines file.

The fast path (polars) says *that* a file is bad; this says *where* and *why*. It only runs on
failure, or on the few lines the fast path marks as suspicious, so its speed does not matter.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np

from auditor.dataset.schema import Layout

CHUNK = 2**22
NESTED_TOO_DEEP = "JSON nested too deeply to read (arrays or objects inside each other hundreds of levels down)"


def describe_type(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def check_record(record: object, layout: Layout | None) -> str | None:
    """The problem with one decoded record, or None."""
    if not isinstance(record, dict):
        return f"expected a JSON object, found {describe_type(record)}"
    if layout is None:
        return None
    if layout.chat:
        msgs = record.get("messages")
        if msgs is None:
            return "field 'messages' is missing or null"
        if not isinstance(msgs, list):
            return f"field 'messages' must be a list of {{role, content}} objects, found {describe_type(msgs)}"
        for i, m in enumerate(msgs, 1):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                return f"message {i} must be an object with a string 'role'"
            if not isinstance(m.get("content"), str):
                return f"message {i} ('{m['role']}') has non-string content ({describe_type(m.get('content'))})"
        if not any(m["role"] == "assistant" for m in msgs):
            return "no assistant message: nothing to use as the completion"
        return None
    for field in layout.required:
        if field not in record:
            return f"field '{field}' is missing"
        if record[field] is None:
            return f"field '{field}' is null"
    for field in layout.string_fields:
        if field in record and record[field] is not None and not isinstance(record[field], str):
            return f"field '{field}' must be a string, found {describe_type(record[field])}"
    return None


def check_line(raw: bytes, layout: Layout | None) -> str | None:
    """The problem with one raw JSONL line, or None. Blank lines are fine."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return f"invalid UTF-8 (byte 0x{raw[err.start]:02x} at column {err.start + 1})"
    if not text.strip():
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        return f"malformed JSON: {err.msg} at column {err.colno}"
    except RecursionError:
        return NESTED_TOO_DEEP
    return check_record(record, layout)


class Pieces(io.RawIOBase):
    """Files read one after another as one stream: a large decompressed input is kept in line-aligned pieces."""

    def __init__(self, paths):
        self.paths = [paths] if isinstance(paths, str | Path) else list(paths)
        self.handle = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while self.paths or self.handle:
            if self.handle is None:
                self.handle = open(self.paths.pop(0), "rb")  # noqa: SIM115 (closed when read to its end)
            count = self.handle.readinto(buffer)
            if count:
                return count
            self.handle.close()
            self.handle = None
        return 0

    def close(self) -> None:
        if self.handle:
            self.handle.close()
        super().close()


def open_pieces(paths):
    return io.BufferedReader(Pieces(paths), buffer_size=2**20)


def scan_lines(path, suspicious: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(blank lines, lines matching `suspicious`), 1-based and sorted, in one streaming pass of C-speed regex
    searches over line-aligned chunks: rare lines are found without a Python loop over every line."""
    blank_after = re.compile(rb"\n(?=[ \t\r]*\n)")  # a newline whose next line is blank
    flag = re.compile(suspicious) if suspicious else None
    blank, flagged = [], []
    lines_before, tail = 0, b""
    with open_pieces(path) as handle:
        while True:
            chunk = handle.read(CHUNK)
            text = tail + chunk
            if not chunk:  # the last line, without a newline
                if text and not text.strip(b" \t\r"):
                    blank.append(lines_before + 1)
                if text and flag is not None and flag.search(text):
                    flagged.append(lines_before + 1)
                break
            end = text.rfind(b"\n") + 1
            segment, tail = text[:end], text[end:]
            if not segment:
                continue
            joined = b"\n" + segment  # the newline that ended the previous segment
            counted, position = 0, 0
            for match in blank_after.finditer(joined):
                counted += joined.count(b"\n", position, match.start())
                position = match.start()
                blank.append(lines_before + counted + 1)
            if flag is not None:
                counted, position = 0, 0
                for match in flag.finditer(segment):
                    counted += segment.count(b"\n", position, match.start())
                    position = match.start()
                    flagged.append(lines_before + counted + 1)
            lines_before += segment.count(b"\n")
    return np.unique(np.array(blank, dtype=np.int64)), np.unique(np.array(flagged, dtype=np.int64))


def first_bad_line(path, layout: Layout | None, only: set[int] | None = None) -> tuple[int, str] | None:
    """(line, problem) of the first bad line, looking at every line or only at the numbered ones."""
    with open_pieces(path) as handle:
        for number, raw in enumerate(handle, 1):
            if only is not None and number not in only:
                continue
            problem = check_line(raw.rstrip(b"\n"), layout)
            if problem:
                return number, problem
    return None
