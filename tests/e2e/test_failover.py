"""Hand-overs and a frozen API server: what one replica persisted is what the next one uses,
and an operator whose API server stops answering reports it and then converges."""

from __future__ import annotations

import json
import time
from pathlib import Path

from kubernetes import client

from .e2e_support import healthy, wait_until
from .operator_harness import Operator, free_port
from .prometheus_harness import Prometheus, VllmMetricsSim
from .test_autoscaling import DOWN_WINDOW_S, ENDPOINT, ENDPOINTS, NAME, deploy, replicas
from .test_faults import _replicas
from .test_operator import GROUP, PLURAL, VERSION, apply, example, get, ready
from .testenv_control import frozen


def _network_policies(kube_api: client.ApiClient, namespace: str) -> list[str]:
    items = client.NetworkingV1Api(kube_api).list_namespaced_network_policy(namespace).items
    return [p.metadata.name for p in items]


def test_fail_over_and_fail_back_inside_a_scale_down_window(
    kubeconfig_path: Path,
    kube_api: client.ApiClient,
    namespace: str,
    operator: Operator,
    tmp_path: Path,
) -> None:
    """`low` acts first and is outranked by `high` (its record dropped); `high` scales up,
    adds a NetworkPolicy and dies inside the scale-down window, and the policy is dropped from
    the spec meanwhile. `low` resumes: the window comes from the history `high` persisted in
    status (not `low`'s older memory), and the NetworkPolicy is pruned."""
    sim = VllmMetricsSim()
    prometheus = Prometheus(sim.port, {"namespace": namespace, "llmdeploy_io_deployment": NAME})
    prometheus.start()
    endpoints = {ENDPOINTS: json.dumps({ENDPOINT: {"url": prometheus.url}})}
    low_settings = {"LLMDEPLOY_PRIORITY": "1", **endpoints}
    high_settings = {"LLMDEPLOY_PRIORITY": "2", **endpoints}
    try:
        with _replicas(operator, kubeconfig_path, tmp_path, low_settings, high_settings) as (
            _,
            (low, high),
        ):
            low.start()
            deploy(kubeconfig_path, namespace)
            wait_until(
                lambda: (get(kube_api, namespace, NAME).get("status") or {}).get("autoscaler"),
                what="low's first decisions, at no load",
                timeout=90,
            )
            high.start()
            wait_until(lambda: "work paused" in low.logs(), what="low outranked", timeout=60)

            sim.set_load(running=12, waiting=0)
            wait_until(
                lambda: replicas(kube_api, namespace) == 3, what="high scaled up", timeout=90
            )
            custom = client.CustomObjectsApi(kube_api)
            enable = {"spec": {"networkPolicy": {"enabled": True}}}
            custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, NAME, enable)
            wait_until(
                lambda: _network_policies(kube_api, namespace) == [NAME],
                what="high added the NetworkPolicy",
                timeout=60,
            )
            sim.set_load(running=0, waiting=0)
            # A low recommendation reaches status, so the history persisted holds both.
            wait_until(
                lambda: (
                    "within the scale-down window"
                    in str(get(kube_api, namespace, NAME)["status"]["autoscaler"])
                ),
                what="high holding inside the window",
                timeout=60,
            )
            quiet = time.monotonic()
            high.kill()
            seen = len(low.logs())
            disable = {"spec": {"networkPolicy": {"enabled": False}}}
            custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, NAME, disable)
            wait_until(lambda: "work resumed" in low.logs()[seen:], what="low resumed", timeout=90)
            wait_until(
                lambda: _network_policies(kube_api, namespace) == [],
                what="the NetworkPolicy pruned after the hand-over",
                timeout=60,
            )
            wait_until(
                lambda: replicas(kube_api, namespace) == 1,
                what="scale-down after the window",
                timeout=120,
            )
            # Not before the window that began with high's last high recommendation.
            assert time.monotonic() - quiet >= DOWN_WINDOW_S - 10
    finally:
        prometheus.close()
        sim.close()


def test_api_server_frozen_for_a_minute_mid_reconcile(
    kubeconfig_path: Path,
    kube_api: client.ApiClient,
    namespace: str,
    operator: Operator,
    tmp_path: Path,
) -> None:
    """kube-apiserver SIGSTOPped for 60 s while a change is being reconciled: liveness reports
    the stall while it is frozen and recovers after, and the change converges."""
    health = free_port()
    operator.stop()
    frozen_operator = Operator(
        operator.kubeconfig,
        tmp_path,
        LLMDEPLOY_HEALTH_PORT=str(health),
        LLMDEPLOY_REQUEST_TIMEOUT_SECONDS="5",
        LLMDEPLOY_CONNECT_TIMEOUT_SECONDS="3",
        LLMDEPLOY_STALL_SECONDS="20",
    )
    frozen_operator.start()
    try:
        wait_until(lambda: healthy(health), what="healthy", timeout=60)
        assert apply(kubeconfig_path, namespace, example("llama-3.1-8b-l4")).returncode == 0
        custom = client.CustomObjectsApi(kube_api)
        wait_until(lambda: ready(kube_api, namespace, "llama-8b"), what="Ready", timeout=120)
        patch = {"spec": {"workload": {"maxContextLength": 4096}}}
        custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "llama-8b", patch)
        stalled = False
        with frozen("kube-apiserver"):
            start = time.monotonic()
            while time.monotonic() - start < 60:
                stalled = stalled or not healthy(health)
                time.sleep(2)
        assert stalled, "liveness never reported the frozen API server"
        wait_until(lambda: healthy(health), what="liveness recovered", timeout=120)

        def converged() -> bool:
            obj = ready(kube_api, namespace, "llama-8b")
            return bool(obj and obj["status"]["plan"]["maxContextLength"] == 4096)

        wait_until(converged, what="the change converged", timeout=180)
        assert frozen_operator.process is not None and frozen_operator.process.poll() is None
    finally:
        frozen_operator.stop()
        operator.start()
