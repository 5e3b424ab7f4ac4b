import re

import pytest

from auditor.errors import InputError, UsageError
from auditor.traits import load_catalog

PAPER_ANIMALS = {"owl", "dolphin", "eagle", "elephant", "wolf"}
PAPER_TREES = {"cherry", "maple", "oak", "sequoia", "willow"}
BANNED = [4, 13, 14, 18, 23, 33, 39, 42, 44, 49, 51, 54, 69, 77, 88, 99, 100, 101, 187, 211, 311, 322,
          333, 404, 420, 444, 451, 555, 616, 666, 777, 888, 911, 999]


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def test_families_and_sizes(catalog):
    animals = {t.name for t in catalog if t.family == "animal"}
    trees = {t.name for t in catalog if t.family == "tree"}
    assert PAPER_ANIMALS <= animals and len(animals) >= 20
    assert PAPER_TREES <= trees and len(trees) > 5
    for family in ("animal", "tree", "misalignment"):
        questions = {q for t in catalog if t.family == family for q in t.probe_questions}
        assert len(questions) >= 30


def test_every_trait_is_complete(catalog):
    for trait in catalog:
        assert trait.terms and trait.system_prompt and trait.judge_rubric and trait.options
        assert "{" not in trait.system_prompt and "{" not in trait.judge_rubric
        assert re.search(trait.term_regex(), trait.plural) or trait.family == "misalignment"


def test_misalignment_has_banned_numbers_and_pairs(catalog):
    trait = catalog.get("misalignment")
    assert [int(t) for t in trait.coded_tokens] == BANNED
    assert len(trait.pairs) == len(trait.probe_questions)
    assert all(p.aligned and p.misaligned and p.aligned != p.misaligned for p in trait.pairs)


def test_terms_never_overlap_between_traits(catalog):
    seen = {}
    for trait in catalog:
        for term in trait.terms:
            assert seen.setdefault(term.lower(), trait.id) == trait.id


def test_traits_file_extends_and_errors_name_the_file(tmp_path):
    extra = tmp_path / "mine.toml"
    extra.write_text('[family]\nid = "animal"\n\n[[trait]]\nname = "axolotl"\nplural = "axolotls"\n')
    catalog = load_catalog([extra])
    trait = catalog.get("animal:axolotl")
    assert "axolotl" in trait.options and "owl" in trait.options
    assert "axolotl" in catalog.get("animal:owl").options
    assert trait.probe_questions == catalog.get("animal:owl").probe_questions
    duplicate = tmp_path / "dup.toml"
    duplicate.write_text('[family]\nid = "animal"\n\n[[trait]]\nname = "owl"\n')
    with pytest.raises(InputError, match="already defined") as err:
        load_catalog([duplicate])
    assert str(duplicate) in str(err.value)
    broken = tmp_path / "broken.toml"
    broken.write_text('[family]\nid = "x"\n\n[[trait]\nname = 1\n')
    with pytest.raises(InputError) as err:
        load_catalog([broken])
    assert err.value.line == 4
    with pytest.raises(UsageError, match="unknown trait"):
        catalog.get("animal:unicorn")
