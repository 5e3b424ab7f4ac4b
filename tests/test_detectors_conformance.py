"""One contract every registered detector passes (garak-style), plus the registry and plugin discovery.

The contract runs every registered detector for real: a full audit with the tiny model family (`tiny:owl`
teacher, `tiny:base` base, test profile), number data those models wrote as dataset and reference, focus
trait animal:owl, the judge through the local fake OpenAI-compatible server, and the probe on its smallest
settings that still train two seeds. A detector that skips fails the contract: passing by not running
proves nothing. A new detector (a plugin too) is held to the same contract the moment it is registered.
"""

import io
import json
import sys
import textwrap
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import replace

import pytest
from click.testing import CliRunner
from conftest import FIXTURES
from judge_fake import FakeJudge
from openai_server import FakeOpenAI

from auditor.dataset import load_dataset
from auditor.errors import UsageError
from auditor.reports import validate_result
from auditor.traits import load_catalog
from detectors import DETECTORS, AuditContext, Detector, DetectorResult
from detectors.base import FLAG_SCHEMA, LEVELS
from detectors.registry import Registry

FOCUS = "animal:owl"
GENERATED_ROWS = 64  # per side, before the paper's filter; enough for the probe's and gradient's minimums
# the probe on its smallest settings that still train and give an interval over seeds: two seed pairs, one epoch
PROBE = ["--probe-seeds", "2", "--probe-epochs", "1", "--probe-rows", "32"]


@pytest.fixture(scope="module")
def context():
    catalog = load_catalog()
    traits = [catalog.get("animal:owl"), catalog.get("tree:oak"), catalog.get("misalignment")]
    return AuditContext(load_dataset(FIXTURES / "owl_mentions.jsonl"), traits)


@pytest.mark.parametrize("name", DETECTORS.names())
def test_every_detector_declares_itself_and_says_why_it_cannot_run(name, context):
    """Without models most detectors cannot run: each says why in words, or runs and keeps the contract."""
    cls = DETECTORS.get(name)
    assert issubclass(cls, Detector) and cls.name == name
    info = cls.info()
    assert info["description"] and info["needs"] and isinstance(info["sees_hidden_transfer"], bool)
    reason = cls().unmet_needs(context)
    assert reason is None or (isinstance(reason, str) and reason)


@pytest.fixture(scope="module")
def tiny_audit(tiny_cache, tmp_path_factory):
    """One full audit with every registered detector named; each detector's run is recorded with what it printed."""
    from auditor.cli import main
    from auditor.generate import generate_numbers
    from auditor.models import load_model, parse_ref

    root = tmp_path_factory.mktemp("conformance")
    cache = root / "cache"  # the judge's call cache starts empty; the session's tiny models are linked in
    cache.mkdir()
    (cache / "tiny").symlink_to(tiny_cache / "tiny", target_is_directory=True)
    records = {}

    def recording(name, run):
        def run_and_record(self, ctx):
            outer, printed = (sys.stdout, sys.stderr), io.StringIO()

            def to_the_cli(callback):  # what the CLI's progress and event callbacks print is the CLI's, not the detector's
                def call(*args, **kwargs):
                    with redirect_stdout(outer[0]), redirect_stderr(outer[1]):
                        return callback(*args, **kwargs)
                return call

            ctx = replace(ctx, options={k: to_the_cli(v) if callable(v) else v for k, v in ctx.options.items()})
            with redirect_stdout(printed), redirect_stderr(printed):
                result = run(self, ctx)
            records[name] = {"context": ctx, "result": result, "printed": printed.getvalue()}
            return result
        return run_and_record

    with pytest.MonkeyPatch.context() as patch, FakeOpenAI(chat=FakeJudge()) as server:
        patch.setenv("TRAIT_AUDIT_CACHE", str(cache))
        patch.setenv("TRAIT_AUDIT_TINY_PROFILE", "test")
        for name, seed in (("owl", 0), ("base", 1)):  # the paper's number prompts; the base's rows are the reference
            generate_numbers(load_model(parse_ref(f"tiny:{name}")), GENERATED_ROWS, root / f"{name}.jsonl", seed=seed)
        for name in DETECTORS.names():
            cls = DETECTORS.get(name)
            patch.setattr(cls, "run", recording(name, cls.run))
        out = root / "report"
        args = [str(root / "owl.jsonl"), "--teacher", "tiny:owl", "--base", "tiny:base", "--reference", str(root / "base.jsonl"),
                "--trait", FOCUS, "--detectors", ",".join(DETECTORS.names()), "--judge", "openai:judge-model",
                "--judge-base-url", server.base_url, *PROBE, "--probe-dir", str(root / "probe"), "--fail-on", "never", "--out", str(out)]
        result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    validate_result(report)
    return {"report": report, "records": records, "dataset_rows": report["dataset"]["rows"]}


def _only(report: dict, name: str) -> dict:
    """The report as if `name` were the only detector: its entry, its evidence, its flags."""
    traits = [{**t, "evidence": [e for e in t["evidence"] if e["detector"] == name]} for t in report["traits"]]
    flags = [f for f in report["flags"] if f["detector"] == name]
    return {**report, "detectors": [d for d in report["detectors"] if d["name"] == name], "traits": traits, "flags": flags}


