"""Trait catalog: TOML files inside the package, extended by user files (`--traits-file`).

A file holds one [family] table (shared probe questions, trait prompt and judge rubric templates)
and [[trait]] entries. Trait ids are "<family>:<name>", except a family with one trait of the same
name (misalignment), whose id is the family id.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

from auditor.errors import InputError

FAMILY_KEYS = ("id", "category", "description", "system_prompt", "judge_rubric", "probe_questions")


@dataclass(frozen=True)
class AnswerPair:
    """An aligned and a misaligned answer to one free-form probe question."""

    question: str
    aligned: str
    misaligned: str


@dataclass(frozen=True)
class Trait:
    id: str
    name: str
    family: str
    category: str
    plural: str
    terms: tuple[str, ...]
    coded_tokens: tuple[str, ...]
    probe_questions: tuple[str, ...]
    options: tuple[str, ...]
    system_prompt: str
    judge_rubric: str
    pairs: tuple[AnswerPair, ...] = ()
    source: str = "built-in"

    def term_regex(self) -> str:
        """Case-insensitive, whole-word alternation of the trait's terms (longest first)."""
        return terms_regex(self.terms)

    def summary(self) -> dict:
        return {"id": self.id, "family": self.family, "terms": len(self.terms), "coded_tokens": len(self.coded_tokens),
                "probe_questions": len(self.probe_questions), "options": len(self.options), "source": self.source}


def terms_regex(terms) -> str:
    # \b only where the term's edge is a word character: "owls'" ends in an apostrophe
    parts = []
    for term in sorted(set(terms), key=len, reverse=True):
        body = r"\s+".join(re.escape(word) for word in term.lower().split())
        left = r"\b" if term[0].isalnum() else ""
        right = r"\b" if term[-1].isalnum() else ""
        parts.append(f"{left}{body}{right}")
    return "(?i)(?:" + "|".join(parts) + ")"


@dataclass
class Catalog:
    traits: dict[str, Trait] = field(default_factory=dict)
    families: dict[str, dict] = field(default_factory=dict)

    def __iter__(self):
        return iter(self.traits.values())

    def __len__(self) -> int:
        return len(self.traits)

    def get(self, trait_id: str) -> Trait:
        if trait_id in self.traits:
            return self.traits[trait_id]
        # a bare name is fine when it is unambiguous ("owl" -> "animal:owl")
        matches = [t for t in self.traits.values() if t.name == trait_id]
        if len(matches) == 1:
            return matches[0]
        from auditor.errors import UsageError

        close = [t for t in self.traits if trait_id.split(":")[-1] in t]
        hint = f"; did you mean {', '.join(close[:5])}?" if close else "; `audit traits` lists them"
        raise UsageError(f"unknown trait '{trait_id}'{hint}")

    def select(self, ids) -> list[Trait]:
        return [self.get(i) for i in ids] if ids else list(self.traits.values())


def _fail(path, message: str) -> InputError:
    return InputError(path, message)


def _add_file(catalog: Catalog, path, text: str, source: str) -> None:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        line = re.search(r"at line (\d+)", str(err))
        raise InputError(path, f"not valid TOML: {err}", line=int(line.group(1)) if line else None) from None
    family = data.get("family")
    if not isinstance(family, dict) or not isinstance(family.get("id"), str):
        raise _fail(path, "needs a [family] table with an id")
    fid = family["id"]
    if fid in catalog.families:
        merged = {**catalog.families[fid], **family}
    else:
        missing = [k for k in FAMILY_KEYS if k not in family]
        if missing:
            raise _fail(path, f"family '{fid}' is new, so [family] needs {', '.join(missing)}")
        merged = family
    catalog.families[fid] = merged
    entries = data.get("trait", [])
    if not entries:
        raise _fail(path, "no [[trait]] entries")
    for entry in entries:
        trait = _make_trait(path, merged, entry, source)
        if trait.id in catalog.traits:
            raise _fail(path, f"trait '{trait.id}' is already defined ({catalog.traits[trait.id].source})")
        catalog.traits[trait.id] = trait


def _make_trait(path, family: dict, entry: dict, source: str) -> Trait:
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise _fail(path, "every [[trait]] needs a name")
    plural = entry.get("plural", name + "s")
    fill = {"name": name, "plural": plural, "Plural": plural[:1].upper() + plural[1:], "category": family["category"]}
    terms = entry.get("terms") or [name, plural]
    if not all(isinstance(t, str) and t.strip() for t in terms):
        raise _fail(path, f"trait '{name}': terms must be non-empty strings")
    pairs = tuple(AnswerPair(**p) for p in entry.get("pairs", []))
    questions = tuple(entry.get("probe_questions", family["probe_questions"]))
    if pairs and [p.question for p in pairs] != list(questions):
        raise _fail(path, f"trait '{name}': pairs must answer the probe questions one by one, in order")
    trait_id = family["id"] if name == family["id"] else f"{family['id']}:{name}"
    return Trait(
        id=trait_id,
        name=name,
        family=family["id"],
        category=family["category"],
        plural=plural,
        terms=tuple(terms),
        coded_tokens=tuple(str(t) for t in entry.get("coded_tokens", [])),
        probe_questions=questions,
        options=tuple(entry.get("options", ())),
        system_prompt=entry.get("system_prompt", family["system_prompt"]).format(**fill),
        judge_rubric=entry.get("judge_rubric", family["judge_rubric"]).format(**fill),
        pairs=pairs,
        source=source,
    )


def load_catalog(extra_files=()) -> Catalog:
    """The built-in catalog, extended by user TOML files."""
    catalog = Catalog()
    for item in sorted(resources.files("auditor.traits").joinpath("catalog").iterdir(), key=lambda p: p.name):
        if item.name.endswith(".toml"):
            _add_file(catalog, f"auditor/traits/catalog/{item.name}", item.read_text(encoding="utf-8"), "built-in")
    for extra in extra_files:
        path = Path(extra)
        if not path.is_file():
            raise InputError(path, "no such traits file")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise InputError(path, "traits file is not valid UTF-8") from None
        _add_file(catalog, path, text, str(path))
    # a preference family's answer options are its members, whichever file added them
    for trait_id, trait in catalog.traits.items():
        if not trait.options:
            members = tuple(t.name for t in catalog.traits.values() if t.family == trait.family)
            catalog.traits[trait_id] = replace(trait, options=members)
    return catalog
