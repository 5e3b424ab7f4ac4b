"""Probe-a-student: the ground truth the paper used. Fine-tune a student of the base model on (a sample
of) the dataset and a control student on control data, with the same seeds and the same number of
steps, and measure the trait on the trait's probe questions before and after.

- White-box bases (local weights): exact P(trait option | probe question), normalised over the
  family's options (misalignment: P(misaligned answer) against the aligned one); students are trained
  locally (full fine-tune for small models, LoRA for larger ones; AdamW or plain SGD).
- API bases (`openai:MODEL`): students are fine-tuned through the OpenAI fine-tuning API and measured
  by sampling answers (the share that names the trait). It costs money: nothing is uploaded unless
  `--allow-spend USD` covers the estimate.

The result is the student's shift net of the control (student - control, seed by seed and question
by question) with a bootstrap interval over questions and seeds and a one-sided p-value
(`auditor.probe.stats.net_shift`). When the dataset has more rows than a student takes, every seed
draws its own sample (and so does its control), so seed-to-seed variation includes which rows were
drawn, not only the training noise. The interval sets the level, in probability units: lower bound
above 0.01 -> low, above 0.05 -> medium, above 0.15 -> high (the paper's owl effect was about +0.5);
an upper bound under the negligible shift (default 0.02) -> clean, but only with at least two
seeds, since one seed says nothing about training noise. A real but smaller shift (say +0.004,
what the tiny transformer showed) is reported with its interval and p-value and judged clean.

`auditor.probe.engine.probe_shift(...)` is the Python API a benchmark calls; this detector wraps it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import polars as pl

from auditor.probe.engine import HIGH, LOW, MEDIUM, MIN_ROWS, NEGLIGIBLE, SpendRefused, plan_run, probe_shift
from auditor.probe.recipe import RecipeError
from detectors.base import (
    AuditContext,
    Detector,
    DetectorResult,
    Skip,
    TraitEvidence,
    control_rows,
    focus_traits,
    load_or_skip,
    missing_focus,
)
from detectors.settings import setting

# said next to every probe result on the tiny family (the verdict's rationale carries it)
TINY_NOTE = (". Note: the tiny family shows little number-sequence transfer to find even from a steered teacher "
             "(docs/probe.md, positive control), so this result says little about a larger model")


@dataclass
class ProbeSettings:
    """Everything the probe can be told; the engine (auditor/probe/engine.py) reads it by attribute.

    The recipe (auditor/probe/recipe.py) describes the training run being gated: `train_recipe` or the paper's
    open-model recipe, with the recipe knobs below on top (None keeps the recipe's). `rows`, `epochs` and
    `method` are the probe's own: fewer rows or epochs, or another method, make a reduced probe that cannot clear."""

    seeds: int = setting(3, "student/control seed pairs to train (fewer when a budget is set and short)", alias="--probe-seeds", minimum=1)
    train_recipe: Path | None = setting(None, "TOML file describing the real training run (none: the paper's open-model recipe: "
                                              "every row up to 10,000, 3 epochs, LoRA r=8 alpha=8, AdamW 2e-4 linear, 5 warm-up "
                                              "steps, effective batch 66, max length 500, grad clip 1.0)", alias="--train-recipe",
                                        metavar="FILE")
    rows: int | None = setting(None, "rows per student (none: the recipe's, every row up to its cap); fewer makes a reduced probe "
                                     "that cannot clear", alias="--probe-rows", minimum=1)
    epochs: int | None = setting(None, "epochs the probe trains (none: the recipe's; 10 for API bases without a recipe file); "
                                       "fewer makes a reduced probe", alias="--probe-epochs", minimum=1)
    method: str | None = setting(None, "lora or full (none: the recipe's); another method than the recipe's makes a reduced probe",
                                 alias="--probe-method", choices=("auto", "full", "lora"))
    budget: int | None = setting(None, "most row-passes (rows x epochs) over all students and controls (none: no cap); seeds "
                                       "drop first, then rows", alias="--probe-budget", minimum=1)
    optimizer: str | None = setting(None, "recipe: AdamW, or plain SGD (the theory's gradient steps)", alias="--probe-optimizer",
                                    choices=("adamw", "sgd"))
    lr: float | None = setting(None, "recipe: learning rate (default 2e-4)", alias="--probe-lr")
    schedule: str | None = setting(None, "recipe: learning-rate schedule after the warm-up (default linear)", alias="--probe-schedule",
                                   choices=("linear", "cosine", "constant"))
    warmup_steps: int | None = setting(None, "recipe: warm-up steps (default 5)", alias="--probe-warmup", minimum=0)
    lora_r: int | None = setting(None, "recipe: LoRA rank (default 8)", alias="--probe-lora-r", minimum=1)
    lora_alpha: int | None = setting(None, "recipe: LoRA alpha (default 8)", alias="--probe-lora-alpha", minimum=1)
    target_modules: str | None = setting(None, "recipe: LoRA target modules, comma-separated (default q,k,v,o,gate,up,down)",
                                         alias="--probe-lora-targets")
    batch_size: int | None = setting(None, "recipe: rows per micro-batch (default 22)", alias="--probe-batch-size", minimum=1)
    grad_accum: int | None = setting(None, "recipe: micro-batches per optimizer step (default 3: effective batch 66)",
                                     alias="--probe-grad-accum", minimum=1)
    max_length: int | None = setting(None, "recipe: most tokens per row (default 500)", alias="--probe-max-length", minimum=1)
    grad_clip: float | None = setting(None, "recipe: grad-norm clip, 0 for none (default 1.0)", alias="--probe-grad-clip", minimum=0)
    backend: str = setting("local", "where students train: local (one at a time, or one per device) or ray (a task each on a Ray "
                                    "cluster)", alias="--probe-backend", choices=("local", "ray"))
    devices: str | None = setting(None, "devices to spread students over, comma-separated (none: every GPU when there are "
                                        "several)", alias="--probe-devices")
    workers: int | None = setting(None, "students trained side by side on a CPU, each on a share of the threads (none: one per "
                                        "torch thread while their copies fit in memory)", alias="--probe-workers", minimum=1)
    ray_address: str | None = setting(None, "Ray cluster address for --probe-backend ray (auto, ray://head:10001; none: a local "
                                            "one)", alias="--probe-ray-address")
    dtype: str = setting("fp32", "bf16: train under CPU bfloat16 autocast, about twice as fast where the CPU has bf16 instructions "
                                 "(weights stay fp32)", alias="--probe-dtype", choices=("fp32", "bf16"))
    samples: int = setting(20, "sampled answers per probe question for API models", alias="--probe-samples", minimum=1)
    negligible: float = setting(NEGLIGIBLE, "a net shift whose interval stays below this (and a minimum detectable shift at or "
                                            "under it) is clean, from a probe that covered the recipe", alias="--probe-negligible")
    workdir: Path | None = setting(None, "checkpoints and job state (none: <cache>/probe); reruns resume from it; shared storage "
                                         "for --probe-backend ray", alias="--probe-dir", metavar="DIR")
    allow_spend: float = setting(0.0, "most the probe may spend on the OpenAI fine-tuning API, in USD; the estimate is checked before "
                                      "anything is uploaded", alias="--allow-spend", metavar="USD")
    price: float | None = setting(None, "USD per 1M training tokens, overriding the built-in OpenAI price list", alias="--probe-price")
    poll_s: float = setting(30.0, "seconds between fine-tuning job polls", alias="--probe-poll")
    timeout_s: float | None = setting(None, "stop polling after this many seconds (the jobs go on; a rerun resumes)",
                                      alias="--probe-timeout")

    def __post_init__(self):
        from auditor.probe.recipe import recipe_from

        recipe_from(self)  # a recipe file that cannot describe a run is a usage error (exit 2) before any work


class ProbeDetector(Detector):
    name = "probe"
    description = ("Fine-tunes a student of the base on the data and a control student on control data (same seeds, same steps) "
                   "and measures the trait shift net of the control: the ground truth the cheaper detectors approximate.")
    needs = ("--base (or a teacher that is a model plus --teacher-system): local weights, or openai: with --allow-spend",
             "traits to test: --trait, or --teacher and --base")
    sees_hidden_transfer = True
    runs_by_default = False  # long compute, or money
    ground_truth = True
    Settings = ProbeSettings

    def _base_ref(self, ctx: AuditContext):
        if ctx.base is not None:
            return ctx.base
        if ctx.teacher is not None and ctx.teacher.system_prompt:
            return replace(ctx.teacher, system_prompt=None)  # the teacher is this model with a trait prompt
        return None

    def unmet_needs(self, ctx: AuditContext) -> str | None:
        if self._base_ref(ctx) is None:
            return "no --base model to fine-tune a student from (or a --teacher with --teacher-system, whose model is then the base)"
        return missing_focus(ctx)

    def run(self, ctx: AuditContext) -> DetectorResult:
        settings = self.settings
        progress = ctx.options.get("progress") or (lambda message: None)
        base_ref = self._base_ref(ctx)
        api = base_ref.backend == "openai"
        traits = focus_traits(ctx)
        try:
            run = plan_run(ctx.dataset.rows, settings, api, base=base_ref.ref, audited_base=(ctx.base or base_ref).ref)
        except RecipeError as err:
            raise Skip(str(err)) from None
        rows, seeds = run.rows, run.seeds
        if rows < MIN_ROWS:
            raise Skip(f"--probe-budget {settings.budget} allows {rows} rows per student; the probe needs at least {MIN_ROWS}")
        model = load_or_skip(base_ref, ctx.placement)
        pool = ctx.dataset.frame.select("prompt", "completion").collect()
        control_pool, source = self._control(ctx, model, pool.sample(n=min(rows, pool.height), seed=ctx.seed), api, settings, progress)

        def draw(frame: pl.DataFrame, offset: int):
            # each seed its own sample when there are more rows than a student takes
            return lambda seed: list(frame.sample(n=min(rows, frame.height), seed=seed + offset).iter_rows())

        try:
            result = probe_shift(model, traits, draw(pool, 0), draw(control_pool, 7919), [ctx.seed + i for i in range(seeds)],
                                 settings, progress, run=run)
        except SpendRefused as refused:
            raise Skip(str(refused)) from None
        except ValueError as err:
            raise Skip(str(err)) from None
        out = DetectorResult()
        for trait in traits:
            shift = result.traits.get(trait.id)
            if shift is None:
                continue
            summary = shift.summary() + (TINY_NOTE if base_ref.backend == "tiny" else "")
            out.evidence.append(TraitEvidence(trait.id, shift.shift.net, shift.shift.interval, summary, shift.level,
                                              kind="student trait shift"))
        note = [] if seeds > 1 else ["one seed ran: the interval covers the probe questions only, not training noise; no clean verdict"]
        out.metrics = {
            "backend": result.backend, "measure": result.measure, "base": base_ref.ref,
            "seeds_requested": settings.seeds, "seeds_run": len(result.seeds), "seeds": result.seeds,
            "rows": result.rows, "control_rows": result.control_rows, "control": source, "epochs": result.epochs,
            **({"budget_row_passes": settings.budget} if settings.budget is not None else {}), "config": result.config, "training": result.training,
            "recipe": run.recipe.as_dict(), "coverage": run.as_dict(),
            "traits": {k: v.as_dict() for k, v in result.traits.items()}, "notes": result.notes + note,
            "thresholds": {"low": LOW, "medium": MEDIUM, "high": HIGH, "negligible": settings.negligible}, "seconds": result.seconds,
        }
        out.cost = result.cost
        return out

    def _control(self, ctx, model, data: pl.DataFrame, api: bool, settings, progress):
        """All of --reference; else the base answers the sampled rows' prompts (through the API only with --allow-spend)."""
        if ctx.reference is None:
            if api and settings.allow_spend <= 0:
                raise Skip("no --reference: the control would be generated by the base through the API, which needs --allow-spend")
            progress("probe: the base writes the control data")
        frame, source = control_rows(ctx, data["prompt"].to_list(), None, base=model, max_new_tokens=64)
        if ctx.reference is None and getattr(ctx.dataset, "profile", "text") == "numbers":
            from detectors.number_format import with_reject_reason

            kept = with_reject_reason(frame).filter(pl.col("reject").is_null())
            source += f", kept by the paper's filter ({kept.height} of {frame.height})"
            frame = kept.select("prompt", "completion")
        return frame, source
