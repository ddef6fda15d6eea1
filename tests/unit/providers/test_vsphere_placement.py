"""Host selection rules (pure): eligibility, least-used targets, architectures, round-robin, max age."""

from __future__ import annotations

import pytest

from vmpooler.errors import ProviderError
from vmpooler.providers.vsphere.placement import HostSelector, eligible, least_used, rank
from vmpooler.providers.vsphere.values import HostStats, Ref

XEON = "Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz"
GOLD = "Intel(R) Xeon(R) CPU E7-8890 v3 @ 2.50GHz"


def host(
    name: str, cpu: float | None, memory: float | None = 30.0, model: str = XEON, **kw: object
) -> HostStats:
    return HostStats(
        ref=Ref("HostSystem", name),
        name=name,
        cpu_model=model,
        cpu_percent=cpu,
        memory_percent=memory,
        status=str(kw.get("status", "green")),
        maintenance=bool(kw.get("maintenance", False)),
        config_issues=bool(kw.get("config_issues", False)),
    )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("stats", "ok"),
    [
        (host("h", 50), True),
        (host("h", 90, 90), True),
        (host("h", 90.1), False),
        (host("h", 50, 95), False),
        (host("h", 0.0), False),  # no load reported: the original skips it
        (host("h", None), False),
        (host("h", 50, None), False),
        (host("h", 50, status="yellow"), False),
        (host("h", 50, maintenance=True), False),
        (host("h", 50, config_issues=True), False),
    ],
)
def test_eligibility(stats: HostStats, ok: bool) -> None:
    assert eligible(stats, 90) is ok


def test_least_used_keeps_hosts_at_or_below_the_average() -> None:
    hosts = [host("c", 60), host("a", 10), host("b", 20), host("d", 30)]
    assert [h.name for h in least_used(hosts)] == ["a", "b", "d"]  # average 30
    assert least_used([]) == []


def test_architecture_is_the_fifth_word_of_the_cpu_model() -> None:
    assert host("h", 1, model=XEON).architecture == "v4"
    assert host("h", 1, model=GOLD).architecture == "v3"
    assert host("h", 1, model="Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz").architecture == "CPU"  # sic
    assert host("h", 1, model="Short model").architecture == "Short model"


def test_rank_groups_by_architecture() -> None:
    ranking = rank(
        [
            host("x1", 10),
            host("x2", 50),
            host("g1", 30, model=GOLD),
            host("g2", 5, model=GOLD),
            host("bad", 99),
        ],
        90,
        "c",
    )
    assert ranking.hosts == ("g2", "x1")  # average of the eligible four is 23.75
    assert ranking.by_architecture == {"v4": ("x1",), "v3": ("g2",)}
    with pytest.raises(ProviderError, match="no host is green") as caught:
        rank([host("bad", 99)], 90, "cluster C0")
    assert caught.value.transient is True and "cluster C0" in str(caught.value)


def test_round_robin_survives_a_refresh_and_honours_max_age() -> None:
    clock = Clock()
    selector = HostSelector(max_age=60, limit=90, clock=clock)
    loads = [[host("a", 10), host("b", 20), host("c", 60)]]
    reads = []

    def load() -> list[HostStats]:
        reads.append(1)
        return loads[-1]

    picks = []
    for _ in range(4):
        selector.ranking("c0", load, "c0")
        picks.append(selector.next_host("c0")[0])
    assert picks == ["a", "b", "a", "b"] and len(reads) == 1
    clock.now = 61
    loads.append([host("a", 10), host("b", 20), host("c", 5)])  # now c is the least used
    selector.ranking("c0", load, "c0")
    assert len(reads) == 2
    assert [selector.next_host("c0")[0] for _ in range(3)] == ["c", "a", "c"]  # targets: c 5 %, a 10 %


def test_targets_per_architecture_and_is_target() -> None:
    selector = HostSelector(max_age=60, limit=90, clock=Clock())
    hosts = [host("x1", 10), host("x2", 80), host("g1", 20, model=GOLD), host("g2", 40, model=GOLD)]
    selector.ranking("c0", lambda: hosts, "c0")
    assert selector.is_target("c0", "x1", "v4") and selector.is_target("c0", "g1", "v3")
    assert not selector.is_target("c0", "x2", "v4") and not selector.is_target("c0", "g2", "v3")
    assert selector.next_host("c0", "v3") == ("g1", Ref("HostSystem", "g1"))
    with pytest.raises(ProviderError, match="architecture 'nope'"):
        selector.next_host("c0", "nope")
    with pytest.raises(ProviderError, match="no host ranking"):
        selector.next_host("other")
    assert not selector.is_target("other", "x1", None)
