"""The one small base class every detector derives from, and the shapes it returns.

A detector declares what it is and what it needs as class attributes and overrides `run`. It never
prints and never exits: it returns evidence, or raises Skip with the reason it could not run.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import polars as pl

from auditor.result import Level
from detectors.settings import NoSettings, specs

LEVELS = tuple(level.value for level in Level.risks())  # what a detector's evidence can raise a trait to

# the per-row shape every detector's flags share (cleanlab-style), so reports and baselines stay generic
FLAG_SCHEMA = {
    "row": pl.Int64,
    "digest": pl.String,
    "trait": pl.String,
    "score": pl.Float64,
    "reason": pl.String,
    "field": pl.String,
    "matches": pl.List(pl.String),
    "excerpt": pl.String,
}


def empty_flags() -> pl.DataFrame:
    return pl.DataFrame(schema=FLAG_SCHEMA)


# the unmet need of every detector that tests named traits (model-based ones focus on --trait or profiling's picks)
NO_TRAIT_TO_TEST = "no trait to test: name one with --trait, or give --teacher and --base so profiling picks them"


class Skip(Exception):
    """Raised by a detector whose needs are not met; the audit goes on and the report says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class TraitEvidence:
    """What one detector says about one trait. `level` is None when it saw nothing that raises risk."""

    trait: str
    score: float | None
    interval: tuple[float, float] | None
    summary: str
    level: str | None = None
    kind: str = ""
    detector: str = ""  # filled in by the runner

    def __post_init__(self):
        if self.level is not None and self.level not in (Level.CLEAN, *Level.risks()):  # a detector never says "inconclusive"
            raise ValueError(f"unknown level {self.level!r}")


@dataclass
class DetectorResult:
    evidence: list[TraitEvidence] = field(default_factory=list)
    flags: pl.DataFrame = field(default_factory=empty_flags)
    metrics: dict[str, Any] = field(default_factory=dict)
    cost: dict[str, Any] = field(default_factory=dict)


@dataclass
class AuditContext:
    """Everything a detector may read. Models are references until the model layer resolves them."""

    dataset: Any  # auditor.dataset.Dataset
    traits: list  # [auditor.traits.Trait]
    reference: Any = None  # a second Dataset (e.g. control data from the unprompted base) or None
    teacher: Any = None  # auditor.models.ModelRef or None
    base: Any = None
    judge: Any = None  # the judge detector's model: its "judge" role in `models`, kept as a field for existing callers
    # what the runner passes every detector: "focus" (traits to test), "progress" and "events" callbacks; never a detector setting
    options: dict[str, Any] = field(default_factory=dict)
    accepted: set[tuple[str, str, str | None]] = field(default_factory=set)  # (detector, digest, trait) from a baseline
    seed: int = 0
    models: dict[str, Any] = field(default_factory=dict)  # model references detectors name (Detector.models()), by role
    placement: Any = None  # auditor.models.Placement: device and dtype of every local model (None: the defaults)

    def __post_init__(self):
        # a role that is also a field of the context (ctx.judge) reads either way
        for role, ref in self.models.items():
            if role in self.__dataclass_fields__ and getattr(self, role) is None:
                setattr(self, role, ref)

    def accepted_digests(self, detector: str, trait: str | None) -> set[str]:
        return {d for det, d, t in self.accepted if det == detector and t == trait}


def load_or_skip(ref, placement=None):
    """The model behind a reference, placed as the audit says (ctx.placement); a reference that cannot be loaded skips
    the detector with the reason. A model too large for the memory at hand is no reason to skip: DoesNotFit goes up
    (exit 2, with the numbers and the ways out)."""
    from auditor.errors import UsageError
    from auditor.models import load_model

    try:
        return load_model(ref, placement)
    except UsageError as err:
        raise Skip(str(err)) from None


class Detector(ABC):
    """Subclass, set the class attributes, override run(). Settings is a dataclass of `setting(...)` fields
    (detectors/settings.py); the runner passes an instance filled from -o, audit.toml and alias flags."""

    name: ClassVar[str]
    description: ClassVar[str]
    needs: ClassVar[tuple[str, ...]] = ()  # what it needs, in words ("teacher API", "base weights")
    sees_hidden_transfer: ClassVar[bool] = False  # can it see transfer that no row spells out?
    runs_by_default: ClassVar[bool] = True  # False for detectors that cost money or long compute
    # True for detectors that train a student and measure the trait (the probe): their clean verdict,
    # from an interval that excludes a meaningful shift, overrules proxy detectors (auditor/risk.py)
    ground_truth: ClassVar[bool] = False
    Settings: ClassVar[type] = NoSettings

    def __init__(self, settings=None):
        self.settings = settings if settings is not None else self.Settings()

    @classmethod
    def requested(cls, settings) -> bool:
        """True when these settings ask for a detector that does not run by default (the judge: a model is set)."""
        return False

    def models(self) -> dict[str, str | None]:
        """Model references this detector brings besides --teacher and --base, by role (the judge: {"judge": REF}).
        The runner resolves each before any work, puts it on the context and into report.json under the role."""
        return {}

    def unmet_needs(self, ctx: AuditContext) -> str | None:
        """The reason this detector cannot run in this context, or None."""
        return None

    @abstractmethod
    def run(self, ctx: AuditContext) -> DetectorResult:
        """Return evidence and flags; raise Skip when a need turns out unmet."""

    @classmethod
    def info(cls) -> dict[str, Any]:
        return {
            "name": cls.name,
            "description": cls.description,
            "needs": list(cls.needs) or ["nothing beyond the dataset"],
            "sees_hidden_transfer": cls.sees_hidden_transfer,
            "runs_by_default": cls.runs_by_default,
            "ground_truth": cls.ground_truth,
            "settings": [spec.info() for spec in specs(cls.Settings)],
        }
