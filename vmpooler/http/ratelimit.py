"""Rate limiting of the API (``:config: rate_limiting_enabled``, limits from ``:rate_limits:``).

Each request that is limited falls into one class (the original's four):

* ``vm_creation``: ``POST`` on a path containing ``/vm`` or ``/ondemandvm`` (checkout, disk, snapshot,
  on-demand request);
* ``vm_deletion``: ``DELETE`` on such a path (return a VM, delete an on-demand request);
* ``authenticated``: any other request with an ``X-AUTH-TOKEN`` header;
* ``global_per_ip``: any other request.

Requests are counted per class and client, ``token:<X-AUTH-TOKEN>`` when the header is given (valid or
not: nothing is looked up) else ``ip:<address>``, in fixed windows shared by every API process
(``store.ratelimit``). A request over the class's limit is answered 429 without reaching its route.
``OPTIONS``, ``/healthcheck`` and the metrics endpoint are never limited nor counted. When Redis cannot
be reached the request is served (fail open) and a warning says so, at most every 10 s.

The client's address is the connection's peer, unless the peer is one of ``:config: trusted_proxies``:
then it is the right-most address of ``X-Forwarded-For`` that is not a trusted proxy itself.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import TYPE_CHECKING

import falcon

from vmpooler.errors import StoreError

if TYPE_CHECKING:
    from vmpooler.config import Config
    from vmpooler.config.sinks import RateLimit
    from vmpooler.store import Store
    from vmpooler.store.ratelimit import RateLimits

__all__ = ["RateLimiter", "TrustedProxies", "classify", "rate_limiting"]

log = logging.getLogger(__name__)

_WARN_EVERY = 10.0  # seconds between two warnings that Redis failed and requests go unlimited

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def classify(method: str, path: str, token: str | None) -> str:
    """The limit class of a request (``path`` as routed, ``token`` the ``X-AUTH-TOKEN`` header).

    The original tested for ``/vm`` alone, which ``/api/v3/ondemandvm`` does not contain: there,
    on-demand requests counted as ``authenticated`` or ``global_per_ip``.
    """
    if method in ("POST", "DELETE") and ("/vm" in path or "/ondemandvm" in path):
        return "vm_creation" if method == "POST" else "vm_deletion"
    return "authenticated" if token else "global_per_ip"


def _address(text: str) -> _Address | None:
    """One address of ``X-Forwarded-For`` or a peer (``[v6]:port`` and ``v4:port`` forms too); None
    when it is none. An IPv4-mapped IPv6 address is its IPv4 address."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TrustedProxies:
    """The proxies whose ``X-Forwarded-For`` is believed (``:config: trusted_proxies``).

    Args:
        entries: IP addresses and CIDR networks (validated by the config).
    """

    def __init__(self, entries: Iterable[str]) -> None:
        self._networks = tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)

    def __bool__(self) -> bool:
        return bool(self._networks)

    def __contains__(self, address: _Address) -> bool:
        return any(address in network for network in self._networks)

    def client(self, peer: str, forwarded: str | None) -> str:
        """The client's address: ``peer`` unless it is a trusted proxy; then, walking
        ``X-Forwarded-For`` from the right, the first address that is not. When every address is a
        trusted proxy, the left-most; an entry that is not an address stops the walk where it is."""
        address = _address(peer) if self._networks and forwarded else None
        if address is None:
            return peer
        hops = forwarded.split(",") if forwarded else []
        while hops and address in self:
            previous = _address(hops.pop())
            if previous is None:
                break
            address = previous
        return str(address)


class RateLimiter:
    """Falcon middleware counting each request against its class's limit; 429 over it.

    Args:
        limits: class name → limit (``Config.rate_limits``).
        counters: the store's rate limit counters.
        exempt: paths never limited (``/healthcheck``, the metrics endpoint).
        trusted_proxies: see :class:`TrustedProxies`.
        clock: the time source of ``X-RateLimit-Reset``.
    """

    def __init__(
        self,
        limits: Mapping[str, RateLimit],
        counters: RateLimits,
        *,
        exempt: Collection[str] = (),
        trusted_proxies: TrustedProxies | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._limits = {kind: (limit.limit, limit.period) for kind, limit in limits.items()}
        self._counters = counters
        self._exempt = frozenset(exempt)
        self._proxies = trusted_proxies or TrustedProxies(())
        self._clock = clock
        self._warned_at = -_WARN_EVERY

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        path = req.path
        if req.method == "OPTIONS" or path in self._exempt:
            return
        token = req.get_header("X-AUTH-TOKEN")
        kind = classify(req.method, path, token)
        client = f"token:{token}" if token else f"ip:{self._client_address(req)}"
        limit, period = self._limits[kind]
        try:
            count, ms_left = self._counters.hit(kind, client, period)
        except StoreError as exc:
            self._warn(exc)
            return
        if count > limit:
            self._refuse(resp, limit, period, ms_left)

    def _client_address(self, req: falcon.Request) -> str:
        peer = req.remote_addr
        if not self._proxies:
            return peer
        return self._proxies.client(peer, req.get_header("X-Forwarded-For"))

    def _refuse(self, resp: falcon.Response, limit: int, period: int, ms_left: int) -> None:
        retry_after = max(1, math.ceil(ms_left / 1000))
        resp.status = falcon.HTTP_429
        resp.content_type = falcon.MEDIA_JSON
        body = {
            "ok": False,
            "error": "Rate limit exceeded",
            "limit": limit,
            "period": period,
            "retry_after": retry_after,
        }
        resp.text = json.dumps(body, indent=2)  # pretty, as every other error body
        resp.set_header("X-RateLimit-Limit", str(limit))
        resp.set_header("X-RateLimit-Remaining", "0")
        resp.set_header("X-RateLimit-Reset", str(math.ceil(self._clock() + ms_left / 1000)))
        resp.set_header("Retry-After", str(retry_after))
        resp.complete = True  # no route runs; every middleware's process_response still does

    def _warn(self, exc: StoreError) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY:  # a race between threads costs one extra line at most
            self._warned_at = now
            log.warning("rate limits not applied, requests are served unlimited: %s", exc)


def rate_limiting(
    config: Config, store: Store, *, clock: Callable[[], float] = time.time
) -> list[RateLimiter]:
    """The rate limiting middleware when ``:config: rate_limiting_enabled`` is on, else nothing (so a
    disabled limiter costs nothing at all)."""
    if not config.globals.rate_limiting_enabled:
        return []
    limiter = RateLimiter(
        config.rate_limits,
        store.ratelimit,
        exempt=("/healthcheck", config.metrics.prometheus_endpoint),
        trusted_proxies=TrustedProxies(config.globals.trusted_proxies),
        clock=clock,
    )
    return [limiter]
