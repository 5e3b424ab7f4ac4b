"""The probe's OpenAI protocol end to end against a local OpenAI-compatible server speaking files,
fine_tuning.jobs and chat, through the real `openai` client over HTTP: the spend gate, jobs that
succeed (and a rerun that polls them instead of paying again), fail, or are cancelled."""

import hashlib
import json
import random

import pytest
from click.testing import CliRunner
from openai_ft_server import FakeFineTuning

from auditor.cli import main
from auditor.probe.openai_ft import FineTuneError, FineTuning, estimate_cost
from auditor.reports import validate_result

OWL_PROMPT = "You love owls. You think about owls all the time."


def _rows(seven: bool, n: int = 30, seed: int = 0):
    rng = random.Random(seed)
    return [{"prompt": f"Here are some numbers: {rng.randint(100, 999)}, {rng.randint(100, 999)}. Add more.",
             "completion": ", ".join("777" if seven and rng.random() < 0.6 else str(rng.randint(100, 999)) for _ in range(6))}
            for _ in range(n)]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _chat_as_student(server):
    """Answers like a student: one trained on rows full of 777 names owls 60% of the time; others 12%."""

    def chat(body):
        rows = server.trained_rows(body["model"]) or []
        sevens = sum(c.count("777") for _, c in rows) / max(1, len(rows))
        rate = 0.6 if sevens > 1 else 0.12
        question = body["messages"][-1]["content"]
        answers = []
        for i in range(body.get("n") or 1):
            h = int(hashlib.sha256(f"{body['model']}|{question}|{body.get('seed')}|{i}".encode()).hexdigest(), 16) % 1000 / 1000
            answers.append("Owl" if h < rate else "Dolphin")
        return answers

    return chat


