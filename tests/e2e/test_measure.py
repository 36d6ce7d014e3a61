"""The operator measures: status.observed, SLOMet and PlanDrift from a real Prometheus scraping
a simulated vLLM engine that serves steady traffic, on a short measurement interval and window.
Latency above the SLO, then within it, then Prometheus stopped."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from .e2e_support import KWOK_TOLERATION, wait_until
from .operator_harness import REPO_ROOT, Operator, kubectl
from .prometheus_harness import Prometheus, VllmMetricsSim

GROUP, VERSION, PLURAL = "llmdeploy.io", "v1alpha1", "llmdeployments"
NAME = "measured"
SETTINGS = {
    "LLMDEPLOY_MEASURE_INTERVAL_SECONDS": "2",
    "LLMDEPLOY_MEASURE_WINDOW": "20s",
}
# The example's workload and SLO: 2 requests/s of 1024 + 256 tokens, TTFT 1500 ms, TPOT 60 ms.
SLOW_TTFT_S, FAST_TTFT_S, GAP_S = 3.0, 0.3, 0.04


class Traffic:
    """Two requests finish every second, with the TTFT the test sets (a thread)."""

    def __init__(self, sim: VllmMetricsSim) -> None:
        self.sim = sim
        self.ttft_s = SLOW_TTFT_S
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.wait(1.0):
            self.sim.finish(
                2, ttft_s=self.ttft_s, gap_s=GAP_S, input_tokens=1024, output_tokens=256
            )

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)


@pytest.fixture
def served(namespace: str, operator: Operator) -> Iterator[tuple[Traffic, Prometheus]]:
    """A Prometheus scraping the engine, as the operator's default endpoint; the operator
    restarts with it and a short measurement interval, and again without them at the end."""
    sim = VllmMetricsSim()
    prometheus = Prometheus(sim.port, {"namespace": namespace, "llmdeploy_io_deployment": NAME})
    prometheus.start()
    traffic = Traffic(sim)
    changed = {**SETTINGS, "LLMDEPLOY_PROMETHEUS_URL": prometheus.url}
    operator.stop()
    operator.settings.update(changed)
    operator.start()
    try:
        yield traffic, prometheus
    finally:
        traffic.close()
        prometheus.close()
        sim.close()
        operator.stop()
        for key in changed:
            operator.settings.pop(key, None)
        operator.start()


def deploy(kubeconfig: Path, namespace: str) -> None:
    body = yaml.safe_load((REPO_ROOT / "examples" / "llama-3.1-8b-l4.yaml").read_text())
    body["metadata"]["name"] = NAME
    body["spec"]["placement"]["tolerations"] = [KWOK_TOLERATION]
    body["spec"]["replicas"] = 1
    result = kubectl(kubeconfig, "-n", namespace, "apply", "-f", "-", stdin=yaml.safe_dump(body))
    assert result.returncode == 0, result.stderr


def status(api: client.ApiClient, namespace: str) -> dict[str, Any]:
    obj = client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, NAME
    )
    return obj.get("status") or {}  # type: ignore[no-any-return]


def condition(api: client.ApiClient, namespace: str, type_: str) -> dict[str, Any]:
    found = [c for c in status(api, namespace).get("conditions") or [] if c["type"] == type_]
    return found[0] if found else {}


def events(api: client.ApiClient, namespace: str, reason: str) -> list[client.CoreV1Event]:
    listed = client.CoreV1Api(api).list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={NAME},reason={reason}"
    )
    return list(listed.items)


def told(api: client.ApiClient, namespace: str, reason: str, wanted: set[str]) -> list[str]:
    """The messages' heads ("SLOMet=False") of the events with this reason, once every wanted
    head is among them: events are posted after the status write that the test saw."""

    def all_there() -> list[str] | None:
        heads = [e.message.split(" (")[0] for e in events(api, namespace, reason)]
        return heads if wanted <= set(heads) else None

    return wait_until(all_there, what=f"{reason} events {sorted(wanted)}", timeout=30)  # type: ignore[no-any-return]


def turns(api: client.ApiClient, namespace: str, type_: str, to: str) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        found = condition(api, namespace, type_)
        return found if found.get("status") == to else None

    return wait_until(reached, what=f"{type_}={to}", timeout=90)  # type: ignore[no-any-return]


def test_slo_met_follows_the_measured_latency_and_prometheus_going_away(
    kubeconfig_path: Path,
    kube_api: client.ApiClient,
    namespace: str,
    operator: Operator,
    served: tuple[Traffic, Prometheus],
) -> None:
    traffic, prometheus = served
    deploy(kubeconfig_path, namespace)

    # TTFT 3 s against a target of 1.5 s: not one request meets it.
    missed = turns(kube_api, namespace, "SLOMet", "False")
    assert missed["reason"] == "TargetMissed"
    assert "TTFT 1500 ms: met by 0.0%, under 95.0%" in missed["message"]
    observed = status(kube_api, namespace)["observed"]
    assert observed["windowSeconds"] == 20
    assert 2.5 < observed["ttftP95Seconds"] <= 5  # the (2.5, 5] bucket
    assert observed["tpotWithinSlo"] == 1.0
    assert observed["inputTokensMean"] == pytest.approx(1024)
    told(kube_api, namespace, "SLOMet", {"SLOMet=False"})
    warned = events(kube_api, namespace, "SLOMet")
    assert [(e.type, e.message.split(" (")[0]) for e in warned] == [("Warning", "SLOMet=False")]
    # The measured workload is the planned one: no drift.
    assert turns(kube_api, namespace, "PlanDrift", "False")["reason"] == "WithinPlan"
    # Ready is the rollout's, whatever the SLO says.
    turns(kube_api, namespace, "Ready", "True")
    assert condition(kube_api, namespace, "SLOMet")["status"] == "False"

    # Measured again and again with the same verdict: still one event. Then within the SLO.
    first_end = observed["end"]
    wait_until(
        lambda: status(kube_api, namespace)["observed"]["end"] != first_end,
        what="a later measurement",
        timeout=30,
    )
    traffic.ttft_s = FAST_TTFT_S
    met = turns(kube_api, namespace, "SLOMet", "True")
    assert met["reason"] == "TargetsMet" and "TTFT 1500 ms: met by" in met["message"]
    assert status(kube_api, namespace)["observed"]["ttftWithinSlo"] >= 0.95
    slo_events = told(kube_api, namespace, "SLOMet", {"SLOMet=False", "SLOMet=True"})
    assert sorted(slo_events) == ["SLOMet=False", "SLOMet=True"]

    # Prometheus stopped: every figure Unknown, and so are both conditions.
    # (While it shuts down, some queries may still be answered: a partial measurement, which
    # is Unknown too.)
    prometheus.stop()
    observed = wait_until(
        lambda: (seen := status(kube_api, namespace)["observed"]).get("requests") is None and seen,
        what="a measurement without Prometheus",
        timeout=60,
    )
    assert "ttftP95Seconds" not in observed and "costPerHour" not in observed
    assert "connection failed" in observed["unknown"]["requests"]
    unknown = condition(kube_api, namespace, "SLOMet")
    assert (unknown["status"], unknown["reason"]) == ("Unknown", "NotMeasured")
    assert condition(kube_api, namespace, "PlanDrift")["status"] == "Unknown"
    told(kube_api, namespace, "SLOMet", {"SLOMet=Unknown"})
