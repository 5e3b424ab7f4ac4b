"""The fake OpenAI server used by API-facing tests: the real `openai` client against it, faults, and a
tiny local transformers model behind /v1/completions whose log-probabilities must match a local forward pass."""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.error
import urllib.request

import openai
import pytest
from openai_server import FakeOpenAI, approx_tokens, fake_openai, transformers_completions  # noqa: F401

MSGS = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 6 times 7?"}]


def _client(server: FakeOpenAI, **kw) -> openai.OpenAI:
    kw.setdefault("max_retries", 0)
    kw.setdefault("timeout", 10.0)
    return openai.OpenAI(base_url=server.base_url, api_key="sk-test", **kw)


def _raw(server: FakeOpenAI, method: str, path: str, body=None, headers=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}", data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


def _server_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("FakeOpenAI")]


# -- chat ---------------------------------------------------------------------------------------------
def test_chat_answer_usage_and_recording():
    seen = []

    def chat(body):
        seen.append(body)
        return "42"

    with FakeOpenAI(chat=chat) as server:
        assert server.base_url.startswith("http://127.0.0.1:") and server.base_url.endswith("/v1")
        client = _client(server)
        r = client.chat.completions.create(
            model="test-model", messages=MSGS, temperature=0.7, seed=123, max_tokens=20, response_format={"type": "json_object"}
        )
        assert r.choices[0].message.content == "42"
        assert r.choices[0].message.role == "assistant"
        assert r.choices[0].finish_reason == "stop"
        assert r.choices[0].logprobs is None
        assert r.model == "test-model"
        assert r.usage.completion_tokens == 1
        assert r.usage.prompt_tokens > 0
        assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
        (body,) = seen
        assert body["temperature"] == 0.7 and body["seed"] == 123 and body["response_format"] == {"type": "json_object"}
        assert body["messages"] == MSGS
        (rec,) = server.requests
        path, rbody, headers = rec
        assert path == "/v1/chat/completions" and rbody == body
        assert headers["authorization"] == "Bearer sk-test"
        assert server.api_keys_seen == ["sk-test"]
        client.close()


def test_chat_n_choices_and_defaults():
    with FakeOpenAI(chat=lambda body: [f"answer {i}" for i in range(body["n"])]) as server:
        client = _client(server)
        r = client.chat.completions.create(model="m", messages=MSGS, n=3)
        assert [c.message.content for c in r.choices] == ["answer 0", "answer 1", "answer 2"]
        assert [c.index for c in r.choices] == [0, 1, 2]
        assert r.usage.completion_tokens == 6
        server.chat = lambda body: "same"  # a str is repeated for every choice
        r = client.chat.completions.create(model="m", messages=MSGS, n=2)
        assert [c.message.content for c in r.choices] == ["same", "same"]
        server.chat = None  # no callable: echo the last message
        r = client.chat.completions.create(model="m", messages=MSGS)
        assert r.choices[0].message.content == "What is 6 times 7?"
        client.close()


def test_chat_max_tokens_truncates_with_length():
    with FakeOpenAI(chat=lambda body: "one two three four five") as server:
        client = _client(server)
        r = client.chat.completions.create(model="m", messages=MSGS, max_tokens=2)
        assert r.choices[0].message.content == "one two"
        assert r.choices[0].finish_reason == "length"
        assert r.usage.completion_tokens == 2
        client.close()


