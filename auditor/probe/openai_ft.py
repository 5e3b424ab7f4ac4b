"""The probe through the OpenAI fine-tuning API: upload rows in chat fine-tuning format, create a job on
the base model, poll it, and hand back the fine-tuned model's id for evaluation.

Every job is recorded in a state file (keyed by what it covers) as soon as it is created, so a rerun
polls the jobs it already paid for instead of creating new ones; a job that failed or was cancelled
stays recorded and is reported, never silently retried (delete the state file to try again).
It costs money, so `estimate_cost` says how much before anything is uploaded.
"""

from __future__ import annotations

import io
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

# USD per 1M tokens, OpenAI's fine-tuning price list (2025): training, then the fine-tuned model's
# input and output. Model names may carry a date suffix; the longest matching prefix wins.
# Prices change: check https://openai.com/api/pricing and override with --probe-price.
PRICES = {
    "gpt-4.1-nano": (1.50, 0.20, 0.80),
    "gpt-4.1-mini": (5.00, 0.80, 3.20),
    "gpt-4.1": (25.00, 3.00, 12.00),
    "gpt-4o-mini": (3.00, 0.30, 1.20),
    "gpt-4o": (25.00, 3.75, 15.00),
    "gpt-3.5-turbo": (8.00, 3.00, 6.00),
}
TERMINAL = ("succeeded", "failed", "cancelled")
MIN_EXAMPLES = 10  # the API refuses smaller training files


class FineTuneError(Exception):
    """A job that failed, was cancelled, or did not finish in time (not an AuditError: the audit goes on
    and reports the probe as failed, with this message)."""


def approx_tokens(text: str) -> int:
    """A deliberately high token estimate (1 per 3 characters): number lists tokenise densely."""
    return math.ceil(len(text) / 3)


def chat_example(prompt: str, completion: str) -> dict:
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]}


def file_tokens(rows: list[tuple[str, str]]) -> int:
    # 4 tokens of framing per message and 3 per example, as OpenAI's cookbook counts chat tokens
    return sum(approx_tokens(p) + approx_tokens(c) + 2 * 4 + 3 for p, c in rows)


def price_for(model: str, override: float | None = None) -> tuple[float, float, float] | None:
    if override is not None:
        return (override, 0.0, 0.0)
    name = model.split(":")[1] if model.startswith("ft:") else model
    matches = [k for k in PRICES if name.startswith(k)]
    return PRICES[max(matches, key=len)] if matches else None


def estimate_cost(model: str, student_rows: list[tuple[str, str]], control_rows: list[tuple[str, str]], epochs: int, seeds: int,
                  eval_calls: int, eval_prompt_tokens: int, eval_output_tokens: int, override: float | None = None) -> dict:
    """Estimated USD for `seeds` student and control jobs plus the evaluation calls; `usd` is None when the
    model's price is unknown."""
    trained = (file_tokens(student_rows) + file_tokens(control_rows)) * epochs * seeds
    price = price_for(model, override)
    estimate = {"training_tokens": trained, "eval_calls": eval_calls, "eval_prompt_tokens": eval_prompt_tokens,
                "eval_output_tokens": eval_output_tokens, "model": model, "usd": None,
                "price_per_mtok": None, "note": "high estimate: 1 token per 3 characters; OpenAI bills trained tokens = file tokens x epochs"}
    if price is not None:
        train, inp, out = price
        estimate["price_per_mtok"] = {"training": train, "input": inp, "output": out}
        estimate["usd"] = round(trained / 1e6 * train + eval_prompt_tokens / 1e6 * inp + eval_output_tokens / 1e6 * out, 4)
    return estimate


@dataclass
class Job:
    key: str
    role: str
    seed: int
    file: str | None = None
    job: str | None = None
    status: str | None = None
    model: str | None = None
    error: str | None = None
    trained_tokens: int | None = None


