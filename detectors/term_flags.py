"""The lexical detector's per-row term flags, built in batches and spooled to disk.

A flag per (row, trait, field) with the matched words, a reason and an excerpt. Candidate rows are
streamed to an IPC file and processed BATCH_ROWS at a time with vectorised polars expressions; each
batch's flags go to a file of their own. So memory stays flat whether 3 rows or 16 million mention a
trait (it grew by about 1.4 KB per flagged row when flags were Python dicts). Small results (and
callers that give no spool folder) come back as an in-memory DataFrame.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import polars as pl

from auditor import tempfiles
from auditor.flagspool import iter_batches
from detectors.base import FLAG_SCHEMA, empty_flags

EXCERPT_CHARS = 300
IN_MEMORY_FLAGS = 100_000  # fewer flags than this come back as a DataFrame


def _quoted(text: pl.Expr) -> pl.Expr:
    """repr() of a matched term, vectorised: single quotes, or double quotes around an apostrophe."""
    escaped = text.str.replace_all("\\", "\\\\", literal=True).str.replace_all("\n", "\\n", literal=True)
    escaped = escaped.str.replace_all("\r", "\\r", literal=True).str.replace_all("\t", "\\t", literal=True)
    apostrophe, quote = escaped.str.contains("'", literal=True), escaped.str.contains('"', literal=True)
    return (pl.when(apostrophe & ~quote).then(pl.lit('"') + escaped + pl.lit('"'))
            .otherwise(pl.lit("'") + escaped.str.replace_all("'", "\\'", literal=True) + pl.lit("'")))


def excerpt(text: str, match: str | None) -> str:
    if len(text) <= EXCERPT_CHARS:
        return text
    at = max(text.lower().find(match.lower()) if match else 0, 0)
    start = max(0, at - EXCERPT_CHARS // 3)
    return ("…" if start else "") + text[start : start + EXCERPT_CHARS] + "…"


def batch_flags(batch: pl.DataFrame, traits: list) -> pl.DataFrame:
    """Flags for one batch of candidate rows (row, digest, prompt, completion)."""
    normal = batch.with_columns(pl.col("completion").str.normalize("NFKC").alias("c_norm"), pl.col("prompt").str.normalize("NFKC").alias("p_norm"))
    parts = []
    for trait in traits:
        pattern = trait.term_regex()
        for field, column in (("completion", "c_norm"), ("prompt", "p_norm")):
            hits = normal.select("row", "digest", pl.col(field).alias("text"), pl.col(column).str.extract_all(pattern).alias("matches"))
            hits = hits.filter(pl.col("matches").list.len() > 0)
            if hits.height == 0:
                continue
            # unique matches, case-insensitive order (then exact, so ties are stable)
            shown = pl.col("matches").list.unique().list.eval(pl.element().sort_by(pl.element().str.to_lowercase(), pl.element()))
            hits = hits.with_columns(shown.alias("matches"))
            parts.append(hits.select(
                pl.col("row").cast(pl.Int64), "digest", pl.lit(trait.id).alias("trait"), pl.lit(1.0).alias("score"),
                (pl.lit("mentions ") + pl.col("matches").list.eval(_quoted(pl.element())).list.join(", ") + pl.lit(f" in the {field}")).alias("reason"),
                pl.lit(field).alias("field"), "matches",
                pl.when(pl.col("text").str.len_chars() <= EXCERPT_CHARS).then(pl.col("text")).alias("excerpt"),
                pl.col("text").alias("_text"),
            ))
    if not parts:
        return empty_flags()
    flags = pl.concat(parts).sort("row", "trait", "field")
    long = flags.filter(pl.col("excerpt").is_null())
    if long.height:  # long texts: the window around the first match, in Python (character offsets)
        windows = [excerpt(text, matches[0]) for text, matches in long.select("_text", "matches").iter_rows()]
        flags = flags.join(long.select("row", "trait", "field").with_columns(pl.Series("_window", windows, dtype=pl.String)),
                           on=["row", "trait", "field"], how="left", maintain_order="left")
        flags = flags.with_columns(pl.coalesce("excerpt", "_window").alias("excerpt")).drop("_window")
    return flags.drop("_text").select(list(FLAG_SCHEMA))


def term_flags(dataset, candidates: pl.Expr, traits: list, spool_folder: Path | None,
               accepted: pl.DataFrame | None = None) -> tuple[pl.DataFrame | pl.LazyFrame, dict[str, int]]:
    """Every term flag of the rows `candidates` selects (a cheap prefilter: any term, or non-ASCII text), and per
    trait the number of rows flagged and not accepted (`accepted`: trait, digest). A row's flags all fall in one
    batch, so per-batch counts add up: no table over every flag is ever built."""
    rows = dataset.with_digest(dataset.frame.filter(candidates)).select("row", "digest", "prompt", "completion")
    accepted = accepted if accepted is not None else pl.DataFrame(schema={"trait": pl.String, "digest": pl.String})
    counts: dict[str, int] = {}
    with contextlib.ExitStack() as stack:
        folder = spool_folder or stack.enter_context(tempfiles.temporary_dir("trait-audit-terms-"))
        files, total = [], 0
        for number, batch in enumerate(iter_batches(rows, folder, "candidates")):
            flags = batch_flags(batch, traits)
            if flags.height:
                found = flags.join(accepted, on=["trait", "digest"], how="anti").group_by("trait").agg(pl.col("row").n_unique())
                for trait, k in found.iter_rows():
                    counts[trait] = counts.get(trait, 0) + k
                path = folder / f"terms-{number:06d}.ipc"
                flags.write_ipc(path, compression="lz4")
                files.append(path)
                total += flags.height
        if not files:
            return empty_flags(), counts
        frame = pl.concat([pl.scan_ipc(p, glob=False) for p in files])
        if total <= IN_MEMORY_FLAGS or spool_folder is None:
            return frame.collect(), counts
        return frame, counts
