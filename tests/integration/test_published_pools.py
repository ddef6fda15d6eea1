"""Pools published in Redis by a manager, read back by an API node whose config has no ``:pools:``."""

from __future__ import annotations

import logging
import threading
import time

import attrs
import pytest
import redis as redis_lib
from falcon import testing

from vmpooler import keys
from vmpooler.config import Config, PoolConfig, load_config_text
from vmpooler.http.app import create_app
from vmpooler.http.serve import with_published_pools
from vmpooler.store import Store
from vmpooler.worker import publish_pools

pytestmark = pytest.mark.integration

NO_POOLS = """
:config:
  ready_ttl: 90
"""

WITH_POOLS = """
:config:
  ready_ttl: 90
:dns_configs:
  :example:
    dns_class: dynamic-dns
    domain: example.com
:pools:
  - name: debian-7-x86_64
    template: templates/debian-7-x86_64
    size: 3
    alias: [debian, linux]
    dns_plugin: example
    timeout: 20
    check_hostname_for_mismatch: false
  - name: centos-8
    template: templates/centos-8
    size: 2
    alias: centos
    domain: legacy.example.net
    check_loop_delay_min: 2
  - name: win-2019.core
    template: templates/win-2019
    size: 0
"""

# As the original's manager writes them (``load_pools_to_redis``): strings only, alias comma-joined,
# domain always (empty without one), and a vSphere pool this node has no provider for.
ORIGINAL_HASHES = {
    "centos-8": {
        "name": "centos-8",
        "template": "Templates/centos-8",
        "size": "5",
        "alias": "centos,el8",
        "provider": "vsphere",
        "folder": "Pooled VMs/centos-8",
        "datastore": "vmstorage",
        "dns_plugin": "example",
        "domain": "example.com",
        "ready_ttl": "1440",
    },
    "debian-12": {
        "name": "debian-12",
        "template": "Templates/debian-12",
        "size": "1",
        "alias": "debian",
        "provider": "vsphere",
        "domain": "",
    },
    "nowin": {"name": "nowin", "template": "Templates/nowin", "size": "0"},
}


@pytest.fixture
def store(redis_url: str):
    s = Store.from_url(redis_url)
    yield s
    s.close()


def publish_by_hand(redis: redis_lib.Redis, hashes: dict[str, dict[str, str]]) -> None:
    for name, fields in hashes.items():
        redis.sadd(keys.POOLS, name)
        redis.hset(keys.pool_hash(name), mapping=fields)


def api_node() -> Config:
    return load_config_text(NO_POOLS, env={})


def test_no_pools_key_is_not_an_empty_list() -> None:
    assert not api_node().pools_given
    assert not load_config_text(NO_POOLS + ":pools:\n", env={}).pools_given
    assert load_config_text(NO_POOLS + ":pools: []\n", env={}).pools_given


def test_published_reads_every_pool_hash(store: Store, redis: redis_lib.Redis) -> None:
    assert store.pools.published() == {}
    publish_by_hand(redis, ORIGINAL_HASHES)
    redis.sadd(keys.POOLS, "gone")  # a name whose hash was deleted
    assert store.pools.published() == {**ORIGINAL_HASHES, "gone": {}}


def test_hashes_as_the_original_writes_them_become_pools(store: Store, redis: redis_lib.Redis) -> None:
    publish_by_hand(redis, ORIGINAL_HASHES)
    config = api_node().with_published_pools(store.pools.published())

    assert [pool.name for pool in config.pools] == ["centos-8", "debian-12", "nowin"]
    centos = config.pool("centos-8")
    assert (centos.size, centos.alias, centos.domain) == (5, ("centos", "el8"), "example.com")
    assert (centos.provider, centos.dns_plugin, centos.ready_ttl) == ("vsphere", "example", 1440)
    assert centos.provider_options == {}
    assert config.pool("debian-12").alias == ("debian",)
    assert config.pool("debian-12").domain is None  # "" is no domain
    assert config.pool("debian-12").ready_ttl == 90  # inherited from this node's :config:
    assert config.pool("nowin").alias == ()
    assert config.candidates("debian") == ("debian-12",)
    assert config.candidates("el8") == ("centos-8",)
    # vSphere keys and the resolved domain are expected in a published hash: no warnings
    assert config.warnings == ()
    # GET /config shows the pool as the original's loader does: typed core values, alias a list
    assert centos.raw["size"] == 5
    assert centos.raw["alias"] == ("centos", "el8")
    assert centos.raw["folder"] == "Pooled VMs/centos-8"


