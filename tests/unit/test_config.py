"""Unit tests of vmpooler.config and vmpooler.config_env: real files in, typed objects or key paths out."""

from __future__ import annotations

import json
import pickle
import re
import textwrap
from pathlib import Path

import attrs
import pytest

from vmpooler.config import (
    DEFAULT_RATE_LIMITS,
    AuthConfig,
    Config,
    DnsConfig,
    FrozenDict,
    GlobalConfig,
    MetricsConfig,
    PoolConfig,
    RateLimit,
    RedisConfig,
    check_config,
    load_config,
    load_config_text,
)
from vmpooler.config.env import ENV_OVERRIDES
from vmpooler.config.sources import deep_merge
from vmpooler.errors import ConfigError
from vmpooler.providers.dummy import DummySettings
from vmpooler.store.connection import parse_sentinel_url

FIXTURES = Path(__file__).parents[1] / "fixtures" / "config"
EXAMPLE = Path(__file__).parents[2] / "config" / "vmpooler.example.yaml"


def yaml(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def load(text: str, **env: str) -> Config:
    return load_config_text(yaml(text), env=env)


def problems_of(text: str, **env: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(text, **env)
    return info.value.problems


POOL = """
:pools:
  - name: 'a'
    template: 'templates/a'
    size: 1
"""


# --- complete files --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def full() -> Config:
    return load_config(FIXTURES / "full.yaml", env={})


def test_full_globals(full: Config) -> None:
    g = full.globals
    assert (g.site_name, g.logfile, g.prefix) == ("vmpooler", "/var/log/vmpooler.log", "poolvm-")
    assert (g.task_limit, g.timeout, g.vm_checktime, g.vm_lifetime, g.vm_lifetime_auth) == (10, 15, 1, 12, 24)
    assert g.allowed_tags == ("created_by", "project")
    assert g.backend_weight == {"backend1": 60, "backend2": 40}
    assert g.create_folders is True  # written as the string 'true'
    assert g.experimental_features is True
    assert g.purge_unconfigured_resources is False
    assert g.migration_limit == 5
    assert g.clone_target == "backend2"
    assert g.domain == "example.com"
    assert g.ondemand_clone_limit == 10  # default


def test_full_providers(full: Config) -> None:
    assert set(full.providers) == {"vsphere-pdx", "vsphere-bfs", "vsphere", "dummy"}
    pdx = full.providers["vsphere-pdx"]
    assert pdx.provider_class == "vsphere"
    assert pdx.options == {
        "server": "vsphere.pdx.example.com",
        "username": "vmpooler-pdx",
        "password": "swimsw1msw!m",
    }
    assert full.providers["vsphere-bfs"].options["folder_whitelist"] == ("myfolder",)
    assert full.providers["vsphere"].provider_class == "vsphere"
    assert full.providers["dummy"].options["filename"] == "/tmp/dummy-backing.yaml"


def test_full_pools(full: Config) -> None:
    names = [pool.name for pool in full.pools]
    assert names == ["debian-7-i386", "debian-7-x86_64", "debian-7-x86_64-pdx", "centos-8.2-x86_64"]
    i386 = full.pool("debian-7-i386")
    assert (i386.alias, i386.template, i386.size, i386.provider) == (
        ("debian-7-32",),
        "Templates/debian-7-i386",
        5,
        "vsphere",
    )
    assert (i386.timeout, i386.ready_ttl, i386.timeout_notification) == (15, 1440, 5)
    assert i386.provider_options == {
        "folder": "Pooled VMs/debian-7-i386",
        "datastore": "vmstorage",
        "create_linked_clone": True,
    }
    assert i386.domain == "example.com"  # legacy global domain, no dns_plugin
    assert i386.clone_target == "backend2"  # inherited
    pdx = full.pool("debian-7-x86_64-pdx")
    assert pdx.alias == ("debian-7-64",)  # string alias
    assert (pdx.provider, pdx.dns_plugin, pdx.domain, pdx.clone_target) == (
        "vsphere-pdx",
        "example",
        "example.com",
        "backend1",
    )
    assert pdx.provider_options["snapshot_mainMem_ioBlockPages"] == "2048"
    assert pdx.provider_options["network"] == "vlan-42"
    assert pdx.check_hostname_for_mismatch is False
    assert pdx.ready_ttl == 60  # global default
    centos = full.pool("centos-8.2-x86_64")  # a dot in the name is fine
    assert (centos.size, centos.domain, centos.timeout_notification) == (0, "cloud.example.com", 3)
    assert (centos.check_loop_delay_min, centos.check_loop_delay_max) == (10, 60)
    assert full.pools_for_provider("vsphere") == (i386, full.pool("debian-7-x86_64"))


def test_full_other_sections(full: Config) -> None:
    assert full.redis.embedded is False
    assert full.redis.client_url == "redis://vmpooler:p%40ss%20word@redis.example.com:6379/0"
    assert full.redis.data_ttl == 48
    assert full.auth is not None and full.auth.provider == "ldap"
    ldap = full.auth.ldap
    assert ldap is not None
    assert (ldap.host, ldap.port) == ("ldap.example.com", 389)
    assert ldap.bases == ("ou=users,dc=company,dc=com", "ou=service,dc=company,dc=com")
    assert ldap.user_objects == ("uid", "samAccountName")
    assert (ldap.encryption, ldap.verify, ldap.ca_file) == ("simple_tls", True, None)
    assert ldap.service_dn == "cn=svc,dc=company,dc=com"
    metrics = full.metrics
    assert (metrics.kind, metrics.server, metrics.port) == ("statsd", "statsd.example.com", 8125)
    assert (full.metrics.graphs_server, full.metrics.graphs_prefix) == ("graphs.example.com", "dashboard")
    assert full.tagfilter["url"].findall("foo.com/something.html") == ["foo.com"]
    assert full.dns_configs["gcp-clouddns"].options == {"project": "my-project", "zone_name": "vmpooler"}
    assert full.rate_limits == DEFAULT_RATE_LIMITS
    assert full.raw["config"]["task_limit"] == 10  # colon-free section names
    assert full.source.endswith("full.yaml")


def test_full_warnings(full: Config) -> None:
    text = "\n".join(full.warnings)
    assert ":config:.domain is deprecated" in text
    assert "purge_unconfigured_folders is deprecated" in text
    assert "several metrics sinks" in text


def test_example_loads_and_documents_every_setting() -> None:
    config = load_config(EXAMPLE, env={})
    assert config.redis.embedded and config.redis.client_url is None
    assert [(p.name, p.size) for p in config.pools] == [
        ("debian-12-x86_64", 5),
        ("centos-9-x86_64", 3),
        ("win-2022-x86_64", 2),
    ]
    assert config.candidates("debian") == ("debian-12-x86_64",)
    assert {pool.domain for pool in config.pools} == {"example.com"}
    assert config.providers["dummy"].options["filename"] == ".vmpooler/dummy-inventory.yaml"
    assert config.warnings == ()  # the service starts on its own example without a warning
    text = EXAMPLE.read_text()
    settings = [*attrs.fields_dict(GlobalConfig), *attrs.fields_dict(RedisConfig)]
    settings.remove("embedded")
    missing = [name for name in settings if f" {name}:" not in text]
    missing += [row.name for row in ENV_OVERRIDES if row.name not in text and not row.replaced_by]
    assert missing == []


def test_empty_document_is_all_defaults() -> None:
    config = load_config_text("", env={})
    assert config.pools == () and config.auth is None and config.metrics.kind is None
    assert config.globals == GlobalConfig()
    assert config.redis.embedded


def test_keys_without_colons_and_symbol_values() -> None:
    config = load("""
        config: {task_limit: 3}
        providers:
          vs: {provider_class: ':vsphere', server: vc, username: u, password: p}
        pools:
          - {name: a, template: t/a, size: 1, provider: ':vs'}
    """)
    assert config.globals.task_limit == 3
    assert config.providers["vs"].provider_class == "vsphere"
    assert config.pool("a").provider == "vs"


# --- broken files ------------------------------------------------------------------------------

BROKEN = {
    "bad size type": (
        ":pools:\n  - {name: a, template: t/a, size: 'ten'}\n",
        ":pools:[0].size: must be an integer >= 0, got 'ten'",
    ),
    "negative size": (":pools:\n  - {name: a, template: t/a, size: -1}\n", ":pools:[0].size: must be"),
    "negative task_limit": (
        ":config:\n  task_limit: -5\n",
        ":config:.task_limit: must be an integer >= 1, got -5",
    ),
    "bad boolean": (
        ":config:\n  experimental_features: 'maybe'\n",
        ":config:.experimental_features: must be a boolean",
    ),
    "bad backend weight": (
        ":config:\n  backend_weight: {b1: -1}\n",
        ":config:.backend_weight: must be a mapping",
    ),
    "pool without name": (":pools:\n  - {template: t/a, size: 1}\n", ":pools:[0].name: is required"),
    "pool without size": (":pools:\n  - {name: a, template: t/a}\n", ":pools:[0].size: is required"),
    "bad pool name": (":pools:\n  - {name: 'a b', template: t/a, size: 1}\n", ":pools:[0].name: must match"),
    "duplicate pool name": (
        ":pools:\n  - {name: a, template: t/a, size: 1}\n  - {name: a, template: t/b, size: 2}\n",
        ":pools:[1].name: duplicate pool name 'a' (also :pools:[0])",
    ),
    "unknown provider": (
        ":pools:\n  - {name: a, template: t/a, size: 1, provider: nope}\n",
        ":pools:[0].provider: no provider 'nope' in :providers:",
    ),
    "unknown dns_plugin": (
        ":pools:\n  - {name: a, template: t/a, size: 1, dns_plugin: nodns}\n",
        ":pools:[0].dns_plugin: no DNS config 'nodns' in :dns_configs:",
    ),
    "non-dict pool entry": (":pools:\n  - 'debian'\n", ":pools:[0]: must be a mapping, got 'debian'"),
    "pools not a list": (":pools:\n  name: a\n", ":pools:: must be a list of pools"),
    "bad tagfilter regex": (
        ":tagfilter:\n  url: '(.*'\n",
        ":tagfilter:.url: invalid regular expression '(.*'",
    ),
    "unknown auth provider": (":auth:\n  provider: kerberos\n", ":auth:.provider: must be 'dummy' or 'ldap'"),
    "dummy auth without debug": (
        ":auth:\n  provider: dummy\n",
        ":auth:.provider: 'dummy' accepts any password",
    ),
    "ldap without host": (
        ":auth:\n  provider: ldap\n  :ldap:\n    base: 'dc=x'\n    user_object: uid\n",
        ":auth:.ldap.host: is required",
    ),
    "statsd without server": (":statsd:\n  prefix: vmpooler\n", ":statsd:.server: is required"),
    "graphite bad port": (
        ":graphite:\n  server: g\n  port: 99999\n",
        ":graphite:.port: must be a port number",
    ),
    "bad redis port": (
        ":redis:\n  server: r\n  port: 70000\n",
        ":redis:.port: must be a port number (1-65535)",
    ),
    "redis port not a number": (
        ":redis:\n  port: 'six'\n",
        ":redis:.port: must be an integer >= 1, got 'six'",
    ),
    "bad redis url": (":redis:\n  url: 'http://r'\n", ":redis:.url: must start with redis://"),
    "dns config without class": (
        ":dns_configs:\n  :x:\n    domain: d\n",
        ":dns_configs:.x.dns_class: is required",
    ),
    "bad rate limit": (
        ":rate_limits:\n  vm_creation: {limit: 0}\n",
        ":rate_limits:.vm_creation.limit: must be",
    ),
    "provider section not a mapping": (":providers:\n  :vs: 'x'\n", ":providers:.vs: must be a mapping"),
}


@pytest.mark.parametrize("text,expected", BROKEN.values(), ids=BROKEN.keys())
def test_broken_config_names_the_key(text: str, expected: str) -> None:
    problems = problems_of(text)
    assert any(problem.startswith(expected) for problem in problems), problems


def test_invalid_yaml_names_file_and_line() -> None:
    path = FIXTURES / "invalid_yaml.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    (problem,) = info.value.problems
    assert problem.startswith(f"{path}: line 4, column 2: invalid YAML")


def test_check_config_reports_every_problem_and_warning() -> None:
    result = check_config(FIXTURES / "broken_many.yaml", env={})
    assert result.problems == (
        ":config:.task_limit: must be an integer >= 1, got -1",
        ":pools:[0].size: must be an integer >= 0, got 'ten'",
        ":pools:[2].name: duplicate pool name 'one' (also :pools:[0])",
        ":pools:[2].provider: no provider 'nowhere' in :providers:",
        ":redis:.port: must be an integer >= 1, got 'six'",
    )
    assert result.warnings == (
        ":config:.tsk_limit: unknown key, ignored (did you mean 'task_limit'?)",
        ":pools:[1].template: missing or empty: the provider cannot clone for this pool",
    )
    assert not result.ok()
    example = check_config(EXAMPLE, env={})
    assert example.problems == () and example.warnings == () and example.ok(strict=True)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml", env={})


def test_top_level_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config_text("- a\n- b\n", env={})


def test_auth_dummy_allowed_with_debug() -> None:
    config = load(":auth:\n  provider: dummy\n", VMPOOLER_DEBUG="1")
    assert config.auth is not None and config.auth.provider == "dummy"


# --- sources and env ---------------------------------------------------------------------------


def test_source_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = tmp_path / "explicit.yaml"
    explicit.write_text(":config:\n  task_limit: 1\n")
    named = tmp_path / "named.yaml"
    named.write_text(":config:\n  task_limit: 2\n")
    inline = ":config:\n  task_limit: 3\n"
    both = {"VMPOOLER_CONFIG": inline, "VMPOOLER_CONFIG_FILE": str(named)}
    assert load_config(explicit, env=both).globals.task_limit == 1
    config = load_config(env=both)
    assert (config.globals.task_limit, config.source) == (3, "env VMPOOLER_CONFIG")
    assert load_config(env={"VMPOOLER_CONFIG_FILE": str(named)}).globals.task_limit == 2
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"vmpooler\.yaml: config file not found"):
        load_config(env={})
    (tmp_path / "vmpooler.yaml").write_text(":config:\n  task_limit: 4\n")
    assert load_config(env={}).globals.task_limit == 4


def test_extra_config_deep_merge(tmp_path: Path) -> None:
    base = tmp_path / "base.yaml"
    base.write_text(
        yaml("""
        :config:
          task_limit: 5
          site_name: 'base'
          allowed_tags: ['a', 'b']
        :pools:
          - {name: p1, template: t/p1, size: 1}
    """)
    )
    first = tmp_path / "first.yaml"
    first.write_text(
        yaml("""
        :config:
          task_limit: 6
          allowed_tags: ['b', 'c']
        :pools:
          - {name: p2, template: t/p2, size: 2}
    """)
    )
    second = tmp_path / "second.yaml"
    second.write_text(":config:\n  task_limit: 7\n:redis:\n  server: 'r.example.com'\n")
    config = load_config(base, env={"EXTRA_CONFIG": f"{first}, {second}"})
    assert (config.globals.task_limit, config.globals.site_name) == (7, "base")
    assert config.globals.allowed_tags == ("a", "b", "c")
    assert [pool.name for pool in config.pools] == ["p1", "p2"]
    assert config.redis.server == "r.example.com"
    assert config.globals.extra_config == (str(first), str(second))
    # the same, named by the file itself
    base.write_text(base.read_text().replace(":config:\n", f":config:\n  extra_config: '{first}'\n"))
    assert load_config(base, env={}).globals.task_limit == 6
    with pytest.raises(ConfigError, match=r"missing\.yaml: config file not found"):
        load_config(base, env={"EXTRA_CONFIG": str(tmp_path / "missing.yaml")})


def test_inline_config_reads_no_extra_files(tmp_path: Path) -> None:
    extra = tmp_path / "extra.yaml"
    extra.write_text(":config:\n  task_limit: 9\n")
    config = load_config(env={"VMPOOLER_CONFIG": ":config:\n  task_limit: 3\n", "EXTRA_CONFIG": str(extra)})
    assert config.globals.task_limit == 3
    assert any("extra config files are not read" in warning for warning in config.warnings)


def test_deep_merge_leaves_inputs_alone() -> None:
    base = {"a": {"x": 1, "l": [1, 2]}, "b": 1}
    extra = {"a": {"y": 2, "l": [2, 3]}, "b": 2}
    assert deep_merge(base, extra) == {"a": {"x": 1, "y": 2, "l": [1, 2, 3]}, "b": 2}
    assert base == {"a": {"x": 1, "l": [1, 2]}, "b": 1}


def test_env_integer() -> None:
    assert load(":config:\n  task_limit: 3\n", TASK_LIMIT="7").globals.task_limit == 7
    assert problems_of("", TASK_LIMIT="abc") == ["TASK_LIMIT: must be an integer, got 'abc'"]
    assert problems_of("", TASK_LIMIT="-2") == [
        ":config:.task_limit: must be an integer >= 1, got -2 (set by env TASK_LIMIT)"
    ]
    assert load(":config:\n  task_limit: 3\n", TASK_LIMIT="").globals.task_limit == 3  # empty = unset


def test_env_boolean() -> None:
    text = ":config:\n  experimental_features: true\n"
    assert load(text, EXPERIMENTAL_FEATURES="false").globals.experimental_features is False
    assert load("", EXPERIMENTAL_FEATURES="Yes").globals.experimental_features is True
    assert load("", CREATE_LINKED_CLONES="OFF").globals.create_linked_clones is False
    assert problems_of("", USAGE_STATS="maybe") == [
        "USAGE_STATS: must be a boolean (true/false), got 'maybe'"
    ]


def test_env_every_problem_at_once() -> None:
    problems = problems_of(":config:\n  tsk: 1\n", TASK_LIMIT="x", REDIS_PORT="y")
    assert problems[:2] == [
        "TASK_LIMIT: must be an integer, got 'x'",
        "REDIS_PORT: must be an integer, got 'y'",
    ]
    assert len(problems) == 2  # an unknown key is a warning, not a problem


def test_env_redis() -> None:
    config = load("", REDIS_SERVER="redis.example.com", REDIS_PORT="6380", REDIS_PASSWORD="pw")
    assert not config.redis.embedded
    assert config.redis.client_url == "redis://:pw@redis.example.com:6380/0"
    config = load(":redis:\n  server: r\n", VMPOOLER_REDIS_URL="rediss://r2:6390/3")
    assert config.redis.client_url == "rediss://r2:6390/3"
    assert load(":redis:\n  server: embedded\n").redis.embedded
    assert load(":redis:\n  data_ttl: 1\n").redis.embedded


def test_sentinels_name_the_primary_through_a_sentinel_url() -> None:
    config = load(
        """
        :redis:
          sentinels: ['10.0.0.1:26379', '[::1]:26380']
          master_name: 'pool primary'
          password: 'p@ss'
          sentinel_password: 's+cret'
          db: 2
        """
    )
    assert not config.redis.embedded
    assert config.redis.client_url == (
        "redis+sentinel://:p%40ss@10.0.0.1:26379,[::1]:26380/pool%20primary/2?sentinel_password=s%2Bcret"
    )
    assert "s+cret" not in repr(config.redis)  # a secret, as the password is
    parsed = parse_sentinel_url(config.redis.client_url)
    assert parsed == {
        "sentinels": [("10.0.0.1", 26379), ("::1", 26380)],
        "master_name": "pool primary",
        "db": 2,
        "username": None,
        "password": "p@ss",
        "sentinel_password": "s+cret",
    }
    env = load("", REDIS_SENTINELS="h1:1, h2:2", REDIS_MASTER_NAME="m", REDIS_SENTINEL_PASSWORD="x")
    assert env.redis.client_url == "redis+sentinel://h1:1,h2:2/m/0?sentinel_password=x"
    url = load(":redis:\n  url: 'redis+sentinel://h:1/m/0'\n").redis.client_url
    assert url == "redis+sentinel://h:1/m/0"


@pytest.mark.parametrize(
    ("redis", "problem"),
    [
        ("sentinels: ['h:1']", ":redis:.master_name: must name the primary the sentinels monitor"),
        ("sentinels: ['h']\n  master_name: m", ":redis:.sentinels: each sentinel must be host:port, got 'h'"),
        ("sentinels: ['h:99999']\n  master_name: m", "each sentinel must be host:port, got 'h:99999'"),
        (
            "sentinels: ['h:1']\n  master_name: m\n  server: r",
            ":redis:.server: cannot be given with sentinels",
        ),
        (
            "sentinels: ['h:1']\n  master_name: m\n  url: 'redis://r'",
            ":redis:.url: cannot be given with sentinels",
        ),
        ("url: 'http://r'", ":redis:.url: must start with redis://, rediss://, unix:// or redis+sentinel://"),
    ],
)
def test_bad_sentinel_settings_fail_with_the_key(redis: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(problem)):
        load_config_text(f":redis:\n  {redis}\n", env={})


def test_env_metrics_auth_and_misc() -> None:
    config = load(
        "",
        STATSD_SERVER="statsd.example.com",
        STATSD_PORT="9125",
        SITE_NAME="lab",
        VM_CHECKTIME="0.5",
        AUTH_PROVIDER="ldap",
        LDAP_HOST="ldap",
        LDAP_BASE="dc=x",
        LDAP_USER_OBJECT="uid",
        VMPOOLER_TRACING_ENABLED="true",
    )
    metrics = config.metrics
    assert (metrics.kind, metrics.server, metrics.port) == ("statsd", "statsd.example.com", 9125)
    assert (config.globals.site_name, config.globals.vm_checktime) == ("lab", 0.5)
    assert config.auth is not None and config.auth.ldap is not None
    assert config.auth.ldap.bases == ("dc=x",)
    assert config.tracing.enabled is True


def test_env_deprecated_purge_folders() -> None:
    config = load("", PURGE_UNCONFIGURED_FOLDERS="true")
    assert config.globals.purge_unconfigured_resources is True
    assert "env PURGE_UNCONFIGURED_FOLDERS is deprecated: use PURGE_UNCONFIGURED_RESOURCES" in config.warnings


def test_domain_deprecation() -> None:
    text = POOL + ":dns_configs:\n  dns: {dns_class: dynamic-dns, domain: new.example}\n"
    config = load(text, DOMAIN="old.example")
    assert config.pool("a").domain == "old.example"
    assert any(w.startswith("env DOMAIN is deprecated") for w in config.warnings)
    with_plugin = text.replace("size: 1", "size: 1\n    dns_plugin: dns")
    assert load(with_plugin, DOMAIN="old.example").pool("a").domain == "new.example"
    by_provider = load(
        POOL.replace("size: 1", "size: 1\n    provider: vs")
        + ":providers:\n  vs: {provider_class: vsphere, domain: prov.example,"
        + " server: v, username: u, password: p}\n"
    )
    assert by_provider.pool("a").domain == "prov.example"
    assert any(":providers:.vs.domain is deprecated" in w for w in by_provider.warnings)
    assert by_provider.providers["vs"].options["domain"] == "prov.example"


# --- aliases and lookups -----------------------------------------------------------------------

ALIASES = """
:config:
  clone_target: 'c-global'
  backend_weight: {c1: 70, c-global: 0}
:pools:
  - {name: a, template: t/a, size: 1, alias: ['x', 'shared'], clone_target: c1}
  - {name: b, template: t/b, size: 1, alias: 'shared, a'}
  - {name: c, template: t/c, size: 1, alias: [shared, c], clone_target: c9}
"""


def test_alias_resolution() -> None:
    config = load(ALIASES)
    assert config.alias_pools("shared") == ("a", "b", "c")
    assert config.alias_pools("a") == ("b",)
    assert config.alias_pools("c") == ()  # a pool never aliases itself
    assert config.candidates("a") == ("a", "b")
    assert config.candidates("x") == ("a",)
    assert config.candidates("shared") == ("a", "b", "c")
    assert config.candidates("nope") == ()
    assert config.pool_names == frozenset({"a", "b", "c", "x", "shared"})
    assert list(config.pools_by_name) == ["a", "b", "c"]
    with pytest.raises(KeyError):
        config.pool("x")


def test_backend_weight() -> None:
    config = load(ALIASES)
    assert config.backend_weight("a") == 70
    assert config.backend_weight("b") == 0  # global clone_target, weight 0 is a weight
    assert config.backend_weight("c") is None  # clone target without a weight
    assert load(POOL).backend_weight("a") is None  # no weights at all


# --- defaults, fixes and immutability ----------------------------------------------------------


def test_pool_defaults_and_implicit_dummy() -> None:
    config = load(
        ":config:\n  ready_ttl: 30\n  timeout: 20\n  check_ready_vm_hostname_for_mismatch: false\n" + POOL
    )
    pool = config.pool("a")
    assert (pool.provider, pool.ready_ttl, pool.timeout, pool.alias) == ("dummy", 30, 20, ())
    assert pool.check_hostname_for_mismatch is False
    assert config.providers["dummy"].provider_class == "dummy"
    assert config.pools_for_provider("dummy") == (pool,)


def test_legacy_provider_sections() -> None:
    config = load(
        POOL.replace("size: 1", "size: 1\n    provider: lab")
        + ":lab:\n  provider_class: dummy\n  seed: 3\n:vsphere:\n  {server: vc, username: u, password: p}\n"
    )
    assert config.providers["lab"].options == {"seed": 3}
    assert config.providers["lab"].settings == DummySettings(seed=3)
    assert config.providers["vsphere"].options == {"server": "vc", "username": "u", "password": "p"}
    shadowed = load(
        ":providers:\n  :vsphere: {server: new, username: u, password: p}\n:vsphere:\n  server: old\n"
    )
    assert shadowed.providers["vsphere"].options == {"server": "new", "username": "u", "password": "p"}
    with pytest.raises(ConfigError, match=r":gce:\.provider_class: provider_class 'gce': unknown provider"):
        load(POOL.replace("size: 1", "size: 1\n    provider: gce") + ":gce:\n  project: p\n")
    assert any(":vsphere: is ignored" in w for w in shadowed.warnings)


def test_check_loop_delay_fixes() -> None:
    config = load(
        yaml("""
        :config:
          check_loop_delay_min: 10
          check_loop_delay_max: 3
          check_loop_delay_decay: 1.0
        :pools:
          - {name: a, template: t/a, size: 1}
          - {name: b, template: t/b, size: 1, check_loop_delay_min: 1, check_loop_delay_decay: 0.5}
    """)
    )
    g = config.globals
    assert (g.check_loop_delay_min, g.check_loop_delay_max, g.check_loop_delay_decay) == (10, 10, 2.0)
    a, b = config.pools
    assert (a.check_loop_delay_min, a.check_loop_delay_max, a.check_loop_delay_decay) == (10, 10, 2.0)
    assert (b.check_loop_delay_min, b.check_loop_delay_max, b.check_loop_delay_decay) == (1, 10, 2.0)
    assert ":config:.check_loop_delay_max: 3 is below check_loop_delay_min 10; using 10" in config.warnings
    assert any(w.startswith(":pools:[1].check_loop_delay_decay") for w in config.warnings)


def test_rate_limits_override() -> None:
    config = load(":rate_limits:\n  vm_creation: {limit: 5}\n  global_per_ip: {limit: 10, period: 1}\n")
    assert config.rate_limits["vm_creation"] == RateLimit(limit=5, period=60)
    assert config.rate_limits["global_per_ip"] == RateLimit(limit=10, period=1)
    assert config.rate_limits["vm_deletion"] == DEFAULT_RATE_LIMITS["vm_deletion"]


def test_health_thresholds_merge_defaults() -> None:
    thresholds = load(":config:\n  health_thresholds: {ready_queue_max: 50}\n").globals.health_thresholds
    assert thresholds["ready_queue_max"] == 50 and thresholds["pending_queue_max"] == 100


def test_config_is_immutable_serialisable_and_picklable(full: Config) -> None:
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        full.globals.task_limit = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        full.providers["x"] = full.providers["dummy"]  # type: ignore[index]
    with pytest.raises(TypeError):
        full.raw["config"].update(task_limit=1)
    assert isinstance(full.pool("debian-7-i386").provider_options, FrozenDict)
    assert json.loads(json.dumps(full.raw))["pools"][0]["name"] == "debian-7-i386"
    copy = pickle.loads(pickle.dumps(full))
    assert copy == full and copy.candidates("debian-7-64") == full.candidates("debian-7-64")


def test_direct_construction_is_checked() -> None:
    with pytest.raises(ValueError):
        GlobalConfig(task_limit=0)
    with pytest.raises(ValueError):
        PoolConfig(name="a", template="t", size=-1)
    pool = PoolConfig(name="a", template="t", size=1)
    with pytest.raises(ValueError, match="configured twice"):
        Config(pools=(pool, pool))
    assert GlobalConfig(create_folders="yes").create_folders is True  # type: ignore[arg-type]
    assert RedisConfig(server="r").client_url == "redis://r:6379/0"
    assert GlobalConfig.from_dict({"task_limit": "8"}).task_limit == 8
    with pytest.raises(ConfigError) as info:
        GlobalConfig.from_dict({"task_limit": "x", "bogus": 1})
    assert info.value.problems == [":config:.task_limit: must be an integer >= 1, got 'x'"]
    with pytest.raises(ConfigError, match="VMPOOLER_DEBUG"):
        AuthConfig.from_dict({"provider": "dummy"})
    assert AuthConfig.from_dict({"provider": "dummy"}, env={"VMPOOLER_DEBUG": "1"}).ldap is None
    with pytest.raises(ConfigError, match="VMPOOLER_DEBUG"):
        AuthConfig.from_dict({"provider": "dummy"}, env={"VMPOOLER_DEBUG": "false"})
    assert MetricsConfig.from_dict({"prometheus": None}).prometheus_endpoint == "/prometheus"
    assert DnsConfig.from_dict("d", {"dns_class": "dynamic-dns"}).domain is None
