"""What every report format shows, computed once from the typed result (auditor/result.py).

HTML, Markdown, JUnit, SARIF and the terminal summary all take their number formats, their order of traits and
flags, their hidden-transfer coverage and their excerpt windows from here, so a trait reads the same in each.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from auditor import numbers
from auditor.numbers import finite
from auditor.result import DetectorRun, Flag, Level, Report, TraitVerdict

HIDDEN_NOT_CHECKED = "only content detectors ran: a silent content check does not clear hidden transfer"
#: Said of the inconclusive traits listed in one line (auditor/reports/view.py `unlooked`).
QUIET_TRAITS = "no detector that sees hidden transfer checked them, and a silent content check does not clear hidden transfer"

#: Most terms used to find matches in one excerpt.
MAX_MATCH_TERMS = 64


# --------------------------------------------------------------------------------------------------------------------
# numbers


def fmt_num(v: Any, group: bool = True) -> str:
    """A number in the one format (auditor/numbers.py); booleans as yes/no."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    return numbers.num(v, group=group)


def fmt_interval(iv: Any) -> str:
    return numbers.interval(iv)


def fmt_duration(s: Any) -> str:
    if not isinstance(s, (int, float)) or isinstance(s, bool) or math.isnan(s):
        return "—"
    if s < 60:
        return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"
    m, sec = divmod(int(round(s)), 60)
    if m < 60:
        return f"{m}m {sec:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h {m:02d}m"


def clip(s: str, n: int) -> str:
    return s if len(s) <= n else s[: max(0, n - 1)] + "…"


def fmt_value(v: Any, depth: int = 0, limit: int = 400) -> str:
    """A metric, cost or metadata value (maybe nested) as one short line."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        return fmt_num(v, group=False)  # no grouping commas: they would be ambiguous inside "a, b" lists
    if isinstance(v, str):
        return clip(v, 200 if depth else limit)
    if isinstance(v, Mapping):
        if not v:
            return "{}"
        if depth >= 3:
            return "{…}"
        items = list(v.items())
        parts = [f"{k}: {fmt_value(x, depth + 1)}" for k, x in items[:12]]
        if len(items) > 12:
            parts.append(f"… +{len(items) - 12} more")
        out = ", ".join(parts)
        return clip(out if depth == 0 else "{" + out + "}", limit)
    if isinstance(v, (list, tuple)):
        if not v:
            return "[]"
        if depth >= 3:
            return "[…]"
        parts = [fmt_value(x, depth + 1) for x in v[:12]]
        if len(v) > 12:
            parts.append(f"… +{len(v) - 12} more")
        return clip("[" + ", ".join(parts) + "]", limit)
    return clip(str(v), limit)


# --------------------------------------------------------------------------------------------------------------------
# order

#: Verdicts as a reader scans them: the worst first.
SEVERITY: tuple[Level, ...] = (Level.HIGH, Level.MEDIUM, Level.LOW, Level.INCONCLUSIVE, Level.CLEAN)
SEVERITY_RANK = {level: i for i, level in enumerate(SEVERITY)}


def looked_at(t: TraitVerdict, detectors: Sequence[DetectorRun] = ()) -> bool:
    """A detector checked this trait for hidden transfer, or some evidence raised it: a reader's first concern."""
    return t.verdict.raises_risk or t.raised or hidden_checked(t, detectors)[0]


def trait_sort_key(t: TraitVerdict, detectors: Sequence[DetectorRun] = ()):
    """Raised verdicts first (worst first), then the other traits a detector checked or raised, then the rest."""
    score = finite(t.score)
    group = 0 if t.verdict.raises_risk else 1 if looked_at(t, detectors) else 2
    return (group, SEVERITY_RANK.get(t.verdict, len(SEVERITY)), score is None, -(score or 0.0), t.id)


def sorted_traits(traits: Iterable[TraitVerdict], detectors: Sequence[DetectorRun] = ()) -> list[TraitVerdict]:
    return sorted(traits, key=lambda t: trait_sort_key(t, detectors))


def unlooked(traits: Iterable[TraitVerdict], detectors: Sequence[DetectorRun] = ()) -> list[TraitVerdict]:
    """Inconclusive traits no detector checked for hidden transfer and nothing raised: listed in one line, not one by one."""
    return [t for t in traits if t.verdict is Level.INCONCLUSIVE and not looked_at(t, detectors)]


