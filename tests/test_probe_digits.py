"""The digits analogue of the paper's MNIST experiment, reduced: a student trained only on a teacher's
auxiliary logits of noise learns digits from the teacher's own initialisation, not from another one.
The full run is `python bench/digits_subliminal.py` (5 seeds, 3000 steps)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from digits_subliminal import Settings, run  # noqa: E402


def test_same_init_student_learns_digits_and_other_init_does_not():
    result = run(Settings(seeds=3, steps=500, lr=2e-3, batch=64))
    assert min(result["teacher_accuracy"]) > 0.85
    assert result["same_init_mean"] - result["other_init_mean"] > 0.08
    assert result["other_init_mean"] < 0.2, "another initialisation stays near chance (0.10)"
    shift = result["net_shift"]
    assert shift["seeds"] == 3 and shift["questions"] == result["test_items"]
    assert shift["interval"][0] > 0 and shift["p_value"] < 0.05
