"""The only layer that talks to the API server: inventory, server-side apply, deletes, status,
scale and event writes, and the lists that rebuild the watch-fed index.

Every request has a connect and a read timeout (`Timeouts`), so a dead peer fails a reconcile
instead of holding it. API exceptions become ClusterError here, so the controller deals in
domain errors.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import urllib3
from kubernetes import client as k8s
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import (
    DynamicApiError,
    NotFoundError,
    ResourceNotFoundError,
)

from llmdeploy.api.types import API_VERSION, KIND
from llmdeploy.cluster.objects import (
    OLD_FINALIZER,
    ChildKey,
    LiveChild,
    Owner,
    PendingPod,
    crash_of,
    live_child,
    owner_name,
)
from llmdeploy.render import GENERATION_LABEL, SELECTOR_LABEL, SPEC_HASH_ANNOTATION
from llmdeploy.render.kinds import CHILD_KIND_BY_NAME, CHILD_KINDS, WORKLOAD_KINDS
from llmdeploy.sizing.inventory import GPU_RESOURCES, Inventory, inventory_from_nodes

FIELD_MANAGER = "llmdeploy"
MISSING_KIND_TTL_S = 60.0
LIST_PAGE = 250
# A list answered as PartialObjectMetadataList: names, uids and labels, no spec or status.
METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
INVENTORY_TTL_S = 15.0  # nodes change slowly; one list serves every reconcile meanwhile


class ClusterError(RuntimeError):
    """An API call failed. `status` is the HTTP status when the API server answered; None
    when it did not (timeout, connection refused or reset)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect_s: float = 5.0
    read_s: float = 30.0


def _error(exc: Exception, action: str) -> ClusterError:
    status = getattr(exc, "status", None)
    body = getattr(exc, "body", None) or getattr(exc, "summary", lambda: "")()
    try:
        message = json.loads(body).get("message", body) if isinstance(body, str | bytes) else body
    except ValueError:
        message = body
    return ClusterError(f"{action}: {status} {message}"[:600], status=status)


def not_ours(kind: str, name: str) -> ClusterError:
    return ClusterError(
        f"{kind} {name} already exists and is not this LLMDeployment's: llmdeploy does not "
        "take over objects it did not create; delete or rename it",
        status=409,
    )


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def with_timeouts(api_client: k8s.ApiClient, timeouts: Timeouts) -> k8s.ApiClient:
    """Give every request of `api_client` that sets none a (connect, read) timeout: the client
    waits for ever by default, and one request on a dead TCP peer would hold a worker."""
    rest = api_client.rest_client
    send: Callable[..., Any] = rest.request

    def request(method: str, url: str, *args: Any, _request_timeout: Any = None, **kw: Any) -> Any:
        try:
            return send(
                method,
                url,
                *args,
                _request_timeout=_request_timeout or (timeouts.connect_s, timeouts.read_s),
                **kw,
            )
        except (urllib3.exceptions.HTTPError, OSError) as exc:  # no answer: a ClusterError too
            raise ClusterError(f"{method} {urlsplit(url).path}: {type(exc).__name__}") from None

    rest.request = request  # type: ignore[method-assign]
    return api_client


