"""Untrusted text as safe HTML: escaped, invisible characters made visible, matches wrapped in <mark>.

Every piece of text goes through `markupsafe.escape` on its own before it is joined, so neither a row's text nor the
terms that matched it can inject markup.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import Any

from markupsafe import Markup, escape

from auditor.reports.view import excerpt_window

#: Longest excerpt (in characters) shown per flagged row; longer ones are cut to a window around the first match.
MAX_EXCERPT = 1000

# Characters that are invisible or reorder text (controls, zero-width, bidi overrides, tag characters, variation
# selectors). They are shown as visible code points so hidden payloads and "trojan source" tricks cannot hide.
_SUSPECT = re.compile(r"[^\x20-\x7e\t\n]")
_VARIATION = ((0xFE00, 0xFE0F), (0xE0100, 0xE01EF))


def _invisible(c: str) -> bool:
    if c in "\t\n":
        return False
    if unicodedata.category(c) in ("Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp"):
        return True
    return any(lo <= ord(c) <= hi for lo, hi in _VARIATION)


def _cc_markup(run: str) -> Markup:
    codes = [f"U+{ord(c):04X}" for c in run]
    shown = " ".join(codes[:3]) + (f" …×{len(codes)}" if len(codes) > 3 else "")
    names = ", ".join(dict.fromkeys(unicodedata.name(c, f"U+{ord(c):04X}") for c in run[:8]))
    return Markup('<span class="cc" title="{}">{}</span>').format(names, shown)


def visible(text: str) -> Markup:
    """Escape `text` and make invisible/bidi characters visible."""
    if not _SUSPECT.search(text):
        return escape(text)
    out: list[Any] = []
    buf: list[str] = []
    run: list[str] = []
    for c in text:
        if _invisible(c):
            if buf:
                out.append(escape("".join(buf)))
                buf = []
            run.append(c)
        else:
            if run:
                out.append(_cc_markup("".join(run)))
                run = []
            buf.append(c)
    if buf:
        out.append(escape("".join(buf)))
    if run:
        out.append(_cc_markup("".join(run)))
    return Markup("").join(out)


def highlight_excerpt(text: Any, matches: Iterable[Any] | None = None, limit: int = MAX_EXCERPT) -> Markup:
    """Escape `text` and wrap every occurrence of `matches` in `<mark>`.

    The raw text is split at match boundaries in Python and each piece is escaped on its own. Texts longer than
    `limit` are cut to a window around the first match.
    """
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    window, spans, cut_before, cut_after = excerpt_window(text, matches, limit)
    out: list[Any] = [Markup('<span class="cut">…</span>')] if cut_before else []
    pos = 0
    for s, e in spans:
        if s > pos:
            out.append(visible(window[pos:s]))
        out.append(Markup("<mark>{}</mark>").format(visible(window[s:e])))
        pos = e
    if pos < len(window):
        out.append(visible(window[pos:]))
    if cut_after:
        out.append(Markup('<span class="cut">…</span>'))
    return Markup("").join(out)
