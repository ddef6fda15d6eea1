"""``vmpooler.keys``: the original's Redis layout, spelled in one place."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from vmpooler import keys

ORIGINAL_LAYOUT = {
    keys.POOLS: "vmpooler__pools",
    keys.pool_hash("deb"): "vmpooler__pool__deb",
    keys.pending_set("deb"): "vmpooler__pending__deb",
    keys.ready_set("deb"): "vmpooler__ready__deb",
    keys.running_set("deb"): "vmpooler__running__deb",
    keys.completed_set("deb"): "vmpooler__completed__deb",
    keys.discovered_set("deb"): "vmpooler__discovered__deb",
    keys.migrating_set("deb"): "vmpooler__migrating__deb",
    keys.active_hash("deb"): "vmpooler__active__deb",
    keys.vm_hash("vm1"): "vmpooler__vm__vm1",
    keys.token("abc"): "vmpooler__token__abc",
    keys.tag_stats("2026-11-30"): "vmpooler__tag__2026-11-30",
    keys.clone_stats("2026-11-30"): "vmpooler__clone__2026-11-30",
    keys.boot_stats("2026-11-30"): "vmpooler__boot__2026-11-30",
    keys.LASTBOOT: "vmpooler__lastboot",
    keys.empty_flag("deb"): "vmpooler__empty__deb",
    keys.TASKS_CLONE: "vmpooler__tasks__clone",
    keys.TASKS_ONDEMANDCLONE: "vmpooler__tasks__ondemandclone",
    keys.TASKS_DISK: "vmpooler__tasks__disk",
    keys.TASKS_SNAPSHOT: "vmpooler__tasks__snapshot",
    keys.TASKS_SNAPSHOT_REVERT: "vmpooler__tasks__snapshot-revert",
    keys.config_override("poolsize"): "vmpooler__config__poolsize",
    keys.config_override("template"): "vmpooler__config__template",
    keys.config_override("clone_target"): "vmpooler__config__clone_target",
    keys.POOLRESET: "vmpooler__poolreset",
    keys.TEMPLATE_PREPARED: "vmpooler__template__prepared",
    keys.PROVISIONING_REQUEST: "vmpooler__provisioning__request",
    keys.PROVISIONING_PROCESSING: "vmpooler__provisioning__processing",
    keys.ODCREATE_TASK: "vmpooler__odcreate__task",
    keys.TEMPLATE_DELTAS: "vmpooler__template__deltas",
    keys.UNDO_SIZE_OVERRIDE: "vmpooler__pool__undo_size_override",
    keys.UNDO_TEMPLATE_OVERRIDE: "vmpooler__pool__undo_template_override",
    keys.odrequest("r1"): "vmpooler__odrequest__r1",
    keys.dlq("clone"): "vmpooler__dlq__clone",
    keys.odrequest_vms("r1", "deb", "debian-12"): "vmpooler__r1__deb__debian-12",
    keys.ratelimit("vm_creation", "token:abc"): "vmpooler__ratelimit__vm_creation__token:abc",
    keys.ratelimit("global_per_ip", "ip:10.0.0.1"): "vmpooler__ratelimit__global_per_ip__ip:10.0.0.1",
}

OURS = {
    keys.CIRCUIT_BREAKERS: "vmpooler__circuit_breakers",
    keys.checkout_claim("n1"): "vmpooler__checkout__n1",
    keys.CLONE_LEASES: "vmpooler__tasks__clone_leases",
    keys.CLONE_WAITING: "vmpooler__tasks__clone_waiting",
    keys.ONDEMAND_LEASES: "vmpooler__tasks__ondemandclone_leases",
    keys.ONDEMAND_WAITING: "vmpooler__tasks__ondemandclone_waiting",
    keys.user_tokens("alice"): "vmpooler__user_tokens__alice",
    keys.USER_TOKENS_INDEXED: "vmpooler__user_tokens_indexed",
    keys.events_channel("deb"): "vmpooler__events__deb",
}


@pytest.mark.parametrize(("built", "expected"), [*ORIGINAL_LAYOUT.items(), *OURS.items()])
def test_every_key_is_spelled_as_expected(built: str, expected: str) -> None:
    assert built == expected


@pytest.mark.parametrize("state", keys.STATES)
def test_state_sets_are_the_named_sets(state: str) -> None:
    assert keys.state_set(state, "deb") == f"vmpooler__{state}__deb"


def test_bad_names_are_refused() -> None:
    with pytest.raises(ValueError):
        keys.state_set("limbo", "deb")
    with pytest.raises(ValueError):
        keys.config_override("colour")


def test_the_token_pattern_matches_token_keys_only() -> None:
    import fnmatch

    assert fnmatch.fnmatchcase(keys.token("abc"), keys.token_pattern())
    assert not fnmatch.fnmatchcase(keys.user_tokens("abc"), keys.token_pattern())


def test_every_exported_name_is_used_by_a_test_here() -> None:
    # a key builder nobody uses is dead code: keys.py exports only what the program uses
    exported = set(keys.__all__)
    tested = {
        "POOLS", "pool_hash", "pending_set", "ready_set", "running_set", "completed_set", "discovered_set",
        "migrating_set", "active_hash", "vm_hash", "token", "tag_stats", "clone_stats", "boot_stats",
        "LASTBOOT", "empty_flag", "TASKS_CLONE", "TASKS_ONDEMANDCLONE", "TASKS_DISK", "TASKS_SNAPSHOT",
        "TASKS_SNAPSHOT_REVERT", "config_override", "POOLRESET", "TEMPLATE_PREPARED",
        "PROVISIONING_REQUEST", "PROVISIONING_PROCESSING", "CLONE_LEASES", "CLONE_WAITING", "user_tokens",
        "USER_TOKENS_INDEXED", "events_channel", "state_set", "token_pattern", "ODCREATE_TASK",
        "TEMPLATE_DELTAS", "UNDO_SIZE_OVERRIDE", "UNDO_TEMPLATE_OVERRIDE", "odrequest", "odrequest_vms",
        "ONDEMAND_LEASES", "ONDEMAND_WAITING", "CIRCUIT_BREAKERS", "dlq", "checkout_claim", "ratelimit",
        "QUEUE", "QUEUE_CHANNEL", "QUEUE_DEMAND", "QUEUE_WANTED", "TENANT_RUNNING", "TENANT_HELD",
        "TENANT_PASS", "QUEUE_VTIME", "QUEUE_SERVED",
        "QUEUE_BY_TENANT", "QUEUE_TENANTS", "queue_request", "queue_worker",
    }  # fmt: skip
    assert exported == tested


def test_queue_keys_keep_the_original_prefix_and_do_not_collide_with_pool_channels() -> None:
    assert keys.queue_request("r1") == "vmpooler__queue__req__r1"
    assert keys.queue_worker("w1") == "vmpooler__queue__worker__w1"
    # a pool called "queue" has the channel vmpooler__events__queue; the queue's channel is elsewhere
    assert keys.events_channel("queue") != keys.QUEUE_CHANNEL


def test_every_exported_name_is_used_by_the_program() -> None:
    package = Path(keys.__file__).parent
    source = "\n".join(path.read_text() for path in package.rglob("*.py") if path != Path(keys.__file__))
    unused = {name for name in keys.__all__ if not re.search(rf"\bkeys\.{name}\b", source)}
    assert unused == set()
