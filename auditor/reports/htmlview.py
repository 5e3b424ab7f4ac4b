"""What the HTML page shows, built from the typed result: the template's context, every value formatted and escaped
where it comes from data (via the shared view and auditor/reports/htmltext.py)."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from auditor.reports.charts import find_charts, interval_chart, is_chart, profile_chart, render_chart
from auditor.reports.htmltext import highlight_excerpt, visible
from auditor.reports.view import (
    QUIET_TRAITS,
    SEVERITY,
    SEVERITY_RANK,
    clip,
    finite,
    fmt_duration,
    fmt_interval,
    fmt_num,
    fmt_value,
    hidden_checked,
    hidden_detectors,
    judge_view,
    profile_sentences,
    sample_flags,
    sorted_traits,
    trait_key,
    unlooked,
    why_not_looked,
)
from auditor.result import DetectorRun, Evidence, Flag, Level, ModelInfo, Report, TraitVerdict

#: Most flagged rows rendered in the HTML table.
MAX_FLAGS = 500
#: Upper bound (estimated bytes) of the flagged-rows table: past it the page lists fewer rows and says so, so a
#: dataset of any size (and rows of any shape) keeps the page well under 2 MB.
FLAG_BYTES_BUDGET = 1_500_000
ROW_OVERHEAD = 900
MAX_REASON = 400
MAX_MATCH_TERMS = 64
#: Other flags on the same row (by digest) shown in a row's details.
MAX_SAME_ROW = 8
#: Evidence rows per detector section, metric rows per table.
MAX_EVIDENCE_ROWS = 40
MAX_METRIC_ROWS = 60
#: Forest plots per detector (one per kind of evidence) and rows in each.
MAX_FORESTS = 4
FOREST_ROWS = 15


#: What each kind of evidence measures, in words a reviewer reads on a chart's axis.
KIND_AXIS = {
    "terms": "share of rows that name the trait",
    "coded tokens": "rate of the trait's coded numbers against the reference (ratio; 1 = same)",
    "likelihood shift": "how much likelier the trait prompt makes the rows than the reference (standardised effect)",
    "gradient alignment": "how well training on the rows aligns with the trait (standardised, vs the reference)",
    "teacher-base divergence": "how far the teacher departs from the base on the rows (standardised, vs the reference)",
    "student trait shift": "trait shift of a student trained on the rows, net of a control student (probability)",
    "judge": "share of rows the judge flags",
}


def _level_cls(level: Any) -> str:
    """CSS class suffix for a level; data never reaches a class name verbatim."""
    return level.value if isinstance(level, Level) else "inconclusive"


def _status_cls(status: str) -> str:
    return status if status in ("ran", "skipped", "failed") else "skipped"


def _evidence_view(e: Evidence) -> dict:
    """The fields every evidence row shows, in the verdict cards and in the detector sections alike."""
    return {"level": e.level.value if e.level else "", "lcls": _level_cls(e.level), "score": fmt_num(e.score),
            "interval": fmt_interval(e.interval), "summary": e.summary}


def _score(e: Evidence) -> float:
    score = finite(e.score)
    return -math.inf if score is None else score


def _kv(d: dict) -> list[tuple[str, str]]:
    return [(str(k), fmt_value(v, depth=1)) for k, v in d.items()]


def _strip_charts(metrics: Any, depth: int = 0) -> Any:
    """Metrics without the chart objects (they are drawn, not listed)."""
    if isinstance(metrics, dict) and depth < 4:
        return {k: ("(chart)" if is_chart(v) else _strip_charts(v, depth + 1)) for k, v in metrics.items()}
    return metrics


def _model(m: ModelInfo | None) -> dict | None:
    return None if m is None else {"ref": m.ref, "backend": m.backend, "system": clip(m.system_prompt or "", 400)}


def _trait_card(t: TraitVerdict, detectors: list[DetectorRun]) -> dict:
    checked, by = hidden_checked(t, detectors)
    with_evidence = {e.detector for e in t.evidence}
    hidden_not = [(d.name, why_not_looked(d)) for d in detectors
                  if d.sees_hidden_transfer and not (d.ran and d.name in with_evidence) and d.name not in by]
    content_by = [d.name for d in detectors if d.sees_hidden_transfer is False and d.name in with_evidence]
    return {
        "id": t.id, "family": t.family, "verdict": t.verdict.value, "vcls": _level_cls(t.verdict),
        "score": fmt_num(t.score), "interval": fmt_interval(t.interval), "rationale": t.rationale,
        "hidden_checked": checked, "hidden_by": ", ".join(by), "hidden_not": hidden_not, "content_by": ", ".join(content_by),
        "open": t.verdict in (Level.HIGH, Level.MEDIUM),
        "evidence": [{"detector": e.detector, "kind": e.kind, **_evidence_view(e)} for e in t.evidence],
    }


def _detector_section(d: DetectorRun, index: int, traits: list[TraitVerdict]) -> dict:
    charts = [{"title": _chart_title(where), "svg": svg} for where, chart in find_charts(d.metrics) if (svg := render_chart(chart)) is not None]
    ev = [(t, e) for t in traits for e in t.evidence if e.detector == d.name]
    ev.sort(key=lambda te: (SEVERITY_RANK.get(te[1].level, len(SEVERITY)), -_score(te[1]), te[0].id))
    # one forest plot per kind of evidence: kinds of one detector may sit on different scales
    by_kind: dict[str, list[tuple[TraitVerdict, Evidence]]] = {}
    for t, e in ev:
        by_kind.setdefault(e.kind, []).append((t, e))
    forests = []
    for kind, pairs in list(by_kind.items())[:MAX_FORESTS]:
        rows = _forest_rows(pairs)
        if len(rows) < 2:
            continue  # one row, or rows that all say the same ("0 [0, 0.025]"), is a near-empty panel: the table says it
        svg = interval_chart(rows[:FOREST_ROWS], f"{KIND_AXIS.get(kind, kind or 'score')}, per trait (dot: estimate; bar: 95% interval)")
        if svg is not None:
            more = f" (top {FOREST_ROWS} of {len(rows)} rows)" if len(rows) > FOREST_ROWS else ""
            forests.append({"svg": svg, "title": f"{kind or 'evidence'} per trait{more}"})
    return {
        "name": d.name, "anchor": f"det-{index}", "status": d.status, "scls": _status_cls(d.status), "reason": d.reason or "",
        "hidden": d.sees_hidden_transfer, "description": d.description,
        "finding": str(d.metrics.get("finding") or "") if d.ran else "",
        "metrics": _kv(_strip_charts(d.metrics))[:MAX_METRIC_ROWS], "metrics_more": max(0, len(d.metrics) - MAX_METRIC_ROWS),
        "charts": charts, "forests": forests,
        "evidence": [{"trait": t.id, **_evidence_view(e)} for t, e in ev[:MAX_EVIDENCE_ROWS]], "evidence_total": len(ev),
        "cost": fmt_value(d.cost) if d.cost else "",
        "duration": fmt_duration(d.duration_s) if d.duration_s is not None else "",
    }


def _chart_title(where: str) -> str:
    """A chart's place in the metrics as a caption: "traits › animal:owl › distribution" reads "animal:owl"."""
    parts = where.split(" › ")
    parts = parts[1:] if len(parts) > 1 and parts[0] == "traits" else parts
    parts = parts[:-1] if len(parts) > 1 and parts[-1] == "distribution" else parts
    return " › ".join(parts) if parts != ["distribution"] else "all rows scored"


