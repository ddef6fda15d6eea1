#!/usr/bin/env python3
"""A rolling restart of every process under load (issue 15): two API supervisors and two managers on a
private redis-server, keep-alive clients checking out and returning VMs through both APIs, then SIGHUP to
each supervisor in turn (each replaces its children one at a time).

Prints how many children were replaced and how long it took, the checkouts answered meanwhile, every
failed request, the VMs handed out twice and where the shared dummy inventory and Redis disagree once
settled. ``tests/acceptance/test_ha_restart.py`` asserts the same.

Usage: ``python scripts/ha_restart.py [--threads 4]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import RedisServer
from tests.support.ha import rolling_restart


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=4, help="client threads")
    args = parser.parse_args()
    server = RedisServer()
    server.start()
    try:
        report = rolling_restart(server.url(0), threads=args.threads)
    finally:
        server.stop()
    print("\n".join(report.lines()))
    return 1 if report.failures or report.handed_twice or report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
