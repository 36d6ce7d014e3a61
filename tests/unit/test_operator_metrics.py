"""The per-LLMDeployment gauges: set from the status the reconciler writes, labelled by the
plan, gone with the object (deleted, dropped by a relist, or this replica no longer acting)
and never left behind under an old plan's labels."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Literal

import pytest
from prometheus_client import REGISTRY

from llmdeploy.api.status import Calibration, Condition, LLMDeploymentStatus, Recommendation
from llmdeploy.controller import metrics
from llmdeploy.controller.reconciler import Reconciler
from tests.unit import test_reconciler
from tests.unit.conftest import body
from tests.unit.test_reconciler import KEY, Cluster

SPEC = {
    "workload": {"requestsPerSecond": 2, "inputTokens": 1024, "outputTokens": 256},
    "slo": {"ttftMs": 1500, "tpotMs": 60},
}


@pytest.fixture(autouse=True)
def no_series_left() -> Iterator[None]:
    metrics.DEPLOYMENTS.clear()
    yield
    metrics.DEPLOYMENTS.clear()


def samples(name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample of a metric, by its labels."""
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in REGISTRY.collect()
        for s in family.samples
        if s.name == name
    }


def one(name: str, **labels: str) -> float:
    found = [v for k, v in samples(name).items() if dict(k).items() >= labels.items()]
    assert len(found) == 1, (name, labels, samples(name))
    return found[0]


reconciler = test_reconciler.reconciler  # the fixture, with this module's cluster


@pytest.fixture
def cluster() -> Cluster:
    made = Cluster()
    made.body = body(**copy.deepcopy(SPEC))
    return made


def test_the_gauges_say_what_the_written_status_says(
    reconciler: Reconciler, cluster: Cluster
) -> None:
    assert reconciler._reconcile_one(KEY)[0] == "success"
    status = cluster.body["status"]
    plan = status["plan"]
    labels = {
        "namespace": "ns",
        "llmdeployment": "m",
        "gpu": status["gpu"],
        "quantization": status["quantization"],
        "engine": "vllm",
    }
    replicas = status["replicas"]
    assert one("llmdeploy_plan_replicas", **labels) == replicas
    assert one("llmdeploy_plan_gpus", **labels) == status["gpuCount"] * replicas
    assert one("llmdeploy_plan_cost_per_hour_usd", **labels) == float(status["costPerHour"])
    assert one("llmdeploy_plan_replica_cost_per_hour_usd", **labels) * replicas == pytest.approx(
        float(status["costPerHour"])
    )
    assert (
        one("llmdeploy_plan_cost_per_million_output_tokens_usd", **labels)
        == (plan["costPerMillionTokens"])
    )
    assert one("llmdeploy_plan_ttft_seconds", **labels) == plan["estimatedTtftMs"] / 1000
    assert one("llmdeploy_plan_tpot_seconds", **labels) == plan["estimatedTpotMs"] / 1000
    assert one("llmdeploy_plan_requests_per_second", **labels) == 2
    assert one("llmdeploy_slo_ttft_seconds", **labels) == 1.5
    assert one("llmdeploy_slo_tpot_seconds", **labels) == 0.06
    # The planner chose the fewest replicas that serve 2 requests/s: one fewer would not.
    capacity = one("llmdeploy_plan_capacity_requests_per_second", **labels)
    assert capacity >= 2 * 0.999
    assert capacity * (replicas - 1) / replicas < 2
    # No Prometheus configured: both conditions Unknown, one series per status.
    assert (
        status["conditions"]
        and {c["type"]: c["status"] for c in status["conditions"]}.items()
        >= {"SLOMet": "Unknown", "PlanDrift": "Unknown"}.items()
    )
    for name in ("llmdeploy_slo_met", "llmdeploy_plan_drift"):
        assert {dict(k)["status"]: v for k, v in samples(name).items()} == {
            "True": 0,
            "False": 0,
            "Unknown": 1,
        }


def test_a_deleted_object_leaves_no_series(reconciler: Reconciler, cluster: Cluster) -> None:
    reconciler._reconcile_one(KEY)
    assert samples("llmdeploy_plan_replicas")
    reconciler.object_event("DELETED", copy.deepcopy(cluster.body))
    for gauge in (*metrics.PLAN_GAUGES.values(), *metrics.CONDITION_GAUGES.values()):
        assert samples(gauge._name) == {}, gauge._name


def test_an_update_that_raced_the_deletion_is_dropped_at_the_next_resync(
    reconciler: Reconciler, cluster: Cluster
) -> None:
    reconciler._reconcile_one(KEY)
    metrics.DEPLOYMENTS.retain(reconciler.index.keys)  # a live object keeps its series
    assert samples("llmdeploy_plan_replicas")
    written = LLMDeploymentStatus.model_validate(cluster.body["status"])
    reconciler.object_event("DELETED", copy.deepcopy(cluster.body))
    # A worker that read the object before the deletion writes its gauges after it.
    metrics.DEPLOYMENTS.update(*KEY, cluster.body, written)
    assert samples("llmdeploy_plan_replicas")
    metrics.DEPLOYMENTS.retain(reconciler.index.keys)  # what each resync does
    assert samples("llmdeploy_plan_replicas") == {}
    assert samples("llmdeploy_plan_drift") == {}


