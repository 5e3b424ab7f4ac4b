"""Judge backends: async chat calls to an OpenAI-compatible endpoint, or a local model, behind one
`complete(messages, seed, usage)` method; plus the call cache key and the errors a run can end with.

Retries are made here, not by the openai client, so that they answer to `--judge-timeout`: every try
of a call gets at most the time the run has left, and a server that asks (Retry-After) for a longer
wait than that, or than MAX_WAIT_S without a timeout, ends the run at once with what it asked, rather
than being retried early against its wishes or waited on for an hour.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import random
import time
from typing import Any

from auditor.errors import UsageError
from auditor.judge.prompt import PROMPT_VERSION
from auditor.judge.verdict import VERDICT_SCHEMA


class JudgeCallError(RuntimeError):
    """A call that failed after every retry (never cached)."""


class Fatal(JudgeCallError):
    """A failure no retry will fix (bad key, unknown model): stop the run."""


def call_key(model: str, endpoint: str, messages: list[dict], settings, seed: int) -> str:
    """The cache key of one judge call: model, endpoint (without credentials), messages and settings; never the key."""
    from auditor.models.cache import CallCache

    return CallCache.key("judge", model=model, endpoint=endpoint, request={
        "messages": messages, "temperature": 0, "max_tokens": settings.max_tokens, "seed": seed,
        "format": settings.format, "prompt_version": PROMPT_VERSION})



def scrub(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret and len(secret) >= 4 else text



MAX_WAIT_S = 120.0  # the longest Retry-After honoured when no --judge-timeout is set
RETRY_STATUS = (408, 409, 429)


def retry_after(headers) -> float | None:
    """Seconds a server asks to wait (retry-after-ms, retry-after in seconds or as an HTTP date), or None."""
    if headers is None:
        return None
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            continue
        return seconds if math.isfinite(seconds) else float("inf")
    try:
        when = email.utils.parsedate_to_datetime(headers.get("retry-after") or "")
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


def backoff(attempt: int) -> float:
    """The openai client's schedule: 0.5 s doubling to at most 8 s, less up to 25 % jitter."""
    return min(0.5 * 2**attempt, 8.0) * (1 - 0.25 * random.random())


class Usage:
    def __init__(self):
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.http_retries = 0
        self.parse_retries = 0
        self.format_fallbacks = 0


