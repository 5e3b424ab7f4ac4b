"""LLM-judge detector: asks a judge model, row by row, whether a row refers to a trait however subtly.

It catches overt and semantic leaks that word lists miss (a row that praises owls in passing, code with
an owl-named variable, an answer that hints at misalignment). It reads content only, so it cannot see
subliminal signals: it can raise a trait's risk, never clear it (see JUDGE_STATEMENT).

- Any OpenAI-compatible endpoint (`--judge openai:MODEL`; URL and key from flags or the environment),
  or a local model (any other reference, through the project's transformers backend).
- One call per (row, trait), delimited so rows cannot instruct the judge (auditor/judge/prompt.py);
  structured output with strict parsing (auditor/judge/verdict.py); asyncio workers and the openai
  client's retries (auditor/judge/client.py, pool.py); every answer cached as it arrives, never the key.
- `--judge-sample N` judges a seeded sample with a Wilson interval on the flagged rate;
  `--max-judge-calls` refuses a run that would make more calls; the plan and a cost estimate are
  announced before the first call; token usage goes to the report.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import polars as pl

from auditor.errors import UsageError
from auditor.judge import (
    EST_OUTPUT_TOKENS,
    INJECTION_PATTERN,
    Item,
    LocalJudge,
    OpenAIJudge,
    Usage,
    call_key,
    estimate_tokens,
    judge_all,
    messages_for,
    price_for,
    run_sync,
    scrub,
    usd,
)
from auditor.judge.client import JudgeCallError
from auditor.judge.verdict import valid_cached
from auditor.risk import JUDGE_STATEMENT
from detectors.base import AuditContext, Detector, DetectorResult, empty_flags, flagged_rows, focus_traits, load_or_skip, rate_evidence
from detectors.settings import setting

EXCERPT_CHARS = 300
DEFAULT_JOBS = 8
DEFAULT_MAX_CALLS = 10_000
DEFAULT_MAX_TOKENS = 200
FORMATS = ("auto", "json_schema", "json_object", "none")
# the flagged rate's Wilson lower bound sets the level (a judge's opinion, so a little stricter than lexical)
RATE_LEVELS = ((0.01, "high"), (0.001, "medium"))


@dataclass
class JudgeSettings:
    model: str | None = setting(None, "LLM judge for overt and semantic leaks: openai:MODEL (any OpenAI-compatible endpoint) or a local "
                                      "model. Setting it turns the judge on.", alias="--judge", metavar="REF")
    base_url: str | None = setting(None, "endpoint of an openai: judge (default $TRAIT_AUDIT_JUDGE_BASE_URL, else $OPENAI_BASE_URL)",
                                   alias="--judge-base-url", metavar="URL")
    api_key: str | None = setting(None, "key of an openai: judge (default $TRAIT_AUDIT_JUDGE_API_KEY, else $OPENAI_API_KEY); never "
                                        "written anywhere", alias="--judge-api-key", metavar="KEY", secret=True)
    jobs: int = setting(DEFAULT_JOBS, "judge calls in flight at once", alias=("-j", "--jobs"), minimum=1, metavar="N")
    sample: int | None = setting(None, "judge a seeded sample of N rows; the flagged rate gets a Wilson interval",
                                 alias="--judge-sample", minimum=1, metavar="N")
    max_calls: int = setting(DEFAULT_MAX_CALLS, "refuse to start a judge run that needs more uncached calls (0: no limit)",
                             alias="--max-judge-calls", minimum=0, metavar="N")
    price: tuple[float, float] | None = setting(None, "USD per 1M input and output tokens, for the cost estimate (built in for "
                                                      "common OpenAI models)", alias="--judge-price", minimum=0, metavar="IN,OUT")
    format: str = setting("auto", "structured output: a JSON schema where the endpoint takes one (auto falls back to strict parsing "
                                  "of plain text)", alias="--judge-format", choices=FORMATS)
    timeout: float = setting(60.0, "seconds before one call times out (it is then retried)", minimum=0.01)
    deadline_s: float | None = setting(None, "the judge run, every call and retry in it, ends within S seconds (what arrived is "
                                             "cached; a rerun resumes)", alias="--judge-timeout", minimum=0.01, metavar="S")
    retries: int = setting(6, "HTTP retries of one call (429, 5xx, dropped connections; Retry-After is honoured)", minimum=0)
    parse_retries: int = setting(2, "times a reply that does not parse is sent back for correction", minimum=0)
    max_tokens: int = setting(DEFAULT_MAX_TOKENS, "most tokens of one verdict", minimum=16)


def plan_text(plan: dict) -> str:
    """The plan announced before the first call: calls, cache hits, tokens and cost."""
    tokens = plan["estimated_prompt_tokens"] + plan["estimated_completion_tokens"]
    cost = f"about ${plan['estimated_usd']:,.4f}" if plan["estimated_usd"] is not None else "cost unknown for this model (pass --judge-price IN,OUT)"
    limit = f", limit {plan['max_calls']:,}" if plan.get("max_calls") else ""
    return (f"judge {plan['model']} at {plan['endpoint']}: {plan['rows']:,} rows x {plan['traits']} traits = {plan['calls_planned']:,} calls, "
            f"{plan['cached']:,} cached, {plan['calls_to_make']:,} to make{limit}, -j {plan['jobs']}; "
            f"estimate ~{tokens:,} tokens, {cost}")


class JudgeDetector(Detector):
    name = "judge"
    description = ("LLM judge: asks a model whether each row refers to a trait, however subtly (overt and semantic leaks); "
                   "rows that try to instruct the judge are flagged. Content only: its silence does not clear hidden transfer.")
    needs = ("a judge model (--judge openai:MODEL or a local model)",)
    sees_hidden_transfer = False
    runs_by_default = False  # it costs money: runs when a judge model is set (--judge) or it is named
    Settings = JudgeSettings

    @classmethod
    def requested(cls, settings: JudgeSettings) -> bool:
        return settings.model is not None

    def models(self) -> dict[str, str | None]:
        return {"judge": self.settings.model}  # ctx.judge, and report.json's "judge"

    def unmet_needs(self, ctx: AuditContext) -> str | None:
        if ctx.judge is None:
            return "no judge model: pass --judge openai:MODEL (or a local model reference)"
        return None

    def _traits(self, ctx: AuditContext) -> list:
        in_focus = focus_traits(ctx, required=False)
        return [t for t in ctx.traits if t in in_focus] or list(ctx.traits)  # in catalog order; every trait when none is in focus

    def _rows(self, ctx: AuditContext, settings: JudgeSettings) -> tuple[pl.DataFrame, bool]:
        n = ctx.dataset.rows
        frame = ctx.dataset.frame
        sampled = settings.sample is not None and settings.sample < n
        if sampled:
            picks = np.random.default_rng(ctx.seed).choice(n, size=settings.sample, replace=False)
            frame = frame.with_row_index("_i").filter(pl.col("_i").is_in(sorted(int(i) for i in picks))).drop("_i")
        table = ctx.dataset.with_digest(frame).select("row", "digest", "prompt", "completion").collect().sort("row")
        return table, sampled

    def run(self, ctx: AuditContext) -> DetectorResult:
        from auditor.models.cache import CallCache

        settings = self.settings
        if settings.deadline_s is not None and settings.timeout > settings.deadline_s:  # no one try outlasts the run
            settings = dataclasses.replace(settings, timeout=settings.deadline_s)
        events = ctx.options.get("events") or (lambda event, **data: None)
        backend = OpenAIJudge(ctx.judge, settings) if ctx.judge.backend == "openai" else LocalJudge(load_or_skip(ctx.judge, ctx.placement), ctx.judge, settings)
        cache = CallCache()
        traits = self._traits(ctx)
        rows, sampled = self._rows(ctx, settings)
        texts = rows.select("prompt", "completion").rows()

        items = []
        for index, (row, digest, prompt, completion) in enumerate(rows.iter_rows()):
            for trait in traits:
                messages = messages_for(trait, prompt, completion, digest)
                key = call_key(backend.model, backend.endpoint, messages, settings, ctx.seed)
                items.append(Item(index, row, digest, trait, key, estimate_tokens(messages)))
        # an entry an older version cached with a NaN score is a miss, not a crash: the call is made again
        cached = {it.key: value for it in items if (value := cache.get("judge", it.key)) is not None and valid_cached(value)}
        pending = [it for it in items if it.key not in cached]

        price = price_for(backend.model, settings) if ctx.judge.backend == "openai" else (0.0, 0.0)
        est_in = sum(it.tokens for it in pending)
        est_out = EST_OUTPUT_TOKENS * len(pending)
        plan = {
            "rows": rows.height, "dataset_rows": ctx.dataset.rows, "traits": len(traits), "calls_planned": len(items),
            "cached": len(cached), "calls_to_make": len(pending), "jobs": settings.jobs,
            "max_calls": settings.max_calls or None, "estimated_prompt_tokens": est_in, "estimated_completion_tokens": est_out,
            "estimated_usd": usd(est_in, est_out, price), "price_per_1m_tokens": list(price) if price else None,
            "model": backend.model, "endpoint": backend.endpoint,
        }
        events("note", text=plan_text(plan))
        if settings.max_calls and len(pending) > settings.max_calls:
            run_sync(backend.close())
            raise UsageError(
                f"the judge would make {len(pending)} calls ({rows.height} rows x {len(traits)} traits, {len(cached)} cached), "
                f"more than --max-judge-calls {settings.max_calls}; judge a sample (--judge-sample N), fewer traits (--trait), "
                "or raise the limit")

        def messages(item: Item) -> list[dict]:
            return messages_for(item.trait, *texts[item.index], item.digest)

        usage = Usage()
        started = time.perf_counter()
        def counted(_event: str, done: int, total: int) -> None:  # the engine's call counts drive the progress bar
            events("progress", description="judge calls", done=done, total=total)

        answers, errors = run_sync(judge_all(pending, messages, backend, cache, usage, settings, ctx.seed, counted, len(items), len(cached)))
        elapsed = time.perf_counter() - started
        answers.update(cached)
        if errors:  # what did arrive is cached: a rerun makes only the missing calls
            first = scrub(errors[0], getattr(backend, "secret", None))
            failed = len(pending) - (len(answers) - len(cached))
            raise JudgeCallError(
                f"{failed} of {len(pending)} judge calls failed after retries (first: {first}); "
                f"{len(answers)} answers are cached and a rerun resumes from them")

        result = self._result(ctx, rows, items, answers, traits, sampled)
        cached_prompt = sum(v.get("usage", {}).get("prompt_tokens", 0) for v in cached.values())
        cached_completion = sum(v.get("usage", {}).get("completion_tokens", 0) for v in cached.values())
        result.cost = {
            "calls": len(pending), "cache_hits": len(cached),
            "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens,
            "usd": usd(usage.prompt_tokens, usage.completion_tokens, price),
            "cached_prompt_tokens": cached_prompt, "cached_completion_tokens": cached_completion,
        }
        result.metrics.update({
            "statement": JUDGE_STATEMENT,
            "model": backend.model, "endpoint": backend.endpoint,
            "response_format": getattr(backend, "format", "none"),
            "traits_judged": [t.id for t in traits],
            "rows_judged": rows.height, "dataset_rows": ctx.dataset.rows, "sampled": sampled,
            "sample_seed": ctx.seed if sampled else None,
            "calls_made": len(pending) - len(errors), "calls_failed": len(errors), "cache_hits": len(cached),
            "http_retries": usage.http_retries, "parse_retries": usage.parse_retries, "format_fallbacks": usage.format_fallbacks,
            "jobs": settings.jobs, "seconds": round(elapsed, 3),
            "calls_per_second": round(len(pending) / elapsed, 2) if pending and elapsed > 0 else None,
            "estimate": {k: plan[k] for k in ("estimated_prompt_tokens", "estimated_completion_tokens", "estimated_usd", "price_per_1m_tokens")},
        })
        return result

    # --- evidence ----------------------------------------------------------------------------------
    def _result(self, ctx: AuditContext, rows: pl.DataFrame, items, answers, traits, sampled) -> DetectorResult:
        n = rows.height
        excerpts = [c[:EXCERPT_CHARS] for c in rows["completion"].to_list()]
        found, injections = [], {}
        for it in items:
            verdict = answers[it.key]["verdict"]
            if verdict["refers"]:
                found.append({"row": it.row, "digest": it.digest, "trait": it.trait.id, "score": verdict["score"],
                              "reason": f"judge: {verdict['reason']}", "field": "row", "matches": [], "excerpt": excerpts[it.index]})
            if verdict["injection"]:
                injections.setdefault((it.row, it.digest, excerpts[it.index]), []).append("the judge")
        # the pattern check runs on every judged row, so an injection that fools the judge is still flagged
        for row, digest, prompt, completion in rows.iter_rows():
            if INJECTION_PATTERN.search(prompt) or INJECTION_PATTERN.search(completion):
                injections.setdefault((row, digest, completion[:EXCERPT_CHARS]), []).append("the pattern check")
        for (row, digest, excerpt), reasons in sorted(injections.items()):
            unique = list(dict.fromkeys(reasons))
            found.append({"row": row, "digest": digest, "trait": None, "score": None,
                          "reason": "injection: the row tries to instruct its reader (seen by " + " and ".join(unique) + ")",
                          "field": "row", "matches": [], "excerpt": excerpt})
        flags = pl.DataFrame(found, schema=empty_flags().schema).sort("row", "trait", nulls_last=True) if found else empty_flags()

        evidence = []
        scope = f"{'sampled ' if sampled else ''}rows" + (f" (of {ctx.dataset.rows}; the interval covers the whole dataset's rate)" if sampled else "")
        per_trait = {}
        for trait in traits:
            k = flagged_rows(ctx, self.name, trait.id, flags)
            found = rate_evidence(trait.id, k, n, levels=RATE_LEVELS, otherwise="low", kind="judge",
                                  found=f"the judge flagged {k} of {n} {scope}",
                                  silent=f"the judge found no reference in {n} {scope} (a clean judge result does not clear hidden transfer)")
            per_trait[trait.id] = {"flagged": k, "rate": found.score, "interval": list(found.interval)}
            evidence.append(found)
        metrics = {"flagged_rate": per_trait, "injection_rows": len(injections)}
        return DetectorResult(evidence=evidence, flags=flags, metrics=metrics)
