#!/usr/bin/env python3
"""Benchmark of on-demand requests: many concurrent ``POST /api/v3/ondemandvm`` against the clone lane.

Starts a private redis-server on a free port and the real service (``python -m vmpooler``: API workers
and one provider process) on a config written to a temp dir (nothing else is touched):

* one dummy pool (``--pools`` more) of size 0, so pool clones never compete with the on-demand lane;
* the dummy provider with a fixed 1 s clone: ``createvm_max_time: 1`` (an integer N means
  ``1 + randrange(N)`` s, so 1 is exactly 1 s; a float F is ``random() * F``). Any other
  ``--clone-seconds S`` has no fixed form: the float ``2 × S`` is used (uniform 0..2S, mean S) and
  the mean measured from the VM hashes' ``clone_time`` is reported. Readiness is the dummy's default
  (``ready_delay`` 0: a cloned VM is ready at its first check). ``connection_pool_size`` is raised to
  the lane plus every VM, since the dummy holds one simulated connection for the whole clone (with
  the default of 1 the clones would run one at a time);
* ``ondemand_clone_limit`` ``--limit``, ``max_ondemand_instances_per_request`` ≥ ``--per-request``,
  the ``check_loop_delay_*`` defaults (5 s up to 60 s), a free API port.

Once the provider process listens on its pools' event channels, ``--requests`` client threads (one
keep-alive connection each, warmed up with ``GET /healthcheck``) POST a request of ``--per-request``
VMs at once, with their own ``request_id``; each 201 is timed. Meanwhile Redis is sampled every 10 ms
(``--poll``): the lane (``vmpooler__tasks__ondemandclone`` and its leases), the pools' running and
pending sets, and each outstanding request's ``status`` (``vmpooler__odrequest__<id>``), until every
request is ready. The ideal is ``ceil(VMs / limit) × clone seconds``: the lane bound.

Usage: ``python scripts/bench_ondemand.py [--requests 100] [--per-request 3] [--limit 10]
[--clone-seconds 1] [--runs 1]``; it prints a Markdown table for docs/performance.md.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import itertools
import json
import math
import os
import re
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

_CLONED = re.compile(r"cloned in ([0-9.]+) seconds")
# a VMActor's "cloned" and "running" lines, with their millisecond timestamps and the VM's name
_STEP = re.compile(
    r"^(\S+ \S+) INFO .*?\[pool=\S+ vm=(\S+)\] (cloned in|moved from 'pending' to 'running')", re.M
)
_PROBLEM = re.compile(r"^\S+ \S+ (WARNING|ERROR|CRITICAL)|Traceback")


# -- the service -----------------------------------------------------------------------------------


def createvm_max_time(seconds: float) -> int | float:
    """The dummy's ``createvm_max_time`` for a clone of ``seconds``: exact for 1 s (the integer 1), else
    the float ``2 × seconds`` (uniform 0..2 × seconds, mean ``seconds``)."""
    return 1 if seconds == 1 else 2.0 * seconds


def pool_names(args: argparse.Namespace) -> list[str]:
    return [f"od{i}" for i in range(args.pools)]


def config_yaml(args: argparse.Namespace, redis_port: int) -> str:
    pools = "".join(
        f"  - name: {name}\n    template: templates/{name}\n    size: 0\n    provider: dummy\n"
        "    dns_plugin: example\n"
        for name in pool_names(args)
    )
    connections = args.limit + args.requests * args.per_request
    return (
        f'---\n:config:\n  prefix: "b-"\n  ondemand_clone_limit: {args.limit}\n'
        f"  max_ondemand_instances_per_request: {max(10, args.per_request)}\n"
        f":redis:\n  url: redis://127.0.0.1:{redis_port}/0\n"
        f":providers:\n  :dummy:\n    createvm_max_time: {createvm_max_time(args.clone_seconds)!r}\n"
        f"    connection_pool_size: {connections}\n"
        ":dns_configs:\n  example:\n    dns_class: dynamic-dns\n    domain: example.com\n"
        f":pools:\n{pools}"
    )


def wait_service(client: redis.Redis, port: int, pools: list[str], proc: Any, log: Path) -> None:
    """Until the API answers ``/healthcheck`` and a provider process listens on every pool's channel."""
    deadline = time.monotonic() + 60
    http_up = False
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if not http_up:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                conn.request("GET", "/healthcheck")
                http_up = conn.getresponse().status == 200
                conn.close()
            except OSError:
                pass
        if http_up:
            subs = dict(client.pubsub_numsub(*(keys.events_channel(pool) for pool in pools)))
            if all(subs.get(keys.events_channel(pool), 0) for pool in pools):
                time.sleep(1.0)  # the actor tree finishes starting; its first on-demand turn is done
                return
        time.sleep(0.05)
    tail = log.read_text(errors="replace").splitlines()[-30:]
    raise SystemExit("vmpooler did not start; log tail:\n" + "\n".join(tail))


