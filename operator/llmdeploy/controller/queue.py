"""A per-key coalescing work queue, the shape of client-go's workqueue.

Every source (watch events, the periodic resync, deadlines, retries) only adds a key; workers
`get` keys and report each one `done`. A key is handed to one worker at a time: added while it
is being processed, it is marked dirty and queued again when that worker is done, so the
latest state is always reconciled once more and never twice at once.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

Key = TypeVar("Key", bound=Hashable)


class WorkQueue(Generic[Key]):
    def __init__(self, base_delay_s: float = 0.5, max_delay_s: float = 300.0) -> None:
        self._base = base_delay_s
        self._max = max_delay_s
        self._cond = threading.Condition()
        self._ready: deque[Key] = deque()
        self._queued: dict[Key, float] = {}  # ready or dirty keys, with when they were added
        self._processing: set[Key] = set()
        self._delayed: list[tuple[float, int, Key]] = []  # (due, tiebreak, key), a heap
        self._sequence = 0
        self._failures: dict[Key, int] = {}
        self._closed = False

    def add(self, key: Key) -> None:
        with self._cond:
            if self._closed or key in self._queued:
                return
            self._queued[key] = time.monotonic()
            if key not in self._processing:
                self._ready.append(key)
                self._cond.notify()

    def resync(self, key: Key) -> None:
        """Add `key` for a periodic pass, unless it is backing off after a failure: its retry
        is already due, and a pass must not turn a persistent error into a reconcile per
        interval. Events still add it at once (a fix to the spec is seen without delay)."""
        with self._cond:
            if key in self._failures:
                return
        self.add(key)

    def add_after(self, key: Key, delay_s: float) -> None:
        if delay_s <= 0:
            self.add(key)
            return
        with self._cond:
            self._sequence += 1
            heapq.heappush(self._delayed, (time.monotonic() + delay_s, self._sequence, key))
            self._cond.notify()

    def get(self, timeout_s: float | None = None) -> tuple[Key, float] | None:
        """The next key and how long it waited, or None on timeout or when closed."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while True:
                self._promote_due()
                if self._closed:
                    return None
                if self._ready:
                    key = self._ready.popleft()
                    added = self._queued.pop(key)
                    self._processing.add(key)
                    return key, time.monotonic() - added
                now = time.monotonic()
                waits = [d - now for d in (deadline,) if d is not None]
                if self._delayed:
                    waits.append(self._delayed[0][0] - now)
                if deadline is not None and now >= deadline:
                    return None
                self._cond.wait(max(0.0, min(waits)) if waits else None)

    def done(self, key: Key, *, failed: bool = False) -> float | None:
        """Release `key`. A failed key is retried after an exponential backoff, which it
        returns; a succeeded one starts afresh."""
        with self._cond:
            self._processing.discard(key)
            if key in self._queued:  # added while processing
                self._ready.append(key)
                self._cond.notify()
            if not failed:
                self._failures.pop(key, None)
                return None
            failures = self._failures.get(key, 0)
            self._failures[key] = failures + 1
        delay = min(self._base * 2.0**failures, self._max)
        self.add_after(key, delay)
        return delay

    def forget(self, key: Key) -> None:
        """The object is gone: no retries for it. A queued key is left to find nothing."""
        with self._cond:
            self._failures.pop(key, None)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def depth(self) -> int:
        """Keys waiting for a worker (not those in backoff)."""
        with self._cond:
            return len(self._ready)

    def busy(self) -> bool:
        """Whether any key is waiting or being processed."""
        with self._cond:
            return bool(self._ready or self._processing)

    def _promote_due(self) -> None:
        now = time.monotonic()
        while self._delayed and self._delayed[0][0] <= now:
            _, _, key = heapq.heappop(self._delayed)
            if key not in self._queued:
                self._queued[key] = now
                if key not in self._processing:
                    self._ready.append(key)
