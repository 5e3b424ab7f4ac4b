"""Any OpenAI-compatible endpoint through the `openai` client: chat generation, and prompt
log-probabilities from a completions endpoint that echoes them (vLLM's `echo` + `logprobs`), so
white-box scoring can run on a vLLM deployment of the base model with the same detector code."""

from __future__ import annotations

import os
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
                 cache: CallCache | None = None, max_retries: int = 4, timeout: float = 60.0, logprobs: bool | None = None):
        super().__init__(ref)
        import openai

        self.openai = openai
        self.base_url, key = resolve_endpoint(ref, base_url, api_key)
        # the key is never part of a cache key or report
        self.client = openai.OpenAI(base_url=self.base_url, api_key=key, max_retries=max_retries, timeout=timeout)
        self.cache = cache or CallCache()
        self._logprobs = logprobs

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
        answers = []
        for prompt in prompts:
            request = {"messages": self._messages(prompt, system), **sampling.key()}

            def send(request=request):
                reply = self.client.chat.completions.create(
                    model=self.ref.name, messages=request["messages"], n=sampling.n, temperature=sampling.temperature,
                    max_tokens=sampling.max_new_tokens, seed=sampling.seed, top_p=sampling.top_p,
                )
                return [choice.message.content or "" for choice in reply.choices]

            answers.append(self._call("chat", request, send))
        return answers

    def _echo(self, text: str) -> dict:
        def send():
            reply = self.client.completions.create(model=self.ref.name, prompt=text, echo=True, logprobs=1, max_tokens=1, temperature=0)
            lp = reply.choices[0].logprobs
            return {"tokens": list(lp.tokens), "token_logprobs": list(lp.token_logprobs), "text_offset": list(lp.text_offset)}

        return self._call("echo", {"prompt": text, "echo": True, "logprobs": 1, "max_tokens": 1}, send)

    def supports_logprobs(self) -> bool:
        """Whether the endpoint echoes prompt log-probabilities; probed once with a one-token call."""
        if self._logprobs is None:
            try:
                reply = self._echo("Hello")
                self._logprobs = bool(reply["token_logprobs"]) and len(reply["text_offset"]) == len(reply["tokens"])
            except BackendError:
                self._logprobs = False
        return self._logprobs

    def score(self, prompts: list[str], completions: list[str], system: str | None = None) -> list[TokenScores]:
        results = []
        for prompt, completion in zip(prompts, completions, strict=True):
            head = render_plain(self._system(system), prompt)
            reply = self._echo(head + completion)
            keep = [i for i, offset in enumerate(reply["text_offset"]) if len(head) <= offset < len(head) + len(completion)]
            if any(reply["token_logprobs"][i] is None for i in keep):
                raise BackendError(f"{self.ref.ref}: the endpoint returned no log-probability for a completion token")
            results.append(TokenScores([reply["tokens"][i] for i in keep], [reply["token_logprobs"][i] for i in keep]))
        return results
