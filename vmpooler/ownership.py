"""Which manager owns a pool: rendezvous (highest random weight) hashing over the live managers.

Every manager computes the same owner from the same member list without talking to the others. A member
that joins takes about 1/N of the pools (those whose weight it tops) and moves nothing between the
others; a member that leaves gives away only its own pools. See docs/architecture.md, "Several managers".
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

__all__ = ["owned_by", "owner_of"]


def _weight(pool: str, member: str) -> bytes:
    return hashlib.blake2b(f"{pool}\0{member}".encode(), digest_size=8).digest()


def owner_of(pool: str, members: Iterable[str]) -> str | None:
    """The member that owns ``pool`` (None when there is none)."""
    return max(members, key=lambda member: (_weight(pool, member), member), default=None)


def owned_by(member: str, pools: Iterable[str], members: Iterable[str]) -> set[str]:
    """The pools of ``pools`` that ``member`` owns among ``members`` (itself counted even when it is not
    listed yet: a process owns by the list it is about to join)."""
    everyone = set(members) | {member}
    return {pool for pool in pools if owner_of(pool, everyone) == member}
