"""Temporary files that never outlive the audit: a registry, and signal handling that empties it.

Decompressed inputs, flag spools and half-written outputs are registered here while they exist. On
SIGINT or SIGTERM a watcher thread removes every registered path and ends the process with the usual
128 + signal number. It is a thread, not a plain signal handler, because Python runs handlers only
between bytecodes of the main thread: a long polars query would hold SIGTERM back until it finished,
and a process manager that follows up with SIGKILL would leave the copies behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

_LOCK = threading.Lock()
_PATHS: set[str] = set()
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def register(path: str | Path) -> None:
    with _LOCK:
        _PATHS.add(str(path))


def unregister(path: str | Path) -> None:
    with _LOCK:
        _PATHS.discard(str(path))


def registered() -> list[str]:
    with _LOCK:
        return sorted(_PATHS)


def remove(path: str | Path) -> None:
    """Remove a registered file or folder (whatever is left of it) and forget it."""
    path = str(path)
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    unregister(path)


def remove_all() -> None:
    for path in registered():
        remove(path)


def private_dir(prefix: str = "trait-audit-") -> Path:
    """A new folder only this user can read (mkdtemp makes it 0700), registered for removal."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    register(folder)
    return folder


@contextlib.contextmanager
def temporary_dir(prefix: str = "trait-audit-") -> Iterator[Path]:
    folder = private_dir(prefix)
    try:
        yield folder
    finally:
        remove(folder)


@contextlib.contextmanager
def cleanup_on_signals() -> Iterator[None]:
    """While inside, SIGINT/SIGTERM remove every registered temporary path and exit 130/143.

    Only the main thread can install handlers; elsewhere (a test runner's worker thread) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    previous = {sig: signal.getsignal(sig) for sig in _SIGNALS}
    # the C-level handler writes the signal number to the wakeup fd at once, whatever the main thread is doing
    old_wakeup = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    for sig in _SIGNALS:
        signal.signal(sig, lambda *_: None)  # a Python handler must exist for the wakeup fd to be written

    def watch() -> None:
        while True:
            try:
                data = os.read(read_end, 1)
            except OSError:
                return
            if not data or data[0] == 0:  # the pipe closed, or our own "stop" byte
                return
            if data[0] in _SIGNALS:
                remove_all()
                os._exit(128 + data[0])

    watcher = threading.Thread(target=watch, name="trait-audit-signals", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(old_wakeup)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        with contextlib.suppress(OSError):
            os.write(write_end, b"\x00")
        watcher.join(timeout=1)
        os.close(write_end)
        os.close(read_end)
