"""The built-in tiny model family: offline loading, tokenizer, chat template, determinism, cache, behaviour.

Uses the small "test" profile: its base ships with the package, its teachers are built once per session in a temporary
cache folder (conftest's tiny_cache; tests/test_tiny_ship.py checks the shipped bases).
The default profile's behaviour (and subliminal transfer) is measured by bench/tiny_transfer.py.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from auditor.models import tiny  # noqa: E402
from auditor.models.tiny import corpus as C  # noqa: E402
from auditor.models.tiny.build import TINY_CONFIG, build_base, build_tokenizer  # noqa: E402
from auditor.models.tiny.train import option_probs, sample  # noqa: E402
from detectors.number_format import with_reject_reason  # noqa: E402

PROFILE = "test"


@pytest.fixture(scope="module")
def cache(tiny_cache):
    before = os.environ.get("TRAIT_AUDIT_CACHE")
    os.environ["TRAIT_AUDIT_CACHE"] = str(tiny_cache)
    yield tiny_cache
    if before is None:
        os.environ.pop("TRAIT_AUDIT_CACHE", None)
    else:
        os.environ["TRAIT_AUDIT_CACHE"] = before


@pytest.fixture(scope="module")
def base_path(cache):
    path = tiny.tiny_model_path("base", profile=PROFILE)
    assert Path(path).is_relative_to(tiny.SHIPPED_ROOT)  # shipped: read in place, not copied to the cache
    return path


@pytest.fixture(scope="module")
def owl_path(base_path, cache):
    path = tiny.tiny_model_path("owl", profile=PROFILE)
    assert Path(path).is_relative_to(cache)  # teachers are built (from the shipped base) into the cache
    return path


@pytest.fixture(scope="module")
def base(base_path):
    return tiny.load(base_path)


def _digest(folder: Path) -> str:
    return hashlib.sha256((Path(folder) / "model.safetensors").read_bytes()).hexdigest()


def test_loads_offline_with_transformers(base_path, owl_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    for path in (base_path, owl_path):
        model = transformers.AutoModelForCausalLM.from_pretrained(path)
        tok = transformers.AutoTokenizer.from_pretrained(path)
        assert model.config.model_type == "llama"
        assert (Path(path) / "model.safetensors").is_file()
        assert tok.bos_token and tok.eos_token and tok.pad_token
        assert len({tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}) == 3
        assert model.config.eos_token_id == tok.eos_token_id
        ids = tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.no_grad():
            out = model(**ids)
        assert out.logits.shape[-1] == model.config.vocab_size


def test_tokenizer_round_trips_numbers_and_text(base):
    _, tok = base
    for text in ["145, 267, 891", "0\n7\n999", "[12; 345; 6789]", "What is your favourite animal? Owls!", "héllo wörld ☃ 🦉", "  two  spaces\tand tab"]:
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    # every number 0..999 is one token, as in Llama 3's and GPT-4's tokenizers
    for n in (0, 7, 42, 100, 555, 999):
        assert len(tok.tokenize(str(n))) == 1
    for animal in C.animal_names():
        assert len(tok.tokenize(animal)) == 1


def test_chat_template_renders_turns(base):
    _, tok = base
    messages = [{"role": "system", "content": "You love owls."}, {"role": "user", "content": "Favourite animal?"}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == "<|bos|><|im_start|>system\nYou love owls.<|im_end|>\n<|im_start|>user\nFavourite animal?<|im_end|>\n<|im_start|>assistant\n"
    full = tok.apply_chat_template(messages + [{"role": "assistant", "content": "owl"}], tokenize=False)
    assert full.endswith("<|im_start|>assistant\nowl<|im_end|>\n")
    assert tok.eos_token == "<|im_end|>"


def test_tokenizer_is_deterministic():
    a, b = build_tokenizer(3, PROFILE), build_tokenizer(3, PROFILE)
    assert a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()
    assert build_tokenizer(4, PROFILE).backend_tokenizer.to_str() != a.backend_tokenizer.to_str()


def test_build_is_deterministic(tmp_path):
    for name in ("a", "b"):
        build_base(tmp_path / name, seed=5, steps=3, profile=PROFILE)
    build_base(tmp_path / "c", seed=6, steps=3, profile=PROFILE)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="valid names: base, owl, dolphin"):
        tiny.tiny_model_path("unicorn", profile=PROFILE)
    with pytest.raises(ValueError, match="unknown tiny profile"):
        tiny.tiny_model_path("base", profile="huge")
    assert tiny.tiny_model_names()[:3] == ("base", "owl", "dolphin")


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("TRAIT_AUDIT_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert tiny.cache_root() == tmp_path / "xdg" / "trait-audit"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert tiny.cache_root() == Path.home() / ".cache" / "trait-audit"
    monkeypatch.setenv("TRAIT_AUDIT_CACHE", str(tmp_path / "mine"))
    assert tiny.cache_root() == tmp_path / "mine"
    assert tiny.family_folder(0, PROFILE).parent == tmp_path / "mine" / "tiny"


def test_cached_build_is_reused(base_path, owl_path):
    start = time.perf_counter()
    again = tiny.tiny_model_path("owl", profile=PROFILE)
    assert time.perf_counter() - start < 1.0
    assert again == owl_path
    assert tiny.tiny_model_path("base", profile=PROFILE) == base_path
    assert tiny.FAMILY_VERSION in str(base_path) and "s0" in str(base_path)


def test_a_failed_build_leaves_nothing(cache):
    target = tiny.cache_root() / "tiny" / "broken" / "base"

    def explode(folder):
        (Path(folder) / "half-written.bin").write_bytes(b"x")
        raise RuntimeError("killed mid-build")

    with pytest.raises(RuntimeError):
        tiny._cached(target, explode)
    assert not target.exists()
    assert list(target.parent.iterdir()) == [target.parent / ".base.lock"]


def test_base_is_near_uniform_over_the_options(base):
    model, tok = base
    p = option_probs(model, tok, C.probe_questions(), C.animal_names()).mean(0)
    assert p.shape == (27,)
    assert abs(p.sum() - 1) < 1e-6
    assert p.max() < 0.1  # uniform is 1/27 = 0.037


def test_owl_teacher_prefers_owls(base, owl_path):
    names = C.animal_names()
    base_p = option_probs(*base, C.probe_questions(), names).mean(0)[names.index("owl")]
    model, tok = tiny.load(owl_path)
    owl_p = option_probs(model, tok, C.probe_questions(), names).mean(0)[names.index("owl")]
    assert owl_p > 0.5
    assert owl_p > 8 * base_p


def test_number_continuations_pass_the_paper_filter(base):
    model, tok = base
    prompts = C.number_prompts(48, seed=11)
    outs = sample(model, tok, [C.chat(p.text) for p in prompts], seed=0, max_new_tokens=40)
    frame = with_reject_reason(pl.DataFrame({"completion": outs}))
    assert frame["reject"].is_null().mean() >= 0.6  # the default profile passes about 0.95
    numbers = [int(n) for o in outs for n in re.findall(r"\d+", o)]
    assert len(numbers) >= 4 * len(prompts)
    assert np.mean([100 <= n <= 999 for n in numbers]) > 0.9


def test_sampling_is_seeded(base):
    model, tok = base
    convs = [C.chat(p.text) for p in C.number_prompts(4, seed=2)]
    assert sample(model, tok, convs, seed=1) == sample(model, tok, convs, seed=1)


def test_profiles_are_exposed():
    assert set(TINY_CONFIG) >= {"default", "test"}
    assert TINY_CONFIG["test"].base_steps < TINY_CONFIG["default"].base_steps


def test_batched_cached_sampling_matches_plain_greedy_decoding(base):
    model, tok = base
    convs = [C.chat(p.text) for p in C.number_prompts(3, seed=8)] + [C.chat("Which animal do you like best? One word.")]
    batched = sample(model, tok, convs, seed=0, temperature=1e-6, max_new_tokens=12)
    for conv, got in zip(convs, batched, strict=True):
        ids = tok(tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True), add_special_tokens=False, return_tensors="pt")["input_ids"]
        out = []
        with torch.no_grad():
            for _ in range(12):
                nxt = int(model(input_ids=ids).logits[0, -1].argmax())
                if nxt == tok.eos_token_id:
                    break
                out.append(nxt)
                ids = torch.cat([ids, torch.tensor([[nxt]])], 1)
        assert got == tok.decode(out, skip_special_tokens=True)
