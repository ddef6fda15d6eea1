#!/usr/bin/env python3
"""Benchmark of the pool manager (provider process) with instant dummy clones.

Starts a private redis-server on a free port (nothing else is touched) and measures:

1. fill: empty → 3 pools × 70 ready, ``task_limit`` 50, default loop delays (5 s … 60 s);
2. drain: one checkout of all 10 VMs of a pool → the pool is full again (loop delays 30 s, so only
   the checkout event can refill it);
3. replace: one checkout → its replacement's ``create_vm`` is called (same pool, event path only);
4. scale: one real ``python -m vmpooler manager`` holding N pools × S VMs (default loop delays): time
   to fill, then RSS and CPU (from /proc) of its provider process over a window right after full and
   a steady window once every pool is at the 60 s max delay (all pools pass in step, so that window
   spans two passes);
5. connections: Redis connections held by that provider process (CLIENT LIST, mapped to the process
   through /proc/net/tcp socket inodes);
6. slots: one vmpooler.yaml in the original's key layout (3 pools × 10 VMs, ``task_limit`` 5, every
   dummy clone 1 s, default loop delays), run by ``python -m vmpooler manager`` and, with
   ``--original-cmd '<shell command>'``, by any other manager (the original) given the same file in
   ``VMPOOLER_CONFIG_FILE``: time from launch to every pool full, sampled from Redis every 10 ms with
   the clone slots held (``vmpooler__tasks__clone``, which both keep), against the clone-slot-bound
   ideal ``ceil(VMs / task_limit) × clone time``. Runs alternate between the two, ``--runs`` each.

Sections 1-3 run the actor tree in a spawned child process set up like ``run_provider_worker`` (own
GIL), with the dummy provider's ``create_vm`` wrapped to report
``time.monotonic()`` (system-wide on Linux, so comparable across processes) through a queue.

Usage: ``python scripts/bench_manager.py [--quick] [--only fill,drain,replace,scale,slots]``; it prints
Markdown tables for docs/performance.md; ``--pools N --size S`` set the scale run (1,000 × 10).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import multiprocessing
import os
import queue
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchlib import pct, redis_server, start_group, stop_group  # noqa: E402

from vmpooler import keys  # noqa: E402
from vmpooler.store import Pick, Store  # noqa: E402
from vmpooler.timeutil import format_time  # noqa: E402

SECTIONS = ("fill", "drain", "replace", "scale", "slots")
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# -- helpers ---------------------------------------------------------------------------------------


def config_yaml(
    pools: dict[str, int], *, task_limit: int, loop_min: float, loop_max: float, redis_url: str | None = None
) -> str:
    pool_yaml = "".join(
        f"  - name: {name}\n    template: templates/{name}\n    size: {size}\n    provider: dummy\n"
        "    dns_plugin: example\n"
        for name, size in pools.items()
    )
    redis_part = f":redis:\n  url: {redis_url}\n" if redis_url else ""
    return (
        f":config:\n  task_limit: {task_limit}\n  check_loop_delay_min: {loop_min}\n"
        f'  check_loop_delay_max: {loop_max}\n  prefix: "b-"\n{redis_part}'
        ":providers:\n  :dummy:\n    ready_delay: 0\n"
        ":dns_configs:\n  example:\n    dns_class: dynamic-dns\n    domain: example.com\n"
        f":pools:\n{pool_yaml}"
    )


def ready_total(client: redis.Redis, pools: list[str]) -> int:
    with client.pipeline(transaction=False) as pipe:
        for pool in pools:
            pipe.scard(keys.ready_set(pool))
        return sum(pipe.execute())


def wait_ready(client: redis.Redis, pools: list[str], want: int, timeout: float, poll: float) -> float:
    """Poll until ``want`` VMs are ready in ``pools``; returns ``time.monotonic()`` when seen."""
    deadline = time.monotonic() + timeout
    while True:
        if ready_total(client, pools) >= want:
            return time.monotonic()
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out: {ready_total(client, pools)}/{want} ready after {timeout:.0f} s")
        time.sleep(poll)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


# -- an in-process-like manager in a spawned child (sections 1-3) -------------------------------


def _manager_child(config_text: str, redis_url: str, events: Any, stop: Any) -> None:
    """Set up like ``run_provider_worker``; report each ``create_vm`` call's monotonic time."""
    from vmpooler.config import load_config_text
    from vmpooler.worker import build_provider, start_manager

    logging.basicConfig(level=logging.ERROR)  # not the empty-pool warnings of the start
    config = load_config_text(config_text, env={})
    size = max(config.redis.connection_pool_size, config.globals.task_limit + 10)
    store = Store.from_url(redis_url, max_connections=size, pool_timeout=config.redis.connection_pool_timeout)
    provider = build_provider(config, "dummy")
    create_vm = provider.create_vm

    def timed_create_vm(pool: str, name: str) -> Any:
        events.put(("clone", time.monotonic(), pool, name))
        return create_vm(pool, name)

    provider.create_vm = timed_create_vm  # type: ignore[method-assign]
    events.put(("start", time.monotonic(), "", ""))
    manager = start_manager(config, "dummy", store, provider=provider)
    stop.wait()
    logging.disable(logging.CRITICAL)  # VMs caught mid-destroy by the stop are not news
    manager.stop()
    store.close()


