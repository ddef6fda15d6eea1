"""What a provider process does once at start, before its pools run (``worker.prepare_provider``)."""

from __future__ import annotations

import textwrap

from vmpooler.config import load_config_text
from vmpooler.providers.dummy import DummyProvider
from vmpooler.worker import build_provider, prepare_provider

CONFIG = """
:config:
  purge_unconfigured_resources: {purge}
:providers:
  :dummy:
    resources_allowlist: ['keep']
    initial_state:
      a: ['vm-a1']
      old: ['vm-o1', 'vm-o2']
      keep: ['vm-k1']
:pools:
  - {{name: a, template: t/a, size: 1}}
"""


def _started(purge: str) -> DummyProvider:
    config = load_config_text(textwrap.dedent(CONFIG.format(purge=purge)), env={})
    provider = build_provider(config, "dummy")
    assert isinstance(provider, DummyProvider)
    provider.start()
    prepare_provider(config, "dummy", provider)
    return provider


def test_purge_removes_what_no_pool_owns_and_spares_the_allowlist() -> None:
    provider = _started("true")
    try:
        assert provider.inventory() == {"a": ["vm-a1"], "keep": ["vm-k1"]}
    finally:
        provider.stop()


def test_no_purge_unless_configured() -> None:
    provider = _started("false")
    try:
        assert provider.inventory() == {"a": ["vm-a1"], "keep": ["vm-k1"], "old": ["vm-o1", "vm-o2"]}
    finally:
        provider.stop()
