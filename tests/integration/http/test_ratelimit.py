"""Rate limiting (``:config: rate_limiting_enabled``, ``:rate_limits:``) on the real redis-server.

Each class counts its own requests per client in a window shared by every API process; a request over
the limit is a 429 that never reaches its route. Small limits and periods of 1-2 s keep the tests fast.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable

import pytest
import redis as redis_lib

from tests.integration.http.conftest import DEB, NOW, Api, add_ready, dump, with_config
from tests.support.waiting import wait_for
from vmpooler import keys
from vmpooler.config import load_config_text
from vmpooler.errors import ConfigError
from vmpooler.http.ratelimit import TrustedProxies, classify, rate_limiting
from vmpooler.store import Store

pytestmark = pytest.mark.integration

LIMITS = """
  vm_creation: {limit: 2, period: 60}
  vm_deletion: {limit: 3, period: 60}
  authenticated: {limit: 4, period: 60}
  global_per_ip: {limit: 5, period: 60}
"""
TOKEN = {"X-AUTH-TOKEN": "tok1"}
PEER = "127.0.0.1"  # falcon.testing's default peer


def limited(limits: str = LIMITS, *settings: str) -> str:
    """The base config with rate limiting on, ``settings`` more ``:config:`` lines and ``limits``."""
    return with_config("\n".join(("rate_limiting_enabled: true", *settings))) + ":rate_limits:" + limits


def all_counters(redis: redis_lib.Redis) -> dict[str, int]:
    return {key: int(redis.get(key)) for key in redis.scan_iter(match=keys.ratelimit("*", "*"))}


# method, path, headers, class, client id
CLASSES = [
    ("POST", f"/api/v3/vm/{DEB}", {}, "vm_creation", f"ip:{PEER}"),
    ("POST", "/api/v3/vm", TOKEN, "vm_creation", "token:tok1"),
    ("POST", "/api/v1/ondemandvm", {}, "vm_creation", f"ip:{PEER}"),
    ("DELETE", "/api/v3/vm/d1", {}, "vm_deletion", f"ip:{PEER}"),
    ("DELETE", "/api/v3/ondemandvm/r1", TOKEN, "vm_deletion", "token:tok1"),
    ("GET", "/api/v3/status", TOKEN, "authenticated", "token:tok1"),
    ("GET", "/api/v3/ondemandvm/r1", TOKEN, "authenticated", "token:tok1"),
    ("PUT", "/api/v3/vm/d1", TOKEN, "authenticated", "token:tok1"),
    ("GET", "/api/v3/vm/d1", {}, "global_per_ip", f"ip:{PEER}"),
    ("GET", "/dashboard", {}, "global_per_ip", f"ip:{PEER}"),
]
LIMIT_OF = {"vm_creation": 2, "vm_deletion": 3, "authenticated": 4, "global_per_ip": 5}


@pytest.mark.parametrize(
    ("method", "path", "headers", "kind", "client"), CLASSES, ids=[f"{c[0]} {c[1]}" for c in CLASSES]
)
def test_each_class_counts_against_its_own_limit(make_api, redis, method, path, headers, kind, client):
    api = make_api(limited())
    limit = LIMIT_OF[kind]
    for _ in range(limit):
        assert api.simulate_request(method, path, headers=headers).status_code != 429
    assert api.simulate_request(method, path, headers=headers).status_code == 429
    assert all_counters(redis) == {keys.ratelimit(kind, client): limit + 1}
    assert 0 < redis.ttl(keys.ratelimit(kind, client)) <= 60


def test_classes_clients_and_tokens_are_counted_apart(make_api, redis):
    api = make_api(limited())
    for _ in range(5):
        assert api.get("/api/v3/status").status_code == 200
    assert api.get("/api/v3/status").status_code == 429
    # the same peer: other classes, other tokens, and another peer are still served
    assert api.simulate_post("/api/v3/vm/nosuchpool").status_code != 429
    assert api.get("/api/v3/status", headers=TOKEN).status_code == 200
    assert api.get("/api/v3/status", headers={"X-AUTH-TOKEN": "tok2"}).status_code == 200
    assert api.simulate_get("/api/v3/status", remote_addr="192.0.2.8").status_code == 200
    assert all_counters(redis) == {
        keys.ratelimit("global_per_ip", f"ip:{PEER}"): 6,
        keys.ratelimit("vm_creation", f"ip:{PEER}"): 1,
        keys.ratelimit("authenticated", "token:tok1"): 1,
        keys.ratelimit("authenticated", "token:tok2"): 1,
        keys.ratelimit("global_per_ip", "ip:192.0.2.8"): 1,
    }


def test_an_empty_token_header_counts_as_no_token(make_api, redis):
    api = make_api(limited())
    api.get("/api/v3/status", headers={"X-AUTH-TOKEN": ""})
    assert all_counters(redis) == {keys.ratelimit("global_per_ip", f"ip:{PEER}"): 1}


def test_over_the_limit_is_a_429_with_the_limit_headers_and_the_route_never_runs(make_api, redis):
    api = make_api(limited("\n  vm_creation: {limit: 1, period: 60}\n"))
    add_ready(redis, DEB, "d1", "d2")
    assert api.simulate_post(f"/api/v3/vm/{DEB}").status_code == 200
    before = dump(redis)
    refused = api.simulate_post(f"/api/v3/vm/{DEB}")
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/json"
    assert refused.headers["x-ratelimit-limit"] == "1"
    assert refused.headers["x-ratelimit-remaining"] == "0"
    assert refused.headers["retry-after"] == "60"
    assert refused.headers["x-ratelimit-reset"] == str(int(NOW) + 60)  # the app's clock stands at NOW
    assert refused.json == {
        "ok": False,
        "error": "Rate limit exceeded",
        "limit": 1,
        "period": 60,
        "retry_after": 60,
    }
    assert json.loads(refused.text) == refused.json
    counter = keys.ratelimit("vm_creation", f"ip:{PEER}")
    assert {k: v for k, v in dump(redis).items() if k != counter} == {
        k: v for k, v in before.items() if k != counter
    }  # no VM was checked out


def test_allowed_requests_carry_no_limit_headers(make_api):
    # as the original: only a refusal says what the limit is
    response = make_api(limited()).get("/api/v3/status")
    assert response.status_code == 200
    assert not any(name.startswith("x-ratelimit") for name in response.headers)


def test_a_new_window_starts_when_the_period_has_passed(make_api, redis):
    api = make_api(limited("\n  global_per_ip: {limit: 2, period: 1}\n"))
    assert [api.get("/api/v3/status").status_code for _ in range(3)] == [200, 200, 429]
    assert api.get("/api/v3/status").headers["retry-after"] == "1"
    wait_for(lambda: api.get("/api/v3/status").status_code == 200, timeout=3, what="a new window")
    # the request that opened the new window counts in it: one more is served, the next is not
    assert [api.get("/api/v3/status").status_code for _ in range(2)] == [200, 429]


def test_the_window_is_fixed_from_its_first_request(make_api, redis):
    # the original set the expiry again on every allowed request: a steady client never got a new window
    api = make_api(limited("\n  global_per_ip: {limit: 100, period: 2}\n"))
    api.get("/api/v3/status")
    counter = keys.ratelimit("global_per_ip", f"ip:{PEER}")
    first = redis.pttl(counter)
    wait_for(lambda: redis.pttl(counter) < first - 300, timeout=2, what="the window to run")
    api.get("/api/v3/status")
    assert redis.pttl(counter) < first - 300


def test_every_api_process_shares_the_counters(make_api, redis):
    first = make_api(limited("\n  global_per_ip: {limit: 3, period: 60}\n"))
    second = make_api(limited("\n  global_per_ip: {limit: 3, period: 60}\n"))  # its own store and pool
    statuses = [api.get("/api/v3/status").status_code for api in (first, second, first, second)]
    assert statuses == [200, 200, 200, 429]


def test_counting_goes_on_after_redis_forgot_the_script(make_api, redis):
    api = make_api(limited("\n  global_per_ip: {limit: 2, period: 60}\n"))
    assert api.get("/api/v3/status").status_code == 200
    redis.script_flush()
    assert [api.get("/api/v3/status").status_code for _ in range(2)] == [200, 429]


def test_a_lost_connection_fails_open_once_then_counting_resumes(make_api, redis, caplog):
    api = make_api(limited("\n  global_per_ip: {limit: 3, period: 60}\n"))
    assert api.get("/api/v3/status").status_code == 200
    db = redis.connection_pool.connection_kwargs["db"]
    counting = [c for c in redis.client_list() if c["db"] == str(db) and c["cmd"] in ("evalsha", "eval")]
    assert len(counting) == 1  # the counter's own connection (this thread's)
    redis.client_kill_filter(_id=counting[0]["id"])
    with caplog.at_level(logging.WARNING, logger="vmpooler.http.ratelimit"):
        statuses = [api.get("/api/v3/status").status_code for _ in range(4)]
    # at most the first request after the loss is not counted; the rest are, on a new connection
    assert statuses in ([200, 200, 200, 429], [200, 200, 429, 429])
    assert len([r for r in caplog.records if r.name == "vmpooler.http.ratelimit"]) == statuses.count(200) - 2


def test_a_request_is_counted_once(make_api, redis):
    api = make_api(limited())
    api.simulate_post(f"/api/v3/vm/{DEB}", headers=TOKEN)
    api.get("/api/v3/vm/d1")
    assert all_counters(redis) == {
        keys.ratelimit("vm_creation", "token:tok1"): 1,
        keys.ratelimit("global_per_ip", f"ip:{PEER}"): 1,
    }


def test_options_healthcheck_and_metrics_are_never_limited(make_api, redis):
    api = make_api(
        limited("\n  global_per_ip: {limit: 1, period: 60}\n  vm_creation: {limit: 1, period: 60}\n")
    )
    for _ in range(3):
        assert api.simulate_options("/api/v3/vm").status_code == 204
        assert api.get("/healthcheck").status_code == 200
        assert api.get("/prometheus").status_code == 200
    assert all_counters(redis) == {}


def test_a_configured_metrics_endpoint_is_not_limited(make_api, redis):
    api = make_api(
        limited("\n  global_per_ip: {limit: 1, period: 60}\n") + ":prometheus:\n  prometheus_endpoint: /m\n"
    )
    assert [api.get("/m").status_code for _ in range(3)] == [200, 200, 200]
    assert [api.get("/prometheus").status_code for _ in range(2)] == [404, 429]


# -- the client's address ------------------------------------------------------------------------------


def test_x_forwarded_for_is_ignored_from_a_peer_that_is_not_a_trusted_proxy(make_api, redis):
    api = make_api(limited(LIMITS, "trusted_proxies: ['10.0.0.0/8']"))
    for spoofed in ("198.51.100.1", "198.51.100.2"):
        api.simulate_get("/api/v3/status", remote_addr="203.0.113.7", headers={"X-Forwarded-For": spoofed})
    assert all_counters(redis) == {keys.ratelimit("global_per_ip", "ip:203.0.113.7"): 2}


def test_x_forwarded_for_is_ignored_without_trusted_proxies(make_api, redis):
    api = make_api(limited())
    api.simulate_get("/api/v3/status", remote_addr="10.0.0.1", headers={"X-Forwarded-For": "198.51.100.1"})
    assert all_counters(redis) == {keys.ratelimit("global_per_ip", "ip:10.0.0.1"): 1}


def test_x_forwarded_for_from_a_trusted_proxy_names_the_client(make_api, redis):
    limits = "\n  global_per_ip: {limit: 2, period: 60}\n"
    api = make_api(limited(limits, "trusted_proxies: ['10.0.0.0/8', '192.0.2.1']"))

    def via_proxies(forwarded: str) -> int:
        return api.simulate_get(
            "/api/v3/status", remote_addr="10.1.2.3", headers={"X-Forwarded-For": forwarded}
        ).status_code

    # the client forges addresses on the left; the proxies append what they saw on the right
    assert via_proxies("198.51.100.9, 192.0.2.1") == 200
    assert via_proxies("1.1.1.1, 198.51.100.9, 10.9.9.9") == 200
    assert via_proxies("2.2.2.2, 198.51.100.9") == 429
    assert via_proxies("198.51.100.10") == 200  # another client behind the same proxy
    assert api.simulate_get("/api/v3/status", remote_addr="10.1.2.3").status_code == 200  # the proxy itself
    assert all_counters(redis) == {
        keys.ratelimit("global_per_ip", "ip:198.51.100.9"): 3,
        keys.ratelimit("global_per_ip", "ip:198.51.100.10"): 1,
        keys.ratelimit("global_per_ip", "ip:10.1.2.3"): 1,
    }


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("10.0.0.1", "[2001:db8::1]:4711", "2001:db8::1"),
        ("10.0.0.1", "198.51.100.9:4711", "198.51.100.9"),
        ("::ffff:10.0.0.1", "198.51.100.9", "198.51.100.9"),  # a dual-stack socket's IPv4 peer
        ("fd00::5", "2001:db8::7, fd00::6", "2001:db8::7"),
        ("10.0.0.1", "10.0.0.2, 10.0.0.3", "10.0.0.2"),  # only proxies: the left-most
        ("10.0.0.1", "198.51.100.9, bogus, 10.0.0.3", "10.0.0.3"),  # not an address: stop there
        ("10.0.0.1", "", "10.0.0.1"),
        ("203.0.113.7", "198.51.100.9", "203.0.113.7"),
    ],
)
def test_the_client_behind_trusted_proxies(peer, forwarded, client):
    proxies = TrustedProxies(["10.0.0.0/8", "fd00::/8"])
    assert proxies.client(peer, forwarded) == client


def test_trusted_proxies_are_checked_by_the_config():
    config = load_config_text(
        ":config:\n  trusted_proxies: ['10.0.0.0/8', '192.0.2.1', 'fd00::/8']\n", env={}
    )
    assert config.globals.trusted_proxies == ("10.0.0.0/8", "192.0.2.1", "fd00::/8")
    assert load_config_text(
        ":config:\n  trusted_proxies: 10.0.0.1, 10.0.0.2\n", env={}
    ).globals.trusted_proxies == (
        "10.0.0.1",
        "10.0.0.2",
    )
    with pytest.raises(ConfigError) as info:
        load_config_text(":config:\n  trusted_proxies: ['10.0.0.0/33']\n", env={})
    assert info.value.problems == [
        ":config:.trusted_proxies: must be IP addresses or CIDR networks, got '10.0.0.0/33'"
    ]


def test_classify_follows_the_original():
    assert classify("POST", "/api/v3/vm/deb/snapshot", None) == "vm_creation"
    assert classify("POST", "/api/v2/ondemandvm", "t") == "vm_creation"
    assert classify("DELETE", "/api/v3/ondemandvm/r1", None) == "vm_deletion"
    assert classify("PUT", "/api/v3/vm/d1", None) == "global_per_ip"
    assert classify("POST", "/api/v3/token", "t") == "authenticated"
    assert classify("POST", "/api/v3/config/poolsize", None) == "global_per_ip"


# -- off, and Redis down -------------------------------------------------------------------------------


def test_disabled_writes_no_counter_and_adds_no_middleware(make_api, redis):
    api = make_api(with_config(""))
    for _ in range(20):
        assert api.get("/api/v3/status").status_code == 200
        api.simulate_post(f"/api/v3/vm/{DEB}")
    assert all_counters(redis) == {}
    assert rate_limiting(api.config, Store.from_url("redis://127.0.0.1:1/0")) == []


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_redis_down_serves_requests_and_warns_once(make_api: Callable[..., Api], caplog):
    api = make_api(
        limited("\n  global_per_ip: {limit: 1, period: 60}\n"), url=f"redis://127.0.0.1:{_closed_port()}/0"
    )
    with caplog.at_level(logging.WARNING, logger="vmpooler.http.ratelimit"):
        assert [api.get("/api/v3/vm").status_code for _ in range(3)] == [200, 200, 200]
    warnings = [r for r in caplog.records if r.name == "vmpooler.http.ratelimit"]
    assert len(warnings) == 1
    assert "served unlimited" in warnings[0].getMessage()
