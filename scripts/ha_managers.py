#!/usr/bin/env python3
"""Several managers on one Redis (issue 15): three ``vmpooler manager`` processes share the pools by
lease; one is SIGKILLed and the others adopt its pools; a fourth joins and takes about a quarter.

Starts a private redis-server, prints how the pools were split, the adoption time against the lease,
the time until every pool was full again, how many pools moved to the fourth manager, and where the
shared dummy inventory and Redis disagree once settled. ``tests/acceptance/test_ha_managers.py`` asserts
the same. Then the frozen-manager scenario: two managers, one SIGSTOPped past its lease while the other
adopts its pools, then continued: no pool ever above its size, and it holds no pool with its old token.

Usage: ``python scripts/ha_managers.py [--pools 24] [--lease 3]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import RedisServer
from tests.support.ha import frozen_manager, managers_share_pools


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pools", type=int, default=24)
    parser.add_argument("--lease", type=float, default=3.0, help=":config: manager_lease_seconds")
    args = parser.parse_args()
    server = RedisServer()
    server.start()
    try:
        report = managers_share_pools(server.url(0), pools=args.pools, lease=args.lease)
        print("\n".join(report.lines()))
        frozen = frozen_manager(server.url(1), pools=args.pools // 2, lease=args.lease)
        print("\n".join(frozen.lines()))
    finally:
        server.stop()
    over = [n for n in frozen.most_vms.values() if n > frozen.size]
    return (
        1
        if report.problems or report.moved_elsewhere or frozen.problems or frozen.stale_tokens or over
        else 0
    )


if __name__ == "__main__":
    sys.exit(main())
