"""The only layer that talks to the API server: inventory, server-side apply, prune, status reads.

API exceptions become ClusterError here, so the controller deals in domain errors.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes import client as k8s
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import (
    DynamicApiError,
    NotFoundError,
    ResourceNotFoundError,
)

from llmdeploy.api.types import API_VERSION, KIND
from llmdeploy.render import SELECTOR_LABEL, SPEC_HASH_ANNOTATION
from llmdeploy.sizing.inventory import GpuNode, Inventory

FIELD_MANAGER = "llmdeploy"
APPLIED_HASH = "llmdeploy.io/applied-hash"
PRODUCT_LABELS = ("nvidia.com/gpu.product", "amd.com/gpu.product-name")
GPU_RESOURCES = ("nvidia.com/gpu", "amd.com/gpu")
MISSING_KIND_TTL_S = 60.0
LIST_PAGE = 250
# A list answered as PartialObjectMetadataList: names, uids and labels, no spec or status.
METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
INVENTORY_TTL_S = 15.0  # nodes change slowly; one list serves every reconcile meanwhile
# Every kind the renderer may emit, so a child that is no longer desired can be pruned.
CHILD_KINDS = (
    ("apps/v1", "Deployment"),
    ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet"),
    ("v1", "Service"),
    ("policy/v1", "PodDisruptionBudget"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("v1", "ConfigMap"),
)


class ClusterError(RuntimeError):
    """An API call failed; `retryable` tells a transient failure from a permanent one."""

    def __init__(self, message: str, *, retryable: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status  # the HTTP status, when the API server answered


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


@dataclass(frozen=True, slots=True)
class Applied:
    changed: bool  # False when the live object was already current
    workload: WorkloadStatus | None  # the progress of a Deployment or LeaderWorkerSet


WORKLOAD_KINDS = frozenset({"Deployment", "LeaderWorkerSet"})


@dataclass(frozen=True, slots=True)
class LiveChild:
    """What a child looks like on the API server, as far as a reconcile needs to know."""

    applied_hash: str | None
    revision: str
    workload: WorkloadStatus | None


# Every child of every LLMDeployment, by (namespace, kind, name).
Children = dict[tuple[str, str, str], LiveChild]


@dataclass(frozen=True, slots=True)
class PendingPod:
    name: str
    since: datetime
    message: str


def _error(exc: Exception, action: str) -> ClusterError:
    status = getattr(exc, "status", None)
    body = getattr(exc, "body", None) or getattr(exc, "summary", lambda: "")()
    try:
        message = json.loads(body).get("message", body) if isinstance(body, str | bytes) else body
    except ValueError:
        message = body
    retryable = status is None or status in (409, 429) or status >= 500
    return ClusterError(f"{action}: {status} {message}", retryable=retryable, status=status)


def workload_status_of(obj: dict[str, Any]) -> WorkloadStatus:
    """A Deployment's or LeaderWorkerSet's progress, from the object itself."""
    status = obj.get("status") or {}
    generation = int((obj.get("metadata") or {}).get("generation") or 0)
    return WorkloadStatus(
        exists=True,
        replicas=int(status.get("replicas") or 0),
        ready_replicas=int(status.get("readyReplicas") or 0),
        updated_replicas=int(status.get("updatedReplicas") or 0),
        up_to_date=int(status.get("observedGeneration") or 0) >= generation,
    )


def _workload_of(kind: str, live: Any) -> WorkloadStatus | None:
    return workload_status_of(live.to_dict()) if kind in WORKLOAD_KINDS else None


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _revision(metadata: Any) -> str:
    """What changes when someone edits the object: its generation where the kind has one
    (status updates do not bump it), else its resourceVersion."""
    generation = metadata.generation
    return f"g{generation}" if generation else f"r{metadata.resourceVersion}"


def _live_child(kind: str, obj: dict[str, Any]) -> LiveChild:
    metadata = obj["metadata"]
    generation = metadata.get("generation")
    return LiveChild(
        (metadata.get("annotations") or {}).get(APPLIED_HASH),
        f"g{generation}" if generation else f"r{metadata.get('resourceVersion')}",
        workload_status_of(obj) if kind in WORKLOAD_KINDS else None,
    )


def object_hash(obj: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


class Cluster:
    def __init__(self, api_client: k8s.ApiClient) -> None:
        self.dynamic = DynamicClient(api_client)  # type: ignore[no-untyped-call]
        # The discovery cache is not thread-safe, and a miss re-reads all of discovery: look
        # each kind up under a lock and remember a missing kind (an absent CRD) for a while.
        self._lock = threading.Lock()
        self._kinds: dict[tuple[str, str], tuple[Any, float]] = {}
        self._inventory: tuple[Inventory, float] | None = None
        # What this process last applied, by (owner uid, kind, name): (hash, revision).
        self._applied: dict[tuple[str, str, str], tuple[str, str]] = {}

    def _resource(self, api_version: str, kind: str) -> Any:
        key = (api_version, kind)
        with self._lock:
            cached = self._kinds.get(key)
            if cached and (
                cached[0] is not None or time.monotonic() - cached[1] < MISSING_KIND_TTL_S
            ):
                return cached[0]
            try:
                resource = self.dynamic.resources.get(api_version=api_version, kind=kind)
            except ResourceNotFoundError:
                resource = None
            self._kinds[key] = (resource, time.monotonic())
            return resource

    def _kind_gone(self, api_version: str, kind: str) -> None:
        with self._lock:
            self._kinds[(api_version, kind)] = (None, time.monotonic())

    def gpus_in_use(self, owner: Owner) -> tuple[dict[str, int], int]:
        """(GPUs requested by pods bound to each node, how many of them are the owner's pods).
        Read fresh: it caps a scale-up, and a stale count would promise GPUs that are gone."""
        usage: dict[str, int] = {}
        owned = 0
        for pod in self._list(
            "v1",
            "Pod",
            field_selector="status.phase!=Succeeded,status.phase!=Failed,spec.nodeName!=",
        ):
            node = str(pod.spec.nodeName)
            labels = dict(pod.metadata.labels or {})
            if (
                pod.metadata.namespace == owner.namespace
                and labels.get(SELECTOR_LABEL) == owner.name
            ):
                owned += 1
            for container in pod.spec.containers or []:
                requests = dict((container.resources or {}).get("requests") or {})
                for name in GPU_RESOURCES:
                    if name in requests:
                        usage[node] = usage.get(node, 0) + int(requests[name])
        return usage, owned

    def ensure_cluster_peering(self, name: str) -> None:
        """kopf needs its ClusterKopfPeering object to elect the active replica."""
        resource = self._resource("kopf.dev/v1", "ClusterKopfPeering")
        if resource is None:
            raise ClusterError(
                "the ClusterKopfPeering CRD is not installed (manifests/base/peering.yaml); "
                "install it or set LLMDEPLOY_STANDALONE=true",
                retryable=False,
            )
        body = {
            "apiVersion": "kopf.dev/v1",
            "kind": "ClusterKopfPeering",
            "metadata": {"name": name},
        }
        try:
            resource.create(body=body)
        except DynamicApiError as exc:
            if getattr(exc, "status", None) != 409:  # already there
                raise _error(exc, f"create ClusterKopfPeering {name}") from None

    def peers(self, name: str, namespace: str | None) -> dict[str, Any]:
        """The replicas kopf's peering object lists (its status); empty if there is none."""
        kind = "KopfPeering" if namespace else "ClusterKopfPeering"
        resource = self._resource("kopf.dev/v1", kind)
        if resource is None:
            return {}
        try:
            obj = (
                resource.get(name=name, namespace=namespace)
                if namespace
                else resource.get(name=name)
            )
        except NotFoundError:
            return {}
        except DynamicApiError as exc:
            raise _error(exc, f"get {kind} {name}") from None
        return dict(obj.to_dict().get("status") or {})

    def post_event(
        self, involved: Mapping[str, Any], reason: str, message: str, *, warning: bool
    ) -> None:
        """A core/v1 Event about `involved`, as kopf posts them for its handlers."""
        metadata = involved["metadata"]
        now = datetime.now(UTC).isoformat()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": "llmdeploy-", "namespace": metadata["namespace"]},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion", API_VERSION),
                "kind": involved.get("kind", KIND),
                "name": metadata["name"],
                "namespace": metadata["namespace"],
                "uid": metadata.get("uid"),
            },
            "type": "Warning" if warning else "Normal",
            "reason": reason,
            "message": message[:1000],
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": FIELD_MANAGER,
            "firstTimestamp": now,
            "lastTimestamp": now,
        }
        try:
            self._resource("v1", "Event").create(body=event, namespace=metadata["namespace"])
        except DynamicApiError as exc:
            raise _error(exc, f"post event {reason}") from None

    def scale(self, owner: Owner, replicas: int, resource_version: str) -> bool:
        """Write replicas through the LLMDeployment's scale subresource (as HPA would), only
        if the object is still at `resource_version`; False when it has changed since."""
        resource = self._resource(API_VERSION, KIND)
        body = {"metadata": {"resourceVersion": resource_version}, "spec": {"replicas": replicas}}
        try:
            resource.subresources["scale"].patch(
                body=body,
                name=owner.name,
                namespace=owner.namespace,
                content_type="application/merge-patch+json",
            )
        except DynamicApiError as exc:
            if getattr(exc, "status", None) == 409:
                return False
            raise _error(exc, f"scale {KIND} {owner.name}") from None
        return True

    def _list(self, api_version: str, kind: str, **query: Any) -> list[Any]:
        resource = self._resource(api_version, kind)
        if resource is None:
            return []
        try:
            return list(resource.get(**query).items)
        except NotFoundError:
            self._kind_gone(api_version, kind)
            return []
        except DynamicApiError as exc:
            raise _error(exc, f"list {kind}") from None

    def inventory(self) -> Inventory:
        """GPU nodes, listed at most every INVENTORY_TTL_S seconds."""
        with self._lock:
            cached = self._inventory
        if cached is not None and time.monotonic() - cached[1] < INVENTORY_TTL_S:
            return cached[0]
        inventory = self._read_inventory()
        with self._lock:
            self._inventory = (inventory, time.monotonic())
        return inventory

    def _read_inventory(self) -> Inventory:
        gpu_nodes = []
        for node in self._list("v1", "Node"):
            labels = dict(node.metadata.labels or {})
            allocatable = dict(node.status.allocatable or {})
            gpus = next((int(allocatable[r]) for r in GPU_RESOURCES if r in allocatable), 0)
            if not gpus and not any(k in labels for k in PRODUCT_LABELS):
                continue
            major = str(labels.get("nvidia.com/cuda.driver.major", ""))
            minor = str(labels.get("nvidia.com/cuda.driver.minor", ""))
            driver = (int(major), int(minor)) if major.isdigit() and minor.isdigit() else None
            text_labels = {str(k): str(v) for k, v in labels.items()}
            gpu_nodes.append(GpuNode(str(node.metadata.name), text_labels, gpus, driver))
        return Inventory(tuple(sorted(gpu_nodes, key=lambda n: n.name)))

    def children(self, namespaces: list[str]) -> Children | None:
        """Every child of every LLMDeployment (in `namespaces`, or all), one list per kind, so
        that a periodic pass checks them without a GET each. None if a list fails: the pass
        then reads child by child."""
        found: Children = {}
        scopes: list[str | None] = [*namespaces] or [None]
        for api_version, kind in CHILD_KINDS:
            resource = self._resource(api_version, kind)
            if resource is None:
                continue
            for namespace in scopes:
                pages = self._pages(resource, namespace, SELECTOR_LABEL)
                try:
                    for items in pages:
                        for item in items:
                            key = (item["metadata"]["namespace"], kind, item["metadata"]["name"])
                            found[key] = _live_child(kind, item)
                except NotFoundError:
                    self._kind_gone(api_version, kind)
                    break
                except DynamicApiError:
                    return None
        return found

    def llmdeployment_uids(self, namespaces: list[str]) -> set[str] | None:
        """The uids of the LLMDeployments that exist now (metadata only); None if unknown."""
        resource = self._resource(API_VERSION, KIND)
        uids: set[str] = set()
        scopes: list[str | None] = [*namespaces] or [None]
        try:
            for namespace in scopes:
                for items in self._pages(resource, namespace, None, METADATA_ONLY):
                    uids.update(str(item["metadata"]["uid"]) for item in items)
        except DynamicApiError:
            return None
        return uids

    def _pages(
        self,
        resource: Any,
        namespace: str | None,
        label_selector: str | None,
        accept: str | None = None,
    ) -> Iterator[list[dict[str, Any]]]:
        """One kind, LIST_PAGE at a time: a page is parsed and dropped before the next, so a
        pass over thousands of objects holds one page, not all of them."""
        token = None
        while True:
            answer = resource.get(
                namespace=namespace,
                label_selector=label_selector,
                limit=LIST_PAGE,
                _continue=token,
                serialize=False,
                header_params={"Accept": accept} if accept else {},
            )
            page = json.loads(answer.data)
            yield page.get("items") or []
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return

    def as_applied(
        self, owner: Owner, children: frozenset[tuple[str, str]], seen: Children
    ) -> bool:
        """Whether every one of `children` (kind, name) is in `seen` as this process last
        applied it: our hash, and no edit by anyone since."""
        with self._lock:
            for kind, name in children:
                listed = seen.get((owner.namespace, kind, name))
                ours = self._applied.get((owner.uid, kind, name))
                if listed is None or ours != (listed.applied_hash, listed.revision):
                    return False
        return True

    def apply(self, obj: dict[str, Any], owner: Owner, seen: Children | None = None) -> Applied:
        """Server-side apply with our field manager. A workload's progress comes with the
        answer, read from the object just fetched or applied, so it needs no GET of its own.
        `seen`: the children as a recent list found them; a child found there as we left it
        needs no request at all."""
        desired = json.loads(json.dumps(obj))
        metadata = desired["metadata"]
        metadata["namespace"] = owner.namespace
        metadata["ownerReferences"] = [owner.reference()]
        digest = object_hash(desired)
        metadata.setdefault("annotations", {})[APPLIED_HASH] = digest
        resource = self._resource(desired["apiVersion"], desired["kind"])
        if resource is None:
            raise ClusterError(
                f"{desired['kind']} ({desired['apiVersion']}) is not served by this cluster; "
                "install its CRD",
                retryable=True,
            )
        name = metadata["name"]
        kind = desired["kind"]
        key = (owner.uid, kind, name)
        with self._lock:
            ours = self._applied.get(key)
        listed = (seen or {}).get((owner.namespace, kind, name))
        if listed and listed.applied_hash == digest and ours == (digest, listed.revision):
            return Applied(False, listed.workload)
        before = None
        try:
            live = resource.get(name=name, namespace=owner.namespace)
            before = live.metadata.resourceVersion
            # Same hash and untouched since our apply: nothing to do. A hand edit of the spec
            # (generation) or of an object without one (resourceVersion) is taken back.
            if (live.metadata.annotations or {}).get(APPLIED_HASH) == digest and ours == (
                digest,
                _revision(live.metadata),
            ):
                return Applied(False, _workload_of(kind, live))
        except NotFoundError:
            pass
        except DynamicApiError as exc:
            raise _error(exc, f"get {desired['kind']} {name}") from None
        try:
            applied = resource.server_side_apply(
                body=desired,
                name=name,
                namespace=owner.namespace,
                field_manager=FIELD_MANAGER,
                force_conflicts=True,
            )
        except DynamicApiError as exc:
            raise _error(exc, f"apply {desired['kind']} {name}") from None
        with self._lock:
            self._applied[key] = (digest, _revision(applied.metadata))
        # A no-op apply (e.g. the first one after a restart) leaves the resourceVersion alone.
        return Applied(applied.metadata.resourceVersion != before, _workload_of(kind, applied))

    def prune(self, owner: Owner, keep: set[tuple[str, str]]) -> list[str]:
        """Delete children of `owner` whose (kind, name) is not in `keep`."""
        deleted = []
        for api_version, kind in CHILD_KINDS:
            resource = self._resource(api_version, kind)
            if resource is None:
                continue
            try:
                children = resource.get(
                    namespace=owner.namespace, label_selector=f"{SELECTOR_LABEL}={owner.name}"
                ).items
            except NotFoundError:
                # Discovery (cached, also on disk) still names a kind whose CRD is gone.
                self._kind_gone(api_version, kind)
                continue
            except DynamicApiError as exc:
                raise _error(exc, f"list {kind}") from None
            for child in children:
                owned = any(ref.uid == owner.uid for ref in child.metadata.ownerReferences or [])
                if owned and (kind, child.metadata.name) not in keep:
                    try:
                        resource.delete(name=child.metadata.name, namespace=owner.namespace)
                    except NotFoundError:
                        continue
                    except DynamicApiError as exc:
                        raise _error(exc, f"delete {kind} {child.metadata.name}") from None
                    deleted.append(f"{kind}/{child.metadata.name}")
                    with self._lock:
                        self._applied.pop((owner.uid, kind, str(child.metadata.name)), None)
        return deleted

    def forget(self, owner_uid: str) -> None:
        """Drop what this process remembers of an owner's children (the owner is gone)."""
        with self._lock:
            for key in [k for k in self._applied if k[0] == owner_uid]:
                del self._applied[key]

    def workload_status(self, owner: Owner, kind: str) -> WorkloadStatus:
        api_version = dict((k, v) for v, k in CHILD_KINDS)[kind]
        resource = self._resource(api_version, kind)
        if resource is None:
            return WorkloadStatus(exists=False)
        try:
            live = resource.get(name=owner.name, namespace=owner.namespace)
        except NotFoundError:
            return WorkloadStatus(exists=False)
        except DynamicApiError as exc:
            raise _error(exc, f"get {kind} {owner.name}") from None
        return workload_status_of(live.to_dict())

    def get_llmdeployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        resource = self._resource(API_VERSION, KIND)
        try:
            return dict(resource.get(name=name, namespace=namespace).to_dict())
        except NotFoundError:
            return None
        except DynamicApiError as exc:
            raise _error(exc, f"get {KIND} {name}") from None

    def patch_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str
    ) -> None:
        """Patch status only if the object is still at `resource_version` (else 409)."""
        resource = self._resource(API_VERSION, KIND)
        try:
            resource.status.patch(
                body={"metadata": {"resourceVersion": resource_version}, "status": status},
                name=name,
                namespace=namespace,
                content_type="application/merge-patch+json",
            )
        except DynamicApiError as exc:
            raise _error(exc, f"patch status of {KIND} {name}") from None

    def unschedulable_pods(self, owner: Owner, spec_hash: str | None) -> list[PendingPod]:
        """Pending pods of the current pod template (`spec_hash`) that the scheduler could not
        place, with since when. A pod of the previous plan, still waiting until the rollout
        removes it, says nothing about the GPUs the new plan needs."""
        pods = self._list(
            "v1",
            "Pod",
            namespace=owner.namespace,
            label_selector=f"{SELECTOR_LABEL}={owner.name}",
            field_selector="status.phase=Pending",
        )
        pending = []
        for pod in pods:
            if (pod.metadata.annotations or {}).get(SPEC_HASH_ANNOTATION) != spec_hash:
                continue
            for condition in pod.status.conditions or []:
                if condition.type == "PodScheduled" and condition.reason == "Unschedulable":
                    since = condition.lastTransitionTime or pod.metadata.creationTimestamp
                    pending.append(
                        PendingPod(
                            str(pod.metadata.name),
                            _parse_time(str(since)),
                            str(condition.message or ""),
                        )
                    )
        return pending
