"""The pool configuration endpoints over a real socket: the real server takes a size override and shows it."""

from __future__ import annotations

import pytest

from tests.acceptance.conftest import CONFIG_TEMPLATE, pool_yaml
from vmpooler import keys

pytestmark = pytest.mark.acceptance


def test_a_size_override_round_trip(start_service_yaml, redis_url, redis):
    config = CONFIG_TEMPLATE.format(workers=1, redis_url=redis_url, pools=pool_yaml({"deb": 3, "centos": 2}))
    service = start_service_yaml(
        config.replace(":config:\n", ":config:\n  experimental_features: true\n"), "api"
    )

    assert service.call("POST", "/api/v3/config/poolsize", {"deb": "5"}) == (201, {"ok": True})
    assert redis.hgetall(keys.config_override("poolsize")) == {"deb": "5"}
    status, body = service.call("GET", "/api/v3/config")
    assert status == 200
    sizes = {entry["name"]: entry["size"] for entry in body["pool_configuration"]}
    assert sizes == {"deb": 5, "centos": 2}

    status, body = service.call("DELETE", "/api/v3/config/poolsize/deb")
    assert (status, body) == (201, {"ok": True, "pool_size_before_reset": 5, "pool_size_before_overrides": 3})
    assert service.call("POST", "/api/v1/config/poolsize", {"deb": 3}) == (200, {"ok": True})
