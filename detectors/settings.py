"""Detector settings: each detector declares a dataclass of them; values arrive as text or TOML and are checked here.

    @dataclass
    class LikelihoodSettings:
        rows: int = setting(200, "rows scored per trait (a seeded sample)", minimum=1)

    class LikelihoodDetector(Detector):
        Settings = LikelihoodSettings

Values come from `-o NAME.KEY=VALUE`, from a `[detectors.NAME]` table in audit.toml, from alias flags a field
declares (`alias="--judge"`) and from Python (`AuditOptions(settings={"likelihood": {"rows": 50}})`). Each value is
parsed to its field's type and validated before any work; an error names where the value came from and exits 2.
Later layers win: file, then -o, then flags.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditor.errors import UsageError

_NONE_WORDS = ("none", "null")
_TRUE_WORDS, _FALSE_WORDS = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def setting(default: Any, help: str, *, alias: str | tuple[str, ...] | None = None, choices=None, minimum=None, maximum=None,
            secret: bool = False, metavar: str | None = None):
    """A Settings field: its default, one line of help, and how it is checked and offered on the command line.

    alias: flag(s) of the audit command that set it (e.g. "--judge" or ("-j", "--jobs")); secret: the value is
    never written anywhere (report argv is redacted); metavar: how the alias's value reads in --help.
    """
    flags = (alias,) if isinstance(alias, str) else tuple(alias or ())
    metadata = {"help": help, "alias": flags, "choices": tuple(choices) if choices else None, "minimum": minimum,
                "maximum": maximum, "secret": secret, "metavar": metavar}
    if isinstance(default, (list, dict, set)):  # a mutable default needs a factory
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class NoSettings:
    """The settings of a detector that declares none."""


@dataclass(frozen=True)
class Spec:
    """One setting, as introspected from a Settings dataclass."""

    key: str
    type: Any  # the resolved annotation
    default: Any
    help: str
    alias: tuple[str, ...]
    choices: tuple | None
    minimum: Any
    maximum: Any
    secret: bool
    metavar: str | None

    def info(self) -> dict:
        return {"name": self.key, "type": type_name(self.type), "default": _plain(self.default), "help": self.help,
                "alias": list(self.alias), "choices": list(self.choices) if self.choices else None,
                "minimum": self.minimum, "maximum": self.maximum, "secret": self.secret}


def specs(settings_cls: type) -> list[Spec]:
    """The settings a dataclass declares, in order."""
    hints = typing.get_type_hints(settings_cls)
    out = []
    for f in dataclasses.fields(settings_cls):
        meta = f.metadata
        default = f.default if f.default is not dataclasses.MISSING else (f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        out.append(Spec(f.name, hints.get(f.name, Any), default, meta.get("help", ""), tuple(meta.get("alias", ())), meta.get("choices"),
                        meta.get("minimum"), meta.get("maximum"), bool(meta.get("secret")), meta.get("metavar")))
    return out


# --- types -----------------------------------------------------------------------------------------
def _optional(tp) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) < len(typing.get_args(tp)):
            return (args[0] if len(args) == 1 else tp), True  # a union of several types is not supported
    return tp, False


def type_name(tp) -> str:
    inner, optional = _optional(tp)
    origin = typing.get_origin(inner)
    if origin in (list, tuple):
        args = typing.get_args(inner)
        shown = ", ".join("..." if a is Ellipsis else type_name(a) for a in args)
        name = f"{origin.__name__}[{shown}]"
    elif inner is Path:
        name = "path"
    else:
        name = getattr(inner, "__name__", str(inner))
    return f"{name} | None" if optional else name


def _plain(value):
    """A default as JSON shows it."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _scalar(tp, raw, from_text: bool):
    """raw (text from the command line, or a TOML/Python value) as tp; ValueError says what was expected."""
    if tp is bool:
        if isinstance(raw, bool):
            return raw
        if from_text and str(raw).strip().lower() in _TRUE_WORDS + _FALSE_WORDS:
            return str(raw).strip().lower() in _TRUE_WORDS
        raise ValueError("expected true or false")
    if tp is int:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if from_text:
            try:
                return int(str(raw).strip())
            except ValueError:
                pass
        raise ValueError("expected an integer")
    if tp is float:
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            return float(raw)
        if from_text:
            try:
                return float(str(raw).strip())
            except ValueError:
                pass
        raise ValueError("expected a number")
    if tp is str:
        if isinstance(raw, str):
            return raw
        raise ValueError("expected a string")
    if tp is Path:
        if isinstance(raw, (str, os.PathLike)) and str(raw):
            return Path(raw)
        raise ValueError("expected a path")
    if tp is Any:
        return raw
    raise ValueError(f"settings of type {type_name(tp)} cannot be set")


def parse_value(tp, raw, from_text: bool):
    """raw as a value of the annotation tp: text ("3", "a,b", "none") when from_text, else a TOML or Python value."""
    inner, optional = _optional(tp)
    if raw is None or (from_text and optional and str(raw).strip().lower() in _NONE_WORDS):
        if optional:
            return None
        raise ValueError("a value is required")
    origin = typing.get_origin(inner)
    if origin in (list, tuple):
        args = typing.get_args(inner) or (str, Ellipsis)
        if isinstance(raw, str):
            items = [part.strip() for part in raw.split(",")] if raw.strip() else []
            text = True
        elif isinstance(raw, (list, tuple)):
            items, text = list(raw), from_text
        else:
            raise ValueError("expected a list (or comma-separated text)")
        if len(args) == 2 and args[1] is Ellipsis:
            values = [_scalar(args[0], item, text) for item in items]
        else:
            if len(items) != len(args):
                raise ValueError(f"expected {len(args)} comma-separated values")
            values = [_scalar(a, item, text) for a, item in zip(args, items, strict=True)]
        return origin(values)
    return _scalar(inner, raw, from_text)


