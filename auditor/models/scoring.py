"""Log-probabilities of given tokens at the hardware's pace.

- Batches are built by a token budget over rows sorted by length (longest first: a batch that does not fit
  fails at once, and rows of like length waste little padding), not by a fixed row count.
- Only the positions that predict a scored token go through the output head, in chunks, each reduced to
  gather - logsumexp in fp32: never a [batch, length, vocab] fp32 tensor.
- A token prefix every row shares (the chat template and system prompt) runs once; its key/value cache is
  repeated over each batch.
- Several replicas (one per GPU) take the batches between them, each in its own thread.

`CausalLM` wraps a transformers causal LM: the decoder and the head, checked once against the model's own
logits (models that post-process logits in ways this does not know fall back to the full forward).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np

LOGIT_CHUNK = 1024  # positions per head chunk (auditor/models/memory.py plans the working set for it)
MIN_SHARED_PREFIX = 8  # tokens: a shorter common prefix is not worth a cache


def token_batches(lengths: list[int], budget: int) -> list[list[int]]:
    """Row indices grouped so that rows x longest row <= budget, longest rows first; a row longer than the budget
    goes alone."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    width = 0
    for i in order:
        if current and (len(current) + 1) * width > budget:
            batches.append(current)
            current = []
        if not current:
            width = lengths[i]
        current.append(i)
    if current:
        batches.append(current)
    return batches


def assign_shards(costs: list[int], workers: int) -> list[list[int]]:
    """Batch indices per worker, balancing the summed cost (largest batch to the least-loaded worker)."""
    shards: list[list[int]] = [[] for _ in range(workers)]
    load = [0] * workers
    for b in sorted(range(len(costs)), key=lambda b: (-costs[b], b)):
        w = min(range(workers), key=lambda w: (load[w], w))
        shards[w].append(b)
        load[w] += costs[b]
    return [sorted(s) for s in shards]


def common_prefix(sequences: list[list[int]]) -> int:
    if not sequences:
        return 0
    first = sequences[0]
    n = min(len(s) for s in sequences)
    for s in sequences[1:]:
        k = 0
        while k < n and s[k] == first[k]:
            k += 1
        n = k
    return n


class CausalLM:
    """A causal LM split into decoder and head, so that only the needed positions reach the head."""

    def __init__(self, model):
        import torch

        self.torch = torch
        self.model = model
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.softcap = getattr(config, "final_logit_softcapping", None)
        self.scale = getattr(config, "logit_scale", None) or getattr(config, "logits_scaling", None)
        self.split = self._check_split()

    @property
    def input_device(self):
        return self.model.get_input_embeddings().weight.device

    def _logits(self, hidden):
        logits = self.model.get_output_embeddings()(hidden).float()
        if self.scale and hasattr(self.model.config, "logit_scale"):
            logits = logits * self.scale
        elif self.scale:
            logits = logits / self.scale
        if self.softcap:
            logits = self.torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def _check_split(self) -> bool:
        """Whether decoder + head reproduce the model's logits (checked once on a few tokens)."""
        torch = self.torch
        try:
            decoder, head = self.model.get_decoder(), self.model.get_output_embeddings()
            if decoder is self.model or head is None:
                return False
            config = self.model.config.get_text_config() if hasattr(self.model.config, "get_text_config") else self.model.config
            ids = (torch.arange(1, 7, device=self.input_device) % max(getattr(config, "vocab_size", 7) or 7, 2)).unsqueeze(0)
            with torch.inference_mode():
                full = self.model(input_ids=ids).logits.float()
                parts = self._logits(decoder(input_ids=ids).last_hidden_state)
            return bool(torch.allclose(full, parts, atol=1e-3, rtol=1e-3))
        except Exception:  # any surprise in an unusual architecture: the plain path is always right
            return False

    def hidden(self, ids, mask, cache=None):
        """Final hidden states [B, L, H] (or the logits when the split is off) and the cache."""
        kwargs = {"input_ids": ids, "attention_mask": mask}
        if cache is not None:
            kwargs["use_cache"] = True
        target = self.model.get_decoder() if self.split else self.model
        out = _call_with_cache(target, kwargs, cache)
        return (out.last_hidden_state if self.split else out.logits), _cache_of(out)

    def token_logprobs(self, states, targets):
        """log p(target) for each row of `states` [N, H] (hidden states, or logits without the split): chunked head,
        fp32 gather - logsumexp."""
        torch = self.torch
        out = []
        for start in range(0, states.shape[0], LOGIT_CHUNK):
            chunk = states[start : start + LOGIT_CHUNK]
            logits = self._logits(chunk) if self.split else chunk.float()
            picked = logits.gather(-1, targets[start : start + LOGIT_CHUNK, None]).squeeze(-1)
            out.append(picked - torch.logsumexp(logits, -1))
        return torch.cat(out) if out else torch.zeros(0, device=states.device)


