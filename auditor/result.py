"""The audit's result: one typed model that report.json (schema v1) serialises and every report renders from.

`Level` is the verdict vocabulary, with its order and the gate. The dataclasses mirror report.json key for key:
`to_dict()` writes schema v1 exactly as the runner always has (same keys, same order), and `from_dict()` reads a saved
result back for `audit report`. A result from an older or hand-written file keeps its shape on the way back out: keys
it lacked stay absent, keys the model does not name are carried along in `extra`, and the key order is kept.
"""

from __future__ import annotations

import dataclasses as dc
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Any, ClassVar, Self


class Level(StrEnum):
    """A verdict, in gate order: clean < inconclusive < low < medium < high.

    low, medium and high are risk levels (a detector's evidence raises a trait to one of them); clean and inconclusive
    are what a trait is without raised risk. Comparisons follow the gate order, not the alphabet.
    """

    CLEAN = "clean"
    INCONCLUSIVE = "inconclusive"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"

    @property
    def rank(self) -> int:
        return _RANK[self]

    @property
    def raises_risk(self) -> bool:
        return self.rank >= _RANK[Level.LOW]

    @classmethod
    def risks(cls) -> tuple[Level, ...]:
        return (cls.LOW, cls.MEDIUM, cls.HIGH)

    @classmethod
    def parse(cls, value: Any) -> Level | None:
        """The level a string names, or None (for None or a word that is not a level)."""
        try:
            return cls(value)
        except ValueError:
            return None

    def fails(self, fail_on: str) -> bool:
        """True when this verdict is at or above `fail_on` (a level, or "never" which fails nothing)."""
        threshold = Level.parse(fail_on)
        return threshold is not None and self >= threshold

    def __lt__(self, other):
        return self.rank < Level(other).rank if isinstance(other, str) else NotImplemented

    def __le__(self, other):
        return self.rank <= Level(other).rank if isinstance(other, str) else NotImplemented

    def __gt__(self, other):
        return self.rank > Level(other).rank if isinstance(other, str) else NotImplemented

    def __ge__(self, other):
        return self.rank >= Level(other).rank if isinstance(other, str) else NotImplemented


_RANK = {level: i for i, level in enumerate(Level)}
NEVER = "never"
#: `--fail-on` choices, strictest last: a level fails the gate for every verdict at or above it; "never" fails none.
FAIL_ON: tuple[str, ...] = tuple(level.value for level in reversed(Level) if level is not Level.CLEAN) + (NEVER,)


def fails_gate(verdict: Any, fail_on: Any) -> bool:
    """True when `verdict` (a level name) is at or above `fail_on`; unknown words fail nothing."""
    level = Level.parse(verdict)
    return level is not None and level.fails(fail_on)


# ---------------------------------------------------------------------------------------------------------------------
# the record machinery: a dataclass whose fields are report.json keys


def _load(loader: Callable[[Any], Any]) -> dict:
    return {"load": loader}


def _interval(value: Any) -> tuple[float, float] | None:
    return (value[0], value[1]) if isinstance(value, (list, tuple)) and len(value) == 2 else None


def _level(value: Any) -> Level | None:
    return None if value is None else Level(value)


def _plain(value: Any) -> Any:
    if isinstance(value, _Record):
        return value.to_dict()
    if isinstance(value, StrEnum):
        return value.value
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@dc.dataclass
class _Record:
    """Shared to_dict/from_dict. A record built in code writes its fields in declaration order (report.json's order);
    one read from a dict writes the keys that dict had, in its order, with the keys the model does not name."""

    # the keys of the dict this record was read from (None when built in code); keys the model does not name
    source_keys: tuple[str, ...] | None = dc.field(default=None, kw_only=True, repr=False, compare=False)
    extra: dict[str, Any] = dc.field(default_factory=dict, kw_only=True, repr=False)

    _OWN: ClassVar[frozenset[str]] = frozenset({"source_keys", "extra"})
    _UNKEYED: ClassVar[frozenset[str]] = frozenset()  # fields that are not report.json keys themselves

    @classmethod
    def _keys(cls) -> list[dc.Field]:
        return [f for f in dc.fields(cls) if f.name not in _Record._OWN and f.name not in cls._UNKEYED]

    def to_dict(self) -> dict[str, Any]:
        fields = {f.name: f for f in self._keys()}
        if self.source_keys is None:
            order = list(fields)
        else:  # a field the source lacked stays absent, unless code has since given it a value
            order = list(self.source_keys) + [name for name, f in fields.items()
                                              if name not in self.source_keys and getattr(self, name) != _default(f)]
        out = {key: _plain(getattr(self, key)) if key in fields else self.extra[key] for key in order if key in fields or key in self.extra}
        out.update((k, v) for k, v in self.extra.items() if k not in out)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        values = {}
        for f in cls._keys():
            if f.name in data:
                load = f.metadata.get("load")
                values[f.name] = load(data[f.name]) if load and data[f.name] is not None else data[f.name]
        known = {f.name for f in cls._keys()}
        return cls(**values, source_keys=tuple(data), extra={k: v for k, v in data.items() if k not in known})