def test_chat_logprobs_from_callable_and_synthesized():
    lp = [
        {"token": "4", "logprob": -0.1, "top_logprobs": [{"token": "4", "logprob": -0.1}, {"token": "5", "logprob": -2.5}]},
        {"token": "2", "logprob": -0.2, "top_logprobs": [{"token": "2", "logprob": -0.2}, {"token": "3", "logprob": -3.0}]},
    ]
    with FakeOpenAI(chat=lambda body: {"content": "42", "logprobs": lp}) as server:
        client = _client(server)
        r = client.chat.completions.create(model="m", messages=MSGS, logprobs=True, top_logprobs=2)
        content = r.choices[0].logprobs.content
        assert [t.token for t in content] == ["4", "2"]
        assert [t.logprob for t in content] == [-0.1, -0.2]
        assert [[x.token for x in t.top_logprobs] for t in content] == [["4", "5"], ["2", "3"]]
        assert content[0].bytes == [ord("4")]
        r = client.chat.completions.create(model="m", messages=MSGS, logprobs=True, top_logprobs=1)
        assert [len(t.top_logprobs) for t in r.choices[0].logprobs.content] == [1, 1]
        r = client.chat.completions.create(model="m", messages=MSGS)  # not requested -> not sent
        assert r.choices[0].logprobs is None
        server.chat = lambda body: "Hello, world"  # requested but not provided -> approximate tokens, logprob 0
        r = client.chat.completions.create(model="m", messages=MSGS, logprobs=True)
        assert "".join(t.token for t in r.choices[0].logprobs.content) == "Hello, world"
        assert all(t.logprob == 0.0 for t in r.choices[0].logprobs.content)
        client.close()


def test_chat_full_response_override():
    full = {
        "id": "chatcmpl-x", "object": "chat.completion", "created": 1, "model": "other",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "raw"}, "finish_reason": "content_filter"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }  # fmt: skip
    with FakeOpenAI(chat=lambda body: full) as server:
        client = _client(server)
        r = client.chat.completions.create(model="m", messages=MSGS)
        assert r.model == "other" and r.choices[0].finish_reason == "content_filter" and r.choices[0].message.content == "raw"
        client.close()


def test_models_endpoint_and_unknown_path_404():
    with FakeOpenAI(models=("a", "b")) as server:
        client = _client(server)
        assert [m.id for m in client.models.list()] == ["a", "b"]
        assert client.models.retrieve("b").id == "b"
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve("zzz")
        with pytest.raises(openai.NotFoundError) as ei:
            client.files.list()
        assert ei.value.status_code == 404
        status, _, body = _raw(server, "POST", "/v1/nope", {"x": 1})
        assert status == 404
        assert set(body["error"]) == {"message", "type", "param", "code"}
        assert body["error"]["type"] == "invalid_request_error"
        client.close()


def test_bad_requests_get_openai_errors():
    with FakeOpenAI(strict_models=True) as server:
        client = _client(server)
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="nope", messages=MSGS)
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="test-model", messages=[])
        with pytest.raises(openai.BadRequestError):
            client.completions.create(model="test-model", prompt="x", max_tokens=-1)
        client.close()


# -- faults -------------------------------------------------------------------------------------------
def test_429_with_retry_after_then_success():
    with FakeOpenAI(chat=lambda body: "ok") as server:
        server.fail_next(429, retry_after=0.05)
        client = _client(server, max_retries=2)
        r = client.chat.completions.create(model="m", messages=MSGS)
        assert r.choices[0].message.content == "ok"
        assert len(server.requests) == 2
        assert server.requests[0].body == server.requests[1].body
        client.close()

        server.fail_next(429, retry_after=0.05)
        client = _client(server)  # max_retries=0: the error reaches the caller, with the headers
        with pytest.raises(openai.RateLimitError) as ei:
            client.chat.completions.create(model="m", messages=MSGS)
        assert ei.value.status_code == 429
        assert ei.value.response.headers["retry-after"] == "0.05"
        assert ei.value.response.headers["retry-after-ms"] == "50"
        assert ei.value.code == "rate_limit_exceeded"
        client.close()


