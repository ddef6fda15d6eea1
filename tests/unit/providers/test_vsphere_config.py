"""The vSphere provider's settings: every key of the original, its defaults, and errors naming the key."""

from __future__ import annotations

import json
from typing import Any

import pytest

from vmpooler.errors import ConfigError
from vmpooler.providers import load_provider_class
from vmpooler.providers.vsphere import POOL_OPTION_KEYS, PoolSettings, VSphereProvider, VSphereSettings
from vmpooler.providers.vsphere.clone import annotation, valid_template_path
from vmpooler.providers.vsphere.config import split_server
from vmpooler.providers.vsphere.provider import usable_ip

REQUIRED = {"server": "vsphere.example.com", "username": "vmpooler", "password": "swimsw1msw!m"}


def settings(**options: Any) -> VSphereSettings:
    return VSphereSettings.from_options({**REQUIRED, **options}, instance="vsphere")


def test_the_registry_finds_the_provider_and_its_settings() -> None:
    cls = load_provider_class("vSphere")
    assert cls is VSphereProvider and cls.config_class is VSphereSettings
    assert (
        cls.pool_option_keys
        == POOL_OPTION_KEYS
        == frozenset(
            {
                "folder",
                "datastore",
                "datacenter",
                "network",
                "create_linked_clone",
                "snapshot_mainMem_ioBlockPages",
                "snapshot_mainMem_iowait",
            }
        )
    )


def test_defaults_are_the_originals() -> None:
    s = settings()
    assert (s.insecure, s.datacenter, s.vsphere_timeout, s.connection_pool_timeout) == (
        False,
        None,
        60.0,
        60.0,
    )
    assert s.connection_pool_size is None and s.ready_check == "ssh" and s.ready_check_port == 22
    assert (s.create_folders, s.create_linked_clones, s.create_template_delta_disks) == (False, True, False)
    assert (s.max_tries, s.retry_factor, s.task_limit) == (3, 10.0, 10)
    assert (s.manage_host_selection, s.host_selection_max_age, s.utilization_limit) == (False, 60.0, 90.0)
    assert s.migration_limit is None and not s.migration_enabled
    assert s.address == ("vsphere.example.com", 443)


def test_the_original_example_section_loads_with_core_keys_skipped() -> None:
    s = VSphereSettings.from_options(
        {":server": "vsphere.pdx.example.com", "username": "u", "password": "p", "provider_class": "vsphere"},
        instance="vsphere-pdx",
    )
    assert s.server == "vsphere.pdx.example.com"


@pytest.mark.parametrize(("pools", "task_limit", "size"), [(0, 10, 10), (25, 10, 25), (1, 1, 2), (3, 4, 4)])
def test_connection_pool_size_defaults_to_max_of_pools_task_limit_and_two(
    pools: int, task_limit: int, size: int
) -> None:
    assert settings(task_limit=task_limit).pool_size(pools) == size
    assert settings(connection_pool_size=7).pool_size(pools) == 7


@pytest.mark.parametrize(
    ("server", "port", "address"),
    [
        ("vc.example.com", None, ("vc.example.com", 443)),
        ("vc.example.com", 8443, ("vc.example.com", 8443)),
        ("vc.example.com:8443", None, ("vc.example.com", 8443)),
        ("vc.example.com:8443", 8443, ("vc.example.com", 8443)),
        ("[fd00::1]:9443", None, ("fd00::1", 9443)),
        ("[fd00::1]", None, ("fd00::1", 443)),
    ],
)
def test_server_may_carry_the_port(server: str, port: int | None, address: tuple[str, int]) -> None:
    assert split_server(server, port) == address
    assert settings(server=server, **({} if port is None else {"port": port})).address == address


