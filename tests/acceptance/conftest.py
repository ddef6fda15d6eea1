"""Fixtures that run the real ``vmpooler`` command as a subprocess and talk to it over HTTP.

Starting, waiting and stopping are ``tests.support.service``'s, shared with the chaos run.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import RedisServer
from tests.support.service import Service, ServiceError, is_child_of
from tests.support.service import start_service as launch

__all__ = ["CONFIG_TEMPLATE", "Service", "child_pids", "is_child_alive", "pool_yaml"]

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


def pool_yaml(pools: dict[str, int]) -> str:
    return "\n".join(
        f"  - name: {name}\n    template: templates/{name}\n    size: {size}\n    dns_plugin: example"
        for name, size in pools.items()
    )


def _started(config: Path, log: Path, *components: str, port: int | None, new_session: bool) -> Service:
    """``start_service``, failing the test when the service does not come up."""
    try:
        return launch(config, log, *components, port=port, new_session=new_session)
    except ServiceError as exc:
        pytest.fail(str(exc))


@pytest.fixture
def start_service(
    redis_server: RedisServer, redis_url: str, tmp_path: Path
) -> Iterator[Callable[..., Service]]:
    """Start ``vmpooler api|manager`` on a config using the test Redis DB; stopped at teardown."""
    started: list[Service] = []

    def start(
        pools: dict[str, int], *components: str, workers: int = 2, extra: str = "", settings: str = ""
    ) -> Service:
        """``settings``: more ``:config:`` lines (``"max_checkout_wait: 1"``); ``extra``: more sections."""
        text = CONFIG_TEMPLATE.format(workers=workers, redis_url=redis_url, pools=pool_yaml(pools))
        lines = "".join(f"  {line}\n" for line in settings.splitlines() if line.strip())
        config = tmp_path / "vmpooler.yaml"
        config.write_text(text.replace(":redis:\n", lines + ":redis:\n", 1) + extra)
        log = tmp_path / f"vmpooler-{len(started)}.log"
        started.append(_started(config, log, *components, port=None, new_session=False))
        return started[-1]

    yield start
    for service in started:
        service.stop()


@pytest.fixture
def start_service_yaml(tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """Start ``vmpooler [components]`` on the complete config ``yaml_text``; stopped at teardown.

    The text is used as it is: build it with the ``redis_url`` and ``tmp_path`` fixtures (own
    ``:providers:`` sections, inventory files, chaos knobs). When only ``manager`` runs it waits for a
    provider child to boot instead of the HTTP API.
    """
    started: list[Service] = []

    def start(
        yaml_text: str, *components: str, port: int | None = None, new_session: bool = False
    ) -> Service:
        config = tmp_path / f"vmpooler-yaml-{len(started)}.yaml"
        config.write_text(yaml_text)
        log = tmp_path / f"vmpooler-yaml-{len(started)}.log"
        started.append(_started(config, log, *components, port=port, new_session=new_session))
        return started[-1]

    yield start
    for service in started:
        service.stop()


# -- a service's children ----------------------------------------------------------------------------

_STARTED = re.compile(r"vmpooler\.supervisor: started (\S+) \(pid (\d+)\)")


def child_pids(service: Service) -> dict[str, int]:
    """Child name (``api-1``, ``provider-dummy1``, …) → pid of its latest start, from the service log."""
    return {name: int(pid) for name, pid in _STARTED.findall(service.log.read_text(errors="replace"))}


def is_child_alive(service: Service, pid: int) -> bool:
    """True while ``pid`` runs (not a zombie) as a child of the service's supervisor."""
    return is_child_of(pid, service.proc.pid)
