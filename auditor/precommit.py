"""`audit-pre-commit [audit options] FILE...`: the pre-commit hook (see .pre-commit-hooks.yaml and docs/reports-and-ci.md).

pre-commit passes the hook's `args` first and the staged dataset files last. Each file is audited on its own, as
`audit FILE [options] -q` would (reports under `reports/<file name>/`, project defaults from audit.toml or
`[tool.trait-audit]`), and the hook exits with the worst code: 0 every gate passed, 1 a gate failed, 2 a usage or
input error, 3 a detector failed.
"""

from __future__ import annotations

import subprocess
import sys


def split_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """(audit options, files): options are recognised by the `run` command's own definitions, so an option's value
    (`--baseline accepted.json`) is never mistaken for a dataset file."""
    from auditor.cli import main

    run = main.commands["run"]
    takes_value, flags = set(), set()
    for param in run.params:
        if param.param_type_name != "option":
            continue
        names = set(param.opts) | set(param.secondary_opts)
        (flags if param.is_flag else takes_value).update(names)
    options, files = [], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            files += argv[i + 1:]
            break
        name = arg.split("=", 1)[0]
        if name in flags or (name in takes_value and "=" in arg):
            options.append(arg)
        elif name in takes_value:
            options += argv[i:i + 2]
            i += 1
        elif arg.startswith("-"):
            options.append(arg)  # unknown: let `audit` name the problem (exit 2)
        else:
            files.append(arg)
        i += 1
    return options, files


def main(argv: list[str] | None = None) -> int:
    options, files = split_args(list(sys.argv[1:] if argv is None else argv))
    worst = 0
    for path in files:
        code = subprocess.call([sys.executable, "-m", "auditor.cli", "run", path, *options, "-q"])
        print(f"trait-audit: {path}: {'gate passed' if code == 0 else {1: 'gate FAILED', 2: 'usage or input error', 3: 'a detector failed'}.get(code, f'exit {code}')}",
              file=sys.stderr)
        worst = max(worst, code)
    return worst


if __name__ == "__main__":
    sys.exit(main())
