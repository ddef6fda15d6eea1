#!/usr/bin/env python3
"""CPU cost of one API request without the server: the WSGI app called directly, in one thread.

Runs the benchmark's checkout → get → delete cycle ``--cycles`` times through the app's WSGI callable
(``falcon.testing``'s environ, no socket, no waitress) against a private redis-server, for:

* ``redis-py``: the store on redis-py's ``BlockingConnectionPool`` (every command through redis-py);
* ``lean``: the store as the API worker opens it (``LeanRedis``: plain commands on its own sockets);
* ``ceiling``: ``scripts/ceiling_api.py``'s canned app (same routes, no Redis).

It prints the process's CPU µs per request for each (this process only; Redis's own CPU is not
counted) and, with ``--profile``, cProfile's top functions of the lean run. This isolates our Python
from the server and the load generator, which ``scripts/bench_api.py`` cannot.

Usage: ``python scripts/profile_api.py [--cycles 3000] [--profile] [--apps lean]``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import resource
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import falcon.testing
import redis

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_api import POOL, fill  # noqa: E402
from benchlib import bench_workdir, redis_server  # noqa: E402
from ceiling_api import make_app as ceiling_app  # noqa: E402

from vmpooler import metrics  # noqa: E402
from vmpooler.config import load_config_text  # noqa: E402
from vmpooler.http.app import create_app  # noqa: E402
from vmpooler.store import Store  # noqa: E402

CONFIG = (
    ":redis:\n  server: 127.0.0.1\n"
    ":dns_configs:\n  example:\n    dns_class: dynamic-dns\n    domain: example.com\n"
    f":pools:\n  - name: {POOL}\n    template: templates/{POOL}\n    size: 10\n    dns_plugin: example\n"
)


def our_app(port: int, *, lean: bool, flush_interval: float = metrics.FLUSH_INTERVAL) -> tuple[Any, Store]:
    """The API's WSGI app on the redis-server at ``port``, its store opened as an API worker opens it
    (``lean``) or on redis-py's pool, its metric updates queued as a worker queues them (written every
    ``flush_interval`` seconds); the caller closes the store."""
    config = load_config_text(CONFIG.replace("127.0.0.1", f"127.0.0.1\n  port: {port}"), env={})
    store = Store.from_url(f"redis://127.0.0.1:{port}/0", lean=lean)
    metrics.defer_updates(flush_interval)
    return create_app(config, store), store


def call(app: Callable[..., Any], method: str, path: str) -> bytes:
    """One request through the WSGI callable; the body (the status must be 200)."""
    environ = falcon.testing.create_environ(method=method, path=path)
    status: list[str] = []
    body = b"".join(app(environ, lambda s, _headers, _exc=None: status.append(s)))
    if not status[0].startswith("200"):
        raise SystemExit(f"{method} {path}: {status[0]} {body!r}")
    return body


def cycles(app: Callable[..., Any], count: int, real: bool) -> None:
    for _ in range(count):
        body = call(app, "POST", f"/api/v3/vm/{POOL}")
        vm = json.loads(body)[POOL]["hostname"].split(".")[0] if real else "bench-0000001"
        call(app, "GET", f"/api/v3/vm/{vm}")
        call(app, "DELETE", f"/api/v3/vm/{vm}")


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(
    app: Callable[..., Any], count: int, real: bool, profile: cProfile.Profile | None = None
) -> float:
    """CPU µs per request over ``count`` cycles, after a warm-up."""
    cycles(app, 200, real)
    before = cpu()
    if profile:
        profile.enable()
    cycles(app, count, real)
    if profile:
        profile.disable()
    return 1e6 * (cpu() - before) / (3 * count)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=3000)
    parser.add_argument("--profile", action="store_true", help="print cProfile's top of the lean run")
    parser.add_argument(
        "--apps",
        default="redis-py,lean,ceiling",
        help="which to run, comma-separated (e.g. lean, for py-spy)",
    )
    args = parser.parse_args()
    with bench_workdir(keep=False) as workdir, redis_server(workdir) as (_proc, port):
        fill(redis.Redis(port=port), 2 * (args.cycles + 200) + 100)
        results = {}
        profile = cProfile.Profile() if args.profile else None
        apps = args.apps.split(",")
        for name, lean in (("redis-py", False), ("lean", True)):
            if name not in apps:
                continue
            app, store = our_app(port, lean=lean)
            results[name] = measure(app, args.cycles, True, profile if lean else None)
            store.close()
        if "ceiling" in apps:
            results["ceiling"] = measure(ceiling_app(), args.cycles, False)
    print(f"CPU µs per request, {args.cycles} cycles of checkout → get → delete, WSGI called directly\n")
    print("| app | µs/request |\n|---|---|")
    for name, micros in results.items():
        print(f"| {name} | {micros:.0f} |")
    if profile:
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(25)
        print(out.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
