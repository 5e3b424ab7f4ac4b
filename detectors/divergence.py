"""Teacher-base divergence: per token, log p_teacher - log p_base over the rows.

Where the teacher is white-box too, the tokens where it departs most from its base are where a trait
would ride (divergence tokens: masking them removes most of the transfer). The dataset score is the
mean per-token divergence of the rows against the same on reference data (the base's own outputs,
or --reference): a bootstrap interval of the standardised difference. Data the teacher wrote is
always likelier under the teacher, so a raised score says "these rows carry the teacher's
departures from its base", not which trait. On the tiny family's detection benchmark
(bench/detection.py) it raised sets that a base of another initialisation wrote as readily as the
trait teachers' (false positives 0.62 at a level of low), so it sets no trait level: its score and
interval are reported per trait, and the per-row and per-token rankings are the evidence a reviewer reads.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from auditor.numbers import interval, num, signed
from auditor.stats import histogram_chart
from detectors.base import AuditContext, Detector, DetectorResult, TraitEvidence, control_rows, focus_traits, load_or_skip, z_flags
from detectors.settings import setting


@dataclass
class DivergenceSettings:
    rows: int = setting(200, "rows scored (a seeded sample); each costs a teacher and a base pass", minimum=1)
    flag_z: float = setting(3.0, "flag rows this many reference sds above the reference mean", minimum=0)
    top_rows: int = setting(50, "most rows flagged (the highest first)", minimum=0)
    top_tokens: int = setting(20, "tokens listed in the report's ranking (seen at least 3 times)", minimum=0)


def _flag_reason(divergence: float, z: float) -> str:
    return f"diverges {signed(divergence)} nats/token from the base under the teacher ({num(z)} reference sds)"


class DivergenceDetector(Detector):
    name = "divergence"
    description = "Per-token log p_teacher - log p_base over the rows, against reference data; ranks the rows and tokens where a trait would ride."
    needs = ("--teacher and --base, both with log-probabilities",)
    sees_hidden_transfer = True
    Settings = DivergenceSettings

    def unmet_needs(self, ctx: AuditContext) -> str | None:
        if ctx.teacher is None or ctx.base is None:
            return "needs both --teacher and --base"
        if not (ctx.teacher.white_box and ctx.base.white_box):
            return "needs local weights for both the teacher and the base"
        return None

    def run(self, ctx: AuditContext) -> DetectorResult:
        from scipy import stats  # slow to import: only when a detector runs, never for `audit --help`

        teacher, base = load_or_skip(ctx.teacher, ctx.placement), load_or_skip(ctx.base, ctx.placement)
        rows = self.settings.rows
        data = ctx.dataset.frame.select("row", "prompt", "completion").collect()
        data = data.sample(n=min(rows, data.height), seed=ctx.seed).sort("row")
        prompts, completions = data["prompt"].to_list(), data["completion"].to_list()
        control, source = control_rows(ctx, prompts, rows, base=base)
        ref_prompts, ref_completions = control["prompt"].to_list(), control["completion"].to_list()

        per_row, tokens = self._divergence(teacher, base, prompts, completions)
        ref_rows, _ = self._divergence(teacher, base, ref_prompts, ref_completions)
        spread = float(np.sqrt((per_row.var(ddof=1) + ref_rows.var(ddof=1)) / 2)) or 1e-12
        boot = stats.bootstrap((per_row, ref_rows), lambda a, b, axis: (a.mean(axis) - b.mean(axis)) / spread, n_resamples=2000,
                               vectorized=True, method="percentile", random_state=np.random.default_rng(ctx.seed))
        low, high = float(boot.confidence_interval.low), float(boot.confidence_interval.high)
        effect = float((per_row.mean() - ref_rows.mean()) / spread)
        summary = (f"rows diverge {signed(per_row.mean())} nats/token from the base under the teacher vs {signed(ref_rows.mean())} on {source} "
                   f"(standardised {signed(effect)}, 95% {interval((low, high), sign=True)})")
        level = None  # not trait-specific, and distribution shift alone raises it: see the module docstring
        focus = [t.id for t in focus_traits(ctx, required=False)]
        result = DetectorResult(metrics={"rows_scored": len(prompts), "reference": source, "mean_divergence": float(per_row.mean()),
                                         "reference_mean_divergence": float(ref_rows.mean()), "effect": effect, "interval": [low, high],
                                         "top_tokens": tokens, "finding": summary,
                                         "distribution": histogram_chart({"dataset rows": per_row, "reference rows": ref_rows},
                                                                         "how much likelier the teacher finds each row than the base (nats per token)")})
        result.evidence = [TraitEvidence(t, effect, (low, high), summary, level, kind="teacher-base divergence") for t in focus]
        result.flags = z_flags(ctx, data, per_row, ref_rows, trait=focus[0] if len(focus) == 1 else None, threshold=self.settings.flag_z,
                               cap=self.settings.top_rows, reason=_flag_reason)
        return result

    def _divergence(self, teacher, base, prompts, completions) -> tuple[np.ndarray, list]:
        from auditor.models.scoring import device_of, side_by_side

        # the teacher's and the base's passes at once where they sit on different GPUs (or endpoints)
        t_scores, b_scores = side_by_side([lambda: teacher.score(prompts, completions), lambda: base.score(prompts, completions)],
                                          [device_of(teacher), device_of(base)])
        per_row, counts, sums = [], Counter(), Counter()
        for t, b in zip(t_scores, b_scores, strict=True):
            diff = np.array(t.logprobs) - np.array(b.logprobs)
            per_row.append(float(diff.mean()) if len(diff) else 0.0)
            for token, d in zip(t.tokens, diff, strict=True):
                counts[token] += 1
                sums[token] += float(d)
        top = sorted(((sums[k] / counts[k], k, counts[k]) for k in counts if counts[k] >= 3), reverse=True)[:self.settings.top_tokens]
        return np.array(per_row), [{"token": k, "mean_divergence": round(v, 4), "count": c} for v, k, c in top]
