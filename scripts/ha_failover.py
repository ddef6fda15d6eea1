#!/usr/bin/env python3
"""Kill the Redis primary under a checkout load and print what the service did (issue 15's first
scenario): two API supervisors and two managers (dummy provider, one shared inventory file) on three
redis-servers and three sentinels on loopback, client threads doing checkout → return spread over the
two APIs, SIGKILL to the primary.

Prints the failover time (kill → the sentinels name a new primary), the recovery time (new primary →
the first checkout answered 200), every HTTP status seen, the VMs handed out twice and where the
provider's inventory and Redis disagree once the pools settle. ``tests/acceptance/test_ha_failover.py``
asserts the same on a shorter run.

Usage: ``python scripts/ha_failover.py [--before 5] [--after 10] [--threads 8]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.ha import failover_under_load


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=float, default=5.0, help="seconds of load before the kill")
    parser.add_argument("--after", type=float, default=10.0, help="seconds of load after the recovery")
    parser.add_argument("--threads", type=int, default=8, help="client threads")
    args = parser.parse_args()
    report = failover_under_load(before=args.before, after=args.after, threads=args.threads)
    print("\n".join(report.lines()))
    bad = report.handed_twice or report.problems or report.statuses.get(500)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
