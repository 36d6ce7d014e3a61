"""kopf's part: watch events in, health out. Every handler only feeds the reconciler's index
and queue (controller/reconciler.py); kopf keeps watching, peering and the probe endpoint.

No change handlers, timers or daemons: they would make kopf put a finalizer on every object,
and deleting one would wait for a running operator.
"""

from __future__ import annotations

from typing import Any

import kopf

from llmdeploy.api.types import GROUP, VERSION
from llmdeploy.controller.reconciler import Reconciler
from llmdeploy.render.kinds import CHILD_KINDS

PLURAL = "llmdeployments"


def register(registry: kopf.OperatorRegistry, reconciler: Reconciler) -> None:
    # async: they only touch memory, so they run on kopf's loop instead of its thread pool.
    async def on_object(body: kopf.Body, type: str | None, **_: Any) -> None:
        reconciler.object_event(type, body)

    kopf.on.event(GROUP, VERSION, PLURAL, registry=registry, id="object")(on_object)
    for child in CHILD_KINDS:
        kopf.on.event(
            child.group,
            child.version,
            child.plural,
            registry=registry,
            id=f"child-{child.kind}",
        )(_child_handler(reconciler, child.kind))

    @kopf.on.probe(registry=registry, id="queue")
    def queue_health(**_: Any) -> dict[str, Any]:
        why = reconciler.stalled()
        if why is not None:
            raise kopf.PermanentError(f"work queue stalled: {why}")
        return {"depth": reconciler.queue.depth(), "tracked": len(reconciler.index)}


def _child_handler(reconciler: Reconciler, kind: str) -> Any:
    async def on_child(body: kopf.Body, type: str | None, **_: Any) -> None:
        reconciler.child_event(kind, type, body)

    return on_child
