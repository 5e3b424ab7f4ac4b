"""Per-row projections on a persona vector, and the base's own answers they are measured against.

A row is read as a student would train on it: its prompt in the chat template, no system prompt, its
completion's tokens. Its projection is the mean residual activation over those tokens at the vector's
layer, dotted with the unit vector. The projection *difference* subtracts what the base itself does on
the same prompt: the projection of the base's own answer ("diff" mode; the answer is generated once and
cached on disk), or the projection at the last prompt token, where the base's answer would start
("prompt" mode; no generation).
"""

from __future__ import annotations

import numpy as np

from auditor.persona.activations import response_means

BASE_ANSWER_TOKENS = 48  # as the likelihood detector's base answers


def projections(model, vector, prompts: list[str], completions: list[str]) -> np.ndarray:
    """Each row's response activations at the vector's layer, projected on the unit vector."""
    acts = response_means(model, prompts, completions, "", [vector.layer])[:, 0]
    return acts @ vector.unit()


def base_answers(model, prompts: list[str], seed: int, identity: str, max_new_tokens: int = BASE_ANSWER_TOKENS) -> tuple[list[str], dict]:
    """The base's own answer to each prompt (no system prompt, temperature 1, seeded), from the on-disk call
    cache where it is there; only the missing prompts are generated. Returns (answers, {"cached", "generated"})."""
    from auditor.models import Sampling
    from auditor.models.cache import CallCache

    cache = CallCache()
    sampling = {"temperature": 1.0, "max_new_tokens": max_new_tokens, "seed": seed}
    keys = [CallCache.key("persona-base-answer", base=identity, prompt=p, **sampling) for p in prompts]
    answers: list[str | None] = [cache.get("persona", k) for k in keys]
    missing = [i for i, a in enumerate(answers) if a is None]
    if missing:
        # a fresh cache always generates the same batches, so a run is reproducible; answers found in the cache
        # were sampled the same way, in whatever batch first needed them
        todo = [prompts[i] for i in missing]
        batch_seed = int(keys[missing[0]][:8], 16) % 1_000_003
        fresh = model.generate(todo, Sampling(n=1, temperature=1.0, max_new_tokens=max_new_tokens, seed=batch_seed), system="")
        for i, answer in zip(missing, fresh, strict=True):
            answers[i] = answer[0]
            cache.put("persona", keys[i], answer[0])
    return [a or "" for a in answers], {"cached": len(prompts) - len(missing), "generated": len(missing)}