def test_migration_limit_enables_migration() -> None:
    assert settings(migration_limit=2).migration_enabled
    assert not settings(migration_limit=0).migration_enabled


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("server", "vc:notaport", "bad port"),
        ("server", ":443", "needs a host name"),
        ("server", 5, "must be a string"),
        ("port", 0, "TCP port"),
        ("insecure", "sure", "must be true or false"),
        ("create_folders", 2, "must be true or false"),
        ("vsphere_timeout", 0, "> 0"),
        ("connection_pool_size", 0, "> 0"),
        ("connection_pool_timeout", -1, ">= 0"),
        ("ready_check", "ping", "must be one of poweron, ssh, tools"),
        ("utilization_limit", 120, "from 0 to 100"),
        ("max_tries", 1.5, "must be an integer"),
        ("migration_limit", -1, ">= 0"),
        ("datacenter", 3, "must be a string"),
    ],
)
def test_errors_name_the_key(key: str, value: object, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(**{key: value})
    [problem] = caught.value.problems
    assert problem.startswith(f":providers:.vsphere.{key}: ") and reason in problem


def test_server_and_port_must_agree() -> None:
    with pytest.raises(ValueError, match="port key says 444"):
        settings(server="vc:443", port=444).address  # noqa: B018 - the property raises


def test_required_keys() -> None:
    with pytest.raises(ConfigError) as caught:
        VSphereSettings.from_options({}, instance="v")
    assert {p.split(":")[2].split(".")[2] for p in caught.value.problems} >= {
        "server",
        "username",
        "password",
    }


def test_the_password_is_not_in_the_repr() -> None:
    assert "swimsw1msw" not in repr(settings())


# -- pool keys --------------------------------------------------------------------------------------


def test_pool_settings_from_the_original_example() -> None:
    ps = PoolSettings.from_options(
        {
            "folder": "Pooled VMs/debian-7-x86_64",
            "datastore": "vmstorage",
            "create_linked_clone": False,
            "snapshot_mainMem_ioBlockPages": "2048",
            "snapshot_mainMem_iowait": 0,
        },
        path=":pools:.debian-7-x86_64",
    )
    assert ps.folder == "Pooled VMs/debian-7-x86_64" and ps.datastore == "vmstorage"
    assert ps.create_linked_clone is False
    assert (ps.snapshot_mainMem_ioBlockPages, ps.snapshot_mainMem_iowait) == ("2048", "0")
    assert ps.datacenter is None and ps.network is None


def test_pool_settings_report_every_problem() -> None:
    with pytest.raises(ConfigError) as caught:
        PoolSettings.from_options({"datastore": 5, "create_linked_clone": "maybe"}, path=":pools:[0]")
    assert sorted(caught.value.problems) == [
        ":pools:[0].create_linked_clone: must be true or false, got 'maybe'",
        ":pools:[0].datastore: must be a string, got 5",
    ]


def test_a_pool_without_folder_loads_as_in_the_original() -> None:
    assert PoolSettings.from_options({}, path=":pools:[0]").folder is None


def test_a_bad_pool_key_fails_when_the_provider_is_built() -> None:
    from vmpooler.providers.base import PoolSpec

    with pytest.raises(ConfigError, match=r":pools:\.p\.datastore: must be a string"):
        VSphereProvider(
            "vsphere", settings(), {"p": PoolSpec(name="p", template="T/t", options={"datastore": 5})}
        )


# -- small rules ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "valid"),
    [("Templates/centos", True), ("a/b/c", True), ("centos", False), ("/T/c", False), ("T/", False)],
)
def test_template_paths_need_a_folder(template: str, valid: bool) -> None:
    assert valid_template_path(template) is valid


@pytest.mark.parametrize(
    ("ip", "usable"),
    [
        ("10.1.2.3", "10.1.2.3"),
        ("169.254.3.4", None),
        ("0.0.0.0", None),
        ("", None),
        (None, None),
        ("fe80::1", "fe80::1"),
        ("junk", None),
    ],
)
def test_guest_ips_that_are_not_addresses_yet_are_ignored(ip: str | None, usable: str | None) -> None:
    assert usable_ip(ip) == usable


def test_annotation_is_the_originals_json() -> None:
    fields = json.loads(annotation("vm1", "vmpooler", "Templates/centos"))
    assert list(fields) == ["name", "created_by", "base_template", "creation_timestamp"]
    assert fields["name"] == "vm1" and fields["created_by"] == "vmpooler"
    assert fields["creation_timestamp"].endswith(" UTC")


def test_booleans_read_as_the_core_reads_them() -> None:
    assert settings(insecure="true").insecure is True
    assert settings(create_folders="no").create_folders is False
    ps = PoolSettings.from_options({"folder": "f", "create_linked_clone": "false"}, path=":pools:[0]")
    assert ps.create_linked_clone is False  # a quoted 'false' is false (the original took it as true)