class OpenAIJudge:
    """Async chat calls to an OpenAI-compatible endpoint. Transport retries are the openai client's
    (429, 408, 409, 5xx, timeouts, dropped connections; Retry-After honoured, exponential backoff with
    jitter otherwise); a 200 whose body is not JSON is retried here."""

    def __init__(self, ref, settings):
        import openai

        from auditor.models.openai_backend import resolve_endpoint, safe_url

        self.openai = openai
        self.model = ref.name
        url = settings.base_url or env("TRAIT_AUDIT_JUDGE_BASE_URL")
        key = settings.api_key or env("TRAIT_AUDIT_JUDGE_API_KEY")
        if not (key or env("OPENAI_API_KEY")) and "api.openai.com" in (url or env("OPENAI_BASE_URL") or "api.openai.com"):
            raise UsageError(f"--judge {ref.ref} needs a key: set TRAIT_AUDIT_JUDGE_API_KEY or OPENAI_API_KEY, or pass "
                             "--judge-api-key (or point --judge-base-url at a local endpoint)")
        self.base_url, self.secret = resolve_endpoint(ref, url, key)
        self.endpoint = safe_url(self.base_url)
        self.settings = settings
        self.format = "json_schema" if settings.format == "auto" else settings.format
        # retries are ours (see _create): they answer to the run's deadline and to any Retry-After
        self.client = openai.AsyncOpenAI(base_url=self.base_url, api_key=self.secret, max_retries=0, timeout=settings.timeout)
        self.deadline: float | None = None  # time.monotonic() the run must end by (--judge-timeout); set by the pool

    def _left(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    async def _create(self, kwargs: dict, usage: Usage):
        """One chat call with up to `retries` retries on 408/409/429/5xx, timeouts and dropped connections."""
        openai = self.openai
        budget = self.settings.deadline_s
        for attempt in range(self.settings.retries + 1):
            left = self._left()
            if left is not None and left <= 0:
                raise Fatal(f"--judge-timeout {budget:g} s reached before {self.endpoint} answered")
            timeout = self.settings.timeout if left is None else min(self.settings.timeout, left)
            try:
                return await self.client.chat.completions.with_raw_response.create(
                    **kwargs, timeout=timeout, extra_headers={"x-stainless-retry-count": str(attempt)})
            except openai.APIStatusError as err:
                retryable = err.status_code in RETRY_STATUS or err.status_code >= 500
                if not retryable or attempt == self.settings.retries:
                    raise
                asked, what = retry_after(err.response.headers), f"answered {err.status_code}"
            except openai.APIConnectionError:  # APITimeoutError included
                if attempt == self.settings.retries:
                    raise
                asked, what = None, "did not answer"
            wait = backoff(attempt) if asked is None else asked
            left = self._left()
            limit = MAX_WAIT_S if left is None else left
            if wait >= limit:
                bound = f"the {left:.1f} s left of --judge-timeout {budget:g}" if left is not None else f"the {MAX_WAIT_S:g} s a call may wait"
                told = f"asked to wait {wait:g} s (Retry-After)" if asked is not None else f"would be retried in {wait:.1f} s"
                raise Fatal(f"{self.endpoint} {what} and {told}, more than {bound}: stopped retrying; answers so far are cached, "
                            "rerun later to resume")
            usage.http_retries += 1
            await asyncio.sleep(wait)
        raise JudgeCallError(f"{self.endpoint} gave no answer")  # not reached: the last try raises

    def _response_format(self) -> dict | None:
        if self.format == "json_schema":
            return {"type": "json_schema", "json_schema": {"name": "trait_audit_verdict", "strict": True, "schema": VERDICT_SCHEMA}}
        if self.format == "json_object":
            return {"type": "json_object"}
        return None

    async def complete(self, messages: list[dict], seed: int, usage: Usage) -> str | None:
        openai = self.openai
        for attempt in range(self.settings.parse_retries + 1):
            kwargs: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": 0,
                                      "max_tokens": self.settings.max_tokens, "seed": seed}
            fmt = self._response_format()
            if fmt is not None:
                kwargs["response_format"] = fmt
            try:
                raw = await self._create(kwargs, usage)
                # the reply as plain JSON: the verdict is parsed strictly below, and skipping the client's
                # pydantic models saves CPU on every call
                reply = json.loads(raw.http_response.content)
            except openai.BadRequestError as err:
                if self.settings.format == "auto" and self.format != "none":
                    # the endpoint does not take this response_format: plain text and strict parsing from now on
                    self.format = "none"
                    usage.format_fallbacks += 1
                    continue
                raise JudgeCallError(f"{self.endpoint} answered 400: {err.message}") from None
            except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as err:
                raise Fatal(f"{self.endpoint} answered {err.status_code}: {err.message}") from None
            except openai.APIStatusError as err:
                raise JudgeCallError(f"{self.endpoint} answered {err.status_code} after {self.settings.retries} retries: {err.message}") from None
            except openai.APITimeoutError:
                raise JudgeCallError(f"{self.endpoint} timed out after {self.settings.retries} retries "
                                     f"({self.settings.timeout:g} s a try)") from None
            except openai.APIConnectionError as err:
                raise JudgeCallError(f"cannot reach {self.endpoint} after {self.settings.retries} retries ({err})") from None
            except ValueError as err:  # a 200 whose body is not JSON (json.JSONDecodeError)
                if attempt < self.settings.parse_retries:
                    usage.http_retries += 1
                    await asyncio.sleep(0.2 * 2**attempt)
                    continue
                raise JudgeCallError(f"{self.endpoint} sent a body that is not JSON ({err})") from None
            try:
                counts = reply.get("usage") or {}
                usage.prompt_tokens += int(counts.get("prompt_tokens") or 0)
                usage.completion_tokens += int(counts.get("completion_tokens") or 0)
                choices = reply.get("choices") or []
                return choices[0]["message"]["content"] if choices else None
            except (AttributeError, KeyError, TypeError, ValueError):
                raise JudgeCallError(f"{self.endpoint} sent a reply that is not a chat completion") from None
        raise JudgeCallError(f"{self.endpoint} rejected every request format")

    async def close(self) -> None:
        await self.client.close()


class LocalJudge:
    """A local model (transformers) as the judge: greedy generation, one row at a time."""

    def __init__(self, model, ref, settings):
        self.model_obj = model  # loaded by the caller, which decides what an unloadable reference means
        self.model = ref.ref
        self.endpoint = f"local:{ref.ref}"
        self.secret = None
        self.settings = settings
        self._lock = asyncio.Lock()

    async def complete(self, messages: list[dict], seed: int, usage: Usage) -> str | None:
        from auditor.models import Sampling

        system = messages[0]["content"]
        user = "\n\n".join(m["content"] for m in messages[1:])
        sampling = Sampling(n=1, temperature=0.0, max_new_tokens=self.settings.max_tokens, seed=seed)
        async with self._lock:
            answer = await asyncio.to_thread(self.model_obj.generate, [user], sampling, system)
        return answer[0][0]

    async def close(self) -> None:
        pass



def env(name: str) -> str | None:
    import os

    return os.environ.get(name) or None


def run_sync(coro):
    """Run a coroutine from sync code, also when the caller already runs an event loop (a notebook)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()
