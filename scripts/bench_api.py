#!/usr/bin/env python3
"""Benchmark of the API's checkout → get → delete cycle over real HTTP.

Starts a private redis-server and ``vmpooler api`` on free ports (nothing else is touched), fills one
pool with enough ready VMs for the whole run, then measures:

* sequential: median and p99 latency of each request of the cycle;
* throughput: requests/s of the cycle mix with 1, 4 and 16 concurrent keep-alive clients
  (client processes, so the client side is not held back by one GIL), and the CPU time the API
  processes and redis-server spent per request meanwhile.

``--rate-limit`` runs the same with rate limiting on, at limits far above the load (every request
then also runs the rate limit script).

``--statsd`` runs it with every metric on: a ``:statsd:`` sink pointed at a UDP listener this script
starts (a thread that counts the lines and datagrams), and ``usage_stats: true``.

Usage: ``python scripts/bench_api.py [--workers N] [--seconds S] [--cycles N] [--rate-limit]
[--statsd]``; it prints a Markdown table for docs/performance.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchlib import free_port, pct, redis_server  # noqa: E402

from vmpooler import keys  # noqa: E402

POOL = "bench"
_TICK = os.sysconf("SC_CLK_TCK")
# Limits no benchmark reaches: what is measured is the cost of counting every request.
RATE_LIMITS = "".join(
    f"  {kind}: {{limit: 1000000000, period: 3600}}\n"
    for kind in ("vm_creation", "vm_deletion", "authenticated", "global_per_ip")
)


class StatsdListener:
    """A UDP socket on a free loopback port, drained by a thread that counts the datagrams."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.datagrams = 0
        self.lines = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            self.datagrams += 1
            self.lines += data.count(b"\n") + 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its children (an API supervisor and its workers)."""
    total = 0.0
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    for one in (pid, *map(int, children)):
        fields = Path(f"/proc/{one}/stat").read_text().rpartition(")")[2].split()
        total += (int(fields[11]) + int(fields[12])) / _TICK
    return total


def wait_http(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/healthcheck")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("vmpooler did not start")


def fill(client: redis.Redis, count: int) -> None:
    """``count`` ready VMs with the metadata the manager would have written."""
    client.flushdb()
    with client.pipeline(transaction=False) as pipe:
        for i in range(count):
            vm = f"bench-{i:07d}"
            pipe.sadd(keys.ready_set(POOL), vm)
            pipe.hset(keys.vm_hash(vm), mapping={"template": POOL, "pool": POOL})
            if i % 5000 == 4999:
                pipe.execute()
        pipe.execute()


class Client:
    """One keep-alive HTTP connection doing checkout → get → delete cycles."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(self, method: str, path: str) -> tuple[int, bytes]:
        self.conn.request(method, path, headers={"Content-Length": "0"} if method != "GET" else {})
        resp = self.conn.getresponse()
        return resp.status, resp.read()

    def cycle(self, timings: list[list[float]] | None = None) -> int:
        t0 = time.perf_counter()
        status, body = self.call("POST", f"/api/v3/vm/{POOL}")
        t1 = time.perf_counter()
        if status != 200:
            raise RuntimeError(f"checkout failed: {status} {body!r}")
        vm = json.loads(body)[POOL]["hostname"].split(".")[0]
        status, _ = self.call("GET", f"/api/v3/vm/{vm}")
        t2 = time.perf_counter()
        status2, _ = self.call("DELETE", f"/api/v3/vm/{vm}")
        t3 = time.perf_counter()
        if status != 200 or status2 != 200:
            raise RuntimeError(f"get/delete failed: {status} {status2}")
        if timings is not None:
            timings[0].append(t1 - t0)
            timings[1].append(t2 - t1)
            timings[2].append(t3 - t2)
        return 3


def _client_proc(port: int, seconds: float, start_at: float, out: multiprocessing.Queue) -> None:
    client = Client(port)
    client.cycle()  # connect and warm up
    while time.time() < start_at:
        time.sleep(0.001)
    done = 0
    end = start_at + seconds
    timings: list[list[float]] = [[], [], []]
    while time.time() < end:
        done += client.cycle(timings)
    out.put((done, [t for kind in timings for t in kind]))


