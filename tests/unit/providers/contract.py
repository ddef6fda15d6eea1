"""The provider contract as tests: one class every provider's test module runs (STYLE bullet 10).

Use it by subclassing and overriding the ``provider`` fixture::

    class TestMyProviderContract(ProviderContract):
        @pytest.fixture
        def provider(self) -> Iterator[Provider]:
            provider = MyProvider("contract", settings, {ProviderContract.pool: PoolSpec(...)})
            provider.start()
            yield provider
            provider.stop()

The fixture yields a *started* provider that serves the pool ``ProviderContract.pool`` (and no pool
called ``ProviderContract.unknown_pool``), with no injected failures, and whose clones become ready within
``ready_timeout`` seconds.

Decisions the contract pins down (see ``vmpooler/providers/base.py``):

* A pool the provider does not serve is an error (a non-transient ``ProviderError``; ``CloneFailed``
  from ``create_vm``), never an empty inventory: the core would take an empty list to mean that all of
  the pool's VMs vanished.
* ``vm_ready`` of a VM that does not exist raises ``VMNotFound``; ``get_vm`` returns None.
* Optional methods either work or raise ``NotImplementedError``; on a missing VM they raise
  ``VMNotFound`` (or ``NotImplementedError``).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import attrs
import pytest

from vmpooler.errors import CloneFailed, ProviderError, VMNotFound
from vmpooler.model import VMInfo
from vmpooler.providers.base import Provider, ProviderSettings

__all__ = ["ProviderContract"]

_names = itertools.count(1)
_NOT_IMPLEMENTED = object()


def _optional(call: Callable[[], Any]) -> Any:
    """Run an optional provider method; NotImplementedError means "not supported" and is allowed."""
    try:
        return call()
    except NotImplementedError:
        return _NOT_IMPLEMENTED


def assert_vminfo(info: object, pool: str, name: str) -> None:
    """``info`` is a well-typed VMInfo for ``pool``/``name``."""
    assert isinstance(info, VMInfo)
    assert (info.name, info.pool) == (name, pool)
    for field in ("hostname", "template", "powerstate", "ip", "host"):
        value = getattr(info, field)
        assert value is None or isinstance(value, str), f"{field}={value!r}"
    assert info.powerstate in {"PoweredOn", "PoweredOff", None}
    assert info.boottime is None or isinstance(info.boottime, float)


class ProviderContract:
    """What the core relies on from every provider. Not collected by itself (no ``Test`` prefix)."""

    pool = "contract-pool"
    unknown_pool = "no-such-pool"
    ready_timeout = 5.0

    @pytest.fixture
    def provider(self) -> Provider:
        raise NotImplementedError("a provider's test class overrides the `provider` fixture")

    @pytest.fixture
    def name(self) -> str:
        return f"contract-vm-{next(_names)}"

    def wait_ready(self, provider: Provider, name: str) -> None:
        """Poll ``vm_ready`` the way a VMActor does: the loop is in the caller, bounded by a deadline."""
        deadline = time.monotonic() + self.ready_timeout
        while not provider.vm_ready(self.pool, name):
            assert time.monotonic() < deadline, f"{name} not ready after {self.ready_timeout}s"
            time.sleep(0.01)

    # -- class attributes ---------------------------------------------------------------------------

    def test_declares_settings_and_pool_keys(self, provider: Provider) -> None:
        assert issubclass(provider.config_class, ProviderSettings)
        assert isinstance(provider.settings, provider.config_class)
        assert isinstance(provider.pool_option_keys, frozenset)
        assert all(isinstance(key, str) for key in provider.pool_option_keys)

    def test_settings_warn_about_an_unknown_key_by_name(self, provider: Provider) -> None:
        # The provider's own settings, written back as options, parse to the same settings (converters
        # accept what they produce); an unknown key beside them is a warning with its path, not an error.
        options = {
            field.name: getattr(provider.settings, field.name)
            for field in attrs.fields(type(provider.settings))
            if getattr(provider.settings, field.name) is not None
        }
        warnings: list[str] = []
        settings = provider.config_class.from_options(
            {**options, "no_such_option_xyz": 1}, instance="contract", warnings=warnings
        )
        assert settings == provider.settings
        assert warnings == [":providers:.contract.no_such_option_xyz: unknown key, ignored"]

    # -- create, list, get --------------------------------------------------------------------------

    def test_create_returns_the_new_vm(self, provider: Provider, name: str) -> None:
        info = provider.create_vm(self.pool, name)
        assert_vminfo(info, self.pool, name)

    def test_created_vm_is_in_the_inventory(self, provider: Provider, name: str) -> None:
        provider.create_vm(self.pool, name)
        listed = {info.name: info for info in provider.list_vms(self.pool)}
        assert name in listed
        for info in listed.values():
            assert_vminfo(info, self.pool, info.name)
        got = provider.get_vm(self.pool, name)
        assert_vminfo(got, self.pool, name)

    def test_created_vm_becomes_ready(self, provider: Provider, name: str) -> None:
        provider.create_vm(self.pool, name)
        self.wait_ready(provider, name)
        assert provider.vm_ready(self.pool, name) is True

    def test_create_with_a_taken_name_fails_for_good(self, provider: Provider, name: str) -> None:
        provider.create_vm(self.pool, name)
        with pytest.raises(CloneFailed) as caught:
            provider.create_vm(self.pool, name)
        assert caught.value.transient is False
        assert [info.name for info in provider.list_vms(self.pool)].count(name) == 1

    def test_get_vm_of_a_missing_vm_is_none(self, provider: Provider, name: str) -> None:
        assert provider.get_vm(self.pool, name) is None

    def test_vm_ready_of_a_missing_vm_raises_not_found(self, provider: Provider, name: str) -> None:
        with pytest.raises(VMNotFound):
            provider.vm_ready(self.pool, name)

    # -- destroy ------------------------------------------------------------------------------------

    def test_destroy_removes_the_vm_and_is_idempotent(self, provider: Provider, name: str) -> None:
        provider.create_vm(self.pool, name)
        provider.destroy_vm(self.pool, name)
        assert name not in [info.name for info in provider.list_vms(self.pool)]
        assert provider.get_vm(self.pool, name) is None
        provider.destroy_vm(self.pool, name)  # again: still a success

    def test_destroy_of_a_vm_never_created_succeeds(self, provider: Provider, name: str) -> None:
        provider.destroy_vm(self.pool, name)

    # -- unknown pool -------------------------------------------------------------------------------

    def test_create_in_an_unknown_pool_fails_for_good(self, provider: Provider, name: str) -> None:
        with pytest.raises(CloneFailed) as caught:
            provider.create_vm(self.unknown_pool, name)
        assert caught.value.transient is False

    @pytest.mark.parametrize("method", ["list_vms", "get_vm", "vm_ready", "destroy_vm"])
    def test_an_unknown_pool_is_an_error_not_an_empty_pool(
        self, provider: Provider, name: str, method: str
    ) -> None:
        args = (self.unknown_pool,) if method == "list_vms" else (self.unknown_pool, name)
        with pytest.raises(ProviderError) as caught:
            getattr(provider, method)(*args)
        assert caught.value.transient is False

    # -- optional methods ---------------------------------------------------------------------------

    def test_optional_methods_work_or_are_not_implemented(self, provider: Provider, name: str) -> None:
        provider.create_vm(self.pool, name)
        assert _optional(lambda: provider.create_disk(self.pool, name, 10)) in (None, _NOT_IMPLEMENTED)
        snap = _optional(lambda: provider.create_snapshot(self.pool, name, "snap1"))
        assert snap in (None, _NOT_IMPLEMENTED)
        if snap is None:
            provider.revert_snapshot(self.pool, name, "snap1")
        host = _optional(lambda: provider.migrate_vm(self.pool, name))
        assert host is None or host is _NOT_IMPLEMENTED or isinstance(host, str)
        tagged = _optional(lambda: provider.tag_vm_user(self.pool, name, "alice"))
        assert tagged is _NOT_IMPLEMENTED or isinstance(tagged, bool)
        assert _optional(lambda: provider.prepare_template(self.pool)) in (None, _NOT_IMPLEMENTED)
        purged = _optional(lambda: provider.purge_unconfigured([]))
        assert purged is _NOT_IMPLEMENTED or (isinstance(purged, list) and name not in purged)
        assert provider.get_vm(self.pool, name) is not None  # none of that removed a configured VM

    @pytest.mark.parametrize(
        "call",
        [
            lambda p, pool, name: p.create_disk(pool, name, 1),
            lambda p, pool, name: p.create_snapshot(pool, name, "s"),
            lambda p, pool, name: p.revert_snapshot(pool, name, "s"),
            lambda p, pool, name: p.tag_vm_user(pool, name, "alice"),
        ],
        ids=["create_disk", "create_snapshot", "revert_snapshot", "tag_vm_user"],
    )
    def test_optional_methods_on_a_missing_vm_raise_not_found(
        self, provider: Provider, name: str, call: Callable[[Provider, str, str], object]
    ) -> None:
        with pytest.raises((VMNotFound, NotImplementedError)):
            call(provider, self.pool, name)

    def test_revert_to_a_missing_snapshot_fails_for_good(self, provider: Provider, name: str) -> None:
        provider.create_vm(self.pool, name)
        try:
            provider.revert_snapshot(self.pool, name, "never-taken")
        except NotImplementedError:
            return
        except ProviderError as exc:
            assert exc.transient is False
        else:
            pytest.fail("revert to a snapshot that was never taken succeeded")

    # -- threads ------------------------------------------------------------------------------------

    def test_concurrent_calls_from_several_threads(self, provider: Provider, name: str) -> None:
        names = [f"{name}-{n}" for n in range(8)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda vm: provider.create_vm(self.pool, vm), names))
            listed = {info.name for info in provider.list_vms(self.pool)}
            assert set(names) <= listed
            list(pool.map(lambda vm: provider.destroy_vm(self.pool, vm), names))
        assert not set(names) & {info.name for info in provider.list_vms(self.pool)}
