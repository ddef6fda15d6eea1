#!/usr/bin/env python3
"""The ceiling of the API's own stack: Falcon on waitress laid out as ``vmpooler api`` is, answering the
three routes of the benchmark's cycle with canned JSON and no Redis (``scripts/bench_api.py --ceiling``).

Same layout as the real API: the parent binds the listening socket and starts ``--workers`` processes
that share it, each a waitress server with ``--threads`` threads, the same GIL switch interval
(``VMPOOLER_SWITCH_INTERVAL``, default 0.0005) and the same pretty-printed JSON. What it lacks is
everything that is ours: Redis, validation, auth, logging, metrics, middleware.

Usage: ``python scripts/ceiling_api.py --port P [--workers 2] [--threads 4]``; SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import os
import signal
import socket
import sys
from typing import Any

import falcon
import falcon.media
import waitress

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


class _Checkout:
    def on_post(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        resp.media = {"ok": True, name: {"hostname": "bench-0000001.example.com"}}

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        resp.media = {"ok": True, name: _VM}

    def on_delete(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        resp.media = {"ok": True}


class _Health:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"ok": True}


def make_app() -> falcon.App:
    app = falcon.App()
    pretty = falcon.media.JSONHandler(dumps=functools.partial(json.dumps, indent=2), loads=json.loads)
    app.resp_options.media_handlers[falcon.MEDIA_JSON] = pretty
    app.add_route("/api/v3/vm/{name}", _Checkout())
    app.add_route("/healthcheck", _Health())
    return app


def _worker(sock: socket.socket, threads: int) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sys.setswitchinterval(float(os.environ.get("VMPOOLER_SWITCH_INTERVAL", "0.0005")))
    server: Any = waitress.create_server(
        make_app(), sockets=[sock], threads=threads, connection_limit=1000, channel_timeout=60
    )
    server.run()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(1024)
    sock.setblocking(False)
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_worker, args=(sock, args.threads)) for _ in range(args.workers)]
    for worker in workers:
        worker.start()

    def stop(*_: object) -> None:
        for worker in workers:
            worker.terminate()

    signal.signal(signal.SIGTERM, stop)
    for worker in workers:
        worker.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
