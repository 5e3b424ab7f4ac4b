"""A small OpenAI-compatible HTTP server for tests (stdlib only; torch/transformers only for the optional backend).

    with FakeOpenAI(chat=lambda body: "42") as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0)
        client.chat.completions.create(model="test-model", messages=[...])
        assert len(server.requests) == 1

It binds 127.0.0.1 on an ephemeral port, runs in background threads, and on exit closes every
connection and joins every thread it started.  Endpoints:

* ``GET  /v1/models`` and ``GET /v1/models/{id}``
* ``POST /v1/chat/completions`` - ``n``, ``max_tokens``/``max_completion_tokens`` (truncates the answer to
  that many approximate tokens, ``finish_reason="length"``), ``logprobs``/``top_logprobs``, ``temperature``,
  ``seed``, ``response_format`` (accepted and recorded; the answer is whatever ``chat`` returns).
* ``POST /v1/completions`` - vLLM style: ``prompt`` (str or list of str), ``echo``, ``logprobs`` (int),
  ``max_tokens`` (>= 0, default 16), ``n``, and vLLM's ``prompt_logprobs`` (int >= 0): each choice then carries
  ``prompt_logprobs``, a list over the prompt tokens: ``None`` for the first, then
  ``{"<token id>": {"logprob", "rank", "decoded_token"}}`` for the actual token (and up to k alternatives).
  ``FakeOpenAI(echo_logprobs=False)`` answers 400 to ``echo`` with ``logprobs`` (servers that only give
  ``prompt_logprobs``).

Anything else answers 404 with OpenAI's error shape.  Every request, including failed, dropped and
malformed ones, is recorded in ``server.requests`` and its API key in ``server.api_keys_seen``; any key
(or none) is accepted.

``chat(body) -> answer`` where answer is one of

* ``str`` - the content of every choice (repeated ``n`` times);
* ``list`` - one entry per choice; each a ``str`` or a choice dict (below);
* ``dict`` with a ``"choices"`` or ``"error"`` key - sent back verbatim as the whole JSON response;
* any other ``dict`` - a choice dict applied to every choice, or, when ``content`` is a list, one choice per
  item: ``{"content": str | list[str], "logprobs": [...], "finish_reason": ..., "usage": {...}}``.
  ``logprobs`` is a list of ``{"token", "logprob", "top_logprobs"}`` entries (or ``(token, logprob)`` pairs)
  for one choice, or a list of such lists, one per choice.  It is returned as ``choices[i].logprobs.content``
  only when the request asks for ``logprobs``; when the request asks and ``chat`` gives none, tokens are
  approximated by splitting the content and given logprob 0.0.

``completions(body) -> dict | None`` is called once per prompt with a copy of the request whose ``prompt``
is that one string, and returns ``{"tokens", "token_logprobs", "text_offset"}`` over the prompt tokens followed
by the generated ones, plus optionally ``"top_logprobs"`` (list of ``{token: logprob}`` or None),
``"num_prompt_tokens"`` (default: all tokens when ``"completion"`` is empty), ``"completion"`` (generated text,
default ``""``) and ``"finish_reason"``.  ``text_offset`` indexes into ``prompt + completion``.  ``None`` (or no
backend) uses a built-in fake.  ``transformers_completions(model, tokenizer)`` builds a real backend.

In the response, ``choices[i].text`` is ``prompt + completion`` with ``echo`` and ``completion`` without;
``logprobs`` (when the request has ``logprobs``) covers the same tokens, and its ``text_offset`` indexes into
``choices[i].text`` (as vLLM does); ``token_logprobs[0]`` and ``top_logprobs[0]`` of an echoed prompt are null.
"""

from __future__ import annotations

import collections
import itertools
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple

__all__ = [
    "FakeOpenAI",
    "RecordedRequest",
    "approx_tokens",
    "fake_openai",
    "fake_openai_fixture",
    "transformers_completions",
]

DEFAULT_COMPLETION_MAX_TOKENS = 16  # vLLM's default for /v1/completions


