"""Fixtures for the vSphere provider against govmomi's simulator: one simulator per test module.

When the simulator cannot be built (no Go, no govmomi sources) every test here errors with the reason:
they never skip silently. ``scripts/lib.sh`` installs both on CI machines.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.providers.vcsim import CLUSTER, DATASTORE, Site, Vcsim, build, prepare_site
from vmpooler.providers.base import PoolSpec
from vmpooler.providers.vsphere import VSphereProvider, VSphereSettings

_instances = itertools.count(1)


@pytest.fixture(scope="session")
def vcsim_binary() -> str:
    return build()


@pytest.fixture(scope="module")
def vcsim(vcsim_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Vcsim]:
    sim = Vcsim(vcsim_binary, tmp_path_factory.mktemp("vcsim")).start()
    yield sim
    sim.stop()


@pytest.fixture(scope="module")
def site(vcsim: Vcsim) -> Site:
    return prepare_site(vcsim)


def pool_spec(site: Site, name: str, **options: Any) -> PoolSpec:
    """A pool in folder ``vmpooler/<name>`` on the site's template and cluster; ``options`` override."""
    domain = options.pop("domain", None)
    clone_target = options.pop("clone_target", CLUSTER)
    template = options.pop("template", site.template)
    opts = {"folder": f"vmpooler/{name}", "datastore": DATASTORE, **options}
    return PoolSpec(
        name=name, template=template, size=1, domain=domain, clone_target=clone_target, options=opts
    )


MakeProvider = Callable[..., VSphereProvider]


@pytest.fixture
def make_provider(vcsim: Vcsim) -> Iterator[MakeProvider]:
    """Build and start providers: ``make(pools, sim=None, start=True, **options)``; stopped at teardown."""
    made: list[VSphereProvider] = []

    def make(
        pools: list[PoolSpec], sim: Vcsim | None = None, start: bool = True, **options: Any
    ) -> VSphereProvider:
        settings = VSphereSettings.from_options((sim or vcsim).options(**options), instance="vsphere")
        provider = VSphereProvider(f"vsphere{next(_instances)}", settings, {p.name: p for p in pools})
        if start:
            provider.start()
        made.append(provider)
        return provider

    yield make
    for provider in made:
        provider.stop()


@pytest.fixture
def own_vcsim(vcsim_binary: str, tmp_path: Path) -> Iterator[Callable[..., Vcsim]]:
    """Simulators of a test's own (for tests that kill or freeze them); stopped at teardown."""
    started: list[Vcsim] = []

    def start(*args: str) -> Vcsim:
        sim = Vcsim(vcsim_binary, tmp_path / f"vcsim{len(started)}", *args).start()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()