def flag_sort_key(f: Flag):
    score = finite(f.score)
    return (f.accepted, score is None, -(score or 0.0), f.row)


def sorted_flags(flags: Iterable[Flag]) -> list[Flag]:
    """Not-yet-accepted first, then highest score, then row number."""
    return sorted(flags, key=flag_sort_key)


def sample_flags(flags: Sequence[Flag], limit: int) -> list[Flag]:
    """The flags a page shows when there are more than `limit`: an equal share per trait, best first.

    Each trait (and "no trait") is one stratum, ordered not-yet-accepted first, then highest score, then row; strata
    take turns, so a trait with thousands of flags cannot crowd out one with ten. The result is in display order.
    """
    if len(flags) <= limit:
        return sorted_flags(flags)
    strata: dict[str, list[Flag]] = {}
    for f in flags:
        strata.setdefault(trait_key(f.trait), []).append(f)
    queues = [sorted_flags(v) for _, v in sorted(strata.items())]
    picked: list[Flag] = []
    i = 0
    while len(picked) < limit:
        progressed = False
        for q in queues:
            if i < len(q) and len(picked) < limit:
                picked.append(q[i])
                progressed = True
        if not progressed:
            break
        i += 1
    return sorted_flags(picked)


def trait_key(trait: str | None) -> str:
    """A flag's trait as a filter key: "none" for flags without a trait (format rejects), "t:<id>" otherwise."""
    return "none" if trait is None else "t:" + trait


# --------------------------------------------------------------------------------------------------------------------
# hidden-transfer coverage


def hidden_detectors(detectors: Iterable[DetectorRun]) -> list[str]:
    """Names of detectors that ran and can see hidden (subliminal) transfer."""
    return [d.name for d in detectors if d.ran and d.sees_hidden_transfer]


def hidden_checked(trait: TraitVerdict, detectors: Sequence[DetectorRun]) -> tuple[bool, list[str]]:
    """(checked?, names of the hidden-transfer detectors behind it).

    Uses the trait's `hidden_transfer_checked` when the result has it; otherwise whether any evidence came from a
    hidden-transfer detector that ran.
    """
    hidden = hidden_detectors(detectors)
    by_evidence = list(dict.fromkeys(e.detector for e in trait.evidence if e.detector in hidden))
    if trait.hidden_transfer_checked is not None:
        return trait.hidden_transfer_checked, (by_evidence or hidden) if trait.hidden_transfer_checked else []
    return bool(by_evidence), by_evidence


def why_not_looked(detector: DetectorRun) -> str:
    """Why a hidden-transfer detector has nothing on a trait."""
    if detector.status in ("skipped", "failed"):
        return f"{detector.status}: " + clip(detector.reason or "no reason given", 160)
    return "ran, but not for this trait"


# --------------------------------------------------------------------------------------------------------------------
# excerpts


def match_spans(text: str, matches: Iterable[Any] | None) -> list[tuple[int, int]]:
    """Merged [start, end) spans of every case-insensitive occurrence of any match.

    Each term is searched with a lookahead, so overlapping hits are all found; overlapping or touching spans merge.
    """
    terms = sorted({m.replace("\r\n", "\n") for m in (matches or ()) if isinstance(m, str) and m}, key=len, reverse=True)[:MAX_MATCH_TERMS]
    spans: list[tuple[int, int]] = []
    for term in terms:
        rx = re.compile("(?=(" + re.escape(term) + "))", re.IGNORECASE)
        for mo in rx.finditer(text):
            if mo.end(1) > mo.start(1):
                spans.append((mo.start(1), mo.end(1)))
            if len(spans) > 5000:
                break
    spans.sort()
    merged: list[list[int]] = []
    for s, e in spans:
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return [(s, e) for s, e in merged]


