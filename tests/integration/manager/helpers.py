"""Helpers for the manager's lifecycle tests: a clock moved by hand, a counting provider wrapper,
waiting for pool passes, and writing Redis the way the original vmpooler does."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from tests.conftest import wait_for
from tests.integration.manager.conftest import make_config
from vmpooler import keys
from vmpooler.config import Config
from vmpooler.providers.base import Provider
from vmpooler.worker import build_provider

__all__ = [
    "CALL_THROUGH",
    "FakeProvider",
    "ManualClock",
    "fast_config",
    "in_any_set",
    "ruby_time",
    "wait_passes",
    "write_vm",
]

CALL_THROUGH = object()
"""Returned by a ``FakeProvider`` hook to let the real dummy answer the call."""


class ManualClock:
    """The wall clock the actors judge ages by: real time at the start, then frozen; ``advance``
    moves it. The dummy provider, the ticker and Redis TTLs keep using real time."""

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        with self._lock:
            self._now += seconds
            return self._now


class FakeProvider:
    """A real DummyProvider wrapped to count every call by method and VM, and to let a test take
    over a method: ``on(method, hook)`` calls ``hook(*args)`` first; it may raise, return a value, or
    return ``CALL_THROUGH`` so the dummy answers."""

    def __init__(self, config: Config, inner: Provider | None = None) -> None:
        self.inner = inner or build_provider(config, "dummy")
        self._lock = threading.Lock()
        self._calls: Counter[tuple[str, str | None]] = Counter()
        self._hooks: dict[str, Callable[..., Any]] = {}

    def on(self, method: str, hook: Callable[..., Any]) -> None:
        self._hooks[method] = hook

    def off(self, method: str) -> None:
        self._hooks.pop(method, None)

    def calls(self, method: str, vm: str | None = None) -> int:
        """How often ``method`` was called (for ``vm`` only, when given)."""
        with self._lock:
            if vm is not None:
                return self._calls[(method, vm)]
            return sum(n for (name, _), n in self._calls.items() if name == method)

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self.inner, attr)
        if attr.startswith("_") or not callable(value):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            vm = args[1] if len(args) > 1 and isinstance(args[1], str) else None
            with self._lock:
                self._calls[(attr, vm)] += 1
            hook = self._hooks.get(attr)
            if hook is not None:
                result = hook(*args, **kwargs)
                if result is not CALL_THROUGH:
                    return result
            return value(*args, **kwargs)

        return call


def wait_passes(fake: FakeProvider, passes: int = 2, timeout: float = 5.0) -> None:
    """Wait until every pool has made ``passes`` more passes (each pass lists the inventory once)."""
    pools = len(fake.inner.pools)
    start = fake.calls("list_vms")
    wait_for(lambda: fake.calls("list_vms") >= start + passes * pools, timeout, f"{passes} pool passes")


def ruby_time(epoch: float) -> str:
    """A time as the original writes it (Ruby ``Time#to_s``), in UTC: ``2026-11-21 18:27:31 +0000``."""
    return time.strftime("%Y-%m-%d %H:%M:%S +0000", time.gmtime(epoch))


def write_vm(redis: Any, pool: str, vm: str, state: str, **fields: str) -> None:
    """Put ``vm`` into ``pool``'s ``state`` set with a metadata hash, as the original vmpooler does
    (``template`` and ``pool`` are the pool name; a running VM also gets its ``active`` entry)."""
    data = {"template": pool, "pool": pool, **fields}
    redis.hset(keys.vm_hash(vm), mapping=data)
    redis.sadd(keys.state_set(state, pool), vm)
    if state == "running" and "checkout" in fields:
        redis.hset(keys.active_hash(pool), vm, fields["checkout"])


def in_any_set(redis: Any, pool: str, vm: str) -> list[str]:
    """The state sets of ``pool`` that hold ``vm``."""
    return [state for state in keys.STATES if redis.sismember(keys.state_set(state, pool), vm)]


def fast_config(pools: dict[str, int], *, extra_config: str = "", **kwargs: Any) -> Config:
    """``make_config`` with pool passes at most 0.2 s apart, so waiting for passes stays short."""
    return make_config(pools, extra_config="  check_loop_delay_max: 0.2\n" + extra_config, **kwargs)
