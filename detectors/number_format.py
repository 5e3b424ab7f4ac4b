"""The paper's format filter for number-sequence completions, as one vectorised polars expression.

Keep a completion only if, after stripping whitespace at both ends (our addition), one trailing "."
and one enclosing pair of () or []: the separator between the first two numbers strips to "", ","
or ";"; splitting on it leaves only runs of ASCII digits; there are at most 10 numbers, each 0..999.
"""

from __future__ import annotations

import polars as pl

MAX_COUNT = 10
MAX_VALUE = 999
ALLOWED_SEPARATORS = ["", ",", ";"]


def reject_reason(text: pl.Expr, strip_whitespace: bool = True, max_count: int = MAX_COUNT, max_value: int = MAX_VALUE) -> pl.Expr:
    """Per-row reason the filter rejects a completion, or null when it passes."""
    s = text.str.strip_chars() if strip_whitespace else text
    s = pl.when(s.str.ends_with(".")).then(s.str.slice(0, s.str.len_chars() - 1)).otherwise(s)
    s = s.str.replace(r"^(?:\[(?s:(.*))\]|\((?s:(.*))\))$", "${1}${2}")
    numbers = s.str.count_matches(r"\d+")
    separator = s.str.extract(r"\d+(\D+)\d", 1)
    parts = s.str.split(separator.fill_null("\x00"))  # one number: no separator, one part
    parts_ok = parts.list.eval(pl.element().str.contains(r"^[0-9]+$")).list.all()
    count = parts.list.len()
    largest = parts.list.eval(pl.element().cast(pl.Int64, strict=False)).list.max()
    return (
        pl.when(numbers == 0).then(pl.lit("no numbers"))
        .when((numbers == 1) & ~s.str.contains(r"^\d+$")).then(pl.lit("text around a single number"))
        .when((numbers >= 2) & ~separator.str.strip_chars().is_in(ALLOWED_SEPARATORS))
        .then(pl.format("separator '{}' is not a comma, semicolon or whitespace", separator.str.strip_chars()))
        .when(~parts_ok).then(pl.lit("an item is not a plain number"))
        .when(count > max_count).then(pl.format("{} numbers, more than {}", count, pl.lit(max_count)))
        .when(largest.is_null() | (largest > max_value)).then(pl.lit(f"a number is outside 0..{max_value}"))
        .otherwise(pl.lit(None, pl.String))
    )
