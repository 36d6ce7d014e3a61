"""What the operator knows of the objects on the API server, as plain data: no client here, so
the pure decision (controller/decide.py) can take it as input."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from llmdeploy.api.types import API_VERSION, KIND
from llmdeploy.render import SELECTOR_LABEL
from llmdeploy.render.kinds import WORKLOAD_KINDS

APPLIED_HASH = "llmdeploy.io/applied-hash"
OLD_FINALIZER = "llmdeploy.io/finalizer"  # put on objects by releases that used a kopf timer


@dataclass(frozen=True, slots=True)
class Owner:
    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass(frozen=True, slots=True)
class WorkloadStatus:
    exists: bool
    replicas: int = 0
    ready_replicas: int = 0
    updated_replicas: int = 0
    up_to_date: bool = False  # the controller observed the latest generation
    wanted: int | None = None  # spec.replicas


@dataclass(frozen=True, slots=True)
class RouteParent:
    """A gateway controller's verdict on an HTTPRoute for one parent (status.parents[]): its
    Accepted and ResolvedRefs conditions as (type, status, reason, message), those written for
    the route's current generation only."""

    gateway: str  # namespace/name of the parent Gateway
    controller: str
    conditions: tuple[tuple[str, str, str, str], ...]


ROUTE_CONDITIONS = ("Accepted", "ResolvedRefs")


@dataclass(frozen=True, slots=True)
class LiveChild:
    """A child as the watch last showed it, as far as a reconcile needs to know."""

    uid: str
    owner_uid: str  # of its controlling LLMDeployment; "" when it has none
    applied_hash: str | None
    revision: str  # what changes when someone edits it (see revision_of)
    workload: WorkloadStatus | None
    resource_version: str = ""  # orders two sightings of one object (see Index.child_seen)
    route_parents: tuple[RouteParent, ...] = ()  # an HTTPRoute's gateways' verdicts


@dataclass(frozen=True, slots=True)
class PendingPod:
    name: str
    since: datetime
    message: str


ChildKey = tuple[str, str]  # (kind, name)

# A pod restarted this often has crashed, not hiccupped: vLLM exits when it cannot allocate
# the KV cache, and the kubelet restarts it with a growing back-off.
CRASH_RESTARTS = 3
# Waiting reasons no retry of the kubelet's mends: the image or the pod's config is wrong.
CANNOT_START = frozenset(
    {"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "CreateContainerConfigError"}
)


def crash_of(pod: Mapping[str, Any]) -> str | None:
    """How a pod's engine (or its download step) keeps failing or cannot start, or None. Only
    reasons and exit codes: a container's termination message is the tenant's text and stays
    out of status."""
    name = (pod.get("metadata") or {}).get("name", "")
    status = pod.get("status") or {}
    for c in [
        *(status.get("initContainerStatuses") or []),
        *(status.get("containerStatuses") or []),
    ]:
        waiting = (c.get("state") or {}).get("waiting") or {}
        last = (c.get("lastState") or {}).get("terminated") or {}
        restarts = int(c.get("restartCount") or 0)
        if waiting.get("reason") in CANNOT_START:
            return f"pod {name}: container {c.get('name')} cannot start ({waiting['reason']})"
        if waiting.get("reason") == "CrashLoopBackOff" or restarts >= CRASH_RESTARTS:
            how = f"{last.get('reason', 'exited')}, exit code {last.get('exitCode', '?')}"
            return f"pod {name}: container {c.get('name')} restarted {restarts} times ({how})"
    return None


def workload_status_of(obj: Mapping[str, Any]) -> WorkloadStatus:
    """A Deployment's or LeaderWorkerSet's progress, from the object itself."""
    status = obj.get("status") or {}
    generation = int((obj.get("metadata") or {}).get("generation") or 0)
    if "observedGeneration" in status:
        up_to_date = int(status["observedGeneration"] or 0) >= generation
    else:
        # A LeaderWorkerSet (v0.8) publishes no observedGeneration: its controller has acted
        # once it has written conditions, and updatedReplicas follows the latest revision.
        up_to_date = bool(status.get("conditions"))
    return WorkloadStatus(
        exists=True,
        replicas=int(status.get("replicas") or 0),
        ready_replicas=int(status.get("readyReplicas") or 0),
        updated_replicas=int(status.get("updatedReplicas") or 0),
        up_to_date=up_to_date,
        wanted=(obj.get("spec") or {}).get("replicas"),
    )


def revision_of(metadata: Mapping[str, Any]) -> str:
    """Its generation where the kind has one (a status update does not bump it), else its
    resourceVersion."""
    generation = metadata.get("generation")
    return f"g{generation}" if generation else f"r{metadata.get('resourceVersion')}"


def live_child(kind: str, obj: Mapping[str, Any]) -> LiveChild:
    metadata = obj.get("metadata") or {}
    owner = next(
        (
            str(ref.get("uid") or "")
            for ref in metadata.get("ownerReferences") or []
            if ref.get("kind") == KIND and ref.get("controller")
        ),
        "",
    )
    return LiveChild(
        str(metadata.get("uid") or ""),
        owner,
        (metadata.get("annotations") or {}).get(APPLIED_HASH),
        revision_of(metadata),
        workload_status_of(obj) if kind in WORKLOAD_KINDS else None,
        str(metadata.get("resourceVersion") or ""),
        route_parents_of(obj) if kind == "HTTPRoute" else (),
    )


def route_parents_of(obj: Mapping[str, Any]) -> tuple[RouteParent, ...]:
    """The Gateways' verdicts in an HTTPRoute's status. A condition written for an earlier
    generation of the route says nothing about this one and is left out."""
    metadata = obj.get("metadata") or {}
    generation = int(metadata.get("generation") or 0)
    parents = []
    for parent in (obj.get("status") or {}).get("parents") or []:
        ref = parent.get("parentRef") or {}
        if ref.get("kind", "Gateway") != "Gateway" or not ref.get("name"):
            continue
        conditions = tuple(
            (
                str(c.get("type")),
                str(c.get("status")),
                str(c.get("reason") or ""),
                str(c.get("message") or ""),
            )
            for c in parent.get("conditions") or []
            if c.get("type") in ROUTE_CONDITIONS
            and int(c.get("observedGeneration") or generation) >= generation
        )
        gateway = f"{ref.get('namespace') or metadata.get('namespace')}/{ref['name']}"
        parents.append(RouteParent(gateway, str(parent.get("controllerName") or ""), conditions))
    return tuple(parents)


def owner_name(obj: Mapping[str, Any]) -> str | None:
    """The LLMDeployment a child belongs to, by the label every rendered child carries."""
    return ((obj.get("metadata") or {}).get("labels") or {}).get(SELECTOR_LABEL)


def prepared(obj: Mapping[str, Any], owner: Owner) -> tuple[dict[str, Any], str]:
    """The child as it is applied: in the owner's namespace, owned by it, and annotated with
    the digest of everything else, which tells an unchanged child from one to apply."""
    desired = copy.deepcopy(dict(obj))
    metadata = desired["metadata"]
    metadata["namespace"] = owner.namespace
    metadata["ownerReferences"] = [owner.reference()]
    digest = hashlib.sha256(json.dumps(desired, sort_keys=True).encode()).hexdigest()[:16]
    metadata.setdefault("annotations", {})[APPLIED_HASH] = digest
    return desired, digest
