"""Detector settings through the command line: -o, audit.toml tables, alias flags, a plugin's own setting,
redaction of secrets, and no detector wiring in cli.py or runner.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner
from conftest import FIXTURES, ROOT

from auditor.cli import MAIN, main
from detectors import DETECTORS
from detectors.settings import specs

DATA = FIXTURES / "numbers_clean.jsonl"
SECRET = "sk-plugin-SECRET-never-written-0123456789"

PLUGIN = '''
from dataclasses import dataclass

from detectors.base import Detector, DetectorResult
from detectors.settings import setting


@dataclass
class EchoSettings:
    greeting: str = setting("hello", "what the detector says back")
    repeat: int = setting(1, "how many times it says it", minimum=1, alias="--echo-repeat")
    key: str | None = setting(None, "a token it only checks for", secret=True, alias="--echo-key")


class Echo(Detector):
    name = "echo"
    description = "plugin detector with settings"
    Settings = EchoSettings

    def run(self, ctx):
        said = " ".join([self.settings.greeting] * self.settings.repeat)
        return DetectorResult(metrics={"said": said, "has_key": self.settings.key is not None})
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """The `echo` detector installed the way a third-party package is: a module and a dist-info with an entry point."""
    site = tmp_path / "site"
    (site / "echo_plugin").mkdir(parents=True)
    (site / "echo_plugin" / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    dist = site / "echo_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[trait_audit.detectors]\necho = echo_plugin:Echo\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(DETECTORS, "_targets", dict(DETECTORS._targets))
    monkeypatch.setattr(DETECTORS, "_origins", dict(DETECTORS._origins))
    monkeypatch.setattr(DETECTORS, "_plugins_loaded", False)
    run = main.commands[MAIN]
    monkeypatch.setattr(run, "_aliases", None)  # the alias flags are read again, with the plugin's
    monkeypatch.setattr(run, "params", list(run.params))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def audit(out, *args):
    result = CliRunner().invoke(main, [str(DATA), "--detectors", "lexical,echo", "--out", str(out), *map(str, args)])
    assert "Traceback" not in result.output, result.output
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else None
    return result, report


def said(report):
    return next(d for d in report["detectors"] if d["name"] == "echo")["metrics"]["said"]


def test_a_plugin_setting_arrives_through_o_and_audit_toml(plugin):
    result, report = audit(plugin / "a", "-o", "echo.greeting=hi")
    assert result.exit_code == 0, result.output
    assert said(report) == "hi"
    assert said(audit(plugin / "b")[1]) == "hello", "the default"

    (plugin / "audit.toml").write_text('[detectors.echo]\ngreeting = "from the file"\nrepeat = 2\n')
    assert said(audit(plugin / "c")[1]) == "from the file from the file"
    assert said(audit(plugin / "d", "-o", "echo.greeting=cli")[1]) == "cli cli", "-o wins over the file"
    assert said(audit(plugin / "e", "-o", "echo.repeat=3", "--echo-repeat", "1")[1]) == "from the file", "a flag wins over -o"

    (plugin / "audit.toml").write_text('echo-repeat = 2\n')
    assert said(audit(plugin / "f")[1]) == "hello hello", "a top-level key named like an alias flag is a file setting"

    (plugin / "audit.toml").unlink()
    (plugin / "pyproject.toml").write_text('[project]\nname = "x"\n\n[tool.trait-audit.detectors.echo]\ngreeting = "pyproject"\n')
    assert said(audit(plugin / "g")[1]) == "pyproject"


@pytest.mark.parametrize("args,toml,message", [
    (["-o", "echo.repeat=abc"], None, "-o echo.repeat=abc: expected an integer"),
    (["-o", "echo.repeat=0"], None, "-o echo.repeat=0: must be at least 1"),
    (["--echo-repeat", "two"], None, "--echo-repeat two: expected an integer"),
    (["-o", "echo.greting=hi"], None, "detector 'echo' has no setting 'greting'; its settings are greeting, repeat, key"),
    (["-o", "ehco.greeting=hi"], None, "unknown detector 'ehco'"),
    (["-o", "echo"], None, "expected NAME.KEY=VALUE"),
    ([], '[detectors.echo]\nrepeat = "x"\n', "audit.toml [detectors.echo] repeat = 'x': expected an integer"),
    ([], '[detectors.echo]\nloud = true\n', "detector 'echo' has no setting 'loud'"),
    ([], '[detectors.nope]\nrows = 1\n', "audit.toml [detectors.nope] rows"),
    ([], 'echo-repeat = 0\n', "audit.toml echo_repeat = 0: must be at least 1"),
])
def test_bad_settings_exit_2_naming_the_source_before_any_work(plugin, args, toml, message):
    if toml:
        (plugin / "audit.toml").write_text(toml)
    result, report = audit(plugin / "out", *args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert report is None and not (plugin / "out").exists()


def test_help_and_detectors_list_the_plugin_setting(plugin):
    run_help = CliRunner().invoke(main, ["run", "--help"]).output
    top_help = CliRunner().invoke(main, ["--help"]).output
    for text in (run_help, top_help):
        assert "--echo-repeat" in text and "-o echo.repeat" in text
        assert "--teacher" in text and "--fail-on" in text and "NAME.KEY=VALUE" in text, "the audit's own options"
    assert "Commands:" in top_help and "detectors" in top_help

    listed = json.loads(CliRunner().invoke(main, ["detectors", "--json"]).output)
    echo = next(d for d in listed if d["name"] == "echo")
    assert echo["origin"] == "entry point from echo-plugin"
    repeat = next(s for s in echo["settings"] if s["name"] == "repeat")
    assert repeat == {"name": "repeat", "type": "int", "default": 1, "help": "how many times it says it", "alias": ["--echo-repeat"],
                      "choices": None, "minimum": 1, "maximum": None, "secret": False}
    piped = CliRunner().invoke(main, ["detectors"]).output  # not a terminal: plain lines
    assert "echo (entry point from echo-plugin; sees hidden transfer: no; runs by default: yes)" in piped
    assert "echo settings: -o echo.KEY=VALUE" in piped and "repeat = 1  (int; at least 1; flag --echo-repeat)" in piped
    assert "┃" not in piped, "no table squeezed into a pipe"


def test_secret_settings_are_redacted_from_the_report(plugin, monkeypatch):
    argv = [str(DATA), "--detectors", "lexical,echo", "--out", str(plugin / "r"), "--echo-key", SECRET, "-o", f"echo.key={SECRET}",
            f"--echo-key={SECRET}", f"-oecho.key={SECRET}", f"--option=echo.key={SECRET}", "-o", "echo.greeting=visible"]
    monkeypatch.setattr(sys, "argv", ["audit", *argv])  # the report records (redacted) argv
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 0, result.output
    report = json.loads((plugin / "r" / "report.json").read_text())
    assert next(d for d in report["detectors"] if d["name"] == "echo")["metrics"]["has_key"] is True
    assert report["run"]["argv"][5:] == ["--echo-key", "***", "-o", "echo.key=***", "--echo-key=***", "-oecho.key=***",
                                         "--option=echo.key=***", "-o", "echo.greeting=visible"]
    for path in (plugin / "r").rglob("*"):
        assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in result.output


def _spellings(name: str) -> set[str]:
    """Every way cli.py or runner.py could name a detector or one of its settings."""
    words = {name}
    for spec in specs(DETECTORS.get(name).Settings):
        words |= {f"{name}.{spec.key}", f"{name}_{spec.key}", f"{name}-{spec.key}".replace("_", "-")}
        for flag in spec.alias:
            words |= {flag, flag.lstrip("-").replace("-", "_")}
    return words


def test_cli_and_runner_name_no_detector_and_no_detector_option():
    sources = {path.name: path.read_text() for path in (ROOT / "auditor" / "cli.py", ROOT / "auditor" / "cli_settings.py", ROOT / "auditor" / "runner.py")}
    found = []
    for name in DETECTORS.names():
        for word in _spellings(name):
            pattern = rf"(?<![\w-]){re.escape(word)}(?![\w-])"
            found += [(file, word) for file, text in sources.items() if re.search(pattern, text, re.IGNORECASE)]
    assert not found, f"detector wiring in the CLI or runner: {found}"
    assert len(DETECTORS.names()) >= 7 and "--judge" in _spellings("judge") and "-j" in _spellings("judge"), "the check checks"


def test_other_commands_do_not_import_the_detectors():
    code = ("import sys\nfrom click.testing import CliRunner\nfrom auditor.cli import main\n"
            "for args in (['traits'], ['generate', '--help'], ['profile', '--help']):\n"
            "    assert CliRunner().invoke(main, args).exit_code == 0, args\n"
            "print(sorted(m for m in sys.modules if m.startswith('detectors.')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
