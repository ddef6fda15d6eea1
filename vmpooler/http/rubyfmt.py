"""JSON values printed the way the original's messages print them: Ruby's ``to_s`` and ``inspect``.

The original interpolates request values into its failure messages (``"Unknown argument #{arg}."``),
so the text a client sees is Ruby's formatting of the parsed JSON value (JRuby 9.4, Ruby 3.1
semantics): ``null`` prints as nothing, ``true`` as ``true``, ``1e20`` as ``1.0e+20``, an array as
``["a", 1]`` and an object as ``{"a"=>1}``. Clients may match on these texts, so they are reproduced.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

__all__ = ["ruby_inspect", "ruby_to_s"]

_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\f": "\\f",
    "\v": "\\v",
    "\b": "\\b",
    "\a": "\\a",
    "\x1b": "\\e",
}


def _float(value: float) -> str:
    """``Float#to_s``: shortest digits; fixed notation when the exponent is -4 < e <= 16."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    sign = "-" if value < 0 else ""
    parsed = Decimal(repr(abs(value))).as_tuple()
    exponent = int(parsed.exponent)
    digits = "".join(map(str, parsed.digits))
    point = len(digits) + exponent  # value = 0.<digits> * 10**point (Decimal has no leading zeros)
    digits = digits.rstrip("0")
    if 0 < point <= 16:
        whole, fraction = digits[:point].ljust(point, "0"), digits[point:] or "0"
        return f"{sign}{whole}.{fraction}"
    if -4 < point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    return f"{sign}{digits[0]}.{digits[1:] or '0'}e{point - 1:+03d}"


def _inspect_str(text: str) -> str:
    """``String#inspect`` of a UTF-8 string."""
    out = ['"']
    for at, char in enumerate(text):
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif char == "#" and text[at + 1 : at + 2] in ("{", "$", "@"):
            out.append("\\#")
        elif char.isprintable():
            out.append(char)
        elif ord(char) < 0x10000:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(f"\\u{{{ord(char):X}}}")
    out.append('"')
    return "".join(out)


def ruby_inspect(value: Any) -> str:
    """Ruby's ``inspect`` of a parsed JSON value (how it appears inside an array or a hash)."""
    if isinstance(value, str):
        return _inspect_str(value)
    if value is None:
        return "nil"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{ruby_inspect(k)}=>{ruby_inspect(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(ruby_inspect(v) for v in value) + "]"
    return ruby_to_s(value)


def ruby_to_s(value: Any) -> str:
    """Ruby's ``to_s`` of a parsed JSON value (what ``"#{value}"`` interpolates)."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float(value)
    return ruby_inspect(value)
