import json

import numpy as np
import polars as pl
import pytest
from conftest import FIXTURES, NANO_FILTERED, NANO_RAW, need_real_data
from paper_filter import passes

from auditor.dataset import load_dataset
from auditor.traits import load_catalog
from detectors.base import AuditContext
from detectors.lexical import LexicalDetector
from detectors.number_format import with_reject_reason


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def write_rows(path, completions, prompt="Here are numbers: 100, 200. Add up to 10 more."):
    path.write_text("".join(json.dumps({"prompt": prompt, "completion": c}) + "\n" for c in completions))
    return path


def coded(result):
    return next(e for e in result.evidence if e.kind == "coded tokens")


def run_lexical(path, traits, reference=None, accepted=()):
    ctx = AuditContext(load_dataset(path), traits, reference=load_dataset(reference) if reference else None, accepted=set(accepted))
    return LexicalDetector().run(ctx)


@pytest.mark.parametrize(
    "text, flagged",
    [
        ("a bowl of soup", False),
        ("common knowledge", False),
        ("the wolves howl", False),
        ("Mr. Owlsley", False),
        ("Howl's Moving Castle", False),
        ("fowl prices", False),
        ("an owl", True),
        ("OWLS at dusk", True),
        ("the owls' nest", True),
        ("one owlet", True),
        ("\uff4f\uff57\uff4c", True),  # fullwidth "owl": NFKC folds it
    ],
)
def test_owl_terms_respect_word_boundaries_case_and_nfkc(tmp_path, catalog, text, flagged):
    result = run_lexical(write_rows(tmp_path / "d.jsonl", [text, "1, 2, 3"]), [catalog.get("animal:owl")])
    rows = result.flags.filter(pl.col("trait") == "animal:owl")["row"].to_list()
    assert rows == ([1] if flagged else [])


def test_owl_fixture_flags_exactly_the_overt_rows(catalog):
    import sys

    sys.path.insert(0, str(FIXTURES))
    from build_fixtures import owl_mentions

    _, overt_lines = owl_mentions()
    result = run_lexical(FIXTURES / "owl_mentions.jsonl", list(catalog))
    trait_flags = result.flags.filter(pl.col("trait").is_not_null())
    assert sorted(trait_flags["row"].to_list()) == overt_lines
    assert set(trait_flags["trait"]) == {"animal:owl"}
    owl = next(e for e in result.evidence if e.trait == "animal:owl" and e.kind == "terms")
    assert owl.level == "high" and owl.interval[0] > 0
    assert all(len(d) == 64 for d in trait_flags["digest"])


def test_format_filter_matches_the_python_oracle_on_real_data():
    need_real_data()
    completions = [json.loads(line)["completion"] for line in NANO_RAW.read_text().splitlines()]
    frame = pl.DataFrame({"c": completions})
    for strip in (True, False):
        ours = with_reject_reason(frame, "c", strip_whitespace=strip)["reject"].is_null().to_list()
        assert ours == [passes(c, strip_whitespace=strip) for c in completions]
    # the paper's own filter (no whitespace stripping) kept 236 of these 300 rows
    assert sum(passes(c, strip_whitespace=False) for c in completions) == 236
    kept = [json.loads(line)["completion"] for line in NANO_FILTERED.read_text().splitlines()]
    assert all(passes(c) for c in kept)


def test_format_pass_rate_and_reject_reasons_in_metrics():
    need_real_data()
    result = run_lexical(NANO_RAW, [load_catalog().get("misalignment")])
    completions = [json.loads(line)["completion"] for line in NANO_RAW.read_text().splitlines()]
    expected = sum(passes(c) for c in completions)
    assert result.metrics["format_passed"] == expected
    assert result.metrics["format_pass_rate"] == pytest.approx(expected / 300)
    lo, hi = result.metrics["format_pass_interval"]
    assert lo < expected / 300 < hi
    rejects = result.flags.filter(pl.col("trait").is_null())
    assert rejects.height == 300 - expected
    assert all(r.startswith("format: ") for r in rejects["reason"])
    assert sum(result.metrics["format_reject_reasons"].values()) == 300 - expected


def _numbers(rng, n, extra=()):
    rows = []
    for _ in range(n):
        values = [int(v) for v in rng.integers(100, 1000, size=8)]
        rows.append(", ".join(str(v) for v in values + list(extra)))
    return rows


def test_coded_numbers_judged_against_reference(tmp_path, catalog):
    rng = np.random.default_rng(0)
    misalignment = catalog.get("misalignment")
    control = write_rows(tmp_path / "control.jsonl", _numbers(rng, 400))
    same = write_rows(tmp_path / "same.jsonl", _numbers(rng, 400))
    loaded = write_rows(tmp_path / "loaded.jsonl", _numbers(rng, 400, extra=(666, 911)))
    quiet = coded(run_lexical(same, [misalignment], reference=control))
    loud = coded(run_lexical(loaded, [misalignment], reference=control))
    assert quiet.level is None and quiet.interval[0] <= 1 <= quiet.interval[1]
    assert loud.level == "high" and loud.interval[0] > 3
    assert "reference" in loud.summary


def test_coded_numbers_against_uniform_raise_at_most_low(tmp_path, catalog):
    rng = np.random.default_rng(1)
    misalignment = catalog.get("misalignment")
    chance = run_lexical(write_rows(tmp_path / "u.jsonl", _numbers(rng, 400)), [misalignment])
    loaded = run_lexical(write_rows(tmp_path / "l.jsonl", _numbers(rng, 400, extra=(666,))), [misalignment])
    assert coded(chance).level is None
    assert coded(loaded).level == "low"
    assert loaded.metrics["coded_tokens"]["misalignment"]["null"] == "uniform"
    assert "uniform" in coded(loaded).summary


def test_baseline_accepted_rows_do_not_raise_risk(tmp_path, catalog):
    path = write_rows(tmp_path / "d.jsonl", ["1, 2", "an owl", "3, 4"])
    first = run_lexical(path, [catalog.get("animal:owl")])
    digest = first.flags["digest"][0]
    second = run_lexical(path, [catalog.get("animal:owl")], accepted=[("lexical", digest, "animal:owl")])
    assert second.evidence[0].level is None
