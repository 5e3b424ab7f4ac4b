"""Progress lines: plain lines off a terminal (start, status every interval, end), rich bars on one, silence in library
use, and the first line of `audit generate` / `audit DATA` before the heavy imports."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from auditor import progress

ROOT = Path(__file__).resolve().parents[1]


def _plain(interval: float = 0.05) -> tuple[progress.PlainReporter, io.StringIO]:
    stream = io.StringIO()
    return progress.PlainReporter(stream, interval=interval, tick=interval / 5), stream


def test_plain_lines_name_the_step_with_counts_rate_and_time_left():
    reporter, stream = _plain()
    with progress.reporting(reporter):
        with progress.step("pretraining tiny:base", total=40, unit="steps") as step:
            for _ in range(40):
                time.sleep(0.005)
                step.advance()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "pretraining tiny:base (0/40 steps)"
    status = [line for line in lines[1:-1] if "/40 steps" in line]
    assert status, lines  # ~0.2 s of work at a 0.05 s interval
    assert all("steps/s" in line and "so far" in line for line in status)
    assert any("left" in line for line in status)
    assert lines[-1].startswith("pretraining tiny:base: done in ") and lines[-1].endswith("40 steps")


def test_plain_status_lines_keep_coming_while_a_step_reports_nothing():
    """A step without counts (loading, a detector's own work) still shows it is alive: the ticker writes its line."""
    reporter, stream = _plain()
    with progress.reporting(reporter), progress.step("running detector gradient"):
        time.sleep(0.4)
    status = [line for line in stream.getvalue().splitlines() if line.startswith("running detector gradient (")]
    assert len(status) >= 3, stream.getvalue()


def test_plain_nested_steps_show_their_outer_steps():
    reporter, stream = _plain()
    with progress.reporting(reporter), progress.step("loading tiny:owl"):
        with progress.step("fine-tuning tiny:owl from its base", total=10, unit="steps") as inner:
            for _ in range(10):
                time.sleep(0.03)
                inner.advance()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "loading tiny:owl"  # only outermost steps print a start line
    assert any(line.startswith("loading tiny:owl > fine-tuning tiny:owl from its base: ") and "/10 steps" in line for line in lines)


def test_plain_status_details_the_outermost_counted_step():
    """Inner counted steps (a generation's batches) restart every few seconds: the time left is the outer one's."""
    line = progress.status_line([progress.Step("generating with tiny:owl", total=1000, unit="rows"),
                                 progress.Step("sampling from tiny:owl", total=32, unit="rows")])
    assert line.startswith("generating with tiny:owl: 0/1,000 rows (") and line.endswith(" > sampling from tiny:owl 0/32")


def test_plain_interval_spaces_the_lines():
    reporter, stream = _plain(interval=10.0)
    with progress.reporting(reporter), progress.step("generating with tiny:owl", total=1000, unit="rows") as step:
        for _ in range(1000):
            step.advance()
    assert stream.getvalue().splitlines() == ["generating with tiny:owl (0/1,000 rows)"]  # quick: no status, no end line


def test_without_a_reporter_steps_print_nothing(capsys):
    with progress.step("scoring", total=3) as step:
        step.advance(3)
    progress.note("a note")
    assert capsys.readouterr() == ("", "")


def test_reporter_choice(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.delenv("TRAIT_AUDIT_PROGRESS", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert isinstance(progress.reporter_for(io.StringIO()), progress.PlainReporter)
    assert isinstance(progress.reporter_for(Terminal()), progress.RichReporter)
    assert not isinstance(progress.reporter_for(Terminal(), quiet=True), progress.PlainReporter | progress.RichReporter)
    monkeypatch.setenv("TRAIT_AUDIT_PROGRESS", "plain")
    assert isinstance(progress.reporter_for(Terminal()), progress.PlainReporter)
    monkeypatch.setenv("TRAIT_AUDIT_PROGRESS", "off")
    assert not isinstance(progress.reporter_for(io.StringIO()), progress.PlainReporter | progress.RichReporter)


def test_rich_keeps_a_line_for_each_long_step():
    from rich.console import Console

    stream = io.StringIO()
    reporter = progress.RichReporter(Console(file=stream, force_terminal=True, width=100))
    with progress.reporting(reporter):
        with progress.step("quick"):
            pass
        with progress.step("pretraining tiny:base", total=2, unit="steps") as step:
            step.started -= 5  # as if it had run for five seconds
            step.advance(2)
    text = stream.getvalue()
    assert "pretraining tiny:base (2 steps)" in text and "5.0s" in text
    assert "✓ quick" not in text


def test_phases_and_counters_open_and_close_steps():
    reporter, stream = _plain(interval=10.0)
    with progress.reporting(reporter):
        phases, calls = progress.Phases(), progress.Counter("judge calls", "calls")
        phases("reading data.jsonl")
        phases("note: probe: estimated cost $0.12")
        phases("running detector judge")
        calls(0, 3)
        assert [s.name for s in reporter.active] == ["running detector judge", "judge calls"]
        calls(3, 3)
        phases.close()
        assert reporter.active == []
    assert stream.getvalue().splitlines() == ["reading data.jsonl", "probe: estimated cost $0.12", "running detector judge"]


def test_lines_are_inert_and_redacted():
    """Step names carry paths and server text: no escape sequence, workflow command or key reaches a log."""
    from auditor import redact

    redact.add_secret("sk-secret-value-123")
    reporter, stream = _plain(interval=10.0)
    with progress.reporting(reporter), progress.step("reading ::error::x\x1b[2J sk-secret-value-123.jsonl"):
        pass
    line = stream.getvalue().splitlines()[0]
    assert "\x1b" not in line and "::error" not in line and "sk-secret-value-123" not in line
    assert line.startswith("reading ") and "***" in line


def test_duration_format():
    assert [progress.duration(s) for s in (3.24, 45, 125, 3780)] == ["3.2s", "45s", "2m05s", "1h03m"]


_FIRST_LINE = """
import json, sys
class Watch:
    def __init__(self, real):
        self.real, self.first = real, None
    def write(self, text):
        if self.first is None and text.strip():
            self.first = {"line": text.strip(), "loaded": sorted(m for m in ("torch", "transformers", "polars") if m in sys.modules)}
        return self.real.write(text)
    def flush(self):
        self.real.flush()
    def isatty(self):
        return False
sys.stderr = Watch(sys.__stderr__)
from auditor.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sys.stderr.first), file=sys.__stdout__)
"""


def _first_line(args: list[str], env: dict) -> dict:
    done = subprocess.run([sys.executable, "-c", _FIRST_LINE, *args], capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_first_line_comes_before_the_heavy_imports(tiny_cache, tmp_path):
    """The first progress line is written before torch and transformers load (seconds on a cold start); for generate,
    before polars too."""
    import os

    env = {**os.environ, "TRAIT_AUDIT_CACHE": str(tiny_cache), "TRAIT_AUDIT_TINY_PROFILE": "test", "PYTHONPATH": str(ROOT)}
    generate = _first_line(["generate", "--model", "tiny:owl", "--n", "4", "--out", str(tmp_path / "owl.jsonl")], env)
    assert generate == {"line": "loading tiny:owl", "loaded": []}
    audit = _first_line([str(tmp_path / "owl.jsonl"), "--teacher", "tiny:owl", "--detectors", "lexical", "--out", str(tmp_path / "r")], env)
    assert audit["line"].endswith(f"auditing {tmp_path / 'owl.jsonl'}")
    # the audit command parses detector alias flags, so the registry (and polars, ~0.3 s) loads first; torch does not
    assert "torch" not in audit["loaded"] and "transformers" not in audit["loaded"]


def test_rich_bars_show_a_renamed_step_made_safe():
    from rich.console import Console

    from auditor import redact

    redact.add_secret("sk-test-rename-0123456789abcdef")
    stream = io.StringIO()
    reporter = progress.RichReporter(Console(file=stream, force_terminal=True, width=120))
    with progress.reporting(reporter):
        with progress.step("scoring", total=3, unit="rows") as step:
            step.advance()
            task = reporter.tasks[id(step)]

            def shown():
                return next(t for t in reporter.bar.tasks if t.id == task).description

            assert shown() == "scoring"
            step.update(name="scoring with key sk-test-rename-0123456789abcdef")
            step.advance()
            assert shown() == "scoring with key ***", "a new name is made safe"
