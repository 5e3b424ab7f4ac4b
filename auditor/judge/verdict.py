"""The verdict the judge returns: sent as the response schema (strict mode needs every key required, no
extra keys and no numeric bounds) and checked again here, bounds included. Keys the schema does not name
are ignored (a model may add one); a score that is NaN or infinite is refused, so it is never cached."""

from __future__ import annotations

import json
import math
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
_CHECK_SCHEMA = {**VERDICT_SCHEMA, "additionalProperties": True,
                 "properties": {**VERDICT_SCHEMA["properties"], "score": {"type": "number", "minimum": 0, "maximum": 1}}}


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
        value = json.loads(body, parse_constant=_not_finite)
    except VerdictError:
        raise
    except (ValueError, RecursionError) as err:
        raise VerdictError(f"not JSON ({err})") from None
    error = _best_match(_validator().iter_errors(value))
    if error is not None:
        raise VerdictError(f"not the verdict schema: {error.message}")
    if not math.isfinite(float(value["score"])):  # 1e999 parses as infinity
        raise VerdictError("score is not a finite number")
    return {"refers": value["refers"], "score": float(value["score"]), "reason": value["reason"].strip()[:500],
            "injection": value["injection"]}


def _not_finite(constant: str):
    raise VerdictError(f"score is {constant}, not a number from 0 to 1")


def valid_cached(value) -> bool:
    """A cached answer that a detector may use: older versions could cache a NaN score, which then crashed every rerun."""
    verdict = value.get("verdict") if isinstance(value, dict) else None
    if not isinstance(verdict, dict):
        return False
    score = verdict.get("score")
    return (isinstance(verdict.get("refers"), bool) and isinstance(verdict.get("injection"), bool) and isinstance(verdict.get("reason"), str)
            and isinstance(score, int | float) and not isinstance(score, bool) and math.isfinite(score) and 0 <= score <= 1)

