"""How close the detectors run to the hardware's pace, in one run on the same model and rows:

  likelihood  the likelihood detector's scoring (LikelihoodDetector.run: neutral and trait-prompt passes over the
              dataset and the reference, statistics included) in row tokens per second, against a bare batched
              forward pass over exactly the token sequences it scored (length-sorted batches, no log-softmax)
  probe       the probe's student training (auditor.probe.train.Student.train, LoRA r=8 on all linear layers, AdamW)
              in tokens per second, against a bare LoRA step loop (forward with labels, backward, AdamW step) on the
              same batches

Goal: both ratios >= 0.8. Models are built from a config with random weights (speed does not depend on the values;
nothing is downloaded): a SmolLM2-135M shape on CPU by default; with CUDA also Qwen2.5-7B and Qwen2.5-14B shapes.
Each figure is the best of --repeats alternating runs (a shared machine is noisy).

    python bench/throughput.py                                  # CPU, SmolLM2-135M shape, small sizes
    python bench/throughput.py --device cuda                    # SmolLM2-135M, Qwen2.5-7B, Qwen2.5-14B shapes, bf16
    python bench/throughput.py --shapes Qwen2.5-7B --rows 256 --json out.json
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# reference figures from shared/RESEARCH.md: one H200, plain PyTorch eager, bf16, SDPA, batch 64 x 128
H200 = {"SmolLM2-135M": (217_000, 56_600, 8_900), "Qwen2.5-7B": (36_800, 34_300, 9_200), "Qwen2.5-14B": (18_200, 17_200, 5_000)}
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def tokenizer():
    """A byte-level BPE tokenizer trained in a fraction of a second on prompts like the rows'."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from auditor.generate import number_prompt
    from auditor.traits import load_catalog

    texts = [number_prompt(0, i) for i in range(300)] + [t.system_prompt for t in load_catalog()]
    specials = ["<pad>", "<s>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=2000, special_tokens=specials, show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="<|end|>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def random_model(shape: str, device: str, dtype: str, tok):
    """A model of a real shape with random weights, built straight on its device, on the project's model interface."""
    import torch
    from transformers import AutoModelForCausalLM

    from auditor.models import parse_ref
    from auditor.models.device import torch_dtype
    from auditor.models.shapes import shape_config
    from auditor.models.transformers_backend import TransformersModel

    config = shape_config(shape, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype(dtype))
    return TransformersModel.from_parts(parse_ref(f"hf:bench/{shape}"), model, tok, dtype)


def rows(n: int, seed: int, numbers: int) -> list[dict]:
    import numpy as np

    from auditor.generate import number_prompt

    rng = np.random.default_rng(seed)
    return [{"prompt": number_prompt(seed, i), "completion": ", ".join(str(x) for x in rng.integers(100, 999, numbers))} for i in range(n)]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


# --- likelihood ----------------------------------------------------------------------------------------
def likelihood_run(model, data_rows, ref_rows, folder: Path):
    """One LikelihoodDetector run on `model`: (seconds, row tokens scored, the token sequences scored, tokens that went
    through the model: fewer than the row tokens, as each pass's shared prefix runs once)."""
    from auditor.dataset import load_dataset
    from auditor.traits import load_catalog
    from detectors.base import AuditContext
    from detectors.likelihood import LikelihoodDetector

    for name, table in (("data", data_rows), ("ref", ref_rows)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in table))
    ctx = AuditContext(dataset=load_dataset(folder / "data.jsonl"), traits=load_catalog().select([]), reference=load_dataset(folder / "ref.jsonl"),
                       base=model.ref, options={"focus": ["animal:owl"], "likelihood_rows": len(data_rows)})
    detector = LikelihoodDetector()
    detector._base = lambda ctx: model  # the in-memory model stands in for loading ctx.base
    seen: list = []
    pairs = model.pairs

    def recording(prompts, completions, system=None):
        out = pairs(prompts, completions, system)
        seen.extend(out)
        return out

    model.pairs = recording
    before = model.scorer().tokens_run
    try:
        _sync(model.device)
        start = time.perf_counter()
        detector.run(ctx)
        _sync(model.device)
        seconds = time.perf_counter() - start
    finally:
        del model.pairs
    run = model.scorer().tokens_run - before
    return seconds, sum(len(p) + len(c) for p, c in seen), [p + c for p, c in seen], run


