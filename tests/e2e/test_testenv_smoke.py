"""Smoke tests of the local control plane (hack/testenv): the simulated GPU nodes, the
scheduler's handling of nvidia.com/gpu, kwok's pod lifecycle, the controller-manager, and RBAC.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from kubernetes import client

from .e2e_support import gpu_pod, status_of, wait_until

pytestmark = pytest.mark.e2e

H100 = "NVIDIA-H100-80GB-HBM3"
GPU_NODES: dict[str, dict[str, Any]] = {
    # product: expected node count, GPUs per node, gpu.memory label (MiB), gpu.family label
    H100: {"nodes": 2, "gpus": 8, "memory": "81559", "family": "hopper"},
    "NVIDIA-L40S": {"nodes": 2, "gpus": 8, "memory": "46068", "family": "ada-lovelace"},
    "NVIDIA-L4": {"nodes": 4, "gpus": 1, "memory": "23034", "family": "ada-lovelace"},
}
GFD_LABELS = (
    "nvidia.com/gpu.product",
    "nvidia.com/gpu.count",
    "nvidia.com/gpu.memory",
    "nvidia.com/gpu.family",
    "nvidia.com/cuda.driver.major",
    "nvidia.com/cuda.driver.minor",
    "nvidia.com/cuda.driver.rev",
    "nvidia.com/cuda.runtime.major",
    "nvidia.com/cuda.runtime.minor",
    "node.kubernetes.io/instance-type",
    "topology.kubernetes.io/zone",
)


def condition(pod: client.V1Pod, kind: str) -> client.V1PodCondition | None:
    for cond in (pod.status and pod.status.conditions) or []:
        if cond.type == kind:
            return cond
    return None


def test_simulated_gpu_nodes_have_gfd_labels_and_allocatable_gpus(
    kube_api: client.ApiClient,
) -> None:
    nodes = client.CoreV1Api(kube_api).list_node(label_selector="type=kwok").items
    gpu_nodes = [n for n in nodes if "nvidia.com/gpu.product" in (n.metadata.labels or {})]
    products = Counter(n.metadata.labels["nvidia.com/gpu.product"] for n in gpu_nodes)
    assert products == {product: spec["nodes"] for product, spec in GPU_NODES.items()}

    for node in nodes:
        ready = [c for c in node.status.conditions or [] if c.type == "Ready"]
        assert [c.status for c in ready] == ["True"], node.metadata.name

    drivers = set()
    for node in gpu_nodes:
        labels = node.metadata.labels
        spec = GPU_NODES[labels["nvidia.com/gpu.product"]]
        assert not [key for key in GFD_LABELS if not labels.get(key)], node.metadata.name
        assert labels["nvidia.com/gpu.count"] == str(spec["gpus"])
        assert labels["nvidia.com/gpu.memory"] == spec["memory"]
        assert labels["nvidia.com/gpu.family"] == spec["family"]
        assert node.status.capacity["nvidia.com/gpu"] == str(spec["gpus"])
        assert node.status.allocatable["nvidia.com/gpu"] == str(spec["gpus"])
        taints = {(t.key, t.value, t.effect) for t in node.spec.taints or []}
        assert ("nvidia.com/gpu", "present", "NoSchedule") in taints
        assert ("kwok.x-k8s.io/node", "fake", "NoSchedule") in taints
        drivers.add(labels["nvidia.com/cuda.driver.major"])
    assert len(drivers) > 1, "expected nodes with different CUDA driver versions"


def test_one_gpu_pod_lands_on_an_h100_node_and_becomes_ready(
    kube_api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_pod(
        namespace, gpu_pod("h100", 1, node_selector={"nvidia.com/gpu.product": H100})
    )

    def ready_pod() -> client.V1Pod | None:
        pod = core.read_namespaced_pod("h100", namespace)
        cond = condition(pod, "Ready")
        return pod if cond is not None and cond.status == "True" else None

    pod = wait_until(ready_pod, what="pod h100 to become Ready")
    node = core.read_node(pod.spec.node_name)
    assert node.metadata.labels["nvidia.com/gpu.product"] == H100
    assert pod.status.phase == "Running"
    assert pod.status.pod_ip


def test_pod_asking_for_more_gpus_than_any_node_has_stays_pending(
    kube_api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(kube_api)
    core.create_namespaced_pod(namespace, gpu_pod("too-big", 9))

    def unschedulable() -> client.V1PodCondition | None:
        cond = condition(core.read_namespaced_pod("too-big", namespace), "PodScheduled")
        return cond if cond is not None and cond.status == "False" else None

    cond = wait_until(unschedulable, what="PodScheduled=False on pod too-big")
    assert cond.reason == "Unschedulable"
    assert "Insufficient nvidia.com/gpu" in (cond.message or "")
    pod = core.read_namespaced_pod("too-big", namespace)
    assert pod.status.phase == "Pending"
    assert not pod.spec.node_name


def test_deployment_rolls_out_and_is_garbage_collected(
    kube_api: client.ApiClient, namespace: str
) -> None:
    apps = client.AppsV1Api(kube_api)
    core = client.CoreV1Api(kube_api)
    labels = {"app": "l4-server"}
    template = gpu_pod("unused", 1, node_selector={"nvidia.com/gpu.product": "NVIDIA-L4"})
    template.metadata = client.V1ObjectMeta(labels=labels)
    apps.create_namespaced_deployment(
        namespace,
        client.V1Deployment(
            metadata=client.V1ObjectMeta(name="l4-server"),
            spec=client.V1DeploymentSpec(
                replicas=3,
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(metadata=template.metadata, spec=template.spec),
            ),
        ),
    )

    def available() -> int:
        status = apps.read_namespaced_deployment("l4-server", namespace).status
        return 1 if status and status.available_replicas == 3 else 0

    wait_until(available, what="3 available replicas of deployment l4-server")
    pods = core.list_namespaced_pod(namespace, label_selector="app=l4-server").items
    # One L4 per node: three pods need three different L4 nodes.
    assert len({p.spec.node_name for p in pods}) == 3

    apps.delete_namespaced_deployment(
        "l4-server", namespace, body=client.V1DeleteOptions(propagation_policy="Background")
    )

    def all_gone() -> bool:
        return not core.list_namespaced_pod(namespace, label_selector="app=l4-server").items

    wait_until(all_gone, what="the garbage collector to remove the deployment's pods")


def test_rbac_denies_a_service_account_until_a_role_grants_access(
    kube_api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(kube_api)
    rbac = client.RbacAuthorizationV1Api(kube_api)
    core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="reader"))
    )
    token_request = core.create_namespaced_service_account_token(
        "reader",
        namespace,
        client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(expiration_seconds=600)),
    )

    conf = client.Configuration()
    conf.host = kube_api.configuration.host
    conf.ssl_ca_cert = kube_api.configuration.ssl_ca_cert
    conf.api_key = {"BearerToken": token_request.status.token}
    conf.api_key_prefix = {"BearerToken": "Bearer"}
    with client.ApiClient(conf) as as_reader:
        who = client.AuthenticationV1Api(as_reader).create_self_subject_review(
            client.V1SelfSubjectReview()
        )
        assert who.status.user_info.username == f"system:serviceaccount:{namespace}:reader"
        reader = client.CoreV1Api(as_reader)

        def list_secrets() -> object:
            return reader.list_namespaced_secret(namespace)

        assert status_of(list_secrets) == 403

        rbac.create_namespaced_role(
            namespace,
            client.V1Role(
                metadata=client.V1ObjectMeta(name="secret-reader"),
                rules=[client.V1PolicyRule(api_groups=[""], resources=["secrets"], verbs=["list"])],
            ),
        )
        rbac.create_namespaced_role_binding(
            namespace,
            client.V1RoleBinding(
                metadata=client.V1ObjectMeta(name="reader-reads-secrets"),
                role_ref=client.V1RoleRef(
                    api_group="rbac.authorization.k8s.io", kind="Role", name="secret-reader"
                ),
                subjects=[
                    client.RbacV1Subject(kind="ServiceAccount", name="reader", namespace=namespace)
                ],
            ),
        )
        wait_until(lambda: status_of(list_secrets) == 200, what="the RoleBinding to take effect")
        # The grant is namespaced: secrets elsewhere stay out of reach.
        assert status_of(lambda: reader.list_namespaced_secret("kube-system")) == 403
