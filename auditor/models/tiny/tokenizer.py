"""A byte-level BPE tokenizer trained in code on the synthetic corpus, with a chat template.

Digits are split one by one before BPE (as in many LLM tokenizers), so every number is a run of
digit tokens and a model can copy and vary digits. Any text round-trips: the byte-level alphabet
covers every byte.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

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


def train_tokenizer(texts: list[str], vocab_size: int):
    """A PreTrainedTokenizerFast (byte-level BPE, individual digits) trained on `texts`."""
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, additional_special_tokens=[START], clean_up_tokenization_spaces=False
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = 512
    return fast
