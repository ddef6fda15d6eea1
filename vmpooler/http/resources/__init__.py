"""Falcon resources, one module per URL family."""

from __future__ import annotations

__all__: list[str] = []
