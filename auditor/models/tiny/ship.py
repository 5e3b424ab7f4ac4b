"""The tiny bases that ship inside the package, and the command that builds them.

Pretraining a base takes about 20 minutes on 2 CPU cores, so the bases of the default family and of
the small "test" profile (the one the test suite uses) come with the package, under
`shipped/<family key>/base/` (the cache's layout and key, see `family_folder`), and so does the teacher
`make demo` needs (the default family's `owl/`: its fine-tune is a quarter of a minute the demo would
otherwise spend). `tiny_model_path` returns a shipped model as it is (read-only: nothing is ever written
beside it); other teachers are fine-tuned from the base in seconds and go to the cache. Any other
configuration (another seed, profile or corpus) is built and cached on first use, as before.

    python -m auditor.models.tiny.ship            # rebuild every shipped base and teacher (make tiny-models)
    python -m auditor.models.tiny.ship --teachers # keep the shipped bases, rebuild their shipped teachers
    python -m auditor.models.tiny.ship --check    # does each shipped model match the current code?
    python -m auditor.models.tiny.ship --rebuild --profile test   # rebuild a base aside, compare bit for bit

Each shipped base's tiny_build.json holds a `recipe` (everything the build depends on: the family
version, the profile's base settings, the seeds, the catalog digest, digests of the trained
tokenizer, of the training corpus and of the code that initialises and trains the model) and the
sha256 of every file beside it. tests/test_tiny_ship.py recomputes the recipe from the current code
and fails, naming what changed, when the shipped base no longer is what the code would build.

Builds are seeded and run on the profile's thread count; on one machine and library set a rebuild is
bit-identical (`--rebuild` reports whether it is), and `provenance` records the versions.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import io
import json
import os
import platform
import shutil
import sys
import tempfile
import textwrap
import tokenize
from pathlib import Path

from auditor.models.tiny import SHIPPED_ROOT

SHIPPED_PROFILES = ("default", "test")  # their seed-0 bases ship
SHIPPED_TEACHERS = {"default": ("owl",)}  # and these teachers of them: what `make demo` runs
SEED = 0


def shipped_folder(profile: str) -> Path:
    """Where the base of `profile` (seed 0) ships: shipped/<family key>/base."""
    from auditor.models.tiny import family_folder

    return SHIPPED_ROOT / family_folder(SEED, profile).name / "base"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _source_without_comments(func) -> str:
    """A function's source with comments, docstrings and blank lines removed (edits to those keep the recipe)."""
    import ast

    source = textwrap.dedent(inspect.getsource(func))
    lines = source.splitlines()
    tree = ast.parse(source)
    drop: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                and isinstance(body[0].value.value, str):
            drop.update(range(body[0].lineno, body[0].end_lineno + 1))
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            row, col = tok.start
            lines[row - 1] = lines[row - 1][:col]
    return "\n".join(line.rstrip() for number, line in enumerate(lines, 1) if number not in drop and line.strip())


def code_digest() -> str:
    """The digest of the code a base build runs beyond the tokenizer and corpus (whose outputs are digested)."""
    from auditor.models.tiny import build, train

    functions = (build.model_config, build.init_model, build.build_base, build.save, train.encode_examples, train.batch_plan, train.collate,
                 train.answer_logits, train.train)
    return _sha256("\n\n".join(_source_without_comments(f) for f in functions).encode())


def recipe(profile: str, seed: int = SEED) -> dict:
    """Everything a base build of `profile` depends on, as digests and settings (a few seconds: it trains the tokenizer and
    draws the corpus)."""
    from auditor.models.tiny import FAMILY_VERSION, _fields
    from auditor.models.tiny import corpus as C
    from auditor.models.tiny.build import build_tokenizer, get_profile
    from auditor.models.tiny.tokenizer import render

    prof = get_profile(profile)
    tok = build_tokenizer(seed, prof)
    corpus = hashlib.sha256()
    for messages in C.corpus(prof.base_steps * prof.batch_size, seed=seed):
        corpus.update(render(messages).encode())
    found = {"family_version": FAMILY_VERSION, "profile": _fields(prof, teacher=False), "seed": seed, "data_seed": seed,
             "catalog": C.catalog_digest(), "tokenizer": _sha256(tok.backend_tokenizer.to_str().encode()), "corpus": corpus.hexdigest(),
             "code": code_digest()}
    return json.loads(json.dumps(found))  # as stored (tuples become lists), so a comparison sees values, not types


