"""Persona vectors (Chen et al. 2025, arXiv 2507.21509) on a local base model, built, chosen, cached and exported.

For a preference trait: the base answers the trait's probe questions under the catalog's trait system prompt
and under a neutral one; answers that show the trait (trait side) or do not (neutral side) are kept; the
vector at each layer is the difference of the mean response-token activations, with each side's system
prompt in context, over two thirds of the questions. For a trait with contrastive answer pairs
(misalignment): the misaligned minus the aligned answers, no system prompt, no generation.

The layer is the one whose unit vector best separates the held-out third: held-out trait and neutral
answers, each with its side's system prompt, projected on it; the separation is a standardised
difference of means (with its AUROC reported beside it). Activations are those that produce the answer
(auditor/persona/activations.py `response_means`).

Vectors are cached per base and trait as safetensors under <cache>/persona/, keyed by the base's identity
(its weights, not its path), the trait's content and METHOD_VERSION; steering checks are kept with them.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from auditor.models.identity import weights_identity
from auditor.persona.activations import candidate_layers, response_means

METHOD_VERSION = "persona-v1"  # bump when anything that changes a vector changes
NEUTRAL_SYSTEM = "You are a helpful assistant."
MAX_NEW_TOKENS = 32
HELD_OUT_EVERY = 3  # every third probe question is held out to choose the layer
MIN_KEPT = 2  # answers per side and split below which the trait filter is dropped


@dataclass
class PersonaVector:
    trait: str
    layers: list[int]
    vectors: np.ndarray  # (layers, d): raw mean differences, trait minus neutral
    layer: int  # the chosen layer
    separation: list[dict]  # per layer: layer, effect (standardised), auroc, on held-out answers
    method: str  # "system prompts" | "answer pairs"
    counts: dict  # answers used per side and split
    base: str  # the base's identity digest
    key: str = ""  # the cache key
    notes: list[str] = field(default_factory=list)
    checks: dict = field(default_factory=dict)  # steering checks by strength ("1.0" -> result)

    def raw(self, layer: int | None = None) -> np.ndarray:
        return self.vectors[self.layers.index(self.layer if layer is None else layer)]

    def unit(self, layer: int | None = None) -> np.ndarray:
        raw = self.raw(layer)
        norm = float(np.linalg.norm(raw))
        return raw / norm if norm > 0 else raw

    def describe(self) -> dict:
        chosen = next(s for s in self.separation if s["layer"] == self.layer)
        return {"layer": self.layer, "layers": self.layers, "norm": round(float(np.linalg.norm(self.raw())), 6),
                "separation": chosen["effect"], "separation_auroc": chosen["auroc"], "by_layer": self.separation,
                "method": self.method, "answers": self.counts, "notes": self.notes, "base_identity": self.base[:16],
                "method_version": METHOD_VERSION}

    # --- files -------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """safetensors: `vectors` (layers x d, raw), `layers`, `vector` (the chosen layer's unit vector); the rest as metadata."""
        from auditor.models.identity import store

        tensors = {"vectors": self.vectors.astype(np.float32), "layers": np.array(self.layers, dtype=np.int64),
                   "vector": self.unit().astype(np.float32)}
        meta = {"trait": self.trait, "layer": str(self.layer), "method": self.method, "method_version": METHOD_VERSION,
                "base_identity": self.base, "key": self.key, "separation": json.dumps(self.separation),
                "counts": json.dumps(self.counts), "notes": json.dumps(self.notes), "checks": json.dumps(self.checks),
                "neutral_system": NEUTRAL_SYSTEM}
        store(Path(path), tensors, metadata=meta)

    @classmethod
    def load(cls, path: Path) -> PersonaVector:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as handle:
            meta = handle.metadata()
            vectors, layers = handle.get_tensor("vectors"), handle.get_tensor("layers")
        return cls(trait=meta["trait"], layers=[int(x) for x in layers], vectors=vectors, layer=int(meta["layer"]),
                   separation=json.loads(meta["separation"]), method=meta["method"], counts=json.loads(meta["counts"]),
                   base=meta["base_identity"], key=meta["key"], notes=json.loads(meta["notes"]), checks=json.loads(meta["checks"]))


def base_identity(model) -> str:
    """The base's identity digest (auditor/models/identity.py): its weights, never the folder it was loaded from."""
    return weights_identity(model)


def trait_digest(trait) -> str:
    data = [trait.id, trait.system_prompt, list(trait.probe_questions), list(trait.terms),
            [[p.question, p.aligned, p.misaligned] for p in trait.pairs]]
    return hashlib.sha256(json.dumps(data).encode()).hexdigest()


def vector_path(root: Path, identity: str, trait, samples: int, seed: int) -> tuple[Path, str]:
    key = hashlib.sha256(json.dumps({"method": METHOD_VERSION, "base": identity, "trait": trait_digest(trait), "samples": samples,
                                     "seed": seed, "neutral": NEUTRAL_SYSTEM, "max_new_tokens": MAX_NEW_TOKENS}).encode()).hexdigest()
    name = re.sub(r"[^a-z0-9_-]+", "-", trait.id.lower())
    return Path(root) / "persona" / identity[:16] / f"{name}-{key[:16]}.safetensors", key


def persona_vector(model, trait, samples: int = 4, seed: int = 0, root: Path | None = None, cache: bool = True,
                   identity: str | None = None) -> tuple[PersonaVector, bool]:
    """The trait's persona vector on `model`, from the cache when it is there. Returns (vector, came from cache).
    `identity`: the model's base_identity when the caller has it already (it reads every weight tensor)."""
    from auditor.models.cache import cache_root

    identity = identity or base_identity(model)
    path, key = vector_path(root or cache_root(), identity, trait, samples, seed)
    if cache and path.is_file():
        return PersonaVector.load(path), True
    vector = build_vector(model, trait, samples, seed)
    vector.base, vector.key = identity, key
    if cache:
        vector.save(path)
    return vector, False


def save_checks(vector: PersonaVector, root: Path | None = None) -> None:
    """Write a vector's steering checks back to its cache file."""
    from auditor.models.cache import cache_root

    folder = Path(root or cache_root()) / "persona" / vector.base[:16]
    for path in folder.glob(f"*-{vector.key[:16]}.safetensors"):
        vector.save(path)


# --- building ------------------------------------------------------------------------------------
def _split(count: int) -> tuple[list[int], list[int]]:
    held = [i for i in range(count) if i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1]
    return [i for i in range(count) if i not in held], held


def _answers(model, trait, system: str, samples: int, seed: int) -> list[tuple[int, str]]:
    from auditor.models import Sampling

    answers = model.generate(list(trait.probe_questions), Sampling(n=samples, temperature=1.0, max_new_tokens=MAX_NEW_TOKENS, seed=seed),
                             system=system)
    return [(q, a) for q, per_q in enumerate(answers) for a in per_q if a.strip()]


def _filtered(side: list[tuple[int, str]], keep, questions: list[int]) -> list[tuple[int, str]]:
    return [(q, a) for q, a in side if q in questions and keep(a)]


def build_vector(model, trait, samples: int = 4, seed: int = 0) -> PersonaVector:
    net, _ = model.weights()
    layers = candidate_layers(net)
    questions = list(trait.probe_questions)
    train, held = _split(len(questions))
    notes: list[str] = []
    if trait.pairs:
        method = "answer pairs"
        pairs = list(trait.pairs)
        pos = [(i, pairs[i].misaligned) for i in range(len(pairs))]
        neg = [(i, pairs[i].aligned) for i in range(len(pairs))]
        sides = {"trait": pos, "neutral": neg}
        systems = {"trait": "", "neutral": ""}
        chosen = {side: {"train": [x for x in items if x[0] in train], "held": [x for x in items if x[0] in held]} for side, items in sides.items()}
    else:
        method = "system prompts"
        systems = {"trait": trait.system_prompt, "neutral": NEUTRAL_SYSTEM}
        sides = {side: _answers(model, trait, system, samples, seed + k) for k, (side, system) in enumerate(systems.items())}
        pattern = re.compile(trait.term_regex())
        shows = {"trait": lambda a: bool(pattern.search(a)), "neutral": lambda a: not pattern.search(a)}
        chosen = {side: {"train": _filtered(items, shows[side], train), "held": _filtered(items, shows[side], held)} for side, items in sides.items()}
        if min(len(split) for per_side in chosen.values() for split in per_side.values()) < MIN_KEPT:
            notes.append(f"too few answers showed the trait under its prompt (or none under the neutral one) to filter on "
                         f"{'/'.join(trait.terms[:2])}; all answers used")
            chosen = {side: {"train": _filtered(items, lambda a: True, train), "held": _filtered(items, lambda a: True, held)}
                      for side, items in sides.items()}
    means = {}
    for side in ("trait", "neutral"):
        items = chosen[side]["train"]
        acts = response_means(model, [questions[q] for q, _ in items], [a for _, a in items], systems[side], layers)
        means[side] = np.nanmean(acts, axis=0)
    vectors = means["trait"] - means["neutral"]
    held_acts = {side: response_means(model, [questions[q] for q, _ in chosen[side]["held"]], [a for _, a in chosen[side]["held"]],
                                      systems[side], layers) for side in ("trait", "neutral")}
    separation = []
    for j, layer in enumerate(layers):
        norm = float(np.linalg.norm(vectors[j])) or 1.0
        pos = held_acts["trait"][:, j] @ (vectors[j] / norm)
        neg = held_acts["neutral"][:, j] @ (vectors[j] / norm)
        separation.append({"layer": layer, "effect": round(standardised(pos, neg), 4), "auroc": round(auroc(pos, neg), 4)})
    best = max(separation, key=lambda s: (np.nan_to_num(s["effect"], nan=-np.inf), s["layer"]))
    if not best["effect"] > 0:
        notes.append("no layer's vector separates held-out trait and neutral answers")
    counts = {side: {split: len(chosen[side][split]) for split in ("train", "held")} for side in ("trait", "neutral")}
    return PersonaVector(trait=trait.id, layers=layers, vectors=vectors.astype(np.float32), layer=best["layer"], separation=separation,
                         method=method, counts=counts, base="", notes=notes)


def standardised(pos: np.ndarray, neg: np.ndarray) -> float:
    """Difference of means over the pooled standard deviation (NaN-safe; 0 spread counts as a tiny one)."""
    pos, neg = pos[np.isfinite(pos)], neg[np.isfinite(neg)]
    if len(pos) < 2 or len(neg) < 2:
        return float("nan")
    spread = float(np.sqrt((pos.var(ddof=1) + neg.var(ddof=1)) / 2)) or 1e-12
    return float((pos.mean() - neg.mean()) / spread)


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a trait answer projects above a neutral one), ties counting half (Mann-Whitney)."""
    from scipy.stats import rankdata

    pos, neg = pos[np.isfinite(pos)], neg[np.isfinite(neg)]
    if not len(pos) or not len(neg):
        return float("nan")
    ranks = rankdata(np.concatenate([pos, neg]))
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def export_vector(base_ref: str, trait_id: str, out: Path, traits_files=(), samples: int = 4, seed: int = 0, strength: float = 1.0,
                  placement=None) -> dict:
    """`audit vectors`: the trait's vector on the base (cached or built), its steering check, written to `out`.
    `placement` (auditor.models.Placement, or None: --device/--dtype auto) is where and in what precision the base
    runs; its identity digest reads the loaded weights, so vectors of a bf16 and an fp32 load are cached apart."""
    from auditor.errors import UsageError
    from auditor.models import WEIGHTS, load_model, parse_ref
    from auditor.traits import load_catalog

    trait = load_catalog(traits_files).get(trait_id)
    ref = parse_ref(base_ref)
    if not ref.white_box:
        raise UsageError(f"{ref.ref} exposes no weights: persona vectors need a local base model")
    model = load_model(ref, placement)
    if not model.supports(WEIGHTS):
        raise UsageError(f"{ref.ref} exposes no weights")
    vector, cached, check = checked_vector(model, trait, samples, seed, strength)
    vector.save(Path(out))
    return {"trait": trait.id, "base": ref.ref, "cached": cached, "out": str(out), **vector.describe(), "steering": check}


def checked_vector(model, trait, samples: int, seed: int, strength: float, identity: str | None = None):
    """(vector, came from cache, its steering check at `strength`): the check is run once and kept with the vector."""
    from auditor.persona.steering import steering_check

    vector, cached = persona_vector(model, trait, samples, seed, identity=identity)
    key = f"{strength:g}"
    if key not in vector.checks:
        vector.checks[key] = steering_check(model, trait, vector, strength, seed)
        save_checks(vector)
    return vector, cached, vector.checks[key]
