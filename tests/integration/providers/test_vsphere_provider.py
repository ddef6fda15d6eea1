"""VSphereProvider on govmomi's simulator: what the shared contract does not cover.

Folders, clone specs, inventory round trips, disks, snapshots, delta disks, host selection,
migration, purge and the readiness checks. Failures of vCenter itself are in test_vsphere_failures.py.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

import pytest

from tests.integration.providers.conftest import MakeProvider, pool_spec
from tests.integration.providers.vcsim import DATACENTER, Site, Vcsim, prepare_site
from vmpooler.errors import CloneFailed, ProviderError, VMNotFound
from vmpooler.providers.vsphere import specs
from vmpooler.providers.vsphere.values import Ref

pytestmark = pytest.mark.integration


def find(vcsim: Vcsim, path: str) -> Ref | None:
    with vcsim.session() as s:
        return s.find_by_path(f"{DATACENTER}/vm/{path}")


def props(vcsim: Vcsim, ref: Ref, *paths: str) -> dict[str, Any]:
    with vcsim.session() as s:
        return s.properties([ref], paths)[ref]


def vm_ref(vcsim: Vcsim, path: str) -> Ref:
    ref = find(vcsim, path)
    assert ref is not None, f"no VM at {path}"
    return ref


# -- folders and clone specs ------------------------------------------------------------------------


def test_clone_creates_every_missing_folder_level(
    make_provider: MakeProvider, site: Site, vcsim: Vcsim
) -> None:
    provider = make_provider([pool_spec(site, "deep", folder="a/b/c")], create_folders=True)
    provider.create_vm("deep", "deep-vm")
    assert find(vcsim, "a/b/c/deep-vm") is not None
    assert [info.name for info in provider.list_vms("deep")] == ["deep-vm"]


def test_a_missing_folder_fails_for_good_without_create_folders(
    make_provider: MakeProvider, site: Site
) -> None:
    provider = make_provider([pool_spec(site, "nofolder", folder="not/there")])
    assert provider.list_vms("nofolder") == []  # no folder: no VMs, not an error
    with pytest.raises(CloneFailed, match="cannot find the configured folder") as caught:
        provider.create_vm("nofolder", "vm-x")
    assert caught.value.transient is False


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"template": "Templates/none"}, "template VM of Templates/none which does not exist"),
        ({"template": "no-folder"}, "must be a path"),
        ({"datastore": "NoSuchDS"}, "datastore 'NoSuchDS' does not exist"),
        ({"clone_target": "NoSuchCluster"}, "no cluster 'NoSuchCluster'"),
        ({"network": "NoSuchNet"}, "cannot find network NoSuchNet"),
    ],
)
def test_clone_configuration_errors_are_permanent(
    make_provider: MakeProvider, site: Site, options: dict[str, Any], message: str
) -> None:
    provider = make_provider([pool_spec(site, "bad", **options)], create_folders=True)
    with pytest.raises(CloneFailed, match=message) as caught:
        provider.create_vm("bad", "vm-bad")
    assert caught.value.transient is False
    assert provider.list_vms("bad") == []


def test_clone_sets_guestinfo_hostname_and_main_memory_options(
    make_provider: MakeProvider, site: Site, vcsim: Vcsim
) -> None:
    pool = pool_spec(site, "extra", snapshot_mainMem_ioBlockPages="2048", snapshot_mainMem_iowait=0)
    provider = make_provider([pool], create_folders=True)
    info = provider.create_vm("extra", "extra-vm")
    assert info.powerstate == "PoweredOn" and info.template == site.template and info.host
    config = props(vcsim, vm_ref(vcsim, "vmpooler/extra/extra-vm"), "config.extraConfig")[
        "config.extraConfig"
    ]
    values = {option.key: option.value for option in config}
    assert values["guestinfo.hostname"] == "extra-vm"
    assert values["mainMem.ioBlockPages"] == "2048" and values["mainMem.iowait"] == "0"


@pytest.mark.parametrize(
    ("network", "backing"),
    [("DC0_DVPG0", "DistributedVirtualPortBackingInfo"), ("VM Network", "NetworkBackingInfo")],
)
def test_clone_moves_the_first_nic_to_the_pool_network(
    make_provider: MakeProvider, site: Site, vcsim: Vcsim, network: str, backing: str
) -> None:
    provider = make_provider([pool_spec(site, "net", network=network)], create_folders=True)
    name = f"net-{backing[:4].lower()}"
    provider.create_vm("net", name)
    with vcsim.session() as s:
        nics = [d for d in s.devices(vm_ref(vcsim, f"vmpooler/net/{name}")) if d.kind == "nic"]
    assert type(nics[0].raw.backing).__name__.endswith(backing)


@pytest.mark.parametrize(
    ("global_linked", "pool_linked", "move_type"),
    [
        (True, None, "moveChildMostDiskBacking"),
        (False, None, "moveAllDiskBackingsAndConsolidate"),
        (True, False, "moveAllDiskBackingsAndConsolidate"),
        (False, True, "moveChildMostDiskBacking"),
    ],
)
def test_linked_clones_follow_the_pool_then_the_global_setting(
    make_provider: MakeProvider,
    site: Site,
    monkeypatch: pytest.MonkeyPatch,
    global_linked: bool,
    pool_linked: bool | None,
    move_type: str,
) -> None:
    sent: list[Any] = []
    real = specs.clone_spec

    def recording(mo: Any, plan: specs.ClonePlan) -> Any:  # a spy: the real spec is sent
        sent.append(real(mo, plan))
        return sent[-1]

    monkeypatch.setattr(specs, "clone_spec", recording)
    extra = {} if pool_linked is None else {"create_linked_clone": pool_linked}
    provider = make_provider(
        [pool_spec(site, "linked", **extra)], create_folders=True, create_linked_clones=global_linked
    )
    provider.create_vm("linked", f"linked-{len(sent)}-{global_linked}-{pool_linked}")
    assert sent[0].location.diskMoveType == move_type
    assert sent[0].powerOn is True and sent[0].template is False


def test_template_delta_disks_are_added_once(make_provider: MakeProvider, vcsim: Vcsim, site: Site) -> None:
    delta_site = prepare_site(vcsim, template="delta-tpl")
    pool = pool_spec(site, "delta", template=delta_site.template)
    off = make_provider([pool], create_template_delta_disks=False)
    off.prepare_template("delta")
    assert off.calls["ReconfigVM_Task"] == 0
    provider = make_provider([pool], create_template_delta_disks=True, create_folders=True)
    provider.prepare_template("delta")
    provider.prepare_template("delta")  # idempotent: the layer is there
    assert provider.calls["ReconfigVM_Task"] == 1
    with vcsim.session() as s:
        disks = [d for d in s.devices(delta_site.template_ref) if d.kind == "disk"]
    assert disks and all(d.has_parent for d in disks)
    assert provider.create_vm("delta", "delta-vm").powerstate == "PoweredOn"


# -- inventory --------------------------------------------------------------------------------------


def test_inventory_is_one_property_collector_call(make_provider: MakeProvider, site: Site) -> None:
    provider = make_provider([pool_spec(site, "inv")], create_folders=True)
    names = [f"inv-{n}" for n in range(6)]
    for name in names:
        provider.create_vm("inv", name)
    provider.list_vms("inv")  # lookups (datacenter, folder, host names) are cached from here on
    before = provider.calls
    listed = provider.list_vms("inv")
    assert sorted(info.name for info in listed) == names
    assert provider.calls - before == {"RetrievePropertiesEx": 1}
    assert all(
        info.powerstate == "PoweredOn" and info.host and info.template == site.template for info in listed
    )
    assert not any(key.startswith("get:") for key in provider.calls)  # no lazy property reads, ever


def test_inventory_leaves_out_templates_and_other_folders(make_provider: MakeProvider, site: Site) -> None:
    templates = make_provider([pool_spec(site, "tpls", folder="Templates")])
    assert templates.list_vms("tpls") == []
    one = make_provider([pool_spec(site, "one"), pool_spec(site, "two")], create_folders=True)
    one.create_vm("one", "in-one")
    assert one.list_vms("two") == [] and one.get_vm("two", "in-one") is None
    one.destroy_vm("two", "in-one")  # another pool's VM of that name is not touched
    assert one.get_vm("one", "in-one") is not None


# -- disks, snapshots -------------------------------------------------------------------------------


def test_disks_are_thin_at_the_next_free_unit(make_provider: MakeProvider, site: Site, vcsim: Vcsim) -> None:
    provider = make_provider([pool_spec(site, "disks")], create_folders=True)
    provider.create_vm("disks", "disk-vm")
    with vcsim.session() as s:
        before = [d for d in s.devices(vm_ref(vcsim, "vmpooler/disks/disk-vm")) if d.kind == "disk"]
    provider.create_disk("disks", "disk-vm", 3)
    provider.create_disk("disks", "disk-vm", 5)
    with vcsim.session() as s:
        after = [d for d in s.devices(vm_ref(vcsim, "vmpooler/disks/disk-vm")) if d.kind == "disk"]
    new = after[len(before) :]
    assert [d.raw.capacityInKB for d in new] == [3 * 1024**2, 5 * 1024**2]
    assert all(d.raw.backing.thinProvisioned and d.raw.backing.diskMode == "persistent" for d in new)
    units = [d.unit_number for d in after if d.controller_key == new[0].controller_key]
    assert len(set(units)) == len(units) and 7 not in units
    assert new[0].file_name == f"[LocalDS_0] disk-vm/disk-vm_{len(before)}.vmdk"
    with pytest.raises(ValueError, match="positive"):
        provider.create_disk("disks", "disk-vm", 0)


def test_snapshots_and_revert(make_provider: MakeProvider, site: Site, vcsim: Vcsim) -> None:
    provider = make_provider([pool_spec(site, "snaps")], create_folders=True)
    provider.create_vm("snaps", "snap-vm")
    provider.create_snapshot("snaps", "snap-vm", "s1")
    provider.create_snapshot("snaps", "snap-vm", "s2")
    with pytest.raises(ProviderError, match="already has a snapshot") as caught:
        provider.create_snapshot("snaps", "snap-vm", "s1")
    assert caught.value.transient is False
    with vcsim.session() as s:
        assert set(s.snapshots(vm_ref(vcsim, "vmpooler/snaps/snap-vm"))) == {"s1", "s2"}
    provider.revert_snapshot("snaps", "snap-vm", "s1")
    with pytest.raises(ProviderError, match="no snapshot called 'nope'") as caught:
        provider.revert_snapshot("snaps", "snap-vm", "nope")
    assert caught.value.transient is False
    with pytest.raises(VMNotFound):
        provider.create_snapshot("snaps", "missing-vm", "s1")


# -- host selection and migration -------------------------------------------------------------------


def test_host_selection_round_robins_over_the_least_used_hosts(
    make_provider: MakeProvider, site: Site, vcsim: Vcsim
) -> None:
    provider = make_provider(
        [pool_spec(site, "placed")], create_folders=True, manage_host_selection=True, host_selection_max_age=0
    )
    # loads 10 %, 20 %, 60 %: the average is 30 %, so DC0_C0_H0 and DC0_C0_H1 take turns
    hosts = [provider.create_vm("placed", f"placed-{n}").host for n in range(4)]
    assert hosts == ["DC0_C0_H0", "DC0_C0_H1", "DC0_C0_H0", "DC0_C0_H1"]
    stop = threading.Event()
    with vcsim.session() as s:
        s.run("maintenance", site.hosts["DC0_C0_H0"], "EnterMaintenanceMode_Task", 0, timeout=10, stop=stop)
    try:
        # H0 is out: H1 (20 %) and H2 (60 %) average 40 %, so only H1 is a target
        assert {provider.create_vm("placed", f"placed-m{n}").host for n in range(2)} == {"DC0_C0_H1"}
    finally:
        with vcsim.session() as s:
            s.run("exit", site.hosts["DC0_C0_H0"], "ExitMaintenanceMode_Task", 0, timeout=10, stop=stop)


def test_migration_moves_a_vm_off_a_busy_host(make_provider: MakeProvider, site: Site, vcsim: Vcsim) -> None:
    pools = [pool_spec(site, "mig")]
    off = make_provider(pools, create_folders=True)
    provider = make_provider(pools, migration_limit=2)
    off.create_vm("mig", "mig-vm")
    with vcsim.session() as s:  # put it on the busiest host, as vCenter's own placement might
        s.wait(
            s.relocate(vm_ref(vcsim, "vmpooler/mig/mig-vm"), site.hosts["DC0_C0_H2"]),
            "move",
            10,
            threading.Event(),
        )
    assert off.migrate_vm("mig", "mig-vm") is None  # migration_limit unset: never moves
    assert provider.migrate_vm("mig", "mig-vm") == "DC0_C0_H0"
    info = provider.get_vm("mig", "mig-vm")
    assert info is not None and info.host == "DC0_C0_H0"
    assert provider.migrate_vm("mig", "mig-vm") is None  # on a target host now
    with pytest.raises(VMNotFound):
        provider.migrate_vm("mig", "no-such-vm")


# -- purge ------------------------------------------------------------------------------------------


def test_purge_removes_unconfigured_folders_but_keeps_the_allowlist(
    make_provider: MakeProvider, site: Site, vcsim: Vcsim
) -> None:
    old = make_provider(
        [
            pool_spec(site, "p-keep", folder="purge/p-keep"),
            pool_spec(site, "p-old", folder="purge/p-old"),
            pool_spec(site, "p-allowed", folder="purge/p-allowed"),
            pool_spec(site, "p-vm", folder="purge/p-vm"),
        ],
        create_folders=True,
    )
    for pool in ("p-keep", "p-old", "p-allowed", "p-vm"):
        old.create_vm(pool, f"{pool}-1")
    old.create_vm("p-vm", "precious")
    prepare_site(vcsim, template="purge-tpl", folder_path="purge/p-tpl")  # a template in a stray folder
    new = make_provider([pool_spec(site, "p-keep", folder="purge/p-keep")])
    removed = new.purge_unconfigured(["p-allowed", "precious"])
    assert sorted(removed) == ["p-old", "p-old-1", "p-vm-1"]
    assert find(vcsim, "purge/p-old") is None
    assert find(vcsim, "purge/p-allowed/p-allowed-1") is not None
    assert find(vcsim, "purge/p-vm/precious") is not None  # its folder stays: it is not empty
    assert find(vcsim, "purge/p-tpl/purge-tpl") is not None  # templates are never purged
    assert [info.name for info in new.list_vms("p-keep")] == ["p-keep-1"]
    assert new.purge_unconfigured(["p-allowed", "precious"]) == []


# -- readiness --------------------------------------------------------------------------------------


def test_ssh_ready_check_is_one_connect_to_the_name(make_provider: MakeProvider, site: Site) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        provider = make_provider(
            [pool_spec(site, "ssh"), pool_spec(site, "ssh-dom", domain="invalid")],
            create_folders=True,
            ready_check="ssh",
            ready_check_port=port,
            ready_check_timeout=2,
        )
        provider.create_vm("ssh", "localhost")  # no domain and no guest IP: the bare name is dialled
        assert provider.vm_ready("ssh", "localhost") is True
    with pytest.raises(ProviderError, match=f"cannot connect to localhost:{port}"):
        provider.vm_ready("ssh", "localhost")
    provider.create_vm("ssh-dom", "vm-dom")
    with pytest.raises(ProviderError, match=rf"cannot connect to vm-dom\.invalid:{port}"):
        provider.vm_ready("ssh-dom", "vm-dom")


def test_tools_ready_check_wants_vmware_tools(make_provider: MakeProvider, site: Site) -> None:
    provider = make_provider([pool_spec(site, "tools")], create_folders=True, ready_check="tools")
    provider.create_vm("tools", "tools-vm")
    assert provider.vm_ready("tools", "tools-vm") is False  # the simulator runs no tools


def test_a_powered_off_vm_is_not_ready(make_provider: MakeProvider, site: Site, vcsim: Vcsim) -> None:
    provider = make_provider([pool_spec(site, "off")], create_folders=True)
    provider.create_vm("off", "off-vm")
    with vcsim.session() as s:
        s.run(
            "off", vm_ref(vcsim, "vmpooler/off/off-vm"), "PowerOffVM_Task", timeout=10, stop=threading.Event()
        )
    assert provider.vm_ready("off", "off-vm") is False
    info = provider.get_vm("off", "off-vm")
    assert info is not None and info.powerstate == "PoweredOff"
    provider.destroy_vm("off", "off-vm")
    assert provider.get_vm("off", "off-vm") is None
