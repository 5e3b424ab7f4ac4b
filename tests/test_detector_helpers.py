"""The helpers detectors share (detectors/base.py): control rows, z-score row flags, Wilson rate evidence, focus traits.
No model is loaded: a scripted base stands in where one would write completions."""

import numpy as np
import polars as pl
import pytest
from conftest import FIXTURES

from auditor.dataset import load_dataset
from auditor.models import GENERATE
from auditor.traits import load_catalog
from detectors.base import (
    FLAG_SCHEMA,
    NO_TRAIT_TO_TEST,
    REFERENCE_SOURCE,
    AuditContext,
    Skip,
    control_rows,
    flagged_rows,
    focus_traits,
    missing_focus,
    rate_evidence,
    z_flags,
)


class ScriptedBase:
    """Writes "answer to PROMPT" and records the sampling it was asked for."""

    def __init__(self, can_generate=True):
        self.ref = type("Ref", (), {"ref": "scripted:base"})()
        self.can_generate = can_generate
        self.calls = []

    def supports(self, capability):
        return capability == GENERATE and self.can_generate

    def generate(self, prompts, sampling, system=None):
        self.calls.append((list(prompts), sampling, system))
        return [[f"answer to {p}"] for p in prompts]


@pytest.fixture(scope="module")
def mentions():
    return load_dataset(FIXTURES / "owl_mentions.jsonl")


@pytest.fixture(scope="module")
def numbers():
    return load_dataset(FIXTURES / "numbers_clean.jsonl")


def _ctx(dataset, reference=None, focus=("animal:owl",), seed=4, accepted=()):
    catalog = load_catalog()
    traits = [catalog.get(t) for t in ("animal:owl", "animal:dolphin", "misalignment")]
    return AuditContext(dataset, traits, reference=reference, options={"focus": list(focus)}, seed=seed, accepted=set(accepted))


# --- control rows -----------------------------------------------------------------------------------
def test_control_rows_sample_the_reference_with_the_next_seed(mentions, numbers):
    ctx = _ctx(mentions, reference=numbers)
    base = ScriptedBase()
    frame, source = control_rows(ctx, ["unused"], 5, base=base)
    assert source == REFERENCE_SOURCE and frame.columns == ["prompt", "completion"] and frame.height == 5
    expected = numbers.frame.select("prompt", "completion").collect().sample(n=5, seed=ctx.seed + 1)
    assert frame.equals(expected) and not base.calls, "a reference means the base writes nothing"
    ordered, _ = control_rows(ctx, [], 5, in_file_order=True)
    rows = numbers.frame.collect().join(ordered, on=["prompt", "completion"])["row"].to_list()
    assert rows == sorted(rows) and set(ordered["completion"]) == set(frame["completion"])
    everything, _ = control_rows(ctx, [], None)
    assert everything.height == numbers.rows
    more_than_there_is, _ = control_rows(ctx, [], numbers.rows + 50)
    assert more_than_there_is.height == numbers.rows


def test_control_rows_without_a_reference_are_the_base_answering_the_same_prompts(mentions):
    ctx = _ctx(mentions)
    base = ScriptedBase()
    frame, source = control_rows(ctx, ["p1", "p2"], 10, base=base, max_new_tokens=64, writer="tiny:base")
    assert frame.rows() == [("p1", "answer to p1"), ("p2", "answer to p2")]
    assert source == "completions tiny:base wrote for the same prompts"
    (prompts, sampling, system), = base.calls
    assert (sampling.n, sampling.temperature, sampling.max_new_tokens, sampling.seed) == (1, 1.0, 64, ctx.seed)
    assert system == "", "the base answers without any system prompt"
    assert control_rows(ctx, [], 10, base=ScriptedBase())[1] == "completions the base wrote for the same prompts"
    with pytest.raises(Skip, match="scripted:base cannot generate"):
        control_rows(ctx, ["p1"], 10, base=ScriptedBase(can_generate=False))


