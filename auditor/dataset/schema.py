"""Which fields hold the prompt and the completion, and how to turn them into one normalised frame."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

# Known layouts, tried in order. A layout matches when all its required fields are present.
# (name, prompt field, completion field, optional extra prompt field)
_PAIR_LAYOUTS: tuple[tuple[str, str, str, str | None], ...] = (
    ("prompt/completion", "prompt", "completion", None),
    ("question/response", "question", "response", None),
    ("instruction/output", "instruction", "output", "input"),
    ("prompt/response", "prompt", "response", None),
    ("question/answer", "question", "answer", None),
    ("input/output", "input", "output", None),
)


@dataclass(frozen=True)
class Layout:
    """How a record maps onto (prompt, completion)."""

    name: str
    completion: str
    prompt: str | None = None
    extra: str | None = None  # appended to the prompt when present (instruction + input)
    chat: bool = False

    @property
    def string_fields(self) -> list[str]:
        return [f for f in (self.prompt, self.completion, self.extra) if f and not self.chat]

    @property
    def required(self) -> list[str]:
        return [f for f in (self.prompt, self.completion) if f]

    def describe(self) -> dict:
        return {"prompt": self.prompt, "completion": self.completion, "extra": self.extra}


def detect_layout(keys: list[str], prompt_field: str | None, completion_field: str | None) -> Layout | None:
    """Pick the layout from the keys of the first records, or from explicit field names."""
    if completion_field:
        return Layout("custom", completion=completion_field, prompt=prompt_field)
    if prompt_field:
        return None  # a prompt without a completion field says nothing about where the completion is
    present = set(keys)
    if "messages" in present:
        return Layout("messages", completion="messages", chat=True)
    for name, prompt, completion, extra in _PAIR_LAYOUTS:
        if prompt in present and completion in present:
            return Layout(name, completion=completion, prompt=prompt, extra=extra if extra in present else None)
    if "text" in present:
        return Layout("text", completion="text")
    return None


def unknown_layout_message(keys: list[str]) -> str:
    known = ", ".join(f"{p}/{c}" for _, p, c, _ in _PAIR_LAYOUTS)
    found = ", ".join(repr(k) for k in keys) or "none"
    return (
        f"cannot tell which fields hold the prompt and the completion (keys found: {found}); "
        f"expected 'messages', {known} or 'text', or pass --prompt-field/--completion-field"
    )


def chat_dtype() -> pl.DataType:
    return pl.List(pl.Struct({"role": pl.String, "content": pl.String}))


def normalise(lf: pl.LazyFrame, layout: Layout, keep: tuple[str, ...] = ()) -> pl.LazyFrame:
    """-> LazyFrame[row, prompt, completion, has_turn, completion_null, prompt_null, *keep].

    `has_turn` is false for chats without an assistant turn."""
    if layout.chat:
        msgs = pl.col(layout.completion)
        roles = msgs.list.eval(pl.element().struct.field("role") == "assistant")
        n = msgs.list.len()
        has_turn = roles.list.any().fill_null(False)
        # index of the last assistant turn: everything before it is the prompt
        last = (n - 1 - roles.list.reverse().list.arg_max()).cast(pl.Int64)
        turns = msgs.list.eval(pl.element().struct.field("role") + pl.lit(": ") + pl.element().struct.field("content"))
        prompt = turns.list.slice(0, last).list.join("\n")
        completion = msgs.list.get(last, null_on_oob=True).struct.field("content")
        return lf.select(
            "row",
            pl.when(has_turn).then(prompt).otherwise(pl.lit("")).alias("prompt"),
            pl.when(has_turn).then(completion).otherwise(pl.lit("")).alias("completion"),
            has_turn.alias("has_turn"),
            msgs.is_null().alias("completion_null"),
            pl.lit(False).alias("prompt_null"),
            *keep,
        )
    prompt = pl.col(layout.prompt) if layout.prompt else pl.lit("")
    if layout.extra:
        extra = pl.col(layout.extra)
        prompt = pl.when(extra.is_not_null() & (extra.str.strip_chars() != "")).then(prompt + pl.lit("\n\n") + extra).otherwise(prompt)
    return lf.select(
        "row",
        prompt.alias("prompt"),
        pl.col(layout.completion).alias("completion"),
        pl.lit(True).alias("has_turn"),
        pl.col(layout.completion).is_null().alias("completion_null"),
        (pl.col(layout.prompt).is_null() if layout.prompt else pl.lit(False)).alias("prompt_null"),
        *keep,
    )