def _default(f: dc.Field) -> Any:
    return f.default_factory() if f.default_factory is not dc.MISSING else f.default


def _records(cls: type[_Record]) -> dict:
    return _load(lambda items: [cls.from_dict(item) for item in items])


def _record(cls: type[_Record]) -> dict:
    return _load(cls.from_dict)


# ---------------------------------------------------------------------------------------------------------------------
# report.json, part by part


@dc.dataclass
class ToolInfo(_Record):
    name: str = "trait-audit"
    version: str = "?"


@dc.dataclass
class DuplicateGroup(_Record):
    digest: str = ""
    rows: list[int] = dc.field(default_factory=list)


@dc.dataclass
class Duplicates(_Record):
    rows: int = 0
    groups: list[DuplicateGroup] = dc.field(default_factory=list, metadata=_records(DuplicateGroup))


@dc.dataclass
class DatasetInfo(_Record):
    path: str = ""
    format: str = ""
    schema: str = ""
    fields: dict[str, Any] = dc.field(default_factory=dict)
    rows: int = 0
    sha256: str = ""
    profile: str = ""
    duplicates: Duplicates | None = dc.field(default=None, metadata=_record(Duplicates))


@dc.dataclass
class ReferenceInfo(_Record):
    path: str = ""
    rows: int = 0
    sha256: str = ""


@dc.dataclass
class ModelInfo(_Record):
    ref: str = "?"
    backend: str = "?"
    system_prompt: str | None = None


@dc.dataclass
class DetectorRun(_Record):
    """One detector's entry: whether it ran (ran / skipped / failed), why not, and what it measured."""

    name: str = "?"
    description: str = ""
    sees_hidden_transfer: bool | None = None
    ground_truth: bool = False
    status: str = "skipped"
    reason: str | None = None
    metrics: dict[str, Any] = dc.field(default_factory=dict)
    cost: dict[str, Any] = dc.field(default_factory=dict)
    duration_s: float | None = None

    @property
    def ran(self) -> bool:
        return self.status == "ran"


@dc.dataclass
class Evidence(_Record):
    """What one detector said about one trait; `level` None when it saw nothing that sets a level."""

    detector: str = "?"
    kind: str = ""
    score: float | None = None
    interval: tuple[float, float] | None = dc.field(default=None, metadata=_load(_interval))
    summary: str = ""
    level: Level | None = dc.field(default=None, metadata=_load(_level))

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if self.level is None:
            out.pop("level", None)  # the schema's level is never null: no level, no key
        return out


@dc.dataclass
class TraitVerdict(_Record):
    id: str = "?"
    family: str = ""
    verdict: Level = dc.field(default=Level.INCONCLUSIVE, metadata=_load(Level))
    score: float | None = None
    interval: tuple[float, float] | None = dc.field(default=None, metadata=_load(_interval))
    hidden_transfer_checked: bool | None = None
    rationale: str = ""
    evidence: list[Evidence] = dc.field(default_factory=list, metadata=_records(Evidence))

    @property
    def raised(self) -> bool:
        """Some evidence set a risk level (whether or not it carried the verdict)."""
        return any(e.level is not None and e.level.raises_risk for e in self.evidence)


@dc.dataclass
class Flag(_Record):
    """A flagged row, keyed by its content digest."""

    row: int = 0
    digest: str = ""
    detector: str = "?"
    trait: str | None = None
    score: float | None = None
    reason: str = ""
    field: str | None = None
    matches: list[str] = dc.field(default_factory=list)
    excerpt: str = ""
    accepted: bool = False


@dc.dataclass
class BaselineInfo(_Record):
    path: str = ""
    accepted: int | None = None
    stale: list[Any] = dc.field(default_factory=list)


@dc.dataclass
class ProfileRow(_Record):
    id: str = "?"
    teacher: float | None = None
    base: float | None = None
    difference: float | None = None
    interval: tuple[float, float] | None = dc.field(default=None, metadata=_load(_interval))
    method: str = ""
    teacher_interval: tuple[float, float] | None = dc.field(default=None, metadata=_load(_interval))
    base_interval: tuple[float, float] | None = dc.field(default=None, metadata=_load(_interval))


