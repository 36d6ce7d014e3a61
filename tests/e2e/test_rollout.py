"""Pilot rollouts on the local control plane, measured through a real Prometheus: each
generation of engines is a simulated vLLM endpoint of its own, scraped with the labels a
PodMonitor copies from its pods (llmdeploy_io_generation for the candidate). A good candidate
on another SKU is piloted, survives a SIGKILL of the operator, and is promoted with the
serving replicas never below the spec's; a slow one is rolled back and not retried."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from .e2e_support import KWOK_TOLERATION, wait_until
from .operator_harness import REPO_ROOT, Operator, kubectl
from .prometheus_harness import Prometheus, VllmMetricsSim
from .test_measure import FAST_TTFT_S, NAME, SLOW_TTFT_S, Traffic, condition, events, served, status

__all__ = ["served"]  # the fixture, shared with test_measure
REPLICAS = 2


def deploy(kubeconfig: Path, namespace: str, **pilot: Any) -> None:
    body = yaml.safe_load((REPO_ROOT / "examples" / "llama-3.1-8b-l4.yaml").read_text())
    body["metadata"]["name"] = NAME
    body["spec"]["placement"] = {"gpu": "nvidia-l4", "tolerations": [KWOK_TOLERATION]}
    body["spec"]["replicas"] = REPLICAS
    body["spec"]["rollout"] = {"strategy": "Pilot", "pilot": {"duration": "20s", **pilot}}
    result = kubectl(kubeconfig, "-n", namespace, "apply", "-f", "-", stdin=yaml.safe_dump(body))
    assert result.returncode == 0, result.stderr


def move_to(kubeconfig: Path, namespace: str, gpu: str) -> None:
    patch = f'{{"spec": {{"placement": {{"gpu": "{gpu}"}}}}}}'
    result = kubectl(
        kubeconfig, "-n", namespace, "patch", "llmdeployment", NAME, "--type=merge", "-p", patch
    )
    assert result.returncode == 0, result.stderr


def ready_replicas(api: client.ApiClient, namespace: str) -> dict[str, int]:
    listed = client.AppsV1Api(api).list_namespaced_deployment(
        namespace, label_selector=f"llmdeploy.io/deployment={NAME}"
    )
    return {d.metadata.name: d.status.ready_replicas or 0 for d in listed.items}


@contextmanager
def lowest_serving(api: client.ApiClient, namespace: str) -> Iterator[list[int]]:
    """The fewest ready engine replicas, summed over the generations, seen while inside."""
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.3):
            seen.append(sum(ready_replicas(api, namespace).values()))

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(timeout=10)


@contextmanager
def candidate_engine(
    prometheus: Prometheus, namespace: str, generation: str, ttft_s: float, per_second: int
) -> Iterator[Traffic]:
    sim = VllmMetricsSim()
    prometheus.add_target(
        sim.port,
        {
            "namespace": namespace,
            "llmdeploy_io_deployment": NAME,
            "llmdeploy_io_generation": generation,
        },
    )
    traffic = Traffic(sim, ttft_s, per_second)
    try:
        yield traffic
    finally:
        traffic.close()
        sim.close()


def rollout(api: client.ApiClient, namespace: str) -> dict[str, Any]:
    return status(api, namespace).get("rollout") or {}


def candidate_started(api: client.ApiClient, namespace: str) -> dict[str, Any]:
    return wait_until(  # type: ignore[no-any-return]
        lambda: rollout(api, namespace).get("candidate"), what="a candidate", timeout=60
    )


def test_a_good_candidate_is_piloted_survives_a_restart_and_is_promoted(
    kubeconfig_path: Path,
    kube_api: client.ApiClient,
    namespace: str,
    operator: Operator,
    served: tuple[Traffic, Prometheus],
) -> None:
    traffic, prometheus = served
    traffic.ttft_s = FAST_TTFT_S
    deploy(kubeconfig_path, namespace)
    wait_until(
        lambda: condition(kube_api, namespace, "Ready").get("status") == "True",
        what="Ready",
        timeout=90,
    )
    assert rollout(kube_api, namespace)["current"]["workload"] == NAME

    move_to(kubeconfig_path, namespace, "nvidia-l40s")
    candidate = candidate_started(kube_api, namespace)
    generation, workload = candidate["generation"], candidate["workload"]
    assert workload == f"{NAME}-{generation}" and candidate["replicas"] == 1
    assert candidate["plan"]["gpu"] == "nvidia-l40s"
    assert status(kube_api, namespace)["gpu"] == "nvidia-l4"  # the current one still serves
    deployments = client.AppsV1Api(kube_api)
    current = deployments.read_namespaced_deployment(NAME, namespace)
    assert current.spec.replicas == REPLICAS
    wait_until(
        lambda: ready_replicas(kube_api, namespace).get(workload) == 1,
        what="the candidate's replica ready",
        timeout=60,
    )
    pods = client.CoreV1Api(kube_api).list_namespaced_pod(
        namespace, label_selector=f"llmdeploy.io/generation={generation}"
    )
    assert {p.metadata.labels["llmdeploy.io/deployment"] for p in pods.items} == {NAME}

    # The faster SKU serves more per replica: a lower cost per token than the L4s, SLO met.
    with candidate_engine(prometheus, namespace, generation, FAST_TTFT_S, per_second=6):
        wait_until(
            lambda: rollout(kube_api, namespace).get("reason") == "Measuring",
            what="the pilot measuring",
            timeout=60,
        )
        operator.kill()  # SIGKILL mid-pilot: the state is in status alone
        operator.start()
        with lowest_serving(kube_api, namespace) as seen:
            promoted = wait_until(
                lambda: (
                    (r := rollout(kube_api, namespace))["current"]["workload"] == workload and r
                ),
                what="the candidate promoted",
                timeout=180,
            )
            wait_until(
                lambda: NAME not in ready_replicas(kube_api, namespace),
                what="the old generation removed",
                timeout=60,
            )
        assert seen and min(seen) >= REPLICAS, seen
    assert promoted["phase"] == "Stable" and "candidate" not in promoted
    measured = {m["generation"]: m for m in promoted["measurements"]}
    assert measured[generation]["sloMet"] == "True"
    assert (
        measured[generation]["costPerMillionOutputTokens"]
        < measured[""]["costPerMillionOutputTokens"]
    )
    final = status(kube_api, namespace)
    assert final["gpu"] == "nvidia-l40s" and final["plan"]["gpu"] == "nvidia-l40s"
    assert deployments.read_namespaced_deployment(workload, namespace).spec.replicas == REPLICAS
    wait_until(
        lambda: condition(kube_api, namespace, "Ready").get("status") == "True",
        what="Ready on the new generation",
        timeout=60,
    )
    reasons = {e.reason for e in events(kube_api, namespace, "Promoted")}
    assert reasons == {"Promoted"}


def test_a_slow_candidate_is_rolled_back_and_not_retried_unchanged(
    kubeconfig_path: Path,
    kube_api: client.ApiClient,
    namespace: str,
    operator: Operator,
    served: tuple[Traffic, Prometheus],
) -> None:
    traffic, prometheus = served
    traffic.ttft_s = FAST_TTFT_S
    deploy(kubeconfig_path, namespace, duration="10m")
    wait_until(
        lambda: condition(kube_api, namespace, "Ready").get("status") == "True",
        what="Ready",
        timeout=90,
    )
    move_to(kubeconfig_path, namespace, "nvidia-l40s")
    candidate = candidate_started(kube_api, namespace)
    generation, workload = candidate["generation"], candidate["workload"]
    with candidate_engine(prometheus, namespace, generation, SLOW_TTFT_S, per_second=2):
        degraded = wait_until(
            lambda: (
                (c := condition(kube_api, namespace, "Degraded")).get("reason") == "PilotRolledBack"
                and c
            ),
            what="the pilot rolled back",
            timeout=120,
        )
    assert degraded["status"] == "True" and "SLOBreach" in degraded["message"]
    assert "TTFT 1500 ms: met by 0.0%" in degraded["message"]  # what was measured
    wait_until(
        lambda: workload not in ready_replicas(kube_api, namespace),
        what="the candidate removed",
        timeout=60,
    )
    state = rollout(kube_api, namespace)
    assert state["phase"] == "RolledBack" and state["current"]["workload"] == NAME
    assert [f["reason"] for f in state["failed"]] == ["SLOBreach"]
    warned = wait_until(
        lambda: events(kube_api, namespace, "PilotRolledBack"), what="the event", timeout=30
    )
    assert warned[0].type == "Warning"
    # Not tried again unchanged: no second candidate over several measurements.
    time.sleep(8)
    assert workload not in ready_replicas(kube_api, namespace)
    assert len(events(kube_api, namespace, "PilotStarted")) == 1
    assert status(kube_api, namespace)["gpu"] == "nvidia-l4"
    assert ready_replicas(kube_api, namespace)[NAME] == REPLICAS
