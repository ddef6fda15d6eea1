#!/usr/bin/env python3
"""Benchmark of the API's checkout → get → delete cycle over real HTTP.

Starts a private redis-server and ``vmpooler api`` on free ports (nothing else is touched), fills one
pool with enough ready VMs for the whole run, then measures:

* sequential: median and p99 latency of each request of the cycle;
* throughput: requests/s of the cycle mix with 1, 4 and 16 (``--clients``) concurrent keep-alive
  connections, the p99 latency, and the CPU time the API processes, redis-server and the load
  generator spent per request meanwhile. Each connection is a client process (``http.client``, so the
  client side is not held back by one GIL); ``--one-generator`` drives them all from one process on
  one ``epoll`` loop instead (raw HTTP/1.1, about a tenth of the clients' CPU, so the servers get the
  cores). ``--redis-unix``: ours and the one-round-trip ceiling reach Redis on its unix socket.

``--ceiling`` also starts ``scripts/ceiling_api.py`` twice (Falcon on waitress laid out the same way,
serving through the API worker's channel and connection board, or with ``--bare-ceiling`` as waitress
itself serves; canned answers): with no Redis at all, and with one Redis round trip a request through
the API's own client (the ceiling of any API that must touch Redis), and prints ours / each. The
throughput runs take the servers in turn, ``--rounds`` of each at every client count, and a ratio
printed is the median of the rounds' ratios: on a shared machine whose speed drifts by tens of percent
from one minute to the next, runs taken minutes apart compare the machine, not the servers.

``--rate-limit`` runs the same with rate limiting on, at limits far above the load (every request
then also runs the rate limit script).

``--statsd`` runs it with every metric on: a ``:statsd:`` sink pointed at a UDP listener this script
starts (a thread that counts the lines and datagrams), and ``usage_stats: true``.

Usage: ``python scripts/bench_api.py [--workers N] [--seconds S] [--cycles N] [--clients 1,4,16]
[--rounds R] [--one-generator] [--redis-unix] [--ceiling] [--bare-ceiling] [--rate-limit] [--statsd]``;
it prints Markdown tables for docs/performance.md. ``VMPOOLER_API_THREADS`` sizes both servers' threads.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import os
import resource
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import redis

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchlib import free_port, pct, redis_server  # noqa: E402
from ceiling_api import ROUND_TRIP_VM  # noqa: E402

from vmpooler import keys  # noqa: E402
from vmpooler.config.env import env_value  # noqa: E402
from vmpooler.http.serve import API_THREADS  # noqa: E402

POOL = "bench"
CLIENTS = (1, 4, 16)
_VM_FIELDS: dict[Any, Any] = {"template": POOL, "pool": POOL}  # a VM's hash as fill() writes it
MAX_CYCLES_PER_SECOND = 2500  # more than the API serves here (7,500 requests/s): VMs enough for a run
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
            pipe.hset(keys.vm_hash(vm), mapping=_VM_FIELDS)
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


def _own_cpu() -> float:
    """User + system CPU seconds this process has spent."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _client_proc(port: int, seconds: float, start_at: float, out: multiprocessing.Queue) -> None:
    client = Client(port)
    client.cycle()  # connect and warm up
    while time.time() < start_at:
        time.sleep(0.001)
    done = 0
    end = start_at + seconds
    timings: list[list[float]] = [[], [], []]
    before = _own_cpu()
    while time.time() < end:
        done += client.cycle(timings)
    cpu = _own_cpu() - before
    out.put((done, cpu, [t for kind in timings for t in kind]))


_CHECKOUT = f"POST /api/v3/vm/{POOL} HTTP/1.1\r\nHost: bench\r\nContent-Length: 0\r\n\r\n".encode()
_HOSTNAME = b'"hostname": "'