def test_a_pool_with_a_bad_value_is_skipped_with_a_warning(store: Store, redis: redis_lib.Redis) -> None:
    publish_by_hand(
        redis,
        {
            "good": {"template": "t/good", "size": "2"},
            "bad-size": {"template": "t/bad", "size": "five"},
            "no-size": {"template": "t/bad"},
            "odd": {
                "template": "t/odd",
                "size": "1",
                "check_loop_delay_min": "9",
                "check_loop_delay_max": "3",
            },
        },
    )
    config = api_node().with_published_pools(store.pools.published())

    assert [pool.name for pool in config.pools] == ["good", "odd"]
    assert config.pool("odd").check_loop_delay_max == 9
    assert config.warnings == (
        f"{keys.pool_hash('bad-size')}.size: must be an integer >= 0, got 'five'; pool 'bad-size' skipped",
        f"{keys.pool_hash('no-size')}.size: is required; pool 'no-size' skipped",
        f"{keys.pool_hash('odd')}.check_loop_delay_max: 3 is below check_loop_delay_min 9; using 9",
    )


def test_what_a_manager_publishes_reads_back_as_the_same_pools(redis_url: str, store: Store) -> None:
    configured = load_config_text(WITH_POOLS, env={})
    publish_pools(configured, redis_url)
    served = api_node().with_published_pools(store.pools.published())

    def core(config: Config) -> list[dict[str, object]]:
        """Every field of every pool but ``raw`` and ``provider_options`` (the provider's keys)."""
        wanted = [field.name for field in attrs.fields(PoolConfig)]
        wanted = [name for name in wanted if name not in {"raw", "provider_options"}]
        pools = sorted(config.pools, key=lambda pool: pool.name)  # published pools come in name order
        return [{name: getattr(pool, name) for name in wanted} for pool in pools]

    assert core(served) == core(configured)
    assert served.warnings == ()
    assert served.pool_names == configured.pool_names


def test_an_api_on_published_pools_serves_them(redis_url: str, store: Store, redis: redis_lib.Redis) -> None:
    publish_pools(load_config_text(WITH_POOLS, env={}), redis_url)
    redis.sadd(keys.ready_set("debian-7-x86_64"), "vm1")
    client = testing.TestClient(create_app(api_node().with_published_pools(store.pools.published()), store))

    status = client.simulate_get("/api/v3/status").json["pools"]
    assert {name: pool["max"] for name, pool in status.items()} == {
        "centos-8": 2,
        "debian-7-x86_64": 3,
        "win-2019.core": 0,
    }
    reply = client.simulate_post("/api/v3/vm/linux")
    assert reply.status_code == 200, reply.text
    assert reply.json["linux"]["hostname"] == "vm1.example.com"
    pools = {pool["name"]: pool for pool in client.simulate_get("/api/v3/config").json["pool_configuration"]}
    assert pools["debian-7-x86_64"]["timeout"] == 20
    assert pools["debian-7-x86_64"]["check_hostname_for_mismatch"] is False
    assert pools["centos-8"]["alias"] == ["centos"]


class CountingHeartbeat:
    def __init__(self, stop_after: int | None = None) -> None:
        self.beats = 0
        self.stop_after = stop_after

    def beat(self) -> None:
        self.beats += 1
        if self.beats == self.stop_after:
            raise SystemExit(0)  # what SIGTERM does in a worker, wherever it waits


def test_the_worker_waits_for_published_pools_beating_its_heartbeat(
    store: Store, redis: redis_lib.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    heartbeat = CountingHeartbeat()
    caplog.set_level(logging.INFO, logger="vmpooler.http.serve")

    def publish_later() -> None:
        while heartbeat.beats < 3:
            time.sleep(0.01)
        publish_by_hand(redis, {"late": {"template": "t/late", "size": "4"}, "bad": {"size": "-1"}})

    thread = threading.Thread(target=publish_later)
    thread.start()
    config = with_published_pools(api_node(), store, heartbeat, interval=0.02)
    thread.join()

    assert [(pool.name, pool.size) for pool in config.pools] == [("late", 4)]
    assert heartbeat.beats >= 3
    messages = [record.getMessage() for record in caplog.records]
    assert messages.count("no :pools: in the config and none published in redis yet; waiting") == 1
    assert any("pool 'bad' skipped" in message for message in messages)
    assert "serving the 1 pool(s) published in redis: late" in messages


def test_the_worker_waits_out_an_unreachable_redis(caplog: pytest.LogCaptureFixture) -> None:
    store = Store.from_url("redis://127.0.0.1:1/0", socket_timeout=0.1)
    heartbeat = CountingHeartbeat(stop_after=3)
    caplog.set_level(logging.WARNING, logger="vmpooler.http.serve")
    try:
        with pytest.raises(SystemExit):
            with_published_pools(api_node(), store, heartbeat, interval=0.01)
    finally:
        store.close()
    assert heartbeat.beats == 3
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 1, messages  # one warning per 10 s
    assert messages[0].startswith("no :pools: in the config and redis unavailable: ")
