#!/usr/bin/env python3
"""Benchmark of waiting checkouts: many ``POST /api/v3/vm/<pool>?wait=`` served as VMs turn ready.

Starts a private redis-server and ``vmpooler api`` (API workers only, no manager) on free loopback
ports, on a config written to a temp dir (nothing else is touched): one pool of size 0,
``api_workers: --workers``, ``queue_waiters`` ``--queue-waiters`` per worker (default max(600,
1.2 × waiters / workers): the shared listening socket does not split the connections evenly). Then:

1. baseline: ``GET /api/v3/status`` every ``--status-every`` s on one keep-alive connection, for
   ``--baseline`` s, before any waiter exists (the poller keeps going to the end; its latencies are
   reported by phase);
2. ``--waiters`` client threads connect (one keep-alive connection each, warmed up with
   ``GET /healthcheck``), then POST ``/api/v3/vm/<pool>?wait=120`` at once; once
   ``ZCARD vmpooler__queue`` is that many, all wait ``--hold`` s;
3. this script acts as the manager: ``--rate`` VMs a second (``--burst`` back to back at a time) it puts
   a fresh VM in ``pending`` (``store.vms.create_pending``) and makes it ready as the manager's VMActor
   does, ``store.vms.become_ready(..., after=lambda pipe: store.queue.dispatch_after(pipe, settings,
   now=...))``: the dispatch script runs in the same MULTI and hands the VM to the first waiter. The time
   just before that call is the VM's ready time; each waiter's thread records when its 200 arrived and
   its hostname, so ready → response is measured per VM, and split at the end of the call;
4. checks: every waiter answered 200 with one hostname, all distinct and all made ready by this run, the
   queue and the ready set empty, every VM running, no WARNING+ line in the service's log.

Server side, Redis's SLOWLOG gives the dispatch script's own execution time (its EVALSHA, found by its
SHA) and what else Redis executed: every command while the waiters arrive, commands of 20 µs or more
while VMs are released (``--profile``: every command there too, and what each dispatch ran, the commands
a script runs being logged just before it; this slows the dispatch down a little). The CPU of
redis-server, each API worker, this script and the rest of the machine is read from /proc per phase.

Usage: ``python scripts/bench_queue.py [--waiters 1000] [--rate 100] [--burst 1] [--workers 2]
[--profile]``. Goals: ready → response p99 ≤ 50 ms, and ``/status`` p99 ≤ 50 ms while VMs are released.
Ctrl-C (or SIGTERM) stops the service and redis-server and removes the temp dir.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import redis

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchlib import bench_workdir, free_port, pct, redis_server, start_group, stop_group  # noqa: E402

from vmpooler import keys  # noqa: E402
from vmpooler.config import load_config  # noqa: E402
from vmpooler.store import Store  # noqa: E402
from vmpooler.store.queue import QueueSettings  # noqa: E402
from vmpooler.timeutil import format_time  # noqa: E402

POOL = "qbench"
WAIT = 120
# SLOWLOG threshold (µs) in the release phase: above the ~1 µs commands a dispatch runs by the thousand
# (logging each would slow the dispatch down), below any dispatch that walks a queue. --profile: 0.
SLOW_US = 20
_TICK = os.sysconf("SC_CLK_TCK")


# -- the service -----------------------------------------------------------------------------------


def config_yaml(args: argparse.Namespace, redis_port: int) -> str:
    return (
        f"---\n:config:\n  api_workers: {args.workers}\n  queue_waiters: {args.queue_waiters}\n"
        f":redis:\n  url: redis://127.0.0.1:{redis_port}/0\n"
        ":providers:\n  :dummy: {}\n"
        ":dns_configs:\n  example:\n    dns_class: dynamic-dns\n    domain: example.com\n"
        f":pools:\n  - name: {POOL}\n    template: templates/{POOL}\n    size: 0\n    provider: dummy\n"
        "    dns_plugin: example\n"
    )


def wait_http(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/healthcheck")
            if conn.getresponse().status == 200:
                conn.close()
                return
        except OSError:
            pass
        time.sleep(0.1)
    tail = log.read_text(errors="replace").splitlines()[-30:]
    raise SystemExit("vmpooler api did not start; log tail:\n" + "\n".join(tail))


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / _TICK


def machine_cpu() -> dict[str, float]:
    """CPU seconds of the whole machine: all cores busy (user, nice, system, irq, softirq) and stolen."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return {
        "machine busy": sum(fields[i] for i in (0, 1, 2, 5, 6)) / _TICK,
        "machine steal": fields[7] / _TICK,
    }


