"""Gzip responses for clients that accept them (the original served through Rack::Deflater)."""

from __future__ import annotations

import gzip
import io
import json

import falcon
import pytest
from falcon import testing

from tests.integration.http.conftest import DEB, add_ready
from vmpooler.http.middleware import GZIP_MIN_SIZE, GzipResponses, accepts_gzip

pytestmark = pytest.mark.integration

MANY_POOLS = ":pools:\n" + "".join(
    f"  - name: pool-{i:02d}-x86_64\n    template: t/p{i}\n    size: 3\n" for i in range(60)
)


@pytest.fixture
def big_api(make_api, redis):
    add_ready(redis, "pool-01-x86_64", "v1", "v2")
    return make_api(MANY_POOLS)


def _gzip_get(api, path, accept="gzip"):
    return api.simulate_get(path, headers={"Accept-Encoding": accept})


@pytest.mark.parametrize(
    "path", ["/api/v3/status", "/api/v3/vm", "/api/v1/status", "/dashboard/stats/vmpooler/pool"]
)
def test_large_json_is_gzipped_and_decodes_to_the_same_body(big_api, path):
    plain = big_api.simulate_get(path)
    assert len(plain.content) >= GZIP_MIN_SIZE
    assert "content-encoding" not in plain.headers
    assert plain.headers["vary"] == "Accept-Encoding"  # the body depends on Accept-Encoding
    packed = _gzip_get(big_api, path)
    assert packed.status_code == 200
    assert packed.headers["content-encoding"] == "gzip"
    assert packed.headers["vary"] == "Accept-Encoding"
    assert packed.headers["content-type"] == "application/json"
    assert int(packed.headers["content-length"]) == len(packed.content)
    assert len(packed.content) < len(plain.content) / 3
    assert gzip.decompress(packed.content) == plain.content
    assert json.loads(gzip.decompress(packed.content)) == plain.json


def test_dashboard_page_is_gzipped(big_api):
    plain = big_api.simulate_get("/dashboard/")
    packed = _gzip_get(big_api, "/dashboard/")
    assert packed.headers["content-encoding"] == "gzip"
    assert packed.headers["content-type"] == plain.headers["content-type"] == "text/html; charset=utf-8"
    assert gzip.decompress(packed.content) == plain.content


def test_prometheus_text_is_gzipped(big_api):
    packed = _gzip_get(big_api, "/prometheus")
    assert packed.headers["content-encoding"] == "gzip"
    assert packed.headers["content-type"].startswith("text/plain")
    assert "vmpooler_" in gzip.decompress(packed.content).decode()


@pytest.mark.parametrize(
    ("accept", "gzipped"),
    [
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("GZIP", True),
        ("x-gzip", True),
        ("br;q=1.0, gzip;q=0.8, *;q=0.1", True),
        ("gzip;q=0.001", True),
        ("*", True),
        ("gzip;q=0", False),
        ("gzip;q=0.000", False),
        ("gzip ; q=0 , deflate", False),
        ("gzip;q=0, *", False),  # the named coding wins over *
        ("*;q=0", False),
        ("deflate, br", False),
        ("identity", False),
        ("", False),
        ("gzip;q=abc", False),  # malformed: not risked
        ("gzip;q=2", False),
    ],
)
def test_accept_encoding_q_values(big_api, accept, gzipped):
    resp = _gzip_get(big_api, "/api/v3/status", accept)
    assert resp.status_code == 200
    assert ("content-encoding" in resp.headers) is gzipped
    body = gzip.decompress(resp.content) if gzipped else resp.content
    assert json.loads(body)["status"]["ok"] is False
    assert accepts_gzip(accept) is gzipped


def test_small_responses_are_never_compressed(api, redis):
    add_ready(redis, DEB, "d1")
    checkout = api.simulate_post(f"/api/v3/vm/{DEB}", headers={"Accept-Encoding": "gzip"})
    assert checkout.status_code == 200
    vm = checkout.json[DEB]["hostname"].split(".")[0]
    for resp in (
        checkout,
        _gzip_get(api, f"/api/v3/vm/{vm}"),
        api.simulate_put(f"/api/v3/vm/{vm}", body='{"lifetime": 2}', headers={"Accept-Encoding": "gzip"}),
        api.simulate_delete(f"/api/v3/vm/{vm}", headers={"Accept-Encoding": "gzip"}),
        _gzip_get(api, "/api/v3/vm/nosuchvm"),
        _gzip_get(api, "/healthcheck"),
    ):
        assert len(resp.content) < GZIP_MIN_SIZE
        assert "content-encoding" not in resp.headers
        assert "vary" not in resp.headers
        assert resp.json["ok"] in (True, False)


# -- the middleware alone, on responses the API does not produce today -------------------------------------

BIG_TEXT = "all work and no play " * 100


class _Custom:
    def on_get(self, req: falcon.Request, resp: falcon.Response, kind: str) -> None:
        resp.content_type = falcon.MEDIA_TEXT
        if kind == "encoded":
            resp.set_header("Content-Encoding", "br")
            resp.data = BIG_TEXT.encode()
        elif kind == "stream":
            resp.stream = io.BytesIO(BIG_TEXT.encode())
        elif kind == "no-transform":
            resp.set_header("Cache-Control", "public, no-transform")
            resp.text = BIG_TEXT
        elif kind == "binary":
            resp.content_type = "application/octet-stream"
            resp.data = BIG_TEXT.encode()
        elif kind == "vary":
            resp.set_header("Vary", "Origin")
            resp.text = BIG_TEXT
        elif kind == "not-modified":
            resp.content_type = None
            resp.status = falcon.HTTP_304
            resp.text = BIG_TEXT
        elif kind == "problem":
            resp.content_type = "application/problem+json"
            resp.text = json.dumps({"detail": BIG_TEXT})
        else:
            resp.text = BIG_TEXT


@pytest.fixture
def custom() -> testing.TestClient:
    app = falcon.App(middleware=[GzipResponses()])
    app.add_route("/{kind}", _Custom())
    return testing.TestClient(app)


@pytest.mark.parametrize("kind", ["encoded", "stream", "no-transform", "binary", "not-modified"])
def test_left_alone(custom, kind):
    plain = custom.simulate_get(f"/{kind}")
    resp = custom.simulate_get(f"/{kind}", headers={"Accept-Encoding": "gzip"})
    assert resp.status_code == plain.status_code
    assert resp.headers.get("content-encoding") == ("br" if kind == "encoded" else None)
    assert resp.content == plain.content


@pytest.mark.parametrize(
    ("kind", "vary"),
    [("text", "Accept-Encoding"), ("vary", "Origin, Accept-Encoding"), ("problem", "Accept-Encoding")],
)
def test_compressed_text_kinds_and_vary_merge(custom, kind, vary):
    plain = custom.simulate_get(f"/{kind}")
    resp = custom.simulate_get(f"/{kind}", headers={"Accept-Encoding": "gzip"})
    assert resp.headers["content-encoding"] == "gzip"
    assert resp.headers["vary"] == vary
    assert int(resp.headers["content-length"]) == len(resp.content)
    assert gzip.decompress(resp.content) == plain.content
