"""The judge's worker pool: asyncio workers (`-j`) make the pending calls, each answer goes to the call
cache the moment it arrives (a killed run loses at most the calls in flight), a reply that does not parse
gets a corrective retry, and a run stops early when the endpoint is clearly down or `--judge-timeout`
(settings.deadline_s) has passed. Only parsed verdicts are cached (never an error, never a NaN score), and
the API key is masked in anything the judge writes back."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from auditor.judge.client import Fatal, JudgeCallError, scrub
from auditor.judge.verdict import VerdictError, parse_verdict

CONSECUTIVE_FAILURES_TO_ABORT = 8


@dataclass
class Item:
    """One (row, trait) call. Messages are rebuilt when sent, so a large plan holds no prompt text twice."""

    index: int  # into the judged rows' table
    row: int
    digest: str
    trait: Any
    key: str
    tokens: int  # estimated prompt tokens


async def judge_all(pending, messages_of, backend, cache, usage, settings, seed, events, total, done_before):
    answers: dict[str, dict] = {}
    errors: list[str] = []
    queue = list(reversed(pending))
    state = {"done": done_before, "consecutive": 0, "abort": False}
    events("judge_progress", done=state["done"], total=total)
    budget = getattr(settings, "deadline_s", None)
    deadline = time.monotonic() + budget if budget else None
    backend.deadline = deadline

    async def complete(messages):
        if deadline is None:
            return await backend.complete(messages, seed, usage)
        try:  # a call that hangs (a local model, a server that never answers) ends with the run's time
            return await asyncio.wait_for(backend.complete(messages, seed, usage), max(deadline - time.monotonic(), 0.001))
        except TimeoutError:
            raise Fatal(f"no answer within --judge-timeout {budget:g} s") from None

    async def one(item: Item) -> dict:
        first = messages = messages_of(item)
        before = (usage.prompt_tokens, usage.completion_tokens)
        for attempt in range(settings.parse_retries + 1):
            content = await complete(messages)
            try:
                verdict = parse_verdict(content)
                break
            except VerdictError as err:
                if attempt == settings.parse_retries:
                    raise JudgeCallError(f"reply did not parse after {settings.parse_retries} corrections: {err}") from None
                usage.parse_retries += 1
                messages = [*first, {"role": "assistant", "content": content or ""}, {"role": "user", "content": (
                    f"That reply could not be used ({err}). Reply again with only the JSON object "
                    "with the keys reason, injection, refers and score.")}]
        verdict["reason"] = scrub(verdict["reason"], getattr(backend, "secret", None))  # a judge that echoes its key
        value = {"verdict": verdict, "usage": {"prompt_tokens": usage.prompt_tokens - before[0],
                                               "completion_tokens": usage.completion_tokens - before[1]}}
        cache.put("judge", item.key, value)  # at once: a killed run loses at most the calls in flight
        return value

    async def worker():
        while queue and not state["abort"]:
            if deadline is not None and time.monotonic() >= deadline:
                errors.append(f"--judge-timeout {budget:g} s reached")
                state["abort"] = True
                break
            item = queue.pop()
            try:
                answers[item.key] = await one(item)
                state["consecutive"] = 0
            except Fatal as err:
                errors.append(str(err))
                state["abort"] = True
            except JudgeCallError as err:
                errors.append(str(err))
                state["consecutive"] += 1
                if state["consecutive"] >= max(CONSECUTIVE_FAILURES_TO_ABORT, settings.jobs):
                    state["abort"] = True  # the endpoint is down: stop rather than wait out every row's retries
            state["done"] += 1
            events("judge_progress", done=state["done"], total=total)

    try:
        await asyncio.gather(*(worker() for _ in range(min(settings.jobs, max(1, len(pending))))))
    finally:
        await backend.close()
    if state["abort"] and queue:
        errors.append(f"stopped early: {len(queue)} calls not attempted")
    return answers, errors