def api_workers(supervisor: int, want: int, timeout: float = 30) -> list[int]:
    """The pids of the API worker processes (the supervisor's children that are not helpers)."""
    deadline = time.monotonic() + timeout
    while True:
        pids = [
            pid
            for pid in children(supervisor)
            if "api" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            or "api" in Path(f"/proc/{pid}/comm").read_text()
        ]
        if len(pids) >= want or time.monotonic() > deadline:
            return pids or children(supervisor)
        time.sleep(0.1)


# -- the clients -----------------------------------------------------------------------------------


class StatusPoller(threading.Thread):
    """``GET /api/v3/status`` every ``every`` s on its own keep-alive connection; (start, seconds, status)."""

    def __init__(self, port: int, every: float) -> None:
        super().__init__(daemon=True, name="status-poller")
        self.port = port
        self.every = every
        self.samples: list[tuple[float, float, int]] = []
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        next_at = time.monotonic()
        while not self.stop.is_set():
            t0 = time.monotonic()
            try:
                conn.request("GET", "/api/v3/status")
                resp = conn.getresponse()
                resp.read()
                self.samples.append((t0, time.monotonic() - t0, resp.status))
            except (OSError, http.client.HTTPException) as exc:
                self.errors.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            next_at += self.every
            self.stop.wait(max(0.0, next_at - time.monotonic()))
        conn.close()


class Waiter(threading.Thread):
    """One keep-alive connection: warm up, wait for the start, POST one waiting checkout, record its
    answer (arrival time and hostname)."""

    def __init__(self, port: int, index: int, go: threading.Event) -> None:
        super().__init__(daemon=True, name=f"waiter-{index}")
        self.port = port
        self.request_id = f"qbench-{index:06d}"
        self.go = go
        self.warm = threading.Event()
        self.sent = self.arrived = 0.0
        self.vm: str | None = None
        self.error: str | None = None

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=WAIT + 60)
        try:
            conn.request("GET", "/healthcheck")
            conn.getresponse().read()
        except (OSError, http.client.HTTPException) as exc:
            self.error = f"warm-up: {exc!r}"
        self.warm.set()
        self.go.wait()
        if self.error:
            return
        try:
            self.sent = time.monotonic()
            conn.request(
                "POST",
                f"/api/v3/vm/{POOL}?wait={WAIT}&request_id={self.request_id}",
                headers={"Content-Length": "0"},
            )
            resp = conn.getresponse()
            body = resp.read()
            self.arrived = time.monotonic()
            if resp.status != 200:
                self.error = f"POST answered {resp.status}: {body[:200]!r}"
                return
            host = json.loads(body)[POOL]["hostname"]
            if not isinstance(host, str):
                self.error = f"not one hostname: {host!r}"
                return
            self.vm = host.split(".", 1)[0]
        except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
            self.error = f"POST: {exc!r}"
        finally:
            conn.close()


# -- one run ---------------------------------------------------------------------------------------


def wait_queue(client: redis.Redis, want: int, waiters: list[Waiter], timeout: float) -> float:
    """Until ``ZCARD vmpooler__queue`` is ``want``; the time it got there."""
    deadline = time.monotonic() + timeout
    while True:
        depth = client.zcard(keys.QUEUE)
        now = time.monotonic()
        if depth >= want:
            return now
        failed = [w.error for w in waiters if w.error]
        if failed:
            raise SystemExit(
                f"{len(failed)} waiter(s) failed before the queue filled ({depth}), first: {failed[0]}"
            )
        if now > deadline:
            raise SystemExit(f"the queue holds {depth} of {want} waiters after {timeout:g} s")
        time.sleep(0.02)


