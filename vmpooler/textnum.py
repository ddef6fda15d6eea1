"""The one integer parser and the one boolean vocabulary for text from config, env, clients and Redis.

``str.isdigit()`` also accepts digits such as ``"²"`` or ``"٣"`` that ``int()`` refuses (or reads
differently), so a check with ``isdigit`` followed by ``int`` turns such text into a crash. Booleans
are ``true/yes/on/1`` and ``false/no/off/0`` in any case, wherever text stands for one (the config
loader, the env table, provider settings).
"""

from __future__ import annotations

import re

__all__ = ["truth", "whole_number"]

_DIGITS = re.compile(r"[0-9]{1,18}")  # at most 18 digits: always fits in 64 bits
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def truth(value: object) -> bool | None:
    """A YAML boolean, or text (or 0/1) that spells one; None for anything else."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, str | int) else None
    return True if text in _TRUE else False if text in _FALSE else None


def whole_number(text: object) -> int | None:
    """``text`` as a non-negative integer when it is 1 to 18 ASCII digits (surrounding blanks allowed),
    else None."""
    if not isinstance(text, str):
        return None
    stripped = text.strip()
    return int(stripped) if _DIGITS.fullmatch(stripped) else None
