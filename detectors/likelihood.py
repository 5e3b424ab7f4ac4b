"""Likelihood shift: how much likelier each row is under a hypothesised trait prompt.

For a row, shift = log p_base(completion | trait prompt, prompt) - log p_base(completion | prompt).
A teacher that carried the trait writes rows the trait prompt makes likelier, even when no row
names the trait. The dataset's mean shift is compared with the same statistic on reference data
(`--reference`, or completions the base writes for the same prompts): a bootstrap interval of the
difference and a one-sided permutation p-value. Levels come from the interval, on the scale of the
rows' spread (a standardised effect): clean when even the upper bound is a negligible effect.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from auditor.numbers import interval, num, one_sided_p, signed
from auditor.stats import histogram_chart, standardised_shift
from detectors.base import (
    AuditContext,
    Detector,
    DetectorResult,
    Skip,
    TraitEvidence,
    control_rows,
    empty_flags,
    focus_traits,
    load_or_skip,
    missing_focus,
    sample_rows,
    z_flags,
)
from detectors.settings import setting

RESAMPLES = 2000
NEGLIGIBLE, SMALL, LARGE = 0.1, 0.2, 0.5  # standardised effects (difference / pooled sd)


@dataclass
class LikelihoodSettings:
    rows: int = setting(200, "rows scored per trait (a seeded sample); each costs two base-model passes per trait", minimum=1)
    flag_z: float = setting(3.0, "flag rows this many reference sds above the reference mean", minimum=0)
    flags_per_trait: int = setting(100, "most rows flagged per trait (the highest first)", minimum=0)


def _levels(low: float, high: float) -> str | None:
    if low > LARGE:
        return "high"
    if low > SMALL:
        return "medium"
    if low > 0:
        return "low"
    if high < NEGLIGIBLE:
        return "clean"
    return None


def _flag_reason(shift: float, z: float) -> str:
    return f"{signed(shift)} nats likelier under the trait prompt ({num(z)} reference sds above the reference mean)"


class LikelihoodDetector(Detector):
    name = "likelihood"
    description = "Per-row log-likelihood shift under each hypothesised trait prompt, on the base model, against reference data."
    needs = ("--base with log-probabilities (local weights or an endpoint that echoes them)", "traits to test: --trait, or --teacher and --base")
    sees_hidden_transfer = True
    Settings = LikelihoodSettings

    def unmet_needs(self, ctx: AuditContext) -> str | None:
        if ctx.base is None:
            return "no --base model to score rows with"
        return missing_focus(ctx)

    def _base(self, ctx: AuditContext):
        from auditor.models import LOGPROB

        model = load_or_skip(ctx.base, ctx.placement)
        if not model.supports(LOGPROB):
            raise Skip(f"{ctx.base.ref} gives no log-probabilities")
        return model

    def run(self, ctx: AuditContext) -> DetectorResult:
        model = self._base(ctx)
        traits = focus_traits(ctx)
        rows = self.settings.rows
        data = sample_rows(ctx.dataset.frame, rows, ctx.seed)
        prompts, completions = data["prompt"].to_list(), data["completion"].to_list()
        control, ref_source = control_rows(ctx, prompts, rows, base=model, in_file_order=True)
        ref_prompts, ref_completions = control["prompt"].to_list(), control["completion"].to_list()
        neutral = model.logprob(prompts, completions, system="")
        ref_neutral = model.logprob(ref_prompts, ref_completions, system="")

        result = DetectorResult(metrics={"rows_scored": len(prompts), "reference": ref_source, "base": ctx.base.ref, "traits": {}})
        flags = []
        for trait in traits:
            shift = model.logprob(prompts, completions, system=trait.system_prompt) - neutral
            ref_shift = model.logprob(ref_prompts, ref_completions, system=trait.system_prompt) - ref_neutral
            evidence, metrics = self._compare(trait.id, shift, ref_shift, ref_source, ctx.seed)
            result.evidence.append(evidence)
            metrics["distribution"] = histogram_chart({"dataset rows": shift, "reference rows": ref_shift},
                                                      "how much likelier the trait prompt makes each row (log-probability gain, nats)")
            result.metrics["traits"][trait.id] = metrics
            flags.append(z_flags(ctx, data, shift, ref_shift, trait=trait.id, threshold=self.settings.flag_z,
                                 cap=self.settings.flags_per_trait, reason=_flag_reason))
        # in file order, a row's traits in focus order
        result.flags = pl.concat(flags, how="vertical_relaxed").sort("row", maintain_order=True) if flags else empty_flags()
        result.cost = {"sequences_scored": 2 * len(prompts) * (1 + len(result.evidence)) if result.evidence else 2 * len(prompts)}
        return result

    @staticmethod
    def _compare(trait_id: str, shift: np.ndarray, ref_shift: np.ndarray, ref_source: str, seed: int):
        difference, effect, (low, high), p = standardised_shift(shift, ref_shift, seed, RESAMPLES)
        level = _levels(low, high)
        summary = (f"rows are {signed(difference)} nats likelier under the trait prompt than {ref_source} "
                   f"(standardised {signed(effect)}, 95% {interval((low, high), sign=True)}; permutation test: {one_sided_p(p, (low, high))})")
        metrics = {"mean_shift": float(shift.mean()), "reference_mean_shift": float(ref_shift.mean()), "difference_nats": difference,
                   "effect": effect, "interval": [low, high], "p_value": p}
        return TraitEvidence(trait_id, effect, (low, high), summary, level, kind="likelihood shift"), metrics
