"""How healthy the backends and queues are, for ``/status``: each provider's circuit breaker (written by
its provider process on every change), and the dead-letter queues of failed VMs (reference §4.11)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from vmpooler import keys
from vmpooler.store.connection import translated

__all__ = ["DLQ_QUEUES", "Health"]

DLQ_QUEUES = ("clone", "pending", "ready")

# KEYS: the queue's zset. ARGV: member, score, max entries, ttl seconds -> entries now
_DLQ_ADD = """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
local excess = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[3])
if excess > 0 then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, excess - 1) end
if tonumber(ARGV[4]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[4]) end
return redis.call('ZCARD', KEYS[1])
"""


class Health:
    """Breaker states and dead-letter queues (a part of ``Store``)."""

    def __init__(self, client: Any) -> None:
        self._redis: Any = client
        self._dlq_add = client.register_script(_DLQ_ADD)

    @translated
    def set_breaker(self, provider: str, state: str, failures: int, since: float) -> None:
        """Record the provider's breaker state (``closed``, ``open``, ``half_open``)."""
        value = json.dumps({"state": state, "failures": failures, "since": round(since, 3)})
        self._redis.hset(keys.CIRCUIT_BREAKERS, provider, value)

    @translated
    def breakers(self) -> dict[str, dict[str, Any]]:
        """Provider → ``{"state", "failures", "since"}`` as its process last wrote it."""
        found = {}
        for provider, raw in self._redis.hgetall(keys.CIRCUIT_BREAKERS).items():
            try:
                found[provider] = dict(json.loads(raw))
            except (ValueError, TypeError):
                continue
        return found

    @translated
    def dead_letter(
        self, queue: str, vm: str, entry: Mapping[str, Any], *, at: float, max_entries: int, ttl_hours: int
    ) -> int:
        """Add a failed VM to the ``queue`` dead-letter queue (``clone``, ``pending`` or ``ready``), keeping
        the newest ``max_entries``; the queue expires ``ttl_hours`` after its last entry.

        Returns:
            The entries in the queue now.
        """
        member = f"{vm}:{int(at)}:{json.dumps(dict(entry), sort_keys=True)}"
        return int(
            self._dlq_add(
                keys=[keys.dlq(queue)], args=[member, at, max(max_entries, 1), int(ttl_hours * 3600)]
            )
        )

    @translated
    def dlq_sizes(self) -> dict[str, int]:
        with self._redis.pipeline(transaction=False) as pipe:
            for queue in DLQ_QUEUES:
                pipe.zcard(keys.dlq(queue))
            return dict(zip(DLQ_QUEUES, (int(n) for n in pipe.execute()), strict=True))
