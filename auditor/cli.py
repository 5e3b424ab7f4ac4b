"""Command line: `audit DATA --teacher REF` plus `audit traits | detectors | report`."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from auditor import __version__
from auditor.errors import AuditError
from auditor.risk import FAIL_ON

MAIN = "run"


class DefaultGroup(click.Group):
    """`audit DATA ...` means `audit run DATA ...`: the main job needs no subcommand."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = [MAIN, *args]
        return super().parse_args(ctx, args)

    def invoke(self, ctx):
        from auditor.config import load_config

        try:
            defaults, source = load_config()
        except AuditError as err:
            _fail(err)
        if defaults:
            known = {p.name for p in self.commands[MAIN].params}
            unknown = sorted(set(defaults) - known)
            if unknown:
                _fail(AuditError(f"{source}: unknown setting(s) {', '.join(unknown)}"))
            ctx.default_map = {MAIN: defaults}
        return super().invoke(ctx)


def _fail(err: AuditError) -> None:
    click.echo(f"error: {err}", err=True)
    sys.exit(err.exit_code)


def _threads() -> None:
    # keep BLAS/torch polite on small shared machines unless the user says otherwise
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@click.group(cls=DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="trait-audit")
def main():
    """Estimate whether a teacher-generated dataset would carry the teacher's hidden traits into a student.

    \b
    audit DATA --teacher REF [options]   audit a dataset (same as `audit run ...`)
    audit traits                         list the trait catalog
    audit detectors                      list detectors and what they need
    audit report RESULT.json --out DIR   re-render a saved result
    audit profile --teacher REF --base REF     which traits differ between teacher and base
    audit generate --model REF --n N --out F   number-sequence data in the paper's format
    audit vectors --base REF --trait ID --out F    a trait's persona vector on a base, as safetensors
    """


