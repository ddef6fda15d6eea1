"""Secrets stay secret: the whole service (supervisor, API workers, provider child) with DEBUG logging and
a config holding secrets, driven over HTTP through the token routes, the VM routes, the config and status
routes and their error paths; then no response (body or headers) holds a secret, and no log line holds a
secret or the token.

The secrets: the LDAP service account's password (LDAP against the suite's slapd, search-then-bind over
StartTLS), the password of a Redis started with ``--requirepass``, and the user's password (and its
Basic header). The dummy provider has no password key, so no provider password is configured. The
token is expected in the bodies of the token routes, never in a log line. A wrong Redis password (the
service then refuses to start) is not printed either.

Every process logs at DEBUG through ``VMPOOLER_LOG_LEVEL``: ``--log-level`` sets the supervisor's level
only (its children are spawned and read the environment), so ``start_service`` (which drops every
``VMPOOLER_*`` variable) is not used here.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
import requests
import yaml

from tests.conftest import redis_server_binary
from tests.support.service import BOOT_TIMEOUT, Service, free_port
from tests.support.slapd import SERVICE, USERS, Slapd, SlapdError, running_slapd
from tests.support.waiting import poll, wait_for

pytestmark = pytest.mark.acceptance

REDIS_PASSWORD = "redis-Pa55-f7c2e9"  # nothing else in the log or a body could hold it by chance
POOL = "debian-12"


@pytest.fixture(scope="module")
def slapd() -> Iterator[Slapd]:
    try:
        with running_slapd() as server:
            yield server
    except SlapdError as err:
        pytest.fail(f"this test needs a slapd, which did not start: {err}", pytrace=False)


@pytest.fixture
def secret_redis() -> Iterator[int]:
    """A redis-server that requires ``REDIS_PASSWORD``; its port."""
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="vmpooler-test-redis-auth-")
    command = [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1"]
    command += ["--requirepass", REDIS_PASSWORD, "--save", "", "--appendonly", "no", "--dir", workdir]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis_lib.Redis(port=port, password=REDIS_PASSWORD)
    try:
        wait_for(lambda: _pings(client), 10, "the password-protected redis-server")
        yield port
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def _pings(client: redis_lib.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis_lib.ConnectionError:
        return False


def _config(slapd: Slapd, redis_port: int, redis_password: str = REDIS_PASSWORD) -> str:
    ldap = slapd.ldap_settings(
        encryption={"method": "start_tls", "tls_options": {"ca_file": str(slapd.ca_file)}},
        service_account_hash={"user_dn": SERVICE.dn, "password": SERVICE.password},
    )
    auth = textwrap.indent(yaml.safe_dump({"provider": "ldap", "ldap": ldap}, sort_keys=False), "  ")
    return f"""
:config:
  api_workers: 1
  request_logger: true
:redis:
  server: 127.0.0.1
  port: {redis_port}
  password: {redis_password}
:pools:
  - name: {POOL}
    template: templates/{POOL}
    size: 1
:auth:
{auth}"""


def _start_debug_service(config: Path, log: Path) -> Service:
    """``vmpooler`` (API and manager) with DEBUG logging in every process (``VMPOOLER_LOG_LEVEL``: the
    children read the level from the environment)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VMPOOLER_")}
    env["VMPOOLER_LOG_LEVEL"] = "DEBUG"
    command = [sys.executable, "-m", "vmpooler", "--config", str(config), "--log-level", "DEBUG"]
    command += ["--bind", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=config.parent)
    service = Service(proc, port, log)
    if not poll(lambda: not service.alive() or service.healthy(), BOOT_TIMEOUT, 0.1) or not service.alive():
        service.stop()
        pytest.fail(f"vmpooler did not come up:\n{log.read_text(errors='replace')}")
    return service


