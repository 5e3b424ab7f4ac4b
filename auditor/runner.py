"""The audit: dataset -> traits -> models -> detectors -> risk -> one Report (auditor/result.py)."""

from __future__ import annotations

import platform
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from auditor import __version__
from auditor.baseline import accepted_keys, load_baseline
from auditor.dataset import DEFAULT_MAX_INPUT_GIB, load_dataset
from auditor.errors import AuditError
from auditor.finite import scrub, scrub_evidence, scrub_metrics
from auditor.flagspool import FlagSpool
from auditor.models import Placement, parse_ref, preflight
from auditor.result import (
    BaselineInfo,
    DatasetInfo,
    DetectorRun,
    Evidence,
    ExportInfo,
    Flag,
    Gate,
    Level,
    ModelInfo,
    ProfileInfo,
    ReferenceInfo,
    Report,
    RunInfo,
    ToolInfo,
    TraitVerdict,
    as_report,
)
from auditor.risk import decide, gate
from auditor.traits import load_catalog
from detectors import DETECTORS, AuditContext, Detector, Skip
from detectors.settings import resolve, secret_names

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
    max_input_gib: float = DEFAULT_MAX_INPUT_GIB
    seed: int = 0
    export_clean: str | None = None
    # the model layer (issue 12): where and in what precision every local model runs; None: $TRAIT_AUDIT_DEVICE/DTYPE, else auto
    device: str | None = None
    dtype: str | None = None
    # detector settings by detector name: its Settings instance, or a dict of values (checked like audit.toml's);
    # detectors/settings.py. Model-layer options (device, endpoints) are not detector settings.
    settings: dict[str, Any] = field(default_factory=dict)


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


def _run_detector(name: str, detector: Detector, ctx: AuditContext, progress) -> tuple[dict, object | None]:
    cls = type(detector)
    entry = {"name": name, "description": cls.description, "sees_hidden_transfer": cls.sees_hidden_transfer,
             "ground_truth": getattr(cls, "ground_truth", False), "status": "ran", "reason": None, "metrics": {}, "cost": {}, "duration_s": 0.0}
    start = time.perf_counter()
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
    entry.update(metrics=scrub_metrics(result.metrics), cost=scrub_metrics(result.cost))
    for evidence in result.evidence:
        evidence.detector = name
        scrub_evidence(evidence)
    return entry, result


SECRET_FLAGS = ("--api-key",)  # model-layer keys; detector settings mark theirs secret=True
OPTION_FLAGS = ("-o", "--option")


def redact_argv(argv: list[str]) -> list[str]:
    """The command line for the report, with the values of secret flags and of secret -o settings replaced."""
    detector_flags, secret_keys = secret_names(DETECTORS)
    flags = (*SECRET_FLAGS, *sorted(detector_flags))

    def setting(text: str) -> str:  # NAME.KEY=VALUE
        target, sep, _ = text.partition("=")
        return f"{target}=***" if sep and target.strip().replace("-", "_") in secret_keys else text

    out, hide = [], None
    for arg in argv:
        if hide == "value":
            out.append("***")
        elif hide == "setting":
            out.append(setting(arg))
        elif arg.startswith(tuple(f"{flag}=" for flag in flags)):
            out.append(arg.split("=", 1)[0] + "=***")
        elif arg.startswith("--option="):
            out.append("--option=" + setting(arg.removeprefix("--option=")))
        elif arg.startswith("-o") and len(arg) > 2 and not arg.startswith("--"):
            out.append("-o" + setting(arg[2:]))
        else:
            from auditor.redact import redact

            out.append(redact(arg))  # credentials inside URLs (an endpoint given as https://user:KEY@host)
        hide = "value" if arg in flags else "setting" if arg in OPTION_FLAGS else None
    return out


# top-level keys of report.json besides model roles: a detector's role may not take one of these names
RESULT_KEYS = ("schema_version", "tool", "created", "dataset", "reference", "teacher", "base", "detectors", "traits", "flags",
               "flags_total", "flags_truncated", "baseline", "profile", "gate", "export", "run")