Rate = tuple[float, float, float, float]
"""Requests/s, API CPU µs/request, redis CPU µs/request, p99 latency (ms) of one throughput run."""


def throughput(port: int, clients: int, seconds: float, pids: tuple[int, int | None]) -> Rate:
    """Requests/s, CPU µs per request of the API processes and of redis-server (``pids``; None: no
    redis, as for the ceiling), and the p99 latency of every request the clients made meanwhile."""
    queue: multiprocessing.Queue = multiprocessing.Queue()
    start_at = time.time() + 1.0
    procs = [
        multiprocessing.Process(target=_client_proc, args=(port, seconds, start_at, queue))
        for _ in range(clients)
    ]
    for proc in procs:
        proc.start()
    time.sleep(max(0.0, start_at - time.time()))
    before = [cpu_seconds(pid) if pid else 0.0 for pid in pids]
    results = [queue.get(timeout=seconds + 60) for _ in procs]
    after = [cpu_seconds(pid) if pid else 0.0 for pid in pids]
    total = sum(done for done, _latencies in results)
    latencies = [t for _done, each in results for t in each]
    for proc in procs:
        proc.join()
    api_cpu, redis_cpu = (1e6 * (b - a) / total for a, b in zip(before, after, strict=True))
    return total / seconds, api_cpu, redis_cpu, pct(latencies, 0.99) * 1000


def run(
    args: argparse.Namespace,
    workdir: Path,
    redis_proc: subprocess.Popen[bytes],
    redis_port: int,
    statsd_port: int | None = None,
) -> tuple[list[list[float]], dict[int, Rate]]:
    """Start ``vmpooler api`` on the private Redis, then time the sequential and concurrent runs."""
    api_port = free_port()
    config = workdir / "vmpooler.yaml"
    text = (
        f":config:\n  api_workers: {args.workers}\n:redis:\n  url: redis://127.0.0.1:{redis_port}/0\n"
        ":dns_configs:\n  example:\n    dns_class: dynamic-dns\n    domain: example.com\n"
        f":pools:\n  - name: {POOL}\n    template: templates/{POOL}\n    size: 10\n    dns_plugin: example\n"
    )
    if args.rate_limit:
        text = text.replace(":config:\n", ":config:\n  rate_limiting_enabled: true\n")
        text += f":rate_limits:\n{RATE_LIMITS}"
    if statsd_port is not None:
        text = text.replace(":config:\n", ":config:\n  usage_stats: true\n")
        text += f":statsd:\n  server: 127.0.0.1\n  port: {statsd_port}\n"
    config.write_text(text)
    # no config from the environment, but the worker sizing knobs pass (docs/performance.md sizes them)
    kept = ("VMPOOLER_API_THREADS", "VMPOOLER_SWITCH_INTERVAL")
    env = {k: v for k, v in os.environ.items() if not k.startswith("VMPOOLER_") or k in kept}
    env["VMPOOLER_LOG_LEVEL"] = "WARNING"
    api = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vmpooler",
            "api",
            "--config",
            str(config),
            "--bind",
            "127.0.0.1",
            "--port",
            str(api_port),
        ],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    try:
        fill(redis.Redis(port=redis_port), args.cycles + 100 + int(args.seconds * 4000 * 3))
        return measure(args, api_port, (api.pid, redis_proc.pid))
    finally:
        api.terminate()
        api.wait(20)


def measure(
    args: argparse.Namespace, port: int, pids: tuple[int, int | None]
) -> tuple[list[list[float]], dict[int, Rate]]:
    """The sequential timings and the throughput runs against the API on ``port``."""
    wait_http(port)
    seq = Client(port)
    for _ in range(100):
        seq.cycle()
    timings: list[list[float]] = [[], [], []]
    for _ in range(args.cycles):
        seq.cycle(timings)
    rates = {n: throughput(port, n, args.seconds, pids) for n in (1, 4, 16)}
    return timings, rates


