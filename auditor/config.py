"""Project defaults for `audit`: audit.toml, or [tool.trait-audit] in pyproject.toml, in the current
folder. Command-line flags always win. Keys are the long flag names with dashes or underscores:

    [tool.trait-audit]
    teacher = "openai:gpt-4.1-nano"
    fail-on = "medium"
    detectors = "lexical"
    traits-file = ["traits/extra.toml"]
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from auditor.errors import InputError

# flag name -> parameter name, where they differ
_ALIASES = {"traits_file": "traits_files", "trait": "traits", "out": "out_dir"}


def load_config(folder: Path = Path("."), explicit: Path | None = None) -> tuple[dict, Path | None]:
    """(defaults for the `run` command, the file they came from). `explicit`: the file given with --config."""
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
            return {_ALIASES.get(k.replace("-", "_"), k.replace("-", "_")): v for k, v in data.items()}, path
    return {}, None
