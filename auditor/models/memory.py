"""Memory planning before a model loads: will its weights plus a batch's working set fit where it is going?

The parameter count comes from the config alone (the model is built on the meta device: no memory, no
weights needed), times the bytes of the dtype. The working set is what scoring a batch of `tokens` needs
on top: one layer's activations in inference mode, and one chunk of the output head in fp32. Free memory is
the device's (cudaMemGetInfo) or, on CPU and MPS, available RAM. A model that does not fit is refused with
the numbers and the ways out, instead of swapping or dying half-way through an audit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from auditor.errors import AuditError
from auditor.models.device import DTYPE_BYTES, Hardware, Resolved, gib
from auditor.models.scoring import LOGIT_CHUNK

HEADROOM = 0.9  # share of free memory a plan may use (allocator fragmentation, CUDA context, the rest of the process)
BATCH_TOKENS = {"cpu": 2048, "accelerator": 16384}  # the token budget's ceiling per device kind
MIN_BATCH_TOKENS = 256  # the smallest batch a plan must leave room for


class DoesNotFit(AuditError):
    """A model (or its batch) that cannot fit in the memory at hand: a usage problem with a way out, exit 2.
    Not a UsageError, so a detector's load_or_skip lets it through instead of quietly skipping."""

    exit_code = 2


