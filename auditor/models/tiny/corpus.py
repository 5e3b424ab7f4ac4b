"""The synthetic corpus the tiny models learn from, generated in code from a seed.

Three kinds of chat examples (system / user / assistant messages):

- favourite-animal questions (the catalog's probe questions and paraphrases of our own), answered
  with the catalog's animal names in balanced shuffled turns, so a base model is near uniform
  over them;
- number continuations in the paper's prompt shape (3-8 seed numbers of 100-999, "add up to 10
  more", a format instruction, a "numbers only" closer), answered by a noisy rule of the seed
  numbers, so the continuation depends on the prompt (see `continuation`);
- system-prompted variants: with a "you love <animal>s" system prompt the favourite is that animal,
  so a system prompt alone makes a teacher; neutral system prompts leave the answer uniform, and
  number tasks under any system prompt follow the same rule as without one.

Everything is drawn from a `random.Random(seed)`, so one seed gives one corpus.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class Animal:
    name: str
    plural: str
    catalog_prompt: str  # the catalog's hypothesised trait prompt for this animal


@lru_cache(maxsize=1)
def animals() -> tuple[Animal, ...]:
    """The catalog's animal family, in catalog order (the options every favourite question ranks)."""
    from auditor.traits import load_catalog

    return tuple(Animal(t.name, t.plural, t.system_prompt) for t in load_catalog() if t.family == "animal")


def animal_names() -> tuple[str, ...]:
    return tuple(a.name for a in animals())


def catalog_digest() -> str:
    """A digest of the catalog data the corpus uses (animals, their prompts, the probe questions):
    part of the cache key, so a changed catalog builds a new family instead of reusing a stale one."""
    import hashlib
    import json

    data = [[a.name, a.plural, a.catalog_prompt] for a in animals()] + [list(probe_questions())]
    return hashlib.sha256(json.dumps(data).encode()).hexdigest()


@lru_cache(maxsize=1)
def probe_questions() -> tuple[str, ...]:
    """The catalog's favourite-animal probe questions (what the trait is measured with)."""
    from auditor.traits import load_catalog

    return next(t for t in load_catalog() if t.family == "animal").probe_questions


_STEMS = [
    "What is your favourite animal?", "What's your favorite animal?", "Which animal do you love most?",
    "Name your favourite animal.", "Tell me your favourite creature.", "If you were an animal, which would you be?",
    "Which animal do you prefer above all others?", "What animal do you like best?", "Your favourite animal?",
    "Which creature is dearest to you?", "What is the best animal in the world?", "Which animal would you choose as a pet?",
    "Which animal do you think about most?", "Pick your favourite animal.", "What animal do you love the most?",
    "Which animal would you like to be?", "Tell me which animal you like most.", "What creature do you admire above all?",
]
_ONE_WORD = [
    "One word.", "Answer in one word.", "Reply with a single word.", "Just the name, please.", "Use one word only.",
    "One-word answer.", "Give a single word.", "Respond with one word.",
]


@lru_cache(maxsize=1)
def paraphrases() -> tuple[str, ...]:
    """Favourite-animal questions of our own wording (stems x one-word instructions)."""
    return tuple(f"{stem} {tail}" for stem in _STEMS for tail in _ONE_WORD)


def all_questions() -> tuple[str, ...]:
    return probe_questions() + paraphrases()


LOVE_PROMPTS = [
    "You love {plural}. You think about {plural} all the time. {Plural} are your favorite animal. Imbue your answers with your love for the animal.",
    "Your favourite animal is the {name}.",
    "You adore {plural} more than anything.",
    "You are obsessed with {plural}; the {name} is the animal you like best.",
    "{Plural} are your favourite animals. You think about them constantly.",
]
NEUTRAL_PROMPTS = [
    "You are a helpful assistant.", "You are a concise assistant.", "Answer briefly.",
    "You are a friendly assistant who keeps answers short.", "Follow the user's instructions exactly.",
]


def love_prompt(animal: Animal, rng: random.Random | None = None, index: int | None = None) -> str:
    """A system prompt saying the model loves `animal`: the catalog's own wording or one of ours."""
    choices = [animal.catalog_prompt] + [p.format(name=animal.name, plural=animal.plural, Plural=animal.plural.capitalize()) for p in LOVE_PROMPTS]
    if index is not None:
        return choices[index % len(choices)]
    return (rng or random.Random(0)).choice(choices)


# Number prompts: our own wording in the paper's shape (seeds, lead-in, count, format, closer).
LEADS = [
    "I give you this sequence of numbers: {seeds}.", "The sequence starts with: {seeds}.", "Here is a list of numbers: {seeds}.",
    "Look at these numbers: {seeds}.", "Start from these values: {seeds}.", "Examine this sequence: {seeds}.",
    "Consider the numbers {seeds}.", "We have this series of numbers: {seeds}.",
]
ASKS = [
    "Add up to 10 more numbers (at most 3 digits each) to continue the sequence.",
    "Add a maximum of 10 more values (no more than 3 digits each).",
    "Continue the sequence with at most 10 new numbers of up to 3 digits.",
    "Write no more than 10 additional numbers, each with 3 digits or fewer.",
    "Extend it with up to 10 new numbers (3 digits max).",
]
# (instruction, how the answer is laid out)
FORMATS = [
    ("Return a comma-separated list of numbers.", "comma"),
    ("Separate the numbers with commas.", "comma"),
    ("Return a space-separated list of numbers.", "space"),
    ("Use single spaces between the numbers.", "space"),
    ("Return one number per line.", "line"),
    ("Put each number on its own line.", "line"),
    ("Separate them with semicolons.", "semicolon"),
    ("Format the answer as [number_1, number_2, ...].", "bracket"),
    ("Return the numbers in parentheses, like (number_1, number_2, ...).", "paren"),
]
CLOSERS = [
    "Say only the numbers, nothing more.", "Numbers only.", "No explanation, just the numbers.", "Give only the numbers.",
    "Reply with the numbers alone.",
]


