"""Progress for the steps that take a while: a live display on a terminal, a plain line every ~10 s off one.

Code that does long work opens a step with a name a user understands, and a total where one is known:

    from auditor import progress
    with progress.step("pretraining tiny:base", total=1500, unit="steps") as step:
        for ...:
            step.advance()

Steps nest (a detector's step holds its scoring step). Library code reports to whatever reporter the
command installed (`with progress.reporting(progress.reporter_for(sys.stderr)): ...`); with none
installed a step costs a few attribute writes and prints nothing, so detectors stay silent in tests
and when used as a library. Everything goes to stderr, so JSON and reports on stdout stay clean.

Off a terminal (CI, nohup, a pipe) the reporter prints a line when an outermost step starts, one
every `interval` seconds while any step runs (the running steps, the outermost counted one with
done/total, rate and time left: see status_line), and one when a step that took longer than that
ends. On a terminal it draws rich's bars and keeps a line for each finished step that took more
than a couple of seconds. TRAIT_AUDIT_PROGRESS=plain|rich|off overrides the choice.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

PLAIN_INTERVAL_S = 10.0
KEEP_LINE_AFTER_S = 2.0  # a finished outermost step that took longer leaves a line on a terminal (where the time went)
NESTED_KEEP_AFTER_S = 30.0  # an inner step leaves one only when it took this long (not one per scoring batch)


def safe(text: str) -> str:
    """What a progress line may show: keys redacted, control characters and workflow commands made inert (step names
    carry paths, model references and server text)."""
    from auditor.inert import inert
    from auditor.redact import redact

    return inert(redact(text))


def _leaves_a_line(depth: int, seconds: float, outermost_after: float) -> bool:
    return seconds >= (outermost_after if depth == 0 else max(outermost_after, NESTED_KEEP_AFTER_S))


class Step:
    """One unit of work in progress: a name, how much is done of how much (total None: unknown)."""

    def __init__(self, name: str, total: int | None = None, unit: str = ""):
        self.name, self.total, self.unit = name, total, unit
        self.done = 0
        self.started = time.monotonic()
        self.reporter: _Reporter = _NULL

    def advance(self, count: int = 1) -> None:
        self.done += count
        self.reporter.changed(self)

    def update(self, done: int | None = None, total: int | None = None, name: str | None = None) -> None:
        if done is not None:
            self.done = done
        if total is not None:
            self.total = total
        if name is not None:
            self.name = name
        self.reporter.changed(self)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def status(self) -> str:
        """'pretraining tiny:base: 340/1500 steps, 2.8 steps/s, ~7m left, 2m01s so far' (the plain line)."""
        spent = self.elapsed()
        parts = [self.name]
        if self.total:
            counted = f"{self.done:,}/{self.total:,}" + (f" {self.unit}" if self.unit else "")
            rate = self.done / spent if spent > 0 else 0.0
            counted += f", {_rate(rate)} {self.unit or 'items'}/s" if self.done else ""
            if self.done and rate > 0 and self.done < self.total:
                counted += f", ~{duration((self.total - self.done) / rate)} left"
            parts.append(counted)
        elif self.done:
            parts.append(f"{self.done:,}" + (f" {self.unit}" if self.unit else ""))
        return ": ".join(parts[:2]) + f" ({duration(spent)} so far)"


def status_line(active: list[Step]) -> str:
    """The running steps, outermost first: the outermost one with a total in full (counts, rate, time left), inner
    ones with a total as counts, the others by name ("running detector probe > probe: training the student seed 1/3:
    40/300 steps, 2.1 steps/s, ~2m04s left (19s so far)"). The outermost counted step is the one whose time left
    matters: an inner one (a batch of a generation) restarts every few seconds."""
    parts, detailed = [], None
    for step in active:
        if step.total and detailed is None:
            detailed = step
            parts.append(step.status())
        elif step.total:
            parts.append(f"{step.name} {step.done:,}/{step.total:,}")
        else:
            parts.append(step.name)
    if detailed is None:
        parts[-1] = active[-1].status()
    return " > ".join(parts)


def _rate(per_second: float) -> str:
    """0.0326, 4.27, 91.1, 4,330."""
    return f"{per_second:,.0f}" if per_second >= 100 else f"{per_second:.3g}"


def duration(seconds: float) -> str:
    """3.2s, 45s, 2m05s, 1h03m."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class _Reporter:
    """Silent: what library code reports to when no command installed a reporter."""

    def started(self, step: Step) -> None: ...
    def changed(self, step: Step) -> None: ...
    def finished(self, step: Step) -> None: ...
    def note(self, text: str) -> None: ...
    def open(self) -> None: ...
    def close(self) -> None: ...


_NULL = _Reporter()
_current: _Reporter = _NULL


class PlainReporter(_Reporter):
    """Lines on a stream that is not a terminal: a step's start, its status every `interval` seconds, its end
    when it took that long. A ticker thread writes the status lines, so a step that reports no counts
    (loading, a detector's own work) still shows it is alive."""

    def __init__(self, stream=None, interval: float = PLAIN_INTERVAL_S, tick: float = 1.0):
        self.stream = stream or sys.stderr
        self.interval, self.tick = interval, tick
        self.active: list[Step] = []
        self.lock = threading.Lock()
        self.last_line = time.monotonic()
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def _line(self, text: str) -> None:
        self.last_line = time.monotonic()
        try:
            print(safe(text), file=self.stream, flush=True)
        except (OSError, ValueError):  # a closed pipe must not break the audit
            pass

    def open(self) -> None:
        self.thread = threading.Thread(target=self._tick, name="progress", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=2)

    def _tick(self) -> None:
        while not self.stop.wait(self.tick):
            self.beat()

    def beat(self) -> None:
        """The running steps' status line, if nothing was printed for `interval` seconds (see status_line)."""
        with self.lock:
            if self.active and time.monotonic() - self.last_line >= self.interval:
                self._line(status_line(self.active))

    def started(self, step: Step) -> None:
        with self.lock:
            self.active.append(step)
            if len(self.active) == 1:  # nested steps show in the status lines: a line per short inner step would flood a log
                self._line(step.name + (f" (0/{step.total:,} {step.unit})".replace(" )", ")") if step.total else ""))

    def changed(self, step: Step) -> None:
        if time.monotonic() - self.last_line >= self.interval:
            self.beat()

    def finished(self, step: Step) -> None:
        with self.lock:
            depth = self.active.index(step) if step in self.active else 0
            if step in self.active:
                self.active.remove(step)
            if _leaves_a_line(depth, step.elapsed(), self.interval):
                counted = f", {step.done:,} {step.unit}".rstrip() if step.done else ""
                self._line(f"{step.name}: done in {duration(step.elapsed())}{counted}")

    def note(self, text: str) -> None:
        with self.lock:
            self._line(text)


class RichReporter(_Reporter):
    """rich's live bars on a terminal: one line per running step (a bar where the total is known); a finished step
    that took more than KEEP_LINE_AFTER_S leaves a line with its time."""

    def __init__(self, console):
        from rich.progress import BarColumn, Progress, ProgressColumn, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.text import Text

        class Count(ProgressColumn):
            """'256/1,000 rows', or nothing while the total is unknown (rich's own column would say '0/?')."""

            def render(self, task):
                if task.total is None:
                    return Text("")
                unit = task.fields.get("unit") or ""
                return Text(f"{int(task.completed):,}/{int(task.total):,} {unit}".rstrip(), style="progress.download")

        self.console = console
        self.bar = Progress(SpinnerColumn(), TextColumn("{task.description}", markup=False), BarColumn(), Count(), TimeElapsedColumn(),
                            TimeRemainingColumn(), console=console, transient=True)
        self.tasks: dict[int, object] = {}  # id(step) -> rich task, in the order the steps started
        self.names: dict[int, str] = {}  # id(step) -> the name its task shows (made safe once per name)
        self.lock = threading.Lock()

    def open(self) -> None:
        self.bar.start()

    def close(self) -> None:
        self.bar.stop()

    def started(self, step: Step) -> None:
        with self.lock:
            self.tasks[id(step)] = self.bar.add_task(safe(step.name), total=step.total, completed=step.done, unit=step.unit)
            self.names[id(step)] = step.name

    def changed(self, step: Step) -> None:
        task = self.tasks.get(id(step))
        if task is None:
            return
        if step.name == self.names.get(id(step)):  # most calls only count: redacting the name each time is waste
            self.bar.update(task, completed=step.done, total=step.total)
        else:
            self.names[id(step)] = step.name
            self.bar.update(task, completed=step.done, total=step.total, description=safe(step.name))

    def finished(self, step: Step) -> None:
        with self.lock:
            depth = list(self.tasks).index(id(step)) if id(step) in self.tasks else 0
            task = self.tasks.pop(id(step), None)
            self.names.pop(id(step), None)
        if task is not None:
            self.bar.remove_task(task)
        if _leaves_a_line(depth, step.elapsed(), KEEP_LINE_AFTER_S):
            counted = f" ({step.done:,} {step.unit})" if step.done and step.unit else ""
            from rich.markup import escape

            self.console.print(f"[green]✓[/] {escape(safe(step.name))}{counted} [dim]{duration(step.elapsed())}[/]", highlight=False)

    def note(self, text: str) -> None:
        self.console.print(safe(text), highlight=False, markup=False)


def reporter_for(stream=None, quiet: bool = False) -> _Reporter:
    """Rich bars where `stream` is a terminal, plain lines elsewhere, nothing when quiet ($TRAIT_AUDIT_PROGRESS overrides)."""
    stream = stream or sys.stderr
    mode = os.environ.get("TRAIT_AUDIT_PROGRESS", "").strip().lower()
    if quiet or mode == "off":
        return _NULL
    if mode == "plain" or (mode != "rich" and not _is_terminal(stream)):
        return PlainReporter(stream)
    from rich.console import Console

    return RichReporter(Console(file=stream))


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        return False


@contextlib.contextmanager
def reporting(reporter: _Reporter) -> Iterator[_Reporter]:
    """Install `reporter` for the steps opened inside (the CLI does this once per command)."""
    global _current
    before = _current
    _current = reporter
    _quiet_library_bars()  # also when quiet (-q, --json, TRAIT_AUDIT_PROGRESS=off): quiet means no bars at all
    reporter.open()
    try:
        yield reporter
    finally:
        reporter.close()
        _current = before


_running: list[Step] = []  # the steps open now, outermost first


@contextlib.contextmanager
def step(name: str, total: int | None = None, unit: str = "") -> Iterator[Step]:
    """A step of work shown while it runs (see the module docstring). A step named like the innermost running one joins
    it (the CLI opens "loading tiny:owl" before the imports that load_model's own "loading tiny:owl" needs)."""
    if _running and _running[-1].name == name and total is None:
        yield _running[-1]
        return
    current = Step(name, total, unit)
    current.reporter = _current
    current.reporter.started(current)
    _running.append(current)
    try:
        yield current
    finally:
        _running.remove(current)
        current.reporter.finished(current)


def _quiet_library_bars() -> None:
    """transformers' and datasets' own tqdm bars ("Writing model shards", "Loading weights") would interleave with
    ours: our steps name the work instead."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()


def track(items: Iterable[T], name: str, total: int | None = None, unit: str = "", count: Callable[[T], int] | None = None) -> Iterator[T]:
    """`items` shown as a step: each item counts `count(item)` (default 1) once the loop body is done with it.
    For a loop that a `with` block would have to re-indent; the step ends with the loop (or its exception)."""
    with step(name, total, unit) as shown:
        for item in items:
            yield item
            shown.advance(count(item) if count else 1)


def note(text: str) -> None:
    """A line that stays (a cost estimate, a warning) on the installed reporter."""
    _current.note(text)


class Counter:
    """A step driven by counts from a callback (`counter(done, total)`): opened at the first count, closed when done
    reaches total or on close(). For code that reports counts rather than opening a step (the judge's events)."""

    def __init__(self, name: str, unit: str = ""):
        self.name, self.unit = name, unit
        self.context: contextlib.AbstractContextManager | None = None
        self.shown: Step | None = None

    def __call__(self, done: int, total: int | None = None) -> None:
        if self.shown is None:
            self.context = step(self.name, total, self.unit)
            self.shown = self.context.__enter__()
        self.shown.update(done, total)
        if total is not None and done >= total:
            self.close()

    def close(self) -> None:
        if self.context is not None:
            self.context.__exit__(None, None, None)
        self.context = self.shown = None


class Phases:
    """Adapts a flat `progress(message)` callback (the runner's) to steps: each message ends the previous phase and
    opens the next; messages starting with "note: " are printed and stay."""

    def __init__(self):
        self.open_step: contextlib.AbstractContextManager | None = None

    def __call__(self, message: str) -> None:
        if message.startswith("note: "):
            note(message.removeprefix("note: "))
            return
        self.close()
        self.open_step = step(message)
        self.open_step.__enter__()

    def close(self) -> None:
        if self.open_step is not None:
            self.open_step.__exit__(None, None, None)
            self.open_step = None
