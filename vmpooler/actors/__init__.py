"""The provider process's pykka actors and the ticker that drives them."""

from __future__ import annotations

__all__: list[str] = []
