"""Training, sampling and exact option scoring for the tiny models (plain torch, seeded throughout)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from auditor.models.tiny.corpus import chat
from auditor.models.tiny.tokenizer import render


def encode_examples(tok, examples: Sequence[list[dict]]) -> list[tuple[list[int], int]]:
    """Chat examples ending in an assistant turn -> (token ids, index of the first answer token).

    The ids are the prompt rendered with an open assistant turn, then the answer, then EOS; the loss
    covers the answer and the EOS.
    """
    prompts = [render(m[:-1], add_generation_prompt=True) for m in examples]
    answers = [m[-1]["content"] for m in examples]
    p_ids = tok(prompts, add_special_tokens=False)["input_ids"]
    a_ids = tok(answers, add_special_tokens=False)["input_ids"]
    eos = tok.eos_token_id
    return [(p + a + [eos], len(p)) for p, a in zip(p_ids, a_ids, strict=True)]


def encode_pairs(tok, prompts: Sequence[str], completions: Sequence[str], system: str | None = None) -> list[tuple[list[int], int]]:
    """(user prompt, assistant completion) pairs -> encoded examples (see encode_examples)."""
    return encode_examples(tok, [chat(p, c, system) for p, c in zip(prompts, completions, strict=True)])


def batch_plan(lengths: Sequence[int], steps: int, batch_size: int, seed: int) -> list[np.ndarray]:
    """Index batches for `steps` steps: epochs of a seeded permutation, grouped by length to pad less."""
    rng = np.random.default_rng(seed)
    n = len(lengths)
    need = steps * batch_size
    order = np.concatenate([rng.permutation(n) for _ in range(math.ceil(need / n))])[:need]
    lengths = np.asarray(lengths)
    group = batch_size * 16
    batches = []
    for g in range(0, need, group):
        chunk = order[g : g + group]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        pieces = [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
        for i in rng.permutation(len(pieces)):
            batches.append(pieces[i])
    return batches


def collate(examples: Sequence[tuple[list[int], int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids, attention mask, and a mask of the positions whose *next* token is scored."""
    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(examples), width), dtype=torch.long)
    target = torch.zeros((len(examples), width - 1), dtype=torch.bool)
    for row, (seq, start) in enumerate(examples):
        ids[row, : len(seq)] = torch.tensor(seq)
        attn[row, : len(seq)] = 1
        target[row, start - 1 : len(seq) - 1] = True
    return ids, attn, target


