"""Project defaults for `audit`: audit.toml, or [tool.trait-audit] in pyproject.toml, in the current
folder. Command-line flags always win. Keys are the long flag names with dashes or underscores; detector
settings sit in a table per detector (docs/configuration.md):

    [tool.trait-audit]
    teacher = "openai:gpt-4.1-nano"
    fail-on = "medium"
    traits-file = ["traits/extra.toml"]

    [tool.trait-audit.detectors.likelihood]
    rows = 500
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from auditor.errors import InputError

# flag name -> parameter name, where they differ
_ALIASES = {"traits_file": "traits_files", "trait": "traits", "out": "out_dir"}


@dataclass
class Config:
    defaults: dict = field(default_factory=dict)  # top-level keys, as parameter names
    detectors: dict = field(default_factory=dict)  # the [detectors] table: {NAME: {KEY: VALUE}}
    path: Path | None = None


def load_config(folder: Path = Path("."), explicit: Path | None = None) -> Config:
    """The first of audit.toml and pyproject.toml's [tool.trait-audit] that holds anything; or, with
    `explicit` (--config FILE), that file alone (a pyproject.toml by its [tool.trait-audit] table)."""
    candidates = ((folder / "audit.toml", None), (folder / "pyproject.toml", ("tool", "trait-audit")))
    if explicit is not None:
        if not explicit.is_file():
            raise InputError(explicit, "no such config file (--config)")
        candidates = ((explicit, ("tool", "trait-audit") if explicit.name == "pyproject.toml" else None),)
    for path, table in candidates:
        if not path.is_file():
            continue
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            if table:  # someone else's pyproject.toml: not ours to judge unless it holds our table
                continue
            raise InputError(path, f"not valid TOML: {err}") from None
        for key in table or ():
            data = data.get(key, {}) if isinstance(data, dict) else {}
        if data:
            return _split(data, path)
    return Config()


def _split(data: dict, path: Path) -> Config:
    config = Config(path=path)
    for key, value in data.items():
        name = _ALIASES.get(key.replace("-", "_"), key.replace("-", "_"))
        if name == "detectors" and isinstance(value, dict):
            config.detectors = value  # [detectors.NAME] tables: detector settings
        elif name == "detectors" and isinstance(value, list):
            config.defaults[name] = ",".join(map(str, value))  # the --detectors selection, as a list
        else:
            config.defaults[name] = value
    return config