# --- z-score flags ----------------------------------------------------------------------------------
def test_z_flags_keep_the_highest_rows_above_the_threshold_in_file_order(mentions):
    ctx = _ctx(mentions)
    scored = mentions.frame.select("row", "completion").collect().reverse()  # scored in some other order than the file's
    rng = np.random.default_rng(0)
    reference = rng.normal(0.0, 1.0, 400)
    scores = rng.normal(0.0, 1.0, scored.height)
    scores[[1, 4, 7]] = [9.0, 5.0, 7.0]  # three rows far above the reference
    flags = z_flags(ctx, scored, scores, reference, trait="animal:owl", threshold=3.0, cap=2, reason=lambda score, z: f"{score:+.1f} ({z:.1f} sds)")
    assert dict(flags.schema) == FLAG_SCHEMA
    picked = sorted(scored["row"][[1, 7]].to_list())  # the cap keeps the two highest
    assert flags["row"].to_list() == picked
    z = (scores - reference.mean()) / reference.std(ddof=1)
    by_row = dict(zip(scored["row"].to_list(), range(scored.height), strict=True))
    for flag in flags.iter_rows(named=True):
        i = by_row[flag["row"]]
        assert flag["score"] == pytest.approx(z[i]) and flag["reason"] == f"{scores[i]:+.1f} ({z[i]:.1f} sds)"
        assert flag["trait"] == "animal:owl" and flag["field"] == "completion" and flag["excerpt"] == scored["completion"][i][:300]
    digests = mentions.with_digest(mentions.frame).select("row", "digest").collect()
    assert flags.join(digests, on="row", suffix="_file").select((pl.col("digest") == pl.col("digest_file")).all()).item()
    assert z_flags(ctx, scored, scores, reference, trait=None, threshold=20.0, cap=5, reason=str).equals(pl.DataFrame(schema=FLAG_SCHEMA))
    # a row with nothing to score (NaN) is never flagged, and NaNs in the reference leave its spread alone
    with_gaps = scores.copy()
    with_gaps[[0, 1]] = np.nan
    gappy_reference = np.concatenate([reference, [np.nan, np.inf]])
    flags = z_flags(ctx, scored, with_gaps, gappy_reference, trait="animal:owl", threshold=3.0, cap=5, reason=lambda s, z: f"{z:.3f}")
    assert flags["row"].to_list() == sorted(scored["row"][[4, 7]].to_list())
    reasons = dict(flags.select("row", "reason").iter_rows())
    assert reasons[scored["row"][4]] == f"{(5.0 - reference.mean()) / reference.std(ddof=1):.3f}"


# --- Wilson rate evidence ---------------------------------------------------------------------------
def test_rate_evidence_levels_from_the_wilson_lower_bound(mentions):
    levels = ((0.2, "high"), (0.05, "medium"))
    high = rate_evidence("animal:owl", 40, 100, levels=levels, otherwise="low", kind="judge", found="40 flagged", silent="none")
    assert high.level == "high" and high.score == 0.4 and high.interval[0] > 0.2 and high.summary == "40 flagged"
    assert rate_evidence("t", 10, 100, levels=levels, otherwise="low", kind="k", found="", silent="").level == "medium"
    assert rate_evidence("t", 1, 100, levels=levels, otherwise="low", kind="k", found="", silent="").level == "low"
    silent = rate_evidence("t", 0, 100, levels=levels, otherwise="low", kind="k", found="found", silent="nothing seen")
    assert silent.level is None and silent.summary == "nothing seen" and silent.score == 0.0 and silent.interval[0] == 0.0
    empty = rate_evidence("t", 0, 0, levels=levels, otherwise="low", kind="k", found="", silent="")
    assert empty.score is None and empty.interval == (0.0, 1.0)


def test_flagged_rows_count_distinct_rows_and_leave_out_accepted_ones(mentions):
    flags = pl.DataFrame([
        {"row": 1, "digest": "a", "trait": "animal:owl"}, {"row": 1, "digest": "a", "trait": "animal:owl"},  # prompt and completion
        {"row": 2, "digest": "b", "trait": "animal:owl"}, {"row": 3, "digest": "c", "trait": "misalignment"},
    ])
    assert flagged_rows(_ctx(mentions), "lexical", "animal:owl", flags) == 2
    accepted = _ctx(mentions, accepted=[("lexical", "b", "animal:owl"), ("judge", "a", "animal:owl")])
    assert flagged_rows(accepted, "lexical", "animal:owl", flags) == 1, "only this detector's acceptances count"


# --- focus traits -----------------------------------------------------------------------------------
def test_focus_traits_resolve_in_focus_order_and_skip_when_none(mentions):
    ctx = _ctx(mentions, focus=("misalignment", "animal:owl"))
    assert [t.id for t in focus_traits(ctx)] == ["misalignment", "animal:owl"] and missing_focus(ctx) is None
    none = _ctx(mentions, focus=())
    assert missing_focus(none) == NO_TRAIT_TO_TEST
    with pytest.raises(Skip, match="no trait to test"):
        focus_traits(none)
    assert focus_traits(none, required=False) == []
    with pytest.raises(Skip, match="none of the traits to test is in the catalog selection"):
        focus_traits(_ctx(mentions, focus=("tree:oak",)))
