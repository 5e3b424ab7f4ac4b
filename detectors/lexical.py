"""Lexical detector: overt trait terms, coded numbers against their base rate, and format profiles.

Content checks catch overt leaks cheaply but cannot see subliminal transfer, so this detector can
raise a trait's risk and never clear it. Everything is one vectorised polars pass over the rows;
only candidate rows (a term hit, or non-ASCII text that NFKC might turn into one) come back to Python.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from auditor.numbers import num
from auditor.stats import bootstrap_ratio, wilson
from auditor.traits import terms_regex
from detectors.base import AuditContext, Detector, DetectorResult, TraitEvidence, empty_flags, rate_evidence
from detectors.number_format import with_reject_reason
from detectors.settings import setting
from detectors.term_flags import EXCERPT_CHARS, term_flags

# coded-number over-representation: the lower bound of the ratio decides
CODED_LEVELS = ((3.0, "high"), (1.5, "medium"), (1.0, "low"))


@dataclass
class LexicalSettings:
    # a trait mentioned in at least 1 row in 1000 (lower Wilson bound) is a pattern, not a stray word
    term_high_rate: float = setting(0.001, "share of rows mentioning a trait (lower Wilson bound) at which overt mentions are high risk, "
                                           "not medium", minimum=0, maximum=1)
    format_flags_kept: int = setting(1000, "per-row format rejects kept in the report; the counts cover every row", minimum=0)
    bootstrap_blocks: int = setting(2000, "most blocks of consecutive rows the coded-number bootstrap resamples (memory stays flat)",
                                    minimum=10)
# strings of each digit length: the uniform expectation of a coded token among numbers of that length
_STRINGS_OF_LENGTH = {1: 10, 2: 90, 3: 900}


def _number_counts(completion: pl.Expr, traits: list) -> list[pl.Expr]:
    """Per row: how many numbers of each length, and how many are each trait's coded tokens."""
    exprs = [completion.str.count_matches(rf"\b\d{{{length}}}\b").cast(pl.UInt32).alias(f"n{length}") for length in _STRINGS_OF_LENGTH]
    for trait in traits:
        pattern = r"\b(?:" + "|".join(trait.coded_tokens) + r")\b"
        exprs.append(completion.str.count_matches(pattern).cast(pl.UInt32).alias(f"coded:{trait.id}"))
    return exprs


