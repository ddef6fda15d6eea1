"""The exception hierarchy. No other module defines a base error."""

from __future__ import annotations

import re

__all__ = [
    "AuthUnavailable",
    "CloneFailed",
    "ConfigError",
    "ConnectionWaitTimeout",
    "OverQuota",
    "PoolEmpty",
    "ProviderError",
    "ProviderTimeout",
    "ProviderUnavailable",
    "StoreError",
    "StoreUnavailable",
    "TransitionError",
    "VMNotFound",
    "VmpoolerError",
    "permanent_reason",
]

# The original's patterns of a clone error no retry can fix (reference §4.8, step 5).
_PERMANENT = re.compile(
    r"template.*not found|template.*does not exist|invalid.*path|folder.*not found|datastore.*not found"
    r"|resource pool.*not found|permission.*denied|authentication.*failed|invalid.*credentials"
    r"|configuration.*error",
    re.IGNORECASE,
)


class VmpoolerError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(VmpoolerError):
    """Invalid YAML, a bad key, type or value, or a bad environment override.

    Attributes:
        problems: every problem found, each ``"<key path>: <reason>"``.
    """

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


class StoreError(VmpoolerError):
    """A Redis operation failed or a transition conflicted."""


class StoreUnavailable(StoreError):
    """Redis cannot be reached right now (the API answers 503)."""


class Fenced(StoreError):
    """A manager's write for a pool was refused: another manager holds the pool's lease now."""


class PoolEmpty(StoreError):
    """A checkout could not be met: ``requested`` had no ready VM left."""

    def __init__(self, requested: str) -> None:
        self.requested = requested
        super().__init__(f"no ready VM for {requested!r}")


class OverQuota(StoreError):
    """A checkout would take ``tenant`` over its quota of running VMs (``:tenants:``)."""

    def __init__(self, tenant: str, quota: int) -> None:
        self.tenant, self.quota = tenant, quota
        super().__init__(f"tenant {tenant!r} is at its quota of {quota} running VMs")


class TransitionError(VmpoolerError):
    """An illegal VM state change was attempted."""


class ProviderError(VmpoolerError):
    """A provider operation failed.

    Attributes:
        transient: True if trying again later may succeed.
        metric_label: the label used on error counters.
    """

    transient = True
    metric_label = "provider_error"


class VMNotFound(ProviderError):
    transient = False
    metric_label = "vm_not_found"


class CloneFailed(ProviderError):
    metric_label = "clone_failed"

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


class ProviderTimeout(ProviderError):
    metric_label = "provider_timeout"


class ConnectionWaitTimeout(ProviderTimeout):
    """No connection to the backend came free in time: contention in this process, not a failure of the
    backend (the circuit breaker does not count it, and no VM is judged by the check it stopped)."""

    metric_label = "connection_wait_timeout"


class ProviderUnavailable(ProviderError):
    metric_label = "provider_unavailable"


def permanent_reason(exc: BaseException) -> str | None:
    """The message of an error that trying again cannot fix, or None when a retry may work.

    Permanent: a provider error marked ``transient = False``, a programming error (``TypeError``,
    ``AttributeError``, ``NameError``: the original's ``ArgumentError``/``NoMethodError``/``NameError``),
    or a message matching the original's configuration-error patterns.
    """
    message = str(exc) or type(exc).__name__
    if isinstance(exc, ProviderError) and not exc.transient:
        return message
    if isinstance(exc, TypeError | AttributeError | NameError) or _PERMANENT.search(message):
        return message
    return None


class AuthUnavailable(VmpoolerError):
    """The authentication backend (the LDAP directory) cannot answer now: unreachable, timed out, TLS
    failed, busy, or its service account refused (the API answers 503, never 401)."""
