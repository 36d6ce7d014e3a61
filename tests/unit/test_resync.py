"""The periodic pass: which replica acts (kopf's peering rule) and what one pass covers."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from llmdeploy.controller.resync import PeriodicPass, Tracked, peering_allows

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


def body(uid: str) -> dict[str, Any]:
    return {"metadata": {"name": uid, "namespace": "ns", "uid": uid}}


def test_one_pass_reconciles_every_tracked_object_once_and_survives_a_failure() -> None:
    tracked = Tracked()
    for uid in ("a", "b", "c"):
        tracked.seen(body(uid))
    tracked.seen({"metadata": {**body("b")["metadata"], "resourceVersion": "2"}})  # newer body
    tracked.gone("c")
    seen: list[dict[str, Any]] = []
    guard = threading.Lock()

    def reconcile(obj: dict[str, Any]) -> None:
        with guard:
            seen.append(obj)
        if obj["metadata"]["uid"] == "a":
            raise RuntimeError("a bug in one object's reconcile")

    looks: list[str] = []
    listed: list[str] = []

    def look() -> tuple[str, set[str] | None]:
        looks.append("listed")
        return f"listing {len(looks)}", None

    def reconcile_with(obj: dict[str, Any], seen_children: str) -> None:
        listed.append(seen_children)
        reconcile(obj)

    periodic = PeriodicPass(tracked, look, reconcile_with, tracked.gone, 10, 2, lambda: True)
    with ThreadPoolExecutor(2) as pool:
        periodic.run_once(pool)
    assert sorted(o["metadata"]["uid"] for o in seen) == ["a", "b"]
    assert listed == ["listing 1", "listing 1"]  # one listing per pass, shared by all
    assert (
        next(o for o in seen if o["metadata"]["uid"] == "b")["metadata"]["resourceVersion"] == "2"
    )


def test_a_paused_replica_or_an_unreadable_peering_reconciles_nothing() -> None:
    tracked = Tracked()
    tracked.seen(body("a"))
    seen: list[dict[str, Any]] = []

    def unreadable() -> bool:
        raise RuntimeError("peering object: 503")

    for active in (unreadable, lambda: False):
        with ThreadPoolExecutor(1) as pool:
            PeriodicPass(
                tracked, nothing, lambda obj, _: seen.append(obj), tracked.gone, 10, 1, active
            ).run_once(pool)
    assert seen == []
    # Paused, kopf stops watching: what was tracked would go stale, so it is dropped (kopf
    # lists everything again when it resumes).
    assert tracked.snapshot() == []


def nothing() -> tuple[None, set[str] | None]:
    return None, None


def test_a_tracked_object_that_no_longer_exists_is_forgotten() -> None:
    tracked = Tracked()
    for uid in ("a", "b"):
        tracked.seen(body(uid))
    forgotten: list[str] = []
    seen: list[str] = []

    def forget(uid: str) -> None:
        forgotten.append(uid)
        tracked.gone(uid)

    periodic = PeriodicPass(
        tracked,
        lambda: (None, {"a"}),  # "b" went while the watch was away: no DELETED came
        lambda obj, _: (
            seen.append(obj["metadata"]["uid"]) if obj["metadata"]["uid"] in tracked else None
        ),
        forget,
        10,
        1,
        lambda: True,
    )
    with ThreadPoolExecutor(1) as pool:
        periodic.run_once(pool)
    assert (forgotten, seen) == (["b"], ["a"])


def test_a_failing_pass_does_not_end_the_thread() -> None:
    tracked = Tracked()
    tracked.seen(body("a"))
    looks = 0
    reconciled = threading.Event()

    def look() -> tuple[None, None]:
        nonlocal looks
        looks += 1
        if looks == 1:
            raise ConnectionError("the API server is restarting")
        return None, None

    periodic = PeriodicPass(
        tracked, look, lambda obj, _: reconciled.set(), tracked.gone, 0.01, 1, lambda: True
    )
    periodic.start()
    try:
        assert reconciled.wait(timeout=10)
    finally:
        periodic.stop()
    assert looks >= 2