def _call_with_cache(module, kwargs: dict, cache):
    if cache is None:
        return module(**kwargs)
    try:
        return module(**kwargs, cache=cache)
    except TypeError:  # transformers before the `cache` rename
        return module(**kwargs, past_key_values=cache)


def _cache_of(out):
    return getattr(out, "cache", None) or getattr(out, "past_key_values", None)


def fold_runs(sequences: list[list[int]]) -> tuple[list[list[int]], list[int]]:
    """The distinct token sequences to run, each sequence that is a prefix of another folded into it (causal
    attention: its positions are read from the longer run): (runs, run index of each sequence). In sorted order a
    sequence that is a prefix of any other is a prefix of the one right after it."""
    order = sorted(range(len(sequences)), key=lambda i: sequences[i])
    runs: list[list[int]] = []
    run_of = [0] * len(sequences)
    following: list[int] | None = None
    for i in reversed(order):
        seq = sequences[i]
        if following is not None and len(seq) <= len(following) and following[: len(seq)] == seq:
            run_of[i] = len(runs) - 1
        else:
            runs.append(seq)
            run_of[i] = len(runs) - 1
            following = seq
    return runs, run_of


@dataclass
class Prepared:
    """What to run for (prompt ids, scored ids) pairs: a prefix every pair shares (run once, its cache repeated),
    then distinct runs; a pair reads len(scored) positions of its run from `starts`."""

    prefix: list[int]
    runs: list[list[int]]
    run_of: list[int]
    starts: list[int]
    targets: list[list[int]]

    @cached_property
    def pairs_of_run(self) -> list[list[int]]:
        """The pairs each run scores (computed once: every batch of a scoring pass reads it)."""
        out: list[list[int]] = [[] for _ in self.runs]
        for pair, run in enumerate(self.run_of):
            out[run].append(pair)
        return out


def prepare(pairs: list[tuple[list[int], list[int]]], share_prefix: bool) -> Prepared:
    """The last scored token is never an input, so a pair runs prompt + scored[:-1]; options after one question fold
    into one run. The shared prefix stops one token short of the shortest prompt, so every prediction is made inside
    the runs."""
    shared = 0
    if share_prefix and len(pairs) > 1:
        shared = min(common_prefix([p for p, _ in pairs]), min(len(p) for p, _ in pairs) - 1)
        shared = shared if shared >= MIN_SHARED_PREFIX else 0
    prefix = list(pairs[0][0][:shared]) if shared else []
    runs, run_of = fold_runs([(list(p) + list(c[:-1]))[shared:] for p, c in pairs])
    return Prepared(prefix, runs, run_of, [len(p) - shared - 1 for p, _ in pairs], [list(c) for _, c in pairs])


