"""Provider registry: find a provider class by its ``provider_class`` name.

Built-in providers are listed in ``BUILTIN``; third-party packages add theirs through the entry-point
group ``vmpooler.providers`` (``name = "package.module:ClassName"``). Names match case-insensitively and
a built-in name wins over an entry point of the same name. Nothing is found by globbing files.

Loading fails loudly: any error while importing a provider becomes a ``ConfigError`` that names the
provider and carries the original error text, so the worker exits with its boot-error code.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging

from vmpooler.errors import ConfigError
from vmpooler.providers.base import PoolSpec, Provider, ProviderSettings

__all__ = [
    "BUILTIN",
    "ENTRY_POINT_GROUP",
    "PoolSpec",
    "Provider",
    "ProviderSettings",
    "available_providers",
    "load_provider_class",
]

log = logging.getLogger(__name__)

BUILTIN: dict[str, str] = {
    "dummy": "vmpooler.providers.dummy:DummyProvider",
    "vsphere": "vmpooler.providers.vsphere:VSphereProvider",
}

ENTRY_POINT_GROUP = "vmpooler.providers"


def available_providers() -> dict[str, str]:
    """Every known provider name (lower case) → its ``module:attribute`` target."""
    found: dict[str, str] = {}
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        key = entry.name.lower()
        if key in BUILTIN:
            log.warning("entry point %r (%s) ignored: %r is built in", entry.name, entry.value, key)
            continue
        found[key] = entry.value
    found.update(BUILTIN)
    return found


def load_provider_class(provider_class: str) -> type[Provider]:
    """Import and return the provider class called ``provider_class``.

    Args:
        provider_class: a ``provider_class`` value from config (``"dummy"``, ``"vSphere"``, ...).

    Returns:
        A subclass of :class:`Provider`.

    Raises:
        ConfigError: the name is unknown, its module cannot be imported (the message includes the
            original exception), the attribute is missing, or it is not a ``Provider`` subclass.
    """
    known = available_providers()
    target = known.get(provider_class.lower())
    if target is None:
        raise ConfigError(
            f"provider_class {provider_class!r}: unknown provider (known: {', '.join(sorted(known))})"
        )
    cls = _import_target(provider_class, target)
    if not (isinstance(cls, type) and issubclass(cls, Provider)):
        raise ConfigError(f"provider_class {provider_class!r}: {target} is not a Provider subclass")
    log.debug("provider_class %r loaded from %s", provider_class, target)
    return cls


def _import_target(provider_class: str, target: str) -> object:
    module_name, _, attribute = target.partition(":")
    try:
        obj: object = importlib.import_module(module_name)
        for part in attribute.split(".") if attribute else []:
            obj = getattr(obj, part)
    except Exception as exc:  # a plugin may raise anything at import time; all of it is a boot error
        raise ConfigError(
            f"provider_class {provider_class!r}: cannot load {target}: {type(exc).__name__}: {exc}"
        ) from exc
    return obj
