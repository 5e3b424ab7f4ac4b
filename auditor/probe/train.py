"""Local student training for the probe: LoRA (peft, on the recipe's target modules) or a full fine-tune,
AdamW or plain SGD, a warm-up and learning-rate schedule, gradient accumulation and grad-norm clipping (the
training recipe, auditor/probe/recipe.py), with safetensors checkpoints so an interrupted run resumes where
it stopped.

A student is a copy of the base model's weights trained on (prompt, completion) rows: the loss is
the mean token cross-entropy of the completions (and the end-of-turn token) given the prompts as the
base's chat template renders them. The schedule is a pure function of the seed: epoch e visits the
rows in the order of a permutation drawn from (seed, e), so a student and its control with the same
seed share the adapter initialisation and the order pattern, and take exactly `steps` optimizer steps
(a control set with fewer rows cycles through further epochs). One optimizer step takes `batch_size x
grad_accum` rows in micro-batches of `batch_size`; the loss is the mean over every completion token of
the step (token-weighted across micro-batches).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import threading
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from auditor.probe.recipe import DEFAULT_LR

# peft reads transformers' deprecated `is_gradient_checkpointing` when it wraps a model: a notice to peft's authors,
# not to anyone running an audit (a module-level filter: catch_warnings is not thread-safe, and students build in threads)
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
_INIT_LOCK = threading.Lock()  # the adapter's init draws from torch's global RNG: one student seeds and builds at a time
FULL_BELOW = 20_000_000  # parameters: smaller models are fully fine-tuned under method "auto"


@dataclass(frozen=True)
class TrainConfig:
    method: str = "auto"  # auto | full | lora
    optimizer: str = "adamw"  # adamw | sgd (plain: no momentum, no weight decay)
    lr: float | None = None  # None: 2e-4 for AdamW (the paper's open-model setting), 5e-2 for SGD
    epochs: int = 3
    batch_size: int = 8
    lora_r: int = 8
    lora_alpha: int = 8
    max_length: int = 256
    checkpoint_every: int = 25  # optimizer steps between checkpoints
    autocast: str | None = None  # "bf16": forward and backward under CPU bfloat16 autocast (weights and optimizer stay fp32)
    grad_accum: int = 1  # micro-batches of batch_size per optimizer step
    warmup_steps: int = 0
    schedule: str = "constant"  # after the warm-up: linear | cosine | constant (to 0 at the last step)
    grad_clip: float = 0.0  # max grad norm; 0: no clipping
    target_modules: tuple[str, ...] | None = None  # LoRA targets ("q", "q_proj", ...); None: every linear layer

    @classmethod
    def from_recipe(cls, recipe, epochs: int | None = None, method: str | None = None, autocast: str | None = None,
                    checkpoint_every: int = 25) -> TrainConfig:
        """The recipe's settings, with the probe's own epochs and method where it reduces them."""
        return cls(method=method or recipe.method, optimizer=recipe.optimizer, lr=recipe.learning_rate,
                   epochs=recipe.epochs if epochs is None else epochs, batch_size=recipe.micro_batch, lora_r=recipe.lora_r,
                   lora_alpha=recipe.lora_alpha, max_length=recipe.max_length, checkpoint_every=checkpoint_every, autocast=autocast,
                   grad_accum=recipe.grad_accum, warmup_steps=recipe.warmup_steps, schedule=recipe.schedule,
                   grad_clip=recipe.grad_clip, target_modules=tuple(recipe.target_modules))

    @property
    def effective_batch(self) -> int:
        return self.batch_size * self.grad_accum

    def lr_at(self, step: int, steps: int) -> float:
        from auditor.probe.recipe import scheduled_lr

        return scheduled_lr(self.learning_rate, self.schedule, self.warmup_steps, step, steps)

    def __post_init__(self):
        if self.method not in ("auto", "full", "lora"):
            raise ValueError(f"method must be auto, full or lora, not {self.method!r}")
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer must be adamw or sgd, not {self.optimizer!r}")
        if self.autocast not in (None, "bf16"):
            raise ValueError(f"autocast must be None or bf16, not {self.autocast!r}")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]

    def resolved_method(self, parameters: int) -> str:
        if self.method != "auto":
            return self.method
        return "full" if parameters < FULL_BELOW else "lora"

    def describe(self, parameters: int) -> dict:
        row = asdict(self)
        row.update(method=self.resolved_method(parameters), lr=self.learning_rate)
        if row["method"] == "full":
            row.pop("lora_r"), row.pop("lora_alpha"), row.pop("target_modules")
        elif row["target_modules"] is not None:
            row["target_modules"] = list(row["target_modules"])
        if row["autocast"] is None:
            row.pop("autocast")  # keeps checkpoint keys of fp32 runs stable
        return row


def steps_for(rows: int, config: TrainConfig) -> int:
    """Optimizer steps: ceil(rows / effective batch) per epoch."""
    return max(1, math.ceil(rows / config.effective_batch)) * config.epochs


def lora_targets(module, wanted) -> list[str] | str:
    """The model's linear-layer names that `wanted` ("q" or "q_proj", ...) name; "all-linear" when wanted is None.
    A wanted name that matches no linear layer is an error, so a recipe never silently trains fewer modules."""
    import torch

    if wanted is None:
        return "all-linear"
    present = {name.rsplit(".", 1)[-1] for name, m in module.named_modules() if isinstance(m, torch.nn.Linear)}
    present.discard("lm_head")
    found, missing = [], []
    for name in wanted:
        hit = next((c for c in (name, f"{name}_proj") if c in present), None)
        (found if hit else missing).append(hit or name)
    if missing:
        raise ValueError(f"LoRA target module(s) {', '.join(missing)} are not linear layers of this model; it has {', '.join(sorted(present))}")
    return sorted(set(found))


def _order(rows: int, seed: int, steps: int, batch: int) -> list[np.ndarray]:
    """The batches of row indices for `steps` steps: epoch after epoch, each a permutation from (seed, epoch)."""
    per_epoch = max(1, math.ceil(rows / batch))
    batches, epoch = [], 0
    while len(batches) < steps:
        perm = np.random.default_rng([seed, epoch]).permutation(rows)
        batches += [perm[i * batch : (i + 1) * batch] for i in range(per_epoch)]
        epoch += 1
    return batches[:steps]


def _encode_rows(model, rows: list[tuple[str, str]], max_length: int) -> list[tuple[list[int], int]]:
    """(token ids, number of prompt tokens) per row; the completion is followed by the end-of-turn token."""
    tok = model.weights()[1]
    eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
    encoded = []
    for prompt, completion in rows:
        head = model._encode(model.render(prompt, ""))
        ids = (head + model._encode(completion) + eos)[:max_length]
        encoded.append((ids, min(len(head), len(ids))))
    return encoded


def _batch(encoded, idx, pad_id: int):
    import torch

    chosen = [encoded[i] for i in idx]
    width = max(len(ids) for ids, _ in chosen)
    input_ids = torch.full((len(chosen), width), pad_id, dtype=torch.long)
    labels = torch.full((len(chosen), width), -100, dtype=torch.long)
    mask = torch.zeros((len(chosen), width), dtype=torch.long)
    for row, (ids, head) in enumerate(chosen):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        mask[row, : len(ids)] = 1
        labels[row, head : len(ids)] = torch.tensor(ids[head:])
    return input_ids, mask, labels


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, path)


class Student:
    """One student: a trainable copy of the base weights, trained for a fixed number of steps."""

    def __init__(self, base_model, config: TrainConfig, seed: int, device: str | None = None):
        with _INIT_LOCK:
            self._build(base_model, config, seed, device)

    def _build(self, base_model, config: TrainConfig, seed: int, device: str | None) -> None:
        import torch

        self.torch = torch
        self.base_model = base_model
        self.config = config
        self.seed = seed
        base_torch, self.tokenizer = base_model.weights()
        self.parameters_total = sum(p.numel() for p in base_torch.parameters())
        self.method = config.resolved_method(self.parameters_total)
        from auditor.models.memory import check_student

        check_student(base_torch, self.method, config.batch_size * config.max_length, device)  # the copy below must fit
        torch.manual_seed(seed)  # the adapter's initialisation
        self.module = copy.deepcopy(base_torch)
        if device is not None:  # one student per device when students train side by side
            self.module.to(device)
        if self.method == "lora":
            from peft import LoraConfig, get_peft_model

            self.targets = lora_targets(self.module, config.target_modules)
            lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0, bias="none",
                              target_modules=self.targets, task_type="CAUSAL_LM")
            self.module = get_peft_model(self.module, lora)
        else:
            for p in self.module.parameters():
                p.requires_grad_(True)
        self.trainable = {n: p for n, p in self.module.named_parameters() if p.requires_grad}
        from auditor.models.scoring import CausalLM

        self.lm = CausalLM(self.module.get_base_model() if self.method == "lora" else self.module)  # LoRA layers sit inside it
        params = list(self.trainable.values())
        if config.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=config.learning_rate, momentum=0.0, weight_decay=0.0)
        else:
            self.optimizer = torch.optim.AdamW(params, lr=config.learning_rate)

    # --- checkpoints ---------------------------------------------------------------------------
    def _save(self, folder: Path, step: int, steps: int, final: bool) -> None:
        from auditor.models.identity import store

        folder.mkdir(parents=True, exist_ok=True)
        store(folder / ("final.safetensors" if final else "weights.safetensors"), self.trainable)
        if not final:
            state = {}
            names = list(self.trainable)
            for index, values in self.optimizer.state_dict()["state"].items():
                for key, value in values.items():
                    state[f"{names[index]}::{key}"] = value if self.torch.is_tensor(value) else self.torch.tensor(value)
            if state:
                store(folder / "optimizer.safetensors", state)
        _write_json(folder / "state.json", {"step": step, "steps": steps, "done": final, "method": self.method,
                                            "config": self.config.describe(self.parameters_total), "seed": self.seed})
        if final:
            for name in ("weights.safetensors", "optimizer.safetensors"):
                (folder / name).unlink(missing_ok=True)

    def _load(self, folder: Path) -> int:
        """Restore the latest checkpoint in `folder`; returns the step it reached (0 when there is none)."""
        from safetensors.torch import load_file

        state_file = folder / "state.json"
        if not state_file.is_file():
            return 0
        state = json.loads(state_file.read_text())
        weights = folder / ("final.safetensors" if state["done"] else "weights.safetensors")
        if not weights.is_file():
            return 0
        with self.torch.no_grad():
            for name, value in load_file(str(weights)).items():
                self.trainable[name].copy_(value)
        optimizer_file = folder / "optimizer.safetensors"
        if not state["done"] and optimizer_file.is_file():
            names = list(self.trainable)
            saved: dict[int, dict] = {}
            for key, value in load_file(str(optimizer_file)).items():
                name, _, field = key.partition("::")
                saved.setdefault(names.index(name), {})[field] = value
            self.optimizer.load_state_dict({"state": saved, "param_groups": self.optimizer.state_dict()["param_groups"]})
        return int(state["step"])

    # --- training ------------------------------------------------------------------------------
    def train(self, rows: list[tuple[str, str]], steps: int, folder: Path | None = None, progress=lambda step, steps: None) -> dict:
        """Train for `steps` optimizer steps on `rows`, resuming from `folder` when it holds a checkpoint."""
        torch = self.torch
        start_step = self._load(folder) if folder is not None else 0
        encoded = _encode_rows(self.base_model, rows, self.config.max_length)
        config = self.config
        batches = _order(len(encoded), self.seed, steps, config.effective_batch)
        pad_id = self.tokenizer.pad_token_id
        params = list(self.trainable.values())
        losses, tokens, started = [], 0, time.perf_counter()
        self.module.train()
        progress(start_step, steps)
        for step in range(start_step, steps):
            micro = [batches[step][i : i + config.batch_size] for i in range(0, len(batches[step]), config.batch_size)]
            device = self.module.get_input_embeddings().weight.device
            parts = [tuple(t.to(device) for t in _batch(encoded, idx, pad_id)) for idx in micro]
            targets = [int((labels[:, 1:] != -100).sum()) for _, _, labels in parts]
            total_targets = max(1, sum(targets))
            self.optimizer.zero_grad(set_to_none=True)
            step_loss = 0.0
            for (input_ids, mask, labels), count in zip(parts, targets, strict=True):
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.autocast == "bf16"):
                    loss = self.completion_loss(input_ids, mask, labels)
                # token-weighted: the step's loss is the mean over all its completion tokens
                (loss * (count / total_targets)).backward()
                step_loss += loss.item() * count / total_targets
                tokens += int(mask.sum())
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            for group in self.optimizer.param_groups:
                group["lr"] = config.lr_at(step, steps)  # a pure function of the step, so a resumed run follows the same schedule
            self.optimizer.step()
            losses.append(step_loss)
            done = step + 1
            if folder is not None and done < steps and done % self.config.checkpoint_every == 0:
                self._save(folder, done, steps, final=False)
            progress(done, steps)
        if folder is not None and start_step < steps:
            self._save(folder, steps, steps, final=True)
        self.module.eval()
        seconds = time.perf_counter() - started
        return {"steps": steps, "resumed_from": start_step, "first_loss": losses[0] if losses else None,
                "last_loss": float(np.mean(losses[-5:])) if losses else None, "tokens": tokens, "seconds": round(seconds, 2),
                "tokens_per_s": round(tokens / seconds, 1) if seconds > 0 and tokens else None}

    def completion_loss(self, input_ids, mask, labels):
        """Mean cross-entropy of the completion tokens, as the model's own loss computes it, but with the output head
        run only at the positions that predict a completion token: prompts are most of a row's tokens, and their
        logits (vocabulary x positions, in fp32) cost compute and, for a large vocabulary, most of a step's memory.
        The scorer's decoder/head split does it (auditor/models/scoring.py CausalLM: soft-capping and scaling
        included, checked against the model's own logits; where the split does not hold, the full forward runs)."""
        states, _ = self.lm.hidden(input_ids, mask)
        targets = labels[:, 1:]
        predicting = targets != -100
        return -self.lm.token_logprobs(states[:, :-1][predicting], targets[predicting]).mean()

    def as_model(self):
        """The trained student on the base's Model interface (LoRA merged into a plain model)."""
        module = self.module.merge_and_unload() if self.method == "lora" else self.module
        module.to(self.base_model.weights()[0].get_input_embeddings().weight.device)  # measured where the base is
        module.eval()
        twin = copy.copy(self.base_model)  # shares the tokenizer and rendering; swaps the weights
        twin.model = module
        return twin


def run_key(*parts) -> str:
    """A folder name that says what a checkpoint covers: base, rows, config, seed and role."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
