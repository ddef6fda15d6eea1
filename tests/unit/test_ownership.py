"""Rendezvous hashing of pools over managers (``vmpooler.ownership``): one owner per pool whatever the
order of the member list, and a member that joins or leaves moves only its share."""

from __future__ import annotations

from vmpooler.ownership import owned_by, owner_of

POOLS = [f"pool-{i}" for i in range(1000)]


def test_every_pool_has_one_owner_whatever_the_order_of_the_members() -> None:
    members = ["m-a", "m-b", "m-c"]
    owners = {pool: owner_of(pool, members) for pool in POOLS}
    assert owners == {pool: owner_of(pool, list(reversed(members))) for pool in POOLS}
    split = [owned_by(m, POOLS, members) for m in members]
    assert sum(map(len, split)) == len(POOLS) and set().union(*split) == set(POOLS)
    for share in split:  # about a third each
        assert 250 < len(share) < 420
    assert owner_of("p", []) is None


def test_a_fourth_member_takes_about_a_quarter_and_moves_nothing_else() -> None:
    before = {pool: owner_of(pool, ["m-a", "m-b", "m-c"]) for pool in POOLS}
    after = {pool: owner_of(pool, ["m-a", "m-b", "m-c", "m-d"]) for pool in POOLS}
    moved = [pool for pool in POOLS if before[pool] != after[pool]]
    assert all(after[pool] == "m-d" for pool in moved)  # only to the newcomer
    assert 0.18 < len(moved) / len(POOLS) < 0.32


def test_a_member_that_leaves_gives_away_only_its_own_pools() -> None:
    before = {pool: owner_of(pool, ["m-a", "m-b", "m-c"]) for pool in POOLS}
    after = {pool: owner_of(pool, ["m-a", "m-c"]) for pool in POOLS}
    moved = {pool for pool in POOLS if before[pool] != after[pool]}
    assert moved == {pool for pool in POOLS if before[pool] == "m-b"}


def test_a_process_counts_itself_before_it_is_listed() -> None:
    assert owned_by("m-new", POOLS, []) == set(POOLS)
    assert owned_by("m-new", POOLS, ["m-a"]) == owned_by("m-new", POOLS, ["m-a", "m-new"])