def release(
    store: Store, settings: QueueSettings, template: str, args: argparse.Namespace, waiters: list[Waiter]
) -> tuple[dict[str, float], dict[str, float], list[float], float]:
    """Make ``--waiters`` VMs ready, ``--burst`` at a time, ``--rate`` a second on average, then wait until
    every waiter is answered (or ``--timeout``). Returns each VM's ready time (just before its
    become_ready + dispatch call) and call end, each call's seconds, and the time the last was answered."""
    ready_at: dict[str, float] = {}
    call_end: dict[str, float] = {}
    calls: list[float] = []
    start = time.monotonic()
    for i in range(args.waiters):
        vm = f"qb-{i:06d}"
        stamp = format_time(time.time())
        store.vms.create_pending(
            POOL, vm, {"clone": stamp, "template": POOL, "pool": POOL, "clone_template": template}
        )

        def dispatch(pipe: Any, stamp: str = stamp) -> None:
            store.queue.dispatch_after(pipe, settings, now=stamp)

        ready_at[vm] = t0 = time.monotonic()
        moved = store.vms.become_ready(POOL, vm, template=template, fields={"ready": stamp}, after=dispatch)
        call_end[vm] = t1 = time.monotonic()
        calls.append(t1 - t0)
        if moved is None or moved.value != "ready":
            print(f"  {vm}: become_ready returned {moved!r}", file=sys.stderr)
        if (i + 1) % args.burst == 0:
            time.sleep(max(0.0, start + (i + 1) / args.rate - time.monotonic()))
    while True:
        answered = sum(1 for w in waiters if w.arrived or w.error)
        if answered >= len(waiters):
            break
        if time.monotonic() - start > args.timeout:
            print(
                f"  gave up after {args.timeout:g} s: {answered} of {len(waiters)} answered", file=sys.stderr
            )
            break
        time.sleep(0.01)
    last = max((w.arrived for w in waiters if w.arrived), default=time.monotonic())
    return ready_at, call_end, calls, last


