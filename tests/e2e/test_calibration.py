"""Calibration and recommendation in the operator, from a real Prometheus scraping a simulated
vLLM engine: latency 30% above what the sizing model predicts for the measured load, then twice
the planned prompt length, then Prometheus stopped."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from llmdeploy.api.types import LLMDeployment
from llmdeploy.catalog import load_catalog
from llmdeploy.sizing import Plan, performance_at

from .e2e_support import wait_until
from .operator_harness import REPO_ROOT, Operator
from .prometheus_harness import Prometheus
from .test_measure import FAST_TTFT_S, Traffic, deploy, events, served, status, turns

__all__ = ["served"]  # the fixture, shared with test_measure
SLOWER = 1.3  # the engine against the model


def slower_than_predicted(spec: dict[str, Any], plan: dict[str, Any]) -> tuple[float, float]:
    """(TTFT, gap between tokens) 30% above the model's prediction at the load they make: two
    requests of 1024 + 256 tokens finishing per second on one replica hold, by Little's law,
    2 x (TTFT + 255 gaps) requests in the engine, and the prediction depends on that."""
    resource = LLMDeployment.model_validate(
        {"apiVersion": "llmdeploy.io/v1alpha1", "kind": "LLMDeployment", "spec": spec}
    )
    catalog = load_catalog()
    concurrency, latency = 8, (0.0, 0.0)
    for _ in range(20):
        predicted = performance_at(
            resource.spec,
            catalog,
            Plan.model_validate(plan),
            concurrency=concurrency,
            input_tokens=1024,
            output_tokens=256,
        )
        assert predicted is not None
        latency = (SLOWER * predicted.ttft_s, SLOWER * predicted.tpot_s)
        settled = max(1, round(2 * (latency[0] + 255 * latency[1])))
        if settled == concurrency:
            break
        concurrency = settled
    return latency


def test_calibration_converges_drift_brings_a_recommendation_and_stale_data_none(
    kubeconfig_path: Path,
    kube_api: client.ApiClient,
    namespace: str,
    operator: Operator,
    served: tuple[Traffic, Prometheus],
) -> None:
    traffic, prometheus = served
    deploy(kubeconfig_path, namespace)
    plan = wait_until(lambda: status(kube_api, namespace).get("plan"), what="a plan", timeout=60)
    spec = yaml.safe_load((REPO_ROOT / "examples" / "llama-3.1-8b-l4.yaml").read_text())["spec"]
    traffic.ttft_s, traffic.gap_s = slower_than_predicted(spec, plan)

    # The smoothed ratios reach 1.3 within 10%, once the window holds only the slower traffic.
    def converged() -> dict[str, Any] | None:
        found = status(kube_api, namespace).get("calibration") or {}
        ratios = (found.get("ttftRatio", 0), found.get("tpotRatio", 0))
        return found if all(abs(r / SLOWER - 1) <= 0.10 for r in ratios) else None

    calibration = wait_until(converged, what="calibration within 10% of 1.3", timeout=120)
    assert calibration["measurements"] >= 1
    # The recommendation is made with it (within its 25% band of the latest ratios).
    recommended = status(kube_api, namespace)["recommendation"]
    assert abs(recommended["basis"]["tpotRatio"] / calibration["tpotRatio"] - 1) <= 0.25 + 1e-9
    assert recommended["basis"]["inputTokens"] == 1024
    # Every gap of the slower traffic exceeds the 60 ms TPOT target: SLOMet is False for it.
    if traffic.gap_s > 0.060:
        assert turns(kube_api, namespace, "SLOMet", "False")["reason"] == "TargetMissed"

    # Twice the planned prompt: PlanDrift, with a recommendation for the measured workload.
    traffic.input_tokens = 2048
    turns(kube_api, namespace, "PlanDrift", "True")
    remade = wait_until(
        lambda: (
            (r := status(kube_api, namespace).get("recommendation"))
            and r["basis"]["inputTokens"] > 1500
            and r
        ),
        what="a recommendation for the longer prompts",
        timeout=60,
    )
    assert remade["since"] >= recommended["since"]
    drift_events = [e.message for e in events(kube_api, namespace, "PlanDrift")]
    assert any(m.startswith("PlanDrift=True") for m in drift_events)
    if not remade["sameAsRunning"]:
        wait_until(
            lambda: events(kube_api, namespace, "Recommended"),
            what="a Recommended event",
            timeout=30,
        )

    # Prometheus stopped: nothing is recommended from stale data; the calibration stays.
    prometheus.stop()
    wait_until(
        lambda: "recommendation" not in status(kube_api, namespace),
        what="the recommendation withdrawn",
        timeout=60,
    )
    assert status(kube_api, namespace)["calibration"]["measurements"] >= calibration["measurements"]


@pytest.mark.parametrize("served", [FAST_TTFT_S], indirect=True)
def test_noisy_steady_traffic_changes_the_recommendation_at_most_once(
    kubeconfig_path: Path,
    kube_api: client.ApiClient,
    namespace: str,
    operator: Operator,
    served: tuple[Traffic, Prometheus],
) -> None:
    """Thirty measurements of steady traffic whose latency and prompt length vary by +-15%
    from second to second (30 minutes at a measurement a minute, here one every 2 s): the
    first recommendation, and at most one change of it."""
    traffic, _ = served
    traffic.noise = 0.15
    deploy(kubeconfig_path, namespace)
    first = wait_until(
        lambda: status(kube_api, namespace).get("recommendation"),
        what="a first recommendation",
        timeout=90,
    )
    # Made for the traffic's 2 requests/s, though the first window began before the engines
    # did (counted over the seconds since they began, not over the whole window).
    assert abs(first["basis"]["requestsPerSecond"] / traffic.per_second - 1) <= 0.15, first
    made: list[str] = []
    seen: list[str] = []  # each recommendation with what it was made for, shown on failure
    ends: set[str] = set()
    deadline = time.monotonic() + 120
    while len(ends) < 30 and time.monotonic() < deadline:
        now = status(kube_api, namespace)
        ends.add(now["observed"]["end"])
        recommendation = now.get("recommendation") or {}
        since = recommendation.get("since", "none")
        if not made or made[-1] != since:
            made.append(since)
            calibration = now.get("calibration") or {}
            seen.append(
                f"{since}: {recommendation.get('summary')} basis {recommendation.get('basis')} "
                f"calibration {calibration.get('measurements')} measurement(s) "
                f"observed {now['observed'].get('end')}"
            )
        time.sleep(0.5)
    assert len(ends) >= 20, f"only {len(ends)} measurements"
    assert "none" not in made  # every measurement was full: never withdrawn
    assert len(made) <= 2, "\n".join(seen)
    assert len(events(kube_api, namespace, "Recommended")) <= len(made)
