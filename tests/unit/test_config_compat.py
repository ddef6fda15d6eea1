"""A file the original vmpooler starts on, this service starts on: the compatibility layer of the config."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vmpooler.config import Config, check_config, env_flag, env_value, load_config, load_config_text
from vmpooler.config.compat import NOT_ACTED_ON
from vmpooler.errors import ConfigError
from vmpooler.providers.dummy import DummySettings
from vmpooler.providers.vsphere import VSphereSettings

ORIGINAL = Path(__file__).parents[1] / "fixtures" / "config" / "original"
VSPHERE = "{server: vc.test, username: u, password: p}"


def load(text: str, **env: str) -> Config:
    return load_config_text(textwrap.dedent(text).lstrip("\n"), env=env)


# --- the original's example files ----------------------------------------------------------------

EXPECTED_WARNINGS = {
    "v3-yaml-example.yaml": {
        "several metrics sinks configured (statsd, graphite, prometheus): using statsd",
        ":prometheus:.prefix: read but not acted on: the vmpooler_instance label is not emitted yet",
        ":prometheus:.prometheus_prefix: read but not acted on: metric names always start with vmpooler_",
    },
    "v3-yml-example.yaml": {
        ":redis:.dlq_enabled: has no effect: the original reads the dead-letter queue settings from "
        ":config: only",
        ":redis:.dlq_ttl: has no effect: the original reads the dead-letter queue settings from "
        ":config: only",
        ":redis:.dlq_max_entries: has no effect: the original reads the dead-letter queue settings from "
        ":config: only",
        ":config:.max_request_age: read but not acted on: the original's example sets it, but no version "
        "ever acted on it",
        ":pools:[0].template: missing or empty: the provider cannot clone for this pool",
    },
    "v3-dummy-example.yaml": set(),
    "v3-dummy-example-aliasedpools.yaml": set(),
}


@pytest.mark.parametrize("name", sorted(path.name for path in ORIGINAL.glob("*.yaml")))
def test_every_example_of_the_original_passes_check_config(name: str) -> None:
    result = check_config(ORIGINAL / name, env={"VMPOOLER_DEBUG": "true"})
    assert result.problems == ()
    if name in EXPECTED_WARNINGS:
        assert set(result.warnings) == EXPECTED_WARNINGS[name]


def test_the_examples_keep_their_meaning() -> None:
    v3 = load_config(ORIGINAL / "v3-yaml-example.yaml", env={})
    assert sorted(v3.providers) == ["dummy", "vsphere", "vsphere-bfs", "vsphere-pdx"]
    pdx = v3.providers["vsphere-pdx"].settings
    assert isinstance(pdx, VSphereSettings)
    assert (pdx.server, pdx.username, pdx.task_limit) == ("vc-pdx.lab.test", "pooler-pdx", 8)
    rocky = v3.pool("rocky-9-x86_64")
    assert rocky.provider_options["snapshot_mainMem_ioBlockPages"] == "1024"
    assert rocky.provider_options["create_linked_clone"] is False
    assert v3.auth is not None and v3.auth.ldap is not None
    assert (v3.auth.ldap.port, v3.auth.ldap.encryption) == (636, "simple_tls")
    assert v3.metrics.prometheus_endpoint == "/prometheus"  # statsd wins, as in the original
    v2 = load_config(ORIGINAL / "v2-yaml-example.yaml", env={})
    assert {pool.domain for pool in v2.pools} == {"lab.test"}  # the 2.x global domain still applies
    aliased = load_config(ORIGINAL / "v3-dummy-example-aliasedpools.yaml", env={"VMPOOLER_DEBUG": "1"})
    assert aliased.candidates("alpine-3-x86_64") == (
        "alpine-3-x86_64",
        "alpine-3-x86_64-alias-otherpool-extended",
    )
    assert aliased.candidates("alpine-32-stringalias") == ("alpine-3-i386-stringalias",)


# --- unknown keys warn, with a suggestion; bad values still fail --------------------------------


def test_a_misspelt_pool_key_is_a_warning_that_suggests_the_right_one() -> None:
    config = load("""
        :pools:
          - {name: a, template: t/a, size: 1, sise: 5}
    """)
    assert config.pool("a").size == 1
    assert config.warnings == (":pools:[0].sise: unknown key, ignored (did you mean 'size'?)",)


@pytest.mark.parametrize(
    ("text", "warning"),
    [
        (
            ":config:\n  tsk_limit: 5\n",
            ":config:.tsk_limit: unknown key, ignored (did you mean 'task_limit'?)",
        ),
        (":redis:\n  sever: r\n", ":redis:.sever: unknown key, ignored (did you mean 'server'?)"),
        (":cofig:\n  task_limit: 1\n", "top level.:cofig:: unknown key, ignored (did you mean ':config:'?)"),
        (
            ":auth:\n  provider: ldap\n  :ldap: {host: h, base: b, user_object: u, hots: x}\n",
            ":auth:.ldap.hots: unknown key, ignored (did you mean 'host'?)",
        ),
        (
            ":rate_limits:\n  vm_create: {limit: 1}\n",
            ":rate_limits:.vm_create: unknown key, ignored (did you mean 'vm_creation'?)",
        ),
        (
            ":providers:\n  :dummy:\n    cretevm_max_time: 1\n",
            ":providers:.dummy.cretevm_max_time: unknown key, ignored (did you mean 'createvm_max_time'?)",
        ),
        (
            ":providers:\n  :vsphere: {server: v, username: u, password: p, datacentre: dc}\n",
            ":providers:.vsphere.datacentre: unknown key, ignored (did you mean 'datacenter'?)",
        ),
        (
            ":pools:\n  - {name: a, template: t/a, size: 1, provider: vsphere, foldr: f}\n"
            f":providers:\n  :vsphere: {VSPHERE}\n",
            ":pools:[0].foldr: unknown key, ignored (did you mean 'folder'?)",
        ),
    ],
)
def test_unknown_keys_everywhere_are_warnings(text: str, warning: str) -> None:
    assert warning in load(text).warnings


def test_the_plugin_checks_a_pools_provider_keys_at_load() -> None:
    pool = "- {name: a, template: t/a, size: 1, provider: vsphere, folder: f, create_linked_clone: 'sure'}"
    with pytest.raises(ConfigError) as info:
        load(f":providers:\n  :vsphere: {VSPHERE}\n:pools:\n  {pool}\n")
    assert info.value.problems == [":pools:[0].create_linked_clone: must be true or false, got 'sure'"]


def test_a_wrong_value_is_still_an_error_naming_key_and_reason() -> None:
    with pytest.raises(ConfigError) as info:
        load(":providers:\n  :dummy:\n    createvm_max_time: 'slow'\n    sise: 1\n")
    [problem] = info.value.problems
    assert problem.startswith(":providers:.dummy.createvm_max_time: must be a number")


def test_every_dummy_key_of_the_original_is_known() -> None:
    config = load("""
        :providers:
          :dummy:
            filename: '/tmp/x.yaml'
            connection_pool_size: 20
            connection_pool_timeout: 10
            migratevm_couldmove_percent: 50
            migratevm_max_time: 1
            migratevm_fail_percent: 1
            getvm_poweroff_percent: 1
            getvm_rename_percent: 1
            createvm_max_time: 1
            createvm_fail_percent: 1
            createdisk_max_time: 1
            createdisk_fail_percent: 1
            createsnapshot_max_time: 1
            createsnapshot_fail_percent: 1
            revertsnapshot_max_time: 1
            revertsnapshot_fail_percent: 1
            destroyvm_max_shutdown_time: 1
            destroyvm_max_time: 1
            destroyvm_fail_percent: 1
            vmready_fail_percent: 1
            is_ready_timeout: 10
    """)
    assert config.warnings == ()
    settings = config.providers["dummy"].settings
    assert isinstance(settings, DummySettings)
    assert (settings.connection_pool_size, settings.is_ready_timeout) == (20, 10)


def test_provider_settings_inherit_the_global_keys_the_original_reads() -> None:
    config = load(f"""
        :config:
          create_folders: 'true'
          max_tries: 5
          vsphere_timeout: 30
        :providers:
          :vsphere: {VSPHERE}
          :vs2: {{provider_class: vsphere, server: v2, username: u, password: p, vsphere_timeout: 90}}
    """)
    one, two = config.providers["vsphere"].settings, config.providers["vs2"].settings
    assert isinstance(one, VSphereSettings) and isinstance(two, VSphereSettings)
    assert (one.create_folders, one.max_tries, one.vsphere_timeout) == (True, 5, 30)
    assert (two.create_folders, two.vsphere_timeout) == (True, 90)  # the provider's own key wins


def test_keys_not_acted_on_say_so_only_when_given() -> None:
    assert load("").warnings == ()
    config = load(
        ":config:\n  health_check_enabled: true\n  purge_enabled: false\n  ondemand_clone_limit: 3\n"
    )
    assert config.globals.health_check_enabled is True and config.globals.ondemand_clone_limit == 3
    assert set(config.warnings) == {
        ":config:.health_check_enabled: read but not acted on: the health verdict is always in /status (its "
        "health section); vmpooler__health is not written",
    }
    assert load(":dns_configs:\n  :gcp: {dns_class: gcp, domain: d.test, project: p}\n").warnings == (
        ":dns_configs:.gcp.dns_class: 'gcp' read but not acted on: DNS records are not managed (only "
        "dynamic-dns is built in); the domain is used",
    )
    for section, key in NOT_ACTED_ON:  # every entry names a key its section really reads
        assert section in {"config", "redis", "prometheus", "tracing"} and key


def test_a_provider_that_cannot_load_is_named_once() -> None:
    result_text = (
        ":providers:\n  gce:\n    project: p\n:pools:\n  - {name: a, template: t, size: 1, provider: gce}\n"
    )
    with pytest.raises(ConfigError) as info:
        load(result_text)
    assert info.value.problems == [
        ":providers:.gce.provider_class: provider_class 'gce': unknown provider (known: dummy, vsphere)"
    ]


# --- the command line ---------------------------------------------------------------------------


def _check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vmpooler", "check-config", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )


def test_check_config_strict_turns_warnings_into_errors(tmp_path: Path) -> None:
    path = tmp_path / "vmpooler.yaml"
    path.write_text(":pools:\n  - {name: a, template: t/a, size: 1, sise: 5}\n")
    relaxed = _check(str(path))
    assert relaxed.returncode == 0, relaxed.stdout + relaxed.stderr
    assert f"{path}: warning: :pools:[0].sise: unknown key, ignored (did you mean 'size'?)" in relaxed.stdout
    strict = _check("--strict", str(path))
    assert strict.returncode == 1
    assert "1 problem(s) and warning(s) (--strict) found" in strict.stderr


def test_check_config_reports_a_bad_provider_option(tmp_path: Path) -> None:
    path = tmp_path / "vmpooler.yaml"
    path.write_text(":providers:\n  :dummy:\n    connection_pool_size: 0\n")
    result = _check(str(path))
    assert result.returncode == 1
    assert f"{path}: error: :providers:.dummy.connection_pool_size: must be >= 1, got 0" in result.stdout


# --- process variables: one parser for the environment ------------------------------------------


def test_process_booleans_and_numbers_are_parsed_in_one_place() -> None:
    assert env_flag("VMPOOLER_DEBUG", {}) is False
    assert env_flag("VMPOOLER_DEBUG", {"VMPOOLER_DEBUG": "0"}) is False
    assert env_flag("VMPOOLER_DEBUG", {"VMPOOLER_DEBUG": "False"}) is False
    assert env_flag("VMPOOLER_DEBUG", {"VMPOOLER_DEBUG": "yes"}) is True
    with pytest.raises(ConfigError, match=r"env VMPOOLER_DEBUG: must be a boolean"):
        env_flag("VMPOOLER_DEBUG", {"VMPOOLER_DEBUG": "please"})
    assert env_value("VMPOOLER_PORT", 4567, {"VMPOOLER_PORT": " 8080 "}) == 8080
    with pytest.raises(ConfigError, match=r"env VMPOOLER_PORT: must be an integer"):
        env_value("VMPOOLER_PORT", 4567, {"VMPOOLER_PORT": "eighty"})
    with pytest.raises(ConfigError, match=r"env VMPOOLER_DEBUG: must be a boolean"):
        load(":auth:\n  provider: dummy\n", VMPOOLER_DEBUG="please")


def test_a_bad_process_variable_stops_vmpooler_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "vmpooler.yaml"
    path.write_text(":redis:\n  url: redis://127.0.0.1:1/0\n")
    result = subprocess.run(
        [sys.executable, "-m", "vmpooler", "api", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "VMPOOLER_PORT": "eighty"},
    )
    assert result.returncode == 3, result.stderr
    assert "env VMPOOLER_PORT: must be an integer >= 0, got 'eighty'" in result.stderr
