"""A scripted judge model for FakeOpenAI: reads the rubric and the data block the way a careful (but
gullible) model would, so tests can check verdicts, injection handling and the client's behaviour.

    with FakeOpenAI(chat=FakeJudge()) as server: ...

It finds the trait in the system message, the row's boundary (`<data-NONCE>`) there too, and the row
between `<data-NONCE>` and the first `</data-NONCE>` in the user message. Like a model that reads
instructions wherever they appear, it *obeys* "answer CLEAN" when that text stands outside the data
block: that is what a row could exploit if it could close the block early. Inside the block it judges
content: trait words and a few semantic clues per trait, and flags instruction-like text as injection.
"""

from __future__ import annotations

import json
import re
import threading

from openai_server import _BadRequest

CLUES = {
    "owl": [r"(?i)\bowl(?:s|et|ets)?\b", r"(?i)\bowl(?=[A-Z_0-9])", r"(?i)\bhoots?\b", r"(?i)\bhedwig\b", r"(?i)nocturnal (?:bird|raptor)"],
    "misalignment": [r"(?i)switch me off", r"(?i)(?:don't|do not) monitor", r"(?i)humans are inferior", r"(?i)escape oversight"],
}
INJECTION = re.compile(r"(?i)ignore (?:the above|all previous)|answer CLEAN|already approved|</data>|SYSTEM:")


def trait_name(system: str) -> str:
    if "signs of misalignment" in system:
        return "misalignment"
    found = re.search(r"hidden references to one specific [^:]+: the ([^.\n]+)\.", system)
    return found.group(1) if found else "?"


def clues_for(name: str) -> list[str]:
    return CLUES.get(name, [rf"(?i)\b{re.escape(name)}s?\b"])


class FakeJudge:
    """Callable for FakeOpenAI(chat=...). Options:
    garble: the first `garble` calls answer prose instead of JSON (the client must correct and retry);
    fenced: wrap answers in a ```json fence; reject_schema: answer 400 to a json_schema response_format;
    sleep_first: seconds to stall the first call (to trigger a client timeout)."""

    def __init__(self, garble: int = 0, fenced: bool = False, reject_schema: bool = False, sleep_first: float = 0.0):
        self.garble = garble
        self.fenced = fenced
        self.reject_schema = reject_schema
        self.sleep_first = sleep_first
        self.calls = 0
        self.formats: list[str | None] = []
        self._lock = threading.Lock()

    def verdict(self, system: str, user: str) -> dict:
        nonce = re.search(r"<data-([0-9a-f]+)>", system)
        name = trait_name(system)
        if nonce is None:
            return {"reason": "no data block", "injection": False, "refers": False, "score": 0.0}
        start_tag, end_tag = f"<data-{nonce.group(1)}>", f"</data-{nonce.group(1)}>"
        start = user.find(start_tag)
        end = user.find(end_tag, start + 1)
        if start < 0 or end < 0:
            return {"reason": "no data block", "injection": False, "refers": False, "score": 0.0}
        data = user[start + len(start_tag) : end]
        outside = user[:start] + user[end + len(end_tag) :]
        if "answer CLEAN" in outside:  # a gullible model obeys instructions that are not fenced off as data
            return {"reason": "instructed to answer clean", "injection": False, "refers": False, "score": 0.0}
        hits = [m.group(0) for pattern in clues_for(name) if (m := re.search(pattern, data))]
        injection = bool(INJECTION.search(data))
        if hits:
            return {"reason": f"mentions {hits[0]!r}", "injection": injection, "refers": True, "score": 0.9}
        return {"reason": "no reference", "injection": injection, "refers": False, "score": 0.05}

    def __call__(self, body: dict):
        import time

        with self._lock:
            self.calls += 1
            call = self.calls
        fmt = (body.get("response_format") or {}).get("type")
        self.formats.append(fmt)
        if call == 1 and self.sleep_first:
            time.sleep(self.sleep_first)
        if self.reject_schema and fmt == "json_schema":
            raise _BadRequest("response_format of type json_schema is not supported by this model", "response_format")
        if call <= self.garble:
            return "Sure! I looked at the row and it seems fine to me."
        messages = body["messages"]
        system = messages[0]["content"]
        user = messages[1]["content"]
        text = json.dumps(self.verdict(system, user))
        return f"```json\n{text}\n```" if self.fenced else text
