"""Errors the CLI turns into exit codes: 2 for bad usage or input, 3 for a backend that failed."""

from __future__ import annotations

from pathlib import Path


class AuditError(Exception):
    """Base of every error the CLI reports without a traceback."""

    exit_code = 2


class UsageError(AuditError):
    """A flag, reference or option that cannot work."""


class InputError(AuditError):
    """Bad input data: always names the file and, where it can, the line (or item, or row)."""

    def __init__(self, path: str | Path, message: str, line: int | None = None, unit: str = "line"):
        self.path = str(path)
        self.line = line
        self.unit = unit
        self.problem = message
        where = self.path if line is None else f"{self.path}:{line}"
        label = "" if line is None or unit == "line" else f" ({unit} {line})"
        super().__init__(f"{where}: {message}{label}")


class BackendError(AuditError):
    """A model or API backend failed so that the verdict would be unusable."""

    exit_code = 3


class OutputError(AuditError):
    """An output that cannot be written (unwritable or full folder, or a path that would overwrite an input)."""

    def __init__(self, path: str | Path, message: str):
        self.path = str(path)
        self.problem = message
        super().__init__(f"{self.path}: {message}")


class InternalError(AuditError):
    """A bug or an unexpected failure inside the tool: the verdict is unusable."""

    exit_code = 3