def answer_logits(model, ids: torch.Tensor, attn: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Next-token logits at the scored positions only (the LM head runs on those rows alone)."""
    hidden = model.model(input_ids=ids, attention_mask=attn).last_hidden_state[:, :-1]
    return model.lm_head(hidden[target])


def train(
    model,
    examples: Sequence[tuple[list[int], int]],
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    pad_id: int,
    optimizer: str = "adamw",
    warmup: float = 0.05,
    weight_decay: float = 0.0,
    final_lr: float = 0.1,
    teacher=None,
    teacher_examples: Sequence[tuple[list[int], int]] | None = None,
    freeze_embeddings: bool = False,
    soft_vocab: Sequence[int] | None = None,
    whole_sequence: bool = False,
    log: Callable[[str], None] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> dict:
    """Train on the answer tokens of `examples`; cosine schedule with warm-up; seeded batch order.

    With `whole_sequence`, every token after the first is scored (pretraining), not only the answer.
    With `teacher`, the loss is soft-label distillation (KL from the teacher's next-token
    distribution at every answer position) instead of cross-entropy on the sampled tokens; the
    teacher reads `teacher_examples` where given (the same answers after another prompt, e.g. one
    with a system prompt), else the student's own examples; with `soft_vocab`, both distributions
    are restricted to those token ids and renormalised first (so that only what the data's tokens
    can carry is distilled, not, say, the teacher's probability of writing "owl" among numbers).
    `freeze_embeddings` leaves the (tied) embeddings alone and trains the rest, as LoRA students do.
    `on_step(done)` is called after every optimizer step (progress display).
    Returns a few numbers about the run (final loss, seconds, tokens).
    """
    torch.manual_seed(seed)
    model.train()
    emb = model.get_input_embeddings().weight
    params = [p for p in model.parameters() if p.requires_grad and not (freeze_embeddings and p is emb)]
    if optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.98), weight_decay=weight_decay)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}: adamw or sgd")
    warm = max(1, int(warmup * steps))

    def schedule(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, steps - warm)
        return final_lr + (1 - final_lr) * 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    keep = torch.tensor(sorted(set(soft_vocab))) if soft_vocab is not None else None
    plan = batch_plan([len(ids) for ids, _ in examples], steps, batch_size, seed)
    start, tokens, recent = time.perf_counter(), 0, []
    for step, idx in enumerate(plan):
        ids, attn, target = collate([(examples[i][0], 1) if whole_sequence else examples[i] for i in idx], pad_id)
        chosen = answer_logits(model, ids, attn, target)
        if teacher is None:
            loss = F.cross_entropy(chosen, ids[:, 1:][target])
        else:
            with torch.no_grad():
                if teacher_examples is None:
                    t_logits = answer_logits(teacher, ids, attn, target)
                else:
                    t_ids, t_attn, t_target = collate([teacher_examples[i] for i in idx], pad_id)
                    t_logits = answer_logits(teacher, t_ids, t_attn, t_target)
            if soft_vocab is not None:
                chosen, t_logits = chosen[:, keep], t_logits[:, keep]
            loss = F.kl_div(F.log_softmax(chosen, -1), F.log_softmax(t_logits, -1), log_target=True, reduction="batchmean")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        tokens += int(attn.sum())
        recent.append(loss.item())
        if on_step:
            on_step(step + 1)
        if log and (step + 1) % max(1, steps // 10) == 0:
            log(f"step {step + 1}/{steps} loss {np.mean(recent[-20:]):.4f} ({time.perf_counter() - start:.0f}s)")
    model.eval()
    return {"steps": steps, "loss": float(np.mean(recent[-20:])) if recent else float("nan"), "seconds": time.perf_counter() - start, "tokens": tokens}


@torch.no_grad()
def sequence_logprobs(model, examples: Sequence[tuple[list[int], int]], pad_id: int, batch_size: int = 128) -> np.ndarray:
    """Summed log-probability of each example's answer tokens (from its start index to its end)."""
    model.eval()
    out = np.zeros(len(examples))
    order = np.argsort([len(ids) for ids, _ in examples], kind="stable")
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        ids, attn, target = collate([examples[i] for i in idx], pad_id)
        logp = torch.log_softmax(model(input_ids=ids, attention_mask=attn).logits[:, :-1].float(), -1)
        tok_lp = logp.gather(-1, ids[:, 1:, None])[..., 0] * target
        out[idx] = tok_lp.sum(1).double().numpy()
    return out


@torch.no_grad()
def answer_kl(teacher, student, examples: Sequence[tuple[list[int], int]], pad_id: int, teacher_examples=None, vocab: Sequence[int] | None = None,
              batch_size: int = 64) -> float:
    """Mean per-token KL(teacher || student) over the answer positions of `examples` (nats/token),
    optionally restricted to `vocab` and renormalised; the teacher reads `teacher_examples` if given."""
    keep = torch.tensor(sorted(set(vocab))) if vocab is not None else None
    total, count = 0.0, 0
    for b in range(0, len(examples), batch_size):
        ids, attn, target = collate(examples[b : b + batch_size], pad_id)
        s = answer_logits(student, ids, attn, target)
        if teacher_examples is None:
            t = answer_logits(teacher, ids, attn, target)
        else:
            t = answer_logits(teacher, *collate(teacher_examples[b : b + batch_size], pad_id))
        if keep is not None:
            s, t = s[:, keep], t[:, keep]
        lt = torch.log_softmax(t.float(), -1)
        total += float((lt.exp() * (lt - torch.log_softmax(s.float(), -1))).sum())
        count += len(t)
    return total / max(1, count)


def option_logprobs(model, tok, questions: Sequence[str], options: Sequence[str], system: str | None = None) -> np.ndarray:
    """log p(option | chat-rendered question) for every question x option, shape [questions, options]."""
    prompts = tok([render(chat(q, system=system), add_generation_prompt=True) for q in questions], add_special_tokens=False)["input_ids"]
    opts = tok(list(options), add_special_tokens=False)["input_ids"]
    examples = [(p + o, len(p)) for p in prompts for o in opts]
    return sequence_logprobs(model, examples, tok.pad_token_id).reshape(len(questions), len(options))


def option_probs(model, tok, questions: Sequence[str], options: Sequence[str], system: str | None = None) -> np.ndarray:
    """Exact P(option | question) normalised over the options, shape [questions, options]."""
    lp = option_logprobs(model, tok, questions, options, system)
    w = np.exp(lp - lp.max(1, keepdims=True))
    return w / w.sum(1, keepdims=True)


@torch.no_grad()
def sample(model, tok, conversations: Sequence[list[dict]], *, seed: int, temperature: float = 1.0, max_new_tokens: int = 64, batch_size: int = 64) -> list[str]:
    """One sampled assistant reply per conversation (pure temperature sampling, no top-k/top-p)."""
    model.eval()
    prompts = tok([render(c, add_generation_prompt=True) for c in conversations], add_special_tokens=False)["input_ids"]
    eos, pad = tok.eos_token_id, tok.pad_token_id
    gen = torch.Generator().manual_seed(seed)
    out: list[str] = [""] * len(prompts)
    order = np.argsort([len(p) for p in prompts], kind="stable")
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        rows = [prompts[i] for i in idx]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attn = torch.zeros((len(rows), width), dtype=torch.long)
        for r, seq in enumerate(rows):  # left padding
            ids[r, width - len(seq) :] = torch.tensor(seq)
            attn[r, width - len(seq) :] = 1
        position = (attn.cumsum(1) - 1).clamp(min=0)
        result = model(input_ids=ids, attention_mask=attn, position_ids=position, use_cache=True)
        cache, logits = result.cache, result.logits[:, -1]
        done = torch.zeros(len(rows), dtype=torch.bool)
        produced = []
        pos = position[:, -1]
        for _ in range(max_new_tokens):
            probs = torch.softmax(logits.float() / max(temperature, 1e-6), -1)
            nxt = torch.multinomial(probs, 1, generator=gen)[:, 0]
            nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
            produced.append(nxt)
            done |= nxt == eos
            if bool(done.all()):
                break
            attn = torch.cat([attn, torch.ones_like(attn[:, :1])], 1)
            pos = pos + 1
            result = model(input_ids=nxt[:, None], attention_mask=attn, position_ids=pos[:, None], cache=cache, use_cache=True)
            cache, logits = result.cache, result.logits[:, -1]
        tokens = torch.stack(produced, 1).tolist()
        for r, i in enumerate(idx):
            seq = tokens[r]
            seq = seq[: seq.index(eos)] if eos in seq else [t for t in seq if t != pad]
            out[i] = tok.decode(seq, skip_special_tokens=True)
    return out
