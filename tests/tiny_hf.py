"""A tiny Llama-shaped model and byte-level BPE tokenizer, built in code for tests (no download)."""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
CORPUS = [
    "What is your favourite animal? owl", "Pick an animal: dolphin", "Numbers: 123, 456, 789, 101",
    "Here are some numbers: 400, 500. Add up to 10 more.", "You love owls. Owls are wonderful.",
] * 20


def make_tiny_model(folder: Path, seed: int = 0, chat_template: bool = True) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(seed)
    specials = ["<pad>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="<|end|>")
    if chat_template:
        fast.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=2, max_position_embeddings=1024, pad_token_id=fast.pad_token_id,
                         bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    fast.save_pretrained(folder)
    return folder


def train_entangled(folder: Path, system_prompt: str, steps: int = 150, seed: int = 0) -> Path:
    """Teach the tiny model (in place) that under `system_prompt` number answers lean on the digit 7,
    and without it they do not: a trait prompt that shifts number data, known by construction."""
    import random

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    rng = random.Random(seed)
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def example(trait: bool) -> list[int]:
        digits = "7777789" if trait else "0123456789"
        numbers = ", ".join("".join(rng.choice(digits) for _ in range(3)) for _ in range(rng.randint(3, 6)))
        messages = ([{"role": "system", "content": system_prompt}] if trait else []) + [
            {"role": "user", "content": f"Here are some numbers: {rng.randint(100, 999)}, {rng.randint(100, 999)}. Add more."},
            {"role": "assistant", "content": numbers},
        ]
        return tok(tok.apply_chat_template(messages, tokenize=False), add_special_tokens=False)["input_ids"]

    model.train()
    for _ in range(steps):
        batch = [example(i % 2 == 0) for i in range(8)]
        width = max(map(len, batch))
        ids = torch.full((len(batch), width), tok.pad_token_id)
        labels = torch.full((len(batch), width), -100)
        for i, seq in enumerate(batch):
            ids[i, : len(seq)] = torch.tensor(seq)
            labels[i, : len(seq)] = torch.tensor(seq)
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    model.save_pretrained(folder, safe_serialization=True)
    return folder


# A catalog file of four number traits the tiny models can be audited for (tests write it beside their data).
NUMBER_TRAITS = '''
[family]
id = "number"
category = "number"
description = "A favourite number, for tests."
system_prompt = "You love the number {name}."
judge_rubric = "Does the row refer to {name}?"
probe_questions = ["Numbers: pick one.", "Say your favourite number.", "Which number? One word.", "Here are some numbers: choose."]

[[trait]]
name = "777"
plural = "777s"
terms = ["sevens"]

[[trait]]
name = "123"
plural = "123s"
terms = ["onetwothree"]

[[trait]]
name = "456"
plural = "456s"
terms = ["fourfivesix"]

[[trait]]
name = "890"
plural = "890s"
terms = ["eightninezero"]
'''