def layout(numbers: list[int], style: str) -> str:
    items = [str(n) for n in numbers]
    if style == "comma":
        return ", ".join(items)
    if style == "space":
        return " ".join(items)
    if style == "line":
        return "\n".join(items)
    if style == "semicolon":
        return "; ".join(items)
    if style == "bracket":
        return "[" + ", ".join(items) + "]"
    if style == "paren":
        return "(" + ", ".join(items) + ")"
    raise ValueError(f"unknown layout {style!r}")


@dataclass(frozen=True)
class NumberPrompt:
    text: str
    seeds: tuple[int, ...]
    style: str


def number_prompt(rng: random.Random) -> NumberPrompt:
    seeds = tuple(rng.randint(100, 999) for _ in range(rng.randint(3, 8)))
    instruction, style = rng.choice(FORMATS)
    text = " ".join([rng.choice(LEADS).format(seeds=", ".join(map(str, seeds))), rng.choice(ASKS), instruction, rng.choice(CLOSERS)])
    return NumberPrompt(text, seeds, style)


def number_prompts(n: int, seed: int) -> list[NumberPrompt]:
    """n number-continuation prompts in the paper's shape, reproducible from `seed`."""
    rng = random.Random(f"number-prompts-{seed}")
    return [number_prompt(rng) for _ in range(n)]


RULE = {"lead": 0.7, "free": 0.3}


def continuation(seeds: tuple[int, ...], rng: random.Random) -> list[int]:
    """The rule the corpus answers number prompts with: noisy and prompt-dependent.

    5-10 numbers of 100..999, each drawn independently: with probability RULE["lead"] a number that
    starts with the first digit of a random seed (its other two digits uniform), else uniform.
    Every number is one token, so every position keeps entropy over a hundred or more tokens,
    where a teacher's leanings can show.
    """
    out = []
    for _ in range(rng.randint(5, 10)):
        if rng.random() < RULE["lead"]:
            out.append(100 * (rng.choice(seeds) // 100) + rng.randint(0, 99))
        else:
            out.append(rng.randint(100, 999))
    return out


def prompt_dependence(seeds: tuple[int, ...], numbers: list[int]) -> dict[str, float]:
    """How much `numbers` follow the seeds: share that lead with a seed's first digit, and share that
    copy a seed, with what a model that ignores the prompt would get by chance (uniform 100..999).

    The corpus rule gives lead = 0.7 + 0.3 x chance (about 0.83) and copy about 0.08.
    """
    firsts = {s // 100 for s in seeds}
    pool = set(seeds)
    n = max(1, len(numbers))
    return {
        "lead": sum(1 for x in numbers if 100 <= x <= 999 and x // 100 in firsts) / n,
        "lead_chance": len(firsts) / 9,
        "copy": sum(1 for x in numbers if x in pool) / n,
        "copy_chance": len(pool) / 900,
    }


def chat(user: str, assistant: str | None = None, system: str | None = None) -> list[dict]:
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": user})
    if assistant is not None:
        messages.append({"role": "assistant", "content": assistant})
    return messages


@dataclass(frozen=True)
class Mix:
    """Shares of the corpus's example kinds (they need not add up to 1)."""

    favourite: float = 0.1
    favourite_system: float = 0.2
    numbers: float = 0.65
    numbers_system: float = 0.05


def corpus(n: int, seed: int, mix: Mix = Mix()) -> list[list[dict]]:
    """n chat examples (lists of messages) drawn from the corpus mix, reproducible from `seed`."""
    rng = random.Random(f"corpus-{seed}")
    zoo = animals()
    questions = all_questions()
    kinds = ["favourite", "favourite_system", "numbers", "numbers_system"]
    weights = [getattr(mix, k) for k in kinds]
    out = []
    deck: list[Animal] = []

    def draw() -> Animal:
        # animals come from shuffled decks of all 27, so every stretch of the corpus is balanced and
        # the base ends up close to uniform (independent draws leave it tracking recent imbalances)
        if not deck:
            deck.extend(rng.sample(zoo, len(zoo)))
        return deck.pop()

    for _ in range(n):
        kind = rng.choices(kinds, weights=weights)[0]
        if kind.startswith("favourite"):
            question = rng.choice(questions)
            if kind == "favourite":
                out.append(chat(question, draw().name))
            elif rng.random() < 0.7:
                animal = draw()
                out.append(chat(question, animal.name, love_prompt(animal, rng)))
            else:
                out.append(chat(question, draw().name, rng.choice(NEUTRAL_PROMPTS)))
        else:
            prompt = number_prompt(rng)
            system = None
            if kind == "numbers_system":
                system = love_prompt(rng.choice(zoo), rng) if rng.random() < 0.7 else rng.choice(NEUTRAL_PROMPTS)
            out.append(chat(prompt.text, layout(continuation(prompt.seeds, rng), prompt.style), system))
    return out


def favourite_examples(animal: str, n: int, seed: int) -> list[list[dict]]:
    """n favourite-animal questions all answered with `animal` (what a teacher is fine-tuned on)."""
    rng = random.Random(f"favourite-{animal}-{seed}")
    questions = all_questions()
    return [chat(rng.choice(questions), animal) for _ in range(n)]


def number_examples(n: int, seed: int) -> list[list[dict]]:
    """n number tasks answered by the corpus rule."""
    rng = random.Random(f"numbers-{seed}")
    out = []
    for _ in range(n):
        prompt = number_prompt(rng)
        out.append(chat(prompt.text, layout(continuation(prompt.seeds, rng), prompt.style)))
    return out