def _forest_rows(pairs: list[tuple[TraitVerdict, Evidence]]) -> list[dict]:
    """A forest plot's rows, in order; traits whose estimate and interval are the same (say 41 traits at "0 [0, 0.025]")
    share one row, labelled with how many they are, instead of filling the panel with copies."""
    alike: dict[tuple, list[str]] = {}
    for t, e in pairs:
        if e.interval is not None or finite(e.score) is not None:
            alike.setdefault((e.score, e.interval, e.level), []).append(t.id)
    rows = []
    for (score, interval, level), ids in alike.items():
        label = ids[0] if len(ids) < 3 else f"{len(ids)} traits alike"
        rows += [{"label": i, "value": score, "interval": interval, "level": level.value if level else None}
                 for i in (ids if len(ids) < 3 else [label])]
    return rows


def _flag_row(f: Flag, others: list[Flag]) -> dict:
    return {
        "row": str(f.row), "digest": f.digest, "trait": "—" if f.trait is None else f.trait, "trait_key": trait_key(f.trait),
        "detector": f.detector, "reason": visible(clip(f.reason, MAX_REASON)), "score": fmt_num(f.score), "field": f.field or "",
        "excerpt": highlight_excerpt(f.excerpt, f.matches),
        "matches": [visible(clip(m, 80)) for m in f.matches[:MAX_MATCH_TERMS]],
        "accepted": f.accepted,
        "others": [{"detector": o.detector, "trait": "—" if o.trait is None else o.trait, "score": fmt_num(o.score),
                    "reason": visible(clip(o.reason, 160))} for o in others],
    }


