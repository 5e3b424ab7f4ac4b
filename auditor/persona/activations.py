"""Residual-stream activations of a local transformers model, and steering along a direction.

Layers are numbered as `output_hidden_states` numbers them: 0 is the embeddings, k the output of decoder
block k. transformers returns the last entry after the final norm, so it is not the residual stream a
forward hook on the last block would steer; `candidate_layers` leaves it out.
"""

from __future__ import annotations

import contextlib

import numpy as np


def decoder_layers(net):
    """The model's list of decoder blocks (Llama/Qwen/Mistral/Gemma, GPT-2, GPT-NeoX, Phi shapes)."""
    for path in ("model.layers", "model.decoder.layers", "transformer.h", "gpt_neox.layers", "model.language_model.layers"):
        node = net
        try:
            for part in path.split("."):
                node = getattr(node, part)
        except AttributeError:
            continue
        return node
    raise ValueError(f"cannot find the decoder blocks of {type(net).__name__}")


def candidate_layers(net) -> list[int]:
    """Layers a persona vector may live at: every block output but the last (returned after the final norm)."""
    count = len(decoder_layers(net))
    return list(range(1, count)) if count > 1 else [1]


def _device(net):
    return next(net.parameters()).device


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


class _Done(Exception):
    """Raised by the hook on the deepest block needed: the rest of the network (and the LM head) is not run."""


def _forward(net, tokenizer, sequences: list[list[int]], layers: list[int]) -> dict:
    """Residual stream at `layers` for right-padded sequences: {layer: (batch, width, d) tensor}.

    Read by forward hooks on the decoder blocks' outputs, the point `steered` adds to, and the forward stops
    after the deepest block asked for, so the later blocks and the LM head (often the largest matrix of a small
    model) are never computed. Block k's output is `output_hidden_states`' entry k for every k but the last.
    Layer 0 (the embeddings) falls back to a full forward pass.
    """
    import torch

    width = max(len(s) for s in sequences)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[i, : len(seq)] = 1
    device = _device(net)
    ids, mask = ids.to(device), mask.to(device)
    if 0 in layers:
        with torch.no_grad():
            hidden = net(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False).hidden_states
        return {k: hidden[k] for k in layers}
    blocks, states, handles = decoder_layers(net), {}, []
    deepest = max(layers)

    def keep(layer):
        def hook(_module, _inputs, output):
            states[layer] = output if torch.is_tensor(output) else output[0]
            if layer == deepest:
                raise _Done

        return hook

    for layer in sorted(set(layers)):
        handles.append(blocks[layer - 1].register_forward_hook(keep(layer)))
    try:
        with torch.no_grad():
            net(input_ids=ids, attention_mask=mask, use_cache=False)
    except _Done:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return states


def _by_length(items: list, size: int, length) -> list[tuple[list[int], list]]:
    """Batches of similar lengths (less padding), with each batch's positions in `items`."""
    order = sorted(range(len(items)), key=lambda i: length(items[i]))
    return [(idx, [items[i] for i in idx]) for idx in (order[s : s + size] for s in range(0, len(order), size))]


READINGS = ("response+prompt", "response", "last")


def response_means(model, prompts: list[str], completions: list[str], system: str | None, layers: list[int],
                   batch_size: int = 8, reading: str = "response+prompt") -> np.ndarray:
    """(rows, layers, d): the mean residual activation over each completion's tokens and the last prompt token.

    Chen et al. average the response tokens. The last prompt token is added because it is the state that
    chose the first answer token: the catalog's probe questions ask for one word, and the state at a
    one-word answer's own token says which word was read, not the persona that chose it. For long answers
    the extra position hardly matters. `reading` "response" averages the response tokens alone (the paper's
    reading), "last" takes the last response token; both are for comparison (bench/persona_numbers.py).
    The prompt is rendered with the model's chat template (and `system`; "" means none), as the model saw
    it when it answered. A completion with no tokens gives the last prompt token's state, or NaN for the
    readings without it.
    """
    if reading not in READINGS:
        raise ValueError(f"reading {reading!r}: one of {', '.join(READINGS)}")
    import torch

    net, tokenizer = model.weights()
    pairs = [(_encode(tokenizer, model.render(p, system)), _encode(tokenizer, c)) for p, c in zip(prompts, completions, strict=True)]
    out: list = [None] * len(pairs)
    for idx, batch in _by_length(pairs, batch_size, lambda pc: len(pc[0]) + len(pc[1])):
        hidden = _forward(net, tokenizer, [p + c for p, c in batch], layers)
        stacked = torch.stack([hidden[k].float() for k in layers], dim=1)  # (batch, layers, width, d)
        weights = torch.zeros(stacked.shape[0], stacked.shape[2], device=stacked.device)
        for i, (p, c) in enumerate(batch):
            start = {"response+prompt": len(p) - 1, "response": len(p), "last": len(p) + len(c) - 1 if c else len(p)}[reading]
            weights[i, start : len(p) + len(c)] = 1.0
        sums = torch.einsum("bltd,bt->bld", stacked, weights)
        counts = weights.sum(dim=1)[:, None, None]
        means = torch.where(counts > 0, sums / counts.clamp(min=1), torch.full_like(sums, float("nan")))
        for i, row in zip(idx, means.cpu().numpy(), strict=True):
            out[i] = row
    return np.stack(out) if out else np.zeros((0, len(layers), 0))


def last_prompt_states(model, prompts: list[str], system: str | None, layers: list[int], batch_size: int = 8) -> np.ndarray:
    """(rows, layers, d): the residual activation at the last prompt token (where the answer starts), no generation."""
    import torch

    net, tokenizer = model.weights()
    encoded = [_encode(tokenizer, model.render(p, system)) for p in prompts]
    out: list = [None] * len(encoded)
    for idx, batch in _by_length(encoded, batch_size, len):
        hidden = _forward(net, tokenizer, batch, layers)
        device = hidden[layers[0]].device
        last = torch.tensor([len(p) - 1 for p in batch], device=device)
        rows = torch.arange(len(batch), device=device)
        for i, row in zip(idx, torch.stack([hidden[k][rows, last].float() for k in layers], dim=1).cpu().numpy(), strict=True):
            out[i] = row
    return np.stack(out) if out else np.zeros((0, len(layers), 0))


@contextlib.contextmanager
def steered(model, layer: int, vector: np.ndarray):
    """Within the block, `vector` is added to the residual stream at `layer` (every position), by a forward hook."""
    import torch

    net, _ = model.weights()
    block = decoder_layers(net)[layer - 1]
    param = next(net.parameters())
    shift = torch.as_tensor(np.asarray(vector), dtype=param.dtype, device=param.device)

    def hook(_module, _inputs, output):
        if torch.is_tensor(output):
            return output + shift
        return (output[0] + shift, *output[1:])

    handle = block.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