def excerpt_window(text: str, matches: Iterable[Any] | None, limit: int) -> tuple[str, list[tuple[int, int]], bool, bool]:
    """(window, match spans inside it, cut before?, cut after?) for an excerpt of at most `limit` characters.

    A longer text is cut to a window that shows its first match with some context before it.
    """
    text = text.replace("\r\n", "\n")
    spans = match_spans(text, matches)
    if len(text) <= limit:
        return text, spans, False, False
    start = max(0, spans[0][0] - 100) if spans and spans[0][0] > limit - 100 else 0
    end = start + limit
    window = text[start:end]
    inside = [(max(s - start, 0), min(e - start, len(window))) for s, e in spans if e > start and s < end]
    return window, inside, start > 0, end < len(text)


# --------------------------------------------------------------------------------------------------------------------
# profiling's picks

#: auditor.profile.MIN_GAIN in words (a test keeps the two in step; importing profile here would load scipy)
PICK_BAR = "1 percentage point"


def profile_sentences(report: Report) -> list[str]:
    """One sentence per trait profiling picked: what the teacher and the base said, and why that made it a pick."""
    prof = report.profile
    if prof is None or not prof.picked:
        return []
    rows = {r.id: r for r in prof.traits}
    out = []
    for i, trait in enumerate(prof.picked):
        r = rows.get(trait)
        measured = (f"the teacher gives it {numbers.num(r.teacher)} on the trait's probe questions against the base's {numbers.num(r.base)} "
                    f"({numbers.signed(r.difference)}, 95% {numbers.interval(r.interval, sign=True)})") if r else "the teacher prefers it more than the base"
        why = (f"a gain above {PICK_BAR}, so the model-based detectors test it" if i == 0 else
               f"a gain above {PICK_BAR} too: every such trait is tested, not only the largest, because fine-tuning a teacher "
               f"on one trait also moves others")
        out.append(f"{trait}{' was picked' if i == 0 else ' was picked as well'}: {measured}, {why}.")
    return out


# --------------------------------------------------------------------------------------------------------------------
# the LLM judge


def judge_view(report: Report) -> dict | None:
    """The LLM judge's section (HTML and Markdown): None when no judge entry is in the result. The statement that a
    clean judge result does not clear hidden transfer is always there."""
    from auditor.risk import JUDGE_STATEMENT

    entry = report.detector("judge")
    if entry is None:
        return None
    m, c = entry.metrics, entry.cost
    rates = m.get("flagged_rate") or {}
    flagged = sorted(((str(t), v) for t, v in rates.items() if v.get("flagged")), key=lambda tv: (-(tv[1].get("rate") or 0), tv[0]))
    rows, total = m.get("rows_judged"), m.get("dataset_rows")
    if rows is None:
        scope = ""
    elif m.get("sampled"):
        seed = "" if m.get("sample_seed") is None else m["sample_seed"]
        scope = f"a seeded sample of {fmt_num(rows)} of {fmt_num(total)} rows (seed {seed}); intervals estimate the whole dataset's rate"
    else:
        scope = f"all {fmt_num(rows)} rows"
    usd = c.get("usd")
    return {
        "status": entry.status,
        "reason": entry.reason or "",
        "statement": m.get("statement") or JUDGE_STATEMENT,
        "model": m.get("model") or "",
        "endpoint": m.get("endpoint") or "",
        "scope": scope,
        "traits_judged": len(m.get("traits_judged") or ()),
        "flagged": [{"trait": t, "flagged": fmt_num(v.get("flagged")), "rate": fmt_num(v.get("rate")),
                     "interval": fmt_interval(v.get("interval"))} for t, v in flagged],
        "injection_rows": fmt_num(m.get("injection_rows")) if m.get("injection_rows") is not None else "",
        "calls": fmt_num(c.get("calls")) if c.get("calls") is not None else "",
        "cache_hits": fmt_num(c.get("cache_hits")) if c.get("cache_hits") is not None else "",
        "retries": fmt_num((m.get("http_retries") or 0) + (m.get("parse_retries") or 0)) if m else "",
        "tokens": (f"{fmt_num(c.get('prompt_tokens'))} prompt + {fmt_num(c.get('completion_tokens'))} completion = "
                   f"{fmt_num(c.get('total_tokens'))} tokens this run") if c.get("total_tokens") is not None else "",
        "cached_tokens": fmt_num((c.get("cached_prompt_tokens") or 0) + (c.get("cached_completion_tokens") or 0)) if c else "",
        "usd": f"${usd:,.4f}" if isinstance(usd, (int, float)) else "",
    }