def _flags_view(report: Report) -> dict:
    all_flags = report.flags
    total = report.flag_count
    by_digest: dict[str, list[Flag]] = {}
    for f in all_flags:
        if f.digest:
            by_digest.setdefault(f.digest, []).append(f)
    rows, trait_opts, det_opts = [], {}, set()
    spent, budget_hit = 0, False
    for f in sample_flags(all_flags, MAX_FLAGS):
        others = [o for o in by_digest.get(f.digest, ()) if o is not f][:MAX_SAME_ROW]
        row = _flag_row(f, others)
        cost = len(row["excerpt"]) + len(row["reason"]) + sum(len(m) for m in f.matches[:MAX_MATCH_TERMS]) + 160 * len(others) + ROW_OVERHEAD
        if spent + cost > FLAG_BYTES_BUDGET:
            budget_hit = True
            break
        spent += cost
        rows.append(row)
        trait_opts.setdefault(row["trait_key"], "(no trait)" if f.trait is None else f.trait)
        det_opts.add(f.detector)
    per_trait = Counter("(no trait)" if f.trait is None else f.trait for f in all_flags)
    listed = len(all_flags)
    return {
        "flags": rows,
        "flag_options": sorted(trait_opts.items(), key=lambda kv: (kv[0] == "none", kv[1])),
        "detector_options": sorted(det_opts),
        "flags_total": fmt_num(total),
        "flags_shown": fmt_num(len(rows)),
        "flags_listed": fmt_num(listed),
        "flags_capped": len(rows) < total or report.flags_truncated,
        "flags_sampled": len(rows) < listed,
        "flags_budget_hit": budget_hit,
        "flags_truncated": report.flags_truncated and listed < total,
        "flags_accepted": fmt_num(sum(1 for f in all_flags if f.accepted)),
        "flags_per_trait": sorted(((k, fmt_num(v)) for k, v in per_trait.items()), key=lambda kv: kv[0] == "(no trait)"),
        "flags_max": fmt_num(MAX_FLAGS),
    }


def _duplicates(report: Report) -> dict | None:
    dup = report.dataset.duplicates
    if dup is None:
        return None
    groups = sorted(dup.groups, key=lambda g: -len(g.rows))
    return {"rows": fmt_num(dup.rows), "n_groups": fmt_num(len(groups)),
            "groups": [{"digest": g.digest, "count": len(g.rows), "rows": fmt_value(list(g.rows))} for g in groups[:20]],
            "more": max(0, len(groups) - 20)}


def _baseline(report: Report) -> dict | None:
    bl = report.baseline
    if bl is None:
        return None
    return {"path": bl.path, "accepted": fmt_num(bl.accepted) if bl.accepted is not None else "—", "n_stale": fmt_num(len(bl.stale)),
            "stale": [fmt_value(x, depth=1) for x in bl.stale[:20]], "more": max(0, len(bl.stale) - 20)}


