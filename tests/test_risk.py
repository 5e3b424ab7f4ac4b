import pytest

from auditor.risk import GATE_ORDER, decide, gate
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
    assert all(GATE_ORDER[verdicts[int(t[1:])]] >= GATE_ORDER.get(fail_on, 0) for t in failing)
