"""The figures of ``/status``, ``/summary`` and ``/poolstat``, computed from the store.

Fixes of the original: the ``queue`` figures are computed from the sets of every configured pool
(the original read per-pool keys that are never written for ``requested``), and the range-level
``average``/``min``/``max`` of ``/summary`` are filled in (the original never computed them).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from vmpooler import metrics
from vmpooler.textnum import whole_number

if TYPE_CHECKING:
    from vmpooler.http.context import ApiContext
    from vmpooler.store import PoolCounts

__all__ = ["duration_stats", "pool_sizes", "status_body", "summary_body"]

_VERDICTS = ("healthy", "degraded", "unhealthy")  # vmpooler_health_status: 0, 1, 2, as the original
STATUS_SECTIONS = ("boot", "capacity", "clone", "health", "pools", "queue")
_OK_MESSAGE = "Battle station fully armed and operational."


def pool_sizes(ctx: ApiContext) -> dict[str, int]:
    """Each pool's size, with the size overrides of ``POST /config/poolsize`` applied."""
    overrides = ctx.store.pools.overrides("poolsize")
    sizes = {}
    for pool in ctx.config.pools:
        override = overrides.get(pool.name, "")
        size = whole_number(override)
        sizes[pool.name] = pool.size if size is None else size
    return sizes


def _alias(pool: Any) -> Any:
    """The alias as configured: a string for one name, a list for several."""
    raw = pool.raw.get("alias")
    return raw if raw is not None else list(pool.alias)


def duration_stats(values: Iterable[float]) -> dict[str, Any]:
    """``{"duration": {average, min, max, total}, "count": {"total"}}`` of some durations."""
    numbers = list(values)
    total = round(sum(numbers), 2)
    return {
        "duration": {
            "average": round(total / len(numbers), 2) if numbers else 0,
            "min": round(min(numbers), 2) if numbers else 0,
            "max": round(max(numbers), 2) if numbers else 0,
            "total": total,
        },
        "count": {"total": len(numbers)},
    }


def _floats(values: Iterable[str]) -> list[float]:
    out = []
    for value in values:
        try:
            out.append(float(value))
        except ValueError:
            continue
    return out


def status_body(ctx: ApiContext, sections: Sequence[str]) -> dict[str, Any]:
    """The ``/status`` body with the requested sections (``status`` is always there)."""
    names = [p.name for p in ctx.config.pools]
    counts = ctx.store.stats.pool_counts(names)
    sizes = pool_sizes(ctx)
    body: dict[str, Any] = {}
    if "capacity" in sections:
        current = sum(c.ready for c in counts.values())
        total = sum(sizes.values())
        body["capacity"] = {
            "current": current,
            "total": total,
            "percent": round(current / total * 100, 1) if total else 0,
        }
    if "queue" in sections:
        cloning = sum(ctx.store.tasks.clone_counters())
        pending = sum(c.pending for c in counts.values())
        queue: dict[str, Any] = {
            "requested": ctx.store.stats.requested_count(),
            "pending": pending,
            "cloning": cloning,
            "booting": max(0, pending - cloning),
            "ready": sum(c.ready for c in counts.values()),
            "running": sum(c.running for c in counts.values()),
            "completed": sum(c.completed for c in counts.values()),
        }
        queue["total"] = sum(queue[k] for k in ("requested", "pending", "ready", "running", "completed"))
        waiting, oldest = ctx.store.queue.summary()  # ours: checkouts that wait (GET /queue has more)
        queue["waiting"] = waiting
        queue["waiting_oldest_seconds"] = round(oldest, 1)
        body["queue"] = queue
    today = ctx.now()[:10]
    for kind in ("clone", "boot"):
        if kind in sections:
            (day,) = ctx.store.stats.daily_hashes(kind, [today])
            body[kind] = duration_stats(_floats(day.values()))
    if "pools" in sections:
        lastboot = ctx.store.stats.lastboot()
        pools: dict[str, Any] = {}
        for pool in ctx.config.pools:
            c = counts[pool.name]
            entry: dict[str, Any] = {
                "ready": c.ready,
                "running": c.running,
                "pending": c.pending,
                "max": sizes[pool.name],
                "lastBoot": lastboot.get(pool.name, ""),
            }
            if pool.alias:
                entry["alias"] = _alias(pool)
            pools[pool.name] = entry
        body["pools"] = pools
    if "health" in sections:
        body["health"] = health_body(ctx, counts)
    empty = [p for p in names if counts[p].ready == 0 and sizes[p] != 0]
    status: dict[str, Any] = {
        "ok": not empty,
        "message": f"Found {len(empty)} empty pools." if empty else _OK_MESSAGE,
    }
    if empty:
        status["empty"] = empty
    status["uptime"] = round(ctx.clock() - ctx.config.loaded_at, 1)
    body["status"] = status
    return dict(sorted(body.items()))