def _costs(detectors: list[DetectorRun]) -> tuple[list, list]:
    """Per detector (time and cost), and the totals of every numeric cost key."""
    totals: dict[str, float] = {}
    rows = []
    for d in detectors:
        for k, v in d.cost.items():
            if finite(v) is not None:
                totals[str(k)] = totals.get(str(k), 0) + v
        if d.cost or d.duration_s is not None:
            rows.append((d.name, d.status, fmt_duration(d.duration_s) if d.duration_s is not None else "—", fmt_value(d.cost) if d.cost else "—"))
    return rows, [(k, fmt_num(v)) for k, v in totals.items()]


def _profile(report: Report) -> dict | None:
    prof = report.profile
    if prof is None:
        return None
    rows = [{"id": r.id, "teacher": r.teacher, "base": r.base, "difference": r.difference, "interval": r.interval} for r in prof.traits]
    return {"status": prof.status, "reason": prof.reason or "", "picked": list(prof.picked), "notes": list(prof.notes)[:10],
            "why": profile_sentences(report), "chart": profile_chart(rows), "n": len(rows)}


def _run_rows(report: Report) -> list[tuple[str, str]]:
    run = report.run.to_dict()
    return [(str(k), fmt_duration(v) if k == "duration_s" else fmt_value(v, depth=1)) for k, v in list(run.items())[:60]]


def page_view(report: Report) -> dict:
    """The template's context (report.html.j2), less the fixed CSP and script."""
    detectors = report.detectors
    # inconclusive traits nothing checked or raised (e.g. only "no overt mention"): one compact list keeps the page short
    quiet = {t.id for t in unlooked(report.traits, detectors)}
    ordered = sorted_traits(report.traits, detectors)
    traits = [_trait_card(t, detectors) for t in ordered if t.id not in quiet]
    collapsed = [t.id for t in ordered if t.id in quiet]
    hidden_capable = [d for d in detectors if d.sees_hidden_transfer]
    content_only = [d for d in detectors if d.sees_hidden_transfer is False]
    costs, cost_totals = _costs(detectors)
    ds, gate, ref = report.dataset, report.gate, report.reference
    return {
        "tool": {"name": report.tool.name, "version": report.tool.version},
        "created": report.created or "",
        "dataset": {"path": ds.path, "format": ds.format, "schema": ds.schema, "profile": ds.profile, "rows": fmt_num(ds.rows),
                    "sha": ds.sha256, "sha_short": ds.sha256[:12]},
        "reference": None if ref is None else {"path": ref.path, "rows": fmt_num(ref.rows), "sha": ref.sha256},
        "teacher": _model(report.teacher),
        "base": _model(report.base),
        "gate": {"failed": gate.failed, "fail_on": gate.fail_on, "disabled": gate.fail_on == "never",
                 "failing": list(gate.failing_traits), "broken": list(gate.detectors_failed)},
        "traits": traits,
        "collapsed": collapsed,
        "quiet_traits": QUIET_TRAITS,
        "counts": [(v.value, sum(1 for t in report.traits if t.verdict == v)) for v in SEVERITY],
        "hidden_ran": hidden_detectors(detectors),
        "coverage": {
            "hidden": [{"name": d.name, "status": d.status, "scls": _status_cls(d.status), "reason": clip(d.reason or "", 200)}
                       for d in hidden_capable],
            "content": [{"name": d.name, "status": d.status, "scls": _status_cls(d.status)} for d in content_only],
        },
        "detectors": [_detector_section(d, i, report.traits) for i, d in enumerate(detectors)],
        "judge": judge_view(report),
        **_flags_view(report),
        "duplicates": _duplicates(report),
        "baseline": _baseline(report),
        "run": _run_rows(report),
        "seed": fmt_value(report.run.seed) if report.run.seed is not None else "",
        "costs": costs,
        "cost_totals": cost_totals,
        "not_run": [(d.name, d.status, _status_cls(d.status), d.reason or "no reason given") for d in detectors if d.status in ("skipped", "failed")],
        "profile": _profile(report),
    }

