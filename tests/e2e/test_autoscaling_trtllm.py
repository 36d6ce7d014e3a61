"""Operator-mode autoscaling of a TensorRT-LLM deployment with real parts: Prometheus scraping
an endpoint that serves trtllm-serve's metric names on its path, the operator choosing a
release that serves them and deciding on them."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from .e2e_support import KWOK_TOLERATION, status_of, wait_until
from .operator_harness import REPO_ROOT, Operator
from .prometheus_harness import Prometheus, TrtllmMetricsSim
from .test_autoscaling import (
    NAME,
    apply,
    condition,
    decided,
    first_decision,
    get,
    replicas,
    scaling_spec,
    scraped,
)

GPU = "nvidia-h200-141gb"
NODE = "kwok-h200-trtllm"
# 1.3.0rc20, the pinned release that serves the metrics, needs R590 (images.lock.yaml); the
# nodes of hack/testenv/nodes.yaml have 570 and 550.
DRIVER = ("590", "48", "01")


@pytest.fixture
def h200_node(kube_api: client.ApiClient) -> Iterator[str]:
    """A simulated 8-GPU H200 node with an R590 driver, shaped like those of
    hack/testenv/nodes.yaml (kwok makes it Ready); removed afterwards."""
    nodes = list(yaml.safe_load_all((REPO_ROOT / "hack/testenv/nodes.yaml").read_text()))
    node = copy.deepcopy(next(n for n in nodes if n and n["metadata"]["name"] == "kwok-h100-0"))
    labels = node["metadata"]["labels"]
    node["metadata"]["name"] = labels["kubernetes.io/hostname"] = NODE
    labels["nvidia.com/gpu.product"] = "NVIDIA-H200"
    labels["nvidia.com/gpu.memory"] = "143771"
    for part, value in zip(("major", "minor", "rev"), DRIVER, strict=True):
        labels[f"nvidia.com/cuda.driver.{part}"] = value
    node["status"]["addresses"] = [
        {"type": "InternalIP", "address": "10.10.0.99"},
        {"type": "Hostname", "address": NODE},
    ]
    core = client.CoreV1Api(kube_api)
    core.create_node(node)
    try:
        yield NODE
    finally:
        assert status_of(lambda: core.delete_node(NODE)) in (200, 404)


@pytest.fixture
def metrics(
    namespace: str, operator: Operator, h200_node: str, third_party_crds: list[str]
) -> Iterator[tuple[TrtllmMetricsSim, Prometheus]]:
    """Prometheus scraping trtllm-serve's path; the restarted operator sees the node and the
    PodMonitor CRD."""
    sim = TrtllmMetricsSim()
    with scraped(sim, namespace, operator) as prometheus:
        yield sim, prometheus


def deploy(kubeconfig: Path, namespace: str, **engine: Any) -> None:
    body = yaml.safe_load((REPO_ROOT / "examples" / "tensorrt-llm-llama-8b.yaml").read_text())
    body["metadata"]["name"] = NAME
    body["spec"]["engine"].update(engine)
    body["spec"]["placement"] = {"gpu": GPU, "tolerations": [KWOK_TOLERATION]}
    body["spec"]["replicas"] = 1
    body["spec"]["monitoring"] = {"podMonitor": True}
    body["spec"]["scaling"] = scaling_spec()
    apply(kubeconfig, namespace, body)


def test_tensorrt_llm_scales_up_on_its_own_metrics(
    kubeconfig_path: Path,
    kube_api: client.ApiClient,
    namespace: str,
    metrics: tuple[TrtllmMetricsSim, Prometheus],
) -> None:
    sim, _prometheus = metrics
    deploy(kubeconfig_path, namespace)
    first_decision(kube_api, namespace)
    assert get(kube_api, namespace)["status"]["plan"]["engineVersion"] == "1.3.0rc20"

    # What runs serves the metrics where they are scraped: the release that has them, the
    # options that turn them on, and the PodMonitor on the path the simulated engine serves.
    core, custom = client.CoreV1Api(kube_api), client.CustomObjectsApi(kube_api)
    deployment = client.AppsV1Api(kube_api).read_namespaced_deployment(NAME, namespace)
    assert ":1.3.0rc20@" in deployment.spec.template.spec.containers[0].image
    configmap = core.read_namespaced_config_map(f"{NAME}-engine-options", namespace)
    options = yaml.safe_load(configmap.data["extra-llm-api-options.yaml"])
    assert options["return_perf_metrics"] is True
    assert options["enable_iter_perf_stats"] is True
    monitor = custom.get_namespaced_custom_object(
        "monitoring.coreos.com", "v1", namespace, "podmonitors", NAME
    )
    assert monitor["spec"]["podMetricsEndpoints"][0]["path"] == TrtllmMetricsSim.PATH

    # Load step on trtllm_num_requests_running: 12 at a target of 4 per replica -> 3.
    sim.set_load(running=12, waiting=3)
    wait_until(lambda: replicas(kube_api, namespace) == 3, what="scale up to 3", timeout=60)
    assert decided(kube_api, namespace, 3)["metrics"]["runningRequests"] == 12
    available = condition(get(kube_api, namespace), "MetricsAvailable")
    assert available is not None and available["status"] == "True"


def test_autoscaling_a_release_without_metrics_says_so(
    kubeconfig_path: Path,
    kube_api: client.ApiClient,
    namespace: str,
    metrics: tuple[TrtllmMetricsSim, Prometheus],
) -> None:
    # 1.0.0 runs on the node's driver but serves no Prometheus metrics: no plan, and the
    # condition names the release instead of a deployment that never scales.
    deploy(kubeconfig_path, namespace, version="1.0.0")

    def refused() -> dict[str, Any] | None:
        planned = condition(get(kube_api, namespace), "Planned")
        return planned if planned and planned["status"] == "False" else None

    planned = wait_until(refused, what="Planned=False", timeout=60)
    assert planned["reason"] == "NoFeasiblePlan"
    assert "TensorRT-LLM 1.0.0" in planned["message"]
    assert "serves no Prometheus metrics" in planned["message"]
    assert "spec.scaling" in planned["message"]
    status = client.AppsV1Api(kube_api).list_namespaced_deployment(namespace)
    assert not status.items
