import pytest

from auditor.result import Level
from auditor.risk import decide, gate
from detectors.base import TraitEvidence


def ev(level, detector="lexical", lo=0.1, hi=0.2):
    return TraitEvidence("animal:owl", (lo + hi) / 2, (lo, hi), "s", level, detector=detector)


def test_content_silence_is_inconclusive_never_clean():
    verdict = decide([ev(None)], hidden_detectors=set())
    assert verdict.verdict == "inconclusive" and not verdict.hidden_transfer_checked
    assert decide([], set()).verdict == "inconclusive"


def test_content_can_raise_risk_and_highest_level_wins():
    verdict = decide([ev("medium"), ev("high", lo=0.01), ev("low")], set())
    assert verdict.verdict == "high" and verdict.interval == (0.01, 0.2)


def test_clean_needs_a_hidden_transfer_detector_that_says_clean():
    assert decide([ev(None), ev("clean", detector="gradient")], {"gradient"}).verdict == "clean"
    assert decide([ev(None), ev(None, detector="gradient")], {"gradient"}).verdict == "inconclusive"
    # a clean from a content detector alone clears nothing
    assert decide([ev("clean")], set()).verdict == "inconclusive"


@pytest.mark.parametrize(
    "fail_on, verdicts, failed",
    [
        ("high", ["inconclusive", "medium"], False),
        ("high", ["high"], True),
        ("medium", ["medium"], True),
        ("low", ["inconclusive"], False),
        ("low", ["low"], True),
        ("inconclusive", ["clean", "inconclusive"], True),
        ("inconclusive", ["clean"], False),
        ("never", ["high"], False),
    ],
)
def test_gate_levels(fail_on, verdicts, failed):
    result, failing = gate({f"t{i}": v for i, v in enumerate(verdicts)}, fail_on)
    assert result is failed
    assert all(Level(verdicts[int(t[1:])]) >= fail_on for t in failing)


def test_level_carries_the_verdict_order_and_the_gate():
    assert sorted(["high", "clean", "low", "inconclusive", "medium"], key=Level) == ["clean", "inconclusive", "low", "medium", "high"]
    assert Level.LOW < Level.MEDIUM < Level.HIGH and Level.INCONCLUSIVE > Level.CLEAN
    assert Level.HIGH > "low" and not Level.LOW > "high"  # the gate order, not the alphabet ("high" < "low" as strings)
    assert [lvl.value for lvl in Level if lvl.raises_risk] == ["low", "medium", "high"]
    assert Level.INCONCLUSIVE.fails("inconclusive") and not Level.CLEAN.fails("inconclusive")
    assert not Level.HIGH.fails("never") and Level.parse("never") is None


def test_decide_returns_levels():
    verdict = decide([ev("medium")], set())
    assert verdict.verdict is Level.MEDIUM and verdict.verdict == "medium"


def test_a_clean_verdict_never_claims_no_transfer_when_its_interval_excludes_zero():
    # a tiny shift whose interval lies above 0 but below the negligible shift is clean: the words must fit that
    tiny = TraitEvidence("tree:birch", 0.000137, (1.13e-5, 0.000319), "net shift +0.000137", "clean", detector="probe")
    verdict = decide([tiny], {"probe"}, {"probe"})
    assert verdict.verdict == "clean" and "no transfer" not in verdict.rationale and "matters" in verdict.rationale
