"""Fixtures that run the real ``vmpooler`` command as a subprocess and talk to it over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import RedisServer, _free_port

CONFIG_TEMPLATE = """
:config:
  api_workers: {workers}
:redis:
  url: {redis_url}
:dns_configs:
  :example:
    dns_class: dynamic-dns
    domain: example.com
:pools:
{pools}
"""


class Service:
    """A running ``vmpooler`` process tree (supervisor + children)."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log
        self.base = f"http://127.0.0.1:{port}"

    def url(self, path: str) -> str:
        return self.base + path

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


def pool_yaml(pools: dict[str, int]) -> str:
    return "\n".join(
        f"  - name: {name}\n    template: templates/{name}\n    size: {size}\n    dns_plugin: example"
        for name, size in pools.items()
    )


@pytest.fixture
def start_service(
    redis_server: RedisServer, redis_url: str, tmp_path: Path
) -> Iterator[Callable[..., Service]]:
    """Start ``vmpooler api|manager`` on a config using the test Redis DB; stopped at teardown."""
    started: list[Service] = []

    def start(pools: dict[str, int], *components: str, workers: int = 2, extra: str = "") -> Service:
        config = tmp_path / "vmpooler.yaml"
        config.write_text(
            CONFIG_TEMPLATE.format(workers=workers, redis_url=redis_url, pools=pool_yaml(pools)) + extra
        )
        port = _free_port()
        log = tmp_path / f"vmpooler-{len(started)}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("VMPOOLER_")}
        proc = subprocess.Popen(
            [sys.executable, "-m", "vmpooler", *components, "--config", str(config),
             "--bind", "127.0.0.1", "--port", str(port)],
            stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
        )
        service = Service(proc, port, log)
        started.append(service)
        deadline = time.monotonic() + 20
        while True:
            try:
                if requests.get(service.url("/healthcheck"), timeout=1).status_code == 200:
                    return service
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"vmpooler did not come up:\n{log.read_text()}")
            time.sleep(0.1)

    yield start
    for service in started:
        service.stop()
