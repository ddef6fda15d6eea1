#!/usr/bin/env python3
"""Benchmark of the vSphere provider against govmomi's simulator (vcsim, built by scripts/build-vcsim.sh).

Starts a private simulator on a free loopback port (nothing else is touched), prepares a site (a
``Templates`` folder with a template) and measures, with the provider in this process:

1. inventory: ``list_vms`` of a folder holding ``--vms`` (500) VMs: wall time (median of ``--repeat``
   runs) and the SOAP calls it makes (one ``RetrievePropertiesEx``);
2. clones: ``--clones`` (100) ``create_vm`` calls from ``task_limit`` (10) threads, the way the core's
   clone slots run them, against the simulator's own time for one clone (``CloneVM_Task`` made slow by
   ``--clone-ms``, 200 ms, as a real clone is slow) × ``clones / task_limit``: the ideal when only the
   clone slots bound the throughput;
3. memory: this process's RSS (VmRSS, VmHWM from /proc) before the provider and after both runs.

Usage: ``python scripts/bench_vsphere.py [--vms 500] [--clones 100] [--task-limit 10] [--clone-ms 200]``;
prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.integration.providers.vcsim import CLUSTER, DATASTORE, Vcsim, build, prepare_site  # noqa: E402
from vmpooler.providers.base import PoolSpec  # noqa: E402
from vmpooler.providers.vsphere import VSphereProvider, VSphereSettings  # noqa: E402


def rss_kib() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process, KiB."""
    fields = dict(
        line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line
    )
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def pool(name: str, template: str) -> PoolSpec:
    options = {"folder": f"bench/{name}", "datastore": DATASTORE}
    return PoolSpec(name=name, template=template, size=0, clone_target=CLUSTER, options=options)


def fill(provider: VSphereProvider, name: str, count: int, threads: int) -> float:
    started = time.monotonic()
    with ThreadPoolExecutor(threads) as executor:
        list(executor.map(lambda n: provider.create_vm(name, f"{name}-{n:04d}"), range(count)))
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vms", type=int, default=500)
    parser.add_argument("--clones", type=int, default=100)
    parser.add_argument("--task-limit", type=int, default=10)
    parser.add_argument("--clone-ms", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    rss_before = rss_kib()
    with tempfile.TemporaryDirectory(prefix="bench-vsphere-") as tmp:
        sim = Vcsim(build(), Path(tmp), "-method-delay", f"CloneVM_Task={args.clone_ms}").start()
        try:
            site = prepare_site(sim)
            pools = {p.name: p for p in (pool("inventory", site.template), pool("clones", site.template))}
            options = sim.options(create_folders=True, task_limit=args.task_limit)
            settings = VSphereSettings.from_options(options, instance="bench")
            provider = VSphereProvider("bench", settings, pools)
            provider.start()
            try:
                rows = run(provider, args)
            finally:
                provider.stop()
        finally:
            sim.stop()
    rss_after, hwm = rss_kib()
    rows.append(
        ("provider process RSS", f"{rss_before[0] / 1024:.0f} MiB before, {rss_after / 1024:.0f} MiB after")
    )
    rows.append(("provider process peak RSS (VmHWM)", f"{hwm / 1024:.0f} MiB"))
    print(f"vcsim (govmomi 0.24), CloneVM_Task +{args.clone_ms} ms, task_limit {args.task_limit}\n")
    print("| measure | result |\n|---|---|")
    for measure, result in rows:
        print(f"| {measure} | {result} |")


def run(provider: VSphereProvider, args: argparse.Namespace) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    made = fill(provider, "inventory", args.vms, 20)
    rows.append(
        (f"populate: {args.vms} create_vm from 20 threads ({args.task_limit} sessions)", f"{made:.1f} s")
    )
    provider.list_vms("inventory")  # lookups cached
    times, calls = [], None
    for _ in range(args.repeat):
        before = provider.calls
        started = time.monotonic()
        listed = provider.list_vms("inventory")
        times.append(time.monotonic() - started)
        calls = provider.calls - before
        assert len(listed) == args.vms, len(listed)
    rows.append(
        (
            f"list_vms of a {args.vms}-VM folder (median of {args.repeat})",
            f"{statistics.median(times) * 1000:.0f} ms",
        )
    )
    rows.append(
        ("SOAP calls per list_vms", ", ".join(f"{k} × {v}" for k, v in sorted((calls or {}).items())))
    )

    single = []
    for n in range(3):
        started = time.monotonic()
        provider.create_vm("clones", f"single-{n}")
        single.append(time.monotonic() - started)
    one = statistics.median(single)
    before = provider.calls
    took = fill(provider, "clones", args.clones, args.task_limit)
    ideal = one * args.clones / args.task_limit
    rows.append(("one create_vm (clone + power-on + reads), median of 3", f"{one * 1000:.0f} ms"))
    rows.append(
        (
            f"{args.clones} create_vm from {args.task_limit} threads",
            f"{took:.2f} s = {took / ideal:.2f} × the ideal {ideal:.2f} s "
            f"(one create_vm × {args.clones}/{args.task_limit})",
        )
    )
    per_clone = {k: round(v / args.clones, 2) for k, v in (provider.calls - before).items()}
    rows.append(("SOAP calls per create_vm", ", ".join(f"{k} {v:g}" for k, v in sorted(per_clone.items()))))
    rows.append(("vCenter sessions open", str(provider._sessions.open_sessions)))
    return rows


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
