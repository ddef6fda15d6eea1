"""Children die with their supervisor, however it dies, and a new start finds the port free."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.acceptance.conftest import Service, child_pids
from tests.conftest import TIMEOUT_SCALE

pytestmark = pytest.mark.acceptance

CONFIG = """
:config:
  api_workers: 2
:redis:
  url: '{redis_url}'
:providers:
  :dummy:
    filename: '{inventory}'
:pools:
  - {{name: a, template: t/a, size: 2, provider: dummy}}
"""


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its reaper has finished running)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sigkill_of_the_supervisor_takes_every_child_along(
    start_service_yaml: Callable[..., Service], redis_url: str, tmp_path: Path
) -> None:
    text = CONFIG.format(redis_url=redis_url, inventory=tmp_path / "dummy.yaml")
    service = start_service_yaml(text)
    children = child_pids(service)
    assert set(children) == {"api-1", "api-2", "provider-dummy"}
    assert all(_alive(pid) for pid in children.values())
    os.kill(service.proc.pid, signal.SIGKILL)
    service.proc.wait(10)
    deadline = time.monotonic() + 5 * TIMEOUT_SCALE
    while any(_alive(pid) for pid in children.values()):
        assert time.monotonic() < deadline, {n: p for n, p in children.items() if _alive(p)}
        time.sleep(0.05)
    with pytest.raises(requests.ConnectionError):
        requests.get(service.url("/healthcheck"), timeout=2)
    again = start_service_yaml(text, port=service.port)  # the port is free again
    assert requests.get(again.url("/healthcheck"), timeout=5).status_code == 200
