"""One contract every registered detector passes (garak-style), plus the registry and plugin discovery."""

import textwrap

import pytest
from click.testing import CliRunner
from conftest import FIXTURES

from auditor.dataset import load_dataset
from auditor.errors import UsageError
from auditor.traits import load_catalog
from detectors import DETECTORS, AuditContext, Detector, DetectorResult
from detectors.base import FLAG_SCHEMA, LEVELS
from detectors.registry import Registry


@pytest.fixture(scope="module")
def context():
    catalog = load_catalog()
    traits = [catalog.get("animal:owl"), catalog.get("tree:oak"), catalog.get("misalignment")]
    return AuditContext(load_dataset(FIXTURES / "owl_mentions.jsonl"), traits)


@pytest.mark.parametrize("name", DETECTORS.names())
def test_every_detector_meets_the_contract(name, context, capsys):
    cls = DETECTORS.get(name)
    assert issubclass(cls, Detector) and cls.name == name
    info = cls.info()
    assert info["description"] and info["needs"] and isinstance(info["sees_hidden_transfer"], bool)
    detector = cls()
    reason = detector.unmet_needs(context)
    if reason is not None:
        assert isinstance(reason, str) and reason
        return
    result = detector.run(context)
    assert isinstance(result, DetectorResult)
    assert dict(result.flags.schema) == FLAG_SCHEMA
    trait_ids = {t.id for t in context.traits}
    assert set(result.flags["trait"].drop_nulls()) <= trait_ids
    assert result.flags["row"].is_between(1, context.dataset.rows).all()
    for evidence in result.evidence:
        assert evidence.trait in trait_ids
        assert evidence.level in (None, "clean", *LEVELS)
        if evidence.interval is not None:
            lo, hi = evidence.interval
            assert lo <= hi
            if evidence.level is not None and evidence.score is not None:
                assert lo - 1e-9 <= evidence.score <= hi + 1e-9
    out = capsys.readouterr()
    assert out.out == "" and out.err == "", "detectors never print"


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
