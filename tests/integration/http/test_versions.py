"""The older response shapes under ``/api/v1`` and ``/api/v2``."""

from __future__ import annotations

import json

import pytest

from tests.integration.http.conftest import CENTOS, DEB, NODOMAIN, add_ready, add_running, dump
from vmpooler import keys

pytestmark = pytest.mark.integration


def test_v1_checkout_gives_short_names_and_a_domain(api, redis):
    add_ready(redis, DEB, "d1", "d2")
    add_ready(redis, CENTOS, "c1")
    resp = api.post("/api/v1/vm", body=json.dumps({DEB: 2, "centos": 1}))
    assert resp.status_code == 200
    body = resp.json
    assert sorted(body[DEB]["hostname"]) == ["d1", "d2"]
    assert body == {
        "ok": True,
        DEB: {"hostname": body[DEB]["hostname"]},
        "centos": {"hostname": "c1"},
        # v1 had one global domain; with a domain per pool, that of the first pool requested is given
        "domain": "example.com",
    }
    assert redis.scard(keys.running_set(DEB)) == 2


def test_v1_checkout_of_pools_without_domain_has_no_domain_key(api, redis):
    add_ready(redis, NODOMAIN, "n1")
    resp = api.post(f"/api/v1/vm/{NODOMAIN}")
    assert resp.json == {"ok": True, NODOMAIN: {"hostname": "n1"}}


def test_v2_checkout_gives_fqdns_and_no_domain_key(api, redis):
    add_ready(redis, DEB, "d1")
    add_ready(redis, CENTOS, "c1")
    resp = api.post(f"/api/v2/vm/{DEB}+centos")
    assert resp.status_code == 200
    assert resp.json == {
        "ok": True,
        DEB: {"hostname": "d1.example.com"},
        "centos": {"hostname": "c1.other.example.net"},
    }


@pytest.mark.parametrize("version", [1, 2])
def test_v1_v2_checkout_keep_the_same_rules(api, redis, version):
    add_ready(redis, DEB, "d1")
    before = dump(redis)
    assert api.post(f"/api/v{version}/vm/{DEB}+{DEB}").status_code == 503
    assert api.post(f"/api/v{version}/vm/nosuchpool").status_code == 404
    assert api.post(f"/api/v{version}/vm", body=b"").status_code == 404
    assert dump(redis) == before


def test_v1_get_vm_has_domain(api, redis):
    add_running(redis, DEB, "d1", checkout="2026-11-21 09:00:00 +0000")
    resp = api.get("/api/v1/vm/d1.example.com")
    assert resp.status_code == 200
    assert resp.json == {
        "ok": True,
        "d1": {
            "template": DEB,
            "lifetime": 12,
            "running": 1.0,
            "remaining": 11.0,
            "start_time": "2026-11-21T09:00:00+00:00",
            "end_time": "2026-11-21T21:00:00+00:00",
            "state": "running",
            "ip": "",
            "domain": "example.com",
        },
    }


@pytest.mark.parametrize("version", [2, 3])
def test_v2_v3_get_vm_has_fqdn(api, redis, version):
    add_ready(redis, CENTOS, "c1")
    body = api.get(f"/api/v{version}/vm/c1").json
    assert body["c1"]["fqdn"] == "c1.other.example.net"
    assert "domain" not in body["c1"]
    assert "domain" not in body


@pytest.mark.parametrize("version", [1, 2])
def test_v1_v2_do_not_validate_hostnames(api, version):
    resp = api.get(f"/api/v{version}/vm/bad_name")
    assert resp.status_code == 404
    assert resp.json == {"ok": False}


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("raw", [b'{"lifetime": ', b"[1]"])
def test_v1_v2_put_with_invalid_json_is_a_bare_400(api, redis, version, raw):
    add_running(redis, DEB, "d1")
    before = dump(redis)
    resp = api.put(f"/api/v{version}/vm/d1", body=raw)
    assert resp.status_code == 400
    assert resp.json == {"ok": False}
    assert dump(redis) == before


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("value", [0, -3, "abc"])
def test_v1_v2_lifetime_message(api, redis, version, value):
    add_running(redis, DEB, "d1")
    before = dump(redis)
    resp = api.put(f"/api/v{version}/vm/d1", body=json.dumps({"lifetime": value}))
    assert resp.status_code == 400
    assert resp.json == {
        "ok": False,
        "failure": [f"You provided a lifetime ({value}) but you must provide a positive number."],
    }
    assert dump(redis) == before


@pytest.mark.parametrize("version", [1, 2])
def test_v1_v2_put_lifetime(api, redis, version):
    add_running(redis, DEB, "d1")
    resp = api.put(f"/api/v{version}/vm/d1", body=json.dumps({"lifetime": "30"}))
    assert resp.status_code == 200
    assert resp.json == {"ok": True}
    assert redis.hget(keys.vm_hash("d1"), "lifetime") == "30"


@pytest.mark.parametrize("version", [1, 2])
def test_v1_v2_status_and_delete(api, redis, version):
    add_running(redis, DEB, "d1")
    assert api.get(f"/api/v{version}/totalrunning").json == {"running": 1}
    assert api.delete(f"/api/v{version}/vm/d1").json == {"ok": True}
    assert redis.smembers(keys.completed_set(DEB)) == {"d1"}
