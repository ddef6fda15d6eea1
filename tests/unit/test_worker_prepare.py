"""What a provider process does once at start, before its pools run (``worker.prepare_provider``)."""

from __future__ import annotations

import textwrap

import pytest

from vmpooler.config import load_config_text
from vmpooler.errors import ProviderError, ProviderUnavailable, StoreError
from vmpooler.providers.dummy import DummyProvider
from vmpooler.worker import build_provider, prepare_provider, start_with_retry

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


class _Beats:
    def __init__(self) -> None:
        self.count = 0

    def beat(self) -> None:
        self.count += 1


def test_start_waits_out_a_backend_that_is_down_without_exiting() -> None:
    attempts: list[int] = []
    sleeps: list[float] = []
    beats = _Beats()

    def start() -> object:
        attempts.append(1)
        if len(attempts) <= 6:
            raise (ProviderUnavailable if len(attempts) % 2 else StoreError)("down")
        return "manager"

    got = start_with_retry(start, beats, sleep=sleeps.append)  # type: ignore[arg-type]
    assert got == "manager" and len(attempts) == 7
    assert sleeps == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0]  # doubling, capped at 30 s
    assert beats.count == 6  # the supervisor sees a live process meanwhile


def test_other_start_failures_are_not_retried() -> None:
    def start() -> object:
        raise ProviderError("the template is gone")

    with pytest.raises(ProviderError, match="template"):
        start_with_retry(start, None, sleep=lambda _s: None)  # type: ignore[arg-type]