class Cluster:
    def __init__(self, api_client: k8s.ApiClient) -> None:
        self.dynamic = DynamicClient(api_client)  # type: ignore[no-untyped-call]
        # The discovery cache is not thread-safe, and a miss re-reads all of discovery: look
        # each kind up under a lock and remember a missing kind (an absent CRD) for a while.
        self._lock = threading.Lock()
        self._kinds: dict[tuple[str, str], tuple[Any, float]] = {}
        self._inventory: tuple[Inventory, float] | None = None

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
        except Exception as exc:  # discovery itself failed (timeout, refused): not cached
            raise ClusterError(f"discovery of {kind}: {exc}"[:600]) from None
        with self._lock:
            self._kinds[key] = (resource, time.monotonic())
        return resource

    def _kind_gone(self, api_version: str, kind: str) -> None:
        with self._lock:
            self._kinds[(api_version, kind)] = (None, time.monotonic())

    def gpus_in_use(
        self, owner: Owner, namespaces: Sequence[str], generation: str = ""
    ) -> tuple[dict[str, int], int]:
        """(GPUs requested by pods bound to each node, how many of them are the owner's pods of
        `generation`: its replicas already placed; a pilot's candidate pods hold GPUs too, but
        they are not the serving generation's replicas). Read fresh: it caps a scale-up, and a
        stale count would promise GPUs that are gone.
        An operator confined to `namespaces` may not list other namespaces' pods: it counts its
        own, and GPUs taken by others show up as pods the scheduler cannot place."""
        usage: dict[str, int] = {}
        owned = 0
        bound = "status.phase!=Succeeded,status.phase!=Failed,spec.nodeName!="
        scopes: Sequence[str | None] = list(namespaces) or [None]
        pods = [
            pod
            for scope in scopes
            for pod in self._list("v1", "Pod", namespace=scope, field_selector=bound)
        ]
        for pod in pods:
            node = str(pod.spec.nodeName)
            labels = dict(pod.metadata.labels or {})
            if (
                pod.metadata.namespace == owner.namespace
                and labels.get(SELECTOR_LABEL) == owner.name
                and labels.get(GENERATION_LABEL, "") == generation
            ):
                owned += 1
            for container in pod.spec.containers or []:
                requests = dict((container.resources or {}).get("requests") or {})
                for name in GPU_RESOURCES:
                    if name in requests:
                        usage[node] = usage.get(node, 0) + int(requests[name])
        return usage, owned

    def ensure_peering(self, name: str, namespaces: Sequence[str]) -> None:
        """kopf elects the active replica through a peering object it does not create: a
        ClusterKopfPeering for a cluster-wide operator, a KopfPeering in each watched namespace
        for one confined to `namespaces`."""
        kind = "KopfPeering" if namespaces else "ClusterKopfPeering"
        resource = self._resource("kopf.dev/v1", kind)
        if resource is None:
            raise ClusterError(
                f"the {kind} CRD is not installed: create it (kubectl create -k "
                "manifests/kopf-peering-crds, or the chart's kopfPeeringCRDs.install) or set "
                "LLMDEPLOY_STANDALONE=true"
            )
        scopes: Sequence[str | None] = list(namespaces) or [None]
        for scope in scopes:
            metadata = {"name": name} | ({"namespace": scope} if scope else {})
            body = {"apiVersion": "kopf.dev/v1", "kind": kind, "metadata": metadata}
            try:
                resource.create(body=body, namespace=scope)
            except DynamicApiError as exc:
                status = getattr(exc, "status", None)
                if status == 404 and scope:
                    raise ClusterError(
                        f"namespace {scope} (LLMDEPLOY_NAMESPACES) does not exist", status=404
                    ) from None
                if status != 409:  # already there
                    raise _error(exc, f"create {kind} {name}") from None

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

    def scale(self, owner: Owner, replicas: int, resource_version: str) -> str | None:
        """Write replicas through the LLMDeployment's scale subresource (as HPA would), only
        if the object is still at `resource_version`: its new resourceVersion, or None when it
        has changed since."""
        resource = self._resource(API_VERSION, KIND)
        body = {"metadata": {"resourceVersion": resource_version}, "spec": {"replicas": replicas}}
        try:
            answer = resource.subresources["scale"].patch(
                body=body,
                name=owner.name,
                namespace=owner.namespace,
                content_type="application/merge-patch+json",
            )
        except DynamicApiError as exc:
            if getattr(exc, "status", None) == 409:
                return None
            raise _error(exc, f"scale {KIND} {owner.name}") from None
        return str(answer.metadata.resourceVersion)

    def scale_workload(self, kind: str, name: str, namespace: str, replicas: int) -> None:
        """Write a workload's replicas through its scale subresource, leaving its template as
        it is: a serving generation whose spec is no longer the object's (a pilot)."""
        child = CHILD_KIND_BY_NAME[kind]
        resource = self._resource(child.api_version, child.kind)
        if resource is None:
            raise ClusterError(f"{kind} ({child.api_version}) is not served by this cluster")
        try:
            resource.subresources["scale"].patch(
                body={"spec": {"replicas": replicas}},
                name=name,
                namespace=namespace,
                content_type="application/merge-patch+json",
                field_manager=FIELD_MANAGER,
            )
        except DynamicApiError as exc:
            raise _error(exc, f"scale {kind} {name}") from None

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
        # The same reading `llmdeploy plan/render --inventory` does of a node list.
        return inventory_from_nodes(node.to_dict() for node in self._list("v1", "Node"))

    def children(self, namespaces: list[str]) -> dict[tuple[str, str], dict[ChildKey, LiveChild]]:
        """Every child of every LLMDeployment (in `namespaces`, or all), by owner (namespace,
        name): one paged list per kind, to rebuild the watch-fed index after a watch gap."""
        found: dict[tuple[str, str], dict[ChildKey, LiveChild]] = {}
        for kind, item in self._every_child_kind(namespaces, SELECTOR_LABEL):
            owner = owner_name(item)
            metadata = item["metadata"]
            if owner is not None:
                found.setdefault((metadata["namespace"], owner), {})[(kind, metadata["name"])] = (
                    live_child(kind, item)
                )
        return found

    def names(self, namespaces: list[str]) -> dict[tuple[str, str, str], str]:
        """(namespace, kind, name) of every object of a child kind (in `namespaces`, or all),
        ours or not, and the uid of the LLMDeployment that controls it ("" for none): one
        paged metadata-only list per kind."""
        return {
            (str(item["metadata"]["namespace"]), kind, str(item["metadata"]["name"])): live_child(
                kind, item
            ).owner_uid
            for kind, item in self._every_child_kind(namespaces, None, METADATA_ONLY)
        }

    def _every_child_kind(
        self, namespaces: list[str], label_selector: str | None, accept: str | None = None
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """(kind, object) of every child kind's objects in `namespaces` (or all), a page at a
        time; a kind whose CRD went is skipped."""
        scopes: list[str | None] = [*namespaces] or [None]
        for child in CHILD_KINDS:
            resource = self._resource(child.api_version, child.kind)
            if resource is None:
                continue
            for namespace in scopes:
                try:
                    for items in self._pages(resource, namespace, label_selector, accept):
                        yield from ((child.kind, item) for item in items)
                except NotFoundError:
                    self._kind_gone(child.api_version, child.kind)
                    break
                except DynamicApiError as exc:
                    raise _error(exc, f"list {child.kind}") from None

    def llmdeployment_keys(self, namespaces: list[str]) -> set[tuple[str, str]]:
        """(namespace, name) of every LLMDeployment that exists now (metadata only)."""
        resource = self._resource(API_VERSION, KIND)
        keys: set[tuple[str, str]] = set()
        scopes: list[str | None] = [*namespaces] or [None]
        try:
            for namespace in scopes:
                for items in self._pages(resource, namespace, None, METADATA_ONLY):
                    keys.update(
                        (str(i["metadata"]["namespace"]), str(i["metadata"]["name"])) for i in items
                    )
        except DynamicApiError as exc:
            raise _error(exc, f"list {KIND}") from None
        return keys

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

    def controller_of(self, obj: Mapping[str, Any], namespace: str) -> str | None:
        """Who controls the live object of `obj`'s kind and name: the uid of its controlling
        LLMDeployment, "" for an object with no such controller, None when there is none."""
        name = obj["metadata"]["name"]
        # A list by name: the role grants list on every kind it renders, and no get.
        found = self._list(
            obj["apiVersion"],
            obj["kind"],
            namespace=namespace,
            field_selector=f"metadata.name={name}",
        )
        return live_child(obj["kind"], found[0].to_dict()).owner_uid if found else None

    def apply(self, obj: dict[str, Any], owner: Owner, *, take_over: bool) -> LiveChild:
        """Server-side apply with our field manager; the child as it now is. `take_over`
        forces conflicts: for a child that is already the owner's, whose fields a hand edit
        took. Otherwise a conflict is refused, never forced (the caller has checked that no
        one else's object of that name exists)."""
        kind, name = obj["kind"], obj["metadata"]["name"]
        resource = self._resource(obj["apiVersion"], kind)
        if resource is None:
            raise ClusterError(
                f"{kind} ({obj['apiVersion']}) is not served by this cluster; install its CRD"
            )
        try:
            applied = resource.server_side_apply(
                body=obj,
                name=name,
                namespace=owner.namespace,
                field_manager=FIELD_MANAGER,
                force_conflicts=take_over,
            )
        except DynamicApiError as exc:
            if getattr(exc, "status", None) == 409 and not take_over:
                raise not_ours(kind, name) from None  # made by someone else since we looked
            raise _error(exc, f"apply {kind} {name}") from None
        return live_child(kind, applied.to_dict())

    def delete_child(self, kind: str, name: str, namespace: str, uid: str) -> None:
        """Delete one child, only if it is still the object the caller saw (its uid)."""
        child = CHILD_KIND_BY_NAME[kind]
        resource = self._resource(child.api_version, child.kind)
        if resource is None:
            return
        try:
            resource.delete(
                name=name,
                namespace=namespace,
                body={"preconditions": {"uid": uid}} if uid else None,
            )
        except NotFoundError:
            return
        except DynamicApiError as exc:
            raise _error(exc, f"delete {child.kind} {name}") from None

    def remove_finalizer(self, namespace: str, name: str, finalizers: list[str]) -> None:
        """Drop OLD_FINALIZER; the test operation makes the patch fail (409/422) if the list
        changed since it was read, rather than remove someone else's finalizer."""
        index = finalizers.index(OLD_FINALIZER)
        resource = self._resource(API_VERSION, KIND)
        try:
            resource.patch(
                body=[
                    {"op": "test", "path": f"/metadata/finalizers/{index}", "value": OLD_FINALIZER},
                    {"op": "remove", "path": f"/metadata/finalizers/{index}"},
                ],
                name=name,
                namespace=namespace,
                content_type="application/json-patch+json",
            )
        except DynamicApiError as exc:
            raise _error(exc, f"remove the old finalizer of {KIND} {name}") from None

    def patch_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str
    ) -> str | None:
        """Patch status only if the object is still at `resource_version`: the new
        resourceVersion, or None when the object has changed since (409)."""
        resource = self._resource(API_VERSION, KIND)
        try:
            answer = resource.status.patch(
                body={"metadata": {"resourceVersion": resource_version}, "status": status},
                name=name,
                namespace=namespace,
                content_type="application/merge-patch+json",
            )
        except DynamicApiError as exc:
            if getattr(exc, "status", None) == 409:
                return None
            raise _error(exc, f"patch status of {KIND} {name}") from None
        return str(answer.metadata.resourceVersion)

    def workload_exists(self, namespace: str, name: str) -> bool:
        """Whether a Deployment or LeaderWorkerSet of that name exists, read fresh: the watch
        may not have shown it yet (a list by name: the operator's role has no get)."""
        selector = f"metadata.name={name}"
        return any(
            self._list(CHILD_KIND_BY_NAME[kind].api_version, kind, namespace=namespace,
                       field_selector=selector)
            for kind in sorted(WORKLOAD_KINDS)
        )  # fmt: skip

    def crashed_pod(self, owner: Owner, generation: str) -> str:
        """How one pod of a generation keeps crashing, or "" when none does."""
        pods = self._list(
            "v1",
            "Pod",
            namespace=owner.namespace,
            label_selector=f"{SELECTOR_LABEL}={owner.name},{GENERATION_LABEL}={generation}",
        )
        crashes = (crash_of(pod.to_dict()) for pod in pods)
        return next((c for c in crashes if c), "")

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
