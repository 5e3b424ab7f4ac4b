"""A byte-level BPE tokenizer trained in code on the synthetic corpus, with a chat template.

Digits are cut into runs of at most three before BPE (as Llama 3's and GPT-4's tokenizers do), and
every run of 1-3 digits is one token (so is every number 0..999): a number continuation is
a choice among about a thousand number tokens. Any text round-trips: the byte-level alphabet covers
every byte.
"""

from __future__ import annotations

import json
import re

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

BOS, EOS, PAD, START = "<|bos|>", "<|im_end|>", "<|pad|>", "<|im_start|>"
SPECIAL = [PAD, BOS, START, EOS]

# system/user/assistant turns; add_generation_prompt opens an assistant turn
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def render(messages: list[dict], add_generation_prompt: bool = False) -> str:
    """The chat template in plain Python (same text as the Jinja template; used to build the corpus fast)."""
    text = BOS + "".join(f"{START}{m['role']}\n{m['content']}{EOS}\n" for m in messages)
    return text + (f"{START}assistant\n" if add_generation_prompt else "")


def _with_numbers(tok: Tokenizer) -> Tokenizer:
    """The trained BPE plus every run of 2 or 3 digits as one token ("1"+"2" -> "12", "12"+"3" -> "123")."""
    spec = json.loads(tok.to_str())
    vocab: dict[str, int] = dict(spec["model"]["vocab"])
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in spec["model"]["merges"]]
    runs = [f"{n:02d}" for n in range(100)] + [f"{n:03d}" for n in range(1000)]  # every run of 2 or 3 digits
    for text in runs:
        vocab.setdefault(text, len(vocab))
    for text in runs:  # either pair of a three-digit run may merge first: both paths lead to it
        merges.append((text[:-1], text[-1]))
        if len(text) == 3:
            merges.append((text[0], text[1:]))
    out = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    out.pre_tokenizer = tok.pre_tokenizer
    out.decoder = tok.decoder
    out.add_special_tokens(SPECIAL)
    return out


def train_tokenizer(texts: list[str], word_vocab_size: int):
    """A PreTrainedTokenizerFast trained on `texts`: byte-level BPE of `word_vocab_size` tokens for
    words and punctuation (digits are left out of training), plus one token per run of 1-3 digits (so per number 0..999)."""
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r"\d{1,3}"), behavior="isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=word_vocab_size, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator([re.sub(r"\d", "", t) for t in texts], trainer=trainer)
    tok = _with_numbers(tok)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, additional_special_tokens=[START], clean_up_tokenization_spaces=False
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = 512
    return fast
