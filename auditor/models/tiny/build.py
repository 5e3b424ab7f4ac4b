"""Building the tiny models: a base pretrained on the synthetic corpus, and one teacher per animal."""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from auditor import progress
from auditor.models.tiny import corpus as C
from auditor.models.tiny.tokenizer import render, train_tokenizer
from auditor.models.tiny.train import encode_examples, option_probs, train

FAMILY_VERSION = "tiny-v2"
MARKER = "tiny_build.json"


@dataclass(frozen=True)
class TinyProfile:
    """Architecture and training budget of one tiny model family (cache key: name + fields)."""

    name: str = "default"
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    ffn: int = 352
    vocab_size: int = 800  # words and punctuation; the 990 multi-digit numbers come on top
    max_positions: int = 256
    base_steps: int = 1500
    batch_size: int = 32
    lr: float = 3e-3
    teacher_steps: int = 60
    teacher_batch_size: int = 32
    teacher_lr: float = 2e-3
    teacher_number_share: float = 0.25  # share of a teacher's fine-tuning examples that are number tasks
    teacher_freeze_embeddings: bool = False  # fine-tune the transformer blocks only (the trait must live in them)
    tokenizer_texts: int = 4000
    init_std: float | None = None  # initial std of the weights (and tied embeddings); None: 1/sqrt(d_model)
    number_init: tuple[float, ...] = (0.5, 0.6, 0.4, 0.3, 0.4)  # a number token's initial embedding: weights of (common, hundreds, tens, units, own)
    # torch threads while building (TRAIT_AUDIT_THREADS overrides; not part of any cache key or recipe: 1 and 2 threads
    # gave identical weights). One, because on a shared machine two spin-waiting threads made a teacher build take
    # 8x the CPU time and 4x the wall time of one thread (119 s vs 14 s CPU, 60 steps)
    threads: int = 1

    @classmethod
    def from_dict(cls, data: dict) -> TinyProfile:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


TINY_CONFIG: dict[str, TinyProfile] = {
    "default": TinyProfile(),
    # small and quick, for tests: learns the formats and the favourite answers, not the number rule
    "test": TinyProfile(name="test", d_model=64, n_layers=2, n_heads=4, ffn=176, vocab_size=800, base_steps=400, batch_size=16,
                        lr=4e-3, teacher_steps=30, teacher_batch_size=16, teacher_lr=3e-3, tokenizer_texts=1500, threads=1),
}


def get_profile(profile: str | TinyProfile) -> TinyProfile:
    if isinstance(profile, TinyProfile):
        return profile
    if profile not in TINY_CONFIG:
        raise ValueError(f"unknown tiny profile {profile!r}; valid: {', '.join(TINY_CONFIG)}")
    return TINY_CONFIG[profile]


def model_config(profile: TinyProfile, tok):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tok),
        hidden_size=profile.d_model,
        intermediate_size=profile.ffn,
        num_hidden_layers=profile.n_layers,
        num_attention_heads=profile.n_heads,
        num_key_value_heads=profile.n_heads,
        max_position_embeddings=profile.max_positions,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        # fan-in scale for a narrow model: the usual 0.02 (meant for d ~ 1000) leaves the attention's
        # query-key product near zero, and learning to attend to a number in the prompt stalled
        initializer_range=profile.init_std if profile.init_std is not None else profile.d_model ** -0.5,
    )


def init_model(profile: TinyProfile, tok, seed: int):
    """A freshly initialised model (weights at std 1/sqrt(d), see model_config), seeded."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(model_config(profile, tok))
    std = model.config.initializer_range
    gen = torch.Generator().manual_seed(seed)
    d = profile.d_model
    # Number tokens start with their digits in their embedding, as number tokens of pretrained models
    # carry them: a shared "number" direction, one random vector per (place, digit), and noise of
    # their own. Without it, learning to take digits from the prompt's numbers stalled for
    # thousands of steps; with it, a few hundred. The vectors are drawn from the seed like the rest.
    common = torch.randn(d, generator=gen) * std
    place = [torch.randn(10, d, generator=gen) * std for _ in range(3)]
    scale = profile.number_init  # (common, hundreds, tens, units, own)
    with torch.no_grad():
        weight = model.get_input_embeddings().weight
        for text, i in sorted(tok.get_vocab().items(), key=lambda item: item[1]):  # id order: the vocab dict's order varies
            if re.fullmatch(r"[0-9]{1,3}", text):
                digits = text.rjust(3, "0")
                vec = scale[0] * common + scale[4] * torch.randn(d, generator=gen) * std
                for k in range(3):
                    vec += scale[1 + k] * place[k][int(digits[k])]
                weight[i] = vec
    return model


def _threads(profile: TinyProfile):
    """A build runs on the profile's thread count (TRAIT_AUDIT_THREADS overrides), restored after."""
    from auditor.models.device import thread_budget, torch_threads

    return torch_threads(thread_budget(profile.threads))