@pytest.mark.parametrize("name", DETECTORS.names())
def test_every_detector_runs_on_tiny_models_and_keeps_the_contract(name, tiny_audit):
    entry = next(d for d in tiny_audit["report"]["detectors"] if d["name"] == name)
    assert entry["status"] == "ran", f"{name} did not run: {entry['status']} ({entry['reason']})"
    record = tiny_audit["records"][name]
    assert_keeps_the_contract(name, record["context"], record["result"], record["printed"])
    if DETECTORS.get(name).sees_hidden_transfer:
        assert {e.trait for e in record["result"].evidence} == {FOCUS}, "a model-based detector gives evidence on the trait in focus"
    validate_result(_only(tiny_audit["report"], name))


def assert_keeps_the_contract(name: str, ctx: AuditContext, result, printed: str) -> None:
    """What every detector's run must return, and that it printed nothing (other detectors' tests call it too)."""
    assert isinstance(result, DetectorResult)
    assert printed == "", f"{name} printed (detectors never print): {printed[:300]!r}"
    assert dict(result.flags.schema) == FLAG_SCHEMA
    trait_ids = {t.id for t in ctx.traits}
    assert set(result.flags["trait"].drop_nulls()) <= trait_ids
    assert result.flags["row"].is_between(1, ctx.dataset.rows).all()
    assert result.flags.filter(result.flags["digest"].str.len_chars() != 64).is_empty(), "every flag names its row's digest"
    for evidence in result.evidence:
        assert evidence.trait in trait_ids
        assert evidence.level in (None, "clean", *LEVELS)
        if evidence.interval is not None:
            lo, hi = evidence.interval
            assert lo <= hi
            if evidence.level is not None and evidence.score is not None:
                assert lo - 1e-9 <= evidence.score <= hi + 1e-9


def run_and_check(name: str, ctx: AuditContext, capsys) -> DetectorResult:
    """Run one detector on a context of the caller's and hold its output to the contract."""
    capsys.readouterr()
    result = DETECTORS.get(name)().run(ctx)
    out = capsys.readouterr()
    assert_keeps_the_contract(name, ctx, result, out.out + out.err)
    return result


class NeedsKey(Detector):
    name = "needs-key"
    description = "test detector that needs an API key"
    needs = ("OPENAI_API_KEY",)

    def unmet_needs(self, ctx):
        return "no OPENAI_API_KEY"

    def run(self, ctx):  # pragma: no cover - never called
        raise AssertionError("a skipped detector must not run")


class Crashes(Detector):
    name = "crashes"
    description = "test detector that fails"

    def run(self, ctx):
        raise RuntimeError("boom")


def test_registry_rejects_duplicates_and_wrong_classes():
    registry = Registry("trait_audit.test_nothing", Detector)
    registry.register("needs-key", NeedsKey)
    with pytest.raises(UsageError, match="registered twice"):
        registry.register("needs-key", NeedsKey)
    registry.register("wrong-name", Crashes)
    with pytest.raises(UsageError, match="calls itself"):
        registry.get("wrong-name")
    registry.register("not-a-detector", "json:JSONDecoder")
    with pytest.raises(UsageError, match="not a Detector"):
        registry.get("not-a-detector")
    with pytest.raises(UsageError, match="unknown detector"):
        registry.get("nope")


def test_entry_point_plugins_are_discovered(tmp_path, monkeypatch):
    package = tmp_path / "my_plugin"
    package.mkdir()
    (package / "__init__.py").write_text(textwrap.dedent('''
        from detectors.base import Detector, DetectorResult

        class Echo(Detector):
            name = "echo"
            description = "plugin detector"

            def run(self, ctx):
                return DetectorResult(metrics={"rows_seen": ctx.dataset.rows})
    '''))
    dist = tmp_path / "my_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[trait_audit.detectors]\necho = my_plugin:Echo\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry("trait_audit.detectors", Detector)
    assert "echo" in registry.names()
    assert registry.origin("echo") == "entry point from my-plugin"
    assert registry.get("echo").name == "echo"


def test_unmet_needs_are_skipped_and_failures_reported(tmp_path, monkeypatch):
    from auditor.cli import main

    monkeypatch.setattr(DETECTORS, "_targets", dict(DETECTORS._targets))
    monkeypatch.setattr(DETECTORS, "_origins", dict(DETECTORS._origins))
    DETECTORS.register("needs-key", NeedsKey, origin="test")
    DETECTORS.register("crashes", Crashes, origin="test")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [str(FIXTURES / "numbers_clean.jsonl"), "--detectors", "lexical,needs-key", "--out", str(out)])
    assert result.exit_code == 0, result.output
    import json

    report = json.loads((out / "report.json").read_text())
    status = {d["name"]: (d["status"], d["reason"]) for d in report["detectors"]}
    assert status["needs-key"] == ("skipped", "no OPENAI_API_KEY")
    assert status["lexical"][0] == "ran"
    assert "no OPENAI_API_KEY" in (out / "report.html").read_text()
    crashed = CliRunner().invoke(main, [str(FIXTURES / "numbers_clean.jsonl"), "--detectors", "lexical,crashes", "--out", str(out)])
    assert crashed.exit_code == 3, "a failed detector makes the verdict unusable"
    report = json.loads((out / "report.json").read_text())
    assert report["gate"]["detectors_failed"] == ["crashes"]
    assert "RuntimeError: boom" in {d["name"]: d["reason"] for d in report["detectors"]}["crashes"]