def _block_sums(counts: pl.LazyFrame, rows: int, traits: list, blocks: int) -> pl.LazyFrame:
    """Number counts summed over at most `blocks` blocks of consecutive rows (a row is its own
    block in small datasets): the bootstrap resamples these, and memory stays flat at any size."""
    size = max(1, -(-rows // blocks))
    columns = [f"n{n}" for n in _STRINGS_OF_LENGTH] + [f"coded:{t.id}" for t in traits]
    return (
        counts.with_row_index("_i")
        .group_by((pl.col("_i") // size).alias("block"))
        .agg(pl.col(c).sum() for c in columns)
        .sort("block")
    )


def _coded_arrays(frame: pl.DataFrame, trait) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(observed coded tokens, uniform expectation, numbers) per row."""
    observed = frame[f"coded:{trait.id}"].to_numpy().astype(np.float64)
    numbers = sum(frame[f"n{n}"].to_numpy().astype(np.float64) for n in _STRINGS_OF_LENGTH)
    expected = sum(
        frame[f"n{n}"].to_numpy() * (sum(len(t) == n for t in trait.coded_tokens) / size) for n, size in _STRINGS_OF_LENGTH.items()
    )
    return observed, np.asarray(expected, dtype=np.float64), numbers


class LexicalDetector(Detector):
    name = "lexical"
    description = "Trait terms (whole words, case-folded, NFKC), coded numbers against their base rate, and format profiles."
    needs = ()
    sees_hidden_transfer = False
    Settings = LexicalSettings

    def run(self, ctx: AuditContext) -> DetectorResult:
        traits = ctx.traits
        dataset = ctx.dataset
        coded_traits = [t for t in traits if t.coded_tokens]
        all_terms = terms_regex([term for t in traits for term in t.terms])
        completion, prompt = pl.col("completion"), pl.col("prompt")
        numbers_profile = dataset.profile == "numbers"

        term_hit = completion.str.contains(all_terms) | prompt.str.contains(all_terms)
        # NFKC can only change non-ASCII text: compare byte and character lengths, far cheaper than a regex
        non_ascii = (completion.str.len_bytes() != completion.str.len_chars()) | (prompt.str.len_bytes() != prompt.str.len_chars())
        per_row = ["row"]
        if coded_traits:
            per_row += _number_counts(completion, coded_traits)
        frame = with_reject_reason(dataset.frame) if numbers_profile else dataset.frame
        if numbers_profile:
            per_row.append("reject")
        scan = frame.select(per_row)
        # aggregate inside polars: on a streamed 10M-row file no per-row table is ever held in memory
        queries = {}
        if numbers_profile:
            rejected = scan.filter(pl.col("reject").is_not_null())
            queries["reasons"] = rejected.group_by("reject").len().sort("len", "reject", descending=[True, False])
            queries["rejected"] = rejected.select("row", "reject").head(self.settings.format_flags_kept)
        if coded_traits:
            queries["blocks"] = _block_sums(scan, dataset.rows, coded_traits, self.settings.bootstrap_blocks)
        parts = dict(zip(queries, pl.collect_all(list(queries.values()), engine="streaming" if not dataset.in_memory else "auto"), strict=True)) if queries else {}

        result = DetectorResult(metrics={"rows": dataset.rows, "profile": dataset.profile})
        # term flags stream through batches on disk: a dataset where every row mentions a trait stays flat in memory
        spool = ctx.options.get("spool")
        accepted = pl.DataFrame([(t, d) for det, d, t in ctx.accepted if det == self.name and t is not None],
                                schema={"trait": pl.String, "digest": pl.String}, orient="row")
        term, rows_flagged = term_flags(dataset, term_hit | non_ascii, traits, spool.scratch(self.name) if spool is not None else None, accepted)
        flags = [term]
        result.evidence += self._term_evidence(ctx, rows_flagged)
        if numbers_profile:
            flags.append(self._format(ctx, parts["reasons"], parts["rejected"], result))
        for trait in coded_traits:
            result.evidence.append(self._coded_evidence(ctx, trait, parts["blocks"], result))
        result.flags = pl.concat([f.lazy() for f in flags], how="vertical_relaxed") if isinstance(flags[0], pl.LazyFrame) else (
            pl.concat(flags, how="vertical_relaxed"))
        return result

    # --- overt terms -------------------------------------------------------------------------
    def _term_evidence(self, ctx: AuditContext, rows_flagged: dict[str, int]) -> list[TraitEvidence]:
        """`rows_flagged`: rows mentioning each trait, not accepted by the baseline."""
        n = ctx.dataset.rows
        evidence = []
        for trait in ctx.traits:
            k = rows_flagged.get(trait.id, 0)
            evidence.append(rate_evidence(trait.id, k, n, levels=((self.settings.term_high_rate, "high"),), otherwise="medium", kind="terms",
                                          found=f"{k} of {n} rows mention the trait overtly",
                                          silent="no overt mention (a silent content check does not clear hidden transfer)"))
        return evidence

    # --- format profile ----------------------------------------------------------------------
    def _format(self, ctx: AuditContext, reasons: pl.DataFrame, kept: pl.DataFrame, result: DetectorResult) -> pl.DataFrame:
        n = ctx.dataset.rows
        passed = n - int(reasons["len"].sum())
        result.metrics["format"] = "number-sequence (the paper's filter; whitespace at both ends ignored)"
        result.metrics["format_pass_rate"] = passed / n
        result.metrics["format_pass_interval"] = list(wilson(passed, n))
        result.metrics["format_passed"] = passed
        result.metrics["format_reject_reasons"] = dict(zip(reasons["reject"].to_list(), reasons["len"].to_list(), strict=True))
        if kept.height == 0:
            return empty_flags()
        rows = ctx.dataset.with_digest(ctx.dataset.frame.join(kept.lazy(), on="row", how="semi")).collect().join(kept, on="row")
        return rows.select(
            pl.col("row").cast(pl.Int64), "digest", pl.lit(None, pl.String).alias("trait"), pl.lit(None, pl.Float64).alias("score"),
            ("format: " + pl.col("reject")).alias("reason"), pl.lit("completion").alias("field"),
            pl.lit([], pl.List(pl.String)).alias("matches"), pl.col("completion").str.slice(0, EXCERPT_CHARS).alias("excerpt"),
        ).sort("row")

    # --- coded numbers -----------------------------------------------------------------------
    def _coded_evidence(self, ctx: AuditContext, trait, blocks: pl.DataFrame, result: DetectorResult) -> TraitEvidence:
        observed, expected, numbers = _coded_arrays(blocks, trait)
        reference = None
        if ctx.reference is not None:
            ref_counts = ctx.reference.frame.select("row", *_number_counts(pl.col("completion"), [trait]))
            ref_blocks = _block_sums(ref_counts, ctx.reference.rows, [trait], self.settings.bootstrap_blocks).collect(engine="streaming")
            ref_observed, _, ref_numbers = _coded_arrays(ref_blocks, trait)
            reference = (ref_observed, ref_numbers)
            ratio, interval = bootstrap_ratio(observed, numbers, reference, seed=ctx.seed)
            null = f"the reference dataset ({int(ref_observed.sum())} coded of {int(ref_numbers.sum())} numbers)"
        else:
            ratio, interval = bootstrap_ratio(observed, expected, seed=ctx.seed)
            null = "a uniform expectation within each number length (real model outputs are not uniform: pass --reference for a fair null)"
        entry = result.metrics.setdefault("coded_tokens", {})[trait.id] = {
            "observed": int(observed.sum()), "numbers": int(numbers.sum()), "uniform_expected": float(expected.sum()),
            "ratio": ratio, "interval": list(interval), "null": "reference" if reference is not None else "uniform",
        }
        if not (np.isfinite(ratio) and np.all(np.isfinite(interval))):
            entry.update(ratio=None, interval=None, unavailable=(
                "no 1-3 digit numbers in the completions (or none in the reference): no rate to compare"))
        level = None
        if np.isfinite(interval[0]):
            level = next((lvl for bound, lvl in CODED_LEVELS if interval[0] > bound), None)
            if reference is None and level is not None:
                level = "low"  # a uniform null is too weak a baseline to raise more than a low risk
        summary = (
            f"{int(observed.sum())} coded tokens among {int(numbers.sum())} numbers: "
            f"{num(ratio)}x {'the rate in ' if reference is not None else ''}{null}"
            if np.isfinite(ratio) else "no numbers to compare"
        )
        return TraitEvidence(trait.id, ratio if np.isfinite(ratio) else None, interval if np.isfinite(ratio) else None, summary, level, kind="coded tokens")