def health_body(ctx: ApiContext, counts: Mapping[str, PoolCounts]) -> dict[str, Any]:
    """Ours: the ``health`` section of ``/status``: each provider's circuit breaker, the dead-letter
    queues, the pools whose provider refuses calls, and one verdict.

    ``unhealthy`` when a breaker is open, the dead-letter queues hold more than ``dlq_max_critical``
    entries, or a pool has more than twice ``pending_queue_max`` pending (``ready_queue_max`` ready) VMs;
    ``degraded`` at a half-open breaker or past the single thresholds; else ``healthy`` (reference §4.11).
    """
    limits = ctx.config.globals.health_thresholds
    breakers = ctx.store.health.breakers()
    dlq = ctx.store.health.dlq_sizes()
    providers = {
        name: {"breaker": state.get("state", "closed"), "failures": state.get("failures", 0)}
        for name, state in sorted(breakers.items())
    }
    refusing = {name for name, state in providers.items() if state["breaker"] != "closed"}
    pools = {pool.name: "unhealthy" for pool in ctx.config.pools if pool.provider in refusing}
    pending = max((c.pending for c in counts.values()), default=0)
    ready = max((c.ready for c in counts.values()), default=0)
    dead = sum(dlq.values())
    verdict = "healthy"
    if (
        any(p["breaker"] == "open" for p in providers.values())
        or dead > limits["dlq_max_critical"]
        or pending > 2 * limits["pending_queue_max"]
        or ready > 2 * limits["ready_queue_max"]
    ):
        verdict = "unhealthy"
    elif (
        refusing
        or dead > limits["dlq_max_warning"]
        or pending > limits["pending_queue_max"]
        or ready > limits["ready_queue_max"]
    ):
        verdict = "degraded"
    metrics.HEALTH_STATUS.set(_VERDICTS.index(verdict))
    return {"status": verdict, "providers": providers, "dlq": dlq, "pools": pools}


def poolstat_body(ctx: ApiContext, wanted: Iterable[str]) -> dict[str, Any]:
    names = set(wanted)
    matched = [p for p in ctx.config.pools if p.name in names or names.intersection(p.alias)]
    ready = ctx.store.stats.ready_counts(p.name for p in matched)
    sizes = pool_sizes(ctx) if matched else {}
    pools: dict[str, Any] = {}
    for pool in matched:
        entry: dict[str, Any] = {"max": sizes[pool.name]}
        if pool.alias:
            entry["alias"] = _alias(pool)
        entry["ready"] = ready[pool.name]
        pools[pool.name] = entry
    return {"pools": pools}


def _task_stats(days: list[dict[str, str]]) -> dict[str, Any]:
    """Clone or boot stats of some days with the per-pool breakdown (fields are ``<pool>:<vm>``)."""
    per_pool: dict[str, list[float]] = {}
    for day in days:
        for field, value in day.items():
            per_pool.setdefault(field.rsplit(":", 1)[0], []).extend(_floats([value]))
    stats = duration_stats(v for values in per_pool.values() for v in values)
    stats["duration"]["pool"] = {}
    stats["count"]["pool"] = {}
    for pool, values in sorted(per_pool.items()):
        pool_stats = duration_stats(values)
        stats["duration"]["pool"][pool] = {
            k: pool_stats["duration"][k] for k in ("total", "average", "min", "max")
        }
        stats["count"]["pool"][pool] = {"total": len(values)}
    return stats


def _day_tags(day: dict[str, str]) -> dict[str, Any]:
    tags: dict[str, dict[str, int]] = {}
    for field, value in day.items():
        name = field.split(":", 1)[1] if ":" in field else field
        counts = tags.setdefault(name, {})
        counts[value] = counts.get(value, 0) + 1
    return {name: {**counts, "total": sum(counts.values())} for name, counts in sorted(tags.items())}


def _merge_tags(days: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, dict[str, int]] = {}
    for day in days:
        for name, counts in day.items():
            into = merged.setdefault(name, {})
            for value, n in counts.items():
                into[value] = into.get(value, 0) + n
    return merged


def summary_body(ctx: ApiContext, start: _dt.date, end: _dt.date) -> dict[str, Any]:
    """``/summary`` for the dates ``start..end`` inclusive."""
    dates = [(start + _dt.timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]
    raw: dict[str, list[dict[str, str]]] = {
        kind: ctx.store.stats.daily_hashes(kind, dates) for kind in ("boot", "clone", "tag")
    }
    daily: list[dict[str, Any]] = []
    day_tags = [_day_tags(day) for day in raw["tag"]]
    for i, date in enumerate(dates):
        daily.append(
            {
                "date": date,
                "boot": _task_stats([raw["boot"][i]]),
                "clone": _task_stats([raw["clone"][i]]),
                "tag": day_tags[i],
            }
        )
    return {
        "boot": _task_stats(raw["boot"]),
        "clone": _task_stats(raw["clone"]),
        "tag": _merge_tags(day_tags),
        "daily": daily,
    }
