"""The LLM judge's engine: what it is sent, how it is called, what it must answer, what it costs.

- `prompt`: the rubric as the system message and the row as delimited data (`messages_for`), and the
  pattern that flags rows trying to instruct their reader.
- `verdict`: the verdict schema sent as structured output, and its strict parser.
- `client`: an OpenAI-compatible endpoint (the openai client's retries, honouring Retry-After) or a local
  model behind one async `complete`; the call cache key (never the API key).
- `pool`: asyncio workers that make the pending calls and cache every answer as it arrives.
- `pricing`: token and USD estimates.

The detector (detectors/judge.py) plans the calls, runs them through this package and turns verdicts into
evidence; bench/judge.py drives the same code.
"""

from auditor.judge.client import Fatal, JudgeCallError, LocalJudge, OpenAIJudge, Usage, call_key, run_sync, scrub
from auditor.judge.pool import Item, judge_all
from auditor.judge.pricing import EST_OUTPUT_TOKENS, PRICES, estimate_tokens, parse_price, price_for, usd
from auditor.judge.prompt import INJECTION_PATTERN, PROMPT_VERSION, boundary, messages_for, render_row, system_message
from auditor.judge.verdict import VERDICT_SCHEMA, VerdictError, parse_verdict

__all__ = [
    "EST_OUTPUT_TOKENS", "INJECTION_PATTERN", "PRICES", "PROMPT_VERSION", "VERDICT_SCHEMA", "Fatal", "Item", "JudgeCallError",
    "LocalJudge", "OpenAIJudge", "Usage", "VerdictError", "boundary", "call_key", "estimate_tokens", "judge_all", "messages_for",
    "parse_price", "parse_verdict", "price_for", "render_row", "run_sync", "scrub", "system_message", "usd",
]