class ChildManager:
    """A spawned provider-like process running ``start_manager`` on the given config."""

    def __init__(self, config_text: str, redis_url: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.events = ctx.Queue()
        self._stop = ctx.Event()
        self.launched = time.monotonic()
        self._proc = ctx.Process(
            target=_manager_child, args=(config_text, redis_url, self.events, self._stop)
        )
        self._proc.start()
        kind, self.started, _, _ = self.events.get(timeout=60)
        assert kind == "start"

    def clones(self, timeout: float = 0.0) -> list[tuple[float, str, str]]:
        """Drain the ``create_vm`` reports (waiting up to ``timeout`` for the first one)."""
        out = []
        with contextlib.suppress(queue.Empty):
            item = self.events.get(timeout=timeout) if timeout else self.events.get_nowait()
            out.append(item[1:])
            while True:
                out.append(self.events.get_nowait()[1:])
        return out

    def close(self) -> None:
        self._stop.set()
        self._proc.join(30)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join()


# -- sections 1-3 --------------------------------------------------------------------------------


def bench_fill(client: redis.Redis, url: str) -> dict[str, Any]:
    client.flushall()
    pools = {f"fill{i}": 70 for i in range(3)}
    text = config_yaml(pools, task_limit=50, loop_min=5, loop_max=60)
    child = ChildManager(text, url)
    try:
        full = wait_ready(client, list(pools), sum(pools.values()), 120, 0.002)
        clones = child.clones()
    finally:
        child.close()
    first = min(t for t, _, _ in clones) if clones else child.started
    return {
        "from_start": full - child.started,
        "from_launch": full - child.launched,
        "from_first_clone": full - first,
        "clones": len(clones),
    }


def _checkout(store: Store, pool: str, count: int) -> list[str]:
    got = store.vms.checkout([Pick(pool, (pool,))] * count, now=format_time(time.time()))
    return [a.vm for a in got]


def bench_drain(client: redis.Redis, store: Store, child: ChildManager, repeats: int) -> list[float]:
    pool = "drain"
    times = []
    for _ in range(repeats):
        wait_ready(client, [pool], 10, 30, 0.005)
        time.sleep(0.2)
        t0 = time.monotonic()
        vms = _checkout(store, pool, 10)
        t1 = wait_ready(client, [pool], 10, 30, 0.0005)
        times.append(t1 - t0)
        for vm in vms:
            store.vms.return_vm(vm, pool)
        deadline = time.monotonic() + 10
        while client.scard(keys.completed_set(pool)) and time.monotonic() < deadline:
            time.sleep(0.01)
    child.clones()
    return times


def bench_replace(client: redis.Redis, store: Store, child: ChildManager, repeats: int) -> list[float]:
    pool = "replace"
    delays = []
    for _ in range(repeats):
        wait_ready(client, [pool], 10, 30, 0.005)
        time.sleep(0.1)
        child.clones()
        t0 = time.monotonic()
        (vm,) = _checkout(store, pool, 1)
        started = [t for t, p, _ in child.clones(timeout=10) if p == pool]
        if not started:
            raise SystemExit("no replacement clone within 10 s")
        delays.append(started[0] - t0)
        store.vms.return_vm(vm, pool)
    return delays


# -- section 4/5: a real `vmpooler manager` --------------------------------------------------------


def _stat(pid: int) -> tuple[float, int, float]:
    """(utime+stime seconds, RSS bytes, stime seconds) of ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK, int(fields[21]) * PAGE, int(fields[12]) / TICK


def _status(pid: int, field: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return line.split(":", 1)[1].strip()
    return ""


def _provider_pid(parent: int, timeout: float = 60) -> int:
    """The spawned provider child of the supervisor ``parent`` (not the resource tracker); it names
    itself ``vmpooler: provider NAME`` where setproctitle is installed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, IndexError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                cmd = (entry / "cmdline").read_bytes()
                if ppid == parent and (b"spawn_main" in cmd or cmd.startswith(b"vmpooler: provider")):
                    return int(entry.name)
        time.sleep(0.1)
    raise SystemExit("no provider process appeared")


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    return inodes


def connections_of(client: redis.Redis, pid: int) -> tuple[int, int]:
    """(connections of ``pid``, all clients but this one) from CLIENT LIST and /proc/net/tcp."""
    port_inode = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        cols = line.split()
        port_inode[int(cols[1].split(":")[1], 16)] = cols[9]
    mine = _socket_inodes(pid)
    me = client.client_id()
    others = [c for c in client.client_list() if int(c["id"]) != me]
    theirs = [c for c in others if port_inode.get(int(c["addr"].rsplit(":", 1)[1])) in mine]
    return len(theirs), len(others)


def _commands(client: redis.Redis) -> int:
    return int(client.info("stats")["total_commands_processed"])


def _idle_window(client: redis.Redis, pid: int, redis_pid: int, seconds: float) -> dict[str, float]:
    """CPU, RSS, threads and connections of ``pid`` over ``seconds``, plus Redis commands/s."""
    cpu0, _, sys0 = _stat(pid)
    rcpu0 = _stat(redis_pid)[0]
    t0 = time.monotonic()
    peak_rss, peak_conn, rates, last = 0, 0, [], _commands(client)
    while time.monotonic() - t0 < seconds:
        time.sleep(min(1.0, seconds))
        peak_rss = max(peak_rss, _stat(pid)[1])
        peak_conn = max(peak_conn, connections_of(client, pid)[0])
        now = _commands(client)
        rates.append(now - last - 3)  # minus this loop's own three commands
        last = now
    cpu1, rss, sys1 = _stat(pid)
    rcpu1 = _stat(redis_pid)[0]
    wall = time.monotonic() - t0
    conn, total = connections_of(client, pid)
    return {
        "cpu": (cpu1 - cpu0) / wall * 100,
        "sys": (sys1 - sys0) / wall * 100,
        "redis_cpu": (rcpu1 - rcpu0) / wall * 100,
        "rss": rss,
        "peak_rss": max(peak_rss, rss),
        "conn": conn,
        "peak_conn": max(peak_conn, conn),
        "clients": total,
        "threads": int(_status(pid, "Threads")),
        "seconds": wall,
        "cmd_mean": sum(rates) / len(rates),
        "cmd_max": max(rates),
    }


def _fill_scale(
    client: redis.Redis, pid: int, pools: list[str], want: int, launched: float
) -> dict[str, Any]:
    peak_conn, peak_clients, last = 0, 0, 0.0
    while True:
        count = ready_total(client, pools)
        if count >= want:
            break
        if time.monotonic() - launched > 1800:
            raise SystemExit(f"timed out: {count}/{want} ready after 30 minutes")
        conn, clients = connections_of(client, pid)
        peak_conn, peak_clients = max(peak_conn, conn), max(peak_clients, clients)
        if time.monotonic() - last > 30:
            last = time.monotonic()
            print(f"  … {count}/{want} ready after {last - launched:.0f} s", file=sys.stderr)
        time.sleep(0.25)
    full = time.monotonic()
    cpu, rss, stime = _stat(pid)
    return {
        "fill": full - launched,
        "fill_cpu": cpu,
        "fill_sys": stime,
        "rss_full": rss,
        "hwm": _status(pid, "VmHWM"),
        "fill_peak_conn": peak_conn,
        "fill_peak_clients": peak_clients,
    }


def _start_scale(workdir: Path, port: int, npools: int, size: int) -> subprocess.Popen[bytes]:
    pools = {f"s{i:04d}": size for i in range(npools)}
    config = workdir / "scale.yaml"
    config.write_text(
        config_yaml(pools, task_limit=50, loop_min=5, loop_max=60, redis_url=f"redis://127.0.0.1:{port}/0")
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VMPOOLER_", "PROMETHEUS_"))}
    env["VMPOOLER_LOG_LEVEL"] = "WARNING"
    return subprocess.Popen(
        [sys.executable, "-m", "vmpooler", "manager", "--config", str(config)],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(workdir / "scale.log", "wb"),
    )


def bench_scale(
    client: redis.Redis, port: int, redis_pid: int, workdir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    client.flushall()
    pools = [f"s{i:04d}" for i in range(args.pools)]
    launched = time.monotonic()
    sup = _start_scale(workdir, port, args.pools, args.size)
    try:
        pid = _provider_pid(sup.pid)
        result = _fill_scale(client, pid, pools, args.size * args.pools, launched)
        result["window1"] = _idle_window(client, pid, redis_pid, args.idle)
        if args.steady > 0:
            time.sleep(args.settle)
            result["window2"] = _idle_window(client, pid, redis_pid, args.steady)
        result["ready_end"] = ready_total(client, pools)
        result["leases_end"] = client.zcard(keys.CLONE_LEASES)
    finally:
        logged = (workdir / "scale.log").stat().st_size
        sup.terminate()
        try:
            sup.wait(60)
        except subprocess.TimeoutExpired:
            sup.kill()
            sup.wait()
    result["log"] = _log_summary(workdir / "scale.log", logged)
    return result


def _log_summary(path: Path, upto: int) -> list[tuple[int, str]]:
    """The manager's WARNING+ lines before the stop (first ``upto`` bytes), grouped with times, thread
    numbers, pool and VM names blanked out, most frequent first."""
    with open(path, "rb") as handle:
        text = handle.read(upto).decode(errors="replace")
    counts: dict[str, int] = {}
    for line in text.splitlines():
        line = re.sub(r"^\S+ \S+ ", "", line)
        line = re.sub(r"(Actor|Thread)-\d+", r"\1-N", line)
        line = re.sub(r"\b(s\d{4}|b-[a-z0-9-]+)\b", "…", line)[:150]
        counts[line] = counts.get(line, 0) + 1
    return sorted(((n, line) for line, n in counts.items()), reverse=True)


# -- section 6: clone slots, ours and the original on one vmpooler.yaml ---------------------------


def slots_config_yaml(port: int, args: argparse.Namespace) -> str:
    """One vmpooler.yaml in the original's key layout, read unchanged by both implementations.

    Every clone takes ``createvm_max_time`` whole seconds in both (1 + rand(N) in the original); the
    dummy's simulated connection pool is as large as every clone and readiness check at once, so only
    ``task_limit`` bounds the clones; DNS is not checked (dynamic-dns, skip_dns_check_before_creating_vm).
    """
    # per pool: the original reads the :config: loop delays only for a pool thread it restarts
    delay = f"    check_loop_delay_min: {args.loop_delay_min}\n" if args.loop_delay_min is not None else ""
    pools = "".join(
        f"  - name: slots{i}\n    template: templates/slots{i}\n    size: {args.slots_size}\n"
        f"    provider: dummy\n    dns_plugin: example\n{delay}"
        for i in range(args.slots_pools)
    )
    connections = args.task_limit + args.slots_pools * args.slots_size
    return (
        f'---\n:config:\n  task_limit: {args.task_limit}\n  prefix: "b-"\n'
        f":redis:\n  server: 127.0.0.1\n  port: {port}\n"
        f":providers:\n  :dummy:\n    createvm_max_time: {args.clone_seconds}\n"
        f"    destroyvm_max_shutdown_time: 1\n    connection_pool_size: {connections}\n"
        "    skip_dns_check_before_creating_vm: true\n"
        ":dns_configs:\n  :example:\n    dns_class: dynamic-dns\n    domain: example.com\n"
        f":pools:\n{pools}"
    )


def _slot_sample(client: redis.Redis, pools: list[str]) -> tuple[int, int, int]:
    """(clone slots held, ready VMs, pending VMs) in one round trip."""
    with client.pipeline(transaction=False) as pipe:
        pipe.get(keys.TASKS_CLONE)
        for pool in pools:
            pipe.scard(keys.ready_set(pool))
        for pool in pools:
            pipe.scard(keys.pending_set(pool))
        got = pipe.execute()
    n = len(pools)
    return int(got[0] or 0), sum(got[1 : n + 1]), sum(got[n + 1 :])


def _daily_mean(client: redis.Redis, kind: str) -> float | None:
    """Mean of the ``vmpooler__<kind>__<date>`` stats hashes that both implementations write."""
    pattern = keys.clone_stats("*") if kind == "clone" else keys.boot_stats("*")
    values = [float(v) for key in client.keys(pattern) for v in client.hvals(key)]
    return statistics.mean(values) if values else None


def measure_slots(
    client: redis.Redis, argv: list[str], workdir: Path, label: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Launch ``argv`` on the slots config, sample Redis every ``args.poll`` s until every pool is full."""
    client.flushall()
    pools = [f"slots{i}" for i in range(args.slots_pools)]
    want = args.slots_pools * args.slots_size
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/"),
        "LANG": "C.UTF-8",
        "VMPOOLER_CONFIG_FILE": str(workdir / "vmpooler.yaml"),
    }
    log = workdir / f"{label}.log"
    launched = time.monotonic()
    proc = start_group(argv, cwd=workdir, env=env, log=log)
    first, peak_slots, peak_pending, peak_total, last_ready = None, 0, 0, 0, 0
    steps: list[tuple[int, float]] = []
    try:
        while True:
            slots, ready, pending = _slot_sample(client, pools)
            now = time.monotonic() - launched
            if first is None and (slots or pending or ready):
                first = now
            peak_slots, peak_pending = max(peak_slots, slots), max(peak_pending, pending)
            peak_total = max(peak_total, ready + pending)
            if ready != last_ready:
                steps.append((ready, now))
                last_ready = ready
            if ready >= want:
                break
            if proc.poll() is not None or now > args.slots_timeout:
                tail = log.read_text(errors="replace").splitlines()[-20:]
                raise SystemExit(
                    f"{label}: {ready}/{want} ready after {now:.0f} s; log tail:\n" + "\n".join(tail)
                )
            time.sleep(args.poll)
        full = now
        clone_mean, boot_mean = _daily_mean(client, "clone"), _daily_mean(client, "boot")
    finally:
        stop_group(proc)
    return {
        "label": label,
        "full": full,
        "first": first or 0.0,
        "peak_slots": peak_slots,
        "peak_pending": peak_pending,
        "peak_total": peak_total,
        "clone_mean": clone_mean,
        "boot_mean": boot_mean,
        "steps": steps,
    }


def bench_slots(
    client: redis.Redis, port: int, workdir: Path, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """``args.runs`` alternating runs of ours (and of ``--original-cmd``) on the same config file."""
    (workdir / "vmpooler.yaml").write_text(slots_config_yaml(port, args))
    commands = [("ours", [sys.executable, "-m", "vmpooler", "manager"])]
    if args.original_cmd:
        commands.append(("original", ["/bin/sh", "-c", args.original_cmd]))
    results = []
    for run in range(args.runs):
        for label, argv in commands:
            result = measure_slots(client, argv, workdir, f"{label}-{run + 1}", args)
            result["impl"] = label
            results.append(result)
            print(f"  {result['label']}: full after {result['full']:.2f} s", file=sys.stderr)
    return results


def _fmt(value: float | None, unit: str = " s") -> str:
    return "–" if value is None else f"{value:.2f}{unit}"


def report_slots(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    vms = args.slots_pools * args.slots_size
    ideal = math.ceil(vms / args.task_limit) * args.clone_seconds
    print(
        f"\n6. clone slots: {args.slots_pools} pools × {args.slots_size} VMs, task_limit {args.task_limit}, "
        f"every clone {args.clone_seconds} s, check_loop_delay_min "
        f"{'5 (default)' if args.loop_delay_min is None else args.loop_delay_min}; "
        f"ideal ceil({vms}/{args.task_limit}) × {args.clone_seconds} s = {ideal} s\n"
    )
    print(
        "| run | launch → first clone | launch → all full | first clone → all full | ÷ ideal "
        "| peak slots held | peak pending | mean clone | mean clone → ready |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        fill = r["full"] - r["first"]
        print(
            f"| {r['label']} | {_fmt(r['first'])} | {_fmt(r['full'])} | {_fmt(fill)} | {fill / ideal:.2f} "
            f"| {r['peak_slots']} of {args.task_limit} | {r['peak_pending']} | {_fmt(r['clone_mean'])} "
            f"| {_fmt(r['boot_mean'])} |"
        )
    for impl in dict.fromkeys(r["impl"] for r in results):
        mine = [r for r in results if r["impl"] == impl]
        full = statistics.median(r["full"] for r in mine)
        fill = statistics.median(r["full"] - r["first"] for r in mine)
        print(
            f"| **{impl}, median of {len(mine)}** | | {_fmt(full)} | {_fmt(fill)} | {fill / ideal:.2f} "
            f"| {max(r['peak_slots'] for r in mine)} (max) | | | |"
        )
    print("\nlaunch → N VMs ready, per batch of task_limit:\n")
    for r in results:
        marks = [f"{n}: {t:.1f}" for n, t in _batches(r["steps"], args.task_limit, vms)]
        print(f"    {r['label']:>12}  {', '.join(marks)}")
    over = [r["label"] for r in results if r["peak_total"] > vms or r["peak_slots"] > args.task_limit]
    if over:
        print(f"\nnote: more slots than task_limit, or more VMs than the pools' size, in {', '.join(over)}")


def _batches(steps: list[tuple[int, float]], batch: int, total: int) -> list[tuple[int, float]]:
    """The first time at which at least each multiple of ``batch`` VMs (and ``total``) were ready."""
    marks = [*range(batch, total, batch), total]
    return [(m, next(t for n, t in steps if n >= m)) for m in marks if any(n >= m for n, _ in steps)]


# -- report ------------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "met" if ok else "**MISSED**"


def report(res: dict[str, Any]) -> None:
    redis_version = subprocess.check_output(["redis-server", "--version"]).decode().split()[2][2:]
    print(
        f"cores: {os.cpu_count()}, python {sys.version.split()[0]}, redis-server {redis_version}, "
        f"kernel {os.uname().release}"
    )
    print(f"command: .venv/bin/python scripts/bench_manager.py {' '.join(sys.argv[1:])}\n")
    if res.keys() & {"fill", "drain", "replace", "scale"}:
        print("| measurement | result | target | |\n|---|---|---|---|")
    if "fill" in res:
        f = res["fill"]
        print(
            f"| 1. empty → 3 pools × 70 ready, from `start_manager()` | {f['from_start']:.2f} s | ≤ 5 s "
            f"| {verdict(f['from_start'] <= 5)} |"
        )
        print(f"| … from process launch (spawn + imports) | {f['from_launch']:.2f} s | | |")
        print(f"| … from the first `create_vm` | {f['from_first_clone']:.2f} s | | |")
    if "drain" in res:
        d = res["drain"]
        print(
            f"| 2. checkout of all 10 → pool full again, median of {len(d)} | {ms(statistics.median(d))} "
            f"| ≤ 1 s | {verdict(statistics.median(d) <= 1)} |"
        )
        print(f"| … worst | {ms(max(d))} | ≤ 1 s | {verdict(max(d) <= 1)} |")
    if "replace" in res:
        r = res["replace"]
        print(
            f"| 3. checkout → replacement `create_vm`, median of {len(r)} | {ms(statistics.median(r))} "
            f"| ≤ 0.2 s | {verdict(statistics.median(r) <= 0.2)} |"
        )
        print(f"| … p95 | {ms(pct(r, 0.95))} | ≤ 0.2 s | {verdict(pct(r, 0.95) <= 0.2)} |")
    if "scale" in res:
        report_scale(res["scale"], res["args"])
    if "slots" in res:
        report_slots(res["slots"], res["args"])


def _report_window(label: str, w: dict[str, Any], vms: int) -> None:
    cpu_goal = "≤ 10 %" if vms <= 10_000 else "(report)"
    print(
        f"| … {label}: provider CPU (of it kernel) | {w['cpu']:.1f} % ({w['sys']:.1f} %) of a core "
        f"| {cpu_goal} | {verdict(w['cpu'] <= 10) if vms <= 10_000 else ''} |"
    )
    rss_goal = 400 if vms > 10_000 else 500
    print(
        f"| … {label}: provider RSS (peak) | {w['rss'] / 2**20:.0f} MB ({w['peak_rss'] / 2**20:.0f} MB) "
        f"| ≤ {rss_goal} MB | {verdict(w['peak_rss'] <= rss_goal * 2**20)} |"
    )
    print(
        f"| … {label}: Redis commands/s, mean (busiest second) | {w['cmd_mean']:.0f} ({w['cmd_max']}) | | |"
    )
    print(f"| … {label}: redis-server CPU | {w['redis_cpu']:.1f} % of a core | | |")


def report_scale(s: dict[str, Any], args: argparse.Namespace) -> None:
    n = args.pools * args.size
    print(
        f"| 4. `vmpooler manager` launch → {args.pools} pools × {args.size} ({n} VMs) ready "
        f"| {s['fill']:.1f} s | (report) | |"
    )
    print(
        f"| … provider CPU time used to fill (of it kernel) | {s['fill_cpu']:.1f} s ({s['fill_sys']:.1f} s) "
        "| | |"
    )
    rss_goal = 400 if n > 10_000 else 500
    print(
        f"| … provider RSS when full (VmHWM), per VM | {s['rss_full'] / 2**20:.0f} MB ({s['hwm']}), "
        f"{s['rss_full'] / n / 1024:.1f} KB | ≤ {rss_goal} MB "
        f"| {verdict(s['rss_full'] <= rss_goal * 2**20)} |"
    )
    threads = s["window1"]["threads"]
    print(f"| … provider threads | {threads} | ≤ 200 | {verdict(threads <= 200)} |")
    windows = [(f"first {s['window1']['seconds']:.0f} s after full", s["window1"])]
    if "window2" in s:
        windows.append(
            (f"{s['window2']['seconds']:.0f} s from {args.idle + args.settle:.0f} s after full", s["window2"])
        )
    for label, window in windows:
        _report_window(label, window, n)
    last = windows[-1][1]
    print(
        f"| 5. Redis connections of the provider process, idle (peak) | {last['conn']} ({last['peak_conn']}) "
        f"| ≤ 20 | {verdict(last['peak_conn'] <= 20)} |"
    )
    print(
        f"| … while filling: provider (all clients but the benchmark's) | {s['fill_peak_conn']} "
        f"({s['fill_peak_clients']}) | ≤ 20 | {verdict(s['fill_peak_conn'] <= 20)} |"
    )
    _report_scale_notes(s, n)


def _report_scale_notes(s: dict[str, Any], n: int) -> None:
    if s["ready_end"] != n:
        print(f"\nnote: only {s['ready_end']}/{n} VMs ready at the end of the idle windows")
    if s["leases_end"]:
        print(f"\nnote: {s['leases_end']} clone slot(s) still held at the end, with nothing cloning")
    if s["log"]:
        lines = sum(c for c, _ in s["log"])
        print(f"\nthe manager's log during the scale run ({lines} lines), most frequent:\n")
        for count, text in s["log"][:8]:
            print(f"    {count:6d} × {text}")


def _slots_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("section slots")
    group.add_argument("--slots-pools", type=int, default=3, help="pools (3)")
    group.add_argument("--slots-size", type=int, default=10, help="VMs per pool (10)")
    group.add_argument("--task-limit", type=int, default=5, help=":config: task_limit (5)")
    group.add_argument(
        "--clone-seconds", type=int, default=1, help="createvm_max_time: every clone takes 1..N s (1)"
    )
    group.add_argument(
        "--loop-delay-min",
        type=int,
        default=None,
        help="experiment: write check_loop_delay_min on every pool (default: absent, so 5 s)",
    )
    group.add_argument("--runs", type=int, default=3, help="runs of each implementation, alternating (3)")
    group.add_argument("--poll", type=float, default=0.01, help="seconds between Redis samples (0.01)")
    group.add_argument("--slots-timeout", type=float, default=300, help="give up after this many s (300)")
    group.add_argument(
        "--original-cmd",
        default=None,
        help="shell command that runs the original's manager on $VMPOOLER_CONFIG_FILE (cwd: a temp dir)",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 100 pools, short windows")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma list of {', '.join(SECTIONS)}")
    parser.add_argument("--pools", type=int, default=None, help="pools in the scale run (1000)")
    parser.add_argument("--size", type=int, default=10, help="VMs per pool in the scale run (10)")
    parser.add_argument(
        "--idle", type=float, default=None, help="seconds of the window right after full (30)"
    )
    parser.add_argument("--settle", type=float, default=None, help="seconds before the steady window (120)")
    parser.add_argument(
        "--steady",
        type=float,
        default=None,
        help="seconds of the steady window; 0 skips it (120: two passes at the 60 s max delay)",
    )
    parser.add_argument("--repeats", type=int, default=None, help="replace repetitions; drain does half (50)")
    parser.add_argument("--keep-workdir", action="store_true", help="keep the temp dir (configs, logs)")
    _slots_arguments(parser)
    args = parser.parse_args()
    only = set(args.only.split(","))
    if only - set(SECTIONS):
        parser.error(f"unknown section(s): {', '.join(sorted(only - set(SECTIONS)))}")
    quick = args.quick
    args.pools = args.pools or (100 if quick else 1000)
    args.idle = args.idle if args.idle is not None else (10 if quick else 30)
    args.settle = args.settle if args.settle is not None else (0 if quick else 120)
    args.steady = args.steady if args.steady is not None else (0 if quick else 120)
    args.repeats = args.repeats or (10 if quick else 50)
    res = run(args, only)
    report(res)
    return 0


def run(args: argparse.Namespace, only: set[str]) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="vmpooler-bench-"))
    res: dict[str, Any] = {"args": args}
    try:
        with redis_server(workdir) as (redis_proc, port):
            url = f"redis://127.0.0.1:{port}/0"
            client = redis.Redis(port=port, decode_responses=True)
            if "fill" in only:
                res["fill"] = bench_fill(client, url)
            if only & {"drain", "replace"}:
                res.update(bench_events(client, port, url, only, args.repeats))
            if "scale" in only:
                res["scale"] = bench_scale(client, port, redis_proc.pid, workdir, args)
            if "slots" in only:
                res["slots"] = bench_slots(client, port, workdir, args)
    finally:
        if args.keep_workdir:
            print(f"kept {workdir} (configs and logs)", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return res


def bench_events(client: redis.Redis, port: int, url: str, only: set[str], repeats: int) -> dict[str, Any]:
    """Sections 2 and 3 on one manager whose loop never runs (30 s delays): only events refill."""
    client.flushall()
    child = ChildManager(
        config_yaml({"drain": 10, "replace": 10}, task_limit=50, loop_min=30, loop_max=30), url
    )
    store = Store(redis.Redis(port=port, decode_responses=True))
    out = {}
    try:
        wait_ready(client, ["drain", "replace"], 20, 30, 0.01)
        if "drain" in only:
            out["drain"] = bench_drain(client, store, child, max(10, repeats // 2))
        if "replace" in only:
            out["replace"] = bench_replace(client, store, child, repeats)
    finally:
        child.close()
        store.close()
    return out


if __name__ == "__main__":
    sys.exit(main())
