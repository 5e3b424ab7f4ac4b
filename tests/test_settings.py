"""Detector settings: declared as dataclasses, parsed by field type, validated with errors that name their source."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from auditor.errors import UsageError
from detectors import DETECTORS, Detector, DetectorResult
from detectors.registry import Registry
from detectors.settings import NoSettings, Values, parse_value, resolve, setting, specs, type_name


@dataclass
class KnobSettings:
    rows: int = setting(200, "rows to read", minimum=1, alias="--knob-rows")
    ratio: float = setting(0.5, "a share", minimum=0, maximum=1)
    mode: str = setting("fast", "how", choices=("fast", "slow"))
    epochs: int | None = setting(None, "None: automatic", minimum=1)
    folder: Path | None = setting(None, "where")
    words: tuple[str, ...] = setting(("a", "b"), "some words")
    price: tuple[float, float] | None = setting(None, "IN,OUT", minimum=0)
    verbose: bool = setting(False, "say more")
    token: str | None = setting(None, "a key", secret=True, alias=("-k", "--knob-token"))


class Knob(Detector):
    name = "knob"
    description = "test detector with settings"
    Settings = KnobSettings

    def run(self, ctx):
        return DetectorResult(metrics={"rows": self.settings.rows})


@pytest.fixture
def registry():
    reg = Registry("trait_audit.test_nothing", Detector)
    reg.register("knob", Knob)
    return reg


def test_setting_is_a_field_with_metadata_and_detectors_default_to_no_settings():
    spec = {s.key: s for s in specs(KnobSettings)}
    assert spec["rows"].default == 200 and spec["rows"].minimum == 1 and spec["rows"].alias == ("--knob-rows",)
    assert spec["token"].secret and spec["token"].alias == ("-k", "--knob-token")
    assert KnobSettings().words == ("a", "b")
    assert Knob().settings == KnobSettings() and Knob(KnobSettings(rows=3)).settings.rows == 3

    class Plain(Detector):
        name = "plain"
        description = "no settings"

        def run(self, ctx):  # pragma: no cover - never called
            raise AssertionError

    assert isinstance(Plain().settings, NoSettings) and Plain.info()["settings"] == []
    assert not Plain.requested(Plain().settings) and Plain().models() == {}


def test_values_parse_by_field_type():
    types = {s.key: s.type for s in specs(KnobSettings)}
    assert parse_value(types["rows"], "12", True) == 12
    assert parse_value(types["ratio"], "0.25", True) == 0.25 and parse_value(types["ratio"], 1, False) == 1.0
    assert parse_value(types["epochs"], "none", True) is None and parse_value(types["epochs"], "4", True) == 4
    assert parse_value(types["folder"], "a/b", True) == Path("a/b")
    assert parse_value(types["words"], "x, y,z", True) == ("x", "y", "z") and parse_value(types["words"], ["q"], False) == ("q",)
    assert parse_value(types["price"], "1.5,6", True) == (1.5, 6.0) and parse_value(types["price"], [1, 2.5], False) == (1.0, 2.5)
    assert parse_value(types["verbose"], "yes", True) is True and parse_value(types["verbose"], False, False) is False
    for tp, raw, text in ((types["rows"], "abc", True), (types["rows"], "3", False), (types["rows"], True, False),
                          (types["ratio"], "x", True), (types["price"], "1", True), (types["verbose"], "maybe", True),
                          (types["rows"], None, False), (types["mode"], 3, False)):
        with pytest.raises(ValueError):
            parse_value(tp, raw, text)
    assert type_name(types["epochs"]) == "int | None" and type_name(types["price"]) == "tuple[float, float] | None"
    assert type_name(types["words"]) == "tuple[str, ...]" and type_name(types["folder"]) == "path | None"


def test_errors_name_the_source(registry):
    values = Values()
    cases = [
        (lambda: values.override(registry, "knob.rows=abc"), "-o knob.rows=abc: expected an integer"),
        (lambda: values.override(registry, "knob.rows=0"), "-o knob.rows=0: must be at least 1"),
        (lambda: values.override(registry, "knob.mode=medium"), "-o knob.mode=medium: expected one of fast, slow"),
        (lambda: values.override(registry, "knob.ratio=2"), "must be at most 1"),
        (lambda: values.override(registry, "knob.price=1,-2"), "must be at least 0"),
        (lambda: values.override(registry, "nope.rows=1"), "unknown detector 'nope'"),
        (lambda: values.override(registry, "knob.row=1"), "detector 'knob' has no setting 'row'; its settings are rows, ratio, mode"),
        (lambda: values.override(registry, "rows=1"), "expected NAME.KEY=VALUE"),
        (lambda: values.override(registry, "knob.rows"), "expected NAME.KEY=VALUE"),
        (lambda: values.table(registry, {"knob": {"rows": "5"}}, "audit.toml"), "audit.toml [detectors.knob] rows = '5': expected an integer"),
        (lambda: values.table(registry, {"knob": 5}, "audit.toml"), "'knob' should be a table"),
        (lambda: values.python(registry, "knob", {"epochs": 0}), "settings for 'knob': epochs=0: must be at least 1"),
    ]
    for call, message in cases:
        with pytest.raises(UsageError) as err:
            call()
        assert message in str(err.value)
        assert err.value.exit_code == 2


def test_a_secret_never_shows_in_an_error(registry):
    @dataclass
    class Strict:
        key: str = setting("x", "a key", choices=("x", "y"), secret=True)

    class Locked(Detector):
        name = "locked"
        description = "secret with choices"
        Settings = Strict

        def run(self, ctx):  # pragma: no cover - never called
            raise AssertionError

    registry.register("locked", Locked)
    with pytest.raises(UsageError) as err:
        Values().override(registry, "locked.key=sk-SECRET")
    assert "sk-SECRET" not in str(err.value) and "***" in str(err.value)
    with pytest.raises(UsageError) as err:
        Values().override(registry, "locked.kye=sk-SECRET")
    assert "sk-SECRET" not in str(err.value)


def test_later_values_win_and_build_fills_defaults(registry):
    values = Values()
    values.table(registry, {"knob": {"rows": 5, "mode": "slow", "folder": "out"}}, "audit.toml")
    values.override(registry, "knob.rows=7")
    values.put(registry, "knob", "rows", "9", source="--knob-rows {}", from_text=True)
    built = values.build(registry, "knob")
    assert built == KnobSettings(rows=9, mode="slow", folder=Path("out"))
    assert Values().build(registry, "knob") == KnobSettings()


def test_resolve_gives_every_detector_its_settings(registry):
    given = KnobSettings(rows=3)
    assert resolve(registry, {"knob": given})["knob"] is given, "an instance is taken as it is"
    assert resolve(registry, {"knob": {"rows": 4, "words": ["x"]}})["knob"] == KnobSettings(rows=4, words=("x",))
    assert resolve(registry, {}) == {"knob": KnobSettings()}
    with pytest.raises(UsageError, match="settings for 'knob': rows=0: must be at least 1"):
        resolve(registry, {"knob": {"rows": 0}})
    with pytest.raises(UsageError, match="unknown detector 'nope'"):
        resolve(registry, {"nope": {}})


def test_info_lists_settings_for_every_built_in_detector():
    for name in DETECTORS.names():
        info = DETECTORS.get(name).info()
        for entry in info["settings"]:
            assert entry["name"] and entry["help"] and entry["type"], (name, entry)
            assert set(entry) >= {"name", "type", "default", "help", "alias", "choices"}
    likelihood = {s["name"]: s for s in DETECTORS.get("likelihood").info()["settings"]}
    assert likelihood["rows"]["default"] == 200 and likelihood["rows"]["type"] == "int"
