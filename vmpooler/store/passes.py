"""What one PoolActor pass reads, in one script: the pool's sets, the hashes of its live VMs, its
checkout times, its size, template and clone target overrides, the template last prepared for it, a
pending reset request and undo requests (claimed), whether any task waits, and what waiting checkouts
want of it.

A pass used to make seven round trips; at 1,000 pools passing every few seconds they were most of an
idle provider's CPU (docs/performance.md). Redis runs the script alone, so the view is consistent: no
VM is seen in a set and then missing its hash because a checkout ran in between.
"""

from __future__ import annotations

from typing import Any

import attrs

from vmpooler import keys
from vmpooler.store.connection import translated
from vmpooler.store.vms import PoolSnapshot, state_sets

__all__ = ["PassView", "Passes"]

# KEYS: the state sets in VMState order, the migrating set, the active hash, the poolsize override hash,
# the pool reset set, the three task sets, the template and clone target override hashes, the prepared
# template hash, the two undo sets, the queue's demand and wanted hashes, its served zset. ARGV: pool, the
# VM hash prefix.
# -> {members of each set..., active hash flat, size override or false, reset claimed, tasks waiting,
#     {vm, hash flat, vm, hash flat, ...}, template override, clone target override, prepared, undone,
#     demand, wanted, served requests not yet answered}
_READ = """
local out = {}
for i = 1, 6 do out[i] = redis.call('SMEMBERS', KEYS[i]) end
out[7] = redis.call('HGETALL', KEYS[7])
out[8] = redis.call('HGET', KEYS[8], ARGV[1])
out[9] = redis.call('SREM', KEYS[9], ARGV[1])
out[10] = redis.call('EXISTS', KEYS[10], KEYS[11], KEYS[12])
local hashes = {}
for s = 1, 3 do  -- pending, ready, running: the VMs whose hashes a pass needs
  for _, vm in ipairs(out[s]) do
    hashes[#hashes + 1] = vm
    hashes[#hashes + 1] = redis.call('HGETALL', ARGV[2] .. vm)
  end
end
out[11] = hashes
out[12] = redis.call('HGET', KEYS[13], ARGV[1])
out[13] = redis.call('HGET', KEYS[14], ARGV[1])
out[14] = redis.call('HGET', KEYS[15], ARGV[1])
out[15] = redis.call('SREM', KEYS[16], ARGV[1]) + redis.call('SREM', KEYS[17], ARGV[1])
out[16] = redis.call('HGET', KEYS[18], ARGV[1])
out[17] = redis.call('HGET', KEYS[19], ARGV[1])
out[18] = redis.call('ZCARD', KEYS[20])
return out
"""


@attrs.frozen
class PassView:
    """One pool as a pass sees it.

    Attributes:
        snapshot: the members of each set.
        fields: the hash of each pending, ready and running VM.
        checkouts: VM → checkout time (the pool's active hash).
        size_override: ``vmpooler__config__poolsize``'s value for the pool, if any (unparsed).
        reset: a ``POST /poolreset`` was waiting and is now claimed by this pass.
        tasks_waiting: some disk, snapshot or revert task (of any pool) is queued.
        template_override: ``vmpooler__config__template``'s value for the pool, if any.
        clone_target_override: ``vmpooler__config__clone_target``'s value for the pool, if any.
        prepared_template: ``vmpooler__template__prepared``'s value for the pool, if any.
        undone: an undo of a size or template override was waiting, and is now claimed.
        demand: VMs waiting checkouts want of this pool (as their first candidate): it clones for them.
        wanted: waiting picks that list this pool as any candidate (a dispatch may have work).
        unanswered: served waiting checkouts (of any pool) their API worker has not answered yet.
    """

    snapshot: PoolSnapshot
    fields: dict[str, dict[str, str]]
    checkouts: dict[str, str]
    size_override: str | None
    reset: bool
    tasks_waiting: bool
    template_override: str | None = None
    clone_target_override: str | None = None
    prepared_template: str | None = None
    undone: bool = False
    demand: int = 0
    wanted: int = 0
    unanswered: int = 0


def _pairs(flat: list[Any]) -> dict[str, Any]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


class Passes:
    """The pass's read (a part of ``Store``)."""

    def __init__(self, client: Any) -> None:
        self._read = client.register_script(_READ)

    @translated
    def read(self, pool: str) -> PassView:
        reply = self._read(
            keys=[
                *state_sets(pool),
                keys.migrating_set(pool),
                keys.active_hash(pool),
                keys.config_override("poolsize"),
                keys.POOLRESET,
                keys.TASKS_DISK,
                keys.TASKS_SNAPSHOT,
                keys.TASKS_SNAPSHOT_REVERT,
                keys.config_override("template"),
                keys.config_override("clone_target"),
                keys.TEMPLATE_PREPARED,
                keys.UNDO_SIZE_OVERRIDE,
                keys.UNDO_TEMPLATE_OVERRIDE,
                keys.QUEUE_DEMAND,
                keys.QUEUE_WANTED,
                keys.QUEUE_SERVED,
            ],
            args=[pool, keys.vm_hash("")],
        )
        snapshot = PoolSnapshot(*(frozenset(members) for members in reply[:6]))
        fields = {vm: _pairs(flat) for vm, flat in _pairs(reply[10]).items()}
        return PassView(
            snapshot=snapshot,
            fields=fields,
            checkouts=_pairs(reply[6]),
            size_override=reply[7],
            reset=bool(reply[8]),
            tasks_waiting=bool(reply[9]),
            template_override=reply[11],
            clone_target_override=reply[12],
            prepared_template=reply[13],
            undone=bool(reply[14]),
            demand=max(0, int(reply[15] or 0)),
            wanted=max(0, int(reply[16] or 0)),
            unanswered=int(reply[17] or 0),
        )
