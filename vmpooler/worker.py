"""The provider process: one per ``:providers:`` instance that serves a pool.

``run_provider_worker`` runs in a fresh spawned process: it loads the config, opens Redis, starts the
plugin, the ticker, the actor tree and the event subscriber, then beats the supervisor's heartbeat
until SIGTERM. Everything process-wide is set up here, after the spawn.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import attrs
import pykka

from vmpooler import metrics
from vmpooler.actors.context import PoolContext
from vmpooler.actors.dispatch import Dispatcher
from vmpooler.actors.provider import Ownership, ProviderActor
from vmpooler.actors.ticker import Ticker
from vmpooler.bus import ConfigChanged, decode
from vmpooler.config import Config, load_config
from vmpooler.errors import ConfigError, ProviderError, ProviderUnavailable, StoreError
from vmpooler.log import setup_logging
from vmpooler.providers import load_provider_class
from vmpooler.providers.base import PoolSpec, Provider
from vmpooler.providers.guard import BreakerSettings, BreakerState, CircuitBreaker, GuardedProvider
from vmpooler.providers.monitor import watch_connections
from vmpooler.store import Store

if TYPE_CHECKING:
    from vmpooler.supervisor import Heartbeat

__all__ = [
    "ProviderWorkerArgs",
    "build_provider",
    "guard",
    "prepare_provider",
    "publish_pools",
    "run_provider_worker",
    "start_manager",
    "start_with_retry",
    "vm_thread_count",
]

log = logging.getLogger(__name__)

_POOL_THREADS = 16  # most threads running PoolActor turns (Redis pipelines, one inventory call each)
_VM_THREADS = 128  # most threads running VMActor turns (blocking provider calls)
_REDIS_CONNECTIONS = 20  # the provider process's Redis connections unless :redis: asks for more


@attrs.frozen
class ProviderWorkerArgs:
    """What a provider child needs; picklable."""

    provider: str
    config_path: str | None
    config_env: dict[str, str]
    redis_url: str
    manager_instance: str | None = None  # the supervisor's random id (vmpooler.actors.provider.Ownership)


def build_provider(config: Config, name: str) -> Provider:
    """Instantiate the plugin of provider instance ``name`` with the pools it serves."""
    if name not in config.providers:
        raise ConfigError(f":providers:.{name}: no such provider instance")
    spec = config.providers[name]
    cls = load_provider_class(spec.provider_class)
    pools = {
        pool.name: PoolSpec(
            name=pool.name,
            template=pool.template,
            size=pool.size,
            domain=pool.domain,
            clone_target=pool.clone_target,
            options=pool.provider_options,
        )
        for pool in config.pools_for_provider(name)
    }
    return cls(name, spec.settings, pools)


@attrs.define
class Manager:
    """A running actor tree of one provider instance (also used directly by tests)."""

    provider: Provider
    store: Store
    ticker: Ticker
    actor: Any
    subscriber: threading.Thread
    stopping: threading.Event
    dispatchers: tuple[Dispatcher, ...] = ()

    def alive(self) -> bool:
        return self.actor.actor_ref.is_alive() and self.subscriber.is_alive()

    def stop(self, timeout: float = 10) -> None:
        """Stop taking new work first, let VM actors finish the call they are in, then the plugin.

        Pools stop before the provider does (each stops its VMActors), so no clone starts against a
        stopped provider; a call still running after half the deadline is cut short by
        ``provider.stop()``.
        """
        self.stopping.set()
        self.ticker.stop()
        deadline = time.monotonic() + timeout
        with contextlib.suppress(pykka.ActorDeadError, pykka.Timeout):
            self.actor.actor_ref.stop(block=True, timeout=timeout / 2)
        for ref in pykka.ActorRegistry.get_all():
            ref.stop(block=False)
        _wait_until(self._quiet, time.monotonic() + timeout / 2)
        self.provider.stop()
        for ref in pykka.ActorRegistry.get_all():
            ref.stop(block=False)
        _wait_until(self._quiet, deadline)
        for dispatcher in self.dispatchers:
            dispatcher.stop(timeout=1)
        self.subscriber.join(timeout=2)

    def _quiet(self) -> bool:
        """No actor left, and no turn queued or running (a VMActor finishing its call)."""
        return not pykka.ActorRegistry.get_all() and all(d.idle() for d in self.dispatchers)


def _wait_until(done: Callable[[], bool], deadline: float) -> None:
    while not done() and time.monotonic() < deadline:
        time.sleep(0.02)


def start_manager(
    config: Config,
    provider_name: str,
    store: Store,
    *,
    rng: random.Random | None = None,
    provider: Provider | None = None,
    clock: Callable[[], float] = time.time,
    ownership: Ownership | None = None,
) -> Manager:
    """Start the plugin, ticker, actors and subscriber of one provider instance.

    Args:
        provider: an already built plugin instance (tests); by default it is built from the config.
        clock: the wall clock the actors judge ages and lifetimes by (tests move it forward).
        ownership: manage only the pools whose lease this manager holds (``vmpooler manager`` always
            does); None manages every pool of the provider (tests of one process).
    """
    provider = provider or build_provider(config, provider_name)
    provider.start()
    guarded = guard(config, provider_name, provider, store)
    # the clone slots' owner: this provider in this manager (another manager's slots are not ours)
    owner = provider_name if ownership is None else f"{provider_name}@{ownership.manager}"
    try:
        prepare_provider(config, provider_name, guarded)
        released = store.slots.release_owner(owner)
    except BaseException:  # the caller retries with a new instance: release this one's connections
        provider.stop()
        raise
    if released:
        log.info("released %d clone slot(s) left by an earlier process", released)
    ticker = Ticker()
    ticker.start()
    watch_connections(config, provider_name, provider, ticker)  # adaptive timeout, pool gauges
    rng = rng or random.Random()
    pools = config.pools_for_provider(provider_name)
    pool_threads = Dispatcher("pools", max(2, min(_POOL_THREADS, len(pools))))
    vm_threads = Dispatcher("vms", vm_thread_count(config, provider_name))
    contexts = [
        PoolContext(
            config=config,
            pool=pool,
            owner=owner,
            provider=guarded,
            store=store,
            ticker=ticker,
            pool_threads=pool_threads,
            vm_threads=vm_threads,
            clock=clock,
            rng=random.Random(rng.random()),
        )
        for pool in pools
    ]
    actor = ProviderActor.start(provider_name, contexts, pool_threads, ownership).proxy()
    stopping = threading.Event()
    subscriber = threading.Thread(
        target=_subscribe,
        args=(store, [c.name for c in contexts], actor, stopping),
        name="subscriber",
        daemon=True,
    )
    subscriber.start()
    return Manager(provider, store, ticker, actor, subscriber, stopping, (pool_threads, vm_threads))


def guard(config: Config, name: str, provider: Provider, store: Store) -> Provider:
    """The provider behind its circuit breaker (``providers.guard``); each state change is logged,
    counted and written to Redis for ``/status``."""
    spec = config.providers.get(name)
    settings = spec.breaker if spec is not None else BreakerSettings(enabled=False)

    def changed(state: BreakerState, failures: int) -> None:
        metrics.BREAKER_STATE.labels(name).set(state.gauge)
        if state is BreakerState.OPEN:
            metrics.BREAKER_OPENED.labels(name).inc()
            log.error(
                "circuit breaker of %s opened after %d failures: calls refused for %.0f s",
                name,
                failures,
                settings.timeout,
            )
        else:
            log.warning("circuit breaker of %s is %s", name, state.value)
        try:
            store.health.set_breaker(name, state.value, failures, time.time())
        except StoreError as exc:
            log.warning("could not record the breaker state of %s: %s", name, exc)

    breaker = CircuitBreaker(name, settings, on_change=changed)
    metrics.BREAKER_STATE.labels(name).set(BreakerState.CLOSED.gauge)
    with contextlib.suppress(StoreError):
        store.health.set_breaker(name, BreakerState.CLOSED.value, 0, time.time())
    return cast("Provider", GuardedProvider(provider, breaker))  # it offers every call the actors make


def vm_thread_count(config: Config, provider_name: str) -> int:
    """Threads for VMActor turns: ``task_limit`` pool clones and ``ondemand_clone_limit`` on-demand
    clones may block at once, and beside them as many checks, destroys and tasks as the provider has
    connections for (at least 4); 128 at most."""
    spec = config.providers.get(provider_name)
    connections = getattr(spec.settings, "connection_pool_size", None) if spec is not None else None
    clones = config.globals.task_limit + config.globals.ondemand_clone_limit
    return min(_VM_THREADS, clones + max(4, connections or 0))


def prepare_provider(config: Config, name: str, provider: Provider) -> None:
    """Once at start, before any pool runs: purge what no pool owns, prepare templates (if configured).

    ``purge_unconfigured_resources`` of the provider entry (else of ``:config:``) removes the provider's
    resources that belong to no configured pool, sparing ``resources_allowlist``;
    ``:config: create_template_delta_disks`` prepares every pool's template for linked clones.
    Failures are logged: the pools start anyway, as in the original.
    """
    spec = config.providers.get(name)
    purge = spec.purge_unconfigured_resources if spec is not None else None
    if purge if purge is not None else config.globals.purge_unconfigured_resources:
        allowlist = spec.resources_allowlist if spec is not None else ()
        try:
            removed = provider.purge_unconfigured(allowlist)
        except NotImplementedError:
            log.warning("provider %s cannot purge unconfigured resources", name)
        except ProviderError as exc:
            log.error("purging the unconfigured resources of %s failed: %s", name, exc)
        else:
            log.info("purged %d unconfigured resource(s) of %s: %s", len(removed), name, removed)
    if config.globals.create_template_delta_disks:
        for pool in config.pools_for_provider(name):
            try:
                provider.prepare_template(pool.name)
            except ProviderError as exc:
                log.warning("preparing the template of pool %s failed (clones go on): %s", pool.name, exc)


def _subscribe(store: Store, pools: list[str], actor: Any, stopping: threading.Event) -> None:
    """Forward the API's pub/sub events to the ProviderActor; reconnect with back-off when Redis drops.

    Events published while no subscription was in force (before the first, during a reconnect) are lost;
    each pool runs a pass as soon as the subscription is in force, so what they announced (a waiting
    checkout's demand, a queued task) is picked up from Redis at once instead of on the next loop."""
    backoff = 0.5
    while not stopping.is_set():
        pubsub = None
        try:
            pubsub = store.pools.events_pubsub(pools)
            backoff = 0.5
            caught_up = False
            while not stopping.is_set():
                message = pubsub.get_message(timeout=0.25)
                if message and message.get("type") == "message":
                    event = decode(message["data"])
                    if event is not None:
                        actor.route(event)
                if not caught_up:  # subscribed now: what was published before is in Redis, read by a pass
                    caught_up = True
                    for pool in pools:
                        actor.route(ConfigChanged(pool=pool))
        except pykka.ActorDeadError:
            return
        except Exception as exc:
            log.warning("event subscription lost (%s); reconnecting in %.1f s", exc, backoff)
            stopping.wait(backoff)
            backoff = min(backoff * 2, 10.0)
        finally:
            if pubsub is not None:
                with contextlib.suppress(Exception):
                    pubsub.close()


def publish_pools(config: Config, redis_url: str) -> None:
    """Publish the configured pools to Redis (``vmpooler__pools`` and each pool's hash), once at start,
    so that an API node without ``:pools:`` and the original's tools see them."""
    store = Store.from_url(redis_url, max_connections=1)
    try:
        pools = {}
        for pool in config.pools:
            fields = {k: str(v) for k, v in pool.raw.items() if isinstance(v, str | int | float | bool)}
            if pool.alias:
                fields["alias"] = ",".join(pool.alias)
            if pool.domain:
                fields["domain"] = pool.domain
            pools[pool.name] = fields
        store.pools.publish(pools, remove_others=True)
    finally:
        store.close()


def start_with_retry(
    start: Callable[[], Manager],
    heartbeat: Heartbeat | None,
    sleep: Callable[[float], None] = time.sleep,
) -> Manager:
    """``start()`` until it works: Redis or the provider's backend being down is waited out (1 s, then
    doubling up to 30 s apart, beating the heartbeat meanwhile), never a crash loop of the process."""
    backoff = 1.0
    while True:
        try:
            return start()
        except StoreError as exc:
            log.warning("redis unavailable at start (%s); retrying in %.0f s", exc, backoff)
        except ProviderUnavailable as exc:
            log.error("the provider cannot start (%s); retrying in %.0f s", exc, backoff)
        if heartbeat is not None:
            heartbeat.beat()
        sleep(backoff)
        backoff = min(backoff * 2, 30.0)


def run_provider_worker(args: ProviderWorkerArgs, heartbeat: Heartbeat | None = None) -> None:
    """The provider child's main: build everything, then beat until SIGTERM."""
    config = load_config(args.config_path, env=args.config_env)
    setup_logging(logfile=config.globals.logfile)
    metrics.configure_sink(config)
    # Redis calls come from the dispatchers' threads, which wait for a free connection: a clone holds
    # none while the provider works, so 20 serve any number of pools and VMs (docs/performance.md)
    pool_size = max(config.redis.connection_pool_size, _REDIS_CONNECTIONS)
    store = Store.from_url(
        args.redis_url, max_connections=pool_size, pool_timeout=config.redis.connection_pool_timeout
    )
    manager = None
    try:
        ownership = Ownership(
            manager=config.globals.manager_id or socket.gethostname(),
            instance=args.manager_instance or secrets.token_hex(6),
            pid=os.getpid(),
            lease_seconds=config.globals.manager_lease_seconds,
        )
        manager = start_with_retry(
            lambda: start_manager(config, args.provider, store, ownership=ownership), heartbeat
        )
        log.info("provider %s running", args.provider)
        while True:
            if heartbeat is not None and manager.alive():
                heartbeat.beat()
            time.sleep(1.0)
    finally:
        if manager is not None:
            manager.stop()
        store.close()
