"""Fixtures of the HTTP API tests: ``create_app(...)`` in a Falcon ``TestClient``, on the real redis-server.

State is seeded by writing Redis directly (as the manager would) with ``vmpooler.keys``; every test runs with
a fixed clock (``NOW``) and ``TZ=UTC`` so that stored times, dates and computed hours are known in advance.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest
import redis as redis_lib
from falcon import testing

from vmpooler import bus, keys
from vmpooler.config import Config, load_config_text
from vmpooler.http.app import create_app
from vmpooler.store import Store

NOW = 1795255200.0  # 2026-11-21 10:00:00 UTC
NOW_TEXT = "2026-11-21 10:00:00 +0000"
TODAY = "2026-11-21"
UPTIME = 90.0
AUTH_ENV = {"VMPOOLER_DEBUG": "1"}
REALM = 'Basic realm="Authentication required"'

# Four pools: an alias list, a string alias, a dot in a name, and a pool without a domain.
BASE_CONFIG = """
:config:
  vm_lifetime: 12
:dns_configs:
  :example:
    dns_class: dynamic-dns
    domain: example.com
  :other:
    dns_class: dynamic-dns
    domain: other.example.net
:pools:
  - name: debian-7-x86_64
    template: templates/debian-7-x86_64
    size: 3
    alias: [debian]
    dns_plugin: example
  - name: centos-8
    template: templates/centos-8
    size: 2
    alias: centos
    dns_plugin: other
  - name: win-2019.core
    template: templates/win-2019
    size: 1
    dns_plugin: example
  - name: nodomain
    template: templates/nodomain
    size: 0
"""

DEB = "debian-7-x86_64"
CENTOS = "centos-8"
WIN = "win-2019.core"
NODOMAIN = "nodomain"


def with_config(extra: str, base: str = BASE_CONFIG) -> str:
    """``base`` with more ``:config:`` settings (``extra`` holds ``key: value`` lines)."""
    lines = "".join(f"  {line.strip()}\n" for line in extra.strip().splitlines())
    return base.replace(":config:\n", ":config:\n" + lines, 1)


def with_auth(base: str = BASE_CONFIG) -> str:
    return base + ":auth:\n  provider: dummy\n"


class Clock:
    """A clock that stands still until a test moves it."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Api(testing.TestClient):
    """A TestClient that also knows the app's clock and config."""

    def __init__(self, app: Any, clock: Clock, config: Config) -> None:
        super().__init__(app)
        self.clock = clock
        self.config = config


@pytest.fixture(autouse=True)
def _utc() -> Iterator[None]:
    """Local time is UTC, so the stored ``+0000`` times and RFC 3339 output are predictable."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


@pytest.fixture
def make_api(redis_url: str) -> Iterator[Callable[..., Api]]:
    """Build an app on this test's Redis DB: ``make_api(config_text, env=..., seed=...)``."""
    stores: list[Store] = []

    def make(
        config_text: str = BASE_CONFIG,
        *,
        env: dict[str, str] | None = None,
        seed: int = 7,
        url: str | None = None,
    ) -> Api:
        config = attrs.evolve(load_config_text(config_text, env=env or {}), loaded_at=NOW - UPTIME)
        store = Store.from_url(url or redis_url, lean=True)  # as the API worker opens it (serve.py)
        stores.append(store)
        clock = Clock()
        return Api(create_app(config, store, clock=clock, rng=random.Random(seed)), clock, config)

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    return make_api()


@pytest.fixture
def auth_api(make_api: Callable[..., Api]) -> Api:
    return make_api(with_auth(), env=AUTH_ENV)


# -- seeding ------------------------------------------------------------------------------------------


def vm_fields(pool: str, **extra: str) -> dict[str, str]:
    """A VM hash as the manager writes it once the VM is ready."""
    return {
        "clone": "2026-11-21 09:00:00 +0000",
        "template": pool,
        "pool": pool,
        "ready": "2026-11-21 09:05:00 +0000",
        "check": "2026-11-21 09:30:00 +0000",
        **extra,
    }


def add_ready(redis: redis_lib.Redis, pool: str, *vms: str) -> None:
    for vm in vms:
        redis.sadd(keys.ready_set(pool), vm)
        redis.hset(keys.vm_hash(vm), mapping=vm_fields(pool))


def add_running(redis: redis_lib.Redis, pool: str, vm: str, **extra: str) -> None:
    checkout = extra.pop("checkout", "2026-11-21 08:30:00 +0000")
    redis.sadd(keys.running_set(pool), vm)
    redis.hset(keys.active_hash(pool), vm, checkout)
    redis.hset(keys.vm_hash(vm), mapping=vm_fields(pool, checkout=checkout, **extra))


def add_token(redis: redis_lib.Redis, token: str, user: str) -> None:
    redis.hset(keys.token(token), mapping={"user": user, "created": "2026-11-01 12:00:00 +0000"})


def dump(redis: redis_lib.Redis) -> dict[str, Any]:
    """Every key of the DB with its type and value, to show that a request changed nothing."""
    out: dict[str, Any] = {}
    for key in redis.scan_iter():
        kind = redis.type(key)
        if kind == "set":
            out[key] = ("set", redis.smembers(key))
        elif kind == "hash":
            out[key] = ("hash", redis.hgetall(key))
        elif kind == "zset":
            out[key] = ("zset", redis.zrange(key, 0, -1, withscores=True))
        elif kind == "list":
            out[key] = ("list", redis.lrange(key, 0, -1))
        else:
            out[key] = (kind, redis.get(key))
    return out


# Aliases over several pools with backend weights: ``both`` → pool-a (weight 0) and pool-b (weight 5);
# ``pool2`` is a pool and also an alias of pool1.
WEIGHTED = """
:config:
  backend_weight:
    compute0: 0
    compute5: 5
:pools:
  - name: pool-a
    template: t/a
    size: 5
    alias: [both]
    clone_target: compute0
  - name: pool-b
    template: t/b
    size: 5
    alias: [both]
    clone_target: compute5
  - name: pool1
    template: t/1
    size: 1
    alias: [pool2]
    clone_target: compute5
  - name: pool2
    template: t/2
    size: 1
    clone_target: compute0
"""


class Events:
    """The events published on some pools' channels, read with a real redis-py pub/sub."""

    def __init__(self, redis: redis_lib.Redis, pools: tuple[str, ...]) -> None:
        self._pubsub = redis.pubsub()
        self._pubsub.subscribe(*(keys.events_channel(p) for p in pools))
        for _ in pools:  # the subscription is in force once confirmed
            assert self._pubsub.get_message(timeout=5)["type"] == "subscribe"

    def read(self) -> list[tuple[str, Any]]:
        """(channel, decoded event) of every message published so far."""
        got = []
        while (message := self._pubsub.get_message(timeout=0.2)) is not None:
            got.append((message["channel"], bus.decode(message["data"])))
        return got

    def close(self) -> None:
        self._pubsub.close()


@pytest.fixture
def events(redis: redis_lib.Redis) -> Iterator[Callable[..., Events]]:
    """``events(*pools)`` subscribes to those pools' channels (every configured pool by default)."""
    opened: list[Events] = []

    def subscribe(*pools: str) -> Events:
        opened.append(Events(redis, pools or (DEB, CENTOS, WIN, NODOMAIN)))
        return opened[-1]

    yield subscribe
    for subscription in opened:
        subscription.close()
