"""One small interface every model backend implements; detectors ask for capabilities, not backends.

Capabilities:
    generate      sample n completions per prompt (temperature, seed, system prompt, chat template)
    logprob       log p(completion | prompt) summed over the completion's tokens (and per token)
    option_probs  exact probabilities over a closed set of answer options for one question
    weights       a handle to the torch model and tokenizer, for gradients and fine-tuning
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from auditor.models.refs import ModelRef

GENERATE, LOGPROB, OPTION_PROBS, WEIGHTS = "generate", "logprob", "option_probs", "weights"


@dataclass(frozen=True)
class Sampling:
    n: int = 1
    temperature: float = 1.0
    max_new_tokens: int = 48
    seed: int = 0
    top_p: float = 1.0

    def key(self) -> dict:
        return {"n": self.n, "temperature": self.temperature, "max_new_tokens": self.max_new_tokens, "seed": self.seed, "top_p": self.top_p}


DEFAULT_SAMPLING = Sampling()


@dataclass
class TokenScores:
    """Per-token log-probabilities of one completion given its prompt."""

    tokens: list[str]
    logprobs: list[float]

    @property
    def total(self) -> float:
        return float(np.sum(self.logprobs))


class Model(ABC):
    capabilities: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, ref: ModelRef):
        self.ref = ref

    def supports(self, capability: str) -> bool:
        return capability in self.capabilities

    def _system(self, system: str | None) -> str | None:
        return self.ref.system_prompt if system is None else (system or None)

    @abstractmethod
    def generate(self, prompts: list[str], sampling: Sampling = DEFAULT_SAMPLING, system: str | None = None) -> list[list[str]]:
        """n samples per prompt. `system` None means the reference's own system prompt; "" means none."""

    def score(self, prompts: list[str], completions: list[str], system: str | None = None) -> list[TokenScores]:
        raise NotImplementedError(f"{self.ref.ref} cannot score log-probabilities")

    def logprob(self, prompts: list[str], completions: list[str], system: str | None = None) -> np.ndarray:
        return np.array([s.total for s in self.score(prompts, completions, system)])

    def option_logprobs(self, question: str, options: list[str], system: str | None = None) -> np.ndarray:
        """log p(option | question) for each option (full sequences; backends may share the question's prefix)."""
        return self.logprob([question] * len(options), list(options), system)

    def option_probs(self, question: str, options: list[str], system: str | None = None) -> np.ndarray:
        """P(option | question), normalised over the options, from full-sequence log-probabilities."""
        scores = self.option_logprobs(question, options, system)
        weights = np.exp(scores - scores.max())
        return weights / weights.sum()

    def weights(self) -> tuple[Any, Any]:
        raise NotImplementedError(f"{self.ref.ref} exposes no weights")

    def with_system(self, ref: ModelRef) -> Model:
        """The same weights under another reference (e.g. the base with a teacher's system prompt)."""
        if ref == self.ref:
            return self
        import copy

        twin = copy.copy(self)  # shallow: shares the loaded weights and tokenizer
        twin.ref = ref
        return twin

    def describe(self) -> dict:
        return {**self.ref.describe(), "capabilities": sorted(self.capabilities)}
