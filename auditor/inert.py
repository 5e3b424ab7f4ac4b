"""Text from data, judge replies and servers, made inert before it reaches a terminal or a CI log.

- Control characters (C0, DEL, C1: ANSI escape sequences start with ESC or CSI), bidirectional and
  invisible format characters, and line or paragraph separators are shown as visible escapes (\\x1b,
  \\n, \\u202e): they cannot move the cursor, recolour the screen, hide text or start a new line.
- GitHub Actions reads a log line that starts with `::` (or the older `##[`) as a workflow command
  (`::error::`, `::add-mask::`, `::stop-commands::`...). A zero-width space goes between the two
  characters wherever they occur, so no wrapped or indented line can become one.
- Data never reaches `rich` markup (the terminal report prints `Text` objects, progress columns take no
  markup), so "[bold]" or "[/]" in a path prints as written.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x1b": "\\x1b"}
_WORKFLOW = re.compile(r"::|##\[")
ZWSP = "\u200b"


def _escape_char(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _unsafe(char: str) -> bool:
    # Cc: C0/DEL/C1 controls; Cf: bidi overrides, zero-width and other format characters; Zl/Zp: separators
    return unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") and char != ZWSP


def inert(text: Any, keep_newlines: bool = False) -> str:
    """One line (or, with keep_newlines, lines) of plain text that a terminal and a CI log show as written."""
    text = "" if text is None else str(text)
    if keep_newlines:
        text = "\n".join("".join(_escape_char(c) if _unsafe(c) else c for c in line) for line in text.split("\n"))
    else:
        text = "".join(_escape_char(c) if _unsafe(c) else c for c in text)
    return _WORKFLOW.sub(lambda m: m.group(0)[0] + ZWSP + m.group(0)[1:], text)
