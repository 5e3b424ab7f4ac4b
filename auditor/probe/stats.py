"""The probe's statistics: a student's trait shift net of a control student, with a bootstrap interval
over probe questions *and* training seeds, and a one-sided p-value.

Input is two seeds x questions matrices of the trait measure (P(trait) per probe question, or the
share of sampled answers naming it): one for students trained on the audited data, one for control
students trained on control data with the same seeds and steps. The net shift of a cell is
student - control (the "before" measure of the base cancels, since both start from it).

The two sources of noise are resampled independently: seeds (training randomness: data order,
adapter init) and questions (which paraphrases happen to be asked). With one seed the interval
only covers the questions, and says so (`seeds_resampled` is False).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

RESAMPLES = 4000
CONFIDENCE = 0.95
# minimum detectable shift = (z(0.975) + z(0.80)) x SE: the true shift that the interval's lower bound (two-sided 95%,
# i.e. one-sided 2.5%, the rule that raises a level) clears with 80% power; SE is the bootstrap's spread over seeds and questions
MDS_FACTOR = 1.959964 + 0.841621


@dataclass
class NetShift:
    net: float  # mean over seeds and questions of student - control
    interval: tuple[float, float]
    p_value: float  # one-sided (student above control), null-centred bootstrap
    seeds: int
    questions: int
    per_seed: list[float]  # mean net shift per seed
    seeds_resampled: bool
    se: float = 0.0  # standard error (the bootstrap draws' spread)

    @property
    def min_detectable(self) -> float:
        """The smallest true shift this probe would detect with 80% power (see MDS_FACTOR)."""
        return MDS_FACTOR * self.se

    @property
    def significantly_negative(self) -> bool:
        return self.interval[1] < 0

    def as_dict(self) -> dict:
        row = asdict(self)
        row["interval"] = list(self.interval)
        row["min_detectable_shift"] = self.min_detectable
        return row


def net_shift(student: np.ndarray, control: np.ndarray, seed: int = 0, resamples: int = RESAMPLES,
              confidence: float = CONFIDENCE) -> NetShift:
    """`student`, `control`: arrays of shape (seeds, questions), paired by seed and question."""
    student, control = np.atleast_2d(np.asarray(student, float)), np.atleast_2d(np.asarray(control, float))
    if student.shape != control.shape:
        raise ValueError(f"student {student.shape} and control {control.shape} must pair seed by seed and question by question")
    diff = student - control
    seeds, questions = diff.shape
    rng = np.random.default_rng(seed)
    seed_pick = rng.integers(0, seeds, size=(resamples, seeds)) if seeds > 1 else np.zeros((resamples, 1), int)
    question_pick = rng.integers(0, questions, size=(resamples, questions))
    # mean over the resampled seeds of the mean over the resampled questions
    by_seed_question = diff[seed_pick[:, :, None], question_pick[:, None, :]]
    draws = by_seed_question.mean(axis=(1, 2))
    point = float(diff.mean())
    alpha = (1 - confidence) / 2
    low, high = np.quantile(draws, [alpha, 1 - alpha])
    # null-centred bootstrap: how often a replicate centred on zero reaches the observed shift
    p_value = float((1 + np.sum(draws - point >= point)) / (resamples + 1))
    return NetShift(point, (float(low), float(high)), min(p_value, 1.0), seeds, questions,
                    [float(v) for v in diff.mean(axis=1)], seeds > 1, float(draws.std(ddof=1)))
