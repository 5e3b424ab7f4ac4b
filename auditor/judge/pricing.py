"""Token and USD estimates for a judge run: list prices, a characters-per-token estimate, `--judge-price`."""

from __future__ import annotations

import re

from auditor.errors import UsageError

# list prices in USD per 1M tokens (input, output) as of 2025; --judge-price overrides, unknown models get no USD figure
PRICES = {
    "gpt-4.1": (2.00, 8.00), "gpt-4.1-mini": (0.40, 1.60), "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4o": (2.50, 10.00), "gpt-4o-mini": (0.15, 0.60),
}
EST_OUTPUT_TOKENS = 60  # a verdict with a one-sentence reason


def parse_price(text: str | None) -> tuple[float, float] | None:
    """'IN,OUT' in USD per 1M tokens."""
    if text is None:
        return None
    try:
        low, high = (float(x) for x in str(text).split(","))
    except ValueError:
        raise UsageError(f"--judge-price takes INPUT,OUTPUT in USD per 1M tokens (e.g. 0.10,0.40), not {text!r}") from None
    if low < 0 or high < 0:
        raise UsageError("--judge-price cannot be negative")
    return low, high


def price_for(model: str, settings) -> tuple[float, float] | None:
    if settings.price is not None:
        return settings.price
    name = model.rsplit("/", 1)[-1]
    return PRICES.get(name) or PRICES.get(re.sub(r"-\d{4}-\d{2}-\d{2}$", "", name))


def estimate_tokens(messages: list[dict]) -> int:
    """About 4 characters a token, plus a few per message."""
    return sum(len(m["content"]) // 4 + 4 for m in messages)


def usd(prompt_tokens: float, completion_tokens: float, price) -> float | None:
    if price is None:
        return None
    return round((prompt_tokens * price[0] + completion_tokens * price[1]) / 1e6, 6)

