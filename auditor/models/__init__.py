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

    from auditor.models.transformers_backend import TransformersModel, smollm2_source

    key = (ref.backend, ref.name, dtype, _tiny_profile() if ref.backend == "tiny" else None)
    if key not in _LOADED:
        bare = replace(ref, system_prompt=None)
        if ref.backend == "tiny":
            from auditor.models.tiny import tiny_model_path

            try:
                path = tiny_model_path(ref.name, log=_build_log(ref.name))
            except ValueError as err:
                from auditor.errors import UsageError

                raise UsageError(str(err)) from None
            _LOADED[key] = TransformersModel(bare, path, dtype=dtype)
        elif ref.backend == "smollm2":
            folder, gguf = smollm2_source()
            _LOADED[key] = TransformersModel(bare, folder, gguf_file=gguf, dtype=dtype)
        else:
            _LOADED[key] = TransformersModel(bare, ref.name, dtype=dtype)
    return _LOADED[key].with_system(ref)


def _tiny_profile() -> str:
    from auditor.models.tiny import default_profile

    return default_profile()


def _build_log(name: str):
    """Progress lines for a first-use tiny build (minutes on a laptop), on stderr so reports and JSON on stdout stay clean."""
    import sys

    def log(message: str) -> None:
        print(f"building tiny:{name} (first use, cached afterwards): {message}", file=sys.stderr, flush=True)

    return log