class Recorder:
    """Sends requests to the service and keeps every response's status, headers and body."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.responses: list[tuple[str, int, str]] = []

    def __call__(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        resp = requests.request(method, self.service.url(path), timeout=30, **kwargs)
        headers = "\n".join(f"{k}: {v}" for k, v in resp.headers.items())
        self.responses.append((f"{method} {path}", resp.status_code, headers + "\n\n" + resp.text))
        return resp


def test_no_secret_in_any_response_or_log_line(slapd: Slapd, secret_redis: int, tmp_path: Path) -> None:
    config = tmp_path / "vmpooler.yaml"
    config.write_text(_config(slapd, secret_redis))
    log = tmp_path / "vmpooler.log"
    service = _start_debug_service(config, log)
    user = USERS["carol"]
    call = Recorder(service)
    try:
        resp = call("POST", "/api/v3/token", auth=(user.name, user.password))
        assert resp.status_code == 200, resp.text
        token = resp.json()["token"]
        headers = {"X-AUTH-TOKEN": token}
        assert token in call("GET", "/api/v3/token", auth=(user.name, user.password)).json()
        assert call("GET", f"/api/v3/token/{token}").status_code == 200

        def checked_out() -> str | None:
            resp = call("POST", f"/api/v3/vm/{POOL}", headers=headers)
            return resp.json()[POOL]["hostname"] if resp.status_code == 200 else None

        vm = wait_for(checked_out, 20, "a VM checked out with the token")
        assert call("PUT", f"/api/v3/vm/{vm}", headers=headers, json={"lifetime": 3}).status_code == 200
        assert call("GET", f"/api/v3/vm/{vm}", headers=headers).status_code == 200
        assert call("DELETE", f"/api/v3/vm/{vm}", headers=headers).status_code == 200
        for path in ("/api/v3/config", "/api/v3/status", "/api/v3/status?view=full", "/api/v3/totalrunning"):
            assert call("GET", path).status_code == 200, path
        # error paths
        assert call("POST", "/api/v3/token", auth=(user.name, user.password + "x")).status_code == 401
        assert call("POST", "/api/v3/token", auth=("*)(uid=*", user.password)).status_code == 401
        assert call("POST", "/api/v3/token").status_code == 401
        assert call("POST", f"/api/v3/vm/{POOL}", headers={"X-AUTH-TOKEN": token[::-1]}).status_code == 401
        assert call("GET", f"/api/v3/token/{token}/nothing").status_code == 404
        assert call("GET", f"/api/v1/token/{token}?x=1").status_code == 200
        assert call("GET", "/nothing").status_code == 404
        assert (
            call("DELETE", f"/api/v3/token/{token[::-1]}", auth=(user.name, user.password)).status_code == 404
        )
        with slapd.stopped():
            assert call("POST", "/api/v3/token", auth=(user.name, user.password)).status_code == 503
        assert call("DELETE", f"/api/v3/token/{token}", auth=(user.name, user.password)).status_code == 200
    finally:
        service.stop()

    basic_header = base64.b64encode(f"{user.name}:{user.password}".encode()).decode()
    secrets = {
        "the LDAP service account's password": SERVICE.password,
        "the Redis password": REDIS_PASSWORD,
        "the user's password": user.password,
        "the user's Basic credentials": basic_header,
    }
    for request, status, text in call.responses:
        for what, secret in secrets.items():
            assert secret not in text, f"{what} in the response to {request} ({status}):\n{text}"
    lines = log.read_text(errors="replace").splitlines()
    assert any(" DEBUG " in line for line in lines), "no DEBUG line: the log level did not apply"
    assert any("ldap: carol authenticated" in line for line in lines)  # the API workers' lines are here
    for what, secret in {**secrets, "the token": token}.items():
        leaks = [line for line in lines if secret in line]
        assert not leaks, f"{what} in {len(leaks)} log lines, e.g.:\n" + "\n".join(leaks[:5])


def test_a_wrong_redis_password_is_not_logged_either(slapd: Slapd, secret_redis: int, tmp_path: Path) -> None:
    wrong = "wrong-" + REDIS_PASSWORD  # a mistyped password is as secret as the right one
    config = tmp_path / "vmpooler.yaml"
    config.write_text(_config(slapd, secret_redis, wrong))
    env = {k: v for k, v in os.environ.items() if not k.startswith("VMPOOLER_")}
    env["VMPOOLER_LOG_LEVEL"] = "DEBUG"
    command = [sys.executable, "-m", "vmpooler", "--config", str(config), "--log-level", "DEBUG"]
    command += ["--bind", "127.0.0.1", "--port", str(free_port())]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert done.returncode != 0  # it does not start on a Redis that refuses it
    assert "redis unavailable: invalid username-password pair" in done.stderr
    leaks = [line for line in (done.stdout + done.stderr).splitlines() if wrong in line]
    assert not leaks, "the Redis password in the output:\n" + "\n".join(leaks[:5])
