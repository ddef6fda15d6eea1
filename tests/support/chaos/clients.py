"""The chaos run's load: client threads making random API calls, and what they saw."""

from __future__ import annotations

import collections
import http.client
import json
import random
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from tests.support.chaos.plan import ALIAS, Layout

__all__ = ["ChaosClient", "Outcomes"]

# A revert is asked for snapshots requested at least this long ago (by then most are taken).
_SNAPSHOT_TIME = 0.6


class Outcomes:
    """Every response the clients saw, and every hostname handed out (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: collections.Counter[tuple[str, int]] = collections.Counter()
        self.unexpected: list[str] = []
        self.transport_errors: list[str] = []
        self.handed_out: list[str] = []

    def record(self, op: str, status: int, expected: Iterable[int], detail: str) -> None:
        with self.lock:
            self.counts[(op, status)] += 1
            if status not in expected:
                self.unexpected.append(f"{op}: HTTP {status} {detail}")

    def count(self, op: str, status: int | None = None) -> int:
        with self.lock:
            return sum(n for (o, s), n in self.counts.items() if o == op and status in (None, s))


class _Held:
    """A VM a client thread has checked out."""

    __slots__ = ("host", "pool", "snapshots")

    def __init__(self, host: str, pool: str) -> None:
        self.host, self.pool = host, pool
        self.snapshots: list[tuple[float, str]] = []  # (requested at, name)


class ChaosClient(threading.Thread):
    """One client: random API calls on one keep-alive connection until ``stop`` is set.

    Args:
        port: the API's port on 127.0.0.1.
        layout: the pools it asks for, and how often each.
        rng: this client's randomness (seeded by the run).
        outcomes: where every response is recorded.
        stop: set to end the loop; the client then returns every VM it still holds.
        max_held: the most VMs it holds at once (so the pools are not simply emptied).
    """

    def __init__(
        self,
        port: int,
        layout: Layout,
        rng: random.Random,
        outcomes: Outcomes,
        stop: threading.Event,
        *,
        name: str,
        max_held: int = 3,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self._port = port
        self._layout = layout
        self._rng = rng
        self._out = outcomes
        self._halt = stop
        self._max_held = max_held
        self._held: list[_Held] = []
        self._conn: http.client.HTTPConnection | None = None

    def run(self) -> None:
        try:
            while not self._halt.is_set():
                self._step()
                self._halt.wait(self._rng.uniform(0.01, 0.15))
            while self._held:
                self._return(self._held[0])
        finally:
            if self._conn is not None:
                self._conn.close()

    # -- HTTP --------------------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: object = None) -> tuple[int, Any]:
        """One request; status 0 when the connection failed (recorded; never retried: not idempotent)."""
        data = b"" if body is None else json.dumps(body).encode()
        if self._conn is None:
            self._conn = http.client.HTTPConnection("127.0.0.1", self._port, timeout=30)
        try:
            self._conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
            resp = self._conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            self._conn.close()
            self._conn = None
            with self._out.lock:
                self._out.transport_errors.append(f"{method} {path}: {exc!r}")
            return 0, None
        try:
            return resp.status, json.loads(raw) if raw else None
        except ValueError:
            return resp.status, raw[:200]

    # -- operations ----------------------------------------------------------------------------------

    def _step(self) -> None:
        ops: list[tuple[Callable[[], None], int]] = [(self._checkout, 4)]
        if self._held:
            ops += [
                (lambda: self._return(self._rng.choice(self._held)), 2),
                (self._tag, 2),
                (self._disk, 1),
                (self._snapshot, 1),
                (self._revert, 1),
                (self._look, 1),
            ]
        ops.append((self._status, 1))
        choice = self._rng.choices([op for op, _ in ops], weights=[w for _, w in ops])[0]
        choice()

    def _checkout(self) -> None:
        if len(self._held) >= self._max_held:
            self._return(self._held[0])
            return
        kind = self._rng.choice(("single", "single", "path", "body", "alias"))
        if kind == "single":
            names = self._pools(1)
            status, body = self._call("POST", f"/api/v3/vm/{names[0]}")
        elif kind == "path":
            names = self._pools(2)
            status, body = self._call("POST", "/api/v3/vm/" + "+".join(names))
        elif kind == "body":
            names = self._pools(self._rng.choice((1, 2)))
            status, body = self._call("POST", "/api/v3/vm", {name: 1 for name in names})
        else:
            names = [ALIAS]
            status, body = self._call("POST", f"/api/v3/vm/{ALIAS}")
        self._out.record(f"checkout ({kind})", status, (200, 503), f"{names} {body}")
        if status != 200 or not isinstance(body, dict):
            return
        for requested in names:
            hosts = body.get(requested, {}).get("hostname")
            for host in [hosts] if isinstance(hosts, str) else hosts or []:
                short = host.split(".", 1)[0]
                with self._out.lock:
                    self._out.handed_out.append(short)
                self._held.append(_Held(short, requested))

    def _pools(self, count: int) -> list[str]:
        """``count`` distinct pools (fewer if the layout has fewer), by the layout's weights."""
        left = dict(self._layout.weights)
        picked = []
        for _ in range(min(count, len(left))):
            pool = self._rng.choices(list(left), weights=list(left.values()))[0]
            picked.append(pool)
            del left[pool]
        return picked

    def _return(self, held: _Held) -> None:
        self._held.remove(held)
        status, body = self._call("DELETE", f"/api/v3/vm/{held.host}")
        self._out.record("return", status, (200,), f"{held.host} {body}")

    def _tag(self) -> None:
        held = self._rng.choice(self._held)
        tags = {"jenkins_build_url": f"https://ci.example.com/job/x/{self._rng.randint(1, 999)}/"}
        status, body = self._call("PUT", f"/api/v3/vm/{held.host}", {"tags": tags})
        self._out.record("tag", status, (200,), f"{held.host} {body}")

    def _disk(self) -> None:
        held = self._rng.choice(self._held)
        status, body = self._call("POST", f"/api/v3/vm/{held.host}/disk/{self._rng.randint(1, 20)}")
        self._out.record("disk", status, (202,), f"{held.host} {body}")

    def _snapshot(self) -> None:
        held = self._rng.choice(self._held)
        status, body = self._call("POST", f"/api/v3/vm/{held.host}/snapshot")
        self._out.record("snapshot", status, (202,), f"{held.host} {body}")
        if status == 202 and isinstance(body, dict):
            held.snapshots.append((time.monotonic(), body[held.host]["snapshot"]))

    def _revert(self) -> None:
        held = self._rng.choice(self._held)
        taken = [name for at, name in held.snapshots if time.monotonic() - at > _SNAPSHOT_TIME]
        if not taken:
            self._snapshot()
            return
        snapshot = self._rng.choice(taken)
        status, body = self._call("POST", f"/api/v3/vm/{held.host}/snapshot/{snapshot}")
        # 404 until the manager has taken the snapshot (or when taking it failed: chaos).
        self._out.record("revert", status, (202, 404), f"{held.host} {snapshot} {body}")

    def _look(self) -> None:
        held = self._rng.choice(self._held)
        status, body = self._call("GET", f"/api/v3/vm/{held.host}")
        self._out.record("get vm", status, (200,), f"{held.host} {body}")

    def _status(self) -> None:
        status, body = self._call("GET", "/api/v3/status")
        self._out.record("status", status, (200,), str(body)[:200])
