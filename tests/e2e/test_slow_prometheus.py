"""One slow Prometheus endpoint delays only the objects that name it: healthy objects reading a
real Prometheus keep being measured and autoscaled at their rate while more objects than the
operator has workers name an endpoint that drips a byte every few seconds and never finishes,
and others one that answers each query within its deadline, but late. The same test measures
the healthy objects' rate without, then with, the slow objects (ratios within one run)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from .e2e_support import KWOK_TOLERATION, wait_until
from .operator_harness import REPO_ROOT, Operator, kubectl
from .prometheus_harness import Prometheus, SlowAnswerServer, SlowDripServer, VllmMetricsSim

GROUP, VERSION, PLURAL = "llmdeploy.io", "v1alpha1", "llmdeployments"
WORKERS = 2
HEALTHY = [f"healthy-{n}" for n in range(3)]
SLOW = [f"slow-{n}" for n in range(WORKERS + 1)]  # more than the workers
SLUGGISH = [f"sluggish-{n}" for n in range(WORKERS)]
PHASE_S = 60.0
# 4 running requests per replica: 4 -> 1 replica, 12 -> 3.
IDLE_LOAD, BUSY_LOAD = 4, 12
ENDPOINTS = "LLMDEPLOY_PROMETHEUS_ENDPOINTS"


@dataclass
class Tally:
    """What each object's status showed over a phase: the distinct ends of status.observed
    (one per measurement) and every spec.replicas seen."""

    measurements: dict[str, set[str]] = field(default_factory=dict)
    replicas: dict[str, set[int]] = field(default_factory=dict)


@dataclass
class Setup:
    sim: VllmMetricsSim
    prometheus: Prometheus
    drip: SlowDripServer
    late: SlowAnswerServer


@pytest.fixture
def endpoints(namespace: str, operator: Operator) -> Iterator[Setup]:
    """Endpoint `healthy`: a real Prometheus scraping one vLLM-compatible sim under each
    healthy object's labels; endpoint `slow`: the drip; `sluggish`: answers 4 s late, within
    the operator's 5 s deadline. The operator restarts with them, 2 s measurements and few
    workers, and again without them at the end."""
    sim = VllmMetricsSim()
    sim.set_load(running=IDLE_LOAD, waiting=0)
    labels = [{"namespace": namespace, "llmdeploy_io_deployment": n} for n in HEALTHY]
    prometheus = Prometheus(sim.port, labels[0])
    prometheus.start()
    for more in labels[1:]:
        prometheus.add_target(sim.port, more)
    drip = SlowDripServer(gap_s=2.5)
    late = SlowAnswerServer(after_s=4)
    before = dict(operator.settings)
    named = json.loads(operator.settings.get(ENDPOINTS) or "{}")
    named |= {
        "healthy": {"url": prometheus.url},
        "slow": {"url": drip.url},
        "sluggish": {"url": late.url},
    }
    operator.stop()
    operator.settings.update(
        {
            ENDPOINTS: json.dumps(named),
            "LLMDEPLOY_WORKERS": str(WORKERS),
            "LLMDEPLOY_MEASURE_INTERVAL_SECONDS": "2",
            "LLMDEPLOY_MEASURE_WINDOW": "20s",
        }
    )
    operator.start()
    try:
        yield Setup(sim, prometheus, drip, late)
    finally:
        operator.stop()
        drip.close()
        late.close()
        prometheus.close()
        sim.close()
        operator.settings.clear()
        operator.settings.update(before)
        operator.start()


def deploy(kubeconfig: Path, namespace: str, name: str, endpoint: str) -> None:
    body = yaml.safe_load((REPO_ROOT / "examples" / "llama-3.1-8b-l4.yaml").read_text())
    body["metadata"]["name"] = name
    spec = body["spec"]
    spec["placement"] = {"allowedGpus": ["nvidia-l40s"], "tolerations": [KWOK_TOLERATION]}
    spec["workload"].pop("requestsPerSecond")
    spec["replicas"] = 1
    policy = {"type": "Pods", "value": 4, "periodSeconds": 15}
    now = {"stabilizationWindowSeconds": 0, "policies": [policy]}  # either way, at once
    spec["scaling"] = {
        "mode": "operator",
        "minReplicas": 1,
        "maxReplicas": 4,
        "prometheus": endpoint,
        "metrics": [{"type": "runningRequests", "target": 4}],
        "behavior": {"scaleUp": now, "scaleDown": now},
    }
    applied = kubectl(kubeconfig, "-n", namespace, "apply", "-f", "-", stdin=yaml.safe_dump(body))
    assert applied.returncode == 0, applied.stderr


def objects(api: client.ApiClient, namespace: str) -> dict[str, dict[str, Any]]:
    listed = client.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL
    )
    return {o["metadata"]["name"]: o for o in listed["items"]}


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    found = [c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_]
    return found[0] if found else {}


def tally_phase(api: client.ApiClient, namespace: str, sim: VllmMetricsSim) -> Tally:
    """A minute of the healthy objects: idle load, then busy after a quarter of it. Status is
    listed every half second (measurements are 2 s apart)."""
    tally = Tally({n: set() for n in HEALTHY}, {n: set() for n in HEALTHY})
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.5):
            for name, obj in objects(api, namespace).items():
                if name in tally.measurements:
                    end = ((obj.get("status") or {}).get("observed") or {}).get("end")
                    if end:
                        tally.measurements[name].add(end)
                    tally.replicas[name].add(int(obj["spec"].get("replicas") or 0))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    time.sleep(PHASE_S / 4)
    sim.set_load(running=BUSY_LOAD, waiting=0)
    time.sleep(PHASE_S * 3 / 4)
    stop.set()
    watcher.join(timeout=30)
    return tally


def back_to_idle(api: client.ApiClient, namespace: str, sim: VllmMetricsSim) -> None:
    sim.set_load(running=IDLE_LOAD, waiting=0)
    wait_until(
        lambda: all(
            int(o["spec"].get("replicas") or 0) == 1
            for n, o in objects(api, namespace).items()
            if n in HEALTHY
        ),
        what="the healthy objects back at 1 replica",
        timeout=120,
    )


def test_slow_endpoints_delay_only_the_objects_that_name_them(
    kubeconfig_path: Path,
    kube_api: client.ApiClient,
    namespace: str,
    operator: Operator,
    endpoints: Setup,
) -> None:
    for name in HEALTHY:
        deploy(kubeconfig_path, namespace, name, "healthy")

    def all_measured_and_read() -> bool:
        found = objects(kube_api, namespace)
        return all(
            (found.get(n, {}).get("status") or {}).get("observed")
            and condition(found[n], "MetricsAvailable").get("status") == "True"
            for n in HEALTHY
        )

    wait_until(all_measured_and_read, what="the healthy objects measured", timeout=120)

    alone = tally_phase(kube_api, namespace, endpoints.sim)
    back_to_idle(kube_api, namespace, endpoints.sim)

    for name in SLOW:
        deploy(kubeconfig_path, namespace, name, "slow")
    for name in SLUGGISH:
        deploy(kubeconfig_path, namespace, name, "sluggish")

    def slow_reported() -> dict[str, dict[str, Any]] | None:
        """Every slow object's conditions, once they say why: a timeout, or answers too slow
        (an object reading the late endpoint after its rest gets one answer, no series)."""
        found = objects(kube_api, namespace)
        told = {n: found.get(n, {}) for n in SLOW + SLUGGISH}
        why = {**dict.fromkeys(SLOW, "timed out"), **dict.fromkeys(SLUGGISH, "too slow")}
        failing = all(
            condition(o, "MetricsAvailable").get("status") == "False"
            and condition(o, "SLOMet").get("status") == "Unknown"
            and why[n] in condition(o, "SLOMet").get("message", "")
            for n, o in told.items()
        )
        return told if failing else None

    slow = wait_until(slow_reported, what="the slow objects' conditions", timeout=180)
    beside = tally_phase(kube_api, namespace, endpoints.sim)
    reconciles = operator.reconciles()

    print("measurements alone:", {n: len(e) for n, e in alone.measurements.items()})
    print("measurements beside the slow ones:", {n: len(e) for n, e in beside.measurements.items()})
    print("replicas seen alone / beside:", alone.replicas, beside.replicas, reconciles)

    for name in HEALTHY:
        # Measured every interval when alone (a minute of 2 s intervals), and at no less than
        # half that rate beside the slow objects.
        assert len(alone.measurements[name]) >= 10, alone.measurements
        assert len(beside.measurements[name]) >= len(alone.measurements[name]) / 2, (
            name,
            len(alone.measurements[name]),
            len(beside.measurements[name]),
        )
        # The load step was followed by a scale-up in both phases.
        assert 3 in alone.replicas[name], alone.replicas
        assert 3 in beside.replicas[name], beside.replicas

    # The drip's objects say a timeout, and none says anything the server sent.
    for name, obj in slow.items():
        if name in SLOW:
            metrics_available = condition(obj, "MetricsAvailable")
            assert "timed out" in metrics_available["message"], (name, metrics_available)
        assert condition(obj, "SLOMet")["reason"] == "NotMeasured"
        assert "DD" not in json.dumps(obj["status"])
    assert "DD" not in operator.logs()
