"""Trust boundaries for project files: a checked-in audit.toml or pyproject.toml is read automatically from
the working folder, so anyone who can commit to a repository could otherwise point the judge at their
own server (it would receive the API key and every row) or switch the gate off for everyone.

Settings that send data or credentials somewhere, or weaken the gate, are taken from such a file only
when the user says so: by naming the same option on the command line (then the command line wins and
the file's value is never used), or by passing the file explicitly with `--config FILE`. Keys never
belong in a project file. What was used, and where each value came from, goes into the report.
"""

from __future__ import annotations

from pathlib import Path

from auditor.errors import UsageError

# setting -> why a project file may not set it on its own
GUARDED = {
    "judge_base_url": "an endpoint URL (it would receive your API key and the dataset's rows)",
    "base_url": "an endpoint URL (it would receive your API key)",
    "fail_on": "the gate's threshold (a file could switch the gate off)",
}
SECRETS = ("judge_api_key", "api_key")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_project_file(defaults: dict, source: Path | None, explicit: bool, command_line: list[str]) -> dict:
    """The defaults a project file may supply. Raises UsageError (exit 2) naming the file and the setting when
    it sets a guarded one that the command line does not override, unless the file came with --config."""
    for key in SECRETS:
        if key in defaults:
            raise UsageError(f"{source}: sets {flag(key)}; keys never belong in a project file (use the environment)")
    if explicit:
        return defaults
    given = {arg.split("=", 1)[0] for arg in command_line if arg.startswith("--")}
    for key, why in GUARDED.items():
        if key in defaults and flag(key) not in given:
            raise UsageError(
                f"{source}: sets {flag(key)} = {defaults[key]!r}, {why}; a project file found in the working folder may not "
                f"set it. Pass {flag(key)} on the command line, or trust the file with --config {source}")
    return defaults


def effective_settings(ctx, secrets: tuple[str, ...] = SECRETS) -> dict:
    """{option: {"value", "source"}} for every option of a click command, sources in words; keys are never shown."""
    import click

    sources = {click.core.ParameterSource.COMMANDLINE: "command line", click.core.ParameterSource.ENVIRONMENT: "environment",
               click.core.ParameterSource.DEFAULT: "default", click.core.ParameterSource.DEFAULT_MAP: "project file"}
    config = (ctx.obj or {}).get("config_source") if isinstance(ctx.obj, dict) else None
    out = {}
    for name, value in ctx.params.items():
        source = sources.get(ctx.get_parameter_source(name), "default")
        if source == "project file" and config:
            source = f"project file {config}"
        if name in secrets and value is not None:
            value = "***"
        out[name] = {"value": str(value) if isinstance(value, Path) else list(value) if isinstance(value, tuple) else value, "source": source}
    return out
