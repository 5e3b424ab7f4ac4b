"""The scale-out path (issue 12): a vLLM server behind an OpenAI-compatible URL scores prompt log-probabilities and
generates, several texts per request and several requests in flight. The fake server (tests/openai_server.py) speaks
both of vLLM's reply shapes: echo + logprobs, and prompt_logprobs; a tiny local model stands behind it."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner
from openai_server import FakeOpenAI, transformers_completions
from tiny_hf import make_tiny_model

from auditor.models import Placement, load_model, parse_ref
from auditor.models.cache import CallCache
from auditor.models.openai_backend import OpenAIModel, render_plain


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = make_tiny_model(tmp_path_factory.mktemp("vllm") / "model", seed=2)
    model = load_model(parse_ref(str(folder)), Placement("cpu", "fp32"))
    return folder, model


def _local_total(model, head: str, completion: str) -> float:
    """log p(completion | head) from a local forward pass over the plain text, tokens split where the server splits."""
    import torch

    torch_model, tok = model.weights()
    enc = tok(head + completion, return_offsets_mapping=True)
    with torch.no_grad():
        logp = torch.log_softmax(torch_model(torch.tensor([enc["input_ids"]])).logits[0], -1)
    return sum(logp[i - 1, t].item() for i, (t, (start, _)) in enumerate(zip(enc["input_ids"], enc["offset_mapping"], strict=True))
               if i and start >= len(head))


def test_the_fake_answers_prompt_logprobs_in_vllms_shape(tiny):
    _, model = tiny
    torch_model, tok = model.weights()
    with FakeOpenAI(completions=transformers_completions(torch_model, tok)) as server:
        reply = server.client(max_retries=0).completions.create(model="test-model", prompt=["Pick an animal: owl", "Numbers: 1, 2"],
                                                                  max_tokens=1, extra_body={"prompt_logprobs": 2})
    for choice, prompt in zip(reply.choices, ["Pick an animal: owl", "Numbers: 1, 2"], strict=True):
        entries = choice.prompt_logprobs
        assert entries[0] is None and len(entries) == len(tok(prompt)["input_ids"])
        assert all(1 <= len(e) <= 3 and all({"logprob", "rank", "decoded_token"} <= set(v) for v in e.values()) for e in entries[1:])
        actual = [next(iter(e.values())) for e in entries[1:]]
        assert all(a["rank"] == 1 for a in actual) and prompt.endswith("".join(a["decoded_token"] for a in actual))
    with FakeOpenAI(echo_logprobs=False) as server, pytest.raises(Exception, match="prompt_logprobs"):
        server.client(max_retries=0).completions.create(model="test-model", prompt="hi", echo=True, logprobs=1, max_tokens=1)


@pytest.mark.parametrize("echo", [True, False], ids=["echo", "prompt_logprobs"])
def test_scores_through_either_reply_shape_match_a_local_pass(tiny, tmp_path, echo):
    _, model = tiny
    torch_model, tok = model.weights()
    prompts = ["Pick an animal:", "Numbers: 123, 456", "Here are some numbers: 400, 500."] * 3
    completions = [" owl", " 789", " 101, 202"] * 3
    with FakeOpenAI(completions=transformers_completions(torch_model, tok), echo_logprobs=echo) as server:
        api = OpenAIModel(parse_ref("openai:test-model", "You love owls."), base_url=server.base_url, api_key="k", max_retries=0,
                          cache=CallCache(tmp_path / "cache"), jobs=3, batch=2)
        scores = api.score(prompts, completions)
        assert api._mode == ("echo" if echo else "prompt_logprobs")
        sent = [r.body for r in server.requests if r.path.endswith("/completions") and isinstance(r.body.get("prompt"), list)]
        assert sent and max(len(b["prompt"]) for b in sent) == 2, "several texts per request"
        texts = [t for b in sent for t in b["prompt"] if t != "Hello"]  # "Hello": the one-token probe of what the server supports
        assert len(texts) == len(set(texts)) == 3, "each distinct text sent once"
        before = len(server.requests)
        assert [s.total for s in api.score(prompts, completions)] == [s.total for s in scores]
        assert len(server.requests) == before, "a rerun is served from the cache"
    for prompt, completion, score in zip(prompts, completions, scores, strict=True):
        assert score.total == pytest.approx(_local_total(model, render_plain("You love owls.", prompt), completion), abs=1e-4)


def test_requests_are_in_flight_together(tiny, tmp_path):
    _, model = tiny
    torch_model, tok = model.weights()
    backend = transformers_completions(torch_model, tok)
    active, peak, lock = [0], [0], threading.Lock()

    def slow(body):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.15)
        try:
            return backend(body)
        finally:
            with lock:
                active[0] -= 1

    with FakeOpenAI(completions=slow, chat=lambda body: "1, 2, 3") as server:
        api = OpenAIModel(parse_ref("openai:test-model"), base_url=server.base_url, api_key="k", max_retries=0,
                          cache=CallCache(enabled=False), logprobs=True, jobs=4, batch=1)
        api.score([f"Numbers: {i}" for i in range(8)], [" 1"] * 8)
        assert peak[0] >= 2, "scoring requests overlap"
        answers = api.generate([f"q{i}" for i in range(6)])
        assert answers == [["1, 2, 3"]] * 6, "answers come back in order"


def test_likelihood_detector_runs_on_a_vllm_endpoint(tiny, tmp_path, monkeypatch):
    """`audit DATA --base openai:MODEL` with OPENAI_BASE_URL at the (fake) vLLM server: the detector that sees hidden
    transfer runs on the endpoint's prompt log-probabilities, as it would on one or many vLLM replicas behind one URL."""
    from auditor.cli import main

    _, model = tiny
    torch_model, tok = model.weights()
    rng = np.random.default_rng(0)
    for name in ("d", "r"):
        rows = [{"prompt": f"Numbers: {rng.integers(100, 999)}", "completion": ", ".join(str(x) for x in rng.integers(0, 999, 4))} for _ in range(24)]
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setenv("TRAIT_AUDIT_CACHE", str(tmp_path / "cache"))
    with FakeOpenAI(completions=transformers_completions(torch_model, tok), echo_logprobs=False) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        result = CliRunner().invoke(main, [str(tmp_path / "d.jsonl"), "--base", "openai:test-model", "--trait", "animal:owl",
                                           "--detectors", "likelihood", "--reference", str(tmp_path / "r.jsonl"), "--out", str(tmp_path / "o")])
    assert result.exit_code in (0, 1), result.output
    det = json.loads((tmp_path / "o" / "report.json").read_text())["detectors"][0]
    assert det["status"] == "ran", det
    assert det["metrics"]["rows_scored"] == 24 and "animal:owl" in det["metrics"]["traits"]
