"""A failing backend degrades its pools and they recover by themselves; failed VMs land in the dead-letter
queues. Real actors and Redis; the provider is the dummy, made to fail through its public methods."""

from __future__ import annotations

import json
import threading
import time

import pytest
from falcon import testing
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import wait_for
from tests.integration.manager.helpers import CALL_THROUGH, FakeProvider, ManualClock, fast_config
from vmpooler import keys
from vmpooler.errors import ProviderUnavailable
from vmpooler.http.app import create_app

pytestmark = pytest.mark.integration


def test_a_dead_backend_opens_the_breaker_and_its_pool_recovers_when_it_returns(
    start_pool_manager, store, redis
):
    config = fast_config(
        {"a": 2},
        extra_config="  circuit_breaker_failure_threshold: 3\n  circuit_breaker_timeout: 2\n"
        "  circuit_breaker_half_open_attempts: 2\n",
    )
    fake = FakeProvider(config)
    down = threading.Event()
    down.set()

    def backend(*args: object) -> object:
        if down.is_set():
            raise ProviderUnavailable("connection refused")
        return CALL_THROUGH

    for method in ("list_vms", "create_vm", "get_vm", "vm_ready", "destroy_vm"):
        fake.on(method, backend)
    start_pool_manager(config, provider=fake)
    wait_for(lambda: store.health.breakers().get("dummy", {}).get("state") == "open", 10, "breaker open")
    time.sleep(0.1)  # calls admitted just before it opened have failed by now
    calls = fake.calls("list_vms") + fake.calls("create_vm")
    assert calls >= 3

    api = testing.TestClient(create_app(config, store))
    health = api.get("/api/v3/status").json["health"]
    assert health["status"] == "unhealthy"
    assert health["providers"]["dummy"]["breaker"] == "open"
    assert health["pools"] == {"a": "unhealthy"}
    assert scraped_health(api) == 2.0  # the verdict as a metric too: 2 = unhealthy
    # while open the pool makes no call to the backend (a pass every 0.2 s would make several)
    time.sleep(0.8)
    assert fake.calls("list_vms") + fake.calls("create_vm") == calls
    assert not redis.smembers(keys.ready_set("a"))

    down.clear()  # the backend is back: after the timeout, trial calls succeed and the breaker closes
    wait_for(lambda: store.health.breakers()["dummy"]["state"] == "closed", 10, "breaker closed")
    wait_for(lambda: redis.scard(keys.ready_set("a")) == 2, 10, "pool full again")
    assert api.get("/api/v3/status").json["health"]["status"] == "healthy"
    assert scraped_health(api) == 0.0


def scraped_health(api: testing.TestClient) -> float:
    """``vmpooler_health_status`` as a scrape of ``/prometheus`` shows it."""
    for family in text_string_to_metric_families(api.get("/prometheus").text):
        if family.name == "vmpooler_health_status":
            (sample,) = family.samples
            return float(sample.value)
    raise AssertionError("no vmpooler_health_status in the scrape")


def test_failed_vms_land_in_the_dead_letter_queue(start_pool_manager, store, redis):
    config = fast_config(
        {"a": 1},
        task_limit=1,
        extra_config="  dlq_enabled: true\n  dlq_max_entries: 5\n  circuit_breaker_enabled: false\n",
        provider_options="    createvm_fail_percent: 100\n",
    )
    fake = FakeProvider(config)
    start_pool_manager(config, provider=fake)
    wait_for(lambda: fake.calls("create_vm") >= 7, 10, "seven failed clones")
    wait_for(lambda: redis.zcard(keys.dlq("clone")) == 5, 5, "the queue trimmed to dlq_max_entries")
    members = redis.zrange(keys.dlq("clone"), 0, -1)
    for member in members:
        vm, epoch, raw = member.split(":", 2)
        entry = json.loads(raw)
        assert entry["vm"] == vm and entry["pool"] == "a" and entry["queue_from"] == "clone"
        assert entry["error_class"] == "CloneFailed" and "simulated clone failure" in entry["error_message"]
        assert entry["failed_at"].endswith("+00:00") and int(epoch) > 0
    assert 0 < redis.ttl(keys.dlq("clone")) <= 168 * 3600
    assert store.health.dlq_sizes() == {"clone": 5, "pending": 0, "ready": 0}


def test_without_dlq_enabled_nothing_is_kept(start_pool_manager, redis):
    config = fast_config({"a": 1}, task_limit=1, provider_options="    createvm_fail_percent: 100\n")
    fake = FakeProvider(config)
    start_pool_manager(config, provider=fake)
    wait_for(lambda: fake.calls("create_vm") >= 3, 10, "failed clones")
    assert redis.zcard(keys.dlq("clone")) == 0


@pytest.mark.parametrize("dry_run", [False, True])
def test_the_purge_fails_a_vm_stuck_pending_past_max_pending_age(start_pool_manager, store, redis, dry_run):
    clock = ManualClock()
    config = fast_config(
        {"a": 1},
        extra_config=(
            "  timeout: 600\n  dlq_enabled: true\n  purge_enabled: true\n  purge_interval: 1\n"
            f"  max_pending_age: 60\n  purge_dry_run: {str(dry_run).lower()}\n"
        ),
    )
    fake = FakeProvider(config)
    fake.on("vm_ready", lambda *args: False)  # never boots
    start_pool_manager(config, provider=fake, clock=clock)
    wait_for(lambda: redis.scard(keys.pending_set("a")) == 1, 10, "one pending VM")
    (vm,) = redis.smembers(keys.pending_set("a"))
    wait_for(lambda: fake.calls("vm_ready", vm) >= 1, 5, "its readiness checked")
    clock.advance(61)
    if dry_run:
        wait_for(lambda: fake.calls("list_vms") >= 10, 10, "passes with the purge due")
        assert redis.sismember(keys.pending_set("a"), vm) and redis.zcard(keys.dlq("pending")) == 0
        return
    wait_for(lambda: not redis.sismember(keys.pending_set("a"), vm), 10, "purged from pending")
    wait_for(lambda: vm not in fake.inner.inventory()["a"], 10, "destroyed in the provider")
    (member,) = redis.zrange(keys.dlq("pending"), 0, -1)
    entry = json.loads(member.split(":", 2)[2])
    assert entry["vm"] == vm and entry["queue_from"] == "pending" and entry["error_class"] == "StalePending"
