"""The API while Redis is unreachable: a JSON 503, and recovery without rebuilding the app."""

from __future__ import annotations

import json
import socket

import pytest
import redis as redis_lib

from tests.conftest import RedisServer
from tests.integration.http.conftest import DEB, add_ready
from vmpooler import keys

pytestmark = pytest.mark.integration

UNAVAILABLE = {"ok": False, "error": "the pool store (redis) is unavailable, try again shortly"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def assert_unavailable(resp) -> None:
    assert resp.status_code == 503
    assert resp.headers["content-type"] == "application/json"
    assert resp.headers["retry-after"] == "1"
    assert resp.json == UNAVAILABLE
    assert "Traceback" not in resp.text


REQUESTS = [
    ("GET", "/api/v3/status", None),
    ("GET", "/api/v3/poolstat?pool=debian", None),
    ("GET", "/api/v3/totalrunning", None),
    ("GET", "/api/v3/summary", None),
    ("GET", "/api/v3/config", None),
    ("POST", "/api/v3/vm", json.dumps({DEB: 1})),
    ("POST", f"/api/v3/vm/{DEB}", None),
    ("GET", "/api/v3/vm/d1", None),
    ("PUT", "/api/v3/vm/d1", json.dumps({"lifetime": 2})),
    ("DELETE", "/api/v3/vm/d1", None),
    ("POST", "/api/v3/vm/d1/disk/8", None),
    ("POST", "/api/v3/vm/d1/snapshot", None),
    ("GET", "/api/v1/vm/d1", None),
]


@pytest.mark.parametrize(("method", "path", "body"), REQUESTS, ids=[f"{m} {p}" for m, p, _ in REQUESTS])
def test_nothing_listening_is_a_json_503(make_api, method, path, body):
    api = make_api(url=f"redis://127.0.0.1:{_free_port()}/0")
    assert_unavailable(api.simulate_request(method, path, body=body))


def test_requests_that_need_no_redis_still_answer(make_api):
    api = make_api(url=f"redis://127.0.0.1:{_free_port()}/0")
    assert api.get("/healthcheck").json == {"ok": True}
    assert api.get("/api/v3/vm").status_code == 200
    assert api.post("/api/v3/vm", body=b"{").status_code == 400


def test_recovers_when_redis_comes_back(make_api):
    server = RedisServer()
    server.start()
    client = redis_lib.Redis.from_url(server.url(0), decode_responses=True)
    try:
        api = make_api(url=server.url(0))
        add_ready(client, DEB, "d1")
        assert api.post(f"/api/v3/vm/{DEB}").status_code == 200
        assert api.get("/api/v3/status").status_code == 200

        server.stop()
        assert_unavailable(api.get("/api/v3/status"))
        assert_unavailable(api.post(f"/api/v3/vm/{DEB}"))

        restarted = RedisServer()
        restarted.port = server.port
        server = restarted
        server.start()
        # the new server is empty: it has neither the old data nor the checkout script
        add_ready(client, DEB, "d2")
        resp = api.get("/api/v3/status?view=capacity")
        assert resp.status_code == 200
        assert resp.json["capacity"]["current"] == 1
        resp = api.post(f"/api/v3/vm/{DEB}")
        assert resp.status_code == 200
        assert resp.json == {"ok": True, DEB: {"hostname": "d2.example.com"}}
        assert client.smembers(keys.running_set(DEB)) == {"d2"}
    finally:
        client.close()
        server.stop()