def test_500_then_success_and_times():
    with FakeOpenAI(chat=lambda body: "ok") as server:
        server.fail_next(500, retry_after=0.01)
        client = _client(server, max_retries=2)
        assert client.chat.completions.create(model="m", messages=MSGS).choices[0].message.content == "ok"
        assert len(server.requests) == 2
        server.fail_next(503, times=3, retry_after=0.01)  # more failures than retries
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="m", messages=MSGS)
        assert len(server.requests) == 5
        server.fail_next(400, body="plain text failure")
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="m", messages=MSGS)
        assert len(server.requests) == 6  # 400 is not retried
        client.close()


def test_drop_raises_connection_error_then_recovers():
    with FakeOpenAI(chat=lambda body: "ok") as server:
        client = _client(server)
        client.chat.completions.create(model="m", messages=MSGS)  # a pooled keep-alive connection exists
        server.drop_next()
        with pytest.raises(openai.APIConnectionError):
            client.chat.completions.create(model="m", messages=MSGS)
        assert client.chat.completions.create(model="m", messages=MSGS).choices[0].message.content == "ok"
        server.drop_next()
        retrying = _client(server, max_retries=1)
        assert retrying.chat.completions.create(model="m", messages=MSGS).choices[0].message.content == "ok"
        assert len(server.requests) == 5
        client.close()
        retrying.close()


def test_malformed_body_raises():
    with FakeOpenAI(chat=lambda body: "ok") as server:
        client = _client(server)
        server.malformed_next()
        with pytest.raises((ValueError, openai.APIError)):
            client.chat.completions.create(model="m", messages=MSGS)
        assert client.chat.completions.create(model="m", messages=MSGS).choices[0].message.content == "ok"
        client.close()


def test_delay_timeout_and_stop_does_not_wait_for_sleepers():
    before = set(_server_threads())
    server = FakeOpenAI(chat=lambda body: "ok").start()
    client = _client(server, timeout=0.2)
    server.delay(0.05)
    t0 = time.monotonic()
    assert client.chat.completions.create(model="m", messages=MSGS).choices[0].message.content == "ok"
    assert time.monotonic() - t0 >= 0.05
    server.delay(30)
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="m", messages=MSGS)
    t0 = time.monotonic()
    server.stop()  # a handler is still sleeping in delay(); stop must wake it
    assert time.monotonic() - t0 < 3
    assert set(_server_threads()) <= before
    client.close()


def test_callable_error_is_500_not_retried_and_kept():
    def chat(body):
        raise RuntimeError("bug in test callable")

    with FakeOpenAI(chat=chat) as server:
        client = _client(server, max_retries=2)
        with pytest.raises(openai.InternalServerError, match="bug in test callable"):
            client.chat.completions.create(model="m", messages=MSGS)
        assert len(server.requests) == 1
        assert isinstance(server.errors[0], RuntimeError)
        client.close()


def test_keys_recorded_and_any_key_accepted():
    with FakeOpenAI() as server:
        status, headers, body = _raw(server, "GET", "/v1/models")
        assert status == 200 and body["data"][0]["id"] == "test-model"
        status, _, _ = _raw(server, "GET", "/v1/models", headers={"Authorization": "Bearer sk-secret-123"})
        assert status == 200
        status, _, _ = _raw(server, "GET", "/v1/models", headers={"Authorization": "garbage"})
        assert status == 200
        assert server.api_keys_seen == [None, "sk-secret-123", "garbage"]


def test_shutdown_is_clean_with_open_keepalive_connections():
    before = set(_server_threads())
    for _ in range(2):
        with FakeOpenAI() as server:
            client = _client(server)  # deliberately not closed before the server stops
            for _ in range(3):
                client.models.list()
            assert len(_server_threads()) > len(before)
        assert set(_server_threads()) <= before
        client.close()


def test_concurrent_requests_are_answered_independently():
    from concurrent.futures import ThreadPoolExecutor

    with FakeOpenAI(chat=lambda body: body["messages"][-1]["content"].upper()) as server:
        server.delay(0.02)  # make requests overlap
        client = _client(server)

        def ask(i):
            msgs = [{"role": "user", "content": f"item {i}"}]
            return client.chat.completions.create(model="m", messages=msgs).choices[0].message.content

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(ask, range(24)))
        assert answers == [f"ITEM {i}" for i in range(24)]
        assert len(server.requests) == 24 and server.api_keys_seen == ["sk-test"] * 24
        client.close()


