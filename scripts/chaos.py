#!/usr/bin/env python3
"""Chaos run by hand: the real service on a dummy provider that fails 20 % of everything, under load.

Usage: ``python scripts/chaos.py [--minutes M] [--seed N] [--threads N] [--keep] [--pools N --size S]``
(``--pools 100 --size 20``: 2,000 VMs; the default is 3 pools of 5, 4 and 3). It prints a summary with
the numbers and exits 1 when a check failed. The run and its checks live in ``tests/support/chaos``;
this script only runs ``python -m tests.support.chaos`` from the repository root with the same Python
and arguments.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    """Replace this process with ``python -m tests.support.chaos ARGS`` in the repository root."""
    os.chdir(REPO)
    os.execv(sys.executable, [sys.executable, "-m", "tests.support.chaos", *sys.argv[1:]])


if __name__ == "__main__":
    main()