def run_ceiling(
    args: argparse.Namespace,
) -> tuple[list[list[float]], dict[int, Rate]]:
    """The same measurements against ``scripts/ceiling_api.py`` (the stack alone, canned answers)."""
    port = free_port()
    env = {**os.environ, "VMPOOLER_API_THREADS": os.environ.get("VMPOOLER_API_THREADS", "8")}
    threads = env["VMPOOLER_API_THREADS"]
    ceiling = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "scripts" / "ceiling_api.py"),
            *("--port", str(port), "--workers", str(args.workers), "--threads", threads),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    try:
        return measure(args, port, (ceiling.pid, None))
    finally:
        ceiling.terminate()
        ceiling.wait(20)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="API worker processes")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each throughput run")
    parser.add_argument("--cycles", type=int, default=2000, help="sequential cycles")
    parser.add_argument(
        "--rate-limit", action="store_true", help="rate limiting on, limits far above the load"
    )
    parser.add_argument(
        "--statsd", action="store_true", help="every metric on: a statsd sink (local listener), usage_stats"
    )
    parser.add_argument(
        "--ceiling",
        action="store_true",
        help="also measure the bare stack (scripts/ceiling_api.py: Falcon + waitress, canned answers) and "
        "print ours / ceiling",
    )
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="vmpooler-bench-"))
    listener = StatsdListener() if args.statsd else None
    try:
        with redis_server(workdir) as (redis_proc, redis_port):
            timings, rates = run(
                args, workdir, redis_proc, redis_port, listener.port if listener is not None else None
            )
        ceiling = run_ceiling(args) if args.ceiling else None
    finally:
        if listener is not None:
            listener.close()
        shutil.rmtree(workdir, ignore_errors=True)

    cpu = os.cpu_count()
    limiting = "on (limits far above the load)" if args.rate_limit else "off"
    print(f"API workers: {args.workers}, cores: {cpu}, python {sys.version.split()[0]}")
    print(f"rate limiting: {limiting}")
    if listener is not None:
        print(
            f"metrics: statsd sink and usage_stats on, {listener.lines} lines received in "
            f"{listener.datagrams} datagrams"
        )
    else:
        print("metrics: Prometheus only (no sink), usage_stats off")
    print_tables("vmpooler", args, timings, rates)
    if ceiling is not None:
        print_tables(
            "ceiling (scripts/ceiling_api.py: the same stack, canned answers, no Redis)", args, *ceiling
        )
        print("\nours / ceiling\n")
        print("| clients | throughput | server CPU µs/request (ours / ceiling) |\n|---|---|---|")
        for n, (rate, api_cpu, redis_cpu, _p99) in rates.items():
            top, top_cpu, _, _ = ceiling[1][n]
            print(f"| {n} | {rate / top:.2f} | {api_cpu + redis_cpu:.0f} / {top_cpu:.0f} |")
    return 0


def print_tables(
    title: str,
    args: argparse.Namespace,
    timings: list[list[float]],
    rates: dict[int, Rate],
) -> None:
    print(f"\n## {title}\n\nsequential, {args.cycles} cycles (ms)\n")
    print("| request | median | p99 |\n|---|---|---|")
    for name, values in zip(
        ("checkout (POST /vm/<pool>)", "get (GET /vm/<host>)", "delete (DELETE /vm/<host>)"),
        timings,
        strict=True,
    ):
        print(f"| {name} | {statistics.median(values) * 1000:.2f} | {pct(values, 0.99) * 1000:.2f} |")
    print(f"\nthroughput of the cycle mix, {args.seconds:.0f} s per run\n")
    print(
        "| clients | requests/s | p99 ms | API CPU µs/request | redis CPU µs/request |\n|---|---|---|---|---|"
    )
    for n, (rate, api_cpu, redis_cpu, p99) in rates.items():
        print(f"| {n} | {rate:.0f} | {p99:.1f} | {api_cpu:.0f} | {redis_cpu:.0f} |")


if __name__ == "__main__":
    sys.exit(main())
