"""Intervals that verdicts rest on: Wilson for rates, a bootstrap over rows for ratios."""

from __future__ import annotations

import numpy as np

CONFIDENCE = 0.95


def wilson(successes: int, trials: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of a proportion; (0, 1) when there are no trials."""
    if trials == 0:
        return (0.0, 1.0)
    from scipy.stats import binomtest  # scipy.stats takes seconds to import: only when a rate is computed

    ci = binomtest(int(successes), int(trials)).proportion_ci(confidence_level=confidence, method="wilson")
    return (float(ci.low), float(ci.high))


def bootstrap_mean(diff: np.ndarray, seed: int, resamples: int = 2000) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean of `diff` (per-question differences)."""
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(axis=1)
    lo, hi = np.quantile(means, [0.025, 0.975])
    return float(lo), float(hi)


def standardised_shift(a: np.ndarray, b: np.ndarray, seed: int, resamples: int = 2000) -> tuple[float, float, tuple[float, float], float]:
    """mean(a) - mean(b) on its own and standardised by the pooled sd, with a 95% percentile-bootstrap interval of the
    standardised difference and a one-sided permutation p-value (a above b): (difference, effect, interval, p)."""
    from scipy import stats  # slow to import: only when a detector runs, never for `audit --help`

    difference = float(a.mean() - b.mean())
    spread = float(np.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)) or 1e-12
    rng = np.random.default_rng(seed)
    boot = stats.bootstrap((a, b), lambda x, y, axis: (x.mean(axis) - y.mean(axis)) / spread, n_resamples=resamples,
                           vectorized=True, method="percentile", random_state=rng)
    test = stats.permutation_test((a, b), lambda x, y, axis: x.mean(axis) - y.mean(axis), n_resamples=resamples,
                                  vectorized=True, alternative="greater", random_state=rng)
    return difference, difference / spread, (float(boot.confidence_interval.low), float(boot.confidence_interval.high)), float(test.pvalue)


def _blocks(values: np.ndarray, max_blocks: int) -> np.ndarray:
    """Sum consecutive rows into at most max_blocks blocks (rows stay the sampling unit, arrays stay small)."""
    if len(values) <= max_blocks:
        return values
    edges = np.linspace(0, len(values), max_blocks + 1).astype(int)
    return np.add.reduceat(values, edges[:-1], axis=0)


def bootstrap_ratio(
    numerator: np.ndarray,
    denominator: np.ndarray,
    reference: tuple[np.ndarray, np.ndarray] | None = None,
    seed: int = 0,
    resamples: int = 2000,
    max_blocks: int = 2000,
    confidence: float = CONFIDENCE,
) -> tuple[float, tuple[float, float]]:
    """Ratio sum(numerator)/sum(denominator), divided by the same ratio on a reference when one is given.

    Rows are resampled with replacement (percentile interval); the reference is resampled independently.
    """
    rng = np.random.default_rng(seed)

    def replicate(num: np.ndarray, den: np.ndarray) -> tuple[float, np.ndarray]:
        pairs = _blocks(np.stack([num, den], axis=1).astype(np.float64), max_blocks)
        picks = rng.integers(0, len(pairs), size=(resamples, len(pairs)))
        sums = pairs[picks].sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return pairs[:, 0].sum() / pairs[:, 1].sum(), sums[:, 0] / sums[:, 1]

    point, draws = replicate(numerator, denominator)
    if reference is not None:
        ref_point, ref_draws = replicate(*reference)
        with np.errstate(divide="ignore", invalid="ignore"):
            point, draws = point / ref_point, draws / ref_draws
    draws = draws[np.isfinite(draws)]
    if not np.isfinite(point) or len(draws) == 0:
        return float("nan"), (float("nan"), float("nan"))
    alpha = (1 - confidence) / 2
    low, high = np.quantile(draws, [alpha, 1 - alpha])
    return float(point), (float(low), float(high))


BULK = (0.01, 0.99)  # the histogram's range: the pooled 1st to 99th percentile; rows outside are counted, not drawn


def histogram_chart(series: dict[str, np.ndarray], x: str, bins: int = 20) -> dict:
    """A JSON chart the HTML report draws: {"chart": "histogram", "x", "edges", "series": {label: counts},
    "outside": {label: [below, above]}}.

    Every series shares the same edges, so the report can overlay the dataset's rows on the reference's. The edges span
    the bulk of the pooled values (1st to 99th percentile): a few extreme rows (a likelihood shift of -30 nats) would
    otherwise squeeze the rest into one bar; they are counted in "outside" instead. Non-finite values are left out.
    """
    clean = {label: np.asarray(values, dtype=float) for label, values in series.items()}
    clean = {label: v[np.isfinite(v)] for label, v in clean.items()}
    pooled = np.concatenate([v for v in clean.values() if len(v)]) if any(len(v) for v in clean.values()) else np.zeros(1)
    low, high = (float(q) for q in np.quantile(pooled, BULK))
    if high <= low:
        low, high = float(pooled.min()), float(pooled.max())
    if high <= low:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, bins + 1)
    return {"chart": "histogram", "x": x, "edges": [round(float(e), 6) for e in edges],
            "series": {label: np.histogram(v[(v >= low) & (v <= high)], bins=edges)[0].astype(int).tolist() for label, v in clean.items()},
            "outside": {label: [int((v < low).sum()), int((v > high).sum())] for label, v in clean.items()}}