def take_slowlog(client: redis.Redis, sha: str) -> dict[str, Any]:
    """Read and reset SLOWLOG (threshold 0: every command, and every command a script runs, logged just
    before the script with the client address ``?:0``). Returns:

    * ``dispatch``: µs of each run of the dispatch script (found by its SHA);
    * ``inner``: per dispatch run, the commands it ran (name → count, µs);
    * ``top``: per top-level command (an EVALSHA by its script's first key) the count and total µs.
    """
    raw = client.execute_command("SLOWLOG", "GET", -1)
    client.slowlog_reset()
    dispatch: list[float] = []
    inner: list[dict[str, list[float]]] = []
    top: dict[str, list[float]] = {}
    pending: dict[str, list[float]] = {}
    for entry in sorted(raw, key=lambda e: int(e[0])):
        args = [a.decode(errors="replace") if isinstance(a, bytes) else str(a) for a in entry[3]]
        address = entry[4].decode() if isinstance(entry[4], bytes) else str(entry[4])
        name, duration = args[0].lower(), float(entry[2])
        if address == "?:0":  # run by the script logged next
            got = pending.setdefault(name, [0, 0.0])
            got[0] += 1
            got[1] += duration
            continue
        if name == "evalsha" and len(args) > 3:
            if args[1] == sha:
                name = "evalsha dispatch"
                dispatch.append(duration)
                inner.append(pending)
            else:
                first_key = args[3]
                if first_key.startswith(keys.vm_hash("")):
                    first_key = keys.vm_hash("<vm>")
                name = f"evalsha {first_key}"
        pending = {}
        top.setdefault(name, []).append(duration)
    return {"dispatch": dispatch, "inner": inner, "top": {k: (len(v), sum(v)) for k, v in top.items()}}


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    result: dict[str, Any] = {}
    with redis_server(workdir) as (redis_proc, redis_port):
        client = redis.Redis(port=redis_port, decode_responses=True)
        config_path = workdir / "vmpooler.yaml"
        config_path.write_text(config_yaml(args, redis_port))
        config = load_config(str(config_path), env={})
        pool = next(p for p in config.pools if p.name == POOL)
        settings = QueueSettings.from_config(config)
        api_port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("VMPOOLER_")}
        env["VMPOOLER_LOG_LEVEL"] = "WARNING"
        log = workdir / "api.log"
        argv = [
            sys.executable, "-m", "vmpooler", "api", "--config", str(config_path),
            "--bind", "127.0.0.1", "--port", str(api_port),
        ]  # fmt: skip
        result["service_command"] = " ".join(["vmpooler", *argv[3:]])
        proc = start_group(argv, cwd=workdir, env=env, log=log)
        poller: StatusPoller | None = None
        try:
            wait_http(api_port, proc, log)
            workers = api_workers(proc.pid, args.workers)
            pids = {
                "redis-server": redis_proc.pid,
                **{f"api worker {n}": pid for n, pid in enumerate(workers, 1)},
                "this script": os.getpid(),
            }

            def cpu() -> dict[str, float]:
                return {**{name: cpu_seconds(pid) for name, pid in pids.items()}, **machine_cpu()}

            store = Store.from_url(f"redis://127.0.0.1:{redis_port}/0", max_connections=4)
            dispatch_sha = store.queue._dispatch.sha  # the script to find in SLOWLOG
            store.queue.dispatch(settings, now=format_time(time.time()))  # loads the script (its SHA)

            poller = StatusPoller(api_port, args.status_every)
            marks: dict[str, float] = {}
            cpus: dict[str, dict[str, float]] = {}
            poller.start()
            time.sleep(0.5)  # its connection is up and warm
            marks["baseline"] = time.monotonic()
            cpus["baseline"] = cpu()
            time.sleep(args.baseline)

            marks["connect"] = time.monotonic()
            cpus["connect"] = cpu()
            go = threading.Event()
            waiters = [Waiter(api_port, i, go) for i in range(args.waiters)]
            for waiter in waiters:
                waiter.start()
            for waiter in waiters:
                waiter.warm.wait(60)
            client.config_set("slowlog-max-len", 4_000_000)
            client.config_set("slowlog-log-slower-than", 0)
            client.slowlog_reset()
            marks["enqueue"] = time.monotonic()
            cpus["enqueue"] = cpu()
            go.set()
            full = wait_queue(client, args.waiters, waiters, 90)
            marks["waiting"] = full
            cpus["waiting"] = cpu()
            ids: list[str] = client.zrange(keys.QUEUE, 0, -1)  # type: ignore[assignment]
            with client.pipeline(transaction=False) as pipe:
                for request_id in ids:
                    pipe.hget(keys.queue_request(request_id), "worker")
                owners = pipe.execute()
            result["per_worker"] = sorted((owners.count(w) for w in set(owners)), reverse=True)
            time.sleep(args.hold)

            result["slow_enqueue"] = take_slowlog(client, dispatch_sha)
            client.config_set("slowlog-log-slower-than", 0 if args.profile else SLOW_US)
            marks["release"] = time.monotonic()
            cpus["release"] = cpu()
            ready_at, call_end, calls, end = release(store, settings, pool.template, args, waiters)
            marks["end"] = end
            cpus["end"] = cpu()
            client.config_set("slowlog-log-slower-than", 1_000_000)
            time.sleep(0.3)  # a few /status samples after the last answer
            poller.stop.set()
            poller.join(10)
            for waiter in waiters:
                waiter.join(1)
            result["slow_release"] = take_slowlog(client, dispatch_sha)
            result["queue_end"] = client.zcard(keys.QUEUE)
            result["ready_end"] = client.scard(keys.ready_set(POOL))
            result["running_end"] = client.scard(keys.running_set(POOL))
            result["service_alive"] = proc.poll() is None
            result["log"] = log.read_text(errors="replace")  # the run's; what shutdown logs is apart
            store.close()
        finally:
            if poller is not None:
                poller.stop.set()
            stop_group(proc, grace=15)
            client.close()
        result.update(
            waiters=waiters,
            ready_at=ready_at,
            call_end=call_end,
            calls=calls,
            marks=marks,
            cpus=cpus,
            status=poller.samples,
            status_errors=poller.errors,
            shutdown_log=log.read_text(errors="replace")[len(result.get("log", "")) :],
        )
    return result