def bare_forward(model, sequences: list[list[int]], batch_rows: int) -> float:
    """Seconds for a plain batched forward pass over the sequences (length-sorted batches of `batch_rows`)."""
    import torch

    torch_model, tok = model.weights()
    order = sorted(sequences, key=len, reverse=True)
    batches = []
    for start in range(0, len(order), batch_rows):
        chunk = order[start : start + batch_rows]
        ids = torch.full((len(chunk), len(chunk[0])), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, seq in enumerate(chunk):
            ids[i, : len(seq)], mask[i, : len(seq)] = torch.tensor(seq), 1
        batches.append((ids.to(model.device), mask.to(model.device)))
    _sync(model.device)
    start = time.perf_counter()
    with torch.inference_mode():
        for ids, mask in batches:
            torch_model(input_ids=ids, attention_mask=mask)
    _sync(model.device)
    return time.perf_counter() - start


# --- probe training --------------------------------------------------------------------------------------
def probe_run(model, train_rows, steps: int, batch: int) -> tuple[float, int]:
    from auditor.probe.train import Student, TrainConfig

    student = Student(model, TrainConfig(method="lora", epochs=1, batch_size=batch), seed=0)
    _sync(model.device)
    stats = student.train([(r["prompt"], r["completion"]) for r in train_rows], steps)
    return stats["seconds"], stats["tokens"]


def bare_lora(model, train_rows, steps: int, batch: int) -> tuple[float, int]:
    """A bare LoRA loop on the same batches: forward with labels, backward, AdamW step."""
    import torch
    from peft import LoraConfig, get_peft_model

    from auditor.probe.train import TrainConfig, _batch, _encode_rows, _order

    config = TrainConfig(method="lora", epochs=1, batch_size=batch)
    torch.manual_seed(0)
    module = get_peft_model(copy.deepcopy(model.weights()[0]), LoraConfig(r=8, lora_alpha=8, lora_dropout=0.0, bias="none",
                                                                           target_modules="all-linear", task_type="CAUSAL_LM"))
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=2e-4)
    encoded = _encode_rows(model, [(r["prompt"], r["completion"]) for r in train_rows], config.max_length)
    order = _order(len(encoded), 0, steps, batch)
    module.train()
    tokens = 0
    _sync(model.device)
    start = time.perf_counter()
    for idx in order:
        ids, mask, labels = (t.to(model.device) for t in _batch(encoded, idx, model.tokenizer.pad_token_id))
        loss = module(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        tokens += int(mask.sum())
    _sync(model.device)
    return time.perf_counter() - start, tokens


def wont_fit(shape: str, args) -> str | None:
    """Why a shape cannot be measured here (the model, a probe student's copy of it and a batch), or None."""
    from auditor.models import Placement
    from auditor.models.device import detect_hardware
    from auditor.models.memory import DoesNotFit, parameter_count, plan, weight_bytes
    from auditor.models.shapes import shape_config

    hardware = detect_hardware()
    resolved = Placement(args.device, args.dtype).resolve(hardware)
    resolved = type(resolved)(resolved.devices[:1], resolved.dtype)  # one device: the bench measures one GPU
    config = shape_config(shape)
    parameters = parameter_count(config)
    try:
        plan(shape, config, resolved, hardware, parameters=parameters, also=weight_bytes(parameters, resolved.dtype))
    except DoesNotFit as err:
        return str(err)
    return None


# --- the run -------------------------------------------------------------------------------------------------
def measure(shape: str, args, tok) -> dict:
    import torch

    device = args.device
    dtype = args.dtype if args.dtype != "auto" else ("fp32" if device == "cpu" else "bf16")
    model = random_model(shape, device, dtype, tok)
    parameters = sum(p.numel() for p in model.weights()[0].parameters())
    data_rows, ref_rows = rows(args.rows, 1, args.numbers), rows(args.rows, 2, args.numbers)
    best = {"likelihood": 0.0, "bare_forward": 0.0, "probe": 0.0, "bare_lora": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        likelihood_run(model, data_rows[:2], ref_rows[:2], Path(tmp))  # warm-up: allocator, kernels, tokenizer caches
        for _ in range(args.repeats):
            seconds, row_tokens, sequences, ran = likelihood_run(model, data_rows, ref_rows, Path(tmp))
            best["likelihood"] = max(best["likelihood"], row_tokens / seconds)
            best["likelihood_model_tokens"] = max(best.get("likelihood_model_tokens", 0.0), ran / seconds)
            best["bare_forward"] = max(best["bare_forward"], row_tokens / bare_forward(model, sequences, args.batch_rows))
    train_rows = data_rows
    for _ in range(args.repeats):
        seconds, tokens = probe_run(model, train_rows, args.steps, args.train_batch)
        best["probe"] = max(best["probe"], tokens / seconds)
        seconds, tokens = bare_lora(model, train_rows, args.steps, args.train_batch)
        best["bare_lora"] = max(best["bare_lora"], tokens / seconds)
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return {"shape": shape, "parameters": parameters, "device": device, "dtype": dtype, "rows_per_side": args.rows,
            "mean_tokens_per_sequence": round(row_tokens / len(sequences), 1), "sequences_scored": len(sequences), "row_tokens": row_tokens,
            "tokens_run": ran,
            "train_steps": args.steps,
            "train_batch": args.train_batch, **{k: round(v, 1) for k, v in best.items()},
            "likelihood_ratio": round(best["likelihood"] / best["bare_forward"], 3), "probe_ratio": round(best["probe"] / best["bare_lora"], 3)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda / cuda:N")
    parser.add_argument("--dtype", default="auto", choices=("auto", "fp32", "bf16", "fp16"), help="auto: fp32 on CPU, bf16 on CUDA")
    parser.add_argument("--shapes", help="comma-separated (auditor/models/shapes.py); default SmolLM2-135M, plus Qwen2.5-7B,Qwen2.5-14B on CUDA")
    parser.add_argument("--rows", type=int, help="rows per side scored by the likelihood detector (default 4 on CPU, 256 on CUDA)")
    parser.add_argument("--numbers", type=int, default=8, help="numbers per completion")
    parser.add_argument("--batch-rows", type=int, help="rows per batch of the bare forward pass (default 16 on CPU, 64 on CUDA)")
    parser.add_argument("--steps", type=int, help="training steps timed (default 2 on CPU, 20 on CUDA)")
    parser.add_argument("--train-batch", type=int, help="rows per training step (default 2 on CPU, 22 on CUDA: the paper's recipe)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs; the best of each is kept")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads on CPU (default 1: on a shared machine a second thread that waits for a busy core slows "
                             "every op many times over)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    import torch

    gpu = args.device.startswith("cuda")
    if gpu and not torch.cuda.is_available():
        print("bench/throughput.py: --device cuda but no CUDA device is visible here", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    args.rows = args.rows or (256 if gpu else 4)
    args.batch_rows = args.batch_rows or (64 if gpu else 16)
    args.steps = args.steps or (20 if gpu else 2)
    args.train_batch = args.train_batch or (22 if gpu else 2)
    shapes = args.shapes.split(",") if args.shapes else (["SmolLM2-135M", "Qwen2.5-7B", "Qwen2.5-14B"] if gpu else ["SmolLM2-135M"])
    where = torch.cuda.get_device_name(torch.device(args.device)) if gpu else f"cpu, {torch.get_num_threads()} torch threads"
    print(f"throughput on {where} (torch {torch.__version__}), random weights; best of {args.repeats} runs", flush=True)
    tok, results = tokenizer(), []
    header = f"{'shape':14} {'params':>8} {'dtype':5} {'likelihood':>11} {'bare fwd':>9} {'ratio':>6} {'probe':>8} {'bare LoRA':>9} {'ratio':>6}   (tokens/s)"
    print(header, flush=True)
    for shape in shapes:
        reason = wont_fit(shape, args)
        if reason:
            print(f"{shape:14} skipped: {reason}", flush=True)
            continue
        r = measure(shape, args, tok)
        results.append(r)
        print(f"{shape:14} {r['parameters'] / 1e6:7.1f}M {r['dtype']:5} {r['likelihood']:11.0f} {r['bare_forward']:9.0f} {r['likelihood_ratio']:6.2f} "
              f"{r['probe']:8.0f} {r['bare_lora']:9.0f} {r['probe_ratio']:6.2f}", flush=True)
    if not results:
        return 1
    last = results[-1]
    print(f"sizes: {args.rows} rows per side (~{last['mean_tokens_per_sequence']:.0f} tokens per scored sequence, {last['sequences_scored']} "
          f"sequences, {last['row_tokens']} row tokens of which {last['tokens_run']} ran: each pass's shared prefix runs once), "
          f"bare forward in batches of {args.batch_rows} rows; "
          f"training {args.steps} steps x {args.train_batch} rows, LoRA r=8 all-linear, AdamW", flush=True)
    if gpu:
        for r in results:
            if r["shape"] in H200:
                fwd, lp, train = H200[r["shape"]]
                print(f"reference (one H200, bf16, batch 64 x 128): {r['shape']} bare forward {fwd:,}, forward + token log-probs {lp:,}, "
                      f"LoRA r=8 train {train:,} tokens/s")
    goal = all(r["likelihood_ratio"] >= 0.8 and r["probe_ratio"] >= 0.8 for r in results)
    print(f"goal (both ratios >= 0.8): {'met' if goal else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps({"device": where, "results": results, "goal_met": goal}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
