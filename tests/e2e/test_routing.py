"""spec.routing through the operator on the local control plane: the InferencePool and the
HTTPRoute with the pinned CRDs, the pool's selector against the pods the workload runs, and
the Routable condition as the endpoint picker's Service and a gateway's verdict come and go."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from .e2e_support import wait_until
from .operator_harness import Operator
from .test_operator import apply, condition, example, get, ready
from .testenv_control import WRITE_VERBS, AuditLog

NAME = "llama-8b-routed"
POOLS = ("inference.networking.k8s.io", "v1", "inferencepools")
ROUTES = ("gateway.networking.k8s.io", "v1", "httproutes")
CONTROLLER = "example.com/gateway-controller"


def _get(api: client.ApiClient, namespace: str, kind: tuple[str, str, str]) -> Any:
    group, version, plural = kind
    listed = client.CustomObjectsApi(api).list_namespaced_custom_object(
        group, version, namespace, plural
    )
    return next((i for i in listed["items"] if i["metadata"]["name"] == NAME), None)


def _routable(api: client.ApiClient, namespace: str, status: str, reason: str) -> Any:
    found = condition(get(api, namespace, NAME), "Routable")
    if found and found["status"] == status and found["reason"] == reason:
        return found
    return None


def _wait_routable(api: client.ApiClient, namespace: str, status: str, reason: str) -> Any:
    return wait_until(
        lambda: _routable(api, namespace, status, reason),
        what=f"Routable={status} ({reason})",
        timeout=120,
    )


def _gateway_verdict(api: client.ApiClient, namespace: str, accepted: bool) -> None:
    """What a gateway controller writes: its verdict on the route, in the status subresource."""
    custom = client.CustomObjectsApi(api)
    route = custom.get_namespaced_custom_object(*ROUTES[:2], namespace, ROUTES[2], NAME)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    route["status"] = {
        "parents": [
            {
                "parentRef": {
                    "group": "gateway.networking.k8s.io",
                    "kind": "Gateway",
                    "name": "inference-gateway",
                },
                "controllerName": CONTROLLER,
                "conditions": [
                    {
                        "type": "Accepted",
                        "status": "True" if accepted else "False",
                        "reason": "Accepted" if accepted else "NotAllowedByListeners",
                        "message": "" if accepted else "no listener admits this route",
                        "observedGeneration": route["metadata"]["generation"],
                        "lastTransitionTime": now,
                    }
                ],
            }
        ]
    }
    custom.replace_namespaced_custom_object_status(*ROUTES[:2], namespace, ROUTES[2], NAME, route)


def _pod_names(api: client.ApiClient, namespace: str, selector: dict[str, str]) -> set[str]:
    labels = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
    pods = client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=labels)
    return {p.metadata.name for p in pods.items}


def _workload_pods(api: client.ApiClient, namespace: str) -> set[str]:
    """The pods of the Deployment's ReplicaSets, by owner reference, not by label."""
    sets = client.AppsV1Api(api).list_namespaced_replica_set(namespace).items
    mine = {
        s.metadata.name
        for s in sets
        if any(r.kind == "Deployment" and r.name == NAME for r in s.metadata.owner_references or [])
    }
    pods = client.CoreV1Api(api).list_namespaced_pod(namespace).items
    return {
        p.metadata.name
        for p in pods
        if any(r.kind == "ReplicaSet" and r.name in mine for r in p.metadata.owner_references or [])
    }


def _decoy_pod(api: client.ApiClient, namespace: str) -> None:
    """A pod of the namespace that is no engine of this object: the pool must not take it."""
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(
            name="not-an-engine",
            labels={"app.kubernetes.io/instance": NAME, "llm-d.ai/engine-type": "vllm"},
        ),
        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")]),
    )
    client.CoreV1Api(api).create_namespaced_pod(namespace, pod)


