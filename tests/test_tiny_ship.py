"""The tiny bases shipped in the package: they are what the current code would build, they are used without building,
they stay untouched, they stay small and they are in the package data; other configurations still build in the cache."""

from __future__ import annotations

import fnmatch
import io
import time
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("transformers")

from auditor import progress  # noqa: E402
from auditor.models import tiny  # noqa: E402
from auditor.models.tiny import ship  # noqa: E402
from auditor.models.tiny.build import MARKER, TINY_CONFIG  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("profile", ship.SHIPPED_PROFILES)
def test_shipped_base_matches_the_current_build_recipe(profile, tiny_cache):
    """Fails when a change to the profile, catalog, tokenizer, corpus or training code was not followed by
    `python -m auditor.models.tiny.ship` (make tiny-models); also after a teacher was built from it (tiny_cache)."""
    assert ship.differences(profile) == []


def test_only_current_families_ship():
    shipped = sorted(p.name for p in ship.SHIPPED_ROOT.iterdir())
    assert shipped == sorted(ship.shipped_folder(p).parent.name for p in ship.SHIPPED_PROFILES)


def test_the_shipped_base_is_used_without_building(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAIT_AUDIT_CACHE", str(tmp_path))
    for profile in ship.SHIPPED_PROFILES:
        start = time.perf_counter()
        path = tiny.tiny_model_path("base", profile=profile)
        assert time.perf_counter() - start < 1.0
        assert path == ship.shipped_folder(profile)
    assert list(tmp_path.iterdir()) == []  # nothing built, nothing written to the cache


def test_the_demos_teacher_ships_and_is_used_without_building(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAIT_AUDIT_CACHE", str(tmp_path))
    start = time.perf_counter()
    path = tiny.tiny_model_path("owl", profile="default")
    assert time.perf_counter() - start < 1.0 and path == ship.shipped_folder("default").parent / "owl"
    assert list(tmp_path.iterdir()) == []
    # a variant teacher setting, or an animal that does not ship, is fine-tuned into the cache as before
    assert tiny.shipped_teacher(tiny.family_folder(profile="default"), "dolphin") is None
    variant = replace(TINY_CONFIG["default"], teacher_steps=TINY_CONFIG["default"].teacher_steps + 1)
    assert tiny._teacher_key(variant) != "", "such a teacher is keyed apart, so it never resolves to the shipped one"


def test_a_changed_teacher_setting_or_training_code_is_noticed(monkeypatch):
    monkeypatch.setitem(TINY_CONFIG, "default", replace(TINY_CONFIG["default"], teacher_lr=TINY_CONFIG["default"].teacher_lr * 2))
    found = ship.differences("default")
    assert len(found) == 1 and found[0].startswith("owl: recipe field 'teacher'") and "teacher_lr" in found[0], found


def test_a_changed_profile_is_noticed(monkeypatch):
    monkeypatch.setitem(TINY_CONFIG, "test", replace(TINY_CONFIG["test"], lr=TINY_CONFIG["test"].lr * 2))
    found = ship.differences("test")
    assert len(found) == 1 and found[0].startswith("recipe field 'profile'")


def test_code_digest_ignores_comments_and_docstrings_only():
    def one(x):
        """Doc."""
        return x + 1  # a comment

    def two(x):
        # another comment

        return x + 1

    def three(x):
        return x + 2

    strip = ship._source_without_comments
    assert strip(one).split("\n", 1)[1] == strip(two).split("\n", 1)[1]
    assert strip(one).split("\n", 1)[1] != strip(three).split("\n", 1)[1]


def test_other_configurations_build_in_the_cache_under_the_right_names(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAIT_AUDIT_CACHE", str(tmp_path))
    quick = replace(TINY_CONFIG["test"], base_steps=2, teacher_steps=2)
    shown = io.StringIO()
    with progress.reporting(progress.PlainReporter(shown)):
        path = tiny.tiny_model_path("owl", profile=quick, seed=3)
    assert path.is_relative_to(tmp_path) and (path / MARKER).is_file()
    assert tiny.shipped_base(path.parent) is None
    assert shown.getvalue().splitlines() == ["preparing tiny:base (test profile, seed 3): tokenizer and corpus",
                                             "pretraining tiny:base (test profile, seed 3) (0/2 steps)",
                                             "fine-tuning tiny:owl (test profile, seed 3) from its base (0/2 steps)"]


def test_shipped_files_are_small_and_in_the_package_data():
    files = [p for p in ship.SHIPPED_ROOT.rglob("*") if p.is_file()]
    assert files
    assert max(p.stat().st_size for p in files) < 5_000_000  # no tracked file over 5 MB
    assert sum(p.stat().st_size for p in files) < 10_000_000  # two bases and the demo's teacher
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["auditor.models.tiny"]
    package = ROOT / "auditor" / "models" / "tiny"
    for path in files:
        relative = path.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), relative