# -- the clients -----------------------------------------------------------------------------------


class Poster(threading.Thread):
    """One keep-alive connection: warm up, wait for the start, POST one request, time its 201."""

    def __init__(self, port: int, request_id: str, body: dict[str, Any], barrier: threading.Barrier) -> None:
        super().__init__(daemon=True)
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.request_id = request_id
        self.body = json.dumps({**body, "request_id": request_id}).encode()
        self.barrier = barrier
        self.sent = self.answered = 0.0
        self.error: str | None = None

    def run(self) -> None:
        try:
            self.conn.request("GET", "/healthcheck")
            self.conn.getresponse().read()
        except OSError as exc:
            self.error = f"warm-up: {exc}"
        self.barrier.wait()
        if self.error:
            return
        try:
            self.sent = time.monotonic()
            self.conn.request(
                "POST", "/api/v3/ondemandvm", body=self.body, headers={"Content-Type": "application/json"}
            )
            resp = self.conn.getresponse()
            text = resp.read()
            self.answered = time.monotonic()
            if resp.status != 201:
                self.error = f"POST answered {resp.status}: {text[:200]!r}"
        except OSError as exc:
            self.error = f"POST: {exc}"
        finally:
            self.conn.close()


def request_bodies(args: argparse.Namespace) -> list[dict[str, str]]:
    """Request i asks for ``per_request`` VMs spread over the pools, starting at pool i."""
    pools = pool_names(args)
    bodies = []
    for i in range(args.requests):
        counts: dict[str, int] = {}
        for j in range(args.per_request):
            pool = pools[(i + j) % len(pools)]
            counts[pool] = counts.get(pool, 0) + 1
        bodies.append({pool: str(n) for pool, n in counts.items()})
    return bodies


# -- one run -----------------------------------------------------------------------------------------


def sample_until_ready(
    client: redis.Redis, ids: list[str], pools: list[str], posters: list[Poster], args: argparse.Namespace
) -> dict[str, Any]:
    """Sample Redis every ``args.poll`` s until every request is ready (or failed, or the timeout)."""
    ready_at: dict[str, float] = {}
    failed: dict[str, str] = {}
    samples: list[tuple[float, int, int, int, int]] = []  # (t, lane, leases, running, pending)
    outstanding = list(ids)
    started = time.monotonic()
    while outstanding:
        with client.pipeline(transaction=False) as pipe:
            pipe.get(keys.TASKS_ONDEMANDCLONE)
            pipe.zcard(keys.ONDEMAND_LEASES)
            for pool in pools:
                pipe.scard(keys.running_set(pool))
            for pool in pools:
                pipe.scard(keys.pending_set(pool))
            for request_id in outstanding:
                pipe.hget(keys.odrequest(request_id), "status")
            got = pipe.execute()
        now = time.monotonic()
        n = len(pools)
        samples.append((now, int(got[0] or 0), got[1], sum(got[2 : 2 + n]), sum(got[2 + n : 2 + 2 * n])))
        still = []
        for request_id, status in zip(outstanding, got[2 + 2 * n :], strict=True):
            if status == "ready":
                ready_at[request_id] = now
            elif status in ("failed", "deleted"):
                failed[request_id] = status
            else:
                still.append(request_id)
        outstanding = still
        if not outstanding:
            break
        if now - started > args.timeout:
            break
        time.sleep(max(0.0, args.poll - (time.monotonic() - now)))
    post_errors = [p.error for p in posters if p.error]
    return {"ready_at": ready_at, "failed": failed, "samples": samples, "post_errors": post_errors}


