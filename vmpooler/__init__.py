"""vmpooler: pools of ready virtual machines behind a REST API."""

from __future__ import annotations

import logging

__all__ = ["__version__"]

__version__ = "0.1.0"

logging.getLogger("vmpooler").addHandler(logging.NullHandler())
