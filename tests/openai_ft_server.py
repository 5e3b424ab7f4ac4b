"""The fake OpenAI server (openai_server.FakeOpenAI) plus the files and fine-tuning endpoints, for testing the
probe's OpenAI protocol with the real `openai` client over real HTTP.

    with FakeFineTuning(outcome=lambda job, rows: "succeeded", chat=...) as server:
        ...

Endpoints added:

* ``POST /v1/files`` (multipart: ``file``, ``purpose``), ``GET /v1/files/{id}``, ``GET /v1/files/{id}/content``
* ``POST /v1/fine_tuning/jobs``: checks the training file exists, is chat fine-tuning JSONL (every line a
  ``messages`` list ending in an assistant turn) with at least 10 examples, then ``validating_files``
* ``GET /v1/fine_tuning/jobs/{id}``: each retrieve advances ``validating_files -> queued -> running`` and then,
  after ``polls_to_finish`` polls, to the outcome: ``outcome(job, rows)`` returns ``"succeeded"`` (default),
  ``"failed"`` (or ``("failed", message)``) or ``"cancelled"`` (as if cancelled from the dashboard)
* ``POST /v1/fine_tuning/jobs/{id}/cancel``, ``GET /v1/fine_tuning/jobs/{id}/events``, ``GET /v1/fine_tuning/jobs``

A succeeded job's ``fine_tuned_model`` is ``ft:{base}:fake-org:{suffix}:{job id}``; ``server.trained_rows(model)``
gives the (prompt, completion) rows it was trained on, so a ``chat`` callable can answer as that student.
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import time
from collections.abc import Callable
from typing import Any

from openai_server import FakeOpenAI, _BadRequest

TERMINAL = ("succeeded", "failed", "cancelled")


class FakeFineTuning(FakeOpenAI):
    def __init__(self, *args, outcome: Callable[[dict, list], Any] | None = None, polls_to_finish: int = 3, **kwargs):
        super().__init__(*args, **kwargs)
        self.outcome = outcome or (lambda job, rows: "succeeded")
        self.polls_to_finish = polls_to_finish
        self.files: dict[str, dict] = {}
        self.jobs: dict[str, dict] = {}
        self.events: dict[str, list[dict]] = {}
        self._trained: dict[str, list[tuple[str, str]]] = {}
        self._counter = itertools.count(1)

    def trained_rows(self, model: str) -> list[tuple[str, str]] | None:
        return self._trained.get(model)

    # -- routing ----------------------------------------------------------------------------------
    def _extra_route(self, method, path, raw, headers, body):
        parts = path.strip("/").split("/")  # v1, files|fine_tuning, ...
        if parts[:2] == ["v1", "files"]:
            if method == "POST" and len(parts) == 2:
                return 200, self._upload(raw, headers)
            if method == "GET" and len(parts) >= 3:
                meta = self.files.get(parts[2])
                if meta is None:
                    raise _BadRequest(f"No such File object: {parts[2]}", "id", 404)
                if len(parts) == 4 and parts[3] == "content":
                    return 200, [json.loads(line) for line in meta["_content"].splitlines() if line.strip()]
                return 200, self._public(meta)
            return None
        if parts[:3] != ["v1", "fine_tuning", "jobs"]:
            return None
        if len(parts) == 3:
            if method == "POST":
                return 200, self._create(body)
            if method == "GET":
                return 200, {"object": "list", "data": [self._public(j) for j in reversed(self.jobs.values())], "has_more": False}
        job = self.jobs.get(parts[3]) if len(parts) > 3 else None
        if job is None:
            raise _BadRequest(f"Could not find fine-tune: {parts[3] if len(parts) > 3 else ''}", "fine_tune_id", 404)
        if len(parts) == 4 and method == "GET":
            return 200, self._public(self._advance(job))
        if len(parts) == 5 and parts[4] == "cancel" and method == "POST":
            if job["status"] in TERMINAL:
                raise _BadRequest(f"Job has already completed: {job['id']}", status=400)
            self._set(job, "cancelled", "Fine-tuning job cancelled")
            return 200, self._public(job)
        if len(parts) == 5 and parts[4] == "events" and method == "GET":
            return 200, {"object": "list", "data": list(reversed(self.events[job["id"]])), "has_more": False}
        return None

    # -- files ------------------------------------------------------------------------------------
    def _upload(self, raw: bytes, headers: dict) -> dict:
        ctype = headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            raise _BadRequest("files.create needs multipart/form-data", "file")
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(f"Content-Type: {ctype}\r\n\r\n".encode() + raw)
        fields, filename, content = {}, None, None
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if name == "file":
                filename, content = part.get_filename(), part.get_payload(decode=True)
            else:
                fields[name] = part.get_payload(decode=True).decode()
        if content is None:
            raise _BadRequest("missing 'file'", "file")
        if fields.get("purpose") != "fine-tune":
            raise _BadRequest(f"unexpected purpose {fields.get('purpose')!r}", "purpose")
        fid = f"file-fake{next(self._counter)}"
        self.files[fid] = {"id": fid, "object": "file", "bytes": len(content), "created_at": int(time.time()), "filename": filename,
                           "purpose": "fine-tune", "status": "processed", "_content": content.decode("utf-8")}
        return self._public(self.files[fid])

    # -- jobs -------------------------------------------------------------------------------------
    def _create(self, body: Any) -> dict:
        if not isinstance(body, dict) or not body.get("model") or not body.get("training_file"):
            raise _BadRequest("model and training_file are required", "training_file")
        meta = self.files.get(body["training_file"])
        if meta is None:
            raise _BadRequest(f"invalid training_file: {body['training_file']}", "training_file", 400)
        rows = []
        for number, line in enumerate(meta["_content"].splitlines(), 1):
            try:
                messages = json.loads(line)["messages"]
                assert messages[-1]["role"] == "assistant" and all(isinstance(m["content"], str) for m in messages)
            except Exception:
                raise _BadRequest(f"training file line {number} is not a chat example", "training_file") from None
            prompt = "\n".join(m["content"] for m in messages[:-1])
            rows.append((prompt, messages[-1]["content"]))
        if len(rows) < 10:
            raise _BadRequest(f"Training file has {len(rows)} example(s), but must have at least 10 examples", "training_file")
        jid = f"ftjob-fake{next(self._counter)}"
        epochs = (((body.get("method") or {}).get("supervised") or {}).get("hyperparameters") or {}).get("n_epochs") or \
            (body.get("hyperparameters") or {}).get("n_epochs") or "auto"
        job = {"id": jid, "object": "fine_tuning.job", "model": body["model"], "created_at": int(time.time()), "finished_at": None,
               "fine_tuned_model": None, "organization_id": "org-fake", "result_files": [], "status": "validating_files",
               "validation_file": None, "training_file": body["training_file"], "seed": body.get("seed", 0),
               "hyperparameters": {"n_epochs": epochs, "batch_size": "auto", "learning_rate_multiplier": "auto"},
               "method": body.get("method"), "trained_tokens": None, "error": None, "suffix": body.get("suffix"),
               "_polls": 0, "_rows": rows}
        self.jobs[jid] = job
        self.events[jid] = []
        self._event(job, f"Validating training file: {body['training_file']}")
        return self._public(job)

    def _event(self, job: dict, message: str, level: str = "info") -> None:
        self.events[job["id"]].append({"id": f"ftevent-fake{next(self._counter)}", "object": "fine_tuning.job.event",
                                       "created_at": int(time.time()), "level": level, "message": message, "type": "message"})

    def _set(self, job: dict, status: str, message: str, level: str = "info") -> None:
        job["status"] = status
        if status in TERMINAL:
            job["finished_at"] = int(time.time())
        self._event(job, message, level)

    def _advance(self, job: dict) -> dict:
        if job["status"] in TERMINAL:
            return job
        job["_polls"] += 1
        if job["_polls"] == 1:
            self._set(job, "queued", "Files validated, moving job to queued state")
        elif job["_polls"] < self.polls_to_finish:
            self._set(job, "running", f"Step {job['_polls']}: training loss={1.0 / job['_polls']:.3f}")
        else:
            outcome = self.outcome(self._public(job), job["_rows"])
            status, message = (outcome, None) if isinstance(outcome, str) else outcome
            if status == "succeeded":
                job["fine_tuned_model"] = f"ft:{job['model']}:fake-org:{job['suffix'] or 'model'}:{job['id']}"
                job["trained_tokens"] = sum(len(p) + len(c) for p, c in job["_rows"]) // 3 * (job["hyperparameters"]["n_epochs"]
                                                                                               if isinstance(job["hyperparameters"]["n_epochs"], int) else 1)
                self._trained[job["fine_tuned_model"]] = job["_rows"]
                self.models = (*self.models, job["fine_tuned_model"])
                self._set(job, "succeeded", "The job has successfully completed")
            elif status == "failed":
                job["error"] = {"code": "invalid_training_file", "message": message or "The job failed due to an invalid training file.",
                                "param": "training_file"}
                self._set(job, "failed", job["error"]["message"], "error")
            elif status == "cancelled":
                self._set(job, "cancelled", "Fine-tuning job cancelled")
            else:
                raise ValueError(f"unknown outcome {status!r}")
        return job

    @staticmethod
    def _public(record: dict) -> dict:
        return {k: v for k, v in record.items() if not k.startswith("_")}
