"""Gradient alignment: a first-order probe of a student, without training one.

At the base parameters, one gradient step on the dataset's LM loss (completions given prompts)
changes the trait objective L_T = -log P(trait answer | probe question) by about -lr * g_D . g_T.
So cos(g_D, g_T) > 0 means training on the data would move the student toward the trait (the
paper's one-step theorem). The score is made trait-specific by subtracting the mean cosine with
other members of the trait's family, and compared with the same on reference data. Each side is
split into row subsets, one cosine per subset; a Welch interval of the difference, standardised by
the subsets' spread, sets the level. Gradients are accumulated over small batches and may be
restricted to the last layers, so memory stays bounded; the report says which parameters were used.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import polars as pl

from auditor.models.identity import load_stored, store, stored_path, weights_identity
from auditor.numbers import interval, one_sided_p, signed
from auditor.progress import step, track
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
from detectors.likelihood import _levels
from detectors.settings import setting

ALL_PARAMETERS_BELOW = 20_000_000  # params=auto: every parameter for models smaller than this, else the last layers
STORED_GRADIENT_BYTES = 64 * 2**20  # trait-objective gradients up to this size are kept on disk per base and trait
GRADIENT_METHOD = "trait-gradient-v1"  # bump when anything that changes a trait-objective gradient changes


@dataclass
class GradientSettings:
    rows: int = setting(256, "rows per side (a seeded sample)", minimum=1)
    subsets: int = setting(8, "row subsets per side, one gradient cosine each (the interval's sample size)", minimum=2)
    other_traits: int = setting(6, "family members whose alignment is subtracted to make the score trait-specific", minimum=0)
    batch_tokens: int = setting(0, "tokens per backward pass, rows sorted by length (memory); 0: what the memory plan leaves room for",
                                minimum=0)
    option_sequences: int = setting(128, "(question, option) sequences per forward pass of the trait objective (memory)", minimum=1)
    params: str = setting("auto", "parameters the gradients cover: all, the last two layers and head, or auto (all under 20M parameters)",
                          choices=("auto", "all", "last"))


def _parameters(model, scope: str):
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if scope == "all":
        return named
    layers = sorted({int(n.split("layers.")[1].split(".")[0]) for n, _ in named if "layers." in n})
    keep = {f"layers.{i}." for i in layers[-2:]}
    return [(n, p) for n, p in named if any(k in n for k in keep) or "lm_head" in n or n.endswith("norm.weight") and "layers." not in n]


@contextmanager
def _grads_only_for(module, params):
    """Autograd stops at the earliest parameter that needs a gradient: with the last layers in scope, backward
    never runs through the rest."""
    keep = {id(p) for _, p in params}
    frozen = [p for p in module.parameters() if p.requires_grad and id(p) not in keep]
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)


class GradientDetector(Detector):
    name = "gradient"
    description = "Cosine between the gradient of the data's LM loss and the gradient of the trait objective at the base weights, trait-specific, against reference data."
    needs = ("--base with local weights", "traits to test: --trait, or --teacher and --base")
    sees_hidden_transfer = True
    Settings = GradientSettings

    def unmet_needs(self, ctx: AuditContext) -> str | None:
        if ctx.base is None:
            return "no --base model"
        if not ctx.base.white_box:
            return f"{ctx.base.ref} exposes no weights: gradients need a local base model"
        return missing_focus(ctx)

    def run(self, ctx: AuditContext) -> DetectorResult:
        import torch

        model = load_or_skip(ctx.base, ctx.placement)
        scope = self.settings.params
        if scope == "auto":
            scope = "all" if sum(p.numel() for p in model.weights()[0].parameters()) < ALL_PARAMETERS_BELOW else "last"
        params = _parameters(model.weights()[0], scope)
        self.torch, self.model, self.params = torch, model, params
        self.identity: str | None = None  # the base's weights digest, read once per run when gradients are stored
        rows, subsets = self.settings.rows, self.settings.subsets
        data = ctx.dataset.frame.select("row", "prompt", "completion").collect()
        data = data.sample(n=min(rows, data.height), seed=ctx.seed)
        traits = focus_traits(ctx)
        ref, source = control_rows(ctx, data["prompt"].to_list(), rows, base=model)
        if min(data.height, ref.height) < 2 * subsets:
            raise Skip(f"too few rows for {subsets} subsets per side")
        with _grads_only_for(model.weights()[0], params):
            return self._run(ctx, traits, data, ref, source, scope)

    def _run(self, ctx: AuditContext, traits: list, data: pl.DataFrame, ref: pl.DataFrame, source: str, scope: str) -> DetectorResult:
        params, subsets = self.params, self.settings.subsets
        with step("gradient: loss gradients of the data and reference rows", total=data.height + ref.height, unit="rows") as shown:
            data_grads = self._subset_grads(data, ctx.seed)
            shown.advance(data.height)
            ref_grads = self._subset_grads(ref, ctx.seed + 1)
            shown.advance(ref.height)
        result = DetectorResult(metrics={"parameters": scope, "parameter_count": int(sum(p.numel() for _, p in params)),
                                         "rows_per_side": int(min(data.height, ref.height)), "subsets": subsets, "reference": source, "traits": {}})
        rng = np.random.default_rng(ctx.seed)
        for trait in traits:
            others = [t for t in ctx.traits if t.family == trait.family and t.id != trait.id and not t.pairs]
            others = [others[i] for i in rng.permutation(len(others))[:self.settings.other_traits]]
            with step(f"gradient: trait-objective gradients for {trait.id} and {len(others)} other traits"):
                grads = self._trait_grads([trait, *others])
            target, contrast = grads[trait.id], [grads[t.id] for t in others]
            data_scores = np.array([self._specific(g, target, contrast) for g in data_grads])
            ref_scores = np.array([self._specific(g, target, contrast) for g in ref_grads])
            evidence, metrics = self._compare(trait.id, data_scores, ref_scores, source, len(others))
            result.evidence.append(evidence)
            result.metrics["traits"][trait.id] = metrics
        return result

    # --- gradients ---------------------------------------------------------------------------
    def _flat(self):
        torch = self.torch
        return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).detach().flatten().float() for _, p in self.params])

    def _zero(self):
        for _, p in self.model.weights()[0].named_parameters():
            p.grad = None

    def _subset_grads(self, frame: pl.DataFrame, seed: int) -> list:
        """One loss gradient per row subset: mean token loss of the completions given their prompts. Each subset runs in
        token-budget batches of length-sorted rows, one backward per batch."""
        order = np.random.default_rng(seed).permutation(frame.height)
        subsets = np.array_split(order, self.settings.subsets)
        pairs = self.model.pairs(frame["prompt"].to_list(), frame["completion"].to_list(), system="")
        scorer = self.model.scorer()
        grads = []
        for subset in subsets:
            self._zero()
            for _, logprobs in scorer.iter_with_grad([pairs[i] for i in subset], self.settings.batch_tokens or None):
                loss = -sum(lp.mean() for lp in logprobs) / len(subset)
                loss.backward()
            grads.append(self._flat().clone())
        self._zero()
        return grads

    def _trait_grads(self, traits) -> dict:
        """Gradient of L_T = mean over probe questions of -log P(trait | question), P normalised over the options, for each
        trait; for a trait probed by answer pairs (misalignment), -log P(misaligned | question) against the aligned answer.

        Traits of one family share their questions and options, so one forward pass serves all of them (one backward
        each). A gradient depends on the base and the trait only, so it is kept with the loaded weights for later audits
        in the process, and on disk for later audits of the same base (up to STORED_GRADIENT_BYTES each).
        """
        memo = self.model.weights()[0].__dict__.setdefault("_trait_audit_trait_gradients", {})  # on the shared torch module
        scope = tuple(n for n, _ in self.params)

        def key(trait):
            return (trait.id, trait.probe_questions, trait.options, trait.pairs, scope)

        stored = self._stored_paths(traits, scope)
        for trait in traits:
            found = load_stored(stored[trait.id]) if key(trait) not in memo and stored else None
            if found is not None and found["gradient"].numel() == sum(p.numel() for _, p in self.params):
                memo[key(trait)] = found["gradient"].to(self.params[0][1].device)
        groups: dict[tuple, list] = {}
        for trait in traits:
            if key(trait) not in memo:
                groups.setdefault(("pairs", trait.id) if trait.pairs else (trait.probe_questions, trait.options), []).append(trait)
        for members in groups.values():
            first = members[0]
            if first.pairs:
                items = [(pair.question, [pair.misaligned, pair.aligned]) for pair in first.pairs]
                targets = {first.id: [0] * len(items)}
            else:
                items = [(question, list(first.options)) for question in first.probe_questions]
                targets = {t.id: [first.options.index(t.name)] * len(items) for t in members}
            for trait_id, grad in self._objective_grads(items, targets).items():
                memo[key(next(t for t in members if t.id == trait_id))] = grad
                if stored:
                    store(stored[trait_id], {"gradient": grad})
        return {t.id: memo[key(t)] for t in traits}

    def _stored_paths(self, traits, scope: tuple) -> dict:
        """Where each trait's gradient is kept on disk; {} when gradients are too large to keep (a 7B model's last layers)."""
        first = self.params[0][1]
        if sum(p.numel() for _, p in self.params) * 4 > STORED_GRADIENT_BYTES:
            return {}
        self.identity = self.identity or weights_identity(self.model)
        return {t.id: stored_path("gradient", self.identity, {"method": GRADIENT_METHOD, "trait": [t.id, list(t.probe_questions), list(t.options),
                                  [[p.question, p.aligned, p.misaligned] for p in t.pairs]], "scope": scope, "dtype": str(first.dtype)})
                for t in traits}

    def _objective_grads(self, items: list[tuple[str, list[str]]], targets: dict[str, list[int]]) -> dict:
        """For each target list: the gradient of mean over items of -log softmax(option scores)[target], from one forward
        per chunk of about `option_sequences` (question, option) pairs and one backward per target."""
        torch = self.torch
        scorer = self.model.scorer()
        totals: dict = {}
        chunk: list[int] = []
        for i in track(range(len(items)), "gradient: probe questions through the trait objective", total=len(items), unit="questions"):
            chunk.append(i)
            if sum(len(items[j][1]) for j in chunk) < self.settings.option_sequences and i < len(items) - 1:
                continue
            pairs, sizes = [], []
            for j in chunk:
                prefix = self.model._encode(self.model.render(items[j][0], ""))
                pairs += [(prefix, self.model._encode(o)) for o in items[j][1]]
                sizes.append(len(items[j][1]))
            scores = list(torch.split(torch.stack([lp.sum() for lp in scorer.with_grad(pairs)]), sizes))
            for n, (name, wanted) in enumerate(targets.items()):
                self._zero()
                loss = -sum(torch.log_softmax(sc, 0)[wanted[j]] for sc, j in zip(scores, chunk, strict=True)) / len(items)
                loss.backward(retain_graph=n < len(targets) - 1)
                totals[name] = self._flat() + totals[name] if name in totals else self._flat().clone()
            chunk = []
        self._zero()
        return totals

    def _specific(self, g_data, target, contrast) -> float:
        cos = self.torch.nn.functional.cosine_similarity
        own = cos(g_data, target, dim=0).item()
        rest = np.mean([cos(g_data, g, dim=0).item() for g in contrast]) if contrast else 0.0
        return own - rest

    @staticmethod
    def _compare(trait_id: str, data: np.ndarray, ref: np.ndarray, source: str, others: int):
        from scipy import stats  # slow to import: only when a detector runs, never for `audit --help`

        test = stats.ttest_ind(data, ref, equal_var=False, alternative="greater")
        ci = stats.ttest_ind(data, ref, equal_var=False).confidence_interval(0.95)
        spread = float(np.sqrt((data.var(ddof=1) + ref.var(ddof=1)) / 2)) or 1e-12
        difference = float(data.mean() - ref.mean())
        low, high = float(ci.low) / spread, float(ci.high) / spread
        level = _levels(low, high)
        summary = (f"trait-specific gradient alignment {signed(data.mean())} vs {signed(ref.mean())} on {source} "
                   f"(standardised difference {signed(difference / spread)}, 95% {interval((low, high), sign=True)}, {one_sided_p(test.pvalue, (low, high))}; "
                   f"{others} other traits subtracted)")
        metrics = {"alignment": float(data.mean()), "reference_alignment": float(ref.mean()), "difference": difference,
                   "effect": difference / spread, "interval": [low, high], "p_value": float(test.pvalue), "other_traits": others}
        return TraitEvidence(trait_id, difference / spread, (low, high), summary, level, kind="gradient alignment"), metrics
