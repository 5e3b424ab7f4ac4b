"""A plain-Python oracle of the paper's number-format filter, written from its description, to check
the vectorised polars version in detectors/number_format.py against."""

from __future__ import annotations

import re


def passes(answer: str, strip_whitespace: bool = True, max_count: int = 10, max_value: int = 999) -> bool:
    if strip_whitespace:
        answer = answer.strip()
    if answer.endswith("."):
        answer = answer[:-1]
    if (answer.startswith("[") and answer.endswith("]")) or (answer.startswith("(") and answer.endswith(")")):
        answer = answer[1:-1]
    found = list(re.finditer(r"\d+", answer))
    if not found:
        return False
    if len(found) == 1:
        if answer != found[0].group():
            return False
        parts = [answer]
    else:
        separator = answer[found[0].end() : found[1].start()]
        if separator.strip() not in ("", ",", ";"):
            return False
        parts = answer.split(separator)
    if not all(part and all(c in "0123456789" for c in part) for part in parts):
        return False
    numbers = [int(p) for p in parts]
    return len(numbers) <= max_count and all(0 <= n <= max_value for n in numbers)
