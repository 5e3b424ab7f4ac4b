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
from auditor.cli_settings import RunCommand, _detector_settings, _secret_values
from auditor.cli_settings import fail as _fail
from auditor.cli_settings import placement as _placement
from auditor.cli_settings import placement_options as _placement_options
from auditor.errors import AuditError
from auditor.limits import DEFAULT_MAX_INPUT_GIB
from auditor.risk import FAIL_ON

MAIN = "run"


class DefaultGroup(click.Group):
    """`audit DATA ...` means `audit run DATA ...`: the main job needs no subcommand."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = [MAIN, *args]
        return super().parse_args(ctx, args)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except AuditError as err:  # a command that let one through
            _fail(err)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except Exception as err:  # a bug: exit 3 (the verdict is unusable), never a traceback that CI reads as exit 1
            _internal(err)

    def format_help(self, ctx, formatter):
        # `audit --help` shows the main job's options too, not only the subcommands
        super().format_help(ctx, formatter)
        run = self.commands[MAIN]
        sub = click.Context(run, info_name=MAIN, parent=ctx)
        records = [record for p in run.get_params(sub) if p.name != "help" and (record := p.get_help_record(sub))]
        with formatter.section("Options of the audit (audit DATA [OPTIONS], same as audit run DATA [OPTIONS])"):
            formatter.write_dl(records)


def _internal(err: Exception) -> None:
    from auditor.inert import inert
    from auditor.redact import redact

    if os.environ.get("TRAIT_AUDIT_DEBUG"):
        import traceback

        traceback.print_exc()
    click.echo(f"internal error: {inert(redact(f'{type(err).__name__}: {err}'))} (a bug in trait-audit, exit 3; "
               "set TRAIT_AUDIT_DEBUG=1 to print the traceback)", err=True)
    sys.exit(3)


def _register_secrets(keys=(), urls=()) -> None:
    """Keys given here, in the environment and inside endpoint URLs are masked in every output."""
    from auditor import redact

    redact.add_environment()
    for key in keys:
        redact.add_secret(key)
    for url in urls:
        redact.add_url(url)


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
    audit vectors --base REF --trait ID --out F    a trait's direction in a base's activations (safetensors)
    """


@main.command(MAIN, cls=RunCommand)
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
@click.option("--max-input-gib", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_MAX_INPUT_GIB, show_default=True,
              help="Refuse inputs holding more data than this, counted after decompression (a gzip bomb stops here).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for every resampling and sampling step.")
@click.option("-o", "--option", "overrides", multiple=True, metavar="NAME.KEY=VALUE",
              help="Set one setting of a detector (repeatable); `audit detectors` lists every detector's settings. "
                   "Wins over audit.toml; an alias flag wins over it.")
@click.option("--config", "config_file", type=click.Path(path_type=Path), metavar="FILE",
              help="Project settings to use, trusted as given (endpoint URLs, --fail-on); without it audit.toml or "
                   "[tool.trait-audit] in ./pyproject.toml is read, and may not set those.")
