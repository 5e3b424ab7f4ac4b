"""The audit: dataset -> traits -> models -> detectors -> risk -> one JSON-ready result."""

from __future__ import annotations

import platform
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import polars as pl

from auditor import __version__
from auditor.baseline import accepted_keys, load_baseline, stale_entries
from auditor.dataset import load_dataset
from auditor.errors import AuditError
from auditor.models import parse_ref
from auditor.risk import decide, gate
from auditor.traits import load_catalog
from detectors import DETECTORS, AuditContext, Skip

MAX_FLAGS_IN_REPORT = 10_000  # the JSON keeps this many flags (trait flags first); counts cover all


@dataclass
class AuditOptions:
    data: str
    teacher: str | None = None
    teacher_system: str | None = None
    base: str | None = None
    traits: list[str] = field(default_factory=list)
    traits_files: list[str] = field(default_factory=list)
    reference: str | None = None
    detectors: list[str] = field(default_factory=list)
    fail_on: str = "high"
    baseline: str | None = None
    prompt_field: str | None = None
    completion_field: str | None = None
    split: str | None = None
    max_row_mib: float = 16
    seed: int = 0
    export_clean: str | None = None
    # the LLM judge (detectors/judge.py): a model reference enables it
    judge: str | None = None
    judge_base_url: str | None = None
    judge_api_key: str | None = None  # never written anywhere: not in the result, argv is redacted
    jobs: int = 8
    judge_sample: int | None = None
    max_judge_calls: int = 10_000
    judge_price: str | None = None
    judge_format: str = "auto"
    # the probe (detectors/probe.py): ProbeSettings fields without the "probe_" prefix; None keeps its default
    probe_seeds: int | None = None
    probe_budget: int | None = None
    probe_rows: int | None = None
    probe_epochs: int | None = None
    probe_method: str | None = None
    probe_optimizer: str | None = None
    probe_lr: float | None = None
    probe_lora_r: int | None = None
    probe_lora_alpha: int | None = None
    probe_batch_size: int | None = None
    probe_dtype: str | None = None
    probe_samples: int | None = None
    probe_negligible: float | None = None
    probe_dir: str | None = None
    probe_price: float | None = None
    probe_poll: float | None = None
    probe_timeout: float | None = None
    allow_spend: float = 0.0

    def probe_options(self) -> dict:
        renamed = {"probe_dir": "workdir", "probe_poll": "poll_s", "probe_timeout": "timeout_s"}
        values = {renamed.get(k, k.removeprefix("probe_")): v for k, v in vars(self).items() if k.startswith("probe_") and v is not None}
        return {**values, "allow_spend": self.allow_spend}


