#!/usr/bin/env python3
"""Instructions per API request, counted by valgrind: the one measure of the request path that does not
drift with a shared machine's speed.

The benchmark's checkout → get → delete cycle goes through each app's WSGI callable directly, as
``scripts/profile_api.py`` does (no server, no load generator), under ``valgrind --tool=callgrind``
twice: ``--cycles`` cycles, then five times as many. The difference, per request, is what one request
costs in user-space instructions (the interpreter's start, the imports and the warm-up cancel out;
the kernel's side of the system calls is not counted). Repeated runs agree within about 1 %, where
the CPU time of the same requests varies by 15 % on this machine, so a change of a few microseconds
shows.

Apps: ``lean`` (ours, as an API worker opens its store), ``ceiling`` (``scripts/ceiling_api.py``:
canned answers) and ``ceiling-redis`` (the same with one Redis round trip a request through the API's
client). Each count runs against a private redis-server, refilled before each run, with
``PROMETHEUS_MULTIPROC_DIR`` set as the supervisor sets it for its API workers (each metric update is
then a write to a memory-mapped file).

Usage: ``python scripts/count_instructions.py [--apps lean,ceiling,ceiling-redis] [--cycles 100]``;
needs ``valgrind`` (Debian's package).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import redis

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_api import fill  # noqa: E402
from benchlib import bench_workdir, redis_server  # noqa: E402

APPS = ("lean", "ceiling", "ceiling-redis")
_TOTAL = re.compile(r"I\s+refs:\s+([\d,]+)")


# An API worker writes its queued metric updates every 0.1 s (metrics.FLUSH_INTERVAL), about every 200
# requests at 2,000 requests/s; under valgrind a request takes some 50 times as long, so a timer would
# flush after every few requests and count a flush's writes many times over. Here the timer is off and
# a flush follows every FLUSH_EVERY cycles instead.
FLUSH_EVERY = 50


def run_cycles(app_name: str, port: int, count: int) -> None:
    """The child's part (under valgrind): warm up, then ``count`` cycles through ``app_name``."""
    from ceiling_api import make_app as ceiling_app
    from profile_api import cycles, our_app

    from vmpooler import metrics

    real = app_name == "lean"
    if real:
        app, _store = our_app(port, lean=True, flush_interval=3600.0)
    else:
        app = ceiling_app(f"redis://127.0.0.1:{port}/0" if app_name == "ceiling-redis" else None)
    cycles(app, 50, real)
    metrics.flush_updates()
    for done in range(0, count, FLUSH_EVERY):
        cycles(app, min(FLUSH_EVERY, count - done), real)
        metrics.flush_updates()


def instructions(app_name: str, port: int, count: int, workdir: Path) -> int:
    """Instructions of one child process running ``count`` cycles (its start and warm-up included)."""
    fill(redis.Redis(port=port), count + 100)
    metrics_dir = workdir / f"metrics-{app_name}-{count}"
    metrics_dir.mkdir()
    command = [
        shutil.which("valgrind") or "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        "--cache-sim=no",
        sys.executable,
        __file__,
        "--child",
        app_name,
        str(port),
        str(count),
    ]
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    result = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
    found = _TOTAL.search(result.stderr)
    if found is None:
        raise SystemExit(f"valgrind printed no total:\n{result.stderr[-2000:]}")
    return int(found[1].replace(",", ""))


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        run_cycles(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", default=",".join(APPS), help=f"comma-separated, of {', '.join(APPS)}")
    parser.add_argument("--cycles", type=int, default=100, help="the first run's cycles; the second, 5x")
    args = parser.parse_args()
    apps = args.apps.split(",")
    unknown = set(apps) - set(APPS)
    if unknown:
        parser.error(f"unknown app(s): {', '.join(sorted(unknown))}")
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not installed (apt-get install valgrind)")
    print("| app | instructions per request |\n|---|---|")
    with bench_workdir(keep=False) as workdir, redis_server(workdir) as (_proc, port):
        for name in apps:
            short = instructions(name, port, args.cycles, workdir)
            long = instructions(name, port, 5 * args.cycles, workdir)
            print(f"| {name} | {(long - short) / (3 * 4 * args.cycles):,.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
