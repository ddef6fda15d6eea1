"""A provider that does nothing, for tests of what the core does around any provider (the contract's
defaults, the monitor): a fake, named as one, where no backend is the point."""

from __future__ import annotations

from vmpooler.model import VMInfo
from vmpooler.providers.base import Provider

__all__ = ["BareProvider"]


class BareProvider(Provider):
    """Every abstract method, doing nothing: no VMs, every clone instant, every VM ready."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def list_vms(self, pool: str) -> list[VMInfo]:
        return []

    def get_vm(self, pool: str, name: str) -> VMInfo | None:
        return None

    def create_vm(self, pool: str, name: str) -> VMInfo:
        return VMInfo(name=name, pool=pool)

    def vm_ready(self, pool: str, name: str) -> bool:
        return True

    def destroy_vm(self, pool: str, name: str) -> None: ...
