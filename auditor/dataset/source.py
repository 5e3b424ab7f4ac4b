"""Input files, read literally and exactly: the bytes hashed for the report are the bytes audited.

- A path is opened as given (no glob expansion anywhere: readers get the pinned path below).
- Only regular files are read: the file is opened non-blocking and checked with fstat, so a FIFO or a
  device is refused at once instead of hanging the audit or reading /dev/zero forever.
- On Linux the open file is pinned: readers (polars, pyarrow) open /proc/self/fd/N, which is the inode
  that was checked and hashed, whatever happens to the path meanwhile. Elsewhere they open the path, and
  `unchanged()` notices a replaced or modified file.
- One streaming pass hashes the file and checks its bytes (byte-order mark, CRLF, whitespace only, the
  longest line, the total size) in fixed-size chunks, so a 10 GB line or a gzip bomb never sits in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from auditor.errors import InputError
from auditor.limits import DEFAULT_MAX_INPUT_GIB  # noqa: F401  (re-exported; defined where the CLI imports it without polars)

CHUNK = 2**22
_PROC_FD = Path("/proc/self/fd")

_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))


def polars_literal(path: str | Path) -> str:
    """A path for polars readers that glob with no way to turn it off (scan_ndjson): glob characters bracketed."""
    return re.sub(r"([*?\[\]])", r"[\1]", str(path))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


@dataclass
class Source:
    """One open, regular input file."""

    path: Path  # as the user gave it: errors and the report name it
    fd: int
    stat: os.stat_result
    sha256: str = ""
    size: int = 0
    closed: bool = field(default=False, repr=False)

    @property
    def read_path(self) -> str:
        """What readers open: the pinned inode on Linux, else the literal path."""
        return str(_PROC_FD / str(self.fd)) if _PROC_FD.is_dir() else polars_literal(self.path)

    def open(self):
        """A new binary handle on the same file (its own offset)."""
        return open(self.read_path, "rb")  # noqa: SIM115 (the caller closes it)

    def unchanged(self) -> bool:
        """False when the file was modified or replaced since it was opened."""
        try:
            now = os.fstat(self.fd)
            at_path = os.stat(self.path)
        except OSError:
            return False
        same = lambda a, b: (a.st_dev, a.st_ino, a.st_size, a.st_mtime_ns) == (b.st_dev, b.st_ino, b.st_size, b.st_mtime_ns)  # noqa: E731
        return same(now, self.stat) and same(at_path, self.stat)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(OSError):
                os.close(self.fd)


def open_source(path: Path, what: str = "input") -> Source:
    """Open a regular file without blocking (a FIFO would block a plain open) and check what it is."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise InputError(path, "no such file or folder") from None
    except OSError as err:
        raise InputError(path, f"cannot open the {what}: {err.strerror}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise InputError(path, f"is {_kind(info.st_mode)}, not a regular file: only regular files (or a saved HF datasets folder) are read")
    os.set_blocking(fd, True)
    return Source(Path(path), fd, info)


def check_kind(path: Path) -> str:
    """'file', 'folder' or an InputError for anything else (FIFO, device, socket, missing). Never opens it."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise InputError(path, "no such file or folder") from None
    except OSError as err:
        raise InputError(path, f"cannot read it: {err.strerror}") from None
    if stat.S_ISDIR(info.st_mode):
        return "folder"
    if stat.S_ISREG(info.st_mode):
        return "file"
    raise InputError(path, f"is {_kind(info.st_mode)}, not a regular file: only regular files (or a saved HF datasets folder) are read")


class ByteChecker:
    """Fed the data in chunks: refuses a byte-order mark, CRLF line ends (JSON Lines), a line over the row
    limit and more than the size limit; knows whether anything but whitespace came."""

    def __init__(self, path: Path, text_format: bool, max_line_bytes: int | None, max_bytes: int, size_flag: str = "--max-input-gib"):
        self.path = path
        self.text_format = text_format
        self.max_line = max_line_bytes
        self.max_bytes = max_bytes
        self.size_flag = size_flag
        self.total = 0
        self.lines = 0  # complete lines so far
        self.run = 0  # bytes of the line in progress
        self.content = False
        self.last = b""

    def feed(self, chunk: bytes) -> None:
        if self.total == 0 and chunk:
            if chunk.startswith(b"\xef\xbb\xbf"):
                raise InputError(self.path, "starts with a UTF-8 byte-order mark (BOM); save it as UTF-8 without BOM", line=1)
        if self.total + len(chunk) > self.max_bytes:
            raise InputError(self.path, f"holds more than {self.max_bytes / 2**30:g} GiB of data ({self.size_flag} raises the limit)")
        self.content = self.content or re.search(rb"\S", chunk) is not None
        if self.text_format:
            tail = self.last[-1:]  # a CRLF may straddle two chunks
            crlf = (tail + chunk).find(b"\r\n")
            if crlf >= 0:
                line = self.lines + chunk[: max(crlf - len(tail), 0)].count(b"\n") + 1
                raise InputError(self.path, "Windows line ending (CRLF); JSON Lines rows end in \\n alone (convert with dos2unix)", line=line)
        if self.max_line is not None:
            self._line_lengths(chunk)
        else:
            self.lines += chunk.count(b"\n")
        self.total += len(chunk)
        self.last = chunk[-1:]

    def _line_lengths(self, chunk: bytes) -> None:
        ends = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == 10)
        if len(ends) == 0:
            self.run += len(chunk)
            if self.run > self.max_line:
                self._too_long(self.lines + 1)
            return
        lengths = np.diff(ends, prepend=-1) - 1
        lengths[0] += self.run
        over = np.flatnonzero(lengths > self.max_line)
        if len(over):
            self._too_long(self.lines + int(over[0]) + 1)
        self.lines += len(ends)
        self.run = len(chunk) - int(ends[-1]) - 1
        if self.run > self.max_line:
            self._too_long(self.lines + 1)

    def _too_long(self, line: int) -> None:
        raise InputError(self.path, f"line is over the {self.max_line / 2**20:g} MiB row limit (--max-row-mib)", line=line)

    def finish(self) -> None:
        if self.total == 0:
            raise InputError(self.path, "file is empty: no rows to audit")
        if not self.content:
            raise InputError(self.path, "file holds only whitespace: no rows to audit")


def hash_and_check(source: Source, checker: ByteChecker | None) -> None:
    """One pass over the file: its sha256 and size into `source`, its bytes through `checker`."""
    digest = hashlib.sha256()
    size = 0
    with source.open() as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            if checker is not None:
                checker.feed(chunk)
    if checker is not None:
        checker.finish()
    source.sha256, source.size = digest.hexdigest(), size


class HashingReader:
    """A file wrapper that hashes (sha256, or the `digest` given) and counts what is read through it."""

    def __init__(self, raw, digest=None):
        self.raw, self.digest, self.size = raw, digest or hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.digest.update(data)
        self.size += len(data)
        return data

    def readable(self) -> bool:
        return True