def test_fixture_helper(fake_openai):  # noqa: F811 - the fixture imported from openai_server
    fake_openai.chat = lambda body: "from fixture"
    client = _client(fake_openai)
    assert client.chat.completions.create(model="m", messages=MSGS).choices[0].message.content == "from fixture"
    client.close()


# -- /v1/completions ----------------------------------------------------------------------------------
def test_completions_default_backend_shape():
    with FakeOpenAI() as server:
        client = _client(server)
        r = client.completions.create(model="m", prompt=["Hello there, you.", "Bye"], echo=True, logprobs=1, max_tokens=0, n=2)
        assert [c.text for c in r.choices] == ["Hello there, you.", "Hello there, you.", "Bye", "Bye"]
        assert [c.index for c in r.choices] == [0, 1, 2, 3]
        lp = r.choices[0].logprobs
        assert lp.tokens == approx_tokens("Hello there, you.")
        assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
        assert lp.text_offset[0] == 0
        assert r.usage.prompt_tokens == len(lp.tokens) + 1 and r.usage.completion_tokens == 0
        r = client.completions.create(model="m", prompt="Hi", max_tokens=5)
        assert r.choices[0].text == " ok" and r.choices[0].logprobs is None
        client.close()


SENTENCES = [
    "the cat sat on the mat.",
    "the dog sat on the log.",
    "a cat and a dog are friends.",
    "Question: what did the cat do? Answer: the cat sat.",
    "numbers: 1, 2, 3, 42, 17, 99.",
]


def _tiny_tokenizer(trim_offsets: bool, bos: bool):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(SENTENCES * 4, trainer)
    post = [processors.ByteLevel(trim_offsets=trim_offsets)]
    if bos:
        post.append(processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]))
    tok.post_processor = processors.Sequence(post)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")


@pytest.fixture(scope="module")
def tiny_lm():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(1)
    torch.manual_seed(0)
    tokenizers_ = {(trim, bos): _tiny_tokenizer(trim, bos) for trim in (False, True) for bos in (False, True)}
    vocab = len(tokenizers_[(False, False)])
    assert all(len(t) == vocab for t in tokenizers_.values())
    cfg = LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
        vocab_size=vocab, max_position_embeddings=128, initializer_range=0.5, bos_token_id=0, eos_token_id=1,
    )  # fmt: skip
    model = LlamaForCausalLM(cfg).eval()
    return model, tokenizers_


def _local_logprobs(model, ids):
    import torch

    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    return [None] + [float(logp[i - 1, ids[i]]) for i in range(1, len(ids))], logp