class _Connection:
    """One keep-alive connection of the event-loop load generator: checkout → get → delete, in turn."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.step = 0  # 0 checkout, 1 get, 2 delete
        self.vm = b""
        self.buf = b""
        self.sent_at = 0.0

    def send(self) -> None:
        if self.step == 0:
            request = _CHECKOUT
        else:
            method = b"GET" if self.step == 1 else b"DELETE"
            request = b"%s /api/v3/vm/%s HTTP/1.1\r\nHost: bench\r\nContent-Length: 0\r\n\r\n" % (
                method,
                self.vm,
            )
        self.sent_at = time.perf_counter()
        self.sock.send(request)  # a few dozen bytes into an empty send buffer: all of it

    def received(self, data: bytes) -> bool:
        """Add ``data``; True when it completed the response (then the next step is set)."""
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = self.buf[:end]
        start = head.find(b"Content-Length: ") + 16
        length = int(head[start : head.find(b"\r\n", start)])
        if len(self.buf) < end + 4 + length:
            return False
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"request {self.step} of the cycle failed: {self.buf!r}")
        if self.step == 0:
            body = self.buf[end + 4 :]
            at = body.index(_HOSTNAME) + len(_HOSTNAME)
            self.vm = body[at : body.index(b".", at)]
        self.buf = b""
        self.step = (self.step + 1) % 3
        return True


def _loop_client_proc(
    port: int, connections: int, seconds: float, start_at: float, out: multiprocessing.Queue
) -> None:
    """The load generator: one process, ``connections`` keep-alive connections on one epoll loop."""
    conns = [_Connection(port) for _ in range(connections)]
    by_fd = {conn.sock.fileno(): conn for conn in conns}
    poller = select.epoll()
    for fd in by_fd:
        poller.register(fd, select.EPOLLIN)
    while time.time() < start_at:
        time.sleep(0.001)
    end = start_at + seconds
    latencies: list[float] = []
    before = _own_cpu()
    for conn in conns:
        conn.send()
    now = time.perf_counter()
    stop_at = now + (end - time.time())
    while now < stop_at:
        for fd, _events in poller.poll(1.0):
            conn = by_fd[fd]
            data = conn.sock.recv(65536)
            if not data:
                raise RuntimeError("the server closed a connection")
            if conn.received(data):
                now = time.perf_counter()
                latencies.append(now - conn.sent_at)
                conn.send()
        now = time.perf_counter()
    cpu = _own_cpu() - before
    for conn in conns:
        conn.sock.close()
    out.put((len(latencies), cpu, latencies))


@attrs.frozen
class Rate:
    """One throughput run: requests/s, CPU µs per request of the API processes, of redis-server and of
    the load generator's client processes, and the p99 latency (ms) of every request made."""

    rps: float
    api_cpu: float
    redis_cpu: float
    client_cpu: float
    p99: float


def throughput(
    port: int, clients: int, seconds: float, pids: tuple[int, int | None], *, one_generator: bool = False
) -> Rate:
    """One run of ``clients`` connections against ``port``, a client process each (or with
    ``one_generator`` all in one process on one event loop); ``pids``: the API's and redis-server's
    (None: no redis, as for the ceiling), whose CPU is measured meanwhile."""
    queue: multiprocessing.Queue = multiprocessing.Queue()
    start_at = time.time() + 1.0
    if not one_generator:
        procs = [
            multiprocessing.Process(target=_client_proc, args=(port, seconds, start_at, queue))
            for _ in range(clients)
        ]
    else:
        procs = [
            multiprocessing.Process(target=_loop_client_proc, args=(port, clients, seconds, start_at, queue))
        ]
    for proc in procs:
        proc.start()
    time.sleep(max(0.0, start_at - time.time()))
    before = [cpu_seconds(pid) if pid else 0.0 for pid in pids]
    results = [queue.get(timeout=seconds + 60) for _ in procs]
    after = [cpu_seconds(pid) if pid else 0.0 for pid in pids]
    total = sum(done for done, _cpu, _latencies in results)
    latencies = [t for _done, _cpu, each in results for t in each]
    for proc in procs:
        proc.join()
    api_cpu, redis_cpu = (1e6 * (b - a) / total for a, b in zip(before, after, strict=True))
    client_cpu = 1e6 * sum(cpu for _done, cpu, _latencies in results) / total
    return Rate(total / seconds, api_cpu, redis_cpu, client_cpu, pct(latencies, 0.99) * 1000)


def median_rate(runs: list[Rate]) -> Rate:
    """Each column's median over the rounds."""
    return Rate(*(statistics.median(getattr(r, f.name) for r in runs) for f in attrs.fields(Rate)))