def test_an_object_a_relist_no_longer_finds_leaves_no_series(
    reconciler: Reconciler, cluster: Cluster
) -> None:
    reconciler._reconcile_one(KEY)
    cluster.llmdeployment_keys = lambda namespaces: set()  # type: ignore[attr-defined]
    cluster.children = lambda namespaces: {}  # type: ignore[attr-defined]
    cluster.names = lambda namespaces: {}  # type: ignore[attr-defined]
    reconciler.relist()
    assert samples("llmdeploy_plan_replicas") == {}
    assert samples("llmdeploy_slo_met") == {}


def test_a_replica_that_stops_acting_exports_nothing(
    reconciler: Reconciler, cluster: Cluster
) -> None:
    reconciler._reconcile_one(KEY)
    reconciler.peering_changed(False)
    assert samples("llmdeploy_plan_cost_per_hour_usd") == {}


def test_an_invalid_spec_exports_nothing(reconciler: Reconciler, cluster: Cluster) -> None:
    cluster.body["spec"]["model"]["name"] = "no/such-model-anywhere"
    reconciler.object_event("MODIFIED", copy.deepcopy(cluster.body))
    reconciler._reconcile_one(KEY)
    assert cluster.body["status"]["phase"] == "Failed"
    assert samples("llmdeploy_plan_replicas") == {}


def status_of(
    gpu: str, slo_met: Literal["True", "False", "Unknown"], **plan: object
) -> LLMDeploymentStatus:
    return LLMDeploymentStatus(
        gpu=gpu,
        gpu_count=1,
        quantization="fp8",
        replicas=2,
        cost_per_hour="1.60",
        plan={
            "feasible": True,
            "engine": "vllm",
            "replicas": 2,
            "costPerHour": 1.6,
            "estimatedTtftMs": 200.0,
            "estimatedTpotMs": 40.0,
            "estimatedTokensPerSecond": 400.0,
            **plan,
        },
        conditions=[Condition(type="SLOMet", status=slo_met, reason="x")],
    )


def test_a_new_plan_moves_the_series_to_its_labels_and_drops_what_it_lacks() -> None:
    deployment = body(workload={"outputTokens": 100}, slo={"ttftMs": 500})
    metrics.DEPLOYMENTS.update("ns", "m", deployment, status_of("nvidia-l4", "False"))
    # 400 tokens/s x 0.04 s = a batch of 16 requests, each 0.2 + 100 x 0.04 = 4.2 s long.
    assert one("llmdeploy_plan_capacity_requests_per_second") == pytest.approx(2 * 16 / 4.2)
    assert one("llmdeploy_plan_replica_cost_per_hour_usd") == pytest.approx(0.8)
    assert one("llmdeploy_slo_met", status="False") == 1
    assert one("llmdeploy_slo_met", status="True") == 0
    assert one("llmdeploy_plan_drift", status="Unknown") == 1  # absent from status
    assert samples("llmdeploy_plan_requests_per_second") == {}  # the spec sets no rate

    metrics.DEPLOYMENTS.update(
        "ns", "m", deployment, status_of("nvidia-a10g", "True", estimatedTtftMs=None)
    )
    assert {dict(k)["gpu"] for k in samples("llmdeploy_plan_replicas")} == {"nvidia-a10g"}
    assert {dict(k)["gpu"] for k in samples("llmdeploy_slo_met")} == {"nvidia-a10g"}
    assert one("llmdeploy_slo_met", status="True") == 1
    assert samples("llmdeploy_plan_ttft_seconds") == {}
    assert samples("llmdeploy_plan_capacity_requests_per_second") == {}

    # The same labels with a figure gone: that series goes, the others stay.
    metrics.DEPLOYMENTS.update(
        "ns",
        "m",
        deployment,
        status_of("nvidia-a10g", "True", estimatedTtftMs=None, costPerHour=None),
    )
    assert samples("llmdeploy_plan_replica_cost_per_hour_usd") == {}
    assert one("llmdeploy_plan_replicas") == 2


def test_calibration_and_recommendation_are_gauges_while_status_has_them() -> None:
    deployment = body(workload={"outputTokens": 100}, slo={"ttftMs": 500})
    plain = status_of("nvidia-l4", "True")
    metrics.DEPLOYMENTS.update("ns", "m", deployment, plain)
    assert samples("llmdeploy_calibration_ttft_ratio") == {}
    measured = plain.model_copy(
        update={
            "calibration": Calibration(ttft_ratio=1.3, tpot_ratio=1.25, measurements=4),
            "recommendation": Recommendation.model_validate(
                {
                    "feasible": True,
                    "summary": "nvidia-l4 x1",
                    "costPerHourChange": -0.8,
                    "sameAsRunning": False,
                    "basis": BASIS,
                    "measured": BASIS,
                    "since": "2026-12-05T20:00:00Z",
                }
            ),
        }
    )
    metrics.DEPLOYMENTS.update("ns", "m", deployment, measured)
    assert one("llmdeploy_calibration_ttft_ratio") == 1.3
    assert one("llmdeploy_calibration_tpot_ratio") == 1.25
    assert one("llmdeploy_recommendation_cost_per_hour_change_usd") == -0.8
    metrics.DEPLOYMENTS.update("ns", "m", deployment, plain)  # Prometheus gone: withdrawn
    assert samples("llmdeploy_recommendation_cost_per_hour_change_usd") == {}


BASIS = {"requestsPerSecond": 2, "inputTokens": 1024, "outputTokens": 256}
