"""Whether kopf's peering lets this replica act, for the work queue's workers.

kopf pauses only its own handlers and watches when a peer outranks this replica; the workers
run outside kopf, so they check the same rule themselves on every dequeue.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

log = logging.getLogger("llmdeploy.peering")
PEERS_TTL_S = 1.0  # one read of the peering object serves every dequeue for this long


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


class Peering:
    """`acting()`: this replica may act now. `on_change(acting)` runs when that changes: a
    paused replica's watches stop, so what they fed goes stale."""

    def __init__(
        self,
        read_peers: Callable[[], list[Mapping[str, Any]]] | None,
        identity: str,
        priority: int,
        on_change: Callable[[bool], None],
    ) -> None:
        self._read = read_peers  # None: standalone, always acting
        self._identity = identity
        self._priority = priority
        self._on_change = on_change
        self._guard = threading.Lock()
        self._checked = -PEERS_TTL_S
        self._acting = False

    def acting(self) -> bool:
        if self._read is None:
            return True
        with self._guard:
            if time.monotonic() - self._checked < PEERS_TTL_S:
                return self._acting
            try:
                now = datetime.now(UTC)
                acting = all(
                    peering_allows(p, self._identity, self._priority, now) for p in self._read()
                )
            except Exception as exc:  # unreadable for now: kopf's own view has not changed either
                log.warning("peering unreadable: %s", exc)
                acting = self._acting
            self._checked = time.monotonic()
            if acting != self._acting:
                log.info("work %s", "resumed" if acting else "paused: a peer outranks this replica")
                self._acting = acting
                self._on_change(acting)
            return acting
