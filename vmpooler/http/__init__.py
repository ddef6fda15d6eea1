"""The HTTP API: a Falcon app served by waitress."""

from __future__ import annotations

__all__: list[str] = []
