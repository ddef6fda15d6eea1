"""The body of ``GET /vm/<host>``: a VM's metadata hash turned into the API's fields."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from vmpooler.textnum import whole_number
from vmpooler.timeutil import parse_time, rfc3339

if TYPE_CHECKING:
    from vmpooler.http.context import ApiContext

__all__ = ["describe_vm", "vm_state"]

_TAG_OR_SNAPSHOT = re.compile("tag:|snapshot:").match


def vm_state(data: dict[str, str]) -> str:
    if data.get("destroy"):
        return "destroyed"
    if data.get("checkout"):
        return "running"
    if data.get("check") or data.get("ready"):
        return "ready"
    return "pending"


def _hours(seconds: float) -> float:
    return round(seconds / 3600, 2)


def describe_vm(ctx: ApiContext, vm: str, data: dict[str, str]) -> dict[str, Any]:
    """The VM's fields as the original shows them, with one fix.

    Fix: ``remaining`` and ``end_time`` use the lifetime in force (the VM's own, else the configured
    default), where the original used the VM's own field only and so showed 0 for default lifetimes.
    ``ip`` is the address the manager recorded, not a DNS lookup done while the request waits.
    """
    get = data.get
    pool = get("pool") or get("template")
    own_lifetime = get("lifetime")
    own = whole_number(own_lifetime) if own_lifetime else None
    lifetime = own if own is not None else int(ctx.config.globals.vm_lifetime or 0)
    state = vm_state(data)
    info: dict[str, Any] = {"template": get("template", ""), "lifetime": lifetime}
    if state == "running" or state == "destroyed":
        checkout = parse_time(get("checkout"))
        if checkout is not None:
            now = ctx.clock()
            if state == "running":
                info["running"] = _hours(now - checkout)
                end = checkout + lifetime * 3600
                info["remaining"] = _hours(end - now)
                info["start_time"] = rfc3339(checkout)
                info["end_time"] = rfc3339(end)
            else:
                destroyed = parse_time(get("destroy"))
                info["running"] = _hours((destroyed or now) - checkout)
    info["state"] = state
    fields = "\0" + "\0".join(data)  # most VMs have no tag or snapshot: one C search says so
    if "\0tag:" in fields or "\0snapshot:" in fields:
        special = list(filter(_TAG_OR_SNAPSHOT, data))
        tags = {k[4:]: data[k] for k in special if k[0] == "t"}
        if tags:
            info["tags"] = tags
        snapshots = [k[9:] for k in special if k[0] == "s"]
        if snapshots:
            info["snapshots"] = snapshots
    disk = get("disk")
    if disk:
        info["disk"] = [d for d in disk.split(":") if d]
    info["ip"] = get("ip", "")
    pool_config = ctx.config.pools_by_name.get(pool) if pool is not None else None
    domain = (pool_config.domain if pool_config is not None else None) or get("domain") or None
    if ctx.version >= 2 and domain:
        info["fqdn"] = f"{vm}.{domain}"
    elif ctx.version == 1 and domain:
        info["domain"] = domain
    for key in ("host", "migrated"):
        value = get(key)
        if value:
            info[key] = value
    return info
