"""Every kind the renderer may emit. The operator's watches, its prune set and its RBAC rules
derive from this one list (tests/unit/test_rbac.py checks manifests/ against it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ChildKind:
    api_version: str
    kind: str
    plural: str

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]


CHILD_KINDS = (
    ChildKind("apps/v1", "Deployment", "deployments"),
    ChildKind("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet", "leaderworkersets"),
    ChildKind("v1", "Service", "services"),
    ChildKind("v1", "ConfigMap", "configmaps"),
    ChildKind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
    ChildKind("monitoring.coreos.com/v1", "PodMonitor", "podmonitors"),
    ChildKind("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies"),
    ChildKind("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
    ChildKind("keda.sh/v1alpha1", "ScaledObject", "scaledobjects"),
    ChildKind("inference.networking.k8s.io/v1", "InferencePool", "inferencepools"),
    ChildKind("gateway.networking.k8s.io/v1", "HTTPRoute", "httproutes"),
)
CHILD_KIND_BY_NAME = {k.kind: k for k in CHILD_KINDS}
WORKLOAD_KINDS = frozenset({"Deployment", "LeaderWorkerSet"})
# The verbs the operator uses on every child kind: watch (the index), list (relist), create
# and patch (server-side apply of a new and an existing object), delete (prune).
CHILD_VERBS = frozenset({"list", "watch", "create", "patch", "delete"})