# -- the report ------------------------------------------------------------------------------------


def ms(values: list[float]) -> str:
    if not values:
        return "n/a"
    return (
        f"p50 {pct(values, 0.5) * 1000:.1f} / p99 {pct(values, 0.99) * 1000:.1f} / "
        f"max {max(values) * 1000:.1f} ms (n={len(values)})"
    )


PHASES = ("baseline", "connect", "enqueue", "waiting", "release", "end")  # marks; a phase runs to the next


def report(r: dict[str, Any], args: argparse.Namespace) -> int:
    redis_version = subprocess.check_output(["redis-server", "--version"]).decode().split()[2][2:]
    print(
        f"cores: {os.cpu_count()}, python {sys.version.split()[0]}, redis-server {redis_version}, "
        f"kernel {os.uname().release}"
    )
    print(f"command: .venv/bin/python scripts/bench_queue.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"service: {r['service_command']}")
    print(
        f"{args.waiters} waiting checkouts (wait={WAIT}) over {args.workers} API workers "
        f"(queue_waiters {args.queue_waiters} each; waiting per worker: {r.get('per_worker')}), one pool of "
        f"size 0; VMs made ready {args.rate:g}/s, {args.burst} at a time"
    )
    waiters: list[Waiter] = r["waiters"]
    marks = r["marks"]
    ready_at, call_end = r["ready_at"], r["call_end"]
    served = [w for w in waiters if w.vm in ready_at]
    latencies = [w.arrived - ready_at[w.vm] for w in served]
    after_call = [w.arrived - call_end[w.vm] for w in served]
    titles = {
        "baseline": "baseline, no waiter",
        "connect": f"{args.waiters} clients connect",
        "enqueue": "waiters arrive",
        "waiting": f"{args.waiters} waiting, idle",
        "release": "release",
    }
    spans = {a: marks[b] - marks[a] for a, b in itertools.pairwise(PHASES)}
    print(
        "phases (s): "
        + ", ".join(f"{titles[a]} {spans[a]:.2f}" for a in PHASES[:-1])
        + f"; the queue filled {spans['enqueue']:.2f} s after the first POST"
    )

    print("\nready → response, per VM:")
    print(f"  total                              {ms(latencies)}   goal p99 ≤ 50 ms")
    print(f"  become_ready + dispatch call       {ms(r['calls'])}   (round trip of the MULTI, this script)")
    print(f"  call returned → response arrived   {ms(after_call)}   (publish → watcher → waiter → client)")
    disp = [d / 1e6 for d in r["slow_release"]["dispatch"]]
    only = "" if args.profile else f", runs ≥ {SLOW_US} µs"
    print(f"  dispatch script in Redis           {ms(disp)}   (SLOWLOG{only}: execution only)")
    if len(disp) == len(r["calls"]) and disp:
        step = max(1, len(disp) // 5)
        cells = []
        for start in range(0, len(disp), step):
            part = disp[start : start + step]
            first, last = args.waiters - start, args.waiters - start - len(part) + 1
            cells.append(f"{first}–{last}: {statistics.mean(part) * 1000:.1f}")
        print("  dispatch mean ms by requests queued: " + ", ".join(cells))
    inner = r["slow_release"]["inner"]
    if inner and args.profile:
        totals: dict[str, list[float]] = {}
        for run in inner:
            for name, (count, spent) in run.items():
                got = totals.setdefault(name, [0, 0.0])
                got[0] += count
                got[1] += spent
        n = len(inner)
        own = sum(r["slow_release"]["dispatch"]) - sum(t for _, t in totals.values())
        parts = ", ".join(
            f"{name} {count / n:.0f} × {spent / max(1, count):.1f} µs"
            for name, (count, spent) in sorted(totals.items(), key=lambda kv: -kv[1][1])[:6]
        )
        print(f"  per dispatch run, mean of {n}: Lua itself {own / n:.0f} µs; the commands it ran: {parts}")
    enq = [d / 1e6 for d in r["slow_enqueue"]["dispatch"]]
    print(f"  (the dispatch of each enqueue, no VM ready: {ms(enq)})")

    print(f"\nGET /api/v3/status, one keep-alive client every {args.status_every * 1000:.0f} ms:")
    for a, b in itertools.pairwise(PHASES):
        values = [lat for t0, lat, _ in r["status"] if marks[a] <= t0 < marks[b]]
        goal = "   goal p99 ≤ 50 ms" if a == "release" else ""
        print(f"  {titles[a]:<26} {ms(values)}{goal}")

    print(f"\nCPU, % of one core ({os.cpu_count()} cores):")
    cpus = r["cpus"]
    print("  " + f"{'':<16}" + "".join(f"{titles[a]:>22}" for a in PHASES[:-1]))
    ours = [name for name in cpus["baseline"] if not name.startswith("machine")]
    for name in [*cpus["baseline"], "other processes"]:
        cells = []
        for a, b in itertools.pairwise(PHASES):
            if name == "other processes":  # the machine's busy time that is not this benchmark's
                used = (cpus[b]["machine busy"] - cpus[a]["machine busy"]) - sum(
                    cpus[b][n] - cpus[a][n] for n in ours
                )
            else:
                used = cpus[b][name] - cpus[a][name]
            cells.append(f"{used / max(1e-9, spans[a]) * 100:>21.0f}%")
        print(f"  {name:<16}" + "".join(cells))
    others = (cpus["end"]["machine busy"] - cpus["baseline"]["machine busy"]) - sum(
        cpus["end"][n] - cpus["baseline"][n] for n in ours
    )
    share = others / max(1e-9, marks["end"] - marks["baseline"]) / (os.cpu_count() or 1)
    if share > 0.1:
        print(
            f"  note: other processes kept {share * 100:.0f}% of the machine busy during the run: "
            "the latencies above are noisy (run again on a quiet machine)"
        )

    for phase, span in (("enqueue", marks["release"] - marks["enqueue"]), ("release", spans["release"])):
        by_name = r[f"slow_{phase}"]["top"]
        total = sum(t for _, t in by_name.values())
        only = "" if phase == "enqueue" or args.profile else f", commands ≥ {SLOW_US} µs"
        print(
            f"\nRedis, {'waiters arrive + idle' if phase == 'enqueue' else 'release'} (SLOWLOG{only}): "
            f"{total / 1e6:.3f} s executing in {span:.2f} s; top 6:"
        )
        for label, (count, spent) in sorted(by_name.items(), key=lambda kv: -kv[1][1])[:6]:
            print(f"  {label:<36} {count:6d} × {spent / max(1, count):8.1f} µs = {spent / 1e6:6.3f} s")
    return check(r, args, latencies)


def _problems(text: str) -> list[str]:
    return [
        line for line in text.splitlines() if " WARNING " in line or " ERROR " in line or "CRITICAL" in line
    ]


def check(r: dict[str, Any], args: argparse.Namespace, latencies: list[float]) -> int:
    waiters: list[Waiter] = r["waiters"]
    errors = [w.error for w in waiters if w.error]
    hosts = [w.vm for w in waiters if w.vm]
    unknown = [vm for vm in hosts if vm not in r["ready_at"]]
    notes = []
    if errors:
        notes.append(f"{len(errors)} error(s), first: {errors[0]}")
    if len(set(hosts)) != args.waiters or len(hosts) != args.waiters:
        notes.append(f"{len(hosts)} hostnames, {len(set(hosts))} distinct, not {args.waiters}")
    if unknown:
        notes.append(f"{len(unknown)} hostname(s) this run never made ready, first: {unknown[0]}")
    if r["status_errors"] or any(s != 200 for _, _, s in r["status"]):
        bad = sum(1 for _, _, s in r["status"] if s != 200)
        notes.append(f"/status: {len(r['status_errors'])} error(s), {bad} non-200")
    if r["queue_end"] or r["ready_end"] or r["running_end"] != args.waiters:
        notes.append(
            f"at the end: queue {r['queue_end']}, ready {r['ready_end']}, running {r['running_end']} "
            f"(want 0, 0, {args.waiters})"
        )
    if not r["service_alive"]:
        notes.append("the service exited during the run")
    problems = _problems(r["log"])
    if problems:
        notes.append(f"{len(problems)} WARNING+ log line(s) during the run, first: {problems[0][:200]}")
    at_stop = _problems(r.get("shutdown_log", ""))
    if at_stop:
        print(
            f"\nnote: {len(at_stop)} WARNING+ log line(s) while the service stopped (SIGTERM), after every "
            f"check; first: {at_stop[0][:200]}"
        )
    if notes:
        print("\nchecks FAILED:\n  " + "\n  ".join(notes))
        return 1
    p99 = pct(latencies, 0.99) * 1000
    status = [lat for t0, lat, _ in r["status"] if r["marks"]["release"] <= t0 < r["marks"]["end"]]
    s99 = pct(status, 0.99) * 1000 if status else float("nan")
    print(
        f"\nchecks: {len(hosts)} answers, {len(set(hosts))} distinct hostnames, 0 errors; queue empty, "
        f"{r['running_end']} running at the end, no WARNING+ log line during the run"
    )
    print(
        f"goals: ready → response p99 {p99:.1f} ms {'≤' if p99 <= 50 else '>'} 50 ms "
        f"({'met' if p99 <= 50 else 'MISSED'}); /status p99 {s99:.1f} ms {'≤' if s99 <= 50 else '>'} 50 ms "
        f"({'met' if s99 <= 50 else 'MISSED'})"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waiters", type=int, default=1000, help="concurrent waiting checkouts (1000)")
    parser.add_argument("--rate", type=float, default=100.0, help="VMs made ready per second (100)")
    parser.add_argument("--burst", type=int, default=1, help="VMs made ready back to back per tick (1)")
    parser.add_argument("--workers", type=int, default=2, help="API workers, :config: api_workers (2)")
    parser.add_argument(
        "--queue-waiters", type=int, default=None,
        help=":config: queue_waiters per worker (default: max(600, 1.2 × waiters / workers))",
    )  # fmt: skip
    parser.add_argument(
        "--baseline", type=float, default=5.0, help="seconds of /status before any waiter (5)"
    )
    parser.add_argument("--hold", type=float, default=2.0, help="seconds all wait before the first VM (2)")
    parser.add_argument(
        "--status-every", type=float, default=0.02, help="seconds between /status GETs (0.02)"
    )
    parser.add_argument("--timeout", type=float, default=100, help="give up the release after this many s")
    parser.add_argument(
        "--profile", action="store_true",
        help="SLOWLOG every command in the release phase too: what each dispatch runs (slows it down)",
    )  # fmt: skip
    parser.add_argument("--keep-workdir", action="store_true", help="keep the temp dir (config, log)")
    args = parser.parse_args()
    if args.queue_waiters is None:
        args.queue_waiters = max(600, math.ceil(1.2 * args.waiters / args.workers))
    if args.rate <= 0 or args.burst < 1 or args.waiters < 1 or args.workers < 1:
        parser.error("--rate, --burst, --waiters and --workers must be positive")
    sys.setswitchinterval(0.0005)  # as the API workers: 1,000 client threads, prompt hand-overs
    # SIGTERM ends the run as Ctrl-C does: the finally blocks stop the service and redis-server.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        with bench_workdir(args.keep_workdir) as workdir:
            result = run(args, workdir)
    except KeyboardInterrupt:
        print("interrupted: the service and redis-server are stopped", file=sys.stderr)
        return 130
    return report(result, args)


if __name__ == "__main__":
    sys.exit(main())
