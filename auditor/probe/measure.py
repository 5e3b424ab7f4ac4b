"""Measuring a trait on a model: exact option probabilities on the trait's probe questions (white-box), or
the share of sampled answers that name the trait (black-box)."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np

EVAL_MAX_TOKENS = 8


def _groups(traits):
    groups: dict[tuple, list] = {}
    for trait in traits:
        key = ("pairs", trait.id) if trait.pairs else (trait.probe_questions, trait.options)
        groups.setdefault(key, []).append(trait)
    return groups


def measure_exact(model, traits) -> dict[str, np.ndarray]:
    """Per trait, P(trait | question) for every probe question, from exact option probabilities."""
    from auditor.profile import exact_matrix

    out = {}
    for key, members in _groups(traits).items():
        if key[0] == "pairs":
            trait = members[0]
            out[trait.id] = np.array([model.option_probs(p.question, [p.aligned, p.misaligned], system="")[1] for p in trait.pairs])
            continue
        questions, options = key
        matrix = exact_matrix(model.with_system(replace(model.ref, system_prompt=None)), questions, options)
        for trait in members:
            out[trait.id] = matrix[:, options.index(trait.name)]
    return out


def measure_sampled(model, traits, samples: int, seed: int) -> dict[str, np.ndarray]:
    """Per trait, the share of `samples` answers per probe question that name the trait (temperature 1)."""
    from auditor.models import Sampling

    out = {}
    for key, members in _groups(traits).items():
        if key[0] == "pairs":
            continue  # free-form answers need a judge to score: not measured here
        answers = model.generate(list(key[0]), Sampling(n=samples, temperature=1.0, max_new_tokens=EVAL_MAX_TOKENS, seed=seed), system="")
        for trait in members:
            pattern = re.compile(trait.term_regex())
            out[trait.id] = np.array([np.mean([bool(pattern.search(a)) for a in per_question]) for per_question in answers])
    return out