@contextlib.contextmanager
def serve_ours(
    args: argparse.Namespace, workdir: Path, redis_url: str, statsd_port: int | None
) -> Iterator[tuple[int, int]]:
    """``vmpooler api`` on the private Redis at ``redis_url``: its port and pid."""
    api_port = free_port()
    config = workdir / "vmpooler.yaml"
    text = (
        f":config:\n  api_workers: {args.workers}\n:redis:\n  url: {redis_url}\n"
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
    command = [sys.executable, "-m", "vmpooler", "api", "--config", str(config)]
    api = subprocess.Popen(
        [*command, "--bind", "127.0.0.1", "--port", str(api_port)],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_http(api_port)
        yield api_port, api.pid
    finally:
        api.terminate()
        api.wait(20)


@contextlib.contextmanager
def serve_ceiling(args: argparse.Namespace, redis_url: str | None = None) -> Iterator[tuple[int, int]]:
    """``scripts/ceiling_api.py`` (the stack alone, canned answers; with ``redis_url``, one Redis round
    trip per request) laid out as ``vmpooler api`` is: its port and pid."""
    port = free_port()
    threads = str(env_value("VMPOOLER_API_THREADS", API_THREADS, minimum=1))
    ceiling = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "scripts" / "ceiling_api.py"),
            *("--port", str(port), "--workers", str(args.workers), "--threads", threads),
            *(("--redis-url", redis_url) if redis_url else ()),
            *(("--plain-waitress", "--unbalanced") if args.bare_ceiling else ()),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_http(port)
        yield port, ceiling.pid
    finally:
        ceiling.terminate()
        ceiling.wait(20)


def sequential(port: int, cycles: int) -> list[list[float]]:
    """Each request's latencies over ``cycles`` cycles on one connection, after a warm-up."""
    seq = Client(port)
    for _ in range(100):
        seq.cycle()
    timings: list[list[float]] = [[], [], []]
    for _ in range(cycles):
        seq.cycle(timings)
    return timings


def measure_all(
    args: argparse.Namespace, servers: dict[str, tuple[int, tuple[int, int | None]]]
) -> dict[str, tuple[list[list[float]], dict[int, list[Rate]]]]:
    """For each server (name: port and pids), the sequential timings, then its throughput runs: at
    each client count, ``--rounds`` rounds that take the servers in turn, so a machine whose speed
    drifts (a shared one) weighs on each alike."""
    results: dict[str, tuple[list[list[float]], dict[int, list[Rate]]]] = {
        name: (sequential(port, args.cycles), {}) for name, (port, _pids) in servers.items()
    }
    for n in args.clients:
        for _ in range(args.rounds):
            for name, (port, pids) in servers.items():
                rate = throughput(port, n, args.seconds, pids, one_generator=args.one_generator)
                results[name][1].setdefault(n, []).append(rate)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="API worker processes")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each throughput run")
    parser.add_argument("--cycles", type=int, default=2000, help="sequential cycles")
    parser.add_argument(
        "--clients",
        type=lambda text: tuple(int(n) for n in text.split(",")),
        default=CLIENTS,
        help="concurrent clients of the throughput runs, comma-separated (default 1,4,16)",
    )
    parser.add_argument(
        "--bare-ceiling",
        action="store_true",
        help="the ceilings serve as bare Falcon on waitress do (waitress's own channel and accepts), "
        "not through the API worker's channel and connection board",
    )
    parser.add_argument(
        "--redis-unix",
        action="store_true",
        help="ours and the one-round-trip ceiling reach Redis on its unix socket (as the embedded Redis "
        "of the default install is reached) instead of TCP on loopback",
    )
    parser.add_argument(
        "--one-generator",
        action="store_true",
        help="one load generator process driving every connection from an epoll loop, instead of a "
        "client process (http.client) per connection",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="throughput runs per client count (default 1; 3 with --ceiling)",
    )
    parser.add_argument(
        "--rate-limit", action="store_true", help="rate limiting on, limits far above the load"
    )
    parser.add_argument(
        "--statsd", action="store_true", help="every metric on: a statsd sink (local listener), usage_stats"
    )
    parser.add_argument(
        "--ceiling",
        action="store_true",
        help="also measure the bare stack (scripts/ceiling_api.py: Falcon + waitress, canned answers), "
        "in rounds taken in turn with ours, and print ours / ceiling",
    )
    args = parser.parse_args()
    if args.rounds is None:
        args.rounds = 3 if args.ceiling else 1

    listener = StatsdListener() if args.statsd else None
    try:
        with contextlib.ExitStack() as stack:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vmpooler-bench-")))
            unix = workdir / "redis.sock" if args.redis_unix else None
            redis_proc, redis_port = stack.enter_context(redis_server(workdir, unix))
            url = f"unix://{unix}" if unix else f"redis://127.0.0.1:{redis_port}/0"
            per_run = int(args.seconds * MAX_CYCLES_PER_SECOND)
            fill(redis.Redis(port=redis_port), args.cycles + 100 + per_run * len(args.clients) * args.rounds)
            statsd_port = listener.port if listener is not None else None
            port, pid = stack.enter_context(serve_ours(args, workdir, url, statsd_port))
            servers: dict[str, tuple[int, tuple[int, int | None]]] = {
                "vmpooler": (port, (pid, redis_proc.pid))
            }
            if args.ceiling:
                port, pid = stack.enter_context(serve_ceiling(args))
                servers["ceiling"] = (port, (pid, None))
                redis.Redis(port=redis_port).hset(keys.vm_hash(ROUND_TRIP_VM), mapping=_VM_FIELDS)
                port, pid = stack.enter_context(serve_ceiling(args, url))
                servers["ceiling + redis"] = (port, (pid, redis_proc.pid))
            results = measure_all(args, servers)
    finally:
        if listener is not None:
            listener.close()

    cpu = os.cpu_count()
    limiting = "on (limits far above the load)" if args.rate_limit else "off"
    threads = env_value("VMPOOLER_API_THREADS", API_THREADS, minimum=1)
    print(f"API workers: {args.workers} x {threads} threads, cores: {cpu}, python {sys.version.split()[0]}")
    print(f"rate limiting: {limiting}")
    print(f"redis: {'its unix socket' if args.redis_unix else 'TCP on loopback'}")
    if args.ceiling:
        serving = "bare waitress" if args.bare_ceiling else "the API worker's channel and connection board"
        print(f"ceilings serve through: {serving}")
    print(f"load: {'one generator process' if args.one_generator else 'a client process per connection'}")
    if listener is not None:
        print(
            f"metrics: statsd sink and usage_stats on, {listener.lines} lines received in "
            f"{listener.datagrams} datagrams"
        )
    else:
        print("metrics: Prometheus only (no sink), usage_stats off")
    titles = {
        "vmpooler": "vmpooler",
        "ceiling": "ceiling (scripts/ceiling_api.py: the same stack, canned answers, no Redis)",
        "ceiling + redis": "ceiling + one Redis round trip a request (ceiling_api.py --redis-url)",
    }
    for name, (timings, rates) in results.items():
        print_tables(titles[name], args, timings, rates)
    if args.ceiling:
        for baseline in ("ceiling", "ceiling + redis"):
            print_ratios(args, baseline, results["vmpooler"][1], results[baseline][1])
    return 0


