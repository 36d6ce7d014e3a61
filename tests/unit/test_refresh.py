"""Status refresh from a child workload's watch events: the owner is read only when the
workload's progress moved since the owner's status last showed it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from llmdeploy.api.types import LLMDeployment
from llmdeploy.catalog import Catalog
from llmdeploy.cluster.kube import ClusterError, workload_status_of
from llmdeploy.controller import handlers
from llmdeploy.controller.settings import OperatorSettings
from llmdeploy.sizing import plan_deployment

ROOT = Path(__file__).resolve().parents[2]


class RecordingCluster:
    """Stands in for the API server layer: hands out one owner, records reads and writes, and
    answers 409 to a write from an older resourceVersion than the owner's."""

    def __init__(self, owner: dict[str, Any]) -> None:
        self.owner = owner
        self.reads = 0
        self.patches: list[dict[str, Any]] = []

    def get_llmdeployment(self, namespace: str, name: str) -> dict[str, Any]:
        self.reads += 1
        return copy.deepcopy(self.owner)

    def patch_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str
    ) -> None:
        if resource_version != self.owner["metadata"]["resourceVersion"]:
            raise ClusterError("patch status: 409 Conflict", retryable=True, status=409)
        self.patches.append(status)
        self.owner["status"].update(status)
        self.owner["metadata"]["resourceVersion"] = str(int(resource_version) + 1)


def deployment(ready: int, observed: int) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "llama-8b",
            "namespace": "ns",
            "generation": 2,
            "ownerReferences": [
                {
                    "apiVersion": "llmdeploy.io/v1alpha1",
                    "kind": "LLMDeployment",
                    "name": "llama-8b",
                    "uid": "uid-1",
                }
            ],
        },
        "status": {
            "replicas": 1,
            "readyReplicas": ready,
            "updatedReplicas": 1,
            "observedGeneration": observed,
        },
    }


def owner(catalog: Catalog) -> dict[str, Any]:
    body = yaml.safe_load((ROOT / "examples" / "llama-3.1-8b-l4.yaml").read_text())
    body["metadata"].update(namespace="ns", uid="uid-1", generation=1, resourceVersion="7")
    body["spec"]["replicas"] = 1
    plan = plan_deployment(LLMDeployment.model_validate(body).spec, catalog)
    body["status"] = {
        "plan": plan.model_dump(mode="json", by_alias=True, exclude_none=True),
        "planKey": "k",
        "phase": "Progressing",
        "readyReplicas": 0,
        "conditions": [],
    }
    return body


def test_an_event_that_does_not_move_the_workload_reads_nothing(catalog: Catalog) -> None:
    cluster = RecordingCluster(owner(catalog))
    ctx = handlers.Context(OperatorSettings(), catalog, None, cluster)  # type: ignore[arg-type]
    # What the reconcile saw when it applied the Deployment.
    ctx.reflected["uid-1"] = workload_status_of(deployment(ready=0, observed=1))

    handlers.refresh_from_workload(ctx, deployment(ready=0, observed=1))
    assert (cluster.reads, cluster.patches) == (0, [])

    handlers.refresh_from_workload(ctx, deployment(ready=1, observed=2))  # the pod is ready
    assert cluster.reads == 1
    assert [p.get("readyReplicas") for p in cluster.patches] == [1]
    assert cluster.patches[0]["phase"] == "Ready"

    handlers.refresh_from_workload(ctx, deployment(ready=1, observed=2))  # a repeat
    assert (cluster.reads, len(cluster.patches)) == (1, 1)

    handlers.refresh_from_workload(ctx, deployment(ready=0, observed=2))  # the pod failed
    assert cluster.reads == 2
    assert cluster.patches[-1]["readyReplicas"] == 0


def test_the_owner_comes_from_the_watch_and_is_read_only_when_the_watch_is_behind(
    catalog: Catalog,
) -> None:
    cluster = RecordingCluster(owner(catalog))
    ctx = handlers.Context(OperatorSettings(), catalog, None, cluster)  # type: ignore[arg-type]
    ctx.tracked.seen(copy.deepcopy(cluster.owner))
    handlers.refresh_from_workload(ctx, deployment(ready=1, observed=2))
    assert (cluster.reads, [p["readyReplicas"] for p in cluster.patches]) == (0, [1])

    # The watch has not yet delivered the write above: the tracked body is one version behind.
    handlers.refresh_from_workload(ctx, deployment(ready=0, observed=2))
    assert (cluster.reads, [p["readyReplicas"] for p in cluster.patches]) == (1, [1, 0])
