"""What the watches have shown, and the one per-object record of this process's memory.

The index holds the latest body of each LLMDeployment and, by owner, its children as their
watch events showed them: observe reads it instead of the API server. A record holds what only
this process knows (what it applied, its last render, the autoscaler's state since the last
status write). Both are dropped atomically with the object, and all of them when a peer
outranks this replica: after that, state comes from the objects and their status.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from llmdeploy.cluster.objects import ChildKey, LiveChild
from llmdeploy.controller.routing import endpoint_picker_of
from llmdeploy.controller.state import Remembered, Rendered

Key = tuple[str, str]  # (namespace, name) of an LLMDeployment
NameKey = tuple[str, str, str]  # (namespace, kind, name) of any object of a child kind


@dataclass(slots=True)
class Record:
    """Touched only by the worker that holds the object's key (the queue's guarantee)."""

    uid: str
    applied: dict[ChildKey, tuple[str, str]] = field(default_factory=dict)  # (hash, revision)
    rendered: Rendered | None = None
    autoscaler: Remembered | None = None
    # The inputs of the last reconcile that wrote nothing and observed nothing beyond the
    # index, and until when (time.monotonic) it holds: its next deadline, if any. While they
    # are unchanged and the deadline is ahead, decide would give the same no-op again.
    settled: tuple[tuple[Any, ...], float] | None = None


@dataclass(slots=True)
class _Entry:
    body: dict[str, Any] | None = None
    body_sequence: int = 0
    children: dict[ChildKey, tuple[LiveChild, int]] = field(default_factory=dict)
    record: Record | None = None


class Index:
    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._entries: dict[Key, _Entry] = {}
        self._sequence = 0  # orders updates, so a relist does not drop what came after it

    def object_seen(self, body: Mapping[str, Any]) -> Key:
        key = _key(body)
        with self._guard:
            entry = self._entries.setdefault(key, _Entry())
            uid = body["metadata"].get("uid")
            if entry.record is not None and entry.record.uid != uid:
                entry.record = None  # deleted and made again under the same name
            entry.body = dict(body)
            self._sequence += 1
            entry.body_sequence = self._sequence
        return key

    def object_gone(self, key: Key) -> None:
        with self._guard:
            entry = self._entries.get(key)
            if entry is not None:
                entry.body, entry.record = None, None
                if not entry.children:
                    del self._entries[key]

    def child_seen(self, owner: Key, child: ChildKey, live: LiveChild) -> None:
        with self._guard:
            children = self._entries.setdefault(owner, _Entry()).children
            known = children.get(child)
            if known is not None and _older(live, known[0]):
                return  # an apply's answer after the watch brought a later state of it
            self._sequence += 1
            children[child] = (live, self._sequence)

    def child_gone(self, owner: Key, child: ChildKey) -> None:
        with self._guard:
            entry = self._entries.get(owner)
            if entry is not None:
                entry.children.pop(child, None)
                if entry.body is None and not entry.children:
                    del self._entries[owner]

    def begin(self, key: Key) -> tuple[dict[str, Any], dict[ChildKey, LiveChild], Record] | None:
        """The object, its children and its record, for the worker that holds `key`; None if
        the object is gone. Taken together, so a delete cannot leave a record behind."""
        with self._guard:
            entry = self._entries.get(key)
            if entry is None or entry.body is None:
                return None
            uid = str(entry.body["metadata"].get("uid") or "")
            if entry.record is None:
                entry.record = Record(uid)
            children = {name: live for name, (live, _) in entry.children.items()}
            return entry.body, children, entry.record

    def picker_users(self, namespace: str, service: str) -> list[Key]:
        """The LLMDeployments of `namespace` whose spec.routing names `service` as their
        endpoint picker."""
        with self._guard:
            return [
                key
                for key, entry in self._entries.items()
                if key[0] == namespace
                and entry.body is not None
                and endpoint_picker_of(entry.body) == service
            ]

    def keys(self) -> list[Key]:
        with self._guard:
            return [k for k, e in self._entries.items() if e.body is not None]

    def mark(self) -> int:
        with self._guard:
            return self._sequence

    def relisted(
        self,
        objects: set[Key],
        children: Mapping[Key, Mapping[ChildKey, LiveChild]],
        since: int,
    ) -> list[Key]:
        """Bring the index in line with lists taken after `mark()` returned `since`: what the
        lists lack and no watch event has shown since is dropped (a watch restarted after a
        gap sends no DELETED for what went in the gap); what they have and the index lacks, or
        holds in an earlier state, is taken. Returns the objects that are gone."""
        gone = []
        with self._guard:
            for key, entry in list(self._entries.items()):
                listed = children.get(key, {})
                for name, (_, sequence) in list(entry.children.items()):
                    if name not in listed and sequence <= since:
                        del entry.children[name]
                for name, live in listed.items():
                    known = entry.children.get(name)
                    if known is None or _older(known[0], live):  # missing, or stale
                        self._sequence += 1
                        entry.children[name] = (live, self._sequence)
                if entry.body is not None and key not in objects and entry.body_sequence <= since:
                    entry.body, entry.record = None, None
                    gone.append(key)
                if entry.body is None and not entry.children:
                    del self._entries[key]
        return gone

    def clear(self) -> None:
        """Everything: this replica was outranked, and its watches stop until it resumes."""
        with self._guard:
            self._entries.clear()

    def __len__(self) -> int:
        with self._guard:
            return sum(1 for e in self._entries.values() if e.body is not None)


def _key(body: Mapping[str, Any]) -> Key:
    metadata = body["metadata"]
    return (str(metadata.get("namespace") or "default"), str(metadata["name"]))


def _older(seen: LiveChild, known: LiveChild) -> bool:
    """Whether `seen` is an earlier state of the same object than `known`. resourceVersions
    are opaque, but every API server stores etcd revisions in them: compared only when both
    are numbers, and only within one object (the same uid)."""
    a, b = seen.resource_version, known.resource_version
    return seen.uid == known.uid and a.isdigit() and b.isdigit() and int(a) < int(b)


class Names:
    """Who holds each name of every child kind in the watched namespaces, ours or not: the
    controlling LLMDeployment's uid, or "" for an object no LLMDeployment controls. A child
    about to be made for the first time is looked up here instead of asking the API server,
    so a same-named object someone else made is refused, never adopted (docs/security.md).

    kopf already receives every object of these kinds (it filters labels in the client), so
    keeping their names costs memory for the names only. The map answers only once a relist
    has filled it since the last clear: before that, `holder` says it does not know.
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        # None: seen deleted, kept until a relist taken later than the deletion has passed,
        # so that a list answered before the deletion cannot bring the name back.
        self._holders: dict[NameKey, tuple[str | None, int]] = {}
        self._sequence = 0
        self._epoch = 0  # a clear begins a new one: a relist begun before it is void
        self._synced = False

    def seen(self, name: NameKey, controller: str) -> None:
        with self._guard:
            self._sequence += 1
            self._holders[name] = (controller, self._sequence)

    def gone(self, name: NameKey) -> None:
        with self._guard:
            self._sequence += 1
            self._holders[name] = (None, self._sequence)

    def holder(self, name: NameKey) -> tuple[bool, str | None]:
        """(known, holder): whether the map can answer, and who holds the name (None: no one)."""
        with self._guard:
            if not self._synced:
                return False, None
            return True, self._holders.get(name, (None, 0))[0]

    def mark(self) -> tuple[int, int]:
        with self._guard:
            return self._epoch, self._sequence

    def relisted(self, listed: Mapping[NameKey, str], since: tuple[int, int]) -> None:
        """Take lists that began after `mark()` returned `since`; what an event showed after
        that mark stays as the event showed it. Lists begun before a clear are dropped."""
        epoch, since_sequence = since
        with self._guard:
            if epoch != self._epoch:
                return
            for name, (_, sequence) in list(self._holders.items()):
                if sequence <= since_sequence:
                    del self._holders[name]
            for name, controller in listed.items():
                if name not in self._holders:
                    self._sequence += 1
                    self._holders[name] = (controller, self._sequence)
            self._synced = True

    def clear(self) -> None:
        with self._guard:
            self._holders.clear()
            self._epoch += 1
            self._synced = False
