"""``pretty_json`` writes exactly what ``json.dumps(value, indent=2)`` writes, whoever writes it."""

from __future__ import annotations

import json
from types import MappingProxyType
from typing import Any

import pytest

from vmpooler.http.jsonbody import pretty_json

SAMPLES: list[Any] = [
    {"ok": True},
    {"ok": False, "error": "Invalid hostname format"},
    {"ok": True, "debian": {"hostname": ["a.example.com", "b.example.com"]}, "centos": {"hostname": "c"}},
    {"a": {}, "b": [], "c": None, "d": 1.5, "e": 16.7, "f": 0.01, "g": -3, "h": 23.99, "i": 0.0},
    {"nested": {"deep": [{"x": [1, 2, {"y": "z"}]}]}, "tabs\tand\nnewlines": 'quote " backslash \\'},
    [1, "two", 3.25, True, None],
    "just a string",
    [],
    {},
    # written by json, not orjson: non-ASCII text, non-string keys, big ints
    {"tag": "équipe", "emoji": "\U0001f600"},
    {1: "one", 2: "two"},
    {"big": 2**70},
]


@pytest.mark.parametrize("value", SAMPLES, ids=range(len(SAMPLES)))
def test_pretty_json_is_json_dumps_indent_2(value: Any) -> None:
    assert pretty_json(value) == json.dumps(value, indent=2)


def test_what_neither_can_write_fails_as_json_fails() -> None:
    with pytest.raises(TypeError):
        pretty_json({"ok": MappingProxyType({})})