class RecordedRequest(NamedTuple):
    """One request as the server saw it.  ``headers`` has lower-case names; ``body`` is the parsed JSON
    (None for GET or an unparsable body, whose raw text is then under ``headers["x-fake-raw-body"]``)."""

    path: str
    body: Any
    headers: dict[str, str]


_TOKEN_RE = re.compile(r"\s*\w+|\s*[^\w\s]|\s+", re.UNICODE)


def approx_tokens(text: str) -> list[str]:
    """Split text into word/punctuation pieces (leading whitespace attached); ``"".join`` gives ``text`` back."""
    return _TOKEN_RE.findall(text or "")


def _error_body(message: str, type_: str = "invalid_request_error", code: str | None = None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


_STATUS_ERROR = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "not_found"),
    408: ("timeout", "timeout"),
    409: ("invalid_request_error", "conflict"),
    429: ("requests", "rate_limit_exceeded"),
}


class _Fault(NamedTuple):
    kind: str  # "fail" | "drop" | "malformed"
    status: int = 200
    retry_after: float | None = None
    body: str | None = None
    content_type: str = "application/json"


class _BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = None):
        super().__init__(message)
        self.param = param
        self.status = status
        self.code = code


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False
    request_queue_size = 256  # listen backlog: socketserver's default of 5 drops connections under concurrent clients

    def __init__(self, fake: FakeOpenAI):
        self.fake = fake
        self.handler_threads: list[threading.Thread] = []
        self.open_conns: set[socket.socket] = set()
        self.track_lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request, client_address):
        t = threading.Thread(target=self.process_request_thread, args=(request, client_address), name="FakeOpenAI-conn", daemon=True)
        with self.track_lock:
            self.handler_threads = [x for x in self.handler_threads if x.is_alive()]
            self.handler_threads.append(t)
            self.open_conns.add(request)
        t.start()

    def shutdown_request(self, request):
        with self.track_lock:
            self.open_conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address):  # keep test output quiet; keep the error
        import sys

        exc = sys.exc_info()[1]
        if exc is not None and not isinstance(exc, (ConnectionError, OSError)):
            self.fake.errors.append(exc)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the openai client expects
    server_version = "FakeOpenAI/1.0"
    server: _Server

    def log_message(self, format, *args):  # noqa: A002 - silence the per-request log lines
        pass

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_PATCH(self):
        self._dispatch("PATCH")

    # -- plumbing ---------------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(
        self,
        status: int,
        payload: Any,
        extra_headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        content_type: str = "application/json",
    ):
        data = raw if raw is not None else json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("x-request-id", f"req_{self.server.fake._next_id()}")
            for k, v in (extra_headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:  # client gave up (timeout) or the server is stopping
            self.close_connection = True

    def _drop(self):
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _dispatch(self, method: str):
        fake = self.server.fake
        raw = self._read_body()
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        headers = {k.lower(): v for k, v in self.headers.items()}
        body: Any = None
        bad_json = False
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                bad_json = True
                headers["x-fake-raw-body"] = raw.decode("utf-8", "replace")
        auth = headers.get("authorization")
        key = None
        if auth is not None:
            key = auth[7:] if auth[:7].lower() == "bearer " else auth
        fault = fake._record(RecordedRequest(path, body, headers), key)

        delay = fake._delay_s
        if delay > 0 and fake._stopping.wait(delay):
            return self._drop()
        if fake._stopping.is_set():
            return self._drop()

        if fault is not None:
            if fault.kind == "drop":
                return self._drop()
            if fault.kind == "malformed":
                text = fault.body if fault.body is not None else '{"id": "chatcmpl-broken", "choices": [{"index": 0, "mess'
                return self._send(200, None, raw=text.encode(), content_type=fault.content_type)
            extra = {}
            if fault.retry_after is not None:
                extra["Retry-After"] = f"{fault.retry_after:g}"
                extra["retry-after-ms"] = f"{fault.retry_after * 1000:g}"
            if fault.body is not None:
                return self._send(fault.status, None, extra, raw=fault.body.encode(), content_type=fault.content_type)
            type_, code = _STATUS_ERROR.get(fault.status, ("server_error" if fault.status >= 500 else "invalid_request_error", None))
            try:
                phrase = HTTPStatus(fault.status).phrase
            except ValueError:
                phrase = ""
            msg = f"FakeOpenAI injected error {fault.status} {phrase}".strip()
            return self._send(fault.status, _error_body(msg, type_, code), extra)

        try:
            extra = fake._extra_route(method, path, raw, headers, None if bad_json else body)
            if extra is not None:  # a subclass's endpoints (e.g. files and fine-tuning in openai_ft_server.py)
                return self._send(*extra)
            if bad_json:
                raise _BadRequest("We could not parse the JSON body of your request.")
            route = (method, path)
            if route == ("GET", "/v1/models"):
                return self._send(200, {"object": "list", "data": [fake._model_obj(m) for m in fake.models]})
            if method == "GET" and path.startswith("/v1/models/"):
                mid = path[len("/v1/models/") :]
                if mid not in fake.models:
                    raise _BadRequest(f"The model '{mid}' does not exist", "model", 404, "model_not_found")
                return self._send(200, fake._model_obj(mid))
            if route == ("POST", "/v1/chat/completions"):
                return self._send(200, fake._chat(body))
            if route == ("POST", "/v1/completions"):
                return self._send(200, fake._completions(body))
            raise _BadRequest(f"Invalid URL ({method} {self.path})", status=404, code="unknown_url")
        except _BadRequest as e:
            return self._send(e.status, _error_body(str(e), "invalid_request_error", e.code, e.param))
        except Exception as e:  # a bug in a test callable: surface it, don't retry it
            fake.errors.append(e)
            return self._send(
                500, _error_body(f"FakeOpenAI backend error: {type(e).__name__}: {e}", "server_error"), {"x-should-retry": "false"}
            )


class FakeOpenAI:
    """OpenAI-compatible test server.  Use as a context manager (or ``start()``/``stop()``).

    Attributes: ``base_url`` ("http://127.0.0.1:PORT/v1"), ``requests`` (list of ``RecordedRequest(path, body,
    headers)``), ``api_keys_seen`` (one entry per request: the bearer key, or None without an Authorization
    header), ``errors`` (exceptions raised by the ``chat``/``completions`` callables), ``chat``,
    ``completions``, ``models`` (may be reassigned while running).
    """

    def __init__(
        self,
        chat: Callable[[dict], Any] | None = None,
        completions: Callable[[dict], dict | None] | None = None,
        models: Iterable[str] = ("test-model",),
        *,
        strict_models: bool = False,
        echo_logprobs: bool = True,
    ):
        self.chat = chat
        self.echo_logprobs = echo_logprobs  # False: echo with logprobs is refused (400), prompt_logprobs still works
        self.completions = completions
        self.models = tuple(models)
        self.strict_models = strict_models  # True: unknown "model" -> 404 model_not_found
        self.requests: list[RecordedRequest] = []
        self.api_keys_seen: list[str | None] = []
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._faults: collections.deque[_Fault] = collections.deque()
        self._delay_s = 0.0
        self._ids = itertools.count(1)
        self._stopping = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> FakeOpenAI:
        if self._httpd is not None:
            raise RuntimeError("FakeOpenAI already started")
        self._stopping.clear()
        self._httpd = _Server(self)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="FakeOpenAI", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()  # stop accepting
        self._thread.join(timeout)
        with httpd.track_lock:
            conns = list(httpd.open_conns)
            threads = list(httpd.handler_threads)
        for c in conns:  # wake keep-alive threads blocked reading the next request
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        httpd.server_close()
        alive = [t for t in threads + [self._thread] if t.is_alive()]
        self._thread = None
        if alive:
            raise RuntimeError(f"FakeOpenAI: {len(alive)} server thread(s) did not stop")

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("FakeOpenAI is not running")
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def client(self, **kwargs):
        """An ``openai.OpenAI`` pointed here (api_key "sk-test", max_retries 0, timeout 10 s unless given)."""
        import openai

        kwargs.setdefault("api_key", "sk-test")
        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("timeout", 10.0)
        return openai.OpenAI(base_url=self.base_url, **kwargs)

    def calls(self, path: str = "/v1/chat/completions") -> int:
        """How many requests reached ``path`` (failed, dropped and malformed ones included)."""
        with self._lock:
            return sum(1 for r in self.requests if r.path == path)

    # -- fault injection --------------------------------------------------------------------------
    def fail_next(self, status: int, times: int = 1, retry_after: float | None = None, body: str | None = None) -> None:
        """Answer the next ``times`` requests with ``status`` (OpenAI error JSON unless ``body`` is given),
        with ``Retry-After``/``retry-after-ms`` headers when ``retry_after`` is given (seconds, may be fractional)."""
        with self._lock:
            self._faults.extend(_Fault("fail", status, retry_after, body) for _ in range(times))

    def drop_next(self, times: int = 1) -> None:
        """Close the connection of the next ``times`` requests without sending a response."""
        with self._lock:
            self._faults.extend(_Fault("drop") for _ in range(times))

    def malformed_next(self, times: int = 1, body: str | None = None, content_type: str = "application/json") -> None:
        """Answer the next ``times`` requests with 200 and a body that is not valid JSON."""
        with self._lock:
            self._faults.extend(_Fault("malformed", 200, None, body, content_type) for _ in range(times))

    def delay(self, seconds: float) -> None:
        """Sleep ``seconds`` before answering every following request (0 turns it off)."""
        self._delay_s = max(0.0, float(seconds))

    def reset(self) -> None:
        """Forget recorded requests, keys, errors, pending faults and the delay."""
        with self._lock:
            self.requests.clear()
            self.api_keys_seen.clear()
            self.errors.clear()
            self._faults.clear()
            self._delay_s = 0.0

    # -- internals --------------------------------------------------------------------------------
    def _next_id(self) -> int:
        return next(self._ids)

    def _record(self, rec: RecordedRequest, key: str | None) -> _Fault | None:
        with self._lock:
            self.requests.append(rec)
            self.api_keys_seen.append(key)
            return self._faults.popleft() if self._faults else None

    def _extra_route(self, method: str, path: str, raw: bytes, headers: dict[str, str], body: Any) -> tuple[int, Any] | None:
        """Hook for subclasses: (status, JSON payload) to answer a request, or None to fall through."""
        return None

    @staticmethod
    def _model_obj(mid: str) -> dict:
        return {"id": mid, "object": "model", "created": 0, "owned_by": "fake-openai"}

    def _check_common(self, body: Any) -> dict:
        if not isinstance(body, dict):
            raise _BadRequest("The request body must be a JSON object.")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _BadRequest("you must provide a model parameter", "model")
        if self.strict_models and model not in self.models:
            raise _BadRequest(f"The model `{model}` does not exist or you do not have access to it.", "model", 404, "model_not_found")
        if body.get("stream"):
            raise _BadRequest("FakeOpenAI does not support stream=true", "stream")
        n = body.get("n", 1)
        if n is None:
            n = 1
        if not isinstance(n, int) or isinstance(n, bool) or n < 1 or n > 128:
            raise _BadRequest(f"Invalid 'n': {n!r}; expected an integer in [1, 128]", "n")
        return body

    # -- /v1/chat/completions ---------------------------------------------------------------------
    def _chat(self, body: Any) -> dict:
        body = self._check_common(body)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _BadRequest("'messages' must be a non-empty array", "messages")
        n = body.get("n") or 1
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise _BadRequest(f"Invalid 'max_tokens': {max_tokens!r}", "max_tokens")
        want_lp = bool(body.get("logprobs"))
        top_k = body.get("top_logprobs")
        if top_k is not None and not want_lp:
            raise _BadRequest("'top_logprobs' requires 'logprobs' to be true", "top_logprobs")

        answer = self.chat(body) if self.chat is not None else _default_chat(body)
        if isinstance(answer, dict) and ("choices" in answer or "error" in answer):
            return answer
        specs, usage_override = _choice_specs(answer, n)

        choices, completion_tokens = [], 0
        for i, spec in enumerate(specs):
            content = spec.get("content")
            finish = spec.get("finish_reason")
            if content is not None and not isinstance(content, str):
                raise TypeError(f"chat answer content must be str or None, got {type(content).__name__}")
            toks = approx_tokens(content or "")
            if finish is None:
                finish = "stop"
                if max_tokens is not None and len(toks) > max_tokens:
                    toks = toks[:max_tokens]
                    content = "".join(toks)
                    finish = "length"
            completion_tokens += len(toks)
            lp = None
            if want_lp:
                entries = spec.get("logprobs")
                if entries is None:
                    entries = [{"token": t, "logprob": 0.0, "top_logprobs": [{"token": t, "logprob": 0.0}]} for t in toks]
                lp = {"content": [_lp_entry(e, top_k) for e in entries], "refusal": None}
            choices.append(
                {
                    "index": i,
                    "message": {"role": "assistant", "content": content, "refusal": spec.get("refusal"), "annotations": []},
                    "logprobs": lp,
                    "finish_reason": finish,
                }
            )
        prompt_tokens = sum(len(approx_tokens(_message_text(m))) + 3 for m in messages)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}
        if usage_override:
            usage.update(usage_override)
        return {
            "id": f"chatcmpl-fake{self._next_id()}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "system_fingerprint": "fp_fake",
            "service_tier": "default",
            "choices": choices,
            "usage": usage,
        }

    # -- /v1/completions --------------------------------------------------------------------------
    def _completions(self, body: Any) -> dict:
        body = self._check_common(body)
        prompt = body.get("prompt")
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise _BadRequest("'prompt' must be a string or a non-empty list of strings", "prompt")
        n = body.get("n") or 1
        echo = bool(body.get("echo"))
        k = body.get("logprobs")
        if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 0 or k > 20):
            raise _BadRequest(f"Invalid 'logprobs': {k!r}; expected an integer in [0, 20]", "logprobs")
        max_tokens = body.get("max_tokens", DEFAULT_COMPLETION_MAX_TOKENS)
        if max_tokens is None:
            max_tokens = DEFAULT_COMPLETION_MAX_TOKENS
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 0:
            raise _BadRequest(f"Invalid 'max_tokens': {max_tokens!r}; expected an integer >= 0", "max_tokens")
        if max_tokens == 0 and not echo:
            raise _BadRequest("max_tokens=0 is only allowed with echo=true", "max_tokens")
        if echo and k is not None and not self.echo_logprobs:
            raise _BadRequest("echo with logprobs is not supported; use prompt_logprobs", "echo")
        prompt_k = body.get("prompt_logprobs")
        if prompt_k is not None and (not isinstance(prompt_k, int) or isinstance(prompt_k, bool) or prompt_k < 0 or prompt_k > 20):
            raise _BadRequest(f"Invalid 'prompt_logprobs': {prompt_k!r}; expected an integer in [0, 20]", "prompt_logprobs")

        choices, prompt_tokens, completion_tokens = [], 0, 0
        for p in prompts:
            sub = dict(body, prompt=p, max_tokens=max_tokens)
            out = self.completions(sub) if self.completions is not None else None
            if out is None:
                out = _default_completion(sub)
            tokens = list(out["tokens"])
            tlp = list(out["token_logprobs"])
            offs = list(out["text_offset"])
            top = list(out.get("top_logprobs") or [None] * len(tokens))
            completion = out.get("completion", "") or ""
            n_prompt = out.get("num_prompt_tokens")
            if n_prompt is None:
                if completion:
                    raise ValueError("completions backend returned 'completion' without 'num_prompt_tokens'")
                n_prompt = len(tokens)
            if not (len(tokens) == len(tlp) == len(offs) == len(top)):
                raise ValueError("completions backend: tokens/token_logprobs/text_offset/top_logprobs lengths differ")
            finish = out.get("finish_reason") or ("length" if len(tokens) - n_prompt >= max_tokens else "stop")
            prompt_tokens += n_prompt
            if echo:
                text, sl, shift = p + completion, slice(None), 0
            else:
                text, sl, shift = completion, slice(n_prompt, None), len(p)
            logprobs = None
            if k is not None:
                logprobs = {
                    "tokens": tokens[sl],
                    "token_logprobs": tlp[sl],
                    "text_offset": [o - shift for o in offs[sl]],
                    "top_logprobs": [None if t is None else dict(t) for t in top[sl]],
                }
            prompt_lps = None if prompt_k is None else _vllm_prompt_logprobs(out, n_prompt, prompt_k)
            for _ in range(n):
                completion_tokens += len(tokens) - n_prompt
                choices.append(
                    {
                        "index": len(choices),
                        "text": text,
                        "logprobs": logprobs,
                        "finish_reason": finish,
                        "stop_reason": None,
                        "prompt_logprobs": prompt_lps,
                    }
                )
        return {
            "id": f"cmpl-fake{self._next_id()}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }


# -- helpers for the chat endpoint ------------------------------------------------------------------
def _message_text(m: Any) -> str:
    if not isinstance(m, dict):
        return ""
    c = m.get("content")
    if isinstance(c, str):
        return c
    if isinstance(c, list):
        return " ".join(p.get("text", "") for p in c if isinstance(p, dict))
    return ""


def _default_chat(body: dict) -> str:
    """Without a ``chat`` callable: echo the last message's text."""
    return _message_text(body["messages"][-1])


def _choice_specs(answer: Any, n: int) -> tuple[list[dict], dict | None]:
    usage = None
    if isinstance(answer, str):
        return [{"content": answer} for _ in range(n)], None
    if isinstance(answer, dict):
        usage = answer.get("usage")
        spec = {k: v for k, v in answer.items() if k != "usage"}
        content = spec.get("content")
        if isinstance(content, list):
            lps = spec.get("logprobs")
            frs = spec.get("finish_reason")
            out = []
            for i, c in enumerate(content):
                s = {"content": c}
                if lps is not None:
                    s["logprobs"] = lps[i]
                if frs is not None:
                    s["finish_reason"] = frs[i] if isinstance(frs, list) else frs
                out.append(s)
            return out, usage
        lps = spec.get("logprobs")
        if lps and isinstance(lps[0], list):  # one list per choice
            return [dict(spec, logprobs=lps[i]) for i in range(len(lps))], usage
        return [dict(spec) for _ in range(n)], usage
    if isinstance(answer, (list, tuple)):
        return [{"content": a} if isinstance(a, str) or a is None else dict(a) for a in answer], None
    raise TypeError(f"chat callable returned {type(answer).__name__}; expected str, list or dict")


def _lp_entry(e: Any, top_k: int | None) -> dict:
    if isinstance(e, (tuple, list)):
        e = {"token": e[0], "logprob": e[1]}
    tok = e["token"]
    tops = []
    for t in e.get("top_logprobs") or []:
        if isinstance(t, (tuple, list)):
            t = {"token": t[0], "logprob": t[1]}
        tops.append({"token": t["token"], "logprob": float(t["logprob"]), "bytes": list(t["token"].encode())})
    if top_k is not None:
        tops = tops[:top_k]
    else:
        tops = []
    return {"token": tok, "logprob": float(e["logprob"]), "bytes": list(tok.encode()), "top_logprobs": tops}


def _vllm_prompt_logprobs(out: dict, n_prompt: int, k: int) -> list:
    """vLLM's per-prompt-token shape: None for the first token, then {token id: {logprob, rank, decoded_token}} with the
    actual token and up to k alternatives (from ``top_logprobs``). Token ids come from ``prompt_token_ids`` when the
    backend gives them, else stand-ins (an id per distinct token string, stable within the reply)."""
    tokens, lps = out["tokens"][:n_prompt], out["token_logprobs"][:n_prompt]
    tops = list(out.get("top_logprobs") or [None] * len(out["tokens"]))[:n_prompt]
    ids = list(out.get("prompt_token_ids") or [])[:n_prompt]
    names: dict[str, int] = {}

    def token_id(text: str) -> int:
        return names.setdefault(text, 100_000 + len(names))

    if len(ids) != n_prompt:
        ids = [token_id(t) for t in tokens]
    reply: list = [None]
    for i in range(1, n_prompt):
        entry = {str(ids[i]): {"logprob": float(lps[i]), "rank": 1, "decoded_token": tokens[i]}}
        ranked = sorted(((v, t) for t, v in (tops[i] or {}).items() if t != tokens[i]), reverse=True)[:k]
        for rank, (value, text) in enumerate(ranked, start=2):
            entry.setdefault(str(token_id(text)), {"logprob": float(value), "rank": rank, "decoded_token": text})
        reply.append(entry)
    return reply


# -- completions backends ---------------------------------------------------------------------------
def _default_completion(body: dict) -> dict:
    """Built-in fake: approximate tokens, every prompt token at logprob -1.0, completion " ok" (one token)."""
    prompt = body["prompt"]
    toks = approx_tokens(prompt)
    completion = " ok" if body["max_tokens"] > 0 else ""
    offs, pos = [], 0
    for t in toks:
        offs.append(pos)
        pos += len(t)
    lps: list[float | None] = [None] + [-1.0] * (len(toks) - 1) if toks else []
    tops: list[dict | None] = [None] + [{t: -1.0} for t in toks[1:]] if toks else []
    n_prompt = len(toks)
    if completion:
        toks.append(completion)
        offs.append(len(prompt))
        lps.append(-0.5)
        tops.append({completion: -0.5})
    return {
        "tokens": toks,
        "token_logprobs": lps,
        "text_offset": offs,
        "top_logprobs": tops,
        "num_prompt_tokens": n_prompt,
        "completion": completion,
        "finish_reason": "stop" if completion else "length",
    }


def transformers_completions(model, tokenizer, *, add_special_tokens: bool = True) -> Callable[[dict], dict]:
    """A ``completions`` backend scoring prompts with a local transformers causal LM (fast tokenizer needed).

    One forward pass over the prompt gives ``token_logprobs[i] = log p(tok_i | tok_<i)`` (``[0]`` is None);
    ``max_tokens > 0`` then greedily appends tokens (one full forward per token), stopping at ``eos_token_id``.

    ``text_offset`` comes from the tokenizer's offset mapping: a token starts where the previous one ended
    (so a leading space that ``trim_offsets`` cut off belongs to the token after it), or at its own start
    when offsets overlap (byte-fallback pieces of one character); zero-width special tokens (BOS) sit at
    the current position.  ``tokens[i]`` is the text span ``prompt[text_offset[i]:text_offset[i+1]]`` (the
    last one runs to the end of the prompt), or the token's own string for zero-width tokens.  Hence
    summing ``token_logprobs`` over tokens with ``text_offset >= len(prefix)`` gives log p(rest | prefix)
    whenever the prefix ends on a token boundary.  ``top_logprobs[i]`` maps the decoded top-``logprobs``
    alternatives (plus the actual token) to their logprobs.
    """
    import torch

    lock = threading.Lock()
    model.eval()
    eos = getattr(tokenizer, "eos_token_id", None)

    def device():
        try:
            return next(model.parameters()).device
        except StopIteration:
            return torch.device("cpu")

    def tops_for(logp_row, k: int, actual_id: int, actual_str: str) -> dict:
        d: dict[str, float] = {}
        if k > 0:
            vals, ids = torch.topk(logp_row, min(k, logp_row.shape[-1]))
            for v, i in zip(vals.tolist(), ids.tolist(), strict=True):
                s = tokenizer.decode([i])
                d[s] = max(d.get(s, -float("inf")), v)
        d.setdefault(actual_str, float(logp_row[actual_id]))
        return d

    def backend(body: dict) -> dict:
        prompt: str = body["prompt"]
        max_new = int(body.get("max_tokens") or 0)
        k = int(body.get("logprobs") or 0)
        enc = tokenizer(prompt, return_offsets_mapping=True, add_special_tokens=add_special_tokens)
        ids = list(enc["input_ids"])
        if not ids:
            raise ValueError("prompt tokenizes to zero tokens")
        special = set(tokenizer.all_special_ids)
        # text offsets and token strings for the prompt
        offs, pos = [], 0
        for (s, e), tid in zip(enc["offset_mapping"], ids, strict=True):
            if e <= s or (tid in special and s == e):
                offs.append(pos)
            else:
                offs.append(min(pos, s))
                pos = max(pos, e)
        toks = []
        for i, (tid, o) in enumerate(zip(ids, offs, strict=True)):
            end = offs[i + 1] if i + 1 < len(offs) else len(prompt)
            span = prompt[o:end]
            s, e = enc["offset_mapping"][i]
            toks.append(span if e > s else tokenizer.convert_ids_to_tokens(tid))

        with lock, torch.inference_mode():
            dev = device()
            out = model(input_ids=torch.tensor([ids], device=dev), use_cache=False)
            logp = torch.log_softmax(out.logits[0].float(), dim=-1)  # [T, V]
            tlp: list[float | None] = [None]
            tops: list[dict | None] = [None]
            for i in range(1, len(ids)):
                tlp.append(float(logp[i - 1, ids[i]]))
                tops.append(tops_for(logp[i - 1], k, ids[i], toks[i]) if k > 0 else {toks[i]: tlp[-1]})
            # greedy continuation
            gen_ids: list[int] = []
            completion = ""
            finish = "length"
            last = logp[-1]
            base_text = tokenizer.decode(ids, skip_special_tokens=True)
            prev_text = base_text
            for _ in range(max_new):
                nxt = int(torch.argmax(last))
                if eos is not None and nxt == eos:
                    finish = "stop"
                    break
                gen_ids.append(nxt)
                full = tokenizer.decode(ids + gen_ids, skip_special_tokens=True)
                piece = full[len(prev_text) :] if full.startswith(prev_text) else tokenizer.decode([nxt])
                prev_text = full
                offs.append(len(prompt) + len(completion))
                toks.append(piece)
                tlp.append(float(last[nxt]))
                tops.append(tops_for(last, k, nxt, piece) if k > 0 else {piece: float(last[nxt])})
                completion += piece
                # a full forward pass per step: slower than a KV cache, but no cache API to track across versions
                step = model(input_ids=torch.tensor([ids + gen_ids], device=dev), use_cache=False)
                last = torch.log_softmax(step.logits[0, -1].float(), dim=-1)
        return {
            "tokens": toks,
            "token_logprobs": tlp,
            "text_offset": offs,
            "top_logprobs": tops,
            "num_prompt_tokens": len(ids),
            "completion": completion,
            "finish_reason": finish,
            "prompt_token_ids": ids,
            "completion_token_ids": gen_ids,
        }

    return backend


# -- pytest helpers ---------------------------------------------------------------------------------
def fake_openai_fixture(scope: str = "function", **kwargs):
    """Make a pytest fixture yielding a running ``FakeOpenAI(**kwargs)``::

    fake_server = fake_openai_fixture(chat=lambda body: "hi")   # in a test module or conftest
    """
    import pytest

    @pytest.fixture(scope=scope)
    def _fixture():
        with FakeOpenAI(**kwargs) as server:
            yield server

    return _fixture


fake_openai = fake_openai_fixture()
"""Ready-made fixture: ``from openai_server import fake_openai`` then take ``fake_openai`` as an argument
(set ``fake_openai.chat = ...`` / ``.completions = ...`` inside the test)."""
