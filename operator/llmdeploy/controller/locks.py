"""Per-object mutual exclusion for kopf's sync handlers, which run in a thread pool.

kopf serializes the change handlers of one object but runs its timer beside them, so two
autoscaling decisions for the same object can overlap and both write /scale.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from weakref import WeakValueDictionary


class ObjectLocks:
    """One lock per key while someone holds or waits for it; weakly kept, so the map does not
    grow with every object the operator has ever seen."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: WeakValueDictionary[str, threading.Lock] = WeakValueDictionary()

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:  # get-or-create must be atomic or two threads get two locks
            lock = self._locks.get(key)
            if lock is None:
                lock = threading.Lock()
                self._locks[key] = lock
        with lock:  # the local reference keeps the entry alive until released
            yield

    def __len__(self) -> int:
        return len(self._locks)