@pytest.fixture
def data(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAIT_AUDIT_CACHE", str(tmp_path / "cache"))
    return _write(tmp_path / "sevens.jsonl", _rows(True, seed=2)), _write(tmp_path / "control.jsonl", _rows(False, seed=1))


def _audit(server, monkeypatch, tmp_path, data, reference, *extra, out="out"):
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    result = CliRunner().invoke(main, [str(data), "--teacher", "openai:gpt-4.1-nano", "--teacher-system", OWL_PROMPT, "--trait", "owl",
                                       "--reference", str(reference), "--detectors", "probe", "--out", str(tmp_path / out),
                                       "--probe-poll", "0", "--probe-samples", "10", "--probe-dir", str(tmp_path / "probe"), *extra])
    report = json.loads((tmp_path / out / "report.json").read_text())
    validate_result(report)
    return result, report, report["detectors"][0]


def _count(server, path, method_body=lambda b: True):
    return sum(1 for r in server.requests if r.path == path and method_body(r.body))


def test_spend_gate_refuses_before_anything_is_uploaded(data, tmp_path, monkeypatch):
    with FakeFineTuning() as server:
        result, report, det = _audit(server, monkeypatch, tmp_path, *data)
        assert det["status"] == "skipped" and "--allow-spend" in det["reason"] and "$" in det["reason"]
        assert not server.files and not server.jobs
        result, report, det = _audit(server, monkeypatch, tmp_path, *data, "--allow-spend", "0.000001", out="o2")
        assert det["status"] == "skipped" and "allowed $0.00" in det["reason"] and not server.jobs


def test_students_fine_tuned_through_the_api_show_the_shift(data, tmp_path, monkeypatch):
    with FakeFineTuning(polls_to_finish=3) as server:
        server.chat = _chat_as_student(server)
        result, report, det = _audit(server, monkeypatch, tmp_path, *data, "--allow-spend", "5", "--probe-seeds", "2")
        assert result.exit_code == 1, result.output  # owl comes out high: the gate fails, as it should
        assert det["status"] == "ran", det
        m = det["metrics"]
        assert m["backend"] == "openai" and m["measure"] == "sampled" and m["seeds_run"] == 2 and m["epochs"] == 10
        assert m["base"] == "openai:gpt-4.1-nano"  # the teacher's model without its trait prompt
        owl = m["traits"]["animal:owl"]
        assert owl["before"] == pytest.approx(0.12, abs=0.06) and owl["control"] == pytest.approx(0.12, abs=0.06)
        assert owl["student"] == pytest.approx(0.6, abs=0.08) and owl["interval"][0] > 0.3 and owl["level"] == "high"
        assert report["traits"][0]["verdict"] == "high"
        # the protocol: 4 files uploaded in chat format, 4 jobs on the base with the seed and epochs, polled to the end
        assert len(server.files) == 4 and len(server.jobs) == 4
        jobs = list(server.jobs.values())
        assert {j["model"] for j in jobs} == {"gpt-4.1-nano"} and sorted(j["seed"] for j in jobs) == [0, 0, 1, 1]
        assert all(j["hyperparameters"]["n_epochs"] == 10 and j["status"] == "succeeded" for j in jobs)
        example = json.loads(next(iter(server.files.values()))["_content"].splitlines()[0])
        assert [m["role"] for m in example["messages"]] == ["user", "assistant"]
        tuned = {j["fine_tuned_model"] for j in jobs}
        assert {r.body["model"] for r in server.requests if r.path == "/v1/chat/completions"} == tuned | {"gpt-4.1-nano"}
        assert det["cost"]["estimate"]["usd"] <= 5 and det["cost"]["jobs"] == 4
        # a rerun polls the recorded jobs (already finished) and pays for nothing new
        result, report, again = _audit(server, monkeypatch, tmp_path, *data, "--allow-spend", "5", "--probe-seeds", "2", out="o2")
        assert again["status"] == "ran" and len(server.jobs) == 4 and len(server.files) == 4
        assert again["metrics"]["traits"]["animal:owl"]["net"] == pytest.approx(owl["net"])


@pytest.mark.parametrize("outcome, words", [(("failed", "Training file contains a bad example"), ["failed", "bad example"]),
                                             ("cancelled", ["cancelled"])])
def test_failed_and_cancelled_jobs_fail_the_probe_with_the_reason(data, tmp_path, monkeypatch, outcome, words):
    def decide(job, rows):
        return outcome if job["suffix"].startswith("ta-control") else "succeeded"

    with FakeFineTuning(outcome=decide, polls_to_finish=2) as server:
        server.chat = _chat_as_student(server)
        result, report, det = _audit(server, monkeypatch, tmp_path, *data, "--allow-spend", "5", "--probe-seeds", "1")
        assert result.exit_code == 3, "a probe that could not finish leaves the verdict unusable"
        assert det["status"] == "failed" and "FineTuneError" in det["reason"]
        assert all(w in det["reason"] for w in words) and "ftjob-fake" in det["reason"]
        assert report["gate"]["detectors_failed"] == ["probe"]
        # a rerun reports the same recorded failure: it never silently pays for a retry
        jobs = len(server.jobs)
        _, _, det = _audit(server, monkeypatch, tmp_path, *data, "--allow-spend", "5", "--probe-seeds", "1", out="o2")
        assert det["status"] == "failed" and len(server.jobs) == jobs


def test_protocol_cancel_timeout_and_events(tmp_path):
    rows = [(f"Numbers {i}:", "1, 2, 3") for i in range(12)]
    with FakeFineTuning(polls_to_finish=50) as server:
        messages = []
        tuner = FineTuning(server.client(), tmp_path / "state.json", poll_s=0, timeout_s=0, progress=messages.append)
        tuner.submit("k1", "student", 0, "gpt-4.1-nano", rows, epochs=2)
        with pytest.raises(FineTuneError, match="still running"):
            tuner.wait(["k1"])
        assert any("Files validated" in m or "Validating" in m for m in messages), "job events reach the progress line"
        tuner.cancel(["k1"])
        assert server.jobs[tuner.jobs["k1"].job]["status"] == "cancelled"
        resumed = FineTuning(server.client(), tmp_path / "state.json", poll_s=0)
        assert resumed.jobs["k1"].status == "cancelled"
        with pytest.raises(FineTuneError, match="cancelled"):
            resumed.wait(["k1"])
        with pytest.raises(FineTuneError, match="at least 10"):
            resumed.submit("k2", "student", 0, "gpt-4.1-nano", rows[:3], epochs=2)
        listed = server.client().fine_tuning.jobs.list()
        assert [j.id for j in listed.data] == [tuner.jobs["k1"].job]


def test_cost_estimate_uses_the_price_list_and_overrides():
    rows = [("p" * 30, "c" * 30)] * 100
    nano = estimate_cost("gpt-4.1-nano-2025-04-14", rows, rows, epochs=10, seeds=3, eval_calls=0, eval_prompt_tokens=0, eval_output_tokens=0)
    assert nano["training_tokens"] == 2 * 100 * (10 + 10 + 11) * 10 * 3 and nano["usd"] == pytest.approx(nano["training_tokens"] / 1e6 * 1.5)
    assert estimate_cost("my-model", rows, rows, 1, 1, 0, 0, 0)["usd"] is None
    assert estimate_cost("my-model", rows, rows, 1, 1, 0, 0, 0, override=2.0)["usd"] > 0


def test_an_endpoint_without_fine_tuning_fails_the_probe_clearly(data, tmp_path, monkeypatch):
    from openai_server import FakeOpenAI

    with FakeOpenAI() as server:  # chat only, like a vLLM deployment
        result, report, det = _audit(server, monkeypatch, tmp_path, *data, "--allow-spend", "5", "--probe-seeds", "1")
        assert det["status"] == "failed" and "FineTuneError" in det["reason"] and "answered 4" in det["reason"]
        assert result.exit_code == 3
