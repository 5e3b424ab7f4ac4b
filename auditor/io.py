"""Writing outputs safely: atomic files, report sets that are all new or all old, and no output over an input.

A reader never sees a half-written file: each is written to a temporary file in the target folder,
flushed to disk and renamed over the target. A folder that cannot be written (read-only, full, a file
where a folder should be) is an OutputError naming the path: exit 2, the user's problem to fix.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from auditor import tempfiles
from auditor.errors import OutputError


def _problem(err: OSError) -> str:
    reasons = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
               errno.EACCES: "permission denied", errno.EPERM: "permission denied", errno.EROFS: "read-only file system",
               errno.ENOTDIR: "a parent is a file, not a folder", errno.EISDIR: "is a folder, not a file"}
    return f"cannot write here: {reasons.get(err.errno, err.strerror or str(err))}"


def _where(err: OSError, path: Path) -> Path:
    return Path(err.filename) if getattr(err, "filename", None) and err.errno in (errno.ENOTDIR, errno.EACCES, errno.EROFS) else path


def _mkdirs(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(folder, "cannot write here: it is a file, not a folder") from None
    except OSError as err:
        raise OutputError(_where(err, folder), _problem(err)) from None


def _stage(path: Path, data: bytes) -> str:
    """Write data to a registered temporary file beside path, on disk; returns its name."""
    _mkdirs(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise OutputError(_where(err, path), _problem(err)) from None
    tempfiles.register(tmp)
    with _removed_on_failure(tmp, path):
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())  # a full disk shows up here, not after the rename
    return tmp


@contextlib.contextmanager
def _removed_on_failure(tmp: str, path: Path):
    """A failure inside removes the temporary file; an OSError becomes an OutputError naming `path`."""
    try:
        yield
    except OSError as err:
        tempfiles.remove(tmp)
        raise OutputError(path, _problem(err)) from None
    except BaseException:
        tempfiles.remove(tmp)
        raise


def write_atomic(path: Path, text: str) -> None:
    path = Path(path)
    tmp = _stage(path, text.encode("utf-8"))
    with _removed_on_failure(tmp, path):
        os.replace(tmp, path)
    tempfiles.unregister(tmp)  # renamed into place: nothing left to remove


def write_set_atomic(items: Iterable[tuple[Path, str]]) -> list[Path]:
    """Write several files as one set: every file is staged first, so a full or unwritable folder leaves
    the old set whole; then each is renamed into place, and a failed rename puts the old files back."""
    items = [(Path(p), text) for p, text in items]
    staged: list[tuple[Path, str]] = []
    try:
        for path, text in items:
            staged.append((path, _stage(path, text.encode("utf-8"))))
        _commit(staged)
    finally:
        for _, tmp in staged:
            if os.path.lexists(tmp):  # not renamed: a failure on the way
                tempfiles.remove(tmp)
            tempfiles.unregister(tmp)
    return [path for path, _ in items]


def _commit(staged: list[tuple[Path, str]]) -> None:
    backups: dict[Path, str | None] = {}
    try:
        for path, tmp in staged:
            backups[path] = _backup(path)
            os.replace(tmp, path)
    except OSError as err:
        for done, backup in backups.items():  # put back what was there, remove what was new
            with contextlib.suppress(OSError):
                if backup:
                    os.replace(backup, done)
                elif done.exists():
                    done.unlink()
        raise OutputError(path, _problem(err)) from None
    finally:
        for backup in backups.values():
            if backup:
                tempfiles.remove(backup)


def _backup(path: Path) -> str | None:
    """A hard link to the current file (no copy), so a failed set can be rolled back; None when there is none."""
    if not path.is_file():
        return None
    backup = str(path.parent / f".{path.name}.{os.getpid()}.bak")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(backup)
    try:
        os.link(path, backup)
    except OSError:
        return None  # no hard links here: the set is still staged whole, only a failed rename cannot be undone
    tempfiles.register(backup)
    return backup


# --- outputs that would overwrite inputs -------------------------------------------------------------


def _same(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def _inside(path: Path, folder: Path) -> bool:
    try:
        return folder.is_dir() and path.resolve().is_relative_to(folder.resolve())
    except OSError:
        return False


def refuse_overwrites(inputs: dict[str, str | Path | None], outputs: dict[str, str | Path | None],
                      allowed: Iterable[tuple[str, str]] = ()) -> None:
    """Raise OutputError before anything is written when an output would replace an input (or land inside
    an input folder), or two outputs are the same file. `allowed`: (output, input) label pairs that may be
    the same file on purpose (--write-baseline updating --baseline)."""
    allowed = set(allowed)
    given_in = {label: Path(p) for label, p in inputs.items() if p is not None}
    given_out = {label: Path(p) for label, p in outputs.items() if p is not None}
    for out_label, out in given_out.items():
        for in_label, source in given_in.items():
            if (out_label, in_label) in allowed:
                continue
            if _same(out, source) or _inside(out, source):
                raise OutputError(out, f"{out_label} would overwrite the input given as {in_label} ({source}); choose another path")
    seen: dict[Path, str] = {}
    for out_label, out in given_out.items():
        key = out.resolve()
        if key in seen:
            raise OutputError(out, f"{out_label} and {seen[key]} name the same file")
        seen[key] = out_label
