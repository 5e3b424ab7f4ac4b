"""The audit command's settings glue: project defaults read when it parses, the alias flags that detector
settings declare (joined the first time they are needed, so other subcommands never import detectors),
`-o NAME.KEY=VALUE` and project-file tables resolved into each detector's Settings, and the secret values
among them."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from click.core import ParameterSource

from auditor.errors import AuditError

CONFIG = "trait_audit.config"  # ctx.meta key: the project config the run command read


def placement_options(func):
    """--device and --dtype: where and in what precision local models run (auditor/models/device.py)."""
    func = click.option("--dtype", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), envvar="TRAIT_AUDIT_DTYPE", show_envvar=True,
                        help="Precision of local model weights (default auto: bf16 on an accelerator that has it, fp32 on CPU).")(func)
    func = click.option("--device", metavar="auto|cpu|cuda|cuda:N|mps", envvar="TRAIT_AUDIT_DEVICE", show_envvar=True,
                        help="Where local models run: teacher, base and every model a detector loads (default auto: CUDA, then MPS, "
                             "then CPU; cuda spreads a model too large for one GPU over every visible GPU).")(func)
    return func


def placement(device: str | None, dtype: str | None):
    from auditor.models import Placement

    return Placement.of(device, dtype)


def fail(err: AuditError) -> None:
    from auditor.inert import inert
    from auditor.redact import redact

    click.echo(f"error: {inert(redact(str(err)))}", err=True)
    sys.exit(err.exit_code)


class RunCommand(click.Command):
    """The audit command. Project defaults (audit.toml) are read when it parses; the alias flags that detector
    settings declare join its options the first time they are needed (parsing or --help), so the other
    subcommands never import the detectors."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._own_params = list(self.params)
        self._aliases: dict | None = None  # click parameter name -> (detector name, settings.Spec)

    def aliases(self) -> dict:
        if self._aliases is None:
            from detectors import DETECTORS
            from detectors.settings import alias_specs

            own = {flag for p in self._own_params for flag in (*p.opts, *p.secondary_opts)}
            found, options = {}, []
            for name, spec in alias_specs(DETECTORS):
                clash = own.intersection(spec.alias)
                if clash:
                    raise AuditError(f"detector '{name}' declares {', '.join(sorted(clash))} for its setting {spec.key}, "
                                     "a flag the audit command already has")
                param = f"setting_{len(found)}"
                found[param] = (name, spec)
                options.append(_alias_option(param, name, spec))
            at = next(i for i, p in enumerate(self._own_params) if p.name == "print_json")
            self.params = [*self._own_params[:at], *options, *self._own_params[at:]]
            self._aliases = found
        return self._aliases

    def get_params(self, ctx):
        try:
            self.aliases()
        except AuditError as err:
            fail(err)
        return super().get_params(ctx)

    def parse_args(self, ctx, args):
        from auditor.config import load_config
        from auditor.trust import check_project_file

        explicit = _config_flag(args)
        try:
            config = load_config(explicit=explicit)
            check_project_file(config, explicit is not None, args, self.aliases())
            by_key = {flag.lstrip("-").replace("-", "_"): (name, spec) for name, spec in self.aliases().values()
                      for flag in spec.alias if flag.startswith("--")}
            known = {p.name for p in self.params if p.name not in self.aliases()}
            unknown = sorted(set(config.defaults) - known - set(by_key))
            if unknown:
                raise AuditError(f"{config.path}: unknown setting(s) {', '.join(unknown)}")
        except AuditError as err:
            fail(err)
        # top-level keys named like an alias flag are detector settings from the file, as its [detectors.NAME] tables are
        ctx.default_map = {**{k: v for k, v in config.defaults.items() if k in known}, **(ctx.default_map or {})}
        ctx.meta[CONFIG] = (config, [(by_key[k], k, v) for k, v in config.defaults.items() if k in by_key])
        return super().parse_args(ctx, args)


def _alias_option(param: str, detector: str, spec) -> click.Option:
    """A real option of the audit command that sets one detector setting (its value is checked by detectors.settings)."""
    from detectors.settings import type_name

    default = "" if spec.default is None or spec.secret else f"; default {_shown_default(spec.default)}"
    text = f"{spec.help[:1].upper()}{spec.help[1:]} [-o {detector}.{spec.key}{default}]"
    if spec.type is bool:
        return click.Option([*spec.alias, param], is_flag=True, default=None, help=text)
    kind = type_name(spec.type).removesuffix(" | None")
    metavar = spec.metavar or ("[" + "|".join(map(str, spec.choices)) + "]" if spec.choices else
                               {"int": "INTEGER", "float": "FLOAT", "str": "TEXT", "path": "PATH"}.get(kind, "VALUE"))
    return click.Option([*spec.alias, param], metavar=metavar, help=text)


def _shown_default(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def _detector_settings(ctx: click.Context, overrides: tuple[str, ...], options: dict) -> dict:
    """Detector settings from, lowest first: the config file, -o NAME.KEY=VALUE, alias flags. Alias parameters
    are taken out of `options`. Every value is checked here, before any work."""
    from detectors import DETECTORS
    from detectors.settings import Values

    values = Values()
    config, top_level = ctx.meta.get(CONFIG, (None, []))
    for (name, spec), key, raw in top_level:
        values.put(DETECTORS, name, spec.key, raw, source=f"{config.path} {key} = {{}}", from_text=False)
    if config is not None and config.detectors:
        values.table(DETECTORS, config.detectors, str(config.path))
    for text in overrides:
        values.override(DETECTORS, text)
    for param, (name, spec) in ctx.command.aliases().items():
        raw = options.pop(param, None)
        if raw is not None and ctx.get_parameter_source(param) is ParameterSource.COMMANDLINE:
            flag = max(spec.alias, key=len)
            values.put(DETECTORS, name, spec.key, raw, source=f"{flag} {{}}", from_text=not isinstance(raw, bool))
    return {name: values.build(DETECTORS, name) for name in values.values}


def _config_flag(args: list[str]) -> Path | None:
    """The file given with --config FILE (or --config=FILE): read before the command's own options are parsed."""
    for i, arg in enumerate(args):
        if arg == "--config" and i + 1 < len(args):
            return Path(args[i + 1])
        if arg.startswith("--config="):
            return Path(arg.split("=", 1)[1])
    return None


def _secret_values(settings: dict) -> tuple[list[str], list[str]]:
    """Every detector setting declared secret, and every URL a setting holds (credentials can ride inside one)."""
    import dataclasses

    keys, urls = [], []
    for values in settings.values():
        for f in dataclasses.fields(values) if dataclasses.is_dataclass(values) else ():
            value = getattr(values, f.name)
            if isinstance(value, str) and f.metadata.get("secret"):
                keys.append(value)
            elif isinstance(value, str) and "://" in value:
                urls.append(value)
    return keys, urls