@dc.dataclass
class ProfileInfo(_Record):
    """Profiling the teacher against its base: which traits it prefers more, and the ones picked for testing."""

    status: str = "skipped"
    picked: list[str] = dc.field(default_factory=list)
    notes: list[str] = dc.field(default_factory=list)
    traits: list[ProfileRow] = dc.field(default_factory=list, metadata=_records(ProfileRow))
    reason: str | None = None


@dc.dataclass
class Gate(_Record):
    fail_on: str = "high"
    failed: bool = False
    failing_traits: list[str] = dc.field(default_factory=list)
    detectors_failed: list[str] = dc.field(default_factory=list)


@dc.dataclass
class ExportInfo(_Record):
    path: str = ""
    rows_kept: int = 0
    rows_dropped: int = 0
    dropped_rows: list[int] = dc.field(default_factory=list)
    note: str = ""


@dc.dataclass
class RunInfo(_Record):
    """How the audit ran; `argv` has key values redacted."""

    seed: int | None = None
    argv: list[str] = dc.field(default_factory=list)
    python: str = ""
    platform: str = ""
    packages: dict[str, str] = dc.field(default_factory=dict)
    duration_s: float | None = None


@dc.dataclass
class Report(_Record):
    """report.json, schema_version 1."""

    schema_version: int = 1
    tool: ToolInfo = dc.field(default_factory=ToolInfo, metadata=_record(ToolInfo))
    created: str | None = None
    dataset: DatasetInfo = dc.field(default_factory=DatasetInfo, metadata=_record(DatasetInfo))
    reference: ReferenceInfo | None = dc.field(default=None, metadata=_record(ReferenceInfo))
    teacher: ModelInfo | None = dc.field(default=None, metadata=_record(ModelInfo))
    base: ModelInfo | None = dc.field(default=None, metadata=_record(ModelInfo))
    detectors: list[DetectorRun] = dc.field(default_factory=list, metadata=_records(DetectorRun))
    traits: list[TraitVerdict] = dc.field(default_factory=list, metadata=_records(TraitVerdict))
    flags: list[Flag] = dc.field(default_factory=list, metadata=_records(Flag))
    flags_total: int | None = None
    flags_truncated: bool = False
    baseline: BaselineInfo | None = dc.field(default=None, metadata=_record(BaselineInfo))
    profile: ProfileInfo | None = dc.field(default=None, metadata=_record(ProfileInfo))
    gate: Gate = dc.field(default_factory=Gate, metadata=_record(Gate))
    export: ExportInfo | None = dc.field(default=None, metadata=_record(ExportInfo))
    run: RunInfo = dc.field(default_factory=RunInfo, metadata=_record(RunInfo))
    # models that detectors bring, by role ("judge": the LLM judge's): top-level keys of their own, after "base"
    roles: dict[str, ModelInfo | None] = dc.field(default_factory=dict)

    _UNKEYED: ClassVar[frozenset[str]] = frozenset({"roles"})

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        roles = {role: m.to_dict() if m is not None else None for role, m in self.roles.items()}
        if self.source_keys is None:  # built by the runner: the roles follow "base"
            items = list(out.items())
            at = next((i + 1 for i, (key, _) in enumerate(items) if key == "base"), len(items))
            return dict(items[:at] + list(roles.items()) + items[at:])
        merged = {**out, **roles}
        ordered = {key: merged[key] for key in self.source_keys if key in merged}
        ordered.update((key, value) for key, value in merged.items() if key not in ordered)
        return ordered

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        known = {f.name for f in cls._keys()}
        roles = {key: ModelInfo.from_dict(value) if value is not None else None for key, value in data.items()
                 if key not in known and (value is None or isinstance(value, Mapping) and {"ref", "backend"} <= set(value))}
        report = super().from_dict({key: value for key, value in data.items() if key not in roles})
        report.roles, report.source_keys = roles, tuple(data)
        return report

    def detector(self, name: str) -> DetectorRun | None:
        return next((d for d in self.detectors if d.name == name), None)

    @property
    def flag_count(self) -> int:
        """Every flag the audit raised, including those report.json leaves out past its cap."""
        return max(self.flags_total or 0, len(self.flags))


def as_report(result: Report | Mapping[str, Any]) -> Report:
    """A Report from either a Report or a report.json dict (what every renderer accepts)."""
    return result if isinstance(result, Report) else Report.from_dict(result)
