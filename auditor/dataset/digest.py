"""Row digests: sha256 of the normalised prompt and completion, so baselines survive shuffling and re-generation."""

from __future__ import annotations

import hashlib

import polars as pl
import polars_hash as plh

SEPARATOR = "\x1e"  # record separator: cannot be confused with text that joins the two fields differently


def _clean(expr: pl.Expr) -> pl.Expr:
    return expr.fill_null("").str.replace_all("\r\n", "\n", literal=True).str.strip_chars()


def digest_expr(prompt: str = "prompt", completion: str = "completion") -> pl.Expr:
    """Vectorised digest (sha256 hex) of a frame's prompt and completion columns."""
    text = _clean(pl.col(prompt)) + pl.lit(SEPARATOR) + _clean(pl.col(completion))
    return plh.concat_str(text).chash.sha2_256()


def digest_text(prompt: str, completion: str) -> str:
    """The same digest for one row, in plain Python (tests and baselines use it)."""
    def clean(text: str | None) -> str:
        return (text or "").replace("\r\n", "\n").strip()

    return hashlib.sha256(f"{clean(prompt)}{SEPARATOR}{clean(completion)}".encode()).hexdigest()