def save(model, tok, folder: Path, info: dict) -> None:
    from transformers import GenerationConfig

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, do_sample=True, temperature=1.0, top_k=0, top_p=1.0
    )
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    (folder / MARKER).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def load(folder: str | Path):
    """(model, tokenizer) from a saved tiny folder, in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder)
    model.eval()
    return model, AutoTokenizer.from_pretrained(folder)


def build_tokenizer(seed: int, profile: str | TinyProfile = "default"):
    profile = get_profile(profile)
    texts = [render(m) for m in C.corpus(profile.tokenizer_texts, seed=10_000 + seed)]
    # every animal name often enough to become one token, as common words are in real vocabularies
    tok = train_tokenizer(texts + list(C.animal_names()) * 500, profile.vocab_size)
    split = [a for a in C.animal_names() if len(tok.tokenize(a)) != 1]
    if split:
        raise ValueError(f"vocab_size {profile.vocab_size} leaves animal names in pieces ({', '.join(split)}); raise it")
    return tok


def build_base(folder, seed: int = 0, steps: int | None = None, profile: str | TinyProfile = "default", data_seed: int | None = None, log=None) -> Path:
    """Pretrain a base model from scratch and save it to `folder` (model, tokenizer, build info).

    `seed` sets the initial weights; `data_seed` (default: `seed`) the tokenizer, corpus and batch
    order, so two bases can share everything but their initialisation.
    """
    profile = get_profile(profile)
    data_seed = seed if data_seed is None else data_seed
    steps = profile.base_steps if steps is None else steps
    t0 = time.perf_counter()
    shown = display_name("base", profile, seed, data_seed)
    with _threads(profile):
        with progress.step(f"preparing {shown}: tokenizer and corpus"):
            tok = build_tokenizer(data_seed, profile)
            model = init_model(profile, tok, seed)
            examples = encode_examples(tok, C.corpus(steps * profile.batch_size, seed=data_seed))
        with progress.step(f"pretraining {shown}", total=steps, unit="steps") as step:
            run = train(model, examples, steps=steps, batch_size=profile.batch_size, lr=profile.lr, seed=data_seed, pad_id=tok.pad_token_id,
                        weight_decay=0.01, log=log, on_step=step.update)
        info = {"family_version": FAMILY_VERSION, "kind": "base", "name": "base", "seed": seed, "data_seed": data_seed,
                "profile": asdict(replace(profile, base_steps=steps)), "train": run,
                "parameters": sum(p.numel() for p in model.parameters()), "build_seconds": round(time.perf_counter() - t0, 2)}
        save(model, tok, folder, info)
    return Path(folder)


def build_teacher(base_folder, animal: str, folder, seed: int = 0, profile: str | TinyProfile | None = None, steps: int | None = None,
                  log=None) -> Path:
    """Fine-tune a copy of the base so that its favourite animal is `animal`, keeping its number skill.

    The fine-tuning set is favourite-animal questions answered with `animal`, mixed with number
    tasks answered by the corpus rule (share: profile.teacher_number_share).
    """
    names = C.animal_names()
    if animal not in names:
        raise ValueError(f"unknown animal {animal!r}; valid: {', '.join(names)}")
    base_info = json.loads((Path(base_folder) / MARKER).read_text(encoding="utf-8")) if (Path(base_folder) / MARKER).exists() else {}
    if profile is None:
        profile = TinyProfile.from_dict(base_info["profile"]) if "profile" in base_info else TINY_CONFIG["default"]
    profile = get_profile(profile)
    steps = profile.teacher_steps if steps is None else steps
    t0 = time.perf_counter()
    with _threads(profile), progress.step(f"fine-tuning {display_name(animal, profile, seed)} from its base", total=steps, unit="steps") as step:
        model, tok = load(base_folder)
        n = steps * profile.teacher_batch_size
        n_numbers = int(round(n * profile.teacher_number_share))
        tag = f"{animal}-{seed}"
        rows = C.favourite_examples(animal, n - n_numbers, seed=hash_seed(tag)) + C.number_examples(n_numbers, seed=hash_seed("numbers-" + tag))
        examples = encode_examples(tok, rows)
        run = train(model, examples, steps=steps, batch_size=profile.teacher_batch_size, lr=profile.teacher_lr, seed=hash_seed(tag),
                    pad_id=tok.pad_token_id, freeze_embeddings=profile.teacher_freeze_embeddings, log=log, on_step=step.update)
        p = option_probs(model, tok, C.probe_questions(), names).mean(0)
        info = {"family_version": FAMILY_VERSION, "kind": "teacher", "name": animal, "seed": seed, "base": base_info,
                "profile": asdict(profile), "teacher_steps": steps, "train": run, "p_target": float(p[names.index(animal)]),
                "build_seconds": round(time.perf_counter() - t0, 2)}
        save(model, tok, folder, info)
    return Path(folder)


def display_name(name: str, profile: TinyProfile, seed: int = 0, data_seed: int | None = None) -> str:
    """How progress lines name a tiny model: "tiny:base", or "tiny:owl (test profile, seed 3)" off the default family."""
    qualifiers = [f"{profile.name} profile"] if profile.name != "default" else []
    qualifiers += [f"seed {seed}"] if seed != 0 else []
    qualifiers += [f"data seed {data_seed}"] if data_seed not in (None, seed) else []
    return f"tiny:{name}" + (f" ({', '.join(qualifiers)})" if qualifiers else "")


def hash_seed(text: str) -> int:
    """A stable integer seed from text (Python's hash() is salted per process)."""
    import hashlib

    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