def _package_versions() -> dict[str, str]:
    found = {}
    for name in ("polars", "scikit-learn", "scipy", "torch", "transformers", "openai", "datasets"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def default_detectors() -> list[str]:
    return [name for name in DETECTORS.names() if DETECTORS.get(name).runs_by_default]


def _run_detector(name: str, ctx: AuditContext, progress) -> tuple[dict, object | None]:
    cls = DETECTORS.get(name)
    entry = {"name": name, "description": cls.description, "sees_hidden_transfer": cls.sees_hidden_transfer,
             "ground_truth": getattr(cls, "ground_truth", False), "status": "ran", "reason": None, "metrics": {}, "cost": {}, "duration_s": 0.0}
    start = time.perf_counter()
    detector = cls()
    reason = detector.unmet_needs(ctx)
    if reason:
        entry.update(status="skipped", reason=reason)
        return entry, None
    progress(f"running detector {name}")
    try:
        result = detector.run(ctx)
    except Skip as skip:
        entry.update(status="skipped", reason=skip.reason)
        return entry, None
    except AuditError:
        raise
    except Exception as err:  # a broken detector must not take the audit down; the report says it failed
        entry.update(status="failed", reason=f"{type(err).__name__}: {err}")
        return entry, None
    finally:
        entry["duration_s"] = round(time.perf_counter() - start, 3)
    entry.update(metrics=result.metrics, cost=result.cost)
    for evidence in result.evidence:
        evidence.detector = name
    return entry, result


SECRET_FLAGS = ("--judge-api-key", "--api-key")


def redact_argv(argv: list[str]) -> list[str]:
    """The command line for the report, with the values of key flags replaced."""
    out, hide = [], False
    for arg in argv:
        if hide:
            out.append("***")
            hide = False
        elif arg in SECRET_FLAGS:
            out.append(arg)
            hide = True
        elif arg.startswith(tuple(f"{flag}=" for flag in SECRET_FLAGS)):
            out.append(arg.split("=", 1)[0] + "=***")
        else:
            out.append(arg)
    return out


def _judge_options(opts: AuditOptions) -> dict:
    from auditor.judge import parse_price

    return {"jobs": opts.jobs, "sample": opts.judge_sample, "max_calls": opts.max_judge_calls, "format": opts.judge_format,
            "price": parse_price(opts.judge_price), "base_url": opts.judge_base_url, "api_key": opts.judge_api_key}


def run_audit(opts: AuditOptions, progress=lambda message: None, events=None) -> dict:
    """`events(name, **data)` receives structured progress (the judge's plan and call counts) for the CLI."""
    started = time.perf_counter()
    created = datetime.now(UTC).isoformat(timespec="seconds")
    catalog = load_catalog(opts.traits_files)
    traits = catalog.select(opts.traits)
    teacher = parse_ref(opts.teacher, opts.teacher_system)
    base = parse_ref(opts.base)
    names = list(opts.detectors or default_detectors())
    judge = parse_ref(opts.judge)
    if judge is not None and "judge" not in names:
        names.append("judge")  # --judge REF turns the judge on
    judge_options = _judge_options(opts) if judge is not None else {}
    for name in names:
        DETECTORS.get(name)  # unknown names fail before any work
    baseline = load_baseline(opts.baseline) if opts.baseline else []
    progress(f"reading {opts.data}")
    dataset = load_dataset(opts.data, opts.prompt_field, opts.completion_field, opts.max_row_mib, opts.split)
    reference = None
    if opts.reference:
        progress(f"reading reference {opts.reference}")
        reference = load_dataset(opts.reference, opts.prompt_field, opts.completion_field, opts.max_row_mib, opts.split)
    profile_section = None
    if not opts.traits:
        # no --trait: profiling the teacher against its base picks the traits model-based detectors focus on
        progress("profiling the teacher against the base")
        profile_section = _profile_section(teacher, base, traits, opts, progress)
    ctx = AuditContext(dataset=dataset, traits=traits, reference=reference, teacher=teacher, base=base, judge=judge,
                       accepted=accepted_keys(baseline), seed=opts.seed,
                       # traits that model-based detectors test: the ones named, else the ones profiling picked
                       options={"focus": list(opts.traits) and [t.id for t in traits] or (profile_section or {}).get("picked", []),
                                "judge": judge_options, "events": events, "probe": opts.probe_options(), "progress": progress})

    entries, results = [], {}
    for name in names:
        entry, result = _run_detector(name, ctx, progress)
        entries.append(entry)
        if result is not None:
            results[name] = result

    hidden = {e["name"] for e in entries if e["sees_hidden_transfer"] and e["status"] == "ran"}
    truth = {e["name"] for e in entries if e["ground_truth"] and e["status"] == "ran"}
    trait_rows, verdicts = [], {}
    for trait in traits:
        evidence = [e for r in results.values() for e in r.evidence if e.trait == trait.id]
        verdict = decide(evidence, hidden, truth)
        verdicts[trait.id] = verdict.verdict
        trait_rows.append({
            "id": trait.id, "family": trait.family, "verdict": verdict.verdict, "score": verdict.score,
            "interval": list(verdict.interval) if verdict.interval else None,
            "hidden_transfer_checked": verdict.hidden_transfer_checked, "rationale": verdict.rationale,
            "evidence": [{"detector": e.detector, "kind": e.kind, "score": e.score,
                          "interval": list(e.interval) if e.interval else None,
                          "summary": e.summary, **({"level": e.level} if e.level else {})} for e in evidence],
        })

    flags = _collect_flags(results, ctx)
    failed, failing = gate(verdicts, opts.fail_on)
    broken = [e["name"] for e in entries if e["status"] == "failed"]
    result = {
        "schema_version": 1,
        "tool": {"name": "trait-audit", "version": __version__},
        "created": created,
        "dataset": dataset.describe(),
        "reference": {"path": str(reference.path), "rows": reference.rows, "sha256": reference.sha256} if reference else None,
        "teacher": teacher.describe() if teacher else None,
        "base": base.describe() if base else None,
        "judge": judge.describe() if judge else None,
        "detectors": entries,
        "traits": trait_rows,
        "flags": flags["shown"],
        "flags_total": flags["total"],
        "flags_truncated": flags["total"] > len(flags["shown"]),
        "baseline": {"path": opts.baseline, "accepted": sum(f["accepted"] for f in flags["shown"]),
                     "stale": stale_entries(baseline, flags["shown"])} if opts.baseline else None,
        "profile": profile_section,
        "gate": {"fail_on": opts.fail_on, "failed": failed, "failing_traits": failing, "detectors_failed": broken},
        "export": None,
        "run": {"seed": opts.seed, "argv": redact_argv(sys.argv[1:]), "python": platform.python_version(), "platform": platform.platform(),
                "packages": _package_versions(), "duration_s": round(time.perf_counter() - started, 3)},
    }
    if opts.export_clean:
        from auditor.export import export_clean

        result["export"] = export_clean(dataset, result, Path(opts.export_clean))
    return result


def _profile_section(teacher, base, traits, opts: AuditOptions, progress) -> dict:
    from auditor.errors import UsageError
    from auditor.models import load_model
    from auditor.profile import pick_traits, profile

    if teacher is None or base is None:
        missing = "--teacher and --base" if teacher is None and base is None else ("--base" if base is None else "--teacher")
        return {"status": "skipped", "picked": [],
                "reason": f"no {missing}: cannot tell which traits the teacher holds beyond its base, so every catalog trait is audited"}
    try:
        rows, notes = profile(load_model(teacher), load_model(base), traits, opts.seed, progress=progress)
    except UsageError as err:  # e.g. an API teacher without a key: the audit goes on without a profile
        return {"status": "skipped", "picked": [], "reason": str(err)}
    picked = pick_traits(rows)
    return {"status": "ran", "picked": picked, "notes": notes, "traits": [r.as_dict() for r in rows[:20]],
            "reason": None if picked else "no trait is preferred more by the teacher than by the base (difference interval above 0.01)"}


def _collect_flags(results: dict, ctx: AuditContext) -> dict:
    frames = [r.flags.with_columns(pl.lit(name).alias("detector")) for name, r in results.items() if r.flags.height]
    if not frames:
        return {"shown": [], "total": 0}
    flags = pl.concat(frames, how="vertical_relaxed")
    keys = ctx.accepted
    flags = flags.with_columns(
        pl.struct("detector", "digest", "trait").map_elements(
            lambda s: (s["detector"], s["digest"], s["trait"]) in keys, return_dtype=pl.Boolean
        ).alias("accepted") if keys else pl.lit(False).alias("accepted")
    )
    # trait flags first (they drive verdicts), then format rejects
    flags = flags.sort(pl.col("trait").is_null(), "row")
    shown = flags.head(MAX_FLAGS_IN_REPORT).select("row", "digest", "detector", "trait", "score", "reason", "field", "matches", "excerpt", "accepted")
    return {"shown": shown.to_dicts(), "total": flags.height}


def exit_code(result: dict) -> int:
    if result["gate"]["failed"]:
        return 1
    # a detector that did not finish leaves the verdict unusable: a CI job must not read it as a pass
    return 3 if result["gate"].get("detectors_failed") else 0


def default_out_dir(data: str) -> Path:
    name = Path(data).name
    for suffix in (".gz", ".jsonl", ".ndjson", ".json", ".parquet", ".pq", ".csv"):
        name = name.removesuffix(suffix)
    return Path("reports") / (name or "dataset")
