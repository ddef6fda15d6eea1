#!/usr/bin/env python3
"""The ceiling of the API's own stack: Falcon on waitress laid out as ``vmpooler api`` is, answering the
three routes of the benchmark's cycle with canned JSON and no Redis (``scripts/bench_api.py --ceiling``).

Same layout as the real API: the parent binds the listening socket and starts ``--workers`` processes
that share it, each a waitress server with ``--threads`` threads, the same GIL switch interval
(``VMPOOLER_SWITCH_INTERVAL``, default 0.0005), the same pretty-printed JSON and the API worker's
waitress channel (``vmpooler.http.serve.WorkerChannel``: a response's header and body in one send;
``--plain-waitress`` serves through waitress's own, which sends them apart) and the API workers'
connection board (``vmpooler.http.balance``: the worker with the fewest connections accepts;
``--unbalanced``: whichever wakes first). What it lacks is
everything that is ours: Redis, validation, auth, logging, metrics, middleware.

``--redis-url`` adds the one thing no API on Redis can do without: every request makes one round trip
(``HGETALL`` of a small hash) through the client the API uses (``LeanRedis``), and answers the same
canned body. That is the ceiling of an API that must touch Redis once per request.

Usage: ``python scripts/ceiling_api.py --port P [--workers 2] [--threads 4] [--redis-url URL]
[--plain-waitress] [--unbalanced]``; SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import multiprocessing
import os
import signal
import socket
import sys
from typing import Any

import falcon
import falcon.media
import waitress

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from vmpooler import keys
from vmpooler.http.balance import ConnectionBoard, balance_accepts
from vmpooler.http.serve import WorkerChannel, quick_trigger
from vmpooler.store.connection import connect

_VM = {
    "template": "bench",
    "lifetime": 24,
    "running": 0.01,
    "remaining": 23.99,
    "start_time": "2026-11-30T10:00:00+00:00",
    "end_time": "2026-12-01T10:00:00+00:00",
    "state": "running",
    "ip": "",
    "host": "",
    "migrated": "",
    "domain": "example.com",
}


ROUND_TRIP_VM = "ceiling-0000001"  # the round trip reads its hash, which the benchmark writes as a VM's
_HASH = keys.vm_hash(ROUND_TRIP_VM)


class _Checkout:
    def __init__(self, redis_url: str | None) -> None:
        # one round trip per request when given: the client the API's workers use, opened the same way
        self._client = connect(redis_url, lean=True) if redis_url else None

    def _round_trip(self) -> None:
        if self._client is not None:
            self._client.hgetall(_HASH)

    def on_post(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        self._round_trip()
        resp.media = {"ok": True, name: {"hostname": "bench-0000001.example.com"}}

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        self._round_trip()
        resp.media = {"ok": True, name: _VM}

    def on_delete(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        self._round_trip()
        resp.media = {"ok": True}


class _Health:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"ok": True}


def make_app(redis_url: str | None = None) -> falcon.App:
    app = falcon.App()
    pretty = falcon.media.JSONHandler(dumps=functools.partial(json.dumps, indent=2), loads=json.loads)
    app.resp_options.media_handlers[falcon.MEDIA_JSON] = pretty
    app.add_route("/api/v3/vm/{name}", _Checkout(redis_url))
    app.add_route("/healthcheck", _Health())
    return app


def _worker(
    sock: socket.socket, threads: int, redis_url: str | None, plain: bool, board: tuple[str, int, int] | None
) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # as vmpooler.log sets it: no queue warnings
    sys.setswitchinterval(float(os.environ.get("VMPOOLER_SWITCH_INTERVAL", "0.0005")))
    channels: dict[int, Any] = {}
    server: Any = waitress.create_server(
        make_app(redis_url),
        map=channels,
        sockets=[sock],
        threads=threads,
        connection_limit=1000,
        channel_timeout=60,
    )
    if not plain:  # as an API worker serves: its header and body in one send, its reads, its trigger
        server.channel_class = WorkerChannel
        quick_trigger(server)
    if board is not None:  # as the API workers accept: the one with the fewest connections
        balance_accepts(server, channels, ConnectionBoard(*board))
    server.run()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--redis-url", help="one round trip to this Redis per request")
    parser.add_argument(
        "--plain-waitress", action="store_true", help="waitress's own channel (header and body sent apart)"
    )
    parser.add_argument(
        "--unbalanced", action="store_true", help="whichever worker wakes first accepts (no connection board)"
    )
    args = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(1024)
    sock.setblocking(False)
    context = multiprocessing.get_context("fork")
    board = None if args.unbalanced else ConnectionBoard.create(args.workers)
    workers = [
        context.Process(
            target=_worker,
            args=(
                sock,
                args.threads,
                args.redis_url,
                args.plain_waitress,
                board and (board, i, args.workers),
            ),
        )
        for i in range(args.workers)
    ]
    for worker in workers:
        worker.start()

    def stop(*_: object) -> None:
        for worker in workers:
            worker.terminate()

    signal.signal(signal.SIGTERM, stop)
    for worker in workers:
        worker.join()
    if board is not None:
        os.unlink(board)
    return 0


if __name__ == "__main__":
    sys.exit(main())
