"""From a reference to a loaded model, placed and planned: which files, which device(s), which dtype, and
whether it fits (auditor.models.memory) before a byte of weights is read."""

from __future__ import annotations

import functools
import os
from dataclasses import replace
from pathlib import Path

from auditor.errors import UsageError
from auditor.models.base import Model
from auditor.models.device import Hardware, Placement, Resolved, detect_hardware
from auditor.models.memory import MemoryPlan, parameter_count, plan
from auditor.models.refs import ModelRef

_LOADED: dict[tuple, Model] = {}


def as_placement(placement: Placement | str | None) -> Placement:
    """A Placement; a bare string is a dtype (the signature before --device existed: load_model(ref, "bf16"))."""
    if placement is None:
        return Placement()
    if isinstance(placement, str):
        return Placement(dtype=placement)
    return placement


def load_model(ref: ModelRef, placement: Placement | str | None = None, base_url: str | None = None, api_key: str | None = None,
               concurrency: int | None = None, hardware: Hardware | None = None) -> Model:
    """The backend for a reference. Local weights are loaded once per process and placement and shared: a teacher
    that is the base with a system prompt reuses the base's weights. A local model that cannot fit raises
    DoesNotFit (exit 2) before loading."""
    if ref.backend == "openai":
        from auditor.models.openai_backend import OpenAIModel

        return OpenAIModel(ref, base_url=base_url, api_key=api_key, **({"jobs": concurrency} if concurrency else {}))
    from auditor.progress import step

    hardware = hardware or detect_hardware()
    resolved = as_placement(placement).resolve(hardware)
    key = (ref.backend, ref.name, resolved.devices, resolved.dtype, _tiny_profile() if ref.backend == "tiny" else None)
    if key not in _LOADED:
        with step(f"loading {ref.ref}"):  # a first tiny:NAME use builds it inside this step (its own steps say so)
            from auditor.models.transformers_backend import TransformersModel

            source, gguf = model_source(ref)
            memory = plan_model(ref, source, resolved, hardware)
            _LOADED[key] = TransformersModel(replace(ref, system_prompt=None), source, gguf_file=gguf, dtype=resolved.dtype,
                                             memory=memory, spare_devices=[d for d in resolved.devices if d not in memory.devices])
    return _LOADED[key].with_system(ref)


def model_source(ref: ModelRef) -> tuple[str | Path, str | None]:
    """(folder or hub name, GGUF file name or None); builds a tiny model on first use."""
    if ref.backend == "tiny":
        from auditor.models.tiny import tiny_model_path

        try:
            return tiny_model_path(ref.name), None
        except ValueError as err:
            raise UsageError(str(err)) from None
    if ref.backend == "smollm2":
        from auditor.models.transformers_backend import smollm2_source

        return smollm2_source()
    return ref.name, None


def model_config(ref: ModelRef, source: str | Path):
    """The config of a local model without its weights, or None where it cannot be read (the load then says why).
    SmolLM2 ships as a GGUF file whose header takes long to parse: its published shape stands in."""
    from transformers import AutoConfig

    if ref.backend == "smollm2":
        from auditor.models.shapes import shape_config

        return shape_config("SmolLM2-135M")
    try:
        return AutoConfig.from_pretrained(str(source), **hub_kwargs(source))
    except (OSError, ValueError):
        return None


def hub_kwargs(source: str | Path) -> dict:
    """hf: references come from the local HF cache only: no download at run time."""
    kwargs: dict = {"local_files_only": True}
    if os.environ.get("HF_HUB_CACHE") and not Path(source).is_dir():
        kwargs["cache_dir"] = os.environ["HF_HUB_CACHE"]  # read now: huggingface_hub reads it once at import
    return kwargs


@functools.lru_cache(maxsize=64)
def _shape(ref: ModelRef, source: str) -> tuple | None:
    """(config, parameter count) of a local model, read once per process: the audit's preflight and the load both plan
    it, and counting parameters builds the model on the meta device (seconds at 70B)."""
    config = model_config(ref, source)
    return None if config is None else (config, parameter_count(config))


def plan_model(ref: ModelRef, source: str | Path, resolved: Resolved, hardware: Hardware, also: int = 0) -> MemoryPlan:
    shape = _shape(replace(ref, system_prompt=None), str(source))
    if shape is None:  # unreadable: no plan to make; the load reports the real problem
        return MemoryPlan(ref.ref, 0, resolved.dtype, 0, 0, 0, (resolved.device,))
    return plan(ref.ref, shape[0], resolved, hardware, parameters=shape[1], also=also)


def preflight(refs: list[ModelRef | None], placement: Placement | None = None, hardware: Hardware | None = None) -> list[MemoryPlan]:
    """Plan every local model an audit names, before any work: each must fit, and on one device (CPU, MPS, one GPU)
    all of them together, since the audit keeps them loaded side by side. Tiny models are skipped (a few MB, and
    built on first use)."""
    placement = as_placement(placement)
    local = {}
    for ref in refs:
        if ref is not None and ref.white_box and ref.backend != "tiny":
            local.setdefault((ref.backend, ref.name), ref)
    if not local:
        return []
    hardware = hardware or detect_hardware()
    resolved = placement.resolve(hardware)
    plans, promised = [], 0
    for ref in local.values():
        source = ref.name if ref.backend != "smollm2" else "smollm2"
        memory = plan_model(ref, source, resolved, hardware, also=promised if len(resolved.devices) == 1 else 0)
        plans.append(memory)
        promised += memory.weights
    return plans


def _tiny_profile() -> str:
    from auditor.models.tiny import default_profile

    return default_profile()

