"""The JSON of every response body: pretty-printed with two spaces, as the original's
``JSON.pretty_generate``, written by orjson when the result is byte for byte what ``json.dumps(indent=2)``
writes, else by ``json``.

orjson writes the same text for the bodies this API answers (dicts, lists, strings, whole numbers,
short floats, booleans, null) 10–25× faster; ``json`` still writes what orjson would write differently:
non-ASCII text (``json`` escapes it as ``\\u00e9``) and values orjson does not take (a ``Mapping`` that
is not a ``dict``, a non-string key, an integer beyond 64 bits). docs/performance.md has the measurement.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = ["pretty_json"]

_INDENT = orjson.OPT_INDENT_2


def pretty_json(value: Any) -> str:
    """``json.dumps(value, indent=2)``, faster."""
    try:
        text = orjson.dumps(value, option=_INDENT)
    except TypeError:
        return json.dumps(value, indent=2)
    if not text.isascii():
        return json.dumps(value, indent=2)
    return text.decode("ascii")
