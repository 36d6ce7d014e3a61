"""The periodic pass: every LLMDeployment is reconciled again once per interval, so a child
deleted or edited by hand is repaired, starved capacity is noticed and autoscaling decides.

Not a kopf timer: kopf puts a finalizer on every object that has a timer, so deleting an
LLMDeployment would wait for a running operator (and a finalizer costs a patch per new object).
Children go by owner references; nothing needs the operator at deletion. One operator-wide pass
over the objects kopf's watch has delivered needs no finalizer, and kopf removes the one it put
on objects before.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

log = logging.getLogger("llmdeploy.resync")
Seen = TypeVar("Seen")


class Tracked:
    """The latest body of each LLMDeployment, by uid, as the watch delivered it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._bodies: dict[str, dict[str, Any]] = {}

    def seen(self, body: Mapping[str, Any]) -> None:
        uid = str(body["metadata"].get("uid") or "")
        with self._guard:
            self._bodies[uid] = dict(body)

    def gone(self, uid: str) -> None:
        with self._guard:
            self._bodies.pop(uid, None)

    def get(self, uid: str) -> dict[str, Any] | None:
        with self._guard:
            return self._bodies.get(uid)

    def __contains__(self, uid: object) -> bool:
        with self._guard:
            return uid in self._bodies

    def snapshot(self) -> list[dict[str, Any]]:
        with self._guard:
            return list(self._bodies.values())

    def clear(self) -> None:
        with self._guard:
            self._bodies.clear()


def peering_allows(peers: Mapping[str, Any], identity: str, priority: int, now: datetime) -> bool:
    """kopf's own rule: a replica acts unless a live peer has a higher or the same priority
    (equal priorities pause everyone). `peers` is the peering object's status."""
    for peer_id, info in peers.items():
        if peer_id == identity or not isinstance(info, Mapping):
            continue
        lifetime = timedelta(seconds=int(info.get("lifetime") or 60))
        lastseen = info.get("lastseen")
        if lastseen is not None:
            seen_at = datetime.fromisoformat(str(lastseen))
            if seen_at.tzinfo is None:  # kopf reads a zoneless time as UTC
                seen_at = seen_at.replace(tzinfo=UTC)
            if seen_at + lifetime <= now:
                continue  # dead
        if int(info.get("priority") or 0) >= priority:
            return False
    return True


class PeriodicPass(Generic[Seen]):
    """A thread that reconciles every tracked object each `interval` seconds, `workers` at a
    time, while `active()` says this replica is the one that acts. `look()` runs once per pass:
    what it sees (one list of all children, say) goes to every reconcile of that pass, with
    the uids that still exist (None: unknown); a tracked object that no longer exists is
    `forget`-ten (a watch restarted after a gap sends no DELETED for what went in the gap)."""

    def __init__(
        self,
        tracked: Tracked,
        look: Callable[[], tuple[Seen, set[str] | None]],
        reconcile: Callable[[dict[str, Any], Seen], None],
        forget: Callable[[str], None],
        interval: float,
        workers: int,
        active: Callable[[], bool],
    ) -> None:
        self._tracked = tracked
        self._look = look
        self._reconcile = reconcile
        self._forget = forget
        self._interval = interval
        self._workers = workers
        self._active = active
        self._stop = threading.Event()
        self._paused = False
        self._thread = threading.Thread(target=self._run, name="periodic-pass", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        with ThreadPoolExecutor(self._workers, thread_name_prefix="pass") as pool:
            while not self._stop.wait(self._interval):
                try:
                    self.run_once(pool)
                except Exception:  # the API server away, say: the next pass tries again
                    log.exception("periodic pass failed")

    def run_once(self, pool: ThreadPoolExecutor) -> None:
        try:
            active = self._active()
        except Exception as exc:  # the peering object unreadable: act next time, not now
            log.warning("periodic pass skipped: %s", exc)
            return
        if active == self._paused:
            self._paused = not active
            log.info(
                "periodic pass %s",
                "paused: a peer outranks this replica" if self._paused else "resumed",
            )
            if self._paused:
                # kopf stops its watches while paused and lists everything again when it
                # resumes: what was tracked goes stale meanwhile.
                self._tracked.clear()
        if not active:
            return
        bodies = self._tracked.snapshot()  # before the look: an object made since is kept
        seen, alive = self._look()
        if alive is not None:
            for body in bodies:
                uid = str(body["metadata"].get("uid") or "")
                if uid not in alive:
                    self._forget(uid)
        for future in [pool.submit(self._one, body, seen) for body in bodies]:
            future.result()

    def _one(self, body: dict[str, Any], seen: Seen) -> None:
        if self._stop.is_set():
            return
        try:
            self._reconcile(body, seen)
        except Exception:  # one object's failure must not end the pass for the others
            log.exception("periodic reconcile of %s failed", _ref(body))


def _ref(body: Mapping[str, Any]) -> str:
    metadata = body.get("metadata") or {}
    return f"{metadata.get('namespace')}/{metadata.get('name')}"
