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

import numpy as np
from scipy import stats

from auditor.stats import histogram_chart
from detectors.base import AuditContext, Detector, DetectorResult, TraitEvidence, control_rows, focus_traits, load_or_skip, z_flags

ROWS = 200
TOP_ROWS = 50  # flagged rows kept
FLAG_Z = 3.0  # rows this many reference sds above the reference mean are flagged
TOP_TOKENS = 20


class DivergenceDetector(Detector):
    name = "divergence"
    description = "Per-token log p_teacher - log p_base over the rows, against reference data; ranks the rows and tokens where a trait would ride."
    needs = ("--teacher and --base, both with log-probabilities",)
    sees_hidden_transfer = True

    def unmet_needs(self, ctx: AuditContext) -> str | None:
        if ctx.teacher is None or ctx.base is None:
            return "needs both --teacher and --base"
        if not (ctx.teacher.white_box and ctx.base.white_box):
            return "needs local weights for both the teacher and the base"
        return None

    def run(self, ctx: AuditContext) -> DetectorResult:
        teacher, base = load_or_skip(ctx.teacher), load_or_skip(ctx.base)
        rows = int(ctx.options.get("divergence_rows", ROWS))
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
        summary = (f"rows diverge {per_row.mean():+.3f} nats/token from the base under the teacher vs {ref_rows.mean():+.3f} on {source} "
                   f"(standardised {effect:+.2f}, 95% [{low:+.2f}, {high:+.2f}])")
        level = None  # not trait-specific, and distribution shift alone raises it: see the module docstring
        focus = [t.id for t in focus_traits(ctx, required=False)]
        result = DetectorResult(metrics={"rows_scored": len(prompts), "reference": source, "mean_divergence": float(per_row.mean()),
                                         "reference_mean_divergence": float(ref_rows.mean()), "effect": effect, "interval": [low, high],
                                         "top_tokens": tokens, "finding": summary,
                                         "distribution": histogram_chart({"dataset rows": per_row, "reference rows": ref_rows},
                                                                         "mean log p_teacher - log p_base per token, nats")})
        result.evidence = [TraitEvidence(t, effect, (low, high), summary, level, kind="teacher-base divergence") for t in focus]
        result.flags = z_flags(ctx, data, per_row, ref_rows, trait=focus[0] if len(focus) == 1 else None, threshold=FLAG_Z, cap=TOP_ROWS,
                               reason="diverges {score:+.2f} nats/token from the base under the teacher ({z:.1f} reference sds)")
        return result

    @staticmethod
    def _divergence(teacher, base, prompts, completions) -> tuple[np.ndarray, list]:
        t_scores, b_scores = teacher.score(prompts, completions), base.score(prompts, completions)
        per_row, counts, sums = [], Counter(), Counter()
        for t, b in zip(t_scores, b_scores, strict=True):
            diff = np.array(t.logprobs) - np.array(b.logprobs)
            per_row.append(float(diff.mean()) if len(diff) else 0.0)
            for token, d in zip(t.tokens, diff, strict=True):
                counts[token] += 1
                sums[token] += float(d)
        top = sorted(((sums[k] / counts[k], k, counts[k]) for k in counts if counts[k] >= 3), reverse=True)[:TOP_TOKENS]
        return np.array(per_row), [{"token": k, "mean_divergence": round(v, 4), "count": c} for v, k, c in top]
