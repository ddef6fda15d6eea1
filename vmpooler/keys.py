"""Every Redis key and pub/sub channel name, built in one place.

The layout is the original vmpooler's (``vmpooler__<kind>__<name>``) so that a Redis written by the
original can be taken over. No other module may spell a key.
"""

from __future__ import annotations

from vmpooler.model import VMState

__all__ = [
    "CIRCUIT_BREAKERS",
    "CLONE_LEASES",
    "CLONE_WAITING",
    "LASTBOOT",
    "ODCREATE_TASK",
    "ONDEMAND_LEASES",
    "ONDEMAND_WAITING",
    "POOLRESET",
    "POOLS",
    "PROVISIONING_PROCESSING",
    "PROVISIONING_REQUEST",
    "QUEUE",
    "QUEUE_BY_TENANT",
    "QUEUE_CHANNEL",
    "QUEUE_DEMAND",
    "QUEUE_SERVED",
    "QUEUE_TENANTS",
    "QUEUE_VTIME",
    "QUEUE_WANTED",
    "TASKS_CLONE",
    "TASKS_DISK",
    "TASKS_ONDEMANDCLONE",
    "TASKS_SNAPSHOT",
    "TASKS_SNAPSHOT_REVERT",
    "TEMPLATE_DELTAS",
    "TEMPLATE_PREPARED",
    "TENANT_HELD",
    "TENANT_PASS",
    "TENANT_RUNNING",
    "UNDO_SIZE_OVERRIDE",
    "UNDO_TEMPLATE_OVERRIDE",
    "USER_TOKENS_INDEXED",
    "active_hash",
    "boot_stats",
    "checkout_claim",
    "clone_stats",
    "completed_set",
    "config_override",
    "discovered_set",
    "dlq",
    "empty_flag",
    "events_channel",
    "migrating_set",
    "odrequest",
    "odrequest_vms",
    "pending_set",
    "pool_hash",
    "queue_request",
    "queue_worker",
    "ratelimit",
    "ready_set",
    "running_set",
    "state_set",
    "tag_stats",
    "token",
    "token_pattern",
    "user_tokens",
    "vm_hash",
]

_P = "vmpooler__"

POOLS = _P + "pools"
LASTBOOT = _P + "lastboot"
POOLRESET = _P + "poolreset"
TASKS_CLONE = _P + "tasks__clone"
TASKS_ONDEMANDCLONE = _P + "tasks__ondemandclone"
TASKS_DISK = _P + "tasks__disk"
TASKS_SNAPSHOT = _P + "tasks__snapshot"
TASKS_SNAPSHOT_REVERT = _P + "tasks__snapshot-revert"
TEMPLATE_PREPARED = _P + "template__prepared"
PROVISIONING_REQUEST = _P + "provisioning__request"
PROVISIONING_PROCESSING = _P + "provisioning__processing"
# zset "<alias>:<pool>:<count>:<request id>" -> enqueue epoch (1: a retry, first in line; ours: -/+ 10^9 s
# for a request of priority 1/3)
ODCREATE_TASK = _P + "odcreate__task"
TEMPLATE_DELTAS = _P + "template__deltas"
UNDO_SIZE_OVERRIDE = _P + "pool__undo_size_override"
UNDO_TEMPLATE_OVERRIDE = _P + "pool__undo_template_override"
_EVENTS = _P + "events"  # ours: the prefix of the per-pool event channels
# Ours: clone task slots as leases (member ``<provider>:<vm>``, score = expiry epoch), so a provider
# process that dies cannot leak a slot; TASKS_CLONE is kept equal to its size for /status.
CLONE_LEASES = _P + "tasks__clone_leases"
CIRCUIT_BREAKERS = _P + "circuit_breakers"  # ours: provider -> its breaker's state (JSON), for /status
CLONE_WAITING = _P + "tasks__clone_waiting"  # ours: pools refused a clone slot, by time of refusal
# Ours: the on-demand clone lane (``ondemand_clone_limit``), leases as above; TASKS_ONDEMANDCLONE = its size.
ONDEMAND_LEASES = _P + "tasks__ondemandclone_leases"
ONDEMAND_WAITING = _P + "tasks__ondemandclone_waiting"  # ours: a pool of each process refused a slot
# Ours: checkouts that wait (``vmpooler.store.queue``). The zset holds waiting request ids scored
# priority * 1e13 + enqueue epoch ms; the demand hash counts VMs wanted per pool by waiting requests;
# the tenant hash counts each tenant's running VMs; the channel carries the ids of served requests.
QUEUE = _P + "queue"
QUEUE_DEMAND = _P + "queue__demand"
QUEUE_WANTED = _P + "queue__wanted"  # pool -> waiting picks that list it as any candidate
QUEUE_CHANNEL = _P + "queue__events"
TENANT_RUNNING = _P + "tenant_running"
TENANT_HELD = _P + "tenant_held"  # running VM -> the tenant it is counted for
TENANT_PASS = _P + "tenant_pass"  # tenant -> VMs served by the queue / weight (stride scheduling)
QUEUE_BY_TENANT = _P + "queue__tenant__"  # + "<priority>__<tenant>": zset of that tenant's waiting ids
QUEUE_TENANTS = _P + "queue__tenants__"  # + "<priority>": set of the tenants with requests waiting there
QUEUE_SERVED = _P + "queue__served"  # served requests not yet answered, by time served (ms)
QUEUE_VTIME = _P + "queue__vtime"  # the lowest pass of the tenants last seen waiting: where newcomers start

