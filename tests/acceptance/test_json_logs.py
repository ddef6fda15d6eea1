"""``:config: log_format: json``: the real service (supervisor, API workers, a provider process) writes
nothing but JSON objects, one per line, through a checkout, a return, a hostile URL, a provider killed
and restarted, and the stop."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import wait_for
from vmpooler import keys

pytestmark = pytest.mark.acceptance

CONFIG = """
:config:
  api_workers: 2
  log_format: json
  request_logger: true
  check_loop_delay_min: 0.2
  check_loop_delay_max: 1
:redis:
  url: {redis_url}
:providers:
  :dummy1:
    provider_class: dummy
:pools:
  - name: a
    template: templates/a
    size: 2
    provider: dummy1
"""
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def provider_pid(service: Any) -> int | None:
    pids = [pid for pid, title in service.children().items() if title.startswith("vmpooler: provider")]
    return pids[0] if pids else None


def test_every_process_writes_only_json_lines(start_service_yaml: Any, redis_url: str, redis: Any) -> None:
    service = start_service_yaml(CONFIG.format(redis_url=redis_url))
    wait_for(lambda: redis.scard(keys.ready_set("a")) == 2, 30, "pool a full")
    vm = requests.post(service.url("/api/v3/vm/a"), timeout=10).json()["a"]["hostname"]
    assert requests.delete(service.url(f"/api/v3/vm/{vm}"), timeout=10).ok
    assert requests.get(service.url("/api/v3/vm/x%0AINFO%20forged%20line"), timeout=10).status_code in (
        400,
        404,
    )
    first = wait_for(lambda: provider_pid(service), 20, "the provider process")
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: provider_pid(service) not in (None, first), 20, "the provider restarted")
    wait_for(
        lambda: "provider dummy1 running" in service.log.read_text().split(str(first))[-1], 20, "it runs"
    )
    assert service.stop() == 0

    lines = service.log.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON document ...
    assert all(isinstance(r, dict) for r in records)  # ... and an object
    for record in records:
        assert {"time", "level", "logger", "message", "process", "thread"} <= record.keys(), record
        assert TIME.fullmatch(record["time"]), record["time"]
        assert record["level"] in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
    processes = {r["process"] for r in records}
    assert {"MainProcess", "api-1", "api-2", "provider-dummy1"} <= processes
    assert any(r.get("pool") == "a" and r.get("vm") == vm for r in records)  # the VM actor's context
    assert not [r for r in records if r["message"].startswith("[")]  # fields, not a message prefix
    assert any(r.get("provider") == "dummy1" for r in records)
    assert any("x\nINFO forged line" in r["message"] for r in records)  # escaped in JSON, one line
    assert any(r["level"] == "WARNING" and f"(pid {first}) exited" in r["message"] for r in records)
    assert records[-1]["message"] == "supervisor stopped (exit code 0)"


def test_an_unknown_log_format_stops_the_start(tmp_path: Path, redis_url: str) -> None:
    config = tmp_path / "vmpooler.yaml"
    config.write_text(CONFIG.format(redis_url=redis_url).replace("log_format: json", "log_format: xml"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("VMPOOLER_")}
    result = subprocess.run(
        [sys.executable, "-m", "vmpooler", "manager", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 3, result.stderr
    assert ":config:.log_format: must be text or json, got 'xml'" in result.stderr  # check-config sees it too
