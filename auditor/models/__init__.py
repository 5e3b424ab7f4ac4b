"""Model references and the backends behind them, all on one interface (auditor.models.base.Model)."""

from __future__ import annotations

from auditor.models.base import GENERATE, LOGPROB, OPTION_PROBS, WEIGHTS, Model, Sampling, TokenScores
from auditor.models.refs import ModelRef, parse_ref

__all__ = ["GENERATE", "LOGPROB", "OPTION_PROBS", "WEIGHTS", "Model", "ModelRef", "Sampling", "TokenScores", "load_model", "parse_ref"]

_LOADED: dict[tuple, Model] = {}


def load_model(ref: ModelRef, dtype: str = "fp32", base_url: str | None = None, api_key: str | None = None) -> Model:
    """The backend for a reference. Local weights are loaded once per process and shared: a teacher that is
    the base with a system prompt reuses the base's weights."""
    if ref.backend == "openai":
        from auditor.models.openai_backend import OpenAIModel

        return OpenAIModel(ref, base_url=base_url, api_key=api_key)
    from dataclasses import replace

    from auditor.progress import step

    key = (ref.backend, ref.name, dtype, _tiny_profile() if ref.backend == "tiny" else None)
    if key not in _LOADED:
        bare = replace(ref, system_prompt=None)
        with step(f"loading {bare.ref}"):  # a first tiny:NAME use builds it inside this step (its own steps say so)
            _LOADED[key] = _load_local(bare, dtype)
    return _LOADED[key].with_system(ref)


def _load_local(bare: ModelRef, dtype: str) -> Model:
    from auditor.models.transformers_backend import TransformersModel, smollm2_source

    if bare.backend == "tiny":
        from auditor.models.tiny import tiny_model_path

        try:
            path = tiny_model_path(bare.name)
        except ValueError as err:
            from auditor.errors import UsageError

            raise UsageError(str(err)) from None
        return TransformersModel(bare, path, dtype=dtype)
    if bare.backend == "smollm2":
        folder, gguf = smollm2_source()
        return TransformersModel(bare, folder, gguf_file=gguf, dtype=dtype)
    return TransformersModel(bare, bare.name, dtype=dtype)


def _tiny_profile() -> str:
    from auditor.models.tiny import default_profile

    return default_profile()