@pytest.mark.usefixtures("third_party_crds")
def test_pool_route_and_routable_through_the_operator(
    kubeconfig_path: Path, kube_api: client.ApiClient, namespace: str, operator: Operator
) -> None:
    _decoy_pod(kube_api, namespace)
    assert apply(kubeconfig_path, namespace, example("llama-3.1-8b-routing")).returncode == 0
    pool = wait_until(lambda: _get(kube_api, namespace, POOLS), what="the InferencePool")
    route = wait_until(lambda: _get(kube_api, namespace, ROUTES), what="the HTTPRoute")
    selector = pool["spec"]["selector"]["matchLabels"]
    assert selector == {"llmdeploy.io/deployment": NAME}
    assert pool["spec"]["targetPorts"] == [{"number": 8000}]
    picker = pool["spec"]["endpointPickerRef"]
    assert (picker["kind"], picker["name"], picker["port"]) == (
        "Service",
        "my-epp",
        {"number": 9002},
    )
    assert route["spec"]["parentRefs"][0]["name"] == "inference-gateway"
    assert route["spec"]["rules"][0]["backendRefs"] == [
        {
            "group": "inference.networking.k8s.io",
            "kind": "InferencePool",
            "name": NAME,
            "weight": 100,
        }
    ]
    assert route["spec"]["rules"][0]["matches"] == [
        {"path": {"type": "PathPrefix", "value": "/v1"}}
    ]

    # The pool takes exactly the engine pods the workload runs.
    obj = wait_until(lambda: ready(kube_api, namespace, NAME), what="Ready", timeout=180)
    engines = _workload_pods(kube_api, namespace)
    assert len(engines) == obj["status"]["replicas"] >= 1
    assert _pod_names(kube_api, namespace, selector) == engines
    for pod in client.CoreV1Api(kube_api).list_namespaced_pod(namespace).items:
        if pod.metadata.name in engines:
            assert pod.metadata.labels["llm-d.ai/engine-type"] == "vllm"

    # No endpoint picker yet: not routable, and the gateway's acceptance does not change that.
    missing = _wait_routable(kube_api, namespace, "False", "EndpointPickerNotFound")
    assert "my-epp" in missing["message"]
    _gateway_verdict(kube_api, namespace, accepted=True)
    service = client.V1Service(
        metadata=client.V1ObjectMeta(name="my-epp"),
        spec=client.V1ServiceSpec(
            selector={"app": "my-epp"}, ports=[client.V1ServicePort(port=9002, name="grpc")]
        ),
    )
    client.CoreV1Api(kube_api).create_namespaced_service(namespace, service)
    routable = _wait_routable(kube_api, namespace, "True", "Routable")
    assert CONTROLLER in routable["message"]

    # Settled: the pool and the route are not written again.
    audit = AuditLog()
    audit.mark()
    start = operator.reconciles()
    wait_until(lambda: operator.reconciles() >= start + 4, what="four resyncs", timeout=60)
    writes = [
        r
        for r in audit.requests()
        if r.namespace == namespace
        and r.verb in WRITE_VERBS
        and r.resource in ("inferencepools", "httproutes")
    ]
    assert writes == []

    # The gateway refuses the route.
    _gateway_verdict(kube_api, namespace, accepted=False)
    refused = _wait_routable(kube_api, namespace, "False", "RouteNotAccepted")
    assert "NotAllowedByListeners" in refused["message"]

    # The picker goes away.
    _gateway_verdict(kube_api, namespace, accepted=True)
    _wait_routable(kube_api, namespace, "True", "Routable")
    client.CoreV1Api(kube_api).delete_namespaced_service("my-epp", namespace)
    _wait_routable(kube_api, namespace, "False", "EndpointPickerNotFound")

    # Routing removed: both objects pruned, no Routable condition left.
    body = example("llama-3.1-8b-routing")
    del body["spec"]["routing"]
    assert apply(kubeconfig_path, namespace, body).returncode == 0
    wait_until(
        lambda: (
            _get(kube_api, namespace, POOLS) is None and _get(kube_api, namespace, ROUTES) is None
        ),
        what="the InferencePool and HTTPRoute pruned",
        timeout=120,
    )
    wait_until(
        lambda: condition(get(kube_api, namespace, NAME), "Routable") is None,
        what="no Routable condition",
        timeout=60,
    )
