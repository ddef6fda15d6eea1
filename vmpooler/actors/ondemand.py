"""OnDemandActor: the on-demand requests of one provider process (docs/architecture.md, "On-demand
requests").

Each turn (``Check``) it fails the requests past ``ondemand_request_ttl``, takes new requests in, and
claims the clone tasks of its pools that the on-demand lane (``ondemand_clone_limit``) has room for;
each claim goes to the pool's PoolActor as ``CloneFor``, which clones through a VMActor like any VM.
Every step is a script shared with the other provider processes, so any of them may do it. An
``ondemand`` event (a new request, a retry queued, a lane slot freed) runs a turn at once; otherwise
turns are spaced as the original's provisioner: the global ``check_loop_delay_min`` while requests are
in flight, ×decay up to ``check_loop_delay_max`` while there are none.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from vmpooler import metrics
from vmpooler.actors.dispatch import Dispatcher, PooledActor
from vmpooler.actors.messages import Check, CloneFor
from vmpooler.bus import OnDemandQueued
from vmpooler.errors import StoreError
from vmpooler.log import get_logger
from vmpooler.store.slots import ONDEMAND_PREFIX

if TYPE_CHECKING:
    from vmpooler.actors.ticker import Handle, Ticker
    from vmpooler.config import Config
    from vmpooler.store import Store

__all__ = ["OnDemandActor"]


class OnDemandActor(PooledActor):
    """Args:
    owner: the provider instance (the owner of the lane slots it claims).
    pools: the pools this process serves.
    tokens: pool -> the fencing token of its lease here (several managers; empty: none, every pool ours).
    send: hands a ``CloneFor`` to the pool's PoolActor (the ProviderActor's routing).
    """

    def __init__(
        self,
        *,
        owner: str,
        pools: list[str],
        config: Config,
        store: Store,
        ticker: Ticker,
        dispatcher: Dispatcher,
        send: Callable[[CloneFor], None],
        lease_seconds: float,
        clock: Callable[[], float] = time.time,
        tokens: Mapping[str, int] | None = None,
    ) -> None:
        super().__init__(dispatcher)
        self._owner = owner
        self._pools = pools
        self._tokens = dict(tokens or {})
        self._config = config
        self._store = store
        self._ticker = ticker
        self._send = send
        self._lease = lease_seconds
        self._clock = clock
        self._log = get_logger(__name__, provider=owner)
        globals_ = config.globals
        self._min = float(globals_.check_loop_delay_min or 5)
        self._max = max(float(globals_.check_loop_delay_max or 60), self._min)
        decay = float(globals_.check_loop_delay_decay or 2.0)
        self._decay = decay if decay > 1.0 else 2.0
        self._delay = self._min
        self._next: Handle | None = None

    def on_start(self) -> None:
        self._schedule(0)

    def on_stop(self) -> None:
        if self._next is not None:
            self._next.cancel()

    def on_receive(self, message: Any) -> Any:
        match message:
            case Check():
                self._round()
            case OnDemandQueued():
                self._schedule(0)
            case _:
                return super().on_receive(message)
        return None

    def _round(self) -> None:
        self._next = None
        busy = False
        try:
            busy = self._work()
        except StoreError as exc:
            self._log.warning("on-demand provisioning failed, retrying: %s", exc)
        except Exception:
            metrics.ERRORS.labels("ondemand_actor_crashed", self._owner).inc()
            self._log.exception("on-demand provisioning crashed")
        self._delay = self._min if busy else min(self._delay * self._decay, self._max)
        self._schedule(self._delay)

    def _work(self) -> bool:
        """One round: expire, take in, claim. True while requests are in flight."""
        store, globals_ = self._store, self._config.globals
        now = self._clock()
        waiting, failed = store.provisioning.expire(
            now, ttl_minutes=globals_.ondemand_request_ttl, data_ttl=int(self._config.redis.data_ttl * 3600)
        )
        for request_id in failed:
            self._log.warning(
                "on-demand request %s failed: not ready within %d minutes",
                request_id,
                globals_.ondemand_request_ttl,
            )
        taken = store.provisioning.intake(now)
        if taken:
            self._log.info("took in %d on-demand request(s)", taken)
        limit = globals_.ondemand_clone_limit
        slots = [f"{ONDEMAND_PREFIX}{uuid.uuid4().hex}" for _ in range(limit)]
        claims = store.provisioning.claim(
            self._owner,
            self._pools,
            slots,
            limit=limit,
            now=now,
            lease_seconds=self._lease,
            tokens=self._tokens,
        )
        for claim in claims:
            self._send(CloneFor(claim.pool, claim.request_id, claim.alias, claim.slot))
        return bool(waiting or taken or claims)

    def _schedule(self, delay: float) -> None:
        """Run a turn after ``delay`` seconds; an earlier request replaces a later one."""
        if self._next is not None:
            if delay > 0:
                return
            self._next.cancel()
        ref = self.actor_ref
        self._next = self._ticker.call_later(delay, lambda: ref.tell(Check()))
