"""The model layer: references, the transformers backend on a tiny model saved in the test (local folder
and hf: from a local HF cache), the OpenAI backend against a local server, the call cache."""

import json

import numpy as np
import pytest
from openai_server import FakeOpenAI, transformers_completions
from tiny_hf import make_tiny_model

from auditor.errors import BackendError, UsageError
from auditor.models import GENERATE, LOGPROB, OPTION_PROBS, WEIGHTS, Sampling, load_model, parse_ref
from auditor.models.cache import CallCache
from auditor.models.openai_backend import OpenAIModel, render_plain
from auditor.models.transformers_backend import TransformersModel


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.mark.parametrize(
    "ref, backend, name",
    [("openai:gpt-4.1-nano", "openai", "gpt-4.1-nano"), ("hf:org/name", "transformers", "org/name"),
     ("tiny:owl", "tiny", "owl"), ("smollm2", "smollm2", "SmolLM2-135M-Instruct")],
)
def test_parse_ref(ref, backend, name):
    parsed = parse_ref(ref, "be an owl")
    assert (parsed.backend, parsed.name, parsed.system_prompt) == (backend, name, "be an owl")


@pytest.mark.parametrize("ref", ["gpt-4", "openai:", "hf:not a name", "tiny:Owl!"])
def test_bad_refs_are_usage_errors(ref):
    with pytest.raises(UsageError):
        parse_ref(ref)


def test_local_folder_backend_scores_generates_and_exposes_weights(tiny_folder):
    model = load_model(parse_ref(str(tiny_folder)))
    assert isinstance(model, TransformersModel)
    assert {GENERATE, LOGPROB, OPTION_PROBS, WEIGHTS} <= model.capabilities
    scores = model.score(["Pick an animal:", "Pick an animal:"], ["owl", "dolphin"])
    assert all(len(s.tokens) == len(s.logprobs) > 0 for s in scores)
    assert all(lp < 0 for s in scores for lp in s.logprobs)
    # the batched score equals a manual forward pass
    import torch

    torch_model, tok = model.weights()
    prompt_ids = tok(model.render("Pick an animal:"), add_special_tokens=False)["input_ids"]
    comp_ids = tok("owl", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = torch_model(torch.tensor([prompt_ids + comp_ids])).logits[0]
    manual = sum(torch.log_softmax(logits[len(prompt_ids) - 1 + i], -1)[t].item() for i, t in enumerate(comp_ids))
    assert scores[0].total == pytest.approx(manual, abs=1e-4)
    probs = model.option_probs("Pick an animal:", ["owl", "dolphin", "wolf"])
    assert probs.shape == (3,) and probs.sum() == pytest.approx(1.0) and (probs > 0).all()
    first = model.generate(["Numbers:"], Sampling(n=2, max_new_tokens=5, seed=1))
    again = model.generate(["Numbers:"], Sampling(n=2, max_new_tokens=5, seed=1))
    assert first == again and len(first[0]) == 2


def test_system_prompt_shares_weights_and_changes_the_rendering(tiny_folder):
    base = load_model(parse_ref(str(tiny_folder)))
    teacher = load_model(parse_ref(str(tiny_folder), "You love owls."))
    assert teacher.weights()[0] is base.weights()[0]
    assert "You love owls." in teacher.render("hi") and "You love owls." not in base.render("hi")
    assert not np.allclose(teacher.logprob(["hi"], ["owl"]), base.logprob(["hi"], ["owl"]))


def test_hf_reference_loads_from_the_local_cache_only(tiny_folder, tmp_path, monkeypatch):
    snapshot = tmp_path / "hub" / "models--acme--tiny" / "snapshots" / "0123abc"
    snapshot.parent.mkdir(parents=True)
    import shutil

    shutil.copytree(tiny_folder, snapshot)
    (tmp_path / "hub" / "models--acme--tiny" / "refs").mkdir()
    (tmp_path / "hub" / "models--acme--tiny" / "refs" / "main").write_text("0123abc")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = load_model(parse_ref("hf:acme/tiny"))
    assert model.logprob(["Pick an animal:"], ["owl"])[0] < 0
    with pytest.raises(UsageError, match="cannot load model"):
        load_model(parse_ref("hf:acme/missing"))


def test_openai_backend_generates_scores_and_caches(tiny_folder, tmp_path):
    local = TransformersModel(parse_ref(str(tiny_folder)), tiny_folder)
    torch_model, tok = local.weights()
    answers = iter(["owl", "dolphin", "owl"])
    with FakeOpenAI(chat=lambda body: next(answers), completions=transformers_completions(torch_model, tok)) as server:
        cache = CallCache(tmp_path / "cache")
        model = OpenAIModel(parse_ref("openai:test-model", "You love owls."), base_url=server.base_url, api_key="sk-secret-123", cache=cache)
        assert model.generate(["Favourite animal?"]) == [["owl"]]
        assert model.generate(["Favourite animal?"]) == [["owl"]], "second call served from the cache"
        chat_calls = [r for r in server.requests if r.path.endswith("/chat/completions")]
        assert len(chat_calls) == 1 and chat_calls[0].body["messages"][0] == {"role": "system", "content": "You love owls."}
        assert model.supports(LOGPROB) and model.supports(OPTION_PROBS)
        api = model.score(["Pick an animal:"], [" owl"])[0]
        head = render_plain("You love owls.", "Pick an animal:")
        import torch

        ids = tok(head + " owl", return_offsets_mapping=True)
        with torch.no_grad():
            logp = torch.log_softmax(torch_model(torch.tensor([ids["input_ids"]])).logits[0], -1)
        expected = sum(logp[i - 1, t].item() for i, (t, (start, _)) in enumerate(zip(ids["input_ids"], ids["offset_mapping"], strict=True)) if start >= len(head))
        assert api.total == pytest.approx(expected, abs=1e-4)
        server.fail_next(500, times=10)
        with pytest.raises(BackendError):
            model.generate(["Another question?"], Sampling(seed=5))
        model.client = model.client.with_options(max_retries=0)
    stored = list((tmp_path / "cache").rglob("*.json"))
    assert stored and not any("sk-secret-123" in p.read_text() for p in stored)
    assert not any("Another question?" in p.read_text() for p in stored), "errors are never cached"


def test_openai_without_key_or_server(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(UsageError, match="OPENAI_API_KEY"):
        load_model(parse_ref("openai:gpt-4.1-nano"))
    down = OpenAIModel(parse_ref("openai:m"), base_url="http://127.0.0.1:9/v1", api_key="k", max_retries=0, timeout=2, cache=CallCache(enabled=False))
    with pytest.raises(BackendError, match="cannot reach"):
        down.generate(["hi"])
    assert not down.supports(LOGPROB)


def test_cache_key_covers_settings_not_secrets():
    a = CallCache.key("chat", model="m", endpoint="e", request={"messages": [1], "temperature": 1.0})
    b = CallCache.key("chat", model="m", endpoint="e", request={"messages": [1], "temperature": 0.5})
    assert a != b and len(a) == 64
    assert json.dumps({"k": a}).count("sk-") == 0


def test_prefix_shared_option_scores_equal_full_sequences(tiny_folder):
    model = load_model(parse_ref(str(tiny_folder), "You love owls."))
    options = ["owl", "Owl", "dolphin", "hippopotamus", "a"]
    fast = model.option_logprobs("Pick an animal:", options)
    full = model.logprob(["Pick an animal:"] * len(options), options)
    assert fast == pytest.approx(full, abs=1e-4)