def _check(spec: Spec, value) -> None:
    items = value if isinstance(value, (list, tuple)) else [value]
    for item in items:
        if item is None:
            continue
        if spec.choices and item not in spec.choices:
            raise ValueError(f"expected one of {', '.join(map(str, spec.choices))}")
        if spec.minimum is not None and item < spec.minimum:
            raise ValueError(f"must be at least {spec.minimum}")
        if spec.maximum is not None and item > spec.maximum:
            raise ValueError(f"must be at most {spec.maximum}")


def _braces(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


# --- values from the file, -o, flags and Python ----------------------------------------------------
@dataclass
class Values:
    """Checked values by detector name and key. Put them in precedence order (file, -o, flags): a later one wins."""

    values: dict[str, dict[str, Any]] = field(default_factory=dict)

    def put(self, registry, name: str, key: str, raw, *, source: str, from_text: bool) -> None:
        """Parse and check one value. `source` names it in errors, with {} where the value goes
        ("-o likelihood.rows={}" reads "-o likelihood.rows=abc: expected an integer"); a secret shows as ***."""
        try:
            cls = registry.get(name)
        except UsageError as err:
            raise UsageError(f"{source.format('...')}: {err}") from None
        by_key = {s.key: s for s in specs(cls.Settings)}
        spec = by_key.get(key)
        if spec is None:
            known = f"its settings are {', '.join(by_key)}" if by_key else "it has no settings"
            raise UsageError(f"{source.format('...')}: detector '{name}' has no setting '{key}'; {known}")
        try:
            value = parse_value(spec.type, raw, from_text)
            _check(spec, value)
        except ValueError as err:
            shown = "***" if spec.secret else (raw if isinstance(raw, str) and from_text else repr(raw))
            raise UsageError(f"{source.format(shown)}: {err}") from None
        self.values.setdefault(name, {})[key] = value

    def override(self, registry, text: str) -> None:
        """One `-o NAME.KEY=VALUE`."""
        target, sep, raw = text.partition("=")
        name, dot, key = target.strip().rpartition(".")
        if not sep or not dot or not name or not key:
            raise UsageError(f"-o {text.partition('=')[0]}...: expected NAME.KEY=VALUE (e.g. -o likelihood.rows=500)")
        self.put(registry, name, key.strip().replace("-", "_"), raw, source=_braces(f"-o {name}.{key}=") + "{}", from_text=True)

    def table(self, registry, tables, where: str) -> None:
        """The `[detectors]` table of a config file: {NAME: {KEY: VALUE}}; `where` names the file."""
        if not isinstance(tables, dict):
            raise UsageError(f"{where} [detectors]: expected a table of [detectors.NAME] tables")
        for name, keys in tables.items():
            if not isinstance(keys, dict):
                raise UsageError(f"{where} [detectors]: '{name}' should be a table ([detectors.{name}])")
            for key, raw in keys.items():
                self.put(registry, name, key.replace("-", "_"), raw, source=_braces(f"{where} [detectors.{name}] {key} = ") + "{}",
                         from_text=False)

    def python(self, registry, name: str, values: dict) -> None:
        """Values given from Python as a dict, checked like a config file's."""
        cls = registry.get(name)
        if not isinstance(values, dict):
            raise UsageError(f"settings for '{name}': expected a dict or a {cls.Settings.__name__}, got {type(values).__name__}")
        for key, raw in values.items():
            self.put(registry, name, key, raw, source=_braces(f"settings for '{name}': {key}=") + "{}", from_text=False)

    def build(self, registry, name: str):
        """The detector's Settings with these values over its defaults."""
        try:
            return registry.get(name).Settings(**self.values.get(name, {}))
        except (TypeError, ValueError) as err:  # a Settings.__post_init__ that checks fields together
            raise UsageError(f"settings of detector '{name}': {err}") from None


def resolve(registry, given: dict) -> dict:
    """Every registered detector's Settings: `given` by detector name, each a Settings instance (taken as it is)
    or a dict of values (checked, over the defaults); the rest at their defaults."""
    values, ready = Values(), {}
    for name, value in given.items():
        if isinstance(value, registry.get(name).Settings):
            ready[name] = value
        else:
            values.python(registry, name, value)
    return {name: ready[name] if name in ready else values.build(registry, name) for name in registry.names()}


def alias_specs(registry) -> list[tuple[str, Spec]]:
    """(detector name, setting) for every field that declares alias flags, over every detector that loads.

    A flag declared twice, by two settings, is an error: it could only mean one of them.
    """
    out, seen = [], {}
    for name in registry.names():
        try:
            cls = registry.get(name)
        except UsageError:
            continue  # a plugin that cannot load says so when it is used, not in every --help
        for spec in specs(cls.Settings):
            for flag in spec.alias:
                if flag in seen:
                    raise UsageError(f"flag {flag} is declared by {seen[flag]} and by {name}.{spec.key}")
                seen[flag] = f"{name}.{spec.key}"
            if spec.alias:
                out.append((name, spec))
    return out


def secret_names(registry) -> tuple[set[str], set[str]]:
    """(alias flags, NAME.KEY targets) of every secret setting: their values are redacted wherever argv is written."""
    flags, keys = set(), set()
    for name in registry.names():
        try:
            cls = registry.get(name)
        except UsageError:
            continue
        for spec in specs(cls.Settings):
            if spec.secret:
                flags.update(spec.alias)
                keys.add(f"{name}.{spec.key}")
    return flags, keys
