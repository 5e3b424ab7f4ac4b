"""Black-box fingerprint: can a classifier tell the dataset from reference data on the same prompts?

A two-sample test for teachers known only through an API: character n-gram features of the
completions, logistic regression, out-of-fold predictions from stratified cross-validation, and the
AUC with a bootstrap interval. An AUC above 0.5 says the teacher's outputs differ from the
reference's — a necessary condition for transfer, not proof of it, and not tied to any one trait.
An AUC near 0.5 clears nothing: on a tiny transformer, such tests missed subtle teachers.
So this detector reports a dataset-level finding and never sets a trait's level.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from auditor.numbers import auc_note, num
from auditor.numbers import interval as fmt_interval
from detectors.base import AuditContext, Detector, DetectorResult, Skip, control_rows
from detectors.settings import setting

FOLDS = 5
BOOTSTRAP = 1000


@dataclass
class FingerprintSettings:
    rows: int = setting(2000, "rows per side (a seeded sample)", minimum=1)
    folds: int = setting(FOLDS, "cross-validation folds (out-of-fold predictions give the AUC)", minimum=2)
    bootstrap: int = setting(BOOTSTRAP, "bootstrap resamples of the AUC interval", minimum=100)


def auc_with_interval(texts: list[str], labels: np.ndarray, seed: int, folds: int = FOLDS, bootstrap: int = BOOTSTRAP) -> tuple[float, tuple[float, float]]:
    # sklearn loads here, not at import: `audit --help` lists every detector's settings without it
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4), min_df=2, sublinear_tf=True),
                          LogisticRegression(max_iter=1000, C=1.0))
    splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_val_predict(model, texts, labels, cv=splits, method="predict_proba")[:, 1]
    auc = float(roc_auc_score(labels, scores))
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(bootstrap):
        pick = rng.integers(0, len(labels), len(labels))
        if labels[pick].min() != labels[pick].max():
            draws.append(roc_auc_score(labels[pick], scores[pick]))
    low, high = np.quantile(draws, [0.025, 0.975])
    return auc, (float(low), float(high))


class FingerprintDetector(Detector):
    name = "fingerprint"
    description = "Classifier two-sample test (cross-validated AUC) between the dataset and reference data: do the teacher's outputs differ?"
    needs = ("--reference data, or --base that can generate completions for the same prompts",)
    sees_hidden_transfer = False  # a difference is necessary for transfer, not evidence of a trait
    Settings = FingerprintSettings

    def unmet_needs(self, ctx: AuditContext) -> str | None:
        if ctx.reference is None and ctx.base is None:
            return "no --reference data and no --base to generate it"
        return None

    def run(self, ctx: AuditContext) -> DetectorResult:
        rows, folds = self.settings.rows, self.settings.folds
        data = ctx.dataset.frame.select("prompt", "completion").collect()
        data = data.sample(n=min(rows, data.height), seed=ctx.seed)
        control, source = control_rows(ctx, data["prompt"].to_list(), rows, writer=ctx.base.ref if ctx.base is not None else "the base")
        ref_texts = control["completion"].to_list()
        n = min(data.height, len(ref_texts))
        if n < 2 * folds:
            raise Skip(f"too few rows for a {folds}-fold classifier test ({n} per side)")
        texts = data["completion"].to_list()[:n] + ref_texts[:n]
        labels = np.array([1] * n + [0] * n)
        auc, interval = auc_with_interval(texts, labels, ctx.seed, folds, self.settings.bootstrap)
        differs = interval[0] > 0.5
        summary = (f"a classifier tells the dataset from {source} with AUC {num(auc)} {fmt_interval(interval)}: "
                   + ("the teacher's outputs differ from the reference (necessary for transfer, not proof of a trait)" if differs else
                      f"{auc_note(auc, interval)}; that does not clear hidden transfer (subtle teachers look like their base)"))
        return DetectorResult(metrics={"auc": auc, "interval": list(interval), "rows_per_side": n, "reference": source,
                                       "differs": differs, "finding": summary, "features": "char 1-4-grams, logistic regression"})