def clone_times(client: redis.Redis) -> list[float]:
    """``clone_time`` of every VM hash (seconds, as the manager recorded them)."""
    names = list(client.scan_iter(match=keys.vm_hash("*"), count=1000))
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hget(name, "clone_time")
        return [float(v) for v in pipe.execute() if v is not None]


def log_figures(log: Path) -> dict[str, Any]:
    """From the service's log: each clone's seconds as the VMActor logged them, each VM's clone end →
    running (the time between its "cloned" and "running" lines, millisecond timestamps), and the
    WARNING+ lines (times blanked, most frequent first)."""
    text = log.read_text(errors="replace")
    cloned = [float(m.group(1)) for m in _CLONED.finditer(text)]
    steps: dict[str, dict[bool, float]] = {}
    for m in _STEP.finditer(text):
        at = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        steps.setdefault(m.group(2), {})[m.group(3) == "cloned in"] = at
    ready_gaps = [vm[False] - vm[True] for vm in steps.values() if len(vm) == 2]
    problems: dict[str, int] = {}
    for line in text.splitlines():
        if _PROBLEM.search(line):
            line = re.sub(r"^\S+ \S+ ", "", line)
            line = re.sub(r"(Actor|Thread)-\d+", r"\1-N", line)
            line = re.sub(r"\bb-[a-z0-9-]+\b", "…", line)[:200]
            problems[line] = problems.get(line, 0) + 1
    ranked = sorted(((n, line) for line, n in problems.items()), reverse=True)
    return {"log_clone": cloned, "ready_gaps": ready_gaps, "problems": ranked}


def one_run(
    client: redis.Redis, redis_port: int, workdir: Path, run: int, args: argparse.Namespace
) -> dict[str, Any]:
    client.flushall()
    pools = pool_names(args)
    config = workdir / "vmpooler.yaml"
    config.write_text(config_yaml(args, redis_port))
    api_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VMPOOLER_")}
    env["VMPOOLER_LOG_LEVEL"] = "INFO"
    log = workdir / f"run-{run}.log"
    argv = [sys.executable, "-m", "vmpooler", "--config", str(config), "--bind", "127.0.0.1"]
    proc = start_group([*argv, "--port", str(api_port)], cwd=workdir, env=env, log=log)
    try:
        wait_service(client, api_port, pools, proc, log)
        ids = [f"bench-{run}-{i:04d}" for i in range(args.requests)]
        barrier = threading.Barrier(args.requests + 1)
        posters = [
            Poster(api_port, request_id, body, barrier)
            for request_id, body in zip(ids, request_bodies(args), strict=True)
        ]
        for poster in posters:
            poster.start()
        barrier.wait()
        result = sample_until_ready(client, ids, pools, posters, args)
        for poster in posters:
            poster.join(60)
        result["posters"] = posters
        result["lane_end"] = int(client.get(keys.TASKS_ONDEMANDCLONE) or 0)
        result["leases_end"] = client.zcard(keys.ONDEMAND_LEASES)
        result["running_end"] = sum(client.scard(keys.running_set(pool)) for pool in pools)
        result["clone_times"] = clone_times(client)
        result["service_alive"] = proc.poll() is None
    finally:
        stop_group(proc)
    result.update(log_figures(log))
    result["label"] = f"run {run}"
    return summarize(result, args)