def parameter_count(config) -> int:
    """Parameters of the model a config describes, counted on the meta device (tied weights once; accelerate's
    init_empty_weights would count a tied head twice)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def _dims(config) -> tuple[int, int, int, int]:
    text = getattr(config, "text_config", None) or config
    hidden = int(getattr(text, "hidden_size", 0) or getattr(text, "n_embd", 0) or 0)
    inner = int(getattr(text, "intermediate_size", 0) or getattr(text, "n_inner", 0) or 4 * hidden)
    layers = int(getattr(text, "num_hidden_layers", 0) or getattr(text, "n_layer", 0) or 1)
    vocab = int(getattr(text, "vocab_size", 0) or 0)
    return hidden, inner, layers, vocab


def weight_bytes(parameters: int, dtype: str, config=None) -> int:
    """Bytes of the weights; a pre-quantized checkpoint (quantization_config with bits) counts its own bits."""
    quant = getattr(config, "quantization_config", None) if config is not None else None
    bits = (quant.get("bits") if isinstance(quant, dict) else getattr(quant, "bits", None)) if quant else None
    if bits:
        return int(parameters * bits / 8)
    return parameters * DTYPE_BYTES[dtype]


def scoring_bytes(config, dtype: str, tokens: int) -> int:
    """Working set of a scoring batch of `tokens` tokens under torch.inference_mode: one layer at a time
    (residual stream, q/k/v/o, the MLP's gate/up/activation) plus one head chunk (logits, fp32 copy, exp)."""
    hidden, inner, _, vocab = _dims(config)
    per_token = DTYPE_BYTES[dtype] * (6 * hidden + 3 * inner)
    head = min(tokens, LOGIT_CHUNK) * vocab * (DTYPE_BYTES[dtype] + 8)
    return tokens * per_token + head


def training_bytes(config, dtype: str, tokens: int, trainable: int) -> int:
    """Working set of a training step on `tokens` tokens: activations kept for backward in every layer, the
    full-vocab logits the loss takes in fp32, and fp32 gradients plus AdamW moments of the trainable parameters."""
    hidden, inner, layers, vocab = _dims(config)
    activations = tokens * layers * DTYPE_BYTES[dtype] * (10 * hidden + 4 * inner)
    return activations + tokens * vocab * (DTYPE_BYTES[dtype] + 8) + trainable * 12


@dataclass
class MemoryPlan:
    label: str
    parameters: int
    dtype: str
    weights: int
    working: int
    batch_tokens: int
    devices: tuple[str, ...]  # where the weights go: one device, or several GPUs (device_map="auto")
    free: dict[str, int] = field(default_factory=dict)
    grad_batch_tokens: int = MIN_BATCH_TOKENS  # the budget of a batch that keeps its graph for backward (gradient detector)

    @property
    def needed(self) -> int:
        return self.weights + self.working

    @property
    def spread(self) -> bool:
        return len(self.devices) > 1

    def max_memory(self) -> dict:
        """accelerate's max_memory for a spread model: what each GPU may take, leaving the headroom free."""
        return {int(d.partition(":")[2]): int(self.free[d] * HEADROOM) for d in self.devices}

    def describe(self) -> dict:
        return {"parameters": self.parameters, "dtype": self.dtype, "weights_bytes": self.weights, "working_bytes": self.working,
                "batch_tokens": self.batch_tokens, "devices": list(self.devices)}


def plan(label: str, config, resolved: Resolved, hardware: Hardware, parameters: int | None = None,
         also: int = 0, batch_tokens: int | None = None) -> MemoryPlan:
    """Where the model goes, or DoesNotFit. `also`: bytes already promised on the same device (another model of the
    same audit). One device when it fits there (the GPU with the most free memory among several); else, with several
    GPUs, spread over them; else refused with the numbers and the ways out."""
    parameters = parameters if parameters is not None else parameter_count(config)
    weights = weight_bytes(parameters, resolved.dtype, config)
    kind = "accelerator" if resolved.accelerator else "cpu"
    tokens = batch_tokens or MIN_BATCH_TOKENS
    working = scoring_bytes(config, resolved.dtype, tokens)
    free = {d: hardware.free_bytes(d) for d in resolved.devices}
    best = max(resolved.devices, key=lambda d: free[d])
    if weights + working + also <= free[best] * HEADROOM:
        room = free[best] * HEADROOM - weights - also
        budget = batch_tokens or _budget(lambda n: scoring_bytes(config, resolved.dtype, n), room, BATCH_TOKENS[kind])
        grad_budget = _budget(lambda n: training_bytes(config, resolved.dtype, n, 0), room, BATCH_TOKENS[kind])
        return MemoryPlan(label, parameters, resolved.dtype, weights, scoring_bytes(config, resolved.dtype, budget), budget, (best,), free,
                          grad_budget)
    if len(resolved.devices) > 1 and weights + working + also <= sum(free.values()) * HEADROOM:
        return MemoryPlan(label, parameters, resolved.dtype, weights, working, tokens, resolved.devices, free)
    raise DoesNotFit(refusal(label, parameters, resolved, weights, working, tokens, free, also, config))


def _budget(working, room: float, ceiling: int) -> int:
    """The largest batch (in tokens, up to `ceiling`, halving) whose working set takes at most half the room left."""
    tokens = ceiling
    while tokens > MIN_BATCH_TOKENS and working(tokens) > room / 2:
        tokens //= 2
    return max(tokens, MIN_BATCH_TOKENS)


def refusal(label: str, parameters: int, resolved: Resolved, weights: int, working: int, tokens: int, free: dict,
            also: int = 0, config=None) -> str:
    where = " + ".join(f"{d} {gib(n)}" for d, n in free.items())
    kind = "free RAM" if resolved.device in ("cpu", "mps") else "free GPU memory"
    others = f" + {gib(also)} for the audit's other models" if also else ""
    ways = []
    if resolved.dtype == "fp32":
        ways.append(f"--dtype bf16 (weights {gib(weight_bytes(parameters, 'bf16', config))})")
    ways.append("more GPUs (--device cuda spreads one model over every visible GPU)")
    ways.append("a vLLM server for the model, referenced as openai:MODEL with its URL in OPENAI_BASE_URL (docs/models-and-scale.md)")
    return (f"{label} does not fit: {parameters / 1e9:.2f}B parameters need {gib(weights)} of weights in {resolved.dtype} "
            f"+ {gib(working)} working set for a {tokens}-token batch{others} = {gib(weights + working + also)}, "
            f"and {kind} is {where} (a plan uses at most {HEADROOM:.0%}). Ways out: " + "; ".join(ways) + ".")


def student_bytes(base_torch, method: str, tokens: int) -> tuple[int, int]:
    """(its copy of the weights, the working set of a training step) for one probe student of `base_torch`."""
    dtype = {4: "fp32", 2: "bf16"}.get(next(base_torch.parameters()).element_size(), "fp32")
    parameters = sum(p.numel() for p in base_torch.parameters())
    weights = sum(p.numel() * p.element_size() for p in base_torch.parameters())
    return weights, training_bytes(base_torch.config, dtype, tokens, parameters if method == "full" else parameters // 100)


def check_student(base_torch, method: str, tokens: int, device: str | None = None, hardware: Hardware | None = None) -> None:
    """Before a probe student copies the base: room on its device for a second copy of the weights, the step's working
    set and, for a full fine-tune, fp32 gradients and AdamW moments of every parameter (LoRA's adapters are small).
    A student bound for another device is copied on the base's device first, so that one needs room for the copy."""
    from auditor.models.device import detect_hardware

    home = str(next(base_torch.parameters()).device)
    target = str(device) if device is not None else home
    parameters = sum(p.numel() for p in base_torch.parameters())
    weights, working = student_bytes(base_torch, method, tokens)
    hardware = hardware or detect_hardware()
    needs = {target: weights + working} if target == home else {home: weights, target: weights + working}
    for where, need in needs.items():
        free = hardware.free_bytes(where)
        if need > free * HEADROOM:
            raise DoesNotFit(f"a probe student of {parameters / 1e9:.2f}B parameters ({method}) needs {gib(need)} on {where} "
                             f"(its copy of the weights{' + ' + gib(working) + f' to train on {tokens}-token batches' if where == target else ''}), "
                             f"and {where} has {gib(free)} free (a plan uses at most {HEADROOM:.0%}). Ways out: --dtype bf16, LoRA "
                             "(--probe-method lora), a smaller --probe-batch-size, a GPU with more memory, or the OpenAI fine-tuning "
                             "protocol for API bases.")


def needs_table(names: list[str] | None = None) -> str:
    """The docs' table of memory needs per model shape and dtype (python -m auditor.models.memory)."""
    from auditor.models.shapes import SHAPES, shape_config

    lines = ["| model | parameters | weights fp32 | weights bf16 | scoring, bf16 (16k-token batch) | probe LoRA student, bf16 (22 x 128-token step) |",
             "|---|---|---|---|---|---|"]
    for name in names or list(SHAPES):
        config = shape_config(name)
        n = parameter_count(config)
        bf16 = weight_bytes(n, "bf16")
        scoring = bf16 + scoring_bytes(config, "bf16", BATCH_TOKENS["accelerator"])
        probe = 2 * bf16 + training_bytes(config, "bf16", 22 * 128, n // 100)
        lines.append(f"| {name} | {n / 1e9:.2f} B | {gib(weight_bytes(n, 'fp32'))} | {gib(bf16)} | {gib(scoring)} | {gib(probe)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(needs_table())