def print_tables(
    title: str,
    args: argparse.Namespace,
    timings: list[list[float]],
    rates: dict[int, list[Rate]],
) -> None:
    print(f"\n## {title}\n\nsequential, {args.cycles} cycles (ms)\n")
    print("| request | median | p99 |\n|---|---|---|")
    for name, values in zip(
        ("checkout (POST /vm/<pool>)", "get (GET /vm/<host>)", "delete (DELETE /vm/<host>)"),
        timings,
        strict=True,
    ):
        print(f"| {name} | {statistics.median(values) * 1000:.2f} | {pct(values, 0.99) * 1000:.2f} |")
    rounds = f", median of {args.rounds} rounds" if args.rounds > 1 else ""
    print(f"\nthroughput of the cycle mix, {args.seconds:g} s per run{rounds}\n")
    print(
        "| clients | requests/s | p99 ms | API CPU µs/request | redis CPU µs/request "
        "| client CPU µs/request |\n|---|---|---|---|---|---|"
    )
    for n, runs in rates.items():
        r = median_rate(runs)
        print(
            f"| {n} | {r.rps:.0f} | {r.p99:.1f} | {r.api_cpu:.0f} | {r.redis_cpu:.0f} | {r.client_cpu:.0f} |"
        )


def print_ratios(
    args: argparse.Namespace, baseline: str, ours: dict[int, list[Rate]], top: dict[int, list[Rate]]
) -> None:
    print(f"\nours / {baseline}, {args.rounds} round(s) taken in turn (the median of the rounds' ratios)\n")
    print(
        f"| clients | throughput | each round | p99 ms (ours / {baseline}) "
        f"| server CPU µs/request, API + redis (ours / {baseline}) |\n|---|---|---|---|---|"
    )
    for n in args.clients:
        ratios = [a.rps / b.rps for a, b in zip(ours[n], top[n], strict=True)]
        mine, theirs = median_rate(ours[n]), median_rate(top[n])
        print(
            f"| {n} | {statistics.median(ratios):.2f} | {', '.join(f'{r:.2f}' for r in ratios)} "
            f"| {mine.p99:.1f} / {theirs.p99:.1f} "
            f"| {mine.api_cpu + mine.redis_cpu:.0f} / {theirs.api_cpu + theirs.redis_cpu:.0f} |"
        )


if __name__ == "__main__":
    sys.exit(main())
