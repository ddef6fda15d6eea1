"""The shared provider contract, run against VSphereProvider on govmomi's vSphere simulator.

``ready_check: poweron``: the simulator has no guest network, so "ready" is "powered on".
"""

from __future__ import annotations

import pytest

from tests.integration.providers.conftest import MakeProvider, pool_spec
from tests.integration.providers.vcsim import Site
from tests.unit.providers.contract import ProviderContract
from vmpooler.providers.base import Provider

pytestmark = pytest.mark.integration


class TestVSphereContract(ProviderContract):
    ready_timeout = 10.0

    @pytest.fixture
    def provider(self, make_provider: MakeProvider, site: Site) -> Provider:
        return make_provider([pool_spec(site, self.pool)], create_folders=True, ready_check="poweron")
