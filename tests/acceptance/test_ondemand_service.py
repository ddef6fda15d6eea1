"""On-demand requests and pool control end to end: the real ``vmpooler`` (API workers and a provider
process) over real HTTP, a real redis-server; oracles are the API's answers and the Redis sets."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.acceptance.conftest import CONFIG_TEMPLATE, pool_yaml
from tests.conftest import wait_for
from vmpooler import keys

pytestmark = pytest.mark.acceptance

POOLS = """
  - name: deb-a
    template: templates/deb-a
    size: 1
    alias: [debian]
    dns_plugin: example
  - name: deb-b
    template: templates/deb-b
    size: 1
    alias: [debian]
    dns_plugin: example
"""


def config_text(redis_url: str, pools: str, extra: str) -> str:
    text = CONFIG_TEMPLATE.format(workers=2, redis_url=redis_url, pools=pools.strip("\n"))
    return text.replace(":config:\n", ":config:\n" + extra, 1)


def test_an_on_demand_request_over_an_alias_becomes_ready_and_is_given_back(
    start_service_yaml, redis_url, redis
):
    extra = "  experimental_features: true\n  check_loop_delay_max: 2\n"
    service = start_service_yaml(config_text(redis_url, POOLS, extra))
    status, body = service.call("POST", "/api/v3/ondemandvm", {"debian": "3"})
    assert status == 201 and body["ok"] is True
    request_id = body["request_id"]

    def answer() -> tuple[int, Any]:
        return service.call("GET", f"/api/v3/ondemandvm/{request_id}")

    wait_for(lambda: answer()[0] == 200, 30, "request ready")
    status, body = answer()
    assert body["ready"] is True
    hosts = body["debian"]["hostname"]
    assert len(hosts) == 3 and all(h.endswith(".example.com") for h in hosts)
    names = {h.split(".")[0] for h in hosts}
    running = redis.smembers(keys.running_set("deb-a")) | redis.smembers(keys.running_set("deb-b"))
    assert names <= running
    # the pools' own ready VMs are still there beside them
    wait_for(
        lambda: redis.scard(keys.ready_set("deb-a")) == 1 and redis.scard(keys.ready_set("deb-b")) == 1, 20
    )

    assert service.call("DELETE", f"/api/v3/ondemandvm/{request_id}") == (200, {"ok": True})

    def gone() -> bool:  # destroyed: the hash is kept with 'destroy' set, or expired
        return all(
            not redis.exists(keys.vm_hash(vm)) or redis.hget(keys.vm_hash(vm), "destroy") for vm in names
        )

    wait_for(gone, 20, "the request's VMs destroyed")
    assert service.call("GET", f"/api/v3/ondemandvm/{request_id}") == (
        200,
        {"ok": True, "request_id": request_id, "ready": False, "message": "The request has been deleted"},
    )


def test_a_size_override_is_carried_out_by_the_manager(start_service_yaml, redis_url, redis):
    extra = "  experimental_features: true\n  check_loop_delay_min: 30\n  check_loop_delay_max: 30\n"
    service = start_service_yaml(config_text(redis_url, pool_yaml({"deb": 2}), extra))
    wait_for(lambda: redis.scard(keys.ready_set("deb")) == 2, 20, "pool full")
    time.sleep(0.5)
    assert service.call("POST", "/api/v3/config/poolsize", {"deb": "6"}) == (201, {"ok": True})
    wait_for(lambda: redis.scard(keys.ready_set("deb")) == 6, 5, "the manager grew the pool at once")
    status, body = service.call("DELETE", "/api/v3/config/poolsize/deb")
    assert status == 201 and body["pool_size_before_overrides"] == 2
    wait_for(lambda: redis.scard(keys.ready_set("deb")) == 2, 5, "back to the file's size")