class Scorer:
    """Token log-probabilities over many rows, on one model or several replicas (one per GPU)."""

    def __init__(self, replicas: list, pad_id: int, budget: int, grad_budget: int | None = None):
        self.lms = [r if isinstance(r, CausalLM) else CausalLM(r) for r in replicas]
        self.pad_id = pad_id
        self.budget = budget
        self.grad_budget = grad_budget or budget  # a batch that keeps its graph for backward holds every layer's activations
        self.tokens_run = 0  # tokens that went through the model (after prefix sharing and folding), for the throughput bench
        self._count = threading.Lock()

    def score(self, pairs: list[tuple[list[int], list[int]]], share_prefix: bool = True, progress=None) -> list[np.ndarray]:
        """Per pair, the log-probabilities of its scored tokens given everything before them. `progress(rows)` hears
        of each batch's rows as they finish (a progress display; called from the replicas' threads)."""
        torch = self.lms[0].torch
        results: list[np.ndarray] = [np.zeros(0)] * len(pairs)
        todo = [i for i, (_, c) in enumerate(pairs) if c]
        if progress is not None and len(todo) < len(pairs):
            progress(len(pairs) - len(todo))  # empty completions: nothing to score
        if not todo:
            return results
        prep = prepare([pairs[i] for i in todo], share_prefix)
        batches = token_batches([len(prep.prefix) + len(r) for r in prep.runs], self.budget)
        shards = assign_shards([len(b) * (len(prep.prefix) + len(prep.runs[b[0]])) for b in batches], len(self.lms))

        def work(lm: CausalLM, mine: list[int]):
            with torch.inference_mode():
                head = self._prefix_cache(lm, prep.prefix)
                for b in mine:
                    done = self._batch(lm, prep, batches[b], head)
                    for pair, values in done:
                        results[todo[pair]] = values.cpu().numpy().astype(np.float64)
                    if progress is not None:
                        progress(len(done))

        jobs = [(lm, s) for lm, s in zip(self.lms, shards, strict=True) if s]
        if len(jobs) == 1:
            work(*jobs[0])
        else:
            run_side_by_side([lambda lm=lm, s=s: work(lm, s) for lm, s in jobs])
        return results

    def with_grad(self, pairs: list[tuple[list[int], list[int]]]) -> list:
        """One tensor of scored-token log-probabilities per pair, with the autograd graph attached (every batch's
        graph is kept until the caller's backward: chunk the pairs to bound memory)."""
        out: list = [None] * len(pairs)
        for indices, values in self.iter_with_grad(pairs):
            for i, v in zip(indices, values, strict=True):
                out[i] = v
        return out

    def iter_with_grad(self, pairs: list[tuple[list[int], list[int]]], budget: int | None = None) -> Iterator[tuple[list[int], list]]:
        """For gradients: per token-budget batch (`budget`, else the plan's), (pair indices, one log-probability tensor
        per pair) with the graph attached. A caller that runs backward per batch holds one batch's graph at a time."""
        lm = self.lms[0]
        todo = [i for i, (_, c) in enumerate(pairs) if c]
        if not todo:
            return
        prep = prepare([pairs[i] for i in todo], share_prefix=False)
        for rows in token_batches([len(r) for r in prep.runs], budget or self.grad_budget):
            got = self._batch(lm, prep, rows, None)
            yield [todo[pair] for pair, _ in got], [values for _, values in got]

    def _counted(self, tokens: int) -> None:
        with self._count:
            self.tokens_run += tokens

    def _prefix_cache(self, lm: CausalLM, prefix: list[int]):
        if not prefix:
            return None
        torch = lm.torch
        ids = torch.tensor([prefix], device=lm.input_device)
        _, cache = lm.hidden(ids, torch.ones_like(ids), cache=_new_cache(lm))
        self._counted(len(prefix))
        return cache

    def _batch(self, lm: CausalLM, prep: Prepared, runs: list[int], head_cache) -> list[tuple[int, object]]:
        """Run a batch of runs (right-padded, after the shared prefix's cache when there is one) and read every pair
        of those runs: [(pair index in prep, log-probability tensor)]."""
        torch = lm.torch
        device = lm.input_device
        width = max(len(prep.runs[r]) for r in runs)
        shared = len(prep.prefix)
        ids = torch.full((len(runs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(runs), shared + width), dtype=torch.long)
        mask[:, :shared] = 1
        for i, r in enumerate(runs):
            ids[i, : len(prep.runs[r])] = torch.tensor(prep.runs[r], dtype=torch.long)
            mask[i, shared : shared + len(prep.runs[r])] = 1
        cache = None
        if head_cache is not None:
            cache = copy.deepcopy(head_cache)
            cache.batch_repeat_interleave(len(runs))
        states, _ = lm.hidden(ids.to(device), mask.to(device), cache=cache)
        self._counted(int(mask[:, shared:].sum()))
        by_run = prep.pairs_of_run
        read = [(i, pair) for i, r in enumerate(runs) for pair in by_run[r]]
        index_rows = torch.cat([torch.full((len(prep.targets[p]),), i, dtype=torch.long) for i, p in read])
        index_pos = torch.cat([torch.arange(prep.starts[p], prep.starts[p] + len(prep.targets[p])) for _, p in read])
        targets = torch.tensor([t for _, p in read for t in prep.targets[p]], dtype=torch.long, device=states.device)
        values = lm.token_logprobs(states[index_rows.to(states.device), index_pos.to(states.device)], targets)
        pieces = torch.split(values, [len(prep.targets[p]) for _, p in read])
        return [(p, piece) for (_, p), piece in zip(read, pieces, strict=True)]


def _new_cache(lm: CausalLM):
    from transformers import DynamicCache

    try:
        return DynamicCache(config=lm.model.config)
    except TypeError:  # transformers before caches took the config
        return DynamicCache()


def side_by_side(tasks: list, devices: list[str]) -> list:
    """Independent model work (the teacher's and the base's scoring, say) at once when each task has a device of its own
    that is not the CPU (GPUs, or "remote" endpoints); one after the other otherwise, since CPU threads would only
    fight over the same cores."""
    apart = len(set(devices)) == len(devices) and all(d != "cpu" and d != "mps" for d in devices)
    if len(tasks) > 1 and apart:
        return run_side_by_side(tasks)
    return [task() for task in tasks]


def device_of(model) -> str:
    """Where a model's work runs: its input device for local weights, "remote" for an endpoint."""
    return getattr(model, "device", None) or "remote"


def run_side_by_side(tasks: list) -> list:
    """Run independent callables in threads (torch releases the GIL inside kernels, so work on different GPUs
    overlaps); the first error is raised after all have stopped."""
    results: list = [None] * len(tasks)
    errors: list[BaseException] = []

    def run(i, task):
        try:
            results[i] = task()
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i, t), daemon=True) for i, t in enumerate(tasks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results
