"""Parse a model reference: openai:MODEL, hf:ORG/NAME or a local folder, smollm2, tiny:NAME."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from auditor.errors import UsageError

_FORMS = "openai:MODEL, hf:ORG/NAME, a local model folder, smollm2 or tiny:NAME"


@dataclass(frozen=True)
class ModelRef:
    ref: str
    backend: str  # openai | transformers | smollm2 | tiny
    name: str
    system_prompt: str | None = None

    @property
    def white_box(self) -> bool:
        """Weights and exact log-probabilities are at hand (everything but an API)."""
        return self.backend != "openai"

    def describe(self) -> dict:
        return {"ref": self.ref, "backend": self.backend, "system_prompt": self.system_prompt}


def parse_ref(ref: str | None, system_prompt: str | None = None) -> ModelRef | None:
    if ref is None:
        return None
    ref = ref.strip()
    prefix, sep, rest = ref.partition(":")
    if sep and prefix == "openai":
        if not rest:
            raise UsageError(f"model reference '{ref}' names no model; use openai:MODEL")
        return ModelRef(ref, "openai", rest, system_prompt)
    if sep and prefix == "hf":
        if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", rest):
            raise UsageError(f"model reference '{ref}' is not hf:ORG/NAME")
        return ModelRef(ref, "transformers", rest, system_prompt)
    if sep and prefix == "tiny":
        if not re.fullmatch(r"[a-z][a-z0-9_-]*", rest):
            raise UsageError(f"model reference '{ref}' is not tiny:NAME (lowercase letters, digits, - or _)")
        return ModelRef(ref, "tiny", rest, system_prompt)
    if ref == "smollm2":
        return ModelRef(ref, "smollm2", "SmolLM2-135M-Instruct", system_prompt)
    if Path(ref).is_dir():
        return ModelRef(ref, "transformers", str(Path(ref).resolve()), system_prompt)
    raise UsageError(f"unknown model reference '{ref}': expected {_FORMS}")
