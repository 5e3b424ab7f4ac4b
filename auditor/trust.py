"""Trust boundaries for project files: a checked-in audit.toml or pyproject.toml is read automatically from
the working folder, so anyone who can commit to a repository could otherwise point the judge at their
own server (it would receive the API key and every row) or switch the gate off for everyone.

Settings that send data or credentials somewhere, or weaken the gate, are taken from such a file only
when the user says so: by naming the same option on the command line (then the command line wins and
the file's value is never used), or by passing the file explicitly with `--config FILE`. Keys never
belong in a project file. What was used, and where each value came from, goes into the report.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from auditor.errors import UsageError

GATE = {"fail_on": "the gate's threshold (a file could switch the gate off)"}
ENDPOINT = "an endpoint URL (it would receive your API key and the dataset's rows)"


def _endpoint(key: str) -> bool:
    return key == "base_url" or key.endswith(("_base_url", "_url")) or key == "url"


def _flags(name: str) -> set[str]:
    return {"--" + name.replace("_", "-")}


def check_project_file(config, explicit: bool, command_line: list[str], aliases: dict) -> None:
    """Raise UsageError (exit 2, naming the file and the setting) when a project file sets a key, or sets an endpoint
    URL or --fail-on that the command line does not override, unless the file came with --config."""
    if config is None or config.path is None:
        return
    source = config.path
    by_flag_key = {flag.lstrip("-").replace("-", "_"): (name, spec) for name, spec in aliases.values() for flag in spec.alias}
    specs = {(name, spec.key): spec for name, spec in aliases.values()}
    given = {arg.split("=", 1)[0] for arg in command_line if arg.startswith("-")}
    overridden = {arg.split("=", 1)[0].strip() for arg in command_line if "." in arg.split("=", 1)[0] and "=" in arg}  # -o NAME.KEY=V

    def named(detector: str | None, key: str, flags: set[str]) -> bool:
        return bool(flags & given) or (detector is not None and f"{detector}.{key}" in overridden)

    entries = []  # (shown name, detector, key, flags, secret, value)
    for key, value in config.defaults.items():
        detector, spec = by_flag_key.get(key, (None, None))
        flags = set(spec.alias) if spec else _flags(key)
        entries.append((f"--{key.replace('_', '-')}", detector, spec.key if spec else key, flags, bool(spec and spec.secret)
                        or key.endswith("api_key"), value))
    for detector, table in (config.detectors or {}).items():
        for key, value in (table or {}).items() if isinstance(table, dict) else ():
            spec = specs.get((detector, key.replace("-", "_")))
            flags = set(spec.alias) if spec else set()
            entries.append((f"[detectors.{detector}] {key}", detector, key.replace("-", "_"), flags,
                            bool(spec and spec.secret) or key.endswith("api_key"), value))
    for shown, _, _, _, secret, _ in entries:
        if secret:
            raise UsageError(f"{source}: sets {shown}; keys never belong in a project file (use the environment)")
    if explicit:
        return
    for shown, detector, key, flags, _, value in entries:
        why = GATE.get(key) if detector is None else None
        why = why or (ENDPOINT if _endpoint(key) else None)
        if why and not named(detector, key, flags):
            how = " or ".join(sorted(flags)) or f"-o {detector}.{key}=..."
            raise UsageError(f"{source}: sets {shown} = {value!r}, {why}; a project file found in the working folder may not "
                             f"set it. Pass {how} on the command line, or trust the file with --config {source}")


def effective_settings(ctx, settings: dict) -> dict:
    """{"options": {name: {value, source}}, "detectors": {NAME: {key: value}}} with sources in words; keys never shown."""
    import click

    words = {click.core.ParameterSource.COMMANDLINE: "command line", click.core.ParameterSource.ENVIRONMENT: "environment",
             click.core.ParameterSource.DEFAULT: "default", click.core.ParameterSource.DEFAULT_MAP: "project file"}
    config = (ctx.meta.get("trait_audit.config") or (None, None))[0]
    file = f"project file {config.path}" if config is not None and config.path else "project file"
    options = {}
    for name, value in ctx.params.items():
        if name.startswith("setting_"):
            continue  # alias flags: shown with their detector below
        source = words.get(ctx.get_parameter_source(name), "default")
        options[name] = {"value": _plain(value), "source": file if source == "project file" else source}
    detectors = {}
    for name, values in (settings or {}).items():
        fields = dataclasses.fields(values) if dataclasses.is_dataclass(values) else ()
        secret = {f.name for f in fields if f.metadata.get("secret")}
        shown = dataclasses.asdict(values) if fields else dict(values or {})
        detectors[name] = {k: ("***" if k in secret and v is not None else _plain(v)) for k, v in shown.items()}
    return {"options": options, "detectors": detectors,
            "project_file": str(config.path) if config is not None and config.path else None}


def _plain(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value
