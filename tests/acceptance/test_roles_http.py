"""Owners and admins over a real socket: the real API process refuses another user's changes with a 403
that says why, and lets the owner and an admin make them.

``:auth: provider: dummy`` needs ``VMPOOLER_DEBUG`` in the service's environment, which
``tests.support.service.start_service`` leaves out; the service is started here with it, and waited
for and stopped with the same ``Service`` helpers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.acceptance.conftest import CONFIG_TEMPLATE, pool_yaml
from tests.support.service import BOOT_TIMEOUT, Service, free_port
from tests.support.waiting import poll
from vmpooler import keys

pytestmark = pytest.mark.acceptance

AUTH = ":auth:\n  provider: dummy\n  admins: [root]\n"


@pytest.fixture
def auth_service(redis_url: str, tmp_path: Path) -> Iterator[Service]:
    """``vmpooler api`` with dummy auth, ``root`` as admin and the pool endpoints on; stopped after."""
    config = tmp_path / "vmpooler.yaml"
    text = CONFIG_TEMPLATE.format(workers=1, redis_url=redis_url, pools=pool_yaml({"deb": 2})) + AUTH
    config.write_text(text.replace(":config:\n", ":config:\n  experimental_features: true\n"))
    log = tmp_path / "vmpooler.log"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VMPOOLER_")}
    env["VMPOOLER_DEBUG"] = "1"
    command = [sys.executable, "-m", "vmpooler", "api", "--config", str(config)]
    command += ["--bind", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    service = Service(proc, port, log)
    try:
        if (
            not poll(lambda: not service.alive() or service.healthy(), BOOT_TIMEOUT, 0.1)
            or not service.alive()
        ):
            pytest.fail(f"vmpooler did not come up:\n{log.read_text(errors='replace')}")
        yield service
    finally:
        service.stop()


def _token(service: Service, user: str) -> str:
    resp = requests.post(service.url("/api/v3/token"), auth=(user, "s3cr3t"), timeout=10)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["token"])


def _call(service: Service, method: str, path: str, token: str, body: Any = None) -> requests.Response:
    return requests.request(method, service.url(path), json=body, headers={"X-AUTH-TOKEN": token}, timeout=10)


def test_owner_admin_and_another_user_over_http(auth_service, redis):
    service = auth_service
    for vm in ("deb1", "deb2"):  # what the manager would have made ready
        redis.sadd(keys.ready_set("deb"), vm)
        redis.hset(keys.vm_hash(vm), mapping={"template": "deb", "pool": "deb", "check": "x"})
    alice, bob, root = (_token(service, user) for user in ("alice", "bob", "root"))
    assert redis.hget(keys.token(root), "admin") == "true"
    checkout = _call(service, "POST", "/api/v3/vm/deb", alice)
    assert checkout.status_code == 200, checkout.text
    vm = checkout.json()["deb"]["hostname"].split(".")[0]
    why = f"vm {vm} belongs to another user; only its owner or an admin may change it"

    for method, path, body in [
        ("DELETE", f"/api/v3/vm/{vm}", None),
        ("PUT", f"/api/v3/vm/{vm}", {"tags": {"project": "bobs"}}),
        ("POST", f"/api/v3/vm/{vm}/snapshot", None),
    ]:
        resp = _call(service, method, path, bob, body)
        assert (resp.status_code, resp.json()) == (403, {"ok": False, "error": why})
    refused = requests.delete(service.url(f"/api/v3/token/{alice}"), auth=("bob", "pw"), timeout=10)
    assert refused.status_code == 403
    assert redis.exists(keys.token(alice))
    resize = _call(service, "POST", "/api/v3/config/poolsize", bob, {"deb": "3"})
    assert (resize.status_code, resize.json()) == (
        403,
        {"ok": False, "error": "only an admin may change the pool configuration"},
    )
    assert redis.sismember(keys.running_set("deb"), vm)

    assert _call(service, "PUT", f"/api/v3/vm/{vm}", root, {"lifetime": 6}).status_code == 200
    assert _call(service, "POST", "/api/v3/config/poolsize", root, {"deb": "3"}).status_code == 201
    assert _call(service, "DELETE", f"/api/v3/vm/{vm}", alice).status_code == 200
    assert redis.sismember(keys.completed_set("deb"), vm)
    assert requests.delete(service.url(f"/api/v3/token/{bob}"), auth=("root", "pw"), timeout=10).ok
