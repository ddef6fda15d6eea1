"""The one integer parser for text from clients and from Redis: ASCII digits only.

``str.isdigit()`` also accepts digits such as ``"²"`` or ``"٣"`` that ``int()`` refuses (or reads
differently), so a check with ``isdigit`` followed by ``int`` turns such text into a crash.
"""

from __future__ import annotations

import re

__all__ = ["whole_number"]

_DIGITS = re.compile(r"[0-9]{1,18}")  # at most 18 digits: always fits in 64 bits


def whole_number(text: object) -> int | None:
    """``text`` as a non-negative integer when it is 1 to 18 ASCII digits (surrounding blanks allowed),
    else None."""
    if not isinstance(text, str):
        return None
    stripped = text.strip()
    return int(stripped) if _DIGITS.fullmatch(stripped) else None