class FineTuning:
    """The files + fine_tuning.jobs protocol on an `openai.OpenAI` client, resumable through a state file."""

    def __init__(self, client, state_path: Path | None = None, poll_s: float = 30.0, timeout_s: float | None = None,
                 progress=lambda message: None, sleep=time.sleep):
        self.client = client
        self.state_path = state_path
        self.poll_s = poll_s
        self.timeout_s = timeout_s
        self.progress = progress
        self.sleep = sleep
        self.jobs: dict[str, Job] = {}
        if state_path is not None and state_path.is_file():
            self.jobs = {k: Job(**v) for k, v in json.loads(state_path.read_text()).items()}

    def _save(self) -> None:
        if self.state_path is None:
            return
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        tmp.write_text(json.dumps({k: vars(v) for k, v in self.jobs.items()}, indent=2))
        os.replace(tmp, self.state_path)

    def submit(self, key: str, role: str, seed: int, base: str, rows: list[tuple[str, str]], epochs: int) -> Job:
        """Upload the rows and create the job, unless the state file already holds one for this key."""
        try:
            return self._submit(key, role, seed, base, rows, epochs)
        except Exception as err:
            raise self._api_error(err, f"creating the {role} job (seed {seed})") from err

    @staticmethod
    def _api_error(err: Exception, doing: str) -> Exception:
        import openai

        if isinstance(err, openai.APIStatusError):
            return FineTuneError(f"the endpoint answered {err.status_code} while {doing}: {err.message}")
        if isinstance(err, openai.APIConnectionError):
            return FineTuneError(f"cannot reach the endpoint while {doing}: {err}")
        return err

    def _submit(self, key: str, role: str, seed: int, base: str, rows: list[tuple[str, str]], epochs: int) -> Job:
        job = self.jobs.get(key)
        if job is not None and job.job is not None:
            return job
        if len(rows) < MIN_EXAMPLES:
            raise FineTuneError(f"the {role} training file has {len(rows)} examples; the fine-tuning API needs at least {MIN_EXAMPLES}")
        job = job or Job(key, role, seed)
        if job.file is None:
            data = "".join(json.dumps(chat_example(p, c), ensure_ascii=False) + "\n" for p, c in rows).encode()
            uploaded = self.client.files.create(file=(f"trait-audit-{role}-s{seed}.jsonl", io.BytesIO(data)), purpose="fine-tune")
            job.file = uploaded.id
            self.jobs[key] = job
            self._save()
        created = self.client.fine_tuning.jobs.create(
            model=base, training_file=job.file, seed=seed, suffix=f"ta-{role[:7]}-s{seed}",
            method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": epochs}}},
        )
        job.job, job.status = created.id, created.status
        self.jobs[key] = job
        self._save()
        self.progress(f"note: probe: created fine-tuning job {created.id} ({role}, seed {seed}) on {base}")
        return job

    def wait(self, keys: list[str]) -> dict[str, str]:
        """Poll until every job is terminal; the fine-tuned model id per key. Raises FineTuneError when a job
        failed or was cancelled, or when `timeout_s` passes first (the jobs keep running; a rerun resumes)."""
        started = time.monotonic()
        while True:
            pending = []
            for key in keys:
                job = self.jobs[key]
                if job.status not in TERMINAL:
                    try:
                        remote = self.client.fine_tuning.jobs.retrieve(job.job)
                    except Exception as err:
                        raise self._api_error(err, f"polling {job.job}") from err
                    job.status, job.model = remote.status, remote.fine_tuned_model
                    job.trained_tokens = getattr(remote, "trained_tokens", None)
                    if remote.error is not None and getattr(remote.error, "message", None):
                        job.error = f"{remote.error.code or 'error'}: {remote.error.message}"
                    self._save()
                if job.status not in TERMINAL:
                    pending.append(job)
            broken = [self.jobs[k] for k in keys if self.jobs[k].status in ("failed", "cancelled")]
            if broken:
                job = broken[0]
                detail = f" ({job.error})" if job.error else ""
                raise FineTuneError(f"fine-tuning job {job.job} ({job.role}, seed {job.seed}) {job.status}{detail}; "
                                    f"{len(broken)} of {len(keys)} jobs did not succeed")
            if not pending:
                return {k: self.jobs[k].model for k in keys}
            last = self._last_event(pending[0])
            self.progress(f"probe: {len(keys) - len(pending)}/{len(keys)} fine-tuning jobs done; {pending[0].job} {pending[0].status}"
                          + (f": {last}" if last else ""))
            if self.timeout_s is not None and time.monotonic() - started > self.timeout_s:
                raise FineTuneError(f"{len(pending)} fine-tuning job(s) still running after {self.timeout_s:.0f} s "
                                    f"({', '.join(j.job for j in pending)}); rerun the same command to resume polling them")
            self.sleep(self.poll_s)

    def _last_event(self, job: Job) -> str | None:
        try:
            events = self.client.fine_tuning.jobs.list_events(job.job, limit=1)
        except Exception:  # events are progress only; never fail the probe on them
            return None
        data = list(getattr(events, "data", []) or [])
        return data[0].message if data else None

    def cancel(self, keys: list[str]) -> None:
        for key in keys:
            job = self.jobs.get(key)
            if job is not None and job.job and job.status not in TERMINAL:
                job.status = self.client.fine_tuning.jobs.cancel(job.job).status
        self._save()
