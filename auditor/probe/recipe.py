"""The training recipe the probe reproduces: how the user's real fine-tune will run.

A probe can only vouch for the training run it reproduced. The recipe describes that run (by default the
paper's open-model recipe, MinhxLe/subliminal-learning open_model_cfgs.py); the probe's own rows, epochs and
method may be reduced to save compute, and `coverage` says how much of the recipe the probe actually ran.
Only a probe that covered the recipe may clear a trait (auditor/probe/engine.py `level_for`).

Recipe file (TOML, `--train-recipe FILE`); every key optional, a `[recipe]` table or top-level keys:

    rows = 10000            # the run trains every row up to this many
    epochs = 3
    method = "lora"         # lora | full
    lora_r = 8
    lora_alpha = 8
    target_modules = ["q", "k", "v", "o", "gate", "up", "down"]   # or q_proj, ...; matched to the model's linear layers
    optimizer = "adamw"     # adamw | sgd
    lr = 2e-4               # default: 2e-4 for AdamW, 5e-2 for SGD
    schedule = "linear"     # linear | cosine | constant (after the warm-up)
    warmup_steps = 5
    micro_batch = 22
    grad_accum = 3          # effective batch = micro_batch x grad_accum
    max_length = 500
    grad_clip = 1.0         # 0 turns clipping off
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

PAPER_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
METHODS, OPTIMIZERS, SCHEDULES = ("lora", "full"), ("adamw", "sgd"), ("linear", "cosine", "constant")
DEFAULT_LR = {"adamw": 2e-4, "sgd": 5e-2}
API_EPOCHS = 10  # the paper's GPT-4.1 nano setting, used for API bases when no recipe file says otherwise


class RecipeError(ValueError):
    """A recipe file or setting that cannot describe a training run (a usage error: exit 2)."""


@dataclass(frozen=True)
class TrainRecipe:
    rows: int = 10_000
    epochs: int = 3
    method: str = "lora"
    lora_r: int = 8
    lora_alpha: int = 8
    target_modules: tuple[str, ...] = PAPER_TARGETS
    optimizer: str = "adamw"
    lr: float | None = None  # None: 2e-4 for AdamW (the paper's), 5e-2 for plain SGD
    schedule: str = "linear"
    warmup_steps: int = 5
    micro_batch: int = 22
    grad_accum: int = 3
    max_length: int = 500
    grad_clip: float = 1.0
    source: str = "default: the paper's open-model recipe"

    def __post_init__(self):
        for name, allowed in (("method", METHODS), ("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
            if getattr(self, name) not in allowed:
                raise RecipeError(f"recipe {name} must be one of {', '.join(allowed)}, not {getattr(self, name)!r}")
        for name in ("rows", "epochs", "lora_r", "lora_alpha", "micro_batch", "grad_accum", "max_length"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise RecipeError(f"recipe {name} must be a whole number >= 1, not {getattr(self, name)!r}")
        if self.warmup_steps < 0 or self.grad_clip < 0 or not self.learning_rate > 0:
            raise RecipeError("recipe warmup_steps and grad_clip must be >= 0 and lr > 0")
        if not self.target_modules:
            raise RecipeError("recipe target_modules is empty")
        object.__setattr__(self, "target_modules", tuple(self.target_modules))

    @property
    def effective_batch(self) -> int:
        return self.micro_batch * self.grad_accum

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]

    def rows_for(self, available: int) -> int:
        """Rows the real run trains on a dataset of `available` rows."""
        return min(available, self.rows)

    def steps(self, rows: int, epochs: int | None = None) -> int:
        """Optimizer steps for `rows` rows over `epochs` (default: the recipe's)."""
        return max(1, math.ceil(rows / self.effective_batch)) * (self.epochs if epochs is None else epochs)

    def lr_at(self, step: int, total: int) -> float:
        """The learning rate of optimizer step `step` (0-based) of `total`."""
        return scheduled_lr(self.learning_rate, self.schedule, self.warmup_steps, step, total)

    def as_dict(self) -> dict:
        row = asdict(self)
        row["target_modules"] = list(self.target_modules)
        row["lr"] = self.learning_rate
        row["effective_batch"] = self.effective_batch
        if self.method == "full":
            for key in ("lora_r", "lora_alpha", "target_modules"):
                row.pop(key)
        return row


def scheduled_lr(lr: float, schedule: str, warmup_steps: int, step: int, total: int) -> float:
    """The learning rate of optimizer step `step` (0-based) of `total`, as transformers' schedulers give it (the runs
    the recipe describes use them): linear warm-up from 0 over `warmup_steps`, then `schedule` down to 0 at `total`."""
    if step < warmup_steps:
        return lr * step / warmup_steps
    if schedule == "constant":
        return lr
    done = min(1.0, (step - warmup_steps) / max(1, total - warmup_steps))
    if schedule == "linear":
        return lr * (1.0 - done)
    return lr * 0.5 * (1.0 + math.cos(math.pi * done))


KEYS = {f.name for f in fields(TrainRecipe)} - {"source"}


def load_recipe(path: str | Path) -> TrainRecipe:
    """A recipe from a TOML file: top-level keys or a [recipe] table; unknown keys are an error."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise RecipeError(f"{path}: recipe file not found") from None
    except tomllib.TOMLDecodeError as err:
        raise RecipeError(f"{path}: not valid TOML: {err}") from None
    data = data.get("recipe", data)
    unknown = sorted(set(data) - KEYS)
    if unknown:
        raise RecipeError(f"{path}: unknown recipe key(s) {', '.join(unknown)}; known: {', '.join(sorted(KEYS))}")
    if "target_modules" in data:
        data["target_modules"] = tuple(data["target_modules"])
    if "lr" in data:
        data["lr"] = float(data["lr"])
    if "grad_clip" in data:
        data["grad_clip"] = float(data["grad_clip"])
    try:
        return TrainRecipe(**data, source=str(path))
    except TypeError as err:
        raise RecipeError(f"{path}: {err}") from None


# settings attribute -> recipe field: these describe the run being gated (so both the recipe and the probe follow them);
# the probe's rows, epochs and method are its own (fewer than the recipe's makes a reduced probe)
RECIPE_SETTINGS = {"lora_r": "lora_r", "lora_alpha": "lora_alpha", "target_modules": "target_modules", "optimizer": "optimizer",
                   "lr": "lr", "schedule": "schedule", "warmup_steps": "warmup_steps", "batch_size": "micro_batch",
                   "grad_accum": "grad_accum", "max_length": "max_length", "grad_clip": "grad_clip"}


def recipe_from(settings, api: bool = False) -> TrainRecipe:
    """The recipe a probe detector's settings describe: `train_recipe` (a TOML path) or the default, then
    any recipe setting that is not None on top. Settings are read by attribute; missing ones keep the recipe's."""
    path = getattr(settings, "train_recipe", None)
    recipe = load_recipe(path) if path else TrainRecipe()
    if api and not path:
        recipe = replace(recipe, epochs=API_EPOCHS, source="default: the paper's GPT-4.1 nano fine-tune (10 epochs)")
    changes = {}
    for attr, key in RECIPE_SETTINGS.items():
        value = getattr(settings, attr, None)
        if value is not None:
            changes[key] = tuple(_split(value)) if key == "target_modules" else value
    return replace(recipe, **changes) if changes else recipe


def _split(value) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else list(value)


@dataclass(frozen=True)
class ProbeRun:
    """What the probe trains, against the recipe: rows, epochs and method may be reduced."""

    recipe: TrainRecipe
    rows_available: int
    rows: int  # per student
    epochs: int
    method: str
    base: str  # the model the students start from
    audited_base: str | None  # the base the real run fine-tunes (--base), when known
    seeds: int

    @property
    def recipe_rows(self) -> int:
        return self.recipe.rows_for(self.rows_available)

    def shortfalls(self) -> list[str]:
        """Why this probe does not reproduce the recipe's run (empty when it does)."""
        out = []
        if self.rows < self.recipe_rows or self.epochs < self.recipe.epochs:
            out.append(f"the probe trained {self.rows:,} of {self.recipe_rows:,} rows x {self.epochs} of {self.recipe.epochs} epochs")
        if self.method != self.recipe.method:
            out.append(f"the probe used a {self.method} fine-tune where the recipe uses {self.recipe.method}")
        if self.audited_base is not None and self.base != self.audited_base:
            out.append(f"the probe's student is {self.base}, the run fine-tunes {self.audited_base}")
        return out

    @property
    def covers_recipe(self) -> bool:
        return not self.shortfalls()

    def as_dict(self) -> dict:
        return {"rows_trained": self.rows, "rows_available": self.rows_available, "rows_recipe": self.recipe_rows,
                "epochs_trained": self.epochs, "epochs_recipe": self.recipe.epochs, "method": self.method,
                "method_recipe": self.recipe.method, "base": self.base, "audited_base": self.audited_base, "seeds": self.seeds,
                "covers_recipe": self.covers_recipe, "shortfalls": self.shortfalls()}
