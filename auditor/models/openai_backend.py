"""Any OpenAI-compatible endpoint through the `openai` client: chat generation, and prompt
log-probabilities from a completions endpoint that echoes them (vLLM's `echo` + `logprobs`, or vLLM's own
`prompt_logprobs`), so white-box scoring can run on a vLLM deployment of the base model with the same detector code.

This is the scale-out path (docs/models-and-scale.md): one or many vLLM replicas behind one URL. Scoring sends
several texts per request (`batch` prompts) and keeps `jobs` requests in flight; generation keeps `jobs` chat
requests in flight. Every answer is cached per text, so a rerun resumes.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit, urlunsplit

from auditor.errors import BackendError, UsageError
from auditor.models.base import DEFAULT_SAMPLING, GENERATE, LOGPROB, OPTION_PROBS, Model, Sampling, TokenScores
from auditor.models.cache import CallCache
from auditor.models.refs import ModelRef


def render_plain(system: str | None, prompt: str) -> str:
    """Chat rendered as text for a completions endpoint (which applies no chat template)."""
    return (f"System: {system}\n\n" if system else "") + f"User: {prompt}\n\nAssistant: "


def safe_url(url: str) -> str:
    """An endpoint URL fit for cache keys and reports: no user:password, query or fragment (where keys hide)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


def resolve_endpoint(ref: ModelRef, base_url: str | None = None, api_key: str | None = None) -> tuple[str, str]:
    """(base URL, key) from the flags, else OPENAI_BASE_URL / OPENAI_API_KEY. Local servers (vLLM and the
    like) accept any key, so "EMPTY" stands in; api.openai.com without a key is a usage error."""
    url = base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
    key = api_key or os.environ.get("OPENAI_API_KEY")
    if not key and "api.openai.com" in url:
        raise UsageError(f"{ref.ref} needs OPENAI_API_KEY (or --api-key); none is set")
    return url, key or "EMPTY"