def _model_roles(detectors: dict[str, Detector]) -> dict[str, Any]:
    """The model references detectors bring (Detector.models()), by role, parsed before any work."""
    roles: dict[str, Any] = {}
    for name, detector in detectors.items():
        for role, text in detector.models().items():
            ref = parse_ref(text)
            if role in RESULT_KEYS or (ref is not None and roles.get(role) not in (None, ref)):
                raise AuditError(f"detector '{name}' names a '{role}' model, a role that is already taken")
            roles[role] = ref or roles.get(role)
    return roles


def run_audit(opts: AuditOptions, progress=lambda message: None, events=None, spool: FlagSpool | None = None) -> Report:
    """`events(name, **data)` receives structured progress from detectors ("note" lines, "progress" counts) for the CLI.
    `spool` keeps every flag on disk; a caller that passes one can still read them afterwards (a baseline)."""
    if spool is None:
        with FlagSpool() as own:
            return run_audit(opts, progress, events, own)
    started = time.perf_counter()
    created = datetime.now(UTC).isoformat(timespec="seconds")
    catalog = load_catalog(opts.traits_files)
    traits = catalog.select(opts.traits)
    teacher = parse_ref(opts.teacher, opts.teacher_system)
    base = parse_ref(opts.base)
    names = list(opts.detectors or default_detectors())
    for name in names:
        DETECTORS.get(name)  # unknown names fail before any work
    settings = resolve(DETECTORS, opts.settings)  # checked before any work
    detectors = {name: DETECTORS.get(name)(settings[name]) for name in DETECTORS.names()}
    # a detector that does not run by default runs when its settings ask for it (e.g. a model is set)
    names += [name for name in DETECTORS.names() if name not in names and DETECTORS.get(name).requested(settings[name])]
    models = _model_roles(detectors)
    placement = Placement.of(opts.device, opts.dtype)
    preflight([teacher, base, *models.values()], placement)  # a local model that cannot fit stops the audit here (exit 2), before any work
    baseline = load_baseline(opts.baseline) if opts.baseline else []
    progress(f"reading {opts.data}")
    dataset = load_dataset(opts.data, opts.prompt_field, opts.completion_field, opts.max_row_mib, opts.split, max_input_gib=opts.max_input_gib)
    reference = None
    if opts.reference:
        progress(f"reading reference {opts.reference}")
        reference = load_dataset(opts.reference, opts.prompt_field, opts.completion_field, opts.max_row_mib, opts.split, max_input_gib=opts.max_input_gib)
    profile_section = None
    if not opts.traits:
        # no --trait: profiling the teacher against its base picks the traits model-based detectors focus on
        progress("profiling the teacher against the base")
        profile_section = _profile_section(teacher, base, traits, opts, progress, placement)
    ctx = AuditContext(dataset=dataset, traits=traits, reference=reference, teacher=teacher, base=base, models=models,
                       accepted=accepted_keys(baseline), seed=opts.seed, placement=placement,
                       # traits that model-based detectors test: the ones named, else the ones profiling picked
                       options={"focus": list(opts.traits) and [t.id for t in traits] or (profile_section or {}).get("picked", []),
                                "events": events or (lambda name, **data: None), "progress": progress, "spool": spool})

    entries, results = [], {}
    for name in names:
        entry, result = _run_detector(name, detectors[name], ctx, progress)
        entries.append(entry)
        if result is not None:
            results[name] = result

    spool.accepted = ctx.accepted
    for name, found in results.items():
        spool.add(name, found.flags)
    report = _assemble_report(opts, ctx, entries, results, profile_section, baseline, created, started, spool)
    if opts.export_clean:
        from auditor.export import export_clean

        progress(f"writing {opts.export_clean}")
        report.export = ExportInfo.from_dict(export_clean(dataset, spool, Path(opts.export_clean)))
    for data in (dataset, reference):
        if data is not None:
            data.check_unchanged()  # the sha256 in the report describes what the detectors read
    return _finite(report)


def _finite(report: Report) -> Report:
    """No NaN or infinity (null and listed under `unavailable` instead), and no key anywhere in the result."""
    from auditor.redact import redact_obj

    found: dict[str, str] = {}
    data = scrub(report.to_dict(), "", found)
    if found:
        data["unavailable"] = [{"path": path, "reason": reason} for path, reason in found.items()]
    return Report.from_dict(redact_obj(data))


