"""Operator-mode autoscaling with real parts: Prometheus scraping a vLLM-compatible endpoint,
the operator deciding, writes through the LLMDeployment's scale subresource."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from prometheus_client import Gauge

from .e2e_support import KWOK_TOLERATION, wait_until
from .operator_harness import REPO_ROOT, Operator, kubectl
from .prometheus_harness import EngineSim, Prometheus, VllmMetricsSim

GROUP, VERSION, PLURAL = "llmdeploy.io", "v1alpha1", "llmdeployments"
NAME = "scaled"
DOWN_WINDOW_S = 30
ENDPOINTS, ENDPOINT = "LLMDEPLOY_PROMETHEUS_ENDPOINTS", "e2e"


@contextmanager
def scraped(sim: EngineSim, namespace: str, operator: Operator) -> Iterator[Prometheus]:
    """A Prometheus scraping `sim` on its engine's path, allowed in the operator's settings as
    endpoint `e2e` (an object can name no free URL): the operator restarts with it."""
    labels = {"namespace": namespace, "llmdeploy_io_deployment": NAME}
    prometheus = Prometheus(sim.port, labels, metrics_path=sim.PATH)
    prometheus.start()
    operator.stop()
    endpoints = json.loads(operator.settings.get(ENDPOINTS) or "{}")
    operator.settings[ENDPOINTS] = json.dumps({**endpoints, ENDPOINT: {"url": prometheus.url}})
    operator.start()
    try:
        yield prometheus
    finally:
        prometheus.close()
        sim.close()


@pytest.fixture
def metrics(namespace: str, operator: Operator) -> Iterator[tuple[VllmMetricsSim, Prometheus]]:
    sim = VllmMetricsSim()
    with scraped(sim, namespace, operator) as prometheus:
        yield sim, prometheus


def get(api: client.ApiClient, namespace: str) -> dict[str, Any]:
    return client.CustomObjectsApi(api).get_namespaced_custom_object(  # type: ignore[no-any-return]
        GROUP, VERSION, namespace, PLURAL, NAME
    )


def replicas(api: client.ApiClient, namespace: str) -> int:
    return int(get(api, namespace)["spec"].get("replicas") or 0)


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return c  # type: ignore[no-any-return]
    return None


def scaled_messages(api: client.ApiClient, namespace: str) -> list[str]:
    """Messages of the Scaled events on the LLMDeployment."""
    events = client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={NAME}"
    )
    return [e.message or "" for e in events.items if e.reason == "Scaled"]


def first_decision(api: client.ApiClient, namespace: str) -> None:
    wait_until(
        lambda: condition(get(api, namespace), "MetricsAvailable"),
        what="first autoscaling decision",
        timeout=60,
    )
    assert replicas(api, namespace) == 1


def decided(api: client.ApiClient, namespace: str, desired: int) -> dict[str, Any]:
    """status.autoscaler once it shows `desired`: the scale write comes first, the status that
    explains it follows."""
    return wait_until(  # type: ignore[no-any-return]
        lambda: (
            (get(api, namespace)["status"].get("autoscaler") or {}).get("desiredReplicas")
            == desired
            and get(api, namespace)["status"]["autoscaler"]
        ),
        what="status.autoscaler",
        timeout=30,
    )


def apply(kubeconfig: Path, namespace: str, body: dict[str, Any]) -> None:
    result = kubectl(kubeconfig, "-n", namespace, "apply", "-f", "-", stdin=yaml.safe_dump(body))
    assert result.returncode == 0, result.stderr


def scaling_spec(**scaling: Any) -> dict[str, Any]:
    """Operator mode on runningRequests (4 per replica), 1 to 4 replicas, up at once."""
    return {
        "mode": "operator",
        "minReplicas": 1,
        "maxReplicas": 4,
        "prometheus": ENDPOINT,
        "metrics": [{"type": "runningRequests", "target": 4}],
        "behavior": {
            "scaleUp": {
                "stabilizationWindowSeconds": 0,
                "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15}],
            },
            "scaleDown": {
                "stabilizationWindowSeconds": DOWN_WINDOW_S,
                "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15}],
            },
        },
        **scaling,
    }


def deploy(kubeconfig: Path, namespace: str, replicas: int = 1, **scaling: Any) -> None:
    body = yaml.safe_load((REPO_ROOT / "examples" / "llama-3.1-8b-l4.yaml").read_text())
    body["metadata"]["name"] = NAME
    body["spec"]["placement"]["tolerations"] = [KWOK_TOLERATION]
    body["spec"]["workload"].pop("requestsPerSecond")
    body["spec"]["replicas"] = replicas
    body["spec"]["scaling"] = scaling_spec(**scaling)
    apply(kubeconfig, namespace, body)


def test_scales_up_on_load_down_after_the_window_and_holds_without_metrics(
    kubeconfig_path: Path,
    kube_api: client.ApiClient,
    namespace: str,
    operator: Operator,
    metrics: tuple[VllmMetricsSim, Prometheus],
) -> None:
    sim, prometheus = metrics
    deploy(kubeconfig_path, namespace)
    first_decision(kube_api, namespace)

    # Load step: 12 running requests at a target of 4 per replica -> 3 replicas.
    sim.set_load(running=12, waiting=3)
    wait_until(lambda: replicas(kube_api, namespace) == 3, what="scale up to 3", timeout=60)
    autoscaler = decided(kube_api, namespace, 3)
    assert autoscaler["lastScaleTime"]
    assert autoscaler["metrics"]["runningRequests"] == 12
    # Events are posted after the status write seen above.
    wait_until(lambda: scaled_messages(kube_api, namespace), what="a Scaled event", timeout=30)
    # The Deployment follows the LLMDeployment's replicas.
    wait_until(
        lambda: (
            client.AppsV1Api(kube_api).read_namespaced_deployment(NAME, namespace).spec.replicas
            == 3
        ),
        what="Deployment at 3",
        timeout=60,
    )

    # Load gone: nothing before the window, minReplicas after it.
    sim.set_load(running=0, waiting=0)
    gone = time.monotonic()
    wait_until(lambda: replicas(kube_api, namespace) == 1, what="scale down", timeout=90)
    assert time.monotonic() - gone >= DOWN_WINDOW_S - 5

    # Prometheus stopped: replicas held, MetricsAvailable=False.
    sim.set_load(running=12, waiting=0)
    wait_until(lambda: replicas(kube_api, namespace) == 3, what="scale up again", timeout=60)
    prometheus.stop()

    def unavailable() -> dict[str, Any] | None:
        c = condition(get(kube_api, namespace), "MetricsAvailable")
        return c if c and c["status"] == "False" else None

    held = wait_until(unavailable, what="MetricsAvailable=False", timeout=60)
    assert "no data" in held["message"]
    time.sleep(DOWN_WINDOW_S + 5)
    assert replicas(kube_api, namespace) == 3  # never scaled down on missing data


def test_restart_mid_window_does_not_scale_down_early(
    kubeconfig_path: Path,
    kube_api: client.ApiClient,
    namespace: str,
    operator: Operator,
    metrics: tuple[VllmMetricsSim, Prometheus],
) -> None:
    sim, _prometheus = metrics
    deploy(kubeconfig_path, namespace)
    sim.set_load(running=16, waiting=0)
    wait_until(lambda: replicas(kube_api, namespace) == 4, what="scale up to 4", timeout=90)
    sim.set_load(running=0, waiting=0)
    time.sleep(4)  # a few low recommendations, well inside the window
    operator.kill()
    operator.start()
    # The window is measured from the last high recommendation, which the restarted operator
    # reads back from status.autoscaler: no scale-down for most of the window.
    restarted = time.monotonic()
    while time.monotonic() - restarted < DOWN_WINDOW_S - 15:
        assert replicas(kube_api, namespace) == 4
        time.sleep(1)
    wait_until(
        lambda: replicas(kube_api, namespace) == 1, what="scale down after window", timeout=90
    )


def test_scale_up_is_capped_by_free_gpus(
    kubeconfig_path: Path,
    kube_api: client.ApiClient,
    namespace: str,
    operator: Operator,
    metrics: tuple[VllmMetricsSim, Prometheus],
) -> None:
    sim, _prometheus = metrics
    deploy(kubeconfig_path, namespace)
    patched = kubectl(
        kubeconfig_path,
        "-n",
        namespace,
        "patch",
        "llmdep",
        NAME,
        "--type=merge",
        "-p",
        '{"spec": {"scaling": {"maxReplicas": 8}}}',
    )
    assert patched.returncode == 0, patched.stderr
    sim.set_load(running=40, waiting=0)  # asks for 10, clamped to 8; the cluster has 4 L4s

    def capped() -> dict[str, Any] | None:
        autoscaler = (get(kube_api, namespace).get("status") or {}).get("autoscaler") or {}
        return autoscaler if "by free GPUs" in str(autoscaler.get("reason")) else None

    autoscaler = wait_until(capped, what="a capped decision", timeout=60)
    assert 1 <= autoscaler["desiredReplicas"] <= 4
    time.sleep(5)
    assert replicas(kube_api, namespace) <= 4  # never more replicas than GPUs to run them


def test_scale_to_zero_manual_scale_idle_period_and_activation(
    kubeconfig_path: Path,
    kube_api: client.ApiClient,
    namespace: str,
    operator: Operator,
    metrics: tuple[VllmMetricsSim, Prometheus],
) -> None:
    sim, _prometheus = metrics
    # What a gateway in front of the engines would count; the activation metric is read within
    # the object's namespace (Prometheus's target labels put it there).
    gateway = Gauge(
        "gateway_waiting_requests", "Requests held at the gateway", registry=sim.registry
    )
    idle_s = 60
    stz = {"idleSeconds": idle_s, "activationMetric": {"name": "gateway_waiting_requests"}}
    deploy(kubeconfig_path, namespace, replicas=0, scaleToZero=stz)

    # At zero: no engine metrics, and that is reported as expected, not as a failure.
    def zero_reported() -> dict[str, Any] | None:
        c = condition(get(kube_api, namespace), "MetricsAvailable")
        # The first tick may come before Prometheus's first scrape: "no data", also held.
        return c if c and "activation metric returned 0" in c["message"] else None

    reported = wait_until(zero_reported, what="MetricsAvailable=ScaledToZero", timeout=60)
    assert reported["status"] == "Unknown" and reported["reason"] == "ScaledToZero"
    assert replicas(kube_api, namespace) == 0

    # kubectl scale is respected: idle readings start the idle period, they do not undo it.
    scaled = kubectl(kubeconfig_path, "-n", namespace, "scale", "llmdep", NAME, "--replicas=2")
    assert scaled.returncode == 0, scaled.stderr
    start = time.monotonic()
    while time.monotonic() - start < 20:
        assert replicas(kube_api, namespace) >= 1
        time.sleep(1)
    wait_until(lambda: replicas(kube_api, namespace) == 0, what="scale to zero", timeout=90)
    assert time.monotonic() - start >= idle_s
    wait_until(
        lambda: any("scaleToZero.idleSeconds" in m for m in scaled_messages(kube_api, namespace)),
        what="a Scaled event naming scaleToZero.idleSeconds",
        timeout=30,
    )

    # Activation: the query reads above 0 -> minReplicas.
    gateway.set(3)
    wait_until(lambda: replicas(kube_api, namespace) == 1, what="activation", timeout=30)

    def activated() -> bool:
        messages = scaled_messages(kube_api, namespace)
        return any("0 -> 1: the activation metric returned 3" in m for m in messages)

    wait_until(activated, what="a Scaled event naming the activation", timeout=30)

    # An HPA cannot go to zero: the API server refuses the combination, naming the field.
    body = get(kube_api, namespace)
    body["spec"]["scaling"]["mode"] = "hpa"
    for key in ("status", "metadata"):
        body.pop(key)
    body["metadata"] = {"name": NAME}
    refused = kubectl(
        kubeconfig_path, "-n", namespace, "apply", "-f", "-", stdin=yaml.safe_dump(body)
    )
    assert refused.returncode != 0 and "scaleToZero" in refused.stderr, refused.stderr
