"""The one small base class every detector derives from, and the shapes it returns.

A detector declares what it is and what it needs as class attributes and overrides `run`. It never
prints and never exits: it returns evidence, or raises Skip with the reason it could not run.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
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


# --- what several detectors do the same way ---------------------------------------------------------
REFERENCE_SOURCE = "the reference dataset"


def sample_rows(frame: pl.LazyFrame, rows: int, seed: int) -> pl.DataFrame:
    """A seeded sample of at most `rows` rows (row, prompt, completion), back in file order."""
    table = frame.select("row", "prompt", "completion").collect()
    return table.sample(n=min(rows, table.height), seed=seed).sort("row")


def control_rows(ctx: AuditContext, prompts: list[str], rows: int | None, *, base=None, max_new_tokens: int = 48,
                 in_file_order: bool = False, writer: str = "the base") -> tuple[pl.DataFrame, str]:
    """The rows a detector compares the dataset with (prompt, completion), and where they came from, in words.

    With --reference: a sample of at most `rows` of it, seeded with ctx.seed + 1 (all of it when `rows` is None;
    back in file order when `in_file_order`). Otherwise the base writes one completion for each of `prompts`, the
    dataset's own, so the two sides differ only in who wrote them. `base` is the loaded base model, or None to load
    ctx.base only when it is needed; `writer` names it in the description.
    """
    if ctx.reference is not None:
        frame = ctx.reference.frame.select("row", "prompt", "completion").collect()
        if rows is not None:
            frame = frame.sample(n=min(rows, frame.height), seed=ctx.seed + 1)
        if in_file_order:
            frame = frame.sort("row")
        return frame.select("prompt", "completion"), REFERENCE_SOURCE
    from auditor.models import GENERATE, Sampling

    model = base if base is not None else load_or_skip(ctx.base, ctx.placement)
    if not model.supports(GENERATE):
        raise Skip(f"{model.ref.ref} cannot generate reference completions")
    answers = model.generate(prompts, Sampling(n=1, temperature=1.0, max_new_tokens=max_new_tokens, seed=ctx.seed), system="")
    frame = pl.DataFrame({"prompt": prompts, "completion": [a[0] for a in answers]}, schema={"prompt": pl.String, "completion": pl.String})
    return frame, f"completions {writer} wrote for the same prompts"


def z_flags(ctx: AuditContext, scored: pl.DataFrame, scores, reference_scores, *, trait: str | None, threshold: float, cap: int,
            reason: Callable[[float, float], str]) -> pl.DataFrame:
    """Rows whose score stands more than `threshold` reference sds above the reference mean (the `cap` highest), as
    the standard flag frame in file order. `scored` holds the scored rows (row, completion) in the order of `scores`;
    `reason(score, z)` words a row's flag from its own score and its z. Scores that are not finite (a row with nothing
    to score) are left out of the reference's spread and never flagged."""
    import numpy as np

    scores, reference_scores = np.asarray(scores), np.asarray(reference_scores)
    finite = reference_scores[np.isfinite(reference_scores)]
    z = (scores - finite.mean()) / (finite.std(ddof=1) or 1e-12)
    order = [i for i in np.argsort(-np.nan_to_num(z, nan=-np.inf)) if z[i] > threshold][:cap]
    if not order:
        return empty_flags()
    picked = scored[order]
    flagged = ctx.dataset.frame.filter(pl.col("row").is_in(picked["row"].implode()))
    digests = ctx.dataset.with_digest(flagged).select("row", "digest").collect()
    frame = pl.DataFrame({
        "row": picked["row"].cast(pl.Int64), "trait": [trait] * len(order), "score": [float(z[i]) for i in order],
        "reason": [reason(scores[i], z[i]) for i in order],
        "field": ["completion"] * len(order), "matches": [[] for _ in order], "excerpt": picked["completion"].str.slice(0, 300),
    }, schema={k: v for k, v in FLAG_SCHEMA.items() if k != "digest"})
    return frame.join(digests, on="row").select(list(FLAG_SCHEMA)).sort("row")


def flagged_rows(ctx: AuditContext, detector: str, trait: str, flags: pl.DataFrame) -> int:
    """How many distinct rows `flags` flags for the trait, leaving out those a baseline accepted."""
    accepted = ctx.accepted_digests(detector, trait)
    return flags.filter((pl.col("trait") == trait) & ~pl.col("digest").is_in(list(accepted)))["row"].n_unique()


def rate_evidence(trait: str, flagged: int, rows: int, *, levels: tuple[tuple[float, str], ...], otherwise: str, kind: str,
                  found: str, silent: str) -> TraitEvidence:
    """A flagged-row rate as evidence, with its Wilson interval. The level is the first of `levels` (bound, level)
    whose bound the interval's lower end reaches, else `otherwise`; no level when no row is flagged (a content check's
    silence raises nothing). `found` and `silent` are the summaries for those two cases."""
    from auditor.stats import wilson

    low, high = wilson(flagged, rows)
    if flagged == 0:
        level, summary = None, silent
    else:
        level, summary = next((lvl for bound, lvl in levels if low >= bound), otherwise), found
    return TraitEvidence(trait, flagged / rows if rows else None, (low, high), summary, level, kind=kind)


def missing_focus(ctx: AuditContext) -> str | None:
    """For unmet_needs: why a detector that tests named traits cannot run, or None when some trait is in focus."""
    return None if ctx.options.get("focus") else NO_TRAIT_TO_TEST


def focus_traits(ctx: AuditContext, *, required: bool = True) -> list:
    """The traits a model-based detector tests, as Trait objects in focus order: those named with --trait, else those
    profiling picked. When `required`, none is a Skip with the reason; otherwise an empty list."""
    by_id = {t.id: t for t in ctx.traits}
    focus = ctx.options.get("focus") or []
    traits = [by_id[t] for t in focus if t in by_id]
    if required and not traits:
        raise Skip(NO_TRAIT_TO_TEST if not focus else "none of the traits to test is in the catalog selection")
    return traits
