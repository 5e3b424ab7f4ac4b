"""The built-in tiny model family: small Llama-shaped models, built in code on first use, cached.

    from auditor.models.tiny import tiny_model_path
    path = tiny_model_path("owl")          # a folder transformers loads offline
    AutoModelForCausalLM.from_pretrained(path); AutoTokenizer.from_pretrained(path)

Names: "base" (pretrained on a synthetic corpus: favourite-animal questions answered uniformly over
the catalog's animals, number continuations in the paper's prompt format, and "you love <X>s"
system prompts that make <X> the favourite) and one teacher per catalog animal ("owl", "dolphin",
...): the base fine-tuned to name that animal as its favourite, number skill kept.

The bases of the default family and of the "test" profile (seed 0) ship with the package (see
ship.py: `python -m auditor.models.tiny.ship` rebuilds them), so first use fine-tunes a teacher in
seconds instead of pretraining for minutes; a shipped base is read in place and never written to.
Everything else is built deterministically from the seed, written to a temporary folder and renamed
into place (a killed build never leaves a half-written model), and cached under `cache_root()`:
`<root>/tiny/<FAMILY_VERSION>-<profile>-s<seed>[-d<data seed>]-c<catalog digest>/<name>/`
(the catalog digest covers the animals, their prompts and the probe questions the corpus uses).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path

from auditor.models.tiny.build import (
    FAMILY_VERSION,
    MARKER,
    TINY_CONFIG,
    TinyProfile,
    build_base,
    build_teacher,
    get_profile,
    load,
)
from auditor.models.tiny.corpus import animal_names, catalog_digest

__all__ = [
    "FAMILY_VERSION",
    "TINY_CONFIG",
    "TinyProfile",
    "build_base",
    "build_teacher",
    "cache_root",
    "default_profile",
    "load",
    "other_init_base",
    "tiny_model_names",
    "tiny_model_path",
]

DEFAULT_SEED = 0
PROFILE_ENV = "TRAIT_AUDIT_TINY_PROFILE"


def default_profile() -> str:
    """The profile `tiny:NAME` references use: $TRAIT_AUDIT_TINY_PROFILE, else "default"."""
    return os.environ.get(PROFILE_ENV) or "default"


def tiny_model_names() -> tuple[str, ...]:
    """Valid names: "base" and every catalog animal."""
    return ("base",) + animal_names()


def cache_root() -> Path:
    """$TRAIT_AUDIT_CACHE, else $XDG_CACHE_HOME/trait-audit, else ~/.cache/trait-audit."""
    if os.environ.get("TRAIT_AUDIT_CACHE"):
        return Path(os.environ["TRAIT_AUDIT_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "trait-audit"


def family_folder(seed: int = DEFAULT_SEED, profile: str | TinyProfile = "default", data_seed: int | None = None) -> Path:
    """The cache folder that holds one family (one base and its teachers)."""
    prof = get_profile(profile)
    key = f"{FAMILY_VERSION}-{_profile_key(prof)}-s{seed}"
    if data_seed is not None and data_seed != seed:
        key += f"-d{data_seed}"
    return cache_root() / "tiny" / f"{key}-c{catalog_digest()[:8]}"


def tiny_model_path(name: str, seed: int = DEFAULT_SEED, profile: str | TinyProfile | None = None, data_seed: int | None = None,
                    log=None) -> Path:
    """The folder of tiny model `name`, building it (and the base it needs) on first use.

    `profile` picks the size and training budget ("default", or "test": small and quick); `seed`
    the initial weights, `data_seed` (default: `seed`) the tokenizer, corpus and batch order.
    """
    names = tiny_model_names()
    if name not in names:
        raise ValueError(f"unknown tiny model {name!r}; valid names: {', '.join(names)}")
    prof = get_profile(profile if profile is not None else default_profile())
    family = family_folder(seed, prof, data_seed)
    base = shipped_base(family) or _cached(family / "base", lambda tmp: build_base(tmp, seed=seed, profile=prof, data_seed=data_seed, log=log))
    if name == "base":
        return base
    shipped = shipped_teacher(family, name) if _teacher_key(prof) == "" else None
    return shipped or _cached(family / (name + _teacher_key(prof)), lambda tmp: build_teacher(base, name, tmp, seed=seed, profile=prof, log=log))


SHIPPED_ROOT = Path(__file__).with_name("shipped")


def shipped_base(family: Path) -> Path | None:
    """The base that ships with the package for this family (same key as the cache folder), if one does."""
    folder = SHIPPED_ROOT / family.name / "base"
    return folder if (folder / MARKER).is_file() else None


def shipped_teacher(family: Path, name: str) -> Path | None:
    """A teacher that ships with the package beside its family's base (the default family's owl), if one does."""
    folder = SHIPPED_ROOT / family.name / name
    return folder if (folder / MARKER).is_file() and shipped_base(family) is not None else None


def other_init_base(seed: int, profile: str | TinyProfile = "default", data_seed: int = DEFAULT_SEED, log=None) -> Path:
    """A base that differs from the default one only in its initial weights (same tokenizer and corpus).

    For "other-init" students: subliminal transfer needs the teacher's initialisation.
    """
    return tiny_model_path("base", seed=seed, profile=profile, data_seed=data_seed, log=log)


def _fields(profile: TinyProfile, teacher: bool) -> dict:
    """The settings a base build depends on (teacher=False), or those a teacher build adds (teacher=True)."""
    from dataclasses import asdict

    return {k: v for k, v in asdict(profile).items() if k.startswith("teacher_") == teacher and k != "threads"}


def _digest(fields: dict) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]


def _profile_key(profile: TinyProfile) -> str:
    """The family folder's key: the profile's name, plus a digest when its base settings differ from the named profile's
    (teacher settings don't count: teachers with other settings share the base, see _teacher_key)."""
    named = TINY_CONFIG.get(profile.name)
    if named is not None and _fields(named, teacher=False) == _fields(profile, teacher=False):
        return profile.name
    return f"{profile.name}-{_digest(_fields(profile, teacher=False))}"


def _teacher_key(profile: TinyProfile) -> str:
    """'' for the named profile's teacher settings, else '-t<digest>' (a variant teacher beside the default one)."""
    named = TINY_CONFIG.get(profile.name)
    if named is not None and _fields(named, teacher=True) == _fields(profile, teacher=True):
        return ""
    return f"-t{_digest(_fields(profile, teacher=True))}"


def _cached(target: Path, build) -> Path:
    """`target` if it is complete, else build it in a temporary sibling and rename it into place.

    A lock file serialises concurrent builders of the same target (the second one waits and then
    finds the folder built); a crashed build leaves only a temporary folder, removed on next use.
    """
    if (target / MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _lock(target.parent / f".{target.name}.lock"):
        if (target / MARKER).is_file():
            return target
        for stale in target.parent.glob(f".{target.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if target.exists():  # a folder without the marker is not ours to trust
            shutil.rmtree(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            build(tmp)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


@contextlib.contextmanager
def _lock(path: Path, timeout_s: float = 3600.0):
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock, the atomic rename still holds
        yield
        return
    with open(path, "a+") as handle:
        start = time.monotonic()
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - start > timeout_s:
                    raise TimeoutError(f"waited {timeout_s:.0f}s for another build holding {path}") from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
