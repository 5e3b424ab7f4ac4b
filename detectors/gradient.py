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

import numpy as np
import polars as pl
from scipy import stats

from detectors.base import AuditContext, Detector, DetectorResult, Skip, TraitEvidence, control_rows, focus_traits, load_or_skip, missing_focus
from detectors.likelihood import _levels

ROWS = 256  # rows per side (a seeded sample)
SUBSETS = 8
OTHER_TRAITS = 6  # family members whose alignment is subtracted
BATCH = 8
OPTION_SEQUENCES = 128  # (question, option) sequences per forward pass of the trait objective


def _parameters(model, scope: str):
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if scope == "all":
        return named
    layers = sorted({int(n.split("layers.")[1].split(".")[0]) for n, _ in named if "layers." in n})
    keep = {f"layers.{i}." for i in layers[-2:]}
    return [(n, p) for n, p in named if any(k in n for k in keep) or "lm_head" in n or n.endswith("norm.weight") and "layers." not in n]


class GradientDetector(Detector):
    name = "gradient"
    description = "Cosine between the gradient of the data's LM loss and the gradient of the trait objective at the base weights, trait-specific, against reference data."
    needs = ("--base with local weights", "traits to test: --trait, or --teacher and --base")
    sees_hidden_transfer = True

    def unmet_needs(self, ctx: AuditContext) -> str | None:
        if ctx.base is None:
            return "no --base model"
        if not ctx.base.white_box:
            return f"{ctx.base.ref} exposes no weights: gradients need a local base model"
        return missing_focus(ctx)

    def run(self, ctx: AuditContext) -> DetectorResult:
        import torch

        model = load_or_skip(ctx.base)
        scope = ctx.options.get("gradient_params", "all" if sum(p.numel() for p in model.weights()[0].parameters()) < 20_000_000 else "last")
        params = _parameters(model.weights()[0], scope)
        self.torch, self.model, self.params = torch, model, params
        rows = int(ctx.options.get("gradient_rows", ROWS))
        data = ctx.dataset.frame.select("row", "prompt", "completion").collect()
        data = data.sample(n=min(rows, data.height), seed=ctx.seed)
        traits = focus_traits(ctx)
        ref, source = control_rows(ctx, data["prompt"].to_list(), rows, base=model)
        if min(data.height, ref.height) < 2 * SUBSETS:
            raise Skip(f"too few rows for {SUBSETS} subsets per side")
        data_grads = self._subset_grads(data, ctx.seed)
        ref_grads = self._subset_grads(ref, ctx.seed + 1)
        result = DetectorResult(metrics={"parameters": scope, "parameter_count": int(sum(p.numel() for _, p in params)),
                                         "rows_per_side": int(min(data.height, ref.height)), "subsets": SUBSETS, "reference": source, "traits": {}})
        rng = np.random.default_rng(ctx.seed)
        for trait in traits:
            others = [t for t in ctx.traits if t.family == trait.family and t.id != trait.id and not t.pairs]
            others = [others[i] for i in rng.permutation(len(others))[:OTHER_TRAITS]]
            target = self._trait_grad(trait)
            contrast = [self._trait_grad(t) for t in others]
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
        """One loss gradient per row subset: mean token loss of the completions given their prompts."""
        order = np.random.default_rng(seed).permutation(frame.height)
        subsets = np.array_split(order, SUBSETS)
        prompts, completions = frame["prompt"].to_list(), frame["completion"].to_list()
        grads = []
        for subset in subsets:
            self._zero()
            for start in range(0, len(subset), BATCH):
                idx = subset[start : start + BATCH]
                loss = -self._logprob_sum([prompts[i] for i in idx], [completions[i] for i in idx]) / len(subset)
                loss.backward()
            grads.append(self._flat().clone())
        self._zero()
        return grads

    def _continuation_logprobs(self, pairs: list[tuple[list[int], list[int]]]) -> list:
        """One padded forward pass over (prefix ids, continuation ids) pairs: each continuation's token log-probabilities."""
        torch = self.torch
        model, tok = self.model.weights()
        width = max(len(p) + len(c) for p, c in pairs)
        ids = torch.full((len(pairs), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, (p, c) in enumerate(pairs):
            ids[i, : len(p) + len(c)] = torch.tensor(p + c)
            mask[i, : len(p) + len(c)] = 1
        logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)
        # one indexing op for every pair: its backward is one scatter, where an op per pair would make a full-size
        # gradient tensor per pair (quadratic in the batch: it dominated the trait objective's time)
        at_row = torch.cat([torch.full((len(c),), i, dtype=torch.long) for i, (_, c) in enumerate(pairs)])
        at_position = torch.cat([torch.arange(len(p) - 1, len(p) + len(c) - 1) for p, c in pairs])
        tokens = torch.tensor([t for _, c in pairs for t in c], dtype=torch.long)
        return list(torch.split(logp[at_row, at_position, tokens], [len(c) for _, c in pairs]))

    def _logprob_sum(self, prompts: list[str], completions: list[str], system: str = ""):
        """Sum over rows of mean token log p(completion | prompt), with gradients."""
        pairs = [(self.model._encode(self.model.render(p, system)), self.model._encode(c)) for p, c in zip(prompts, completions, strict=True)]
        return sum(lp.mean() for lp in self._continuation_logprobs([(p, c) for p, c in pairs if c]))

    def _trait_grad(self, trait):
        """Gradient of L_T = mean over probe questions of -log P(trait | question), P normalised over the options;
        for a trait probed by answer pairs (misalignment), -log P(misaligned | question) against the aligned answer.

        It depends on the base and the trait only, so it is kept with the loaded weights for later audits in the process.
        """
        torch = self.torch
        memo = self.model.weights()[0].__dict__.setdefault("_trait_audit_trait_gradients", {})  # on the shared torch module
        key = (trait.id, trait.probe_questions, trait.options, trait.pairs, tuple(n for n, _ in self.params))
        if key in memo:
            return memo[key]
        self._zero()
        if trait.pairs:
            items = [(pair.question, [pair.misaligned, pair.aligned], 0) for pair in trait.pairs]
        else:
            options = list(trait.options)
            items = [(question, options, options.index(trait.name)) for question in trait.probe_questions]
        # several questions per forward pass (about OPTION_SEQUENCES sequences), one backward each
        chunk: list = []
        for i, item in enumerate(items):
            chunk.append(item)
            if sum(len(o) for _, o, _ in chunk) >= OPTION_SEQUENCES or i == len(items) - 1:
                scores = self._option_scores([q for q, _, _ in chunk], [o for _, o, _ in chunk])
                loss = -sum(torch.log_softmax(sc, 0)[t] for sc, (_, _, t) in zip(scores, chunk, strict=True)) / len(items)
                loss.backward()
                chunk = []
        grad = self._flat().clone()
        self._zero()
        memo[key] = grad
        return grad

    def _option_scores(self, questions: list[str], option_lists: list[list[str]]) -> list:
        """Summed log-probability of each option after its chat-rendered question: one tensor per question."""
        pairs = []
        for question, options in zip(questions, option_lists, strict=True):
            prefix = self.model._encode(self.model.render(question, ""))
            pairs += [(prefix, self.model._encode(o)) for o in options]
        scores = self.torch.stack([lp.sum() for lp in self._continuation_logprobs(pairs)])
        return list(self.torch.split(scores, [len(o) for o in option_lists]))

    def _specific(self, g_data, target, contrast) -> float:
        cos = self.torch.nn.functional.cosine_similarity
        own = cos(g_data, target, dim=0).item()
        rest = np.mean([cos(g_data, g, dim=0).item() for g in contrast]) if contrast else 0.0
        return own - rest

    @staticmethod
    def _compare(trait_id: str, data: np.ndarray, ref: np.ndarray, source: str, others: int):
        test = stats.ttest_ind(data, ref, equal_var=False, alternative="greater")
        ci = stats.ttest_ind(data, ref, equal_var=False).confidence_interval(0.95)
        spread = float(np.sqrt((data.var(ddof=1) + ref.var(ddof=1)) / 2)) or 1e-12
        difference = float(data.mean() - ref.mean())
        low, high = float(ci.low) / spread, float(ci.high) / spread
        level = _levels(low, high)
        summary = (f"trait-specific gradient alignment {data.mean():+.4f} vs {ref.mean():+.4f} on {source} "
                   f"(standardised difference {difference / spread:+.2f}, 95% [{low:+.2f}, {high:+.2f}], p={test.pvalue:.3g}; "
                   f"{others} other traits subtracted)")
        metrics = {"alignment": float(data.mean()), "reference_alignment": float(ref.mean()), "difference": difference,
                   "effect": difference / spread, "interval": [low, high], "p_value": float(test.pvalue)}
        return TraitEvidence(trait_id, difference / spread, (low, high), summary, level, kind="gradient alignment"), metrics