@pytest.mark.parametrize("trim_offsets,bos", [(False, False), (True, False), (False, True)])
def test_completions_echo_logprobs_match_local_forward(tiny_lm, trim_offsets, bos):
    model, toks = tiny_lm
    tokenizer = toks[(trim_offsets, bos)]
    context, continuation = "Question: what did the cat do? Answer:", " the cat sat on the mat."
    prompt = context + continuation
    with FakeOpenAI(completions=transformers_completions(model, tokenizer)) as server:
        client = _client(server)
        r = client.completions.create(model="tiny", prompt=prompt, echo=True, logprobs=2, max_tokens=0)
        client.close()
    (choice,) = r.choices
    lp = choice.logprobs
    assert choice.text == prompt

    ids = tokenizer(prompt)["input_ids"]
    local, _ = _local_logprobs(model, ids)
    assert len(lp.tokens) == len(ids) == len(lp.token_logprobs) == len(lp.text_offset) == len(lp.top_logprobs)
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    for api, ref in zip(lp.token_logprobs[1:], local[1:], strict=True):
        assert api == pytest.approx(ref, abs=1e-4)
    assert r.usage.prompt_tokens == len(ids)

    # offsets reconstruct the prompt: each non-special token is the prompt text at its offset
    assert lp.text_offset == sorted(lp.text_offset) and lp.text_offset[0] == 0
    real = [(t, o) for t, o, i in zip(lp.tokens, lp.text_offset, ids, strict=True) if i not in tokenizer.all_special_ids]
    assert "".join(t for t, _ in real) == prompt
    for t, o in real:
        assert prompt[o : o + len(t)] == t
    if bos:
        assert lp.tokens[0] == "<s>" and lp.text_offset[0] == 0

    # log p(continuation | context) from the API == the same sum computed locally
    api_sum = sum(x for x, o in zip(lp.token_logprobs, lp.text_offset, strict=True) if o >= len(context))
    ctx_ids = tokenizer(context)["input_ids"]
    cont_ids = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    assert ctx_ids + cont_ids == ids  # the boundary is a token boundary for this tokenizer
    local_sum = sum(local[len(ctx_ids) :])
    assert api_sum == pytest.approx(local_sum, abs=1e-4)
    assert math.isfinite(api_sum) and api_sum < 0

    # top_logprobs hold the top-2 alternatives (+ the actual token) with the right values
    _, logp = _local_logprobs(model, ids)
    import torch

    best = int(torch.argmax(logp[2]))
    assert lp.top_logprobs[3][tokenizer.decode([best])] == pytest.approx(float(logp[2, best]), abs=1e-4)
    assert 2 <= len(lp.top_logprobs[3]) <= 3


def test_completions_greedy_generation_matches_local(tiny_lm):
    import torch

    model, toks = tiny_lm
    tokenizer = toks[(False, False)]
    prompt = "the dog sat"
    with FakeOpenAI(completions=transformers_completions(model, tokenizer)) as server:
        client = _client(server)
        r = client.completions.create(model="tiny", prompt=prompt, echo=True, logprobs=0, max_tokens=4)
        r2 = client.completions.create(model="tiny", prompt=prompt, logprobs=0, max_tokens=4)  # no echo
        client.close()
    (choice,) = r.choices
    lp = choice.logprobs
    p_ids = tokenizer(prompt)["input_ids"]
    # reference: greedy decoding with full forward passes
    ids = list(p_ids)
    gen = []
    for _ in range(4):
        with torch.no_grad():
            nxt = int(torch.argmax(model(input_ids=torch.tensor([ids])).logits[0, -1]))
        if nxt == tokenizer.eos_token_id:
            break
        ids.append(nxt)
        gen.append(nxt)
    completion = tokenizer.decode(gen)
    assert choice.text == prompt + completion
    assert choice.finish_reason == ("length" if len(gen) == 4 else "stop")
    assert r.usage.completion_tokens == len(gen) and r.usage.prompt_tokens == len(p_ids)
    local, _ = _local_logprobs(model, ids)
    assert len(lp.token_logprobs) == len(ids)
    for api, ref in zip(lp.token_logprobs[1:], local[1:], strict=True):
        assert api == pytest.approx(ref, abs=1e-4)
    assert "".join(lp.tokens[len(p_ids) :]) == completion
    for t, o in zip(lp.tokens, lp.text_offset, strict=True):
        assert choice.text[o : o + len(t)] == t
    # without echo: only the generated part, offsets index into the generated text
    (c2,) = r2.choices
    assert c2.text == completion
    assert c2.logprobs.tokens == lp.tokens[len(p_ids) :]
    assert c2.logprobs.token_logprobs == lp.token_logprobs[len(p_ids) :]
    for t, o in zip(c2.logprobs.tokens, c2.logprobs.text_offset, strict=True):
        assert c2.text[o : o + len(t)] == t
