"""The verdict the judge returns: sent as the response schema (strict mode needs every key required, no
extra keys and no numeric bounds) and checked again here, bounds included."""

from __future__ import annotations

import json
import re

VERDICT_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["reason", "injection", "refers", "score"],
    "properties": {
        "reason": {"type": "string"},
        "injection": {"type": "boolean"},
        "refers": {"type": "boolean"},
        "score": {"type": "number"},
    },
}
_CHECK_SCHEMA = {**VERDICT_SCHEMA, "properties": {**VERDICT_SCHEMA["properties"], "score": {"type": "number", "minimum": 0, "maximum": 1}}}


class VerdictError(ValueError):
    """A judge reply that is not the verdict JSON."""



_VALIDATOR = None


def _validator():
    global _VALIDATOR
    if _VALIDATOR is None:
        import jsonschema

        _VALIDATOR = jsonschema.Draft202012Validator(_CHECK_SCHEMA)
    return _VALIDATOR


def _best_match(errors):
    import jsonschema

    return jsonschema.exceptions.best_match(errors)


def parse_verdict(text: str | None) -> dict:
    """Strict: one JSON object with exactly the verdict's keys and types, score in [0, 1]. A single
    surrounding ```json fence is tolerated; anything else raises VerdictError."""
    if text is None:
        raise VerdictError("empty reply")
    body = text.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", body, flags=re.S)
    if fenced:
        body = fenced.group(1)
    try:
        value = json.loads(body)
    except ValueError as err:
        raise VerdictError(f"not JSON ({err})") from None
    error = _best_match(_validator().iter_errors(value))
    if error is not None:
        raise VerdictError(f"not the verdict schema: {error.message}")
    return {"refers": value["refers"], "score": float(value["score"]), "reason": value["reason"].strip()[:500],
            "injection": value["injection"]}

