"""VSphereProvider when vCenter fails: wrong credentials, an untrusted certificate, a simulator killed
mid-operation, a frozen one, a restarted one, an exhausted session pool. Every failure is a clear
``ProviderError`` within the configured timeouts; nothing hangs and nothing crashes the caller."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import pytest

from tests.integration.providers.conftest import MakeProvider, pool_spec
from tests.integration.providers.vcsim import Site, Vcsim, prepare_site, wait_until
from vmpooler.errors import ProviderError, ProviderTimeout, ProviderUnavailable
from vmpooler.providers.vsphere.values import CredentialsRejected

pytestmark = pytest.mark.integration

StartVcsim = Callable[..., Vcsim]


def elapsed(call: Callable[[], object]) -> tuple[float, BaseException | None]:
    started = time.monotonic()
    try:
        call()
    except BaseException as exc:
        return time.monotonic() - started, exc
    return time.monotonic() - started, None


def test_wrong_credentials_are_a_clear_permanent_error_without_hammering(
    make_provider: MakeProvider, site: Site, vcsim: Vcsim, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    provider = make_provider([pool_spec(site, "creds")], password="wrong", retry_factor=30)  # no raise
    logged = f"vCenter {vcsim.server} rejected the user name or password"
    assert wait_until(lambda: logged in caplog.text), "start() did not report the rejected login"
    with pytest.raises(CredentialsRejected, match=f"vCenter {vcsim.server} rejected") as caught:
        provider.list_vms("creds")
    assert caught.value.transient is False and isinstance(caught.value, ProviderUnavailable)
    assert "next connect attempt in" in str(caught.value)  # no second login inside the back-off window
    took, error = elapsed(lambda: provider.create_vm("creds", "vm-creds"))
    assert isinstance(error, CredentialsRejected) and took < 0.5


def test_an_untrusted_certificate_is_named(make_provider: MakeProvider, site: Site) -> None:
    provider = make_provider([pool_spec(site, "tls")], insecure=False)
    with pytest.raises(ProviderUnavailable, match=r"TLS certificate not trusted.*insecure: true") as caught:
        provider.list_vms("tls")
    assert caught.value.transient is False


def test_simulator_killed_mid_create(own_vcsim: StartVcsim, make_provider: MakeProvider) -> None:
    sim = own_vcsim("-method-delay", "PowerOnVM_Task=5000")  # create_vm's last call: power-on
    site = prepare_site(sim)
    provider = make_provider([pool_spec(site, "killed")], sim=sim, create_folders=True, vsphere_timeout=20)
    errors: list[BaseException | None] = []
    thread = threading.Thread(
        target=lambda: errors.append(elapsed(lambda: provider.create_vm("killed", "vm-k"))[1])
    )
    thread.start()
    time.sleep(0.5)  # the power-on call is in flight
    started = time.monotonic()
    sim.kill()
    thread.join(10)
    assert not thread.is_alive() and time.monotonic() - started < 5
    assert isinstance(errors[0], ProviderUnavailable), errors
    took, error = elapsed(lambda: provider.list_vms("killed"))
    assert isinstance(error, ProviderUnavailable) and took < 2
    assert str(sim.port) in str(error)


def test_a_frozen_vcenter_times_out_then_recovers(own_vcsim: StartVcsim, make_provider: MakeProvider) -> None:
    sim = own_vcsim()
    site = prepare_site(sim)
    provider = make_provider([pool_spec(site, "frozen")], sim=sim, create_folders=True, vsphere_timeout=1.5)
    provider.create_vm("frozen", "vm-f")
    sim.freeze()
    try:
        took, error = elapsed(lambda: provider.list_vms("frozen"))
        assert isinstance(error, ProviderTimeout) and "did not answer" in str(error)
        assert 1.0 < took < 4.0
    finally:
        sim.thaw()
    assert [info.name for info in provider.list_vms("frozen")] == ["vm-f"]  # a fresh session


def test_a_restarted_vcenter_is_reconnected_transparently(
    own_vcsim: StartVcsim, make_provider: MakeProvider, vcsim_binary: str
) -> None:
    first = own_vcsim()
    site = prepare_site(first)
    provider = make_provider([pool_spec(site, "restart")], sim=first, create_folders=True)
    provider.create_vm("restart", "vm-r")
    first.stop()
    second = own_vcsim("-l", f"127.0.0.1:{first.port}")  # same address, new process: old sessions are void
    prepare_site(second)
    assert provider.list_vms("restart") == []  # no error: the dead session was replaced on the spot
    assert provider.create_vm("restart", "vm-r2").powerstate == "PoweredOn"


def test_an_exhausted_session_pool_times_out(make_provider: MakeProvider, site: Site) -> None:
    provider = make_provider([pool_spec(site, "busy")], connection_pool_size=1, connection_pool_timeout=0.2)
    with provider._sessions.lease():
        took, error = elapsed(lambda: provider.list_vms("busy"))
    assert isinstance(error, ProviderTimeout) and "no free session" in str(error) and took < 1
    assert provider.list_vms("busy") == []


def test_calls_before_start_and_after_stop_are_unavailable(make_provider: MakeProvider, site: Site) -> None:
    provider = make_provider([pool_spec(site, "life")], start=False)
    with pytest.raises(ProviderUnavailable, match="not running"):
        provider.list_vms("life")
    provider.start()
    assert provider.list_vms("life") == []
    provider.stop()
    with pytest.raises(ProviderError):
        provider.get_vm("life", "x")