class OpenAIModel(Model):
    def __init__(self, ref: ModelRef, base_url: str | None = None, api_key: str | None = None,
                 cache: CallCache | None = None, max_retries: int = 4, timeout: float = 60.0, logprobs: bool | None = None,
                 jobs: int = 8, batch: int = 16):
        super().__init__(ref)
        self.jobs = max(1, jobs)  # requests in flight at once
        self.batch = max(1, batch)  # texts per scoring request
        import openai

        self.openai = openai
        self.base_url, key = resolve_endpoint(ref, base_url, api_key)
        # the key is never part of a cache key or report
        self.client = openai.OpenAI(base_url=self.base_url, api_key=key, max_retries=max_retries, timeout=timeout)
        self.cache = cache or CallCache()
        self._logprobs = logprobs
        self._mode: str | None = None  # "echo" (logprobs with text offsets) or "prompt_logprobs" (vLLM's field), once probed

    @property
    def capabilities(self) -> frozenset[str]:  # type: ignore[override]
        caps = {GENERATE}
        if self.supports_logprobs():
            caps |= {LOGPROB, OPTION_PROBS}
        return frozenset(caps)

    def supports(self, capability: str) -> bool:
        return capability in self.capabilities

    def _call(self, kind: str, request: dict, send):
        key = CallCache.key(kind, model=self.ref.name, endpoint=self.base_url, request=request)
        cached = self.cache.get(kind, key)
        if cached is not None:
            return cached
        try:
            value = send()
        except self.openai.APIConnectionError as err:
            raise BackendError(f"{self.ref.ref}: cannot reach {self.base_url} ({err})") from None
        except self.openai.APIStatusError as err:
            raise BackendError(f"{self.ref.ref}: {self.base_url} answered {err.status_code}: {err.message}") from None
        self.cache.put(kind, key, value)
        return value

    def _messages(self, prompt: str, system: str | None) -> list[dict]:
        system = self._system(system)
        return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]

    def generate(self, prompts: list[str], sampling: Sampling = DEFAULT_SAMPLING, system: str | None = None) -> list[list[str]]:
        def one(prompt: str) -> list[str]:
            request = {"messages": self._messages(prompt, system), **sampling.key()}

            def send():
                reply = self.client.chat.completions.create(
                    model=self.ref.name, messages=request["messages"], n=sampling.n, temperature=sampling.temperature,
                    max_tokens=sampling.max_new_tokens, seed=sampling.seed, top_p=sampling.top_p,
                )
                return [choice.message.content or "" for choice in reply.choices]

            return self._call("chat", request, send)

        return self._in_flight(one, prompts)

    def _in_flight(self, work, items: list) -> list:
        """work(item) for every item, `jobs` at a time, answers in order; the first error stops the rest."""
        if self.jobs == 1 or len(items) <= 1:
            return [work(item) for item in items]
        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            return list(pool.map(work, items))

    # --- prompt log-probabilities --------------------------------------------------------------------
    _ECHO_KEY = {"echo": True, "logprobs": 1, "max_tokens": 1}  # the cache key of an echoed text (unchanged since the first release)

    def _echo(self, text: str) -> dict:
        return self._echo_many([text])[0]

    def _echo_many(self, texts: list[str]) -> list[dict]:
        """{"tokens", "token_logprobs", "text_offset"} over each text's tokens, from the cache or from requests of up to
        `batch` texts, `jobs` in flight."""
        mode = self._mode or "echo"
        kind = "echo" if mode == "echo" else "prompt_logprobs"
        keys = [CallCache.key(kind, model=self.ref.name, endpoint=self.base_url, request=self._request_key(mode, t)) for t in texts]
        found = [self.cache.get(kind, k) for k in keys]
        missing = sorted({t for t, f in zip(texts, found, strict=True) if f is None})
        chunks = [missing[i : i + self.batch] for i in range(0, len(missing), self.batch)]
        fetched: dict[str, dict] = {}
        for chunk, replies in zip(chunks, self._in_flight(lambda c: self._send_echo(mode, c), chunks), strict=True):
            for text, reply in zip(chunk, replies, strict=True):
                fetched[text] = reply
                self.cache.put(kind, CallCache.key(kind, model=self.ref.name, endpoint=self.base_url, request=self._request_key(mode, text)), reply)
        return [f if f is not None else fetched[t] for t, f in zip(texts, found, strict=True)]

    def _request_key(self, mode: str, text: str) -> dict:
        return {"prompt": text, **self._ECHO_KEY} if mode == "echo" else {"prompt": text, "prompt_logprobs": 0, "max_tokens": 1}

    def _send_echo(self, mode: str, texts: list[str]) -> list[dict]:
        try:
            if mode == "echo":
                reply = self.client.completions.create(model=self.ref.name, prompt=texts, echo=True, logprobs=1, max_tokens=1, temperature=0)
            else:
                reply = self.client.completions.create(model=self.ref.name, prompt=texts, max_tokens=1, temperature=0,
                                                       extra_body={"prompt_logprobs": 0})
        except self.openai.APIConnectionError as err:
            raise BackendError(f"{self.ref.ref}: cannot reach {self.base_url} ({err})") from None
        except self.openai.APIStatusError as err:
            raise BackendError(f"{self.ref.ref}: {self.base_url} answered {err.status_code}: {err.message}") from None
        choices = sorted(reply.choices, key=lambda c: c.index)
        if len(choices) != len(texts):
            raise BackendError(f"{self.ref.ref}: {self.base_url} answered {len(choices)} choices for {len(texts)} prompts")
        out = []
        for text, choice in zip(texts, choices, strict=True):
            if mode == "echo":
                lp = choice.logprobs
                if lp is None or not lp.text_offset:
                    raise BackendError(f"{self.ref.ref}: {self.base_url} echoed no prompt log-probabilities")
                n = len(lp.text_offset)
                out.append({"tokens": list(lp.tokens)[:n], "token_logprobs": list(lp.token_logprobs)[:n], "text_offset": list(lp.text_offset)})
            else:
                out.append(_from_prompt_logprobs(text, getattr(choice, "prompt_logprobs", None) or (choice.model_extra or {}).get("prompt_logprobs"),
                                                 self.ref.ref))
        return out

    def supports_logprobs(self) -> bool:
        """Whether the endpoint gives prompt log-probabilities: echo + logprobs first, else vLLM's prompt_logprobs;
        probed once with a one-token call."""
        if self._logprobs is None or (self._logprobs and self._mode is None):
            self._logprobs = False
            for mode in ("echo", "prompt_logprobs"):
                self._mode = mode
                try:
                    reply = self._echo("Hello")
                except BackendError:
                    continue
                if reply["token_logprobs"] and len(reply["text_offset"]) == len(reply["tokens"]):
                    self._logprobs = True
                    break
            if not self._logprobs:
                self._mode = None
        return self._logprobs

    def score(self, prompts: list[str], completions: list[str], system: str | None = None) -> list[TokenScores]:
        if self._mode is None:
            self.supports_logprobs()
        heads = [render_plain(self._system(system), prompt) for prompt in prompts]
        replies = self._echo_many([h + c for h, c in zip(heads, completions, strict=True)])
        results = []
        for head, completion, reply in zip(heads, completions, replies, strict=True):
            keep = [i for i, offset in enumerate(reply["text_offset"]) if len(head) <= offset < len(head) + len(completion)]
            if any(reply["token_logprobs"][i] is None for i in keep):
                raise BackendError(f"{self.ref.ref}: the endpoint returned no log-probability for a completion token")
            results.append(TokenScores([reply["tokens"][i] for i in keep], [reply["token_logprobs"][i] for i in keep]))
        return results


def _from_prompt_logprobs(text: str, entries, ref: str) -> dict:
    """vLLM's prompt_logprobs in echo's shape. The reply holds None for the first token, then per token
    {token id: {logprob, rank, decoded_token}}; asked with prompt_logprobs=0, that is the prompt's own token alone.
    Offsets come from the decoded tokens counted back from the end of the text (the first token's text is never
    needed: a scored completion never starts at offset 0)."""
    if not entries:
        raise BackendError(f"{ref}: the endpoint sent no prompt_logprobs")
    tokens: list[str] = []
    logprobs: list[float | None] = []
    for entry in entries:
        if entry is None:
            tokens.append("")
            logprobs.append(None)
            continue
        first = next(iter(entry.values()))
        tokens.append(first.get("decoded_token") or "")
        logprobs.append(first.get("logprob"))
    offsets, end = [0] * len(tokens), len(text)
    for i in range(len(tokens) - 1, 0, -1):
        end -= len(tokens[i])
        offsets[i] = end
    if end < 0 or text[end:] != "".join(tokens[1:]):
        raise BackendError(f"{ref}: the endpoint's decoded prompt tokens do not spell the prompt; cannot place the completion")
    return {"tokens": tokens, "token_logprobs": logprobs, "text_offset": offsets}