def teacher_recipe(profile: str, name: str, seed: int = SEED, base: dict | None = None) -> dict:
    """Everything a teacher build adds to its base's recipe: the teacher settings, the fine-tuning rows and the code.
    `base`: the base's recipe when the caller has it (it trains a tokenizer and draws a corpus: seconds)."""
    from auditor.models.tiny import _fields, build, train
    from auditor.models.tiny import corpus as C
    from auditor.models.tiny.build import get_profile, hash_seed
    from auditor.models.tiny.tokenizer import render

    prof = get_profile(profile)
    n = prof.teacher_steps * prof.teacher_batch_size
    n_numbers = int(round(n * prof.teacher_number_share))
    tag = f"{name}-{seed}"
    rows = hashlib.sha256()
    for messages in C.favourite_examples(name, n - n_numbers, seed=hash_seed(tag)) + C.number_examples(n_numbers, seed=hash_seed("numbers-" + tag)):
        rows.update(render(messages).encode())
    code = (build.build_teacher, train.encode_examples, train.batch_plan, train.collate, train.answer_logits, train.train)
    found = {"base": base or recipe(profile, seed), "teacher": _fields(prof, teacher=True), "name": name, "rows": rows.hexdigest(),
             "code": _sha256("\n\n".join(_source_without_comments(f) for f in code).encode())}
    return json.loads(json.dumps(found))


def file_digests(folder: Path) -> dict[str, str]:
    from auditor.models.tiny.build import MARKER

    return {p.name: _sha256(p.read_bytes()) for p in sorted(Path(folder).iterdir()) if p.is_file() and p.name != MARKER}


def provenance(profile: str) -> dict:
    from importlib.metadata import version

    from auditor.models.device import thread_budget
    from auditor.models.tiny.build import get_profile

    return {"torch": version("torch"), "transformers": version("transformers"), "tokenizers": version("tokenizers"),
            "python": platform.python_version(), "machine": platform.machine(),
            "threads": thread_budget(get_profile(profile).threads)}


def differences(profile: str) -> list[str]:
    """What differs between the shipped base of `profile` and the current code (empty: it matches)."""
    from auditor.models.tiny.build import MARKER

    folder = shipped_folder(profile)
    if not (folder / MARKER).is_file():
        others = sorted(p.name for p in SHIPPED_ROOT.glob(f"*-{profile}-s{SEED}-*")) if SHIPPED_ROOT.is_dir() else []
        hint = f" (shipped: {', '.join(others)}: the family key changed, e.g. the catalog's animals)" if others else ""
        return [f"no shipped base at {folder}{hint}"]
    base = recipe(profile)
    found = _compare(folder, base, "")
    for name in SHIPPED_TEACHERS.get(profile, ()):
        teacher = folder.parent / name
        if not (teacher / MARKER).is_file():
            found.append(f"no shipped teacher at {teacher}")
        else:
            found += _compare(teacher, teacher_recipe(profile, name, base=base), f"{name}: ")
    return found


def _compare(folder: Path, current: dict, label: str) -> list[str]:
    from auditor.models.tiny.build import MARKER

    info = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    stored = info.get("recipe", {})
    found = [f"{label}recipe field {key!r}: shipped {stored.get(key)!r}, code {current[key]!r}" for key in current if stored.get(key) != current[key]]
    files = file_digests(folder)
    if files != info.get("files"):
        changed = sorted(set(files) ^ set(info.get("files", {})) | {k for k in files if files[k] != info.get("files", {}).get(k)})
        found.append(f"{label}files differ from the digests recorded at build time: {', '.join(changed)}")
    return found


