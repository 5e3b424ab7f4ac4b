"""The paper's format filter for number-sequence completions, as one vectorised polars expression.

Keep a completion only if, after stripping whitespace at both ends (our addition), one trailing "."
and one enclosing pair of () or []: the separator between the first two numbers strips to "", ","
or ";"; splitting on it leaves only runs of ASCII digits; there are at most 10 numbers, each 0..999.

Splitting each row on its own separator is slow in polars, so the split is checked arithmetically:
with n numbers, the row starts and ends with a digit, the separator occurs exactly n-1 times and the
non-digit characters add up to (n-1) separators. Then every gap between numbers is the separator,
which is what a clean split means. tests/paper_filter.py holds a plain-Python oracle to compare.
"""

from __future__ import annotations

import polars as pl

MAX_COUNT = 10
MAX_VALUE = 999
ALLOWED_SEPARATORS = ["", ",", ";"]


def unwrap(text: pl.Expr, strip_whitespace: bool = True) -> pl.Expr:
    """The completion without outer whitespace, one trailing "." and one enclosing () or []."""
    s = text.str.strip_chars() if strip_whitespace else text
    s = pl.when(s.str.ends_with(".")).then(s.str.slice(0, s.str.len_chars() - 1)).otherwise(s)
    return s.str.replace(r"^(?:\[(?s:(.*))\]|\((?s:(.*))\))$", "${1}${2}")


def with_reject_reason(frame, text: str = "completion", alias: str = "reject", strip_whitespace: bool = True, max_count: int = MAX_COUNT):
    """Add the per-row reject reason (null when the row passes) to a DataFrame or LazyFrame.

    The unwrapped text goes into a column of its own first: as a shared sub-expression it was
    recomputed for every branch and the scan ran several times slower.
    """
    s = pl.col("_unwrapped")
    staged = frame.with_columns(unwrap(pl.col(text), strip_whitespace).alias("_unwrapped")).with_columns(
        s.str.count_matches(r"\d+").alias("_numbers"), s.str.extract(r"\d+(\D+)\d", 1).alias("_separator")
    )
    reason = reject_reason(s, max_count, numbers=pl.col("_numbers"), separator=pl.col("_separator"))
    return staged.with_columns(reason.alias(alias)).drop("_unwrapped", "_numbers", "_separator")


def reject_reason(s: pl.Expr, max_count: int = MAX_COUNT, numbers: pl.Expr | None = None, separator: pl.Expr | None = None) -> pl.Expr:
    """Reject reason of an already unwrapped completion (see unwrap), or null when it passes."""
    numbers = s.str.count_matches(r"\d+") if numbers is None else numbers
    separator = s.str.extract(r"\d+(\D+)\d", 1) if separator is None else separator
    gaps = s.str.replace_all(r"[0-9]+", "").str.len_chars()
    clean_split = (
        s.str.contains(r"^[0-9](?s:.*)[0-9]$|^[0-9]$")
        & ~s.str.contains(r"[\d&&[^0-9]]")  # digits other than ASCII 0-9 are not plain numbers
        & (
            (numbers == 1)
            | ((s.str.count_matches(separator.fill_null("\x00"), literal=True) == numbers - 1)
               & (gaps == (numbers - 1) * separator.str.len_chars()))
        )
    )
    return (
        pl.when(numbers == 0).then(pl.lit("no numbers"))
        .when((numbers == 1) & ~s.str.contains(r"^\d+$")).then(pl.lit("text around a single number"))
        .when((numbers >= 2) & ~separator.str.strip_chars().is_in(ALLOWED_SEPARATORS))
        .then(pl.format("separator '{}' is not a comma, semicolon or whitespace", separator.str.strip_chars()))
        .when(~clean_split).then(pl.lit("an item is not a plain number"))
        .when(numbers > max_count).then(pl.format("{} numbers, more than {}", numbers, pl.lit(max_count)))
        .when(s.str.contains(r"[1-9][0-9]{3}")).then(pl.lit(f"a number is outside 0..{MAX_VALUE}"))
        .otherwise(pl.lit(None, pl.String))
    )