@click.option("--json", "print_json", is_flag=True, help="Print report.json to stdout instead of the summary.")
@click.option("-q", "--quiet", is_flag=True, help="Print only errors and the gate line.")
@_placement_options
def run_command(data, out_dir, write_baseline, detectors, print_json, quiet, junit_path, sarif_path, overrides, **options):
    """Audit DATA and write report.json, report.md and report.html.

    Detector settings: -o NAME.KEY=VALUE, a [detectors.NAME] table in audit.toml, or the alias flags below;
    `audit detectors` lists every setting.
    """
    if not (quiet or print_json):  # at once: the imports below take a second or more on a cold start
        from auditor.inert import inert

        click.echo(f"trait-audit {__version__}: auditing {inert(data)}", err=True)
    from auditor.baseline import load_baseline
    from auditor.baseline import write_baseline as save_baseline
    from auditor.flagspool import FlagSpool
    from auditor.io import refuse_overwrites
    from auditor.reports import SERIALIZERS, write_reports
    from auditor.reports.terminal import print_summary
    from auditor.runner import AuditOptions, default_out_dir, exit_code, run_audit
    from auditor.tempfiles import cleanup_on_signals

    _threads()
    config_file = options.pop("config_file", None)
    console = Console(stderr=True, quiet=quiet or print_json)
    ctx = click.get_current_context()
    try:
        settings = _detector_settings(ctx, overrides, options)
    except AuditError as err:
        _fail(err)
    _register_secrets(*_secret_values(settings))
    opts = AuditOptions(data=data, detectors=[d.strip() for d in detectors.split(",") if d.strip()] if detectors else [],
                        settings=settings, **options)
    out = out_dir or default_out_dir(data)
    try:
        # before any work: no output may replace an input (or land inside an input folder)
        refuse_overwrites(
            {"DATA": data, "--reference": options.get("reference"), "--baseline": options.get("baseline"), "--config": config_file,
             **{f"--traits-file {f}": f for f in options.get("traits_files") or ()}},
            {**{f"--out ({name})": out / name for name in SERIALIZERS}, "--junit": junit_path, "--sarif": sarif_path,
             "--export-clean": options.get("export_clean"), "--write-baseline": write_baseline},
            allowed={("--write-baseline", "--baseline")})
        with cleanup_on_signals(), FlagSpool() as spool:
            with _AuditProgress(console) as shown:
                result = run_audit(opts, progress=shown.message, events=shown.event, spool=spool)
            result.extra["settings"] = _effective_settings(ctx, settings)  # what was used, and where each value came from
            paths = write_reports(result, out, {"junit": junit_path, "sarif": sarif_path})
            if write_baseline:
                previous = load_baseline(write_baseline) if write_baseline.exists() else []
                count = save_baseline(write_baseline, spool.trait_flags().collect(engine="streaming").to_dicts(), previous)
                paths.append(f"{write_baseline} ({count} accepted flags)")
    except AuditError as err:
        _fail(err)
    if print_json:
        click.echo(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    else:
        print_summary(result, console, paths)
        if quiet:
            click.echo(f"gate (--fail-on {result.gate.fail_on}): {'FAILED' if result.gate.failed else 'passed'}", err=True)
    sys.exit(exit_code(result))


def _effective_settings(ctx, settings: dict) -> dict:
    from auditor.redact import redact_obj
    from auditor.runner import redact_argv
    from auditor.trust import effective_settings

    found = effective_settings(ctx, settings)
    overrides = found["options"].get("overrides")
    if overrides and overrides["value"]:  # -o NAME.KEY=VALUE of a secret setting: the value never shows
        overrides["value"] = [arg for arg in redact_argv([x for text in overrides["value"] for x in ("-o", text)]) if arg != "-o"]
    return redact_obj(found)


class _AuditProgress:
    """The audit's progress on stderr (auditor.progress): rich bars on a terminal, a plain line every ~10 s off one.

    Detectors report through ctx.options: progress("text") for the step ("note: ..." stays on screen), and
    events("note", text=...) for a line that stays (e.g. a cost estimate before anything is spent) or
    events("progress", description=..., done=N, total=M) for counted work; long work inside opens its own steps.
    The reporters make every line inert and redacted (auditor.inert, auditor.redact).
    """

    def __init__(self, console: Console):
        from auditor import progress

        self.progress = progress
        self.reporting = progress.reporting(progress.reporter_for(sys.stderr, quiet=console.quiet))
        self.phases = progress.Phases()
        self.counters: dict[str, progress.Counter] = {}

    def __enter__(self):
        self.reporting.__enter__()
        return self

    def __exit__(self, *exc):
        for counter in self.counters.values():
            counter.close()
        self.phases.close()
        return self.reporting.__exit__(*exc)

    def message(self, text: str) -> None:
        self.phases(text)

    def event(self, name: str, **data) -> None:
        if name == "note":
            self.progress.note(data["text"])
        elif name == "progress":
            counter = self.counters.setdefault(data["description"], self.progress.Counter(data["description"]))
            counter(data["done"], data["total"])


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
    for col in ("id", "terms", "coded tokens", "questions", "options", "source"):
        table.add_column(col)
    for t in catalog:
        table.add_row(t.id, str(len(t.terms)), str(len(t.coded_tokens)), str(len(t.probe_questions)), str(len(t.options)), t.source)
    Console().print(table)
    click.echo(f"{len(catalog)} traits in {len(catalog.families)} families")


@main.command("detectors")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def detectors_command(as_json):
    """List registered detectors, what each needs, whether it can see hidden transfer, and its settings."""
    from detectors import DETECTORS

    try:
        infos = [{**DETECTORS.get(n).info(), "origin": DETECTORS.origin(n)} for n in DETECTORS.names()]
    except AuditError as err:
        _fail(err)
    if as_json:
        click.echo(json.dumps(infos, indent=2))
        return
    console = Console()
    if console.is_terminal:
        table = Table(show_edge=False)
        for col in ("name", "needs", "sees hidden transfer", "runs by default", "origin", "description"):
            table.add_column(col)
        for i in infos:
            table.add_row(i["name"], ", ".join(i["needs"]), "yes" if i["sees_hidden_transfer"] else "no",
                          "yes" if i["runs_by_default"] else "when named", i["origin"], i["description"])
        console.print(table)
    for i in infos:
        if not console.is_terminal:  # piped: plain lines, not a table squeezed to 80 columns
            click.echo(f"\n{i['name']} ({i['origin']}; sees hidden transfer: {'yes' if i['sees_hidden_transfer'] else 'no'}; "
                       f"runs by default: {'yes' if i['runs_by_default'] else 'when named'})\n  {i['description']}\n"
                       f"  needs: {', '.join(i['needs'])}")
        if i["settings"]:
            click.echo(f"\n{i['name']} settings: -o {i['name']}.KEY=VALUE, or [detectors.{i['name']}] in audit.toml")
            click.echo("\n".join(_setting_lines(i["settings"])))


def _setting_lines(settings: list[dict]) -> list[str]:
    """Plain lines (readable in a terminal and when piped): `  key = default  (type, limits; flag)` then the help."""
    lines = []
    for s in settings:
        facts = [f"one of {', '.join(map(str, s['choices']))}" if s["choices"] else s["type"]]
        if s.get("minimum") is not None:
            facts.append(f"at least {s['minimum']}")
        if s.get("maximum") is not None:
            facts.append(f"at most {s['maximum']}")
        if s["alias"]:
            facts.append(f"flag {'/'.join(s['alias'])}")
        if s.get("secret"):
            facts.append("secret: never written")
        default = "none" if s["default"] is None else json.dumps(s["default"]) if isinstance(s["default"], (str, list)) else s["default"]
        lines += [f"  {s['name']} = {default}  ({'; '.join(facts)})", f"      {s['help']}"]
    return lines


@main.command("report")
@click.argument("result_path", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Folder for the re-rendered reports.")
@click.option("--junit", "junit_path", type=click.Path(path_type=Path), help="Also write JUnit XML: one test case per trait, failed at or above the result's --fail-on.")
@click.option("--sarif", "sarif_path", type=click.Path(path_type=Path), help="Also write SARIF 2.1.0: flagged rows as results at the dataset's path and line.")
def report_command(result_path, out_dir, junit_path, sarif_path):
    """Re-render report.json, report.md and report.html (and JUnit/SARIF when asked) from a saved result."""
    from auditor.io import refuse_overwrites
    from auditor.reports import SERIALIZERS, load_result, write_reports

    try:
        refuse_overwrites({"RESULT.json": result_path},
                          {**{f"--out ({name})": out_dir / name for name in SERIALIZERS}, "--junit": junit_path, "--sarif": sarif_path})
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
@_placement_options
@_endpoint_options
def profile_command(teacher, teacher_system, base, traits, traits_files, json_out, seed, device, dtype, base_url, api_key):
    """Rank catalog traits by how much more the teacher prefers them than the base."""
    from auditor import progress
    from auditor.io import write_atomic
    from auditor.models import load_model, parse_ref
    from auditor.profile import profile
    from auditor.traits import load_catalog

    _threads()
    _register_secrets([api_key], [base_url])
    console = Console(stderr=True)
    try:
        selected = load_catalog(traits_files).select(traits)
        with progress.reporting(progress.reporter_for(sys.stderr)):
            placement = _placement(device, dtype)
            teacher_model = load_model(parse_ref(teacher, teacher_system), placement, base_url, api_key)
            base_model = load_model(parse_ref(base), placement, base_url, api_key)
            phases = progress.Phases()
            try:
                rows, notes = profile(teacher_model, base_model, selected, seed, progress=phases)
            finally:
                phases.close()
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
@click.option("--n", "count", type=int, help="Number of prompts to answer (with --keep: the most answered; default 4 x --keep).")
@click.option("--keep", type=click.IntRange(min=1), help="Stop once this many rows pass the paper's filter and write the first that many "
              "(datasets of one size).")
@click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="Filtered JSONL output (prompt, completion).")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same prompts: paired datasets.")
@click.option("--batch", type=int, default=32, show_default=True)
@click.option("--max-new-tokens", type=int, default=48, show_default=True)
@click.option("--concurrency", type=click.IntRange(min=1), default=8, show_default=True,
              help="Requests in flight at once to an OpenAI-compatible endpoint (vLLM replicas behind one URL take many).")
@_placement_options
@_endpoint_options
def generate_command(model_ref, system, count, keep, out, seed, batch, max_new_tokens, concurrency, device, dtype, base_url, api_key):
    """Write number-sequence data in the paper's prompt format, filtered with the paper's filter (resumable)."""
    from auditor import progress

    _threads()
    _register_secrets([api_key], [base_url])
    if count is None and keep is None:
        _fail(AuditError("give --n (prompts to answer), --keep (rows that pass the filter), or both"))
    count = count if count is not None else 4 * keep
    if count < 1:
        _fail(AuditError("--n must be at least 1"))
    try:
        with progress.reporting(progress.reporter_for(sys.stderr)):
            with progress.step(f"loading {model_ref}"):  # the first line, before numpy and torch load (load_model's step joins it)
                from auditor.models import load_model, parse_ref

                model = load_model(parse_ref(model_ref, system), _placement(device, dtype), base_url, api_key, concurrency=concurrency)
            from auditor.generate import generate_numbers

            with progress.step(f"generating with {model_ref}", total=keep or count, unit="kept rows" if keep else "rows") as shown:
                summary = generate_numbers(model, count, out, seed, batch, max_new_tokens, progress=lambda done, total: shown.update(done, total),
                                           keep=keep)
    except AuditError as err:
        _fail(err)
    click.echo(f"kept {summary['kept']} of {summary['generated']} generations ({summary['pass_rate']:.1%} pass the paper's filter) -> {out}")
    if keep is not None and summary["kept"] < keep:
        click.echo(f"warning: only {summary['kept']} of the {keep} rows wanted passed the filter in {count} prompts (raise --n)", err=True)
    reasons = list(summary["reject_reasons"].items())
    for reason, number in reasons[:REJECT_REASONS_SHOWN]:  # the commonest first; a long tail of one-off separators is noise
        click.echo(f"  rejected {number}: {reason}")
    if len(reasons) > REJECT_REASONS_SHOWN:
        rest = reasons[REJECT_REASONS_SHOWN:]
        click.echo(f"  rejected {sum(n for _, n in rest)} more for {len(rest)} other reasons")


REJECT_REASONS_SHOWN = 5


def _add_commands_from_modules() -> None:
    from auditor.vectors_command import vectors_command

    main.add_command(vectors_command)


_add_commands_from_modules()


def console() -> None:
    """The `audit` command: `main`, then an exit that skips the interpreter's teardown. Unloading torch and
    transformers takes about a second after everything is written; atexit handlers (temporary files, Ray,
    logging) still run and the standard streams are flushed first. Tests call `main` itself."""
    import atexit

    try:
        main()
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        if isinstance(done.code, str):
            print(done.code, file=sys.stderr)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more to say on it
            pass
    os._exit(code)


if __name__ == "__main__":  # `python -m auditor.cli`: a normal exit, so profilers and coverage write their data
    main()
