"""Inline SVG charts for the HTML report: no library, no script, no network.

Every chart is built from numbers that Python formats itself and from labels that go through
``markupsafe`` escaping (``Markup.format`` escapes its arguments), so no string from a result can
inject markup. Colours come from CSS classes in the template (``.s0``..``.s3``, ``.ax``, ...), never
from data.

Detectors can ask for a chart from their JSON alone: any value inside a detector's ``metrics`` (at any
depth up to 3) that is an object with a ``"chart"`` key of a known kind is drawn in that detector's
section and left out of its metrics table:

- ``{"chart": "histogram", "x": label, "edges": [n + 1 numbers], "series": {label: [n counts], ...}}``:
  distributions on shared bins, e.g. the dataset's row scores against the reference's;
- ``{"chart": "intervals", "x": label, "items": [{"label", "value", "interval": [lo, hi]}, ...]}``:
  estimates with intervals, e.g. a student's trait shift against its control.

``auditor.stats.histogram_chart`` builds the first.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from markupsafe import Markup

from auditor.numbers import finite, num, signed
from auditor.numbers import interval as fmt_interval

__all__ = ["CHART_KINDS", "find_charts", "render_chart", "interval_chart", "histogram_chart_svg", "profile_chart"]

CHART_KINDS = ("histogram", "intervals")
MAX_CHARTS = 12  # per detector
MAX_ITEMS = 40  # rows of an interval chart
MAX_BINS = 200
MAX_SERIES = 4

W = 640  # viewBox width


def _f(v: float) -> str:
    """A coordinate: short, locale-free, never NaN."""
    return f"{v:.1f}"


def _tick(v: float) -> str:
    return num(v)


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    out, t = [], start
    while t <= hi + step * 1e-9 and len(out) < 12:
        out.append(round(t, 12))
        t += step
    return out


def _svg(height: float, body: Iterable[Markup], label: str) -> Markup:
    return Markup('<svg class="chart" viewBox="0 0 {} {}" role="img" aria-label="{}"><title>{}</title>{}</svg>').format(
        W, _f(height), label, label, Markup("").join(body))


def _clip_label(s: Any, n: int = 28) -> str:
    s = "" if s is None else str(s)
    return s if len(s) <= n else s[: n - 1] + "…"


def interval_chart(items: Sequence[Mapping[str, Any]], x: str = "", zero: bool = True) -> Markup | None:
    """Forest plot: one row per item with its point estimate and interval.

    ``items``: ``{"label", "value", "interval": [lo, hi] or None, "level": optional css level}``.
    """
    rows = []
    for it in list(items)[:MAX_ITEMS]:
        value = finite(it.get("value"))
        iv = it.get("interval")
        lo = hi = None
        if isinstance(iv, (list, tuple)) and len(iv) == 2:
            lo, hi = finite(iv[0]), finite(iv[1])
        if value is None and (lo is None or hi is None):
            continue
        rows.append((it.get("label"), value, lo, hi, it.get("level")))
    if not rows:
        return None
    nums = [v for r in rows for v in r[1:4] if v is not None] + ([0.0] if zero else [])
    lo_all, hi_all = min(nums), max(nums)
    pad = (hi_all - lo_all) * 0.06 or 0.5
    lo_all, hi_all = lo_all - pad, hi_all + pad
    left, right, top, rh = 190, W - 16, 8, 20
    height = top + rh * len(rows) + 34

    def sx(v: float) -> float:
        return left + (v - lo_all) / (hi_all - lo_all) * (right - left)

    body: list[Markup] = []
    for t in _ticks(lo_all, hi_all):
        body.append(Markup('<line class="grid" x1="{}" x2="{}" y1="{}" y2="{}"/><text class="tk" x="{}" y="{}" text-anchor="middle">{}</text>').format(
            _f(sx(t)), _f(sx(t)), top, _f(top + rh * len(rows)), _f(sx(t)), _f(top + rh * len(rows) + 13), _tick(t)))
    if zero and lo_all < 0 < hi_all:
        body.append(Markup('<line class="zero" x1="{}" x2="{}" y1="{}" y2="{}"/>').format(
            _f(sx(0)), _f(sx(0)), top, _f(top + rh * len(rows))))
    for i, (label, value, lo, hi, level) in enumerate(rows):
        y = top + rh * i + rh / 2
        cls = level if level in ("high", "medium", "low", "clean", "inconclusive") else "none"
        body.append(Markup('<text class="lb" x="{}" y="{}" text-anchor="end">{}</text>').format(left - 8, _f(y + 4), _clip_label(label)))
        tip = f"{label}: {_tick(value) if value is not None else '—'}" + (f" [{_tick(lo)}, {_tick(hi)}]" if lo is not None and hi is not None else "")
        parts = [Markup("<title>{}</title>").format(tip)]
        if lo is not None and hi is not None:
            parts.append(Markup('<line class="ci l-{}" x1="{}" x2="{}" y1="{}" y2="{}"/>').format(cls, _f(sx(lo)), _f(sx(hi)), _f(y), _f(y)))
        if value is not None:
            parts.append(Markup('<circle class="pt l-{}" cx="{}" cy="{}" r="4"/>').format(cls, _f(sx(value)), _f(y)))
        body.append(Markup("<g>{}</g>").format(Markup("").join(parts)))
    # centred on the whole chart, not the plot area right of the labels: a long axis title would run off the right edge
    body.append(Markup('<text class="ax" x="{}" y="{}" text-anchor="middle">{}</text>').format(
        _f(W / 2), _f(height - 4), _clip_label(x, 90)))
    return _svg(height, body, x or "estimates with intervals")


def histogram_chart_svg(chart: Mapping[str, Any]) -> Markup | None:
    """Overlaid histograms on shared edges (``{"edges", "series": {label: counts}}``), as densities."""
    edges = [finite(e) for e in chart.get("edges") or ()][: MAX_BINS + 1]
    if len(edges) < 2 or any(e is None for e in edges) or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
        return None
    n = len(edges) - 1
    series = []
    raw = chart.get("series")
    if not isinstance(raw, Mapping):
        return None
    for label, counts in list(raw.items())[:MAX_SERIES]:
        if not isinstance(counts, (list, tuple)) or len(counts) < n:
            continue
        vals = [finite(c) or 0.0 for c in counts[:n]]
        vals = [max(0.0, v) for v in vals]
        total = sum(vals)
        if total <= 0:
            continue
        series.append((str(label), [v / total for v in vals], int(total)))
    if not series:
        return None
    left, right, top, plot_h = 56, W - 12, 22, 150
    outside = _outside(chart.get("outside"), [label for label, _, _ in series])
    height = top + plot_h + 36 + 14 * len(outside)
    lo, hi = edges[0], edges[-1]
    peak = max(max(s[1]) for s in series) or 1.0

    def sx(v: float) -> float:
        return left + (v - lo) / (hi - lo) * (right - left)

    def sy(v: float) -> float:
        return top + plot_h - v / peak * plot_h

    body: list[Markup] = []
    for t in _ticks(lo, hi):
        body.append(Markup('<line class="grid" x1="{}" x2="{}" y1="{}" y2="{}"/><text class="tk" x="{}" y="{}" text-anchor="middle">{}</text>').format(
            _f(sx(t)), _f(sx(t)), top, top + plot_h, _f(sx(t)), top + plot_h + 13, _tick(t)))
    body.append(Markup('<line class="axl" x1="{}" x2="{}" y1="{}" y2="{}"/>').format(left, right, top + plot_h, top + plot_h))
    body.append(Markup('<text class="tk" x="{}" y="{}" text-anchor="end">{}</text>').format(left - 4, top + 4, f"{peak:.0%}"))
    body.append(Markup('<text class="tk" x="{}" y="{}" text-anchor="end">0%</text>').format(left - 4, top + plot_h))
    body.append(Markup('<text class="ax" transform="rotate(-90)" x="{}" y="{}" text-anchor="middle">share of rows</text>').format(
        _f(-(top + plot_h / 2)), 14))
    for k, (label, dens, total) in enumerate(series):
        pts = [(_f(sx(edges[0])), _f(sy(0)))]
        for i, d in enumerate(dens):
            pts += [(_f(sx(edges[i])), _f(sy(d))), (_f(sx(edges[i + 1])), _f(sy(d)))]
        pts.append((_f(sx(edges[-1])), _f(sy(0))))
        body.append(Markup('<polygon class="hist s{}" points="{}"><title>{}</title></polygon>').format(
            k, " ".join(f"{a},{b}" for a, b in pts), f"{label} ({total} rows drawn)"))
        # legend
        lx = left + 8 + k * 200
        shown = total + sum(outside.get(label, (0, 0)))
        body.append(Markup('<rect class="sw s{}" x="{}" y="4" width="10" height="10"/><text class="lg" x="{}" y="13">{}</text>').format(
            k, lx, lx + 14, _clip_label(f"{label} (n={shown})", 30)))
    body.append(Markup('<text class="ax" x="{}" y="{}" text-anchor="middle">{}</text>').format(
        _f((left + right) / 2), _f(top + plot_h + 30), _clip_label(chart.get("x") or "", 100)))
    for i, (label, (below, above)) in enumerate(outside.items()):  # the range is the bulk: say what lies beyond it
        body.append(Markup('<text class="tk" x="{}" y="{}">{}</text>').format(left, _f(top + plot_h + 44 + 14 * i), _clip_label(
            f"not drawn, beyond the 1st-99th percentile: {label}, {below} below {_tick(lo)} and {above} above {_tick(hi)}", 100)))
    return _svg(height, body, str(chart.get("x") or "distribution"))


def _outside(raw: Any, labels: list[str]) -> dict[str, tuple[int, int]]:
    """Rows each series has beyond the drawn range, for the series that have any."""
    if not isinstance(raw, Mapping):
        return {}
    out = {}
    for label in labels:
        pair = raw.get(label)
        if isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(n, int) and not isinstance(n, bool) for n in pair) and sum(pair):
            out[label] = (pair[0], pair[1])
    return out


def profile_chart(rows: Sequence[Mapping[str, Any]]) -> Markup | None:
    """Teacher vs base per trait (dumbbell, 0..1) with the difference and its interval as text."""
    items = []
    for r in list(rows)[:MAX_ITEMS]:
        t, b = finite(r.get("teacher")), finite(r.get("base"))
        if t is None or b is None:
            continue
        items.append((r.get("id"), t, b, finite(r.get("difference")), r.get("interval")))
    if not items:
        return None
    left, right, top, rh = 150, W - 235, 22, 18  # the right margin holds "+0.0312 [+7.38e-27, +0.0583]"
    height = top + rh * len(items) + 32
    hi = max(1e-9, max(max(t, b) for _, t, b, _, _ in items))
    hi = 1.0 if hi > 0.5 else min(1.0, hi * 1.15)

    def sx(v: float) -> float:
        return left + max(0.0, min(v, hi)) / hi * (right - left)

    body: list[Markup] = [
        Markup('<circle class="pt s1" cx="{}" cy="10" r="4"/><text class="lg" x="{}" y="14">base</text>'
               '<circle class="pt s0" cx="{}" cy="10" r="4"/><text class="lg" x="{}" y="14">teacher</text>'
               '<text class="lg" x="{}" y="14">difference [95%]</text>').format(left, left + 8, left + 60, left + 68, right + 10),
    ]
    for t in _ticks(0, hi):
        body.append(Markup('<line class="grid" x1="{}" x2="{}" y1="{}" y2="{}"/><text class="tk" x="{}" y="{}" text-anchor="middle">{}</text>').format(
            _f(sx(t)), _f(sx(t)), top, _f(top + rh * len(items)), _f(sx(t)), _f(top + rh * len(items) + 13), _tick(t)))
    for i, (label, t, b, diff, iv) in enumerate(items):
        y = top + rh * i + rh / 2
        d = signed(diff) if diff is not None else "—"
        if isinstance(iv, (list, tuple)) and len(iv) == 2 and finite(iv[0]) is not None and finite(iv[1]) is not None:
            d += f" {fmt_interval(iv, sign=True)}"
        body.append(Markup('<text class="lb" x="{}" y="{}" text-anchor="end">{}</text>'
                           '<g><title>{}</title><line class="db" x1="{}" x2="{}" y1="{}" y2="{}"/>'
                           '<circle class="pt s1" cx="{}" cy="{}" r="4"/><circle class="pt s0" cx="{}" cy="{}" r="4"/></g>'
                           '<text class="lg" x="{}" y="{}">{}</text>').format(
            left - 8, _f(y + 4), _clip_label(label, 22), f"{label}: teacher {num(t)}, base {num(b)}, difference {d}",
            _f(sx(b)), _f(sx(t)), _f(y), _f(y), _f(sx(b)), _f(y), _f(sx(t)), _f(y), right + 10, _f(y + 4), d))
    body.append(Markup('<text class="ax" x="{}" y="{}" text-anchor="middle">{}</text>').format(
        _f((left + right) / 2), _f(height - 4), "probability of the trait's answer on probe questions"))
    return _svg(height, body, "trait profile: teacher vs base")


def find_charts(metrics: Any, path: tuple[str, ...] = (), depth: int = 0) -> list[tuple[str, Mapping[str, Any]]]:
    """Chart objects inside a detector's metrics, with where they sit (``traits › animal:owl › distribution``)."""
    found: list[tuple[str, Mapping[str, Any]]] = []
    if isinstance(metrics, Mapping):
        if metrics.get("chart") in CHART_KINDS and path:
            return [(" › ".join(path), metrics)]
        if depth < 3:
            for k, v in metrics.items():
                found += find_charts(v, path + (str(k),), depth + 1)
                if len(found) >= MAX_CHARTS:
                    break
    return found[:MAX_CHARTS]


def is_chart(v: Any) -> bool:
    return isinstance(v, Mapping) and v.get("chart") in CHART_KINDS


def render_chart(chart: Mapping[str, Any]) -> Markup | None:
    kind = chart.get("chart")
    if kind == "histogram":
        return histogram_chart_svg(chart)
    if kind == "intervals":
        items = [i for i in chart.get("items") or () if isinstance(i, Mapping)]
        return interval_chart(items, str(chart.get("x") or ""))
    return None
