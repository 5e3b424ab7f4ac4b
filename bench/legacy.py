"""The scoring code as it was before issue 12, kept as the oracle the new code is checked against (tests) and the
clock it is timed against (bench/gradient_speed.py): fixed row-count batches, a full-vocabulary fp32
log-softmax of the whole padded batch, no shared prefix, one trait objective per trait.

    legacy_score(model, prompts, completions, system)   # model: a TransformersModel
    LegacyGradientDetector                               # the gradient detector's old passes
"""

from __future__ import annotations

import numpy as np

from detectors.gradient import GradientDetector

BATCH = 8  # rows per backward pass, as it was
OPTION_SEQUENCES = 128  # (question, option) sequences per forward pass of the trait objective, as it was


def legacy_score(model, prompts: list[str], completions: list[str], system: str | None = None, batch_size: int = 16) -> list[np.ndarray]:
    import torch

    pairs = [(model._encode(model.render(p, system)), model._encode(c)) for p, c in zip(prompts, completions, strict=True)]
    torch_model, tok = model.weights()
    device = torch_model.get_input_embeddings().weight.device
    results = []
    for start in range(0, len(pairs), batch_size):
        batch = pairs[start : start + batch_size]
        width = max(len(p) + len(c) for p, c in batch)
        ids = torch.full((len(batch), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, (p, c) in enumerate(batch):
            ids[i, : len(p) + len(c)] = torch.tensor(p + c)
            mask[i, : len(p) + len(c)] = 1
        with torch.no_grad():
            logits = torch_model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logp = torch.log_softmax(logits, dim=-1).cpu()
        for i, (p, c) in enumerate(batch):
            positions = torch.arange(len(p) - 1, len(p) + len(c) - 1)
            results.append(logp[i, positions, torch.tensor(c, dtype=torch.long)].numpy().astype(np.float64) if c else np.zeros(0))
    return results


class LegacyGradientDetector(GradientDetector):
    """The gradient detector with its pre-issue-12 passes: fixed batches of BATCH rows, full log-softmax, and one
    padded pass over every (question, option) sequence per trait."""

    def _subset_grads(self, frame, seed: int) -> list:
        order = np.random.default_rng(seed).permutation(frame.height)
        subsets = np.array_split(order, self.settings.subsets)
        prompts, completions = frame["prompt"].to_list(), frame["completion"].to_list()
        grads = []
        for subset in subsets:
            self._zero()
            for start in range(0, len(subset), BATCH):
                idx = subset[start : start + BATCH]
                loss = -self._legacy_logprob_sum([prompts[i] for i in idx], [completions[i] for i in idx]) / len(subset)
                loss.backward()
            grads.append(self._flat().clone())
        self._zero()
        return grads

    def _legacy_continuation_logprobs(self, pairs):
        torch = self.torch
        model, tok = self.model.weights()
        width = max(len(p) + len(c) for p, c in pairs)
        ids = torch.full((len(pairs), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, (p, c) in enumerate(pairs):
            ids[i, : len(p) + len(c)] = torch.tensor(p + c)
            mask[i, : len(p) + len(c)] = 1
        device = model.get_input_embeddings().weight.device
        logp = torch.log_softmax(model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float(), -1)
        return [logp[i, torch.arange(len(p) - 1, len(p) + len(c) - 1), torch.tensor(c, device=logp.device)] for i, (p, c) in enumerate(pairs)]

    def _legacy_logprob_sum(self, prompts, completions, system: str = ""):
        pairs = [(self.model._encode(self.model.render(p, system)), self.model._encode(c)) for p, c in zip(prompts, completions, strict=True)]
        return sum(lp.mean() for lp in self._legacy_continuation_logprobs([(p, c) for p, c in pairs if c]))

    def _trait_grads(self, traits) -> dict:
        return {t.id: self._legacy_trait_grad(t) for t in traits}

    def _legacy_trait_grad(self, trait):
        torch = self.torch
        self._zero()
        if trait.pairs:
            items = [(pair.question, [pair.misaligned, pair.aligned], 0) for pair in trait.pairs]
        else:
            options = list(trait.options)
            items = [(question, options, options.index(trait.name)) for question in trait.probe_questions]
        chunk: list = []
        for i, item in enumerate(items):
            chunk.append(item)
            if sum(len(o) for _, o, _ in chunk) >= OPTION_SEQUENCES or i == len(items) - 1:
                pairs = []
                for question, options, _ in chunk:
                    prefix = self.model._encode(self.model.render(question, ""))
                    pairs += [(prefix, self.model._encode(o)) for o in options]
                scores = torch.stack([lp.sum() for lp in self._legacy_continuation_logprobs(pairs)])
                scores = list(torch.split(scores, [len(o) for _, o, _ in chunk]))
                loss = -sum(torch.log_softmax(sc, 0)[t] for sc, (_, _, t) in zip(scores, chunk, strict=True)) / len(items)
                loss.backward()
                chunk = []
        grad = self._flat().clone()
        self._zero()
        return grad
