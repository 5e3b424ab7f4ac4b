"""Text that is safe inside XML 1.0: characters XML forbids (most C0 controls, lone surrogates, U+FFFE/U+FFFF) are
shown as visible code points instead of making the whole file unparseable."""

from __future__ import annotations

import re

_FORBIDDEN = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(value: object) -> str:
    text = "" if value is None else str(value)
    return _FORBIDDEN.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