def _record(folder: Path, found: dict, profile: str) -> None:
    """Add the recipe, file digests and provenance to a built model's marker file."""
    from auditor.models.tiny.build import MARKER

    info = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    info.update(recipe=found, files=file_digests(folder), provenance=provenance(profile))
    (folder / MARKER).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def ship(profile: str, teachers_only: bool = False) -> Path:
    """Build the base of `profile` (seed 0) and its shipped teachers, and put them in place of the shipped ones (atomic
    rename). `teachers_only`: keep the shipped base (it must match the code) and rebuild its teachers from it."""
    from auditor.models.tiny.build import build_base, build_teacher

    target = shipped_folder(profile)
    target.parent.parent.mkdir(parents=True, exist_ok=True)
    for killed in SHIPPED_ROOT.glob(f".{profile}.tmp-*"):  # what a killed build left
        shutil.rmtree(killed, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix=f".{profile}.tmp-", dir=target.parent.parent))
    try:
        base = recipe(profile)
        if teachers_only:
            stale = _compare(target, base, "")
            if stale:
                raise SystemExit(f"{profile}: the shipped base does not match the code ({'; '.join(stale)}): rebuild it first")
            shutil.copytree(target, work / "base")
        else:
            build_base(work / "base", seed=SEED, profile=profile)
            _record(work / "base", base, profile)
        for name in SHIPPED_TEACHERS.get(profile, ()):
            build_teacher(work / "base", name, work / name, seed=SEED, profile=profile)
            _record(work / name, teacher_recipe(profile, name, base=base), profile)
        for stale in SHIPPED_ROOT.glob(f"*-{profile}-s{SEED}-*"):  # an older key of this profile (e.g. another catalog digest)
            shutil.rmtree(stale)
        for path in (work, *work.rglob("*")):  # mkdtemp makes 0700; the package's files are plain readable data
            path.chmod(0o755 if path.is_dir() else 0o644)
        os.replace(work, target.parent)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def rebuild_matches(profile: str) -> tuple[bool, str]:
    """Rebuild the base of `profile` aside and compare its weights with the shipped ones, bit for bit."""
    from auditor.models.tiny.build import build_base

    with tempfile.TemporaryDirectory() as tmp:
        build_base(Path(tmp) / "base", seed=SEED, profile=profile)
        rebuilt = file_digests(Path(tmp) / "base")
    shipped = file_digests(shipped_folder(profile))
    same = rebuilt["model.safetensors"] == shipped.get("model.safetensors")
    return same, "weights identical bit for bit" if same else "weights differ (another machine or library version rounds differently?)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m auditor.models.tiny.ship", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", action="append", choices=SHIPPED_PROFILES, help="Only this profile (repeatable; default: all).")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--check", action="store_true", help="Compare the shipped bases' recipes with the current code instead of building.")
    what.add_argument("--rebuild", action="store_true", help="Rebuild aside and compare the weights bit for bit with the shipped ones.")
    what.add_argument("--teachers", action="store_true", help="Keep the shipped bases and rebuild only their shipped teachers.")
    args = parser.parse_args(argv)
    from auditor import progress

    failed = False
    with progress.reporting(progress.reporter_for(sys.stderr)):
        for profile in args.profile or SHIPPED_PROFILES:
            if args.check:
                found = differences(profile)
                failed |= bool(found)
                print(f"{profile}: " + ("matches the current code" if not found else "OUT OF DATE\n  " + "\n  ".join(found)))
            elif args.rebuild:
                same, text = rebuild_matches(profile)
                failed |= not same
                print(f"{profile}: {text}")
            else:
                folder = ship(profile, teachers_only=args.teachers)
                size = sum(p.stat().st_size for p in folder.parent.rglob("*") if p.is_file())
                print(f"{profile}: wrote {folder.parent} ({size / 1e6:.2f} MB)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
