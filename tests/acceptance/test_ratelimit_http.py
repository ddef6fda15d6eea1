"""Rate limits over real HTTP, with two API worker processes counting in the same Redis window."""

from __future__ import annotations

import http.client
import json
import re
from itertools import cycle

import pytest

from tests.acceptance.conftest import CONFIG_TEMPLATE, Service, pool_yaml
from tests.support.waiting import wait_for
from vmpooler import keys

pytestmark = pytest.mark.acceptance

LIMIT = 10


def _config(redis_url: str) -> str:
    base = CONFIG_TEMPLATE.format(workers=2, redis_url=redis_url, pools=pool_yaml({"deb": 1}))
    settings = "  rate_limiting_enabled: true\n  request_logger: true\n"
    return base.replace(":config:\n", ":config:\n" + settings, 1) + (
        f":rate_limits:\n  global_per_ip: {{limit: {LIMIT}, period: 60}}\n"
    )


def _get(conn: http.client.HTTPConnection, path: str) -> http.client.HTTPResponse:
    conn.request("GET", path)
    resp = conn.getresponse()
    resp.read()
    return resp


def _worker_of(service: Service, probe: int) -> str:
    """The API worker process that logged ``GET /healthcheck?probe=<probe>``."""
    line = re.compile(rf"\[([^/\]]+)/[^\]]*\] vmpooler\.http\.requests: GET /healthcheck\?probe={probe} ")
    found = wait_for(lambda: line.search(service.log.read_text(errors="replace")), 10, "the request log")
    return found.group(1)


def _connections_per_worker(service: Service) -> dict[str, http.client.HTTPConnection]:
    """One keep-alive connection served by each API worker process (a connection stays with the
    worker that accepted it); which worker that is, the request log says. ``/healthcheck`` is not
    limited, so finding them counts nothing."""
    wait_for(
        lambda: service.log.read_text(errors="replace").count("API worker serving on") >= 2,
        20,
        "both workers",
    )
    found: dict[str, http.client.HTTPConnection] = {}
    for probe in range(200):
        conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=10)
        assert _get(conn, f"/healthcheck?probe={probe}").status == 200
        worker = _worker_of(service, probe)
        if worker in found:
            conn.close()
        else:
            found[worker] = conn
        if len(found) == 2:
            return found
    pytest.fail(f"200 new connections were all served by {sorted(found)}")


def test_both_workers_count_in_one_window(start_service_yaml, redis_url, redis) -> None:
    service = start_service_yaml(_config(redis_url), "api")
    workers = _connections_per_worker(service)
    turns = cycle(workers.values())
    served = [_get(next(turns), "/api/v3/status").status for _ in range(LIMIT)]
    assert served == [200] * LIMIT  # five through each worker
    for conn in workers.values():  # the 11th and 12th request, one through each worker
        conn.request("GET", "/api/v3/status")
        refused = conn.getresponse()
        body = json.loads(refused.read())
        assert refused.status == 429
        assert body == {"ok": False, "error": "Rate limit exceeded", "limit": LIMIT, "period": 60} | {
            "retry_after": body["retry_after"]
        }
        assert 0 < body["retry_after"] <= 60
        assert refused.getheader("Retry-After") == str(body["retry_after"])
        assert refused.getheader("X-RateLimit-Limit") == str(LIMIT)
        assert refused.getheader("X-RateLimit-Remaining") == "0"
        assert int(refused.getheader("X-RateLimit-Reset")) > 0
    assert redis.get(keys.ratelimit("global_per_ip", "ip:127.0.0.1")) == str(LIMIT + 2)
    served_by = re.findall(
        r"\[([^/\]]+)/[^\]]*\] vmpooler\.http\.requests: GET /api/v3/status 200 ", service.log.read_text()
    )
    assert sorted(served_by) == sorted([*workers] * (LIMIT // 2))
    # other classes keep their own counters: a token is still served
    conn = next(turns)
    conn.request("GET", "/api/v3/status", headers={"X-AUTH-TOKEN": "abc"})
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 200
    for conn in workers.values():
        conn.close()


def test_fresh_connections_share_the_counter(start_service_yaml, redis_url, redis) -> None:
    service = start_service_yaml(_config(redis_url), "api")
    statuses = []
    for _ in range(LIMIT + 5):  # a new connection each time, accepted by either worker
        conn = http.client.HTTPConnection("127.0.0.1", service.port, timeout=10)
        statuses.append(_get(conn, "/api/v3/status").status)
        conn.close()
    assert statuses == [200] * LIMIT + [429] * 5
    assert redis.get(keys.ratelimit("global_per_ip", "ip:127.0.0.1")) == str(LIMIT + 5)