def summarize(r: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    posters: list[Poster] = r["posters"]
    first_post = min((p.sent for p in posters if p.sent), default=r["samples"][0][0])
    ok = [p for p in posters if not p.error]
    latencies = [p.answered - p.sent for p in ok]
    to_ready = [r["ready_at"][p.request_id] - p.sent for p in ok if p.request_id in r["ready_at"]]
    samples = r["samples"]
    last_ready = max(r["ready_at"].values()) if r["ready_at"] else samples[-1][0]
    span = [s for s in samples if first_post <= s[0] <= last_ready]
    busy = [s for s in samples if s[1] or s[4]]
    vms = args.requests * args.per_request
    marks = []
    for k in range(1, math.ceil(vms / args.limit) + 1):
        want = min(k * args.limit, vms)
        hit = next((s[0] for s in samples if s[3] >= want), None)
        if hit is not None:
            marks.append((want, hit - first_post))
    r.update(
        first_post=first_post,
        measured=last_ready - first_post,
        post_p50=pct(latencies, 0.5) if latencies else float("nan"),
        post_p99=pct(latencies, 0.99) if latencies else float("nan"),
        last_201=max((p.answered for p in ok), default=first_post) - first_post,
        ready_p50=pct(to_ready, 0.5) if to_ready else float("nan"),
        ready_p95=pct(to_ready, 0.95) if to_ready else float("nan"),
        peak_lane=max(s[1] for s in samples),
        peak_leases=max(s[2] for s in samples),
        mean_lane=statistics.mean(s[1] for s in span) if span else 0.0,
        first_clone=(busy[0][0] - first_post) if busy else float("nan"),
        lane_full=next((s[0] - first_post for s in samples if s[1] >= args.limit), float("nan")),
        last_clone_end=(max(s[0] for s in samples if s[1]) - first_post) if any(s[1] for s in samples) else 0,
        clone_mean=statistics.mean(r["clone_times"]) if r["clone_times"] else float("nan"),
        marks=marks,
        n_samples=len(samples),
        sample_gap=_mean([b[0] - a[0] for a, b in itertools.pairwise(samples)]),
    )
    return r


# -- the report -------------------------------------------------------------------------------------


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> int:
    vms = args.requests * args.per_request
    waves = math.ceil(vms / args.limit)
    ideal = waves * args.clone_seconds
    redis_version = subprocess.check_output(["redis-server", "--version"]).decode().split()[2][2:]
    print(
        f"cores: {os.cpu_count()}, python {sys.version.split()[0]}, redis-server {redis_version}, "
        f"kernel {os.uname().release}"
    )
    print(f"command: .venv/bin/python scripts/bench_ondemand.py {' '.join(sys.argv[1:])}")
    fixed = "fixed" if isinstance(createvm_max_time(args.clone_seconds), int) else "uniform 0..2×, mean"
    print(
        f"\n{args.requests} requests × {args.per_request} VMs = {vms} VMs, {args.pools} pool(s) of size 0, "
        f"dummy clone {fixed} {args.clone_seconds} s (createvm_max_time "
        f"{createvm_max_time(args.clone_seconds)!r}), ondemand_clone_limit {args.limit}; "
        f"ideal ceil({vms}/{args.limit}) × {args.clone_seconds} s = {ideal:g} s\n"
    )
    print(
        "| run | requests | VMs | clone (mean measured) | ondemand_clone_limit | ideal | "
        "first POST → last ready | ÷ ideal | per-request to ready p50 / p95 | peak lane (mean) "
        "| POST 201 p50 / p99 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['label']} | {args.requests} | {vms} | {r['clone_mean']:.3f} s | {args.limit} "
            f"| {ideal:g} s "
            f"| {r['measured']:.2f} s | {r['measured'] / ideal:.3f} | {r['ready_p50']:.2f} / "
            f"{r['ready_p95']:.2f} s | {r['peak_lane']} of {args.limit} ({r['mean_lane']:.2f}) "
            f"| {r['post_p50'] * 1000:.0f} / {r['post_p99'] * 1000:.0f} ms |"
        )
    if len(results) > 1:
        med = statistics.median(r["measured"] for r in results)
        clone = statistics.median(r["clone_mean"] for r in results)
        print(
            f"| **median of {len(results)}** | | | {clone:.3f} s "
            f"| | | **{med:.2f} s** | **{med / ideal:.3f}** "
            f"| {statistics.median(r['ready_p50'] for r in results):.2f} / "
            f"{statistics.median(r['ready_p95'] for r in results):.2f} s "
            f"| {max(r['peak_lane'] for r in results)} (max) "
            f"| {statistics.median(r['post_p50'] for r in results) * 1000:.0f} / "
            f"{statistics.median(r['post_p99'] for r in results) * 1000:.0f} ms |"
        )
    print("\nwhere the time goes (seconds from the first POST):\n")
    for r in results:
        gaps = [b - a for (_, a), (_, b) in itertools.pairwise(r["marks"])]
        ready_gaps = r["ready_gaps"]
        print(
            f"    {r['label']}: last 201 at {r['last_201']:.3f}; first clone seen at {r['first_clone']:.3f}, "
            f"lane first full at {r['lane_full']:.3f}, last held at {r['last_clone_end']:.3f}; "
            f"clone (log) mean {_mean(r['log_clone']):.3f}; clone end → running (log, {len(ready_gaps)} VMs) "
            f"median {_median(ready_gaps) * 1000:.0f} ms, max {max(ready_gaps, default=0) * 1000:.0f} ms; "
            f"wave spacing median {_median(gaps):.3f}, max {max(gaps, default=0):.3f}; "
            f"{r['n_samples']} samples, every {r['sample_gap'] * 1000:.1f} ms"
        )
        print("      running ≥ N: " + ", ".join(f"{n}: {t:.2f}" for n, t in r["marks"]))
    return check(results, args)


def _mean(values: list[float]) -> float:
    return statistics.mean(values) if values else float("nan")


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def check(results: list[dict[str, Any]], args: argparse.Namespace) -> int:
    """Print what went wrong in the service, if anything; 1 when something did."""
    vms = args.requests * args.per_request
    bad = 0
    for r in results:
        notes = []
        missing = args.requests - len(r["ready_at"])
        if missing:
            notes.append(f"{missing} request(s) not ready ({len(r['failed'])} failed/deleted: {r['failed']})")
        if r["post_errors"]:
            notes.append(f"{len(r['post_errors'])} POST error(s), first: {r['post_errors'][0]}")
        if r["peak_lane"] > args.limit or r["peak_leases"] > args.limit:
            notes.append(f"the lane exceeded: {r['peak_lane']} counted, {r['peak_leases']} leases")
        if r["lane_end"] or r["leases_end"]:
            notes.append(f"lane still held at the end: {r['lane_end']} counted, {r['leases_end']} leases")
        if r["running_end"] != vms:
            notes.append(f"{r['running_end']} VMs running at the end, not {vms}")
        if len(r["clone_times"]) != vms:
            notes.append(f"{len(r['clone_times'])} VM hashes with clone_time, not {vms}")
        if not r["service_alive"]:
            notes.append("the service exited during the run")
        if r["problems"]:
            lines = sum(n for n, _ in r["problems"])
            notes.append(
                f"{lines} WARNING+ line(s) in the service log:\n"
                + "\n".join(f"        {n:5d} × {line}" for n, line in r["problems"][:10])
            )
        if notes:
            bad = 1
            print(f"\n{r['label']}: " + "\n  ".join(notes))
    if not bad:
        print(
            "\nchecks: every request ready, lane never above the limit and empty at the end, no WARNING+ log"
        )
    return bad


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100, help="concurrent on-demand requests (100)")
    parser.add_argument("--per-request", type=int, default=3, help="VMs per request (3)")
    parser.add_argument("--limit", type=int, default=10, help=":config: ondemand_clone_limit (10)")
    parser.add_argument(
        "--clone-seconds", type=float, default=1.0, help="dummy clone seconds: 1 is exact, else a mean (1)"
    )
    parser.add_argument("--runs", type=int, default=1, help="runs, each on a fresh service and Redis (1)")
    parser.add_argument("--pools", type=int, default=1, help="pools (size 0) the VMs are spread over (1)")
    parser.add_argument("--poll", type=float, default=0.01, help="seconds between Redis samples (0.01)")
    parser.add_argument("--timeout", type=float, default=120, help="give up a run after this many s (120)")
    parser.add_argument("--keep-workdir", action="store_true", help="keep the temp dir (config, logs)")
    args = parser.parse_args()
    sys.setswitchinterval(0.0005)  # 100 client threads: as the API workers, for fair 201 timings
    results = []
    with bench_workdir(args.keep_workdir) as workdir, redis_server(workdir) as (_, redis_port):
        client = redis.Redis(port=redis_port, decode_responses=True)
        for run in range(1, args.runs + 1):
            result = one_run(client, redis_port, workdir, run, args)
            print(f"  run {run}: all ready after {result['measured']:.2f} s", file=sys.stderr)
            results.append(result)
        client.close()
    return report(results, args)


if __name__ == "__main__":
    sys.exit(main())
