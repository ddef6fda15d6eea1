"""Fixtures that run the real ``vmpooler`` command as a subprocess and talk to it over HTTP."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

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
            [
                sys.executable,
                "-m",
                "vmpooler",
                *components,
                "--config",
                str(config),
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
        )
        service = Service(proc, port, log)
        started.append(service)
        deadline = time.monotonic() + 20
        while True:
            try:
                if requests.get(service.url("/healthcheck"), timeout=1).status_code == 200:
                    return service
            except requests.RequestException:  # not listening yet, or too busy booting to answer
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"vmpooler did not come up:\n{log.read_text()}")
            time.sleep(0.1)

    yield start
    for service in started:
        service.stop()


# -- a service on a whole config of the test's own, and its children ------------------------------

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.fixture
def start_service_yaml(tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """Start ``vmpooler [components]`` on the complete config ``yaml_text``; stopped at teardown.

    The text is used as it is: build it with the ``redis_url`` and ``tmp_path`` fixtures (own
    ``:providers:`` sections, inventory files, chaos knobs). Unlike ``start_service`` it does not wait
    for the HTTP API when only ``manager`` runs.
    """
    started: list[Service] = []

    def start(
        yaml_text: str, *components: str, port: int | None = None, new_session: bool = False
    ) -> Service:
        config = tmp_path / f"vmpooler-yaml-{len(started)}.yaml"
        config.write_text(yaml_text)
        port = port or _free_port()
        log = tmp_path / f"vmpooler-yaml-{len(started)}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("VMPOOLER_")}
        command = [sys.executable, "-m", "vmpooler", *components, "--config", str(config)]
        command += ["--bind", "127.0.0.1", "--port", str(port)]
        proc = subprocess.Popen(  # new_session: a process group of its own, for os.killpg
            command,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
            start_new_session=new_session,
        )
        service = Service(proc, port, log)
        started.append(service)
        with_api = not components or "api" in components
        deadline = time.monotonic() + 20
        while True:
            if with_api:
                try:
                    if requests.get(service.url("/healthcheck"), timeout=1).status_code == 200:
                        return service
                except requests.RequestException:  # not listening yet, or too busy booting to answer
                    pass
            elif "started provider-" in log.read_text(errors="replace"):
                return service
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"vmpooler did not come up:\n{log.read_text(errors='replace')}")
            time.sleep(0.1)

    yield start
    for service in started:
        service.stop()


_STARTED = re.compile(r"vmpooler\.supervisor: started (\S+) \(pid (\d+)\)")


def child_pids(service: Service) -> dict[str, int]:
    """Child name (``api-1``, ``provider-dummy1``, …) → pid of its latest start, from the service log."""
    return {name: int(pid) for name, pid in _STARTED.findall(service.log.read_text(errors="replace"))}


def is_child_alive(service: Service, pid: int) -> bool:
    """True while ``pid`` runs (not a zombie) as a child of the service's supervisor."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state, ppid = stat.rsplit(")", 1)[1].split()[:2]
    return state != "Z" and int(ppid) == service.proc.pid


def load_script(name: str) -> ModuleType:
    """Import ``scripts/<name>.py`` (scripts are not a package) as module ``vmpooler_script_<name>``."""
    module_name = f"vmpooler_script_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module