# The sets a VM moves through (``VMState``'s, and ``migrating``: a side set of running VMs just checked
# out); ``state_set(state, pool)`` takes one of these names.
STATES = (*(state.value for state in VMState), "migrating")
# The override hashes written by the /config endpoints.
OVERRIDES = ("poolsize", "template", "clone_target")


def state_set(state: str, pool: str) -> str:
    """The set of VMs of ``pool`` in ``state`` (one of ``STATES``)."""
    if state not in STATES:
        raise ValueError(f"unknown VM state set {state!r}")
    return f"{_P}{state}__{pool}"


def pending_set(pool: str) -> str:
    return state_set("pending", pool)


def ready_set(pool: str) -> str:
    return state_set("ready", pool)


def running_set(pool: str) -> str:
    return state_set("running", pool)


def completed_set(pool: str) -> str:
    return state_set("completed", pool)


def discovered_set(pool: str) -> str:
    return state_set("discovered", pool)


def migrating_set(pool: str) -> str:
    return state_set("migrating", pool)


def active_hash(pool: str) -> str:
    """Hash vm → checkout time of the running VMs of ``pool``."""
    return f"{_P}active__{pool}"


def vm_hash(vm: str) -> str:
    """Per-VM metadata hash (as the original)."""
    return f"{_P}vm__{vm}"


def pool_hash(pool: str) -> str:
    """The published configuration of one pool."""
    return f"{_P}pool__{pool}"


def empty_flag(pool: str) -> str:
    return f"{_P}empty__{pool}"


def token(tok: str) -> str:
    return f"{_P}token__{tok}"


def token_pattern() -> str:
    """SCAN pattern matching every token hash."""
    return f"{_P}token__*"


def user_tokens(user: str) -> str:
    """Ours: set of the tokens of ``user``, so that ``GET /token`` reads one set, not every token."""
    return f"{_P}user_tokens__{user}"


USER_TOKENS_INDEXED = _P + "user_tokens_indexed"
"""Ours: set once every token that existed when it was first needed (the original's too) is indexed."""


def tag_stats(date: str) -> str:
    """Hash ``<vm>:<tag>`` → value of the tags set on ``date`` (YYYY-MM-DD)."""
    return f"{_P}tag__{date}"


def clone_stats(date: str) -> str:
    """Hash ``<pool>:<vm>`` → clone seconds of the clones finished on ``date``."""
    return f"{_P}clone__{date}"


def boot_stats(date: str) -> str:
    """Hash ``<pool>:<vm>`` → seconds from clone start to ready, on ``date``."""
    return f"{_P}boot__{date}"


def config_override(kind: str) -> str:
    """Hash pool → override value; ``kind`` is one of ``OVERRIDES``."""
    if kind not in OVERRIDES:
        raise ValueError(f"unknown override kind {kind!r}")
    return f"{_P}config__{kind}"


def odrequest(request_id: str) -> str:
    """Hash of one on-demand request: ``requested``, ``status``, ``token:*``, ``retry_count``, ..."""
    return f"{_P}odrequest__{request_id}"


def odrequest_vms(request_id: str, alias: str, pool: str) -> str:
    """Set of the VMs of ``pool`` given to the request for ``alias`` (the original's layout)."""
    return f"{_P}{request_id}__{alias}__{pool}"


def ratelimit(kind: str, client: str) -> str:
    """Requests of ``client`` (``token:<token>`` or ``ip:<address>``) in the current window of the rate
    limit class ``kind`` (``vm_creation``, ``vm_deletion``, ``authenticated``, ``global_per_ip``)."""
    return f"{_P}ratelimit__{kind}__{client}"


def checkout_claim(nonce: str) -> str:
    """Ours: one checkout's record, kept 5 minutes: the VMs it took, or ``cancelled`` once its client
    gave up on it."""
    return f"{_P}checkout__{nonce}"


def queue_request(request_id: str) -> str:
    """Ours: one waiting checkout's hash (its picks, tenant, priority, owner, status and, once served,
    its VMs); the prefix with ``""``."""
    return f"{_P}queue__req__{request_id}"


def queue_worker(worker: str) -> str:
    """Ours: an API worker's liveness (a short TTL it renews); its waiting requests are dropped without
    it. The prefix with ``""``."""
    return f"{_P}queue__worker__{worker}"


# Ours: several managers (``vmpooler.store.leases``). The counter hands out fencing tokens.
LEASE_TOKEN = _P + "lease_token"


def managers(provider: str) -> str:
    """Ours: zset of the live managers serving provider instance ``provider``: manager id → expiry
    (Redis's clock, ms)."""
    return f"{_P}managers__{provider}"


def lease(pool: str) -> str:
    """Ours: the hash of ``pool``'s lease: ``owner`` (manager id), ``instance``, ``pid``, ``token``,
    ``expires`` (Redis's clock, ms); the prefix with ``""``."""
    return f"{_P}lease__{pool}"


def dlq(queue: str) -> str:
    """Zset of the dead-letter queue ``queue`` (``clone``, ``pending``, ``ready``): ``<vm>:<epoch>:<json>``
    members scored by epoch."""
    return f"{_P}dlq__{queue}"


def events_channel(pool: str) -> str:
    """The pub/sub channel for events about ``pool`` (``vmpooler.bus``); ``""`` gives the prefix."""
    return f"{_EVENTS}__{pool}"
