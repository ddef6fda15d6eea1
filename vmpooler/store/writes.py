"""Writes to other hashes that a transition script makes in the same step (the boot stats and
``lastboot`` of a VM becoming ready): one Lua function and the one way to pass them.

A script that takes them ends its ARGV with ``(key index, field, value)`` triples, the keys appended to
its KEYS by :func:`append_writes`, and calls ``write_others(<first ARGV index of the triples>)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["WRITE_OTHERS", "append_writes"]

WRITE_OTHERS = """
local function write_others(first)
  local i = first
  while i <= #ARGV do
    redis.call('HSET', KEYS[tonumber(ARGV[i])], ARGV[i + 1], ARGV[i + 2])
    i = i + 3
  end
end
"""


def append_writes(script_keys: list[str], argv: list[Any], writes: Iterable[tuple[str, str, str]]) -> None:
    """Append ``(hash key, field, value)`` writes to a script's KEYS and ARGV (see the module docstring)."""
    for key, field, value in writes:
        script_keys.append(key)
        argv += [len(script_keys), field, value]
