"""Which replica acts: kopf's peering rule, checked by the workers on every dequeue."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from llmdeploy.controller.peering import Peering, peering_allows
from llmdeploy.controller.run import peering_priority
from llmdeploy.controller.settings import PRIORITY_BOUND, OperatorSettings

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def peer(priority: int, seen_ago_s: float = 1, lifetime: int = 60) -> dict[str, Any]:
    lastseen = (NOW - timedelta(seconds=seen_ago_s)).isoformat()
    return {"priority": priority, "lifetime": lifetime, "lastseen": lastseen}


def test_alone_or_outranking_every_live_peer_acts() -> None:
    assert peering_allows({}, "me", 5, NOW)
    assert peering_allows({"me": peer(5)}, "me", 5, NOW)
    assert peering_allows({"me": peer(5), "other": peer(4)}, "me", 5, NOW)


def test_a_live_peer_with_a_higher_or_equal_priority_pauses_this_one() -> None:
    assert not peering_allows({"me": peer(5), "other": peer(6)}, "me", 5, NOW)
    assert not peering_allows({"me": peer(5), "other": peer(5)}, "me", 5, NOW)


def test_a_dead_peer_counts_for_nothing() -> None:
    dead = peer(9, seen_ago_s=61, lifetime=60)
    assert peering_allows({"me": peer(5), "other": dead}, "me", 5, NOW)
    assert not peering_allows({"other": peer(9, seen_ago_s=59, lifetime=60)}, "me", 5, NOW)


def test_a_change_is_reported_once_and_an_unreadable_peering_changes_nothing() -> None:
    alive = {"priority": 9, "lifetime": 3600, "lastseen": datetime.now(UTC).isoformat()}
    answers: list[Any] = [[{"other": alive}], OSError("refused")]
    changes: list[bool] = []

    def read() -> list[Any]:
        answer = answers.pop(0) if answers else []
        if isinstance(answer, Exception):
            raise answer
        return list(answer)

    peering = Peering(read, "me", 5, changes.append)
    checks = []
    for _ in range(3):
        peering._checked = -1e9  # past the TTL: read again
        checks.append(peering.acting())
    assert checks == [False, False, True]  # paused; unreadable keeps paused; the peer left
    assert changes == [True]  # starts paused, so only the resume is a change


def test_standalone_always_acts() -> None:
    assert Peering(None, "me", 0, lambda _: None).acting()


def test_replicas_never_share_a_priority_whatever_the_setting() -> None:
    # kopf pauses every replica when two share a priority; a rank in the shared ConfigMap
    # must not do that: the start time orders replicas of one rank, the first ranking higher.
    for rank in (0, 5, -PRIORITY_BOUND, PRIORITY_BOUND):
        settings = OperatorSettings(priority=rank)
        first = peering_priority(settings, 1_800_000_000.0)
        second = peering_priority(settings, 1_800_000_000.5)
        assert first > second
        assert -(2**63) < second < first < 2**63  # kopf stores it as a JSON integer
    # A higher rank outranks an earlier start.
    early_low = peering_priority(OperatorSettings(priority=1), 1_000_000_000.0)
    late_high = peering_priority(OperatorSettings(priority=2), 4_000_000_000.0)
    assert late_high > early_low