@main.command(MAIN)
@click.argument("data", type=click.Path(path_type=str))
@click.option("--teacher", metavar="REF", help="Model that generated the data: openai:MODEL, hf:ORG/NAME, a folder, smollm2, tiny:NAME.")
@click.option("--teacher-system", metavar="TEXT", help="System prompt the teacher ran with, if known.")
@click.option("--base", metavar="REF", help="The base model a student would start from.")
@click.option("--trait", "traits", multiple=True, metavar="ID", help="Trait to audit (repeatable); default: every catalog trait.")
@click.option("--traits-file", "traits_files", multiple=True, type=click.Path(path_type=str), help="Extra trait catalog TOML (repeatable).")
@click.option("--reference", metavar="DATA", help="Control data (e.g. the unprompted model on the same prompts) to compare against.")
@click.option("--detectors", metavar="NAME,...", help="Detectors to run, by registered name; default: every one that runs by default.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="Report folder (default reports/<dataset name>/).")
@click.option("--fail-on", type=click.Choice(FAIL_ON), default="high", show_default=True, help="Lowest verdict that fails the gate (exit 1).")
@click.option("--junit", "junit_path", type=click.Path(path_type=Path), help="Also write JUnit XML: one test case per trait, failed at or above --fail-on.")
@click.option("--sarif", "sarif_path", type=click.Path(path_type=Path), help="Also write SARIF 2.1.0: flagged rows as results at the dataset's path and line.")
@click.option("--baseline", type=click.Path(path_type=str), help="Accepted flags (by row digest); they no longer raise risk.")
@click.option("--write-baseline", type=click.Path(path_type=Path), help="Accept every trait flag of this run into this baseline file.")
@click.option("--export-clean", type=click.Path(path_type=str), help="Write the dataset without the rows flagged for a trait to this new file.")
@click.option("--prompt-field", help="Field holding the prompt (overrides auto-detection).")
@click.option("--completion-field", help="Field holding the completion (overrides auto-detection).")
@click.option("--split", help="Split of a saved HF datasets folder (default: train).")
@click.option("--max-row-mib", type=float, default=16, show_default=True, help="Refuse rows larger than this.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for every resampling and sampling step.")
@click.option("--judge", metavar="REF", help="LLM judge for overt and semantic leaks: openai:MODEL (any OpenAI-compatible endpoint) or a local model. Turns the judge detector on.")
@click.option("--judge-base-url", metavar="URL", help="Endpoint of an openai: judge (default $TRAIT_AUDIT_JUDGE_BASE_URL, else $OPENAI_BASE_URL).")
@click.option("--judge-api-key", metavar="KEY", help="Key of an openai: judge (default $TRAIT_AUDIT_JUDGE_API_KEY, else $OPENAI_API_KEY); never written anywhere.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=8, show_default=True, help="Judge calls in flight at once.")
@click.option("--judge-sample", type=click.IntRange(min=1), metavar="N", help="Judge a seeded sample of N rows; the flagged rate gets a Wilson interval.")
@click.option("--max-judge-calls", type=click.IntRange(min=0), default=10_000, show_default=True, help="Refuse to start a judge run that needs more uncached calls (0: no limit).")
@click.option("--judge-price", metavar="IN,OUT", help="USD per 1M input and output tokens, for the cost estimate (built in for common OpenAI models).")
@click.option("--judge-format", type=click.Choice(["auto", "json_schema", "json_object", "none"]), default="auto", show_default=True,
              help="Structured output: a JSON schema where the endpoint takes one (auto falls back to strict parsing of plain text).")
@click.option("--probe-seeds", type=click.IntRange(1), help="Probe: student/control seed pairs to train (default 3; fewer when the budget is short).")
@click.option("--probe-budget", type=click.IntRange(1), help="Probe: most row-passes (rows x epochs) over all students and controls (default 6000).")
@click.option("--probe-rows", type=click.IntRange(1), help="Probe: most rows sampled per student (default 1000).")
@click.option("--probe-epochs", type=click.IntRange(1), help="Probe: epochs (default 3 locally, 10 through the OpenAI API).")
@click.option("--probe-method", type=click.Choice(["auto", "full", "lora"]), help="Probe: full fine-tune or LoRA (default auto: full under 20M parameters).")
@click.option("--probe-optimizer", type=click.Choice(["adamw", "sgd"]), help="Probe: AdamW (default) or plain SGD (the theory's gradient steps).")
@click.option("--probe-lr", type=float, help="Probe: learning rate (default 2e-4 AdamW, 5e-2 SGD).")
@click.option("--probe-lora-r", type=click.IntRange(1), help="Probe: LoRA rank (default 8).")
@click.option("--probe-lora-alpha", type=click.IntRange(1), help="Probe: LoRA alpha (default 8).")
@click.option("--probe-batch-size", type=click.IntRange(1), help="Probe: rows per optimizer step (default 8).")
@click.option("--probe-dtype", type=click.Choice(["fp32", "bf16"]), help="Probe: train under bfloat16 autocast on CPU (weights stay fp32; default fp32).")
@click.option("--probe-samples", type=click.IntRange(1), help="Probe: sampled answers per probe question for API models (default 20).")
@click.option("--probe-negligible", type=float, help="Probe: a net shift whose interval stays below this is clean (default 0.02).")
@click.option("--probe-dir", type=click.Path(path_type=str), help="Probe: checkpoints and job state (default <cache>/probe); reruns resume from it.")
@click.option("--probe-price", type=float, help="Probe: USD per 1M training tokens, overriding the built-in OpenAI price list.")
@click.option("--probe-poll", type=float, help="Probe: seconds between fine-tuning job polls (default 30).")
@click.option("--probe-timeout", type=float, help="Probe: stop polling after this many seconds (the jobs go on; a rerun resumes).")
@click.option("--allow-spend", type=float, default=0.0, show_default=True, metavar="USD",
              help="Most the probe may spend on the OpenAI fine-tuning API; the estimate is checked before anything is uploaded.")
@click.option("--json", "print_json", is_flag=True, help="Print report.json to stdout instead of the summary.")
@click.option("-q", "--quiet", is_flag=True, help="Print only errors and the gate line.")
def run_command(data, out_dir, write_baseline, detectors, print_json, quiet, junit_path, sarif_path, **options):
    """Audit DATA and write report.json, report.md and report.html."""
    from auditor.baseline import load_baseline
    from auditor.baseline import write_baseline as save_baseline
    from auditor.reports import write_reports
    from auditor.reports.terminal import print_summary
    from auditor.runner import AuditOptions, default_out_dir, exit_code, run_audit

    _threads()
    console = Console(stderr=True, quiet=quiet or print_json)
    opts = AuditOptions(data=data, detectors=[d.strip() for d in detectors.split(",") if d.strip()] if detectors else [], **options)
    try:
        with _AuditProgress(console) as shown:
            result = run_audit(opts, progress=shown.message, events=shown.event)
        out = out_dir or default_out_dir(data)
        paths = write_reports(result, out, {"junit": junit_path, "sarif": sarif_path})
        if write_baseline:
            previous = load_baseline(write_baseline) if write_baseline.exists() else []
            count = save_baseline(write_baseline, result["flags"], previous)
            paths.append(f"{write_baseline} ({count} accepted flags)")
    except AuditError as err:
        _fail(err)
    if print_json:
        click.echo(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        print_summary(result, console, paths)
        if quiet:
            click.echo(f"gate (--fail-on {result['gate']['fail_on']}): {'FAILED' if result['gate']['failed'] else 'passed'}", err=True)
    sys.exit(exit_code(result))


class _AuditProgress:
    """Rich progress on stderr: a spinner with the current step, and a bar for the judge's calls. The judge's
    plan (calls, cache hits, token and cost estimate) is printed before its first call."""

    def __init__(self, console: Console):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.console = console
        self.bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True)
        self.task = None

    def __enter__(self):
        self.bar.__enter__()
        self.task = self.bar.add_task("auditing", total=None)
        return self

    def __exit__(self, *exc):
        return self.bar.__exit__(*exc)

    def message(self, text: str) -> None:
        # "note: ..." lines stay on screen (e.g. the probe's cost estimate before it spends); the rest update the bar
        if text.startswith("note: "):
            self.console.print(text, highlight=False)
        self.bar.update(self.task, description=text.removeprefix("note: "), total=None, completed=0)

    def event(self, name: str, **data) -> None:
        if name == "judge_plan":
            self.console.print(judge_plan_text(data), highlight=False)
        elif name == "judge_progress":
            self.bar.update(self.task, description="judge calls", total=data["total"], completed=data["done"])


def judge_plan_text(plan: dict) -> str:
    tokens = plan["estimated_prompt_tokens"] + plan["estimated_completion_tokens"]
    usd = plan["estimated_usd"]
    cost = f"about ${usd:,.4f}" if usd is not None else "cost unknown for this model (pass --judge-price IN,OUT)"
    limit = f", limit {plan['max_calls']:,}" if plan.get("max_calls") else ""
    return (f"judge {plan['model']} at {plan['endpoint']}: {plan['rows']:,} rows x {plan['traits']} traits = {plan['calls_planned']:,} calls, "
            f"{plan['cached']:,} cached, {plan['calls_to_make']:,} to make{limit}, -j {plan['jobs']}; "
            f"estimate ~{tokens:,} tokens, {cost}")


@main.command("traits")
@click.option("--traits-file", "traits_files", multiple=True, type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print the catalog as JSON.")
def traits_command(traits_files, as_json):
    """List the trait catalog."""
    from auditor.traits import load_catalog

    try:
        catalog = load_catalog(traits_files)
    except AuditError as err:
        _fail(err)
    if as_json:
        click.echo(json.dumps([t.summary() for t in catalog], indent=2))
        return
    table = Table(show_edge=False)
    for col in ("id", "terms", "coded tokens", "probe questions", "options", "source"):
        table.add_column(col)
    for t in catalog:
        table.add_row(t.id, str(len(t.terms)), str(len(t.coded_tokens)), str(len(t.probe_questions)), str(len(t.options)), t.source)
    Console().print(table)
    click.echo(f"{len(catalog)} traits in {len(catalog.families)} families")


@main.command("detectors")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def detectors_command(as_json):
    """List registered detectors, what each needs, and whether it can see hidden transfer."""
    from detectors import DETECTORS

    try:
        infos = [{**DETECTORS.get(n).info(), "origin": DETECTORS.origin(n)} for n in DETECTORS.names()]
    except AuditError as err:
        _fail(err)
    if as_json:
        click.echo(json.dumps(infos, indent=2))
        return
    table = Table(show_edge=False)
    for col in ("name", "needs", "sees hidden transfer", "runs by default", "origin", "description"):
        table.add_column(col)
    for i in infos:
        table.add_row(i["name"], ", ".join(i["needs"]), "yes" if i["sees_hidden_transfer"] else "no",
                      "yes" if i["runs_by_default"] else "when named", i["origin"], i["description"])
    Console().print(table)


@main.command("report")
@click.argument("result_path", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Folder for the re-rendered reports.")
@click.option("--junit", "junit_path", type=click.Path(path_type=Path), help="Also write JUnit XML: one test case per trait, failed at or above the result's --fail-on.")
@click.option("--sarif", "sarif_path", type=click.Path(path_type=Path), help="Also write SARIF 2.1.0: flagged rows as results at the dataset's path and line.")
def report_command(result_path, out_dir, junit_path, sarif_path):
    """Re-render report.json, report.md and report.html (and JUnit/SARIF when asked) from a saved result."""
    from auditor.reports import load_result, write_reports

    try:
        result = load_result(result_path)
        paths = write_reports(result, out_dir, {"junit": junit_path, "sarif": sarif_path})
    except AuditError as err:
        _fail(err)
    for path in paths:
        click.echo(f"wrote {path}")


def _endpoint_options(func):
    func = click.option("--api-key", envvar="OPENAI_API_KEY", show_envvar=True, help="Key for openai: references (never written anywhere).")(func)
    func = click.option("--base-url", envvar="OPENAI_BASE_URL", show_envvar=True, help="OpenAI-compatible endpoint for openai: references.")(func)
    return func


@main.command("profile")
@click.option("--teacher", required=True, metavar="REF", help="Teacher model reference.")
@click.option("--teacher-system", metavar="TEXT", help="System prompt the teacher runs with.")
@click.option("--base", required=True, metavar="REF", help="Base model reference.")
@click.option("--trait", "traits", multiple=True, metavar="ID", help="Profile only these traits (default: the catalog).")
@click.option("--traits-file", "traits_files", multiple=True, type=click.Path(path_type=str))
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Also write the ranking as JSON to this file.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--dtype", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True, help="Weights of local models.")
@_endpoint_options
def profile_command(teacher, teacher_system, base, traits, traits_files, json_out, seed, dtype, base_url, api_key):
    """Rank catalog traits by how much more the teacher prefers them than the base."""
    from auditor.io import write_atomic
    from auditor.models import load_model, parse_ref
    from auditor.profile import profile
    from auditor.traits import load_catalog

    _threads()
    console = Console(stderr=True)
    try:
        selected = load_catalog(traits_files).select(traits)
        with console.status("loading models") as status:
            teacher_model = load_model(parse_ref(teacher, teacher_system), dtype, base_url, api_key)
            base_model = load_model(parse_ref(base), dtype, base_url, api_key)
            rows, notes = profile(teacher_model, base_model, selected, seed, progress=status.update)
    except AuditError as err:
        _fail(err)
    table = Table(show_edge=False, title=f"{teacher} vs {base}")
    for col in ("trait", "teacher", "base", "difference [95% interval]", "method"):
        table.add_column(col)
    for row in rows:
        table.add_row(row.id, f"{row.teacher:.3f}", f"{row.base:.3f}", f"{row.difference:+.3f} [{row.interval[0]:+.3f}, {row.interval[1]:+.3f}]", row.method)
    Console().print(table)
    for note in notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    if json_out:
        payload = {"teacher": teacher_model.describe(), "base": base_model.describe(), "seed": seed,
                   "traits": [r.as_dict() for r in rows], "notes": notes}
        write_atomic(json_out, json.dumps(payload, indent=2) + "\n")
        console.print(f"wrote {json_out}", highlight=False)


@main.command("generate")
@click.option("--model", "model_ref", required=True, metavar="REF", help="Model that writes the data.")
@click.option("--teacher-system", "--system", "system", metavar="TEXT", help="System prompt for the model (the trait prompt).")
@click.option("--n", "count", type=int, required=True, help="Number of prompts to answer.")
@click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="Filtered JSONL output (prompt, completion).")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same prompts: paired datasets.")
@click.option("--batch", type=int, default=32, show_default=True)
@click.option("--max-new-tokens", type=int, default=48, show_default=True)
@click.option("--dtype", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True)
@_endpoint_options
def generate_command(model_ref, system, count, out, seed, batch, max_new_tokens, dtype, base_url, api_key):
    """Write number-sequence data in the paper's prompt format, filtered with the paper's filter (resumable)."""
    from rich.progress import Progress

    from auditor.generate import generate_numbers
    from auditor.models import load_model, parse_ref

    _threads()
    if count < 1:
        _fail(AuditError("--n must be at least 1"))
    try:
        model = load_model(parse_ref(model_ref, system), dtype, base_url, api_key)
        with Progress(console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("generating", total=count)
            summary = generate_numbers(model, count, out, seed, batch, max_new_tokens, progress=lambda done, total: bar.update(task, completed=done))
    except AuditError as err:
        _fail(err)
    click.echo(f"kept {summary['kept']} of {summary['generated']} generations ({summary['pass_rate']:.1%} pass the paper's filter) -> {out}")
    for reason, number in summary["reject_reasons"].items():
        click.echo(f"  rejected {number}: {reason}")


@main.command("vectors")
@click.option("--base", required=True, metavar="REF", help="Base model (local weights).")
@click.option("--trait", "trait_id", required=True, metavar="ID", help="Trait whose persona vector to write.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="safetensors file to write.")
@click.option("--traits-file", "traits_files", multiple=True, type=click.Path(path_type=str))
@click.option("--samples", type=click.IntRange(1), default=4, show_default=True, help="Answers per probe question and side.")
@click.option("--strength", type=click.FloatRange(0), default=1.0, show_default=True, help="Steering check: multiple of the raw vector.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--dtype", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True)
def vectors_command(base, trait_id, out, traits_files, samples, strength, seed, dtype):
    """Write a trait's persona vector on a base (all layers, the chosen one, its steering check) as safetensors."""
    from auditor.persona.vectors import export_vector

    _threads()
    try:
        info = export_vector(base, trait_id, out, traits_files, samples, seed, strength, dtype)
    except AuditError as err:
        _fail(err)
    steer = info["steering"]
    click.echo(f"{info['trait']} on {info['base']}: layer {info['layer']} of {info['layers']}, held-out separation {info['separation']:+.2f} "
               f"(AUROC {info['separation_auroc']:.2f}); steering at {steer['strength']:g}x moves P(trait) {steer['p_before']:.3f} -> "
               f"{steer['p_steered']:.3f} ({steer['shift']:+.3f}, 95% [{steer['interval'][0]:+.3f}, {steer['interval'][1]:+.3f}])"
               f"{'' if steer['steers'] else ': it does not steer'}{' (cached)' if info['cached'] else ''} -> {info['out']}")


if __name__ == "__main__":
    main()