def _assemble_report(opts: AuditOptions, ctx: AuditContext, entries: list[dict], results: dict, profile_section: dict | None,
                     baseline: list[dict], created: str, started: float, spool: FlagSpool) -> Report:
    """Detector entries and evidence -> verdicts, flags and the gate, as one Report."""
    detectors = [DetectorRun.from_dict(entry) for entry in entries]
    hidden = {d.name for d in detectors if d.sees_hidden_transfer and d.ran}
    truth = {d.name for d in detectors if d.ground_truth and d.ran}
    traits = []
    for trait in ctx.traits:
        evidence = [e for r in results.values() for e in r.evidence if e.trait == trait.id]
        verdict = decide(evidence, hidden, truth)
        traits.append(TraitVerdict(
            id=trait.id, family=trait.family, verdict=verdict.verdict, score=verdict.score, interval=_pair(verdict.interval),
            hidden_transfer_checked=verdict.hidden_transfer_checked, rationale=verdict.rationale,
            evidence=[Evidence(detector=e.detector, kind=e.kind, score=e.score, interval=_pair(e.interval), summary=e.summary,
                               level=Level.parse(e.level)) for e in evidence],
        ))

    shown, counts = spool.summary(MAX_FLAGS_IN_REPORT)
    failed, failing = gate({t.id: t.verdict for t in traits}, opts.fail_on)
    dataset, reference = ctx.dataset, ctx.reference
    report = Report(
        tool=ToolInfo(name="trait-audit", version=__version__),
        created=created,
        dataset=DatasetInfo.from_dict(dataset.describe()),
        reference=ReferenceInfo(path=str(reference.path), rows=reference.rows, sha256=reference.sha256) if reference else None,
        teacher=_model_info(ctx.teacher),
        base=_model_info(ctx.base),
        roles={role: _model_info(ref) for role, ref in ctx.models.items()},  # models that detectors bring, by role
        detectors=detectors,
        traits=traits,
        flags=[Flag.from_dict(f) for f in shown],
        flags_total=counts["total"],
        flags_truncated=counts["total"] > len(shown),
        baseline=BaselineInfo(path=opts.baseline, accepted=counts["accepted"], stale=spool.stale(baseline)) if opts.baseline else None,
        profile=ProfileInfo.from_dict(profile_section) if profile_section is not None else None,
        gate=Gate(fail_on=opts.fail_on, failed=failed, failing_traits=failing, detectors_failed=[d.name for d in detectors if d.status == "failed"]),
        export=None,
        run=RunInfo(seed=opts.seed, argv=redact_argv(sys.argv[1:]), python=platform.python_version(), platform=platform.platform(),
                    packages=_package_versions(), duration_s=round(time.perf_counter() - started, 3)),
    )
    return report


def _pair(interval) -> tuple[float, float] | None:
    return tuple(interval) if interval else None


def _model_info(ref) -> ModelInfo | None:
    return ModelInfo.from_dict(ref.describe()) if ref is not None else None


def _profile_section(teacher, base, traits, opts: AuditOptions, progress, placement=None) -> dict:
    from auditor.errors import UsageError
    from auditor.models import load_model
    from auditor.profile import pick_traits, profile

    if teacher is None or base is None:
        missing = "--teacher and --base" if teacher is None and base is None else ("--base" if base is None else "--teacher")
        return {"status": "skipped", "picked": [],
                "reason": f"no {missing}: cannot tell which traits the teacher holds beyond its base, so every catalog trait is audited"}
    try:
        rows, notes = profile(load_model(teacher, placement), load_model(base, placement), traits, opts.seed, progress=progress)
    except UsageError as err:  # e.g. an API teacher without a key: the audit goes on without a profile
        return {"status": "skipped", "picked": [], "reason": str(err)}
    picked = pick_traits(rows)
    return {"status": "ran", "picked": picked, "notes": notes, "traits": [r.as_dict() for r in rows[:20]],
            "reason": None if picked else "no trait is preferred more by the teacher than by the base (difference interval above 0.01)"}


def exit_code(result: Report | dict) -> int:
    gate = as_report(result).gate
    if gate.failed:
        return 1
    # a detector that did not finish leaves the verdict unusable: a CI job must not read it as a pass
    return 3 if gate.detectors_failed else 0


def default_out_dir(data: str) -> Path:
    name = Path(data).name
    for suffix in (".gz", ".jsonl", ".ndjson", ".json", ".parquet", ".pq", ".csv"):
        name = name.removesuffix(suffix)
    return Path("reports") / (name or "dataset")
