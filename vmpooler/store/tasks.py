"""The disk, snapshot and revert requests: queued by the API, claimed by the manager; clone counters.

A request is a member ``<vm>:<argument>`` of its kind's set (the original's ``vmpooler__tasks__*``).
The API adds it and publishes a ``task`` event; the pool of the VM claims it by removing it.
"""

from __future__ import annotations

from typing import Any

import attrs

from vmpooler import bus, keys
from vmpooler.model import VMState
from vmpooler.store.connection import translated

__all__ = ["Task", "Tasks"]

# The kinds of request (``Task.kind``) and the set each one waits in.
_TASK_SETS = {
    "disk": keys.TASKS_DISK,
    "snapshot": keys.TASKS_SNAPSHOT,
    "snapshot-revert": keys.TASKS_SNAPSHOT_REVERT,
}

# KEYS: the task sets (disk, snapshot, snapshot-revert), then the pool's state sets.
# ARGV: the number of task sets. -> {set index, member, ...}: each task of a VM of this pool, removed
# from its set (the removal is the claim: no other process gets it).
_CLAIM = """
local ntasks = tonumber(ARGV[1])
local claimed = {}
for t = 1, ntasks do
  for _, member in ipairs(redis.call('SMEMBERS', KEYS[t])) do
    local vm = string.match(member, '^([^:]*)')
    for s = ntasks + 1, #KEYS do
      if redis.call('SISMEMBER', KEYS[s], vm) == 1 then
        redis.call('SREM', KEYS[t], member)
        claimed[#claimed + 1] = t
        claimed[#claimed + 1] = member
        break
      end
    end
  end
end
return claimed
"""


@attrs.frozen
class Task:
    """A disk, snapshot or revert request claimed from the API's task sets."""

    kind: str
    vm: str
    argument: str


class Tasks:
    """Queue (the API) and claim (the manager) disk, snapshot and revert requests."""

    def __init__(self, client: Any) -> None:
        self._redis: Any = client
        self._claim = client.register_script(_CLAIM)

    @translated
    def queue(self, kind: str, vm: str, pool: str, argument: str) -> None:
        """Queue a disk (``kind="disk"``), snapshot or revert request for the manager.

        Adds ``<vm>:<argument>`` to the task set and publishes a ``task`` event on the pool channel.
        """
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.sadd(_TASK_SETS[kind], f"{vm}:{argument}")
            pipe.publish(
                keys.events_channel(pool),
                bus.encode(bus.TaskQueued(pool=pool, vm=vm, task=kind, argument=argument)),
            )
            pipe.execute()

    @translated
    def claim(self, pool: str) -> list[Task]:
        """Take the queued disk/snapshot/revert requests of the VMs of ``pool``, in one script."""
        kinds = list(_TASK_SETS)
        script_keys = [*_TASK_SETS.values(), *(keys.state_set(state.value, pool) for state in VMState)]
        reply = self._claim(keys=script_keys, args=[len(kinds)])
        claimed = []
        for index, member in zip(reply[::2], reply[1::2], strict=True):
            vm, _, argument = member.partition(":")
            claimed.append(Task(kinds[int(index) - 1], vm, argument))
        return claimed

    @translated
    def clone_counters(self) -> tuple[int, int]:
        """Clones in flight: (pool clones, on-demand clones), as ``/status`` shows them."""
        clone, ondemand = self._redis.mget(keys.TASKS_CLONE, keys.TASKS_ONDEMANDCLONE)
        return _to_int(clone), _to_int(ondemand)


def _to_int(value: str | None) -> int:
    try:
        return int(value) if value is not None else 0
    except ValueError:
        return 0
