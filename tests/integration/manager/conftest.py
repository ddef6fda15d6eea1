"""Fixtures running a provider's actor tree in-process against the test redis-server."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator

import pytest

from vmpooler.config import Config, load_config_text
from vmpooler.providers.base import Provider
from vmpooler.store import Store, connect
from vmpooler.worker import Manager, start_manager

BASE = """
:config:
  task_limit: {task_limit}
  check_loop_delay_min: 0.1
  check_loop_delay_max: 0.5
  vm_checktime: {vm_checktime}
  prefix: "t-"
{extra_config}
:providers:
  :dummy:
    ready_delay: 0
{provider_options}
:dns_configs:
  example:
    dns_class: dynamic-dns
    domain: example.com
:pools:
{pools}
"""


def make_config(
    pools: dict[str, int],
    *,
    task_limit: int = 20,
    vm_checktime: float = 0.01,
    extra_config: str = "",
    provider_options: str = "",
    pool_extra: str = "",
) -> Config:
    pool_yaml = "\n".join(
        f"  - name: {name}\n    template: templates/{name}\n    size: {size}\n    provider: dummy\n"
        f"    dns_plugin: example\n{pool_extra}"
        for name, size in pools.items()
    )
    return load_config_text(
        BASE.format(
            task_limit=task_limit,
            vm_checktime=vm_checktime,
            extra_config=extra_config,
            provider_options=provider_options,
            pools=pool_yaml,
        ),
        env={},
    )


@pytest.fixture
def store(redis_url: str) -> Iterator[Store]:
    s = Store(connect(redis_url, max_connections=50))
    yield s
    s.close()


@pytest.fixture
def run_manager(store: Store) -> Iterator[Callable[..., Manager]]:
    """Start ``start_manager`` for the dummy provider; every started manager is stopped at teardown."""
    started: list[Manager] = []

    def run(config: Config, seed: int = 1, provider: Provider | None = None) -> Manager:
        manager = start_manager(config, "dummy", store, rng=random.Random(seed), provider=provider)
        started.append(manager)
        return manager

    yield run
    for manager in started:
        manager.stop()


@pytest.fixture
def start_pool_manager(store: Store) -> Iterator[Callable[..., Manager]]:
    """Like ``run_manager``, with every ``start_manager`` keyword (``clock=`` takes a fake wall clock).

    Every started manager is stopped at teardown."""
    started: list[Manager] = []

    def run(
        config: Config,
        *,
        seed: int = 1,
        provider: Provider | None = None,
        clock: Callable[[], float] = time.time,
    ) -> Manager:
        manager = start_manager(
            config, "dummy", store, rng=random.Random(seed), provider=provider, clock=clock
        )
        started.append(manager)
        return manager

    yield run
    for manager in started:
        manager.stop()
