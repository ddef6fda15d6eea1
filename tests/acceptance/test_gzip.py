"""Gzip over a real socket: the real server compresses ``/status`` for a client that asks for it."""

from __future__ import annotations

import gzip
import http.client
import json

import pytest

from tests.acceptance.conftest import CONFIG_TEMPLATE, pool_yaml
from vmpooler import keys

pytestmark = pytest.mark.acceptance


def _get(port: int, path: str, headers: dict[str, str]) -> tuple[http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers=headers)  # http.client adds no Accept-Encoding of its own
        resp = conn.getresponse()
        return resp, resp.read()
    finally:
        conn.close()


def _without_uptime(body: bytes) -> dict[str, object]:
    document = json.loads(body)
    del document["status"]["uptime"]
    return document


def test_status_is_gzipped_over_http(start_service_yaml, redis_url, redis):
    pools = {f"pool-{i:02d}-x86_64": 2 for i in range(20)}
    redis.sadd(keys.ready_set("pool-03-x86_64"), "vm1")
    # start_service_yaml waits out a worker that is slow to boot (start_service gives up on a read timeout)
    config = CONFIG_TEMPLATE.format(workers=1, redis_url=redis_url, pools=pool_yaml(pools))
    service = start_service_yaml(config, "api")

    resp, raw = _get(service.port, "/api/v3/status", {"Accept-Encoding": "gzip"})
    assert resp.status == 200
    assert resp.getheader("Content-Encoding") == "gzip"
    assert resp.getheader("Vary") == "Accept-Encoding"
    assert int(resp.getheader("Content-Length")) == len(raw)
    plain_resp, plain = _get(service.port, "/api/v3/status", {})
    assert plain_resp.getheader("Content-Encoding") is None
    assert len(raw) < len(plain) / 3
    assert _without_uptime(gzip.decompress(raw)) == _without_uptime(plain)
    assert json.loads(plain)["pools"]["pool-03-x86_64"]["ready"] == 1

    small, body = _get(service.port, "/healthcheck", {"Accept-Encoding": "gzip"})
    assert small.getheader("Content-Encoding") is None
    assert json.loads(body) == {"ok": True}
