"""decide, the pure half of a reconcile: plans, children, capacity, autoscaling, status."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from llmdeploy.api.status import Observed
from llmdeploy.api.types import LLMDeployment
from llmdeploy.autoscale.decision import AutoscalerState, MetricsReading
from llmdeploy.catalog import Catalog, load_image_lock
from llmdeploy.cluster.objects import LiveChild, PendingPod, WorkloadStatus, workload_status_of
from llmdeploy.controller.decide import decide
from llmdeploy.controller.planning import desired_state, plan_key
from llmdeploy.controller.state import Config, Outcome, Snapshot
from llmdeploy.controller.status import capacity_condition, status_update, stored_exclusions
from llmdeploy.measure.calibration import RATIO_BOUNDS, SMOOTHING, fold, measured_load
from llmdeploy.measure.results import QueryResult, Readings, readings
from llmdeploy.render import HostAccess, PrometheusTarget
from llmdeploy.sizing import LatencyCalibration, Performance, Plan, performance_at, plan_deployment
from llmdeploy.sizing.inventory import GpuNode, Inventory, cluster_catalog
from tests.unit.conftest import GFD, L4_NODES, body
from tests.unit.test_measure import HEALTHY, INF, answer, buckets, vector

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def resource(**spec: object) -> LLMDeployment:
    return LLMDeployment.model_validate(
        {
            "apiVersion": "llmdeploy.io/v1alpha1",
            "kind": "LLMDeployment",
            "metadata": {"name": "m", "namespace": "ns"},
            "spec": {"model": {"name": "meta-llama/Llama-3.1-8B-Instruct"}, **spec},
        }
    )


def test_cluster_view_keeps_present_and_provisionable_skus(catalog: Catalog) -> None:
    view = cluster_catalog(catalog, L4_NODES, set())
    assert sorted(view.gpus) == ["nvidia-l4"]
    assert view.gpus["nvidia-l4"].gpus_per_node == 1  # as the nodes have them
    view = cluster_catalog(catalog, L4_NODES, {"nvidia-h100-80gb"})
    assert sorted(view.gpus) == ["nvidia-h100-80gb", "nvidia-l4"]
    assert cluster_catalog(catalog, L4_NODES, None) is catalog


def test_desired_state_plans_on_the_cluster_and_picks_the_drivers_image(catalog: Catalog) -> None:
    desired = desired_state(resource(), catalog, load_image_lock(), L4_NODES, set())
    assert desired.plan.feasible and desired.plan.gpu == "nvidia-l4"
    workload = next(o for o in desired.objects if o["kind"] == "Deployment")
    image = workload["spec"]["template"]["spec"]["containers"][0]["image"]
    assert ":v0.8.5@" in image  # newest vLLM whose CUDA a 550 driver runs


def test_stored_plan_is_reused_while_inputs_are_unchanged(catalog: Catalog) -> None:
    first = desired_state(resource(), catalog, load_image_lock(), L4_NODES, set())
    # The inventory changed (H100s appeared) but the spec did not: keep the plan, no churn.
    h100 = GpuNode("h100", {GFD: "NVIDIA-H100-80GB-HBM3"}, 8, (570, 124))
    more = Inventory((*L4_NODES.nodes, h100))
    again = desired_state(
        resource(),
        catalog,
        load_image_lock(),
        more,
        set(),
        stored_plan=first.plan,
        stored_key=first.plan_key,
    )
    assert again.plan == first.plan
    changed = desired_state(
        resource(workload={"maxContextLength": 4096}),
        catalog,
        load_image_lock(),
        more,
        set(),
        stored_plan=first.plan,
        stored_key=first.plan_key,
    )
    assert changed.plan_key != first.plan_key


def test_no_allowed_gpu_on_the_cluster_is_an_infeasible_plan(catalog: Catalog) -> None:
    desired = desired_state(
        resource(placement={"gpu": "nvidia-h200-141gb"}),
        catalog,
        load_image_lock(),
        L4_NODES,
        set(),
    )
    assert not desired.plan.feasible and desired.objects == ()
    assert "nvidia-h200-141gb" in desired.plan.reasons[0]


def test_capacity_turns_false_only_after_the_timeout() -> None:
    pod = PendingPod("p", NOW - timedelta(seconds=30), "0/4 nodes: Insufficient nvidia.com/gpu")
    waiting, starved = capacity_condition([pod], NOW, 60, 3)
    assert waiting.status == "True" and waiting.reason == "WaitingForCapacity" and starved is None
    late, starved = capacity_condition([pod], NOW + timedelta(seconds=31), 60, 3)
    assert late.status == "False" and late.reason == "InsufficientGPUs" and starved is pod
    assert "Insufficient nvidia.com/gpu" in late.message


def test_status_keeps_transition_times_and_reports_readiness(catalog: Catalog) -> None:
    r = resource()
    desired = desired_state(r, catalog, load_image_lock(), L4_NODES, set())
    replicas = desired.plan.replicas or 1
    rolling = WorkloadStatus(True, replicas, 0, replicas, True)
    first = status_update(r, 1, desired, rolling, None, None, [], NOW).model_dump(by_alias=True)
    assert first["phase"] == "Progressing"
    done = WorkloadStatus(True, replicas, replicas, replicas, True)
    later = NOW + timedelta(minutes=5)
    second = status_update(r, 1, desired, done, None, None, first["conditions"], later)
    assert second.phase == "Ready" and second.ready_replicas == replicas
    by_type = {c.type: c for c in second.conditions}
    old = {c["type"]: c for c in first["conditions"]}
    assert by_type["Planned"].last_transition_time == old["Planned"]["lastTransitionTime"]
    assert by_type["Available"].last_transition_time != old["Available"]["lastTransitionTime"]
    assert by_type["Ready"].status == "True" and old["Ready"]["status"] == "False"
    assert second.selector == "llmdeploy.io/deployment=m"


def test_a_cloud_label_from_a_catalog_extension_identifies_the_sku(tmp_path: Path) -> None:
    from llmdeploy.catalog import load_catalog

    extension = tmp_path / "gke.yaml"
    extension.write_text(
        yaml.safe_dump(
            {
                "gpus": [
                    {
                        **load_catalog().gpus["nvidia-l4"].model_dump(mode="json", by_alias=True),
                        "nodeLabels": {"cloud.google.com/gke-accelerator": ["nvidia-l4"]},
                    }
                ]
            }
        )
    )
    catalog = load_catalog([extension])
    # A node without GPU Feature Discovery labels, only the cloud's.
    node = GpuNode("gke-l4", {"cloud.google.com/gke-accelerator": "nvidia-l4"}, 1, None)
    inventory = Inventory((node,))
    assert inventory.sku_nodes(catalog, "nvidia-l4") == [node]
    desired = desired_state(resource(), catalog, load_image_lock(), inventory, set())
    assert desired.plan.gpu == "nvidia-l4"
    pod = next(o for o in desired.objects if o["kind"] == "Deployment")["spec"]["template"]
    terms = pod["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    keys = [t["matchExpressions"][0]["key"] for t in terms]
    assert keys == ["nvidia.com/gpu.product", "cloud.google.com/gke-accelerator"]


def test_schedulable_replicas_count_free_gpus_unless_provisionable(catalog: Catalog) -> None:
    from llmdeploy.sizing.inventory import schedulable_replicas

    in_use = {"l4-0": 1, "l4-1": 1}  # two of the four L4s are taken, by our two pods
    assert schedulable_replicas(catalog, L4_NODES, in_use, "nvidia-l4", 1, 1, 2, set()) == 4
    # ... or by someone else's: only the two free ones are ours to take.
    assert schedulable_replicas(catalog, L4_NODES, in_use, "nvidia-l4", 1, 1, 0, set()) == 2
    assert schedulable_replicas(catalog, L4_NODES, {}, "nvidia-l4", 2, 1, 0, set()) == 0
    # A cluster autoscaler can add L4 nodes: no cap, pending pods ask for capacity.
    assert (
        schedulable_replicas(catalog, L4_NODES, in_use, "nvidia-l4", 1, 1, 2, {"nvidia-l4"}) is None
    )
    assert schedulable_replicas(catalog, L4_NODES, in_use, "nvidia-l4", 1, 1, 2, None) is None


def test_spec_hash_is_what_this_plan_s_pods_carry(catalog: Catalog) -> None:
    """Capacity is judged on pods with this hash only: a pod of the previous plan, still
    pending while the rollout removes it, must not make a new plan look starved."""
    short = desired_state(resource(), catalog, load_image_lock(), L4_NODES, set())
    [workload] = [o for o in short.objects if o["kind"] == "Deployment"]
    pods = workload["spec"]["template"]["metadata"]["annotations"]
    assert short.spec_hash == pods["llmdeploy.io/spec-hash"]
    longer = desired_state(
        resource(workload={"maxContextLength": 4096}), catalog, load_image_lock(), L4_NODES, set()
    )
    assert longer.spec_hash != short.spec_hash


# decide() as a whole: a snapshot in, an outcome out, no I/O.

LOCK = load_image_lock()
NO_HOST = HostAccess()
NO_DATA = Readings({}, {})
MEASURED = ("SLOMet", "PlanDrift")


def config(catalog: Catalog, prometheus: bool = True) -> Config:
    endpoints = {"default": PrometheusTarget(url="http://prometheus:9090")} if prometheus else {}
    return Config(catalog, LOCK, set(), endpoints, NO_HOST)


def settled(
    catalog: Catalog,
    b: dict[str, Any],
    ready: int | None = None,
    nodes: Inventory = L4_NODES,
    **extra: Any,
) -> tuple[Snapshot, Outcome]:
    """A first decide, then the snapshot of what its act left: status written, every child
    applied by this process and seen by the watch, `ready` replicas serving."""
    first = complete(Snapshot(b, {}, {}, nodes, NOW), config(catalog))
    assert first.status is not None
    status = first.status.model_dump(mode="json", by_alias=True, exclude_none=True)
    replicas = status["replicas"] if ready is None else ready
    children = {}
    applied = {}
    for obj in first.apply:
        name = (obj["kind"], obj["metadata"]["name"])
        digest = obj["metadata"]["annotations"]["llmdeploy.io/applied-hash"]
        workload = (
            WorkloadStatus(
                True, status["replicas"], replicas, status["replicas"], True, status["replicas"]
            )
            if obj["kind"] == "Deployment"
            else None
        )
        children[name] = LiveChild(f"uid-{name[0]}", "u1", digest, "g1", workload)
        applied[name] = (digest, "g1")
    snap = Snapshot({**b, "status": status}, children, applied, nodes, NOW, first.rendered, **extra)
    # Once the workload exists, a measurement (with no data here) is due; its act writes
    # status.observed and the conditions judged from it.
    measured = complete(snap, config(catalog), metrics=MetricsReading({}))
    if measured.status is not None and measured.status.observed is not None:
        written = measured.status.model_dump(mode="json", by_alias=True, exclude_none=True)
        judged = {c["type"]: c for c in written["conditions"] if c["type"] in MEASURED}
        kept = [c for c in status["conditions"] if c["type"] not in MEASURED]
        status = {
            **status,
            "observed": written["observed"],
            "conditions": [*kept, *judged.values()],
        }
        snap = replace(snap, body={**b, "status": status})
    return snap, first


def complete(snap: Snapshot, cfg: Config, **observed: Any) -> Outcome:
    """Answer decide's needs from `observed` the way the reconcile would observe them."""
    outcome = decide(snap, cfg)
    for _ in range(4):
        if not outcome.needs:
            return outcome
        if outcome.needs.measure is not None:
            snap = replace(snap, measured=observed.get("measured", NO_DATA))
        if outcome.needs.pending_pods:
            snap = replace(snap, pending=observed.get("pending", ()))
        if outcome.needs.queries:
            snap = replace(snap, metrics=observed["metrics"])
        if outcome.needs.gpus_in_use is not None:
            snap = replace(snap, gpus_in_use=observed.get("gpus", ({}, 0)))
        outcome = decide(snap, cfg)
    raise AssertionError(f"still needs {outcome.needs}")


def conditions(outcome: Outcome) -> dict[str, Any]:
    assert outcome.status is not None
    return {c.type: c for c in outcome.status.conditions}


def test_a_new_object_is_planned_applied_and_announced(catalog: Catalog) -> None:
    outcome = decide(Snapshot(body(), {}, {}, L4_NODES, NOW), config(catalog, prometheus=False))
    assert not outcome.needs
    assert {o["kind"] for o in outcome.apply} == {"Deployment", "Service", "PodDisruptionBudget"}
    assert all(o["metadata"]["ownerReferences"][0]["uid"] == "u1" for o in outcome.apply)
    assert [e.reason for e in outcome.events] == ["Planned"]
    assert outcome.status is not None and outcome.status.phase == "Progressing"
    assert conditions(outcome)["Ready"].status == "False"


def test_a_settled_object_reuses_its_plan_and_needs_no_write(catalog: Catalog) -> None:
    snap, first = settled(catalog, body())
    outcome = decide(snap, config(catalog))
    assert outcome.apply == () and outcome.prune == () and outcome.events == ()
    assert outcome.status is not None
    assert outcome.status.plan == snap.body["status"]["plan"]
    assert outcome.status.phase == "Ready" and conditions(outcome)["Ready"].status == "True"
    assert outcome.rendered is first.rendered  # not rendered again


def test_a_child_edited_by_someone_else_or_unknown_to_this_process_is_applied(
    catalog: Catalog,
) -> None:
    snap, _ = settled(catalog, body())
    edited = dict(snap.children)
    service = ("Service", "m")
    edited[service] = replace(edited[service], revision="r99")
    assert [o["kind"] for o in decide(replace(snap, children=edited), config(catalog)).apply] == [
        "Service"
    ]
    restarted = decide(replace(snap, applied={}), config(catalog))  # a new process
    assert len(restarted.apply) == 3


def test_the_prune_set_is_every_owned_child_no_plan_wants(catalog: Catalog) -> None:
    snap, _ = settled(catalog, body())
    children = {
        **snap.children,
        ("ConfigMap", "m-old"): LiveChild("cm1", "u1", "h", "r1", None),
        ("ConfigMap", "m-other"): LiveChild("cm2", "someone-else", "h", "r1", None),
    }
    outcome = decide(replace(snap, children=children), config(catalog))
    assert outcome.prune == ((("ConfigMap", "m-old"), "cm1"),)


def test_an_infeasible_replan_leaves_what_runs_alone(catalog: Catalog) -> None:
    snap, _ = settled(catalog, body())
    edited = body(snap.body["status"], placement={"allowedGpus": ["nvidia-h200-141gb"]})
    outcome = decide(replace(snap, body=edited), config(catalog))
    assert outcome.apply == () and outcome.prune == ()
    assert [e.reason for e in outcome.events] == ["NoFeasiblePlan"]
    assert conditions(outcome)["Planned"].status == "False"


def test_an_invalid_spec_is_a_condition_and_one_event(catalog: Catalog) -> None:
    bad = body(engine={"name": "vllm", "extraArgs": ["--tensor-parallel-size", "2"]})
    outcome = decide(Snapshot(bad, {}, {}, L4_NODES, NOW), config(catalog))
    assert outcome.apply == () and [e.reason for e in outcome.events] == ["InvalidSpec"]
    assert outcome.status is not None and outcome.status.phase == "Failed"
    stored = outcome.status.model_dump(mode="json", by_alias=True, exclude_none=True)
    again = decide(Snapshot({**bad, "status": stored}, {}, {}, L4_NODES, NOW), config(catalog))
    assert again.events == ()  # one event per problem, not one per resync


def test_starved_capacity_waits_until_the_deadline_then_falls_back(catalog: Catalog) -> None:
    b = body(placement={"pendingTimeout": "5m", "fallback": True})
    snap, _ = settled(catalog, b, ready=0)
    outcome = decide(snap, config(catalog))
    assert outcome.needs.pending_pods and outcome.needs.spec_hash is not None
    young = (PendingPod("p", NOW - timedelta(seconds=60), "0/4 nodes have GPUs"),)
    hourly = replace(config(catalog), measure_interval_s=3600)  # the next measurement is later
    waiting = complete(snap, hourly, pending=young)
    assert conditions(waiting)["CapacityAvailable"].reason == "WaitingForCapacity"
    assert waiting.requeue_after_s == 240  # the deadline is a source of its own
    old = (PendingPod("p", NOW - timedelta(seconds=301), "0/4 nodes have GPUs"),)
    starved = complete(snap, config(catalog), pending=old)
    assert starved.status is not None
    assert starved.status.excluded_gpus == ["nvidia-l4"] and starved.status.plan_key is None
    assert [e.reason for e in starved.events] == ["FallbackReplan"]
    assert starved.apply == () and starved.requeue_after_s == 0


def test_no_capacity_verdict_before_the_workload_s_controller_has_acted(catalog: Catalog) -> None:
    """A workload its controller has not yet seen at this generation has no pods to judge:
    no pending pods are asked for, a new object gets no CapacityAvailable (and so its status
    need not be written again between the apply and the rollout), a known one keeps its own."""
    snap, _ = settled(catalog, body(), ready=0)
    unseen = {
        name: replace(live, workload=replace(live.workload, up_to_date=False))
        if live.workload
        else live
        for name, live in snap.children.items()
    }
    fresh = dict(
        snap.body,
        status={
            **snap.body["status"],
            "conditions": [
                c for c in snap.body["status"]["conditions"] if c["type"] != "CapacityAvailable"
            ],
        },
    )
    outcome = decide(replace(snap, body=fresh, children=unseen), config(catalog))
    assert not outcome.needs.pending_pods
    assert "CapacityAvailable" not in conditions(outcome)

    waiting = complete(
        snap, config(catalog), pending=(PendingPod("p", NOW, "0/4 nodes have GPUs"),)
    )
    assert waiting.status is not None
    judged = waiting.status.model_dump(mode="json", by_alias=True, exclude_none=True)
    stored = replace(snap, body={**snap.body, "status": judged}, children=unseen)
    kept = decide(stored, config(catalog))
    assert not kept.needs.pending_pods
    assert conditions(kept)["CapacityAvailable"].reason == "WaitingForCapacity"


def test_a_fallback_records_when_and_the_sku_is_tried_again_after_the_ttl(
    catalog: Catalog,
) -> None:
    cfg = replace(config(catalog), excluded_gpu_ttl_s=3600)
    b = body(placement={"pendingTimeout": "5m", "fallback": True})
    snap, first = settled(catalog, b, ready=0)
    old = (PendingPod("p", NOW - timedelta(seconds=301), "0/4 nodes have GPUs"),)
    starved = complete(snap, cfg, pending=old)
    assert starved.status is not None
    stored = starved.status.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert stored["excludedGpus"] == ["nvidia-l4"]
    assert stored["gpuExclusions"] == [{"gpu": "nvidia-l4", "excludedAt": "2026-11-22T12:00:00Z"}]

    def at(later: timedelta) -> Outcome:
        return complete(replace(snap, body={**b, "status": stored}, now=NOW + later), cfg)

    # Within the TTL: planned without it (here nothing else is left), and back at its end.
    within = at(timedelta(minutes=20))
    assert within.status is not None and within.status.excluded_gpus == ["nvidia-l4"]
    assert within.status.plan is not None and not within.status.plan["feasible"]
    assert within.requeue_after_s == 40 * 60
    assert "ExclusionExpired" not in [e.reason for e in within.events]
    # Past it: planned with it again, which says so.
    expired = at(timedelta(hours=1))
    assert expired.status is not None
    assert expired.status.excluded_gpus == [] and expired.status.gpu_exclusions is None
    assert expired.status.plan_key == first.status.plan_key  # type: ignore[union-attr]
    assert expired.status.gpu == "nvidia-l4"
    reasons = [e.reason for e in expired.events]
    assert reasons == ["ExclusionExpired", "Planned"]
    assert "nvidia-l4 was excluded at 2026-11-22T12:00:00Z" in expired.events[0].message
    assert expired.requeue_after_s == 60  # the next measurement's; no exclusion is left


def test_an_exclusion_without_a_time_counts_from_when_it_is_first_seen(catalog: Catalog) -> None:
    """An older release wrote excludedGpus alone: the TTL starts now, and status records it."""
    b = body({"excludedGpus": ["nvidia-h100-80gb"]})
    outcome = decide(Snapshot(b, {}, {}, L4_NODES, NOW), config(catalog))
    assert outcome.status is not None and outcome.status.gpu_exclusions is not None
    [exclusion] = outcome.status.gpu_exclusions
    assert (exclusion.gpu, exclusion.excluded_at) == ("nvidia-h100-80gb", "2026-11-22T12:00:00Z")
    assert outcome.status.excluded_gpus == ["nvidia-h100-80gb"]
    assert outcome.requeue_after_s == 3600
    assert stored_exclusions(
        {
            "excludedGpus": ["a", "b"],
            "gpuExclusions": [
                {"gpu": "a", "excludedAt": "2026-11-22T11:00:00Z"},
                {"gpu": "b", "excludedAt": "not a time"},
                {"gpu": "c", "excludedAt": "2026-11-22T11:00:00Z"},  # no longer excluded
            ],
        },
        NOW,
    ) == {"a": NOW - timedelta(hours=1), "b": NOW}


def scaling(**extra: Any) -> dict[str, Any]:
    return {
        "mode": "operator",
        "minReplicas": 1,
        "maxReplicas": 8,
        "metrics": [{"type": "queueDepth", "target": 4}],
        **extra,
    }


def test_the_autoscaler_reads_prometheus_then_scales_up_within_free_gpus(
    catalog: Catalog,
) -> None:
    snap, _ = settled(catalog, body(replicas=2, scaling=scaling()))
    needs = decide(snap, config(catalog)).needs
    assert [key for key, _ in needs.queries] == ["queueDepth"]
    assert 'namespace="ns"' in needs.queries[0][1]
    busy = MetricsReading({"queueDepth": 80.0})
    # Two L4 nodes busy with other pods: two more replicas fit.
    outcome = complete(snap, config(catalog), metrics=busy, gpus=({"l4-0": 1, "l4-1": 1}, 2))
    assert outcome.scale_to == 4 and "4" in outcome.scale_reason
    assert outcome.status is not None and outcome.status.autoscaler is not None
    assert outcome.status.autoscaler["desiredReplicas"] == 4
    assert conditions(outcome)["MetricsAvailable"].status == "True"


def test_the_autoscaler_holds_without_data_and_says_why(catalog: Catalog) -> None:
    snap, _ = settled(catalog, body(replicas=2, scaling=scaling()))
    down = MetricsReading({"queueDepth": None}, problem="ConnectionError: refused")
    outcome = complete(snap, config(catalog), metrics=down)
    assert outcome.scale_to is None
    assert conditions(outcome)["MetricsAvailable"].status == "False"
    assert "refused" in (outcome.status.autoscaler or {})["reason"]  # type: ignore[union-attr]
    unset = complete(snap, config(catalog, prometheus=False))
    assert unset.scale_to is None and "no Prometheus" in unset.scale_reason + str(
        (unset.status.autoscaler or {})["reason"]  # type: ignore[union-attr]
    )


def test_history_from_status_wins_after_a_fail_over(catalog: Catalog) -> None:
    """A replica that takes over has no memory: the history the other one persisted in
    status holds the scale-down window, or lets it pass on time."""
    snap, _ = settled(catalog, body(replicas=4, scaling=scaling()))
    idle = MetricsReading({"queueDepth": 0.0})

    def taken_over(recommended: int) -> Snapshot:
        history = AutoscalerState(
            recommendations=[(NOW.timestamp() - 30, recommended)],
            history_since=NOW.timestamp() - 3600,  # readings for longer than any window
        )
        stored = {"state": history.model_dump(mode="json", by_alias=True)}
        status = {**snap.body["status"], "autoscaler": stored}
        return replace(snap, body={**snap.body, "status": status}, autoscaler=None)

    assert complete(taken_over(4), config(catalog), metrics=idle).scale_to is None
    assert complete(taken_over(1), config(catalog), metrics=idle).scale_to == 1
    status = {**snap.body["status"], "autoscaler": {}}
    forgotten = replace(snap, body={**snap.body, "status": status}, autoscaler=None)
    assert complete(forgotten, config(catalog), metrics=idle).scale_to is None  # a new window


@pytest.mark.parametrize(
    "state", [{"recommendations": "garbage"}, {"idleSince": "yesterday"}, "x", [1, 2]]
)
def test_an_unreadable_autoscaler_history_starts_afresh(catalog: Catalog, state: object) -> None:
    """Like a first start (a whole scale-down window before scaling down): a status edited
    by hand or written by another release must not stop the object's reconciles."""
    snap, _ = settled(catalog, body(replicas=4, scaling=scaling()))
    status = {**snap.body["status"], "autoscaler": {"state": state}}
    garbled = replace(snap, body={**snap.body, "status": status}, autoscaler=None)
    outcome = complete(garbled, config(catalog), metrics=MetricsReading({"queueDepth": 0.0}))
    assert outcome.status is not None and outcome.status.autoscaler is not None
    assert outcome.status.autoscaler["state"]["recommendations"]  # a history of its own now
    assert outcome.scale_to is None and "holding until" in outcome.status.autoscaler["reason"]


def test_a_hold_on_unchanged_readings_writes_no_status_at_the_next_tick(catalog: Catalog) -> None:
    """While the first scale-down window holds, the next tick (10 s on, the same readings)
    leaves status.autoscaler as it was: nothing in it says how long the hold has lasted."""
    snap, _ = settled(catalog, body(replicas=4, scaling=scaling()))
    idle = MetricsReading({"queueDepth": 0.0})
    first = complete(replace(snap, autoscaler=None), config(catalog), metrics=idle)
    assert first.status is not None and first.status.autoscaler is not None
    assert first.scale_to is None and "holding until" in first.status.autoscaler["reason"]
    written = {**snap.body["status"], "autoscaler": first.status.autoscaler}
    tick = replace(
        snap,
        body={**snap.body, "status": written},
        now=NOW + timedelta(seconds=10),
        autoscaler=first.autoscaler,
    )
    again = complete(tick, config(catalog), metrics=idle)
    assert again.status is not None and again.scale_to is None
    assert again.status.autoscaler == first.status.autoscaler


def test_an_apply_failure_is_degraded_and_not_ready(catalog: Catalog) -> None:
    snap, _ = settled(catalog, body())
    outcome = decide(replace(snap, error="apply Service m: 403 forbidden"), config(catalog))
    found = conditions(outcome)
    assert found["Degraded"].status == "True" and found["Ready"].status == "False"
    assert outcome.status is not None and outcome.status.phase == "Degraded"
    assert [e.reason for e in outcome.events] == ["ApplyFailed"]


def test_the_finalizer_of_an_old_release_goes(catalog: Catalog) -> None:
    b = body()
    b["metadata"]["finalizers"] = ["llmdeploy.io/finalizer"]
    assert decide(Snapshot(b, {}, {}, L4_NODES, NOW), config(catalog)).remove_finalizer


def test_the_autoscaler_reads_only_an_endpoint_the_operator_allows(catalog: Catalog) -> None:
    snap, _ = settled(catalog, body(replicas=2, scaling=scaling(prometheus="team-a")))
    targets = {name: PrometheusTarget(url=f"http://{name}:9090") for name in ("default", "team-a")}
    allowed = Config(catalog, LOCK, set(), targets, NO_HOST)
    assert decide(snap, allowed).needs.prometheus == "team-a"
    unknown = complete(snap, config(catalog))  # only "default" is allowed
    assert unknown.scale_to is None
    assert "no Prometheus endpoint named team-a" in str(unknown.status.autoscaler)  # type: ignore[union-attr]


def test_the_activation_metric_is_scoped_to_the_object_s_namespace(catalog: Catalog) -> None:
    activation = {"name": "gateway_waiting", "labels": {"namespace": "kube-system", "r": 'x"}'}}
    stz = {"idleSeconds": 300, "activationMetric": activation}
    snap, _ = settled(catalog, body(replicas=0, scaling=scaling(scaleToZero=stz)))
    [(key, promql)] = decide(snap, config(catalog)).needs.queries
    assert key == "activation"
    assert promql == 'sum(gateway_waiting{namespace="ns",r="x\\"}"})'
    woken = complete(snap, config(catalog), metrics=MetricsReading({"activation": 3.0}))
    assert woken.scale_to == 1


def test_free_urls_and_promql_are_refused_in_every_mode() -> None:
    for bad in ({"prometheusUrl": "http://evil:9090"}, {"scaleToZero": {"activationQuery": "up"}}):
        for mode in ("operator", "keda"):
            b = body(scaling=scaling(mode=mode, **bad))
            with pytest.raises(ValidationError, match="is not accepted"):
                LLMDeployment.model_validate(b)


def test_host_path_is_refused_unless_the_operator_allows_its_prefix(catalog: Catalog) -> None:
    model = {"name": "meta-llama/Llama-3.1-8B-Instruct", "cache": {"type": "hostPath", "path": "/"}}
    b = body(model=model)
    refused = decide(Snapshot(b, {}, {}, L4_NODES, NOW), config(catalog))
    assert refused.apply == () and [e.reason for e in refused.events] == ["InvalidSpec"]
    b["spec"]["model"]["cache"]["path"] = "/var/cache/models"
    prefixes = HostAccess(allowed_host_path_prefixes=("/var/cache",))
    allowed = replace(config(catalog), host_access=prefixes)
    assert decide(Snapshot(b, {}, {}, L4_NODES, NOW), allowed).apply


# Measurement: status.observed on the operator's interval, SLOMet and PlanDrift.

# HEALTHY: 7200 requests of 1024 + 256 tokens, every TTFT under 2.5 s and every gap between
# tokens under 0.1 s; in the operator's 10-minute window, 12 requests/s. SLOW: the same
# traffic, 90% of first tokens over 2.5 s.
MEASURED_SPEC: dict[str, Any] = {
    "slo": {"ttftMs": 2500, "tpotMs": 100},
    "workload": {"inputTokens": 1024, "outputTokens": 256, "requestsPerSecond": 12},
}
SLOW = {**HEALTHY, "ttft": buckets({1: 0, 2.5: 720, 5: 7200, INF: 7200})}
STOPPED = dict.fromkeys(HEALTHY, "connection failed")  # the client's words


def measured_by(results: dict[str, Any], errors: dict[str, str] | None = None) -> Readings:
    answers = {key: answer(result) for key, result in results.items()}
    answers.update(
        {key: QueryResult(promql="(test)", error=e) for key, e in (errors or {}).items()}
    )
    return readings(answers)


def after(snap: Snapshot, outcome: Outcome, seconds: float) -> Snapshot:
    """The snapshot `seconds` later of what the outcome's act left: its status written."""
    assert outcome.status is not None
    status = outcome.status.model_dump(mode="json", by_alias=True, exclude_none=True)
    body = {**snap.body, "status": status}
    return replace(snap, body=body, now=snap.now + timedelta(seconds=seconds))


def test_a_measurement_is_due_once_an_interval_old(catalog: Catalog) -> None:
    snap, _ = settled(catalog, body(**MEASURED_SPEC))
    assert snap.body["status"]["observed"]["end"] == "2026-11-22T12:00:00Z"
    soon = decide(replace(snap, now=NOW + timedelta(seconds=25)), config(catalog))
    assert not soon.needs and soon.requeue_after_s == 35  # back when the next one is due
    assert soon.status is not None and soon.status.observed is not None
    assert soon.status.observed.to_json_dict() == snap.body["status"]["observed"]  # reused
    assert soon.events == ()
    due = decide(replace(snap, now=NOW + timedelta(seconds=60)), config(catalog))
    assert due.needs.measure is not None and due.needs.prometheus == "default"
    assert due.needs.measure.window_s == 600
    assert 'namespace="ns"' in due.needs.measure.instant["requests"]
    # A changed spec (its SLO, say) is measured again at once.
    metadata = {**snap.body["metadata"], "generation": 2}
    changed = replace(snap, body={**snap.body, "metadata": metadata})
    assert decide(changed, config(catalog)).needs.measure is not None


def test_the_measurement_reads_the_endpoint_the_spec_names(catalog: Catalog) -> None:
    b = body(replicas=2, scaling=scaling(prometheus="team-a"), **MEASURED_SPEC)
    targets = {name: PrometheusTarget(url=f"http://{name}:9090") for name in ("default", "team-a")}
    allowed = Config(catalog, LOCK, set(), targets, NO_HOST)
    first = complete(Snapshot(b, {}, {}, L4_NODES, NOW), allowed)
    snap = after(Snapshot(b, {}, {}, L4_NODES, NOW), first, 0)
    children = {
        (o["kind"], o["metadata"]["name"]): LiveChild(
            "c",
            "u1",
            o["metadata"]["annotations"]["llmdeploy.io/applied-hash"],
            "g1",
            WorkloadStatus(True, 2, 2, 2, True) if o["kind"] == "Deployment" else None,
        )
        for o in first.apply
    }
    needs = decide(replace(snap, children=children), allowed).needs
    assert needs.measure is not None and needs.prometheus == "team-a"


def test_without_prometheus_nothing_is_measured_and_the_object_stays_settled(
    catalog: Catalog,
) -> None:
    b = body(**MEASURED_SPEC)
    unset = config(catalog, prometheus=False)
    first = decide(Snapshot(b, {}, {}, L4_NODES, NOW), unset)
    snap, _ = settled(catalog, b)
    snap = after(snap, decide(snap, unset), 0)
    outcome = decide(snap, unset)
    assert not outcome.needs and outcome.requeue_after_s is None  # no clock to come back on
    assert outcome.status is not None and outcome.status.observed is None
    slo = conditions(outcome)["SLOMet"]
    assert (slo.status, slo.reason) == ("Unknown", "NoPrometheus")
    assert "LLMDEPLOY_PROMETHEUS_URL" in slo.message
    assert conditions(outcome)["PlanDrift"].status == "Unknown"
    assert [e.reason for e in first.events] == ["Planned"]  # Unknown from the start: no event
    assert outcome.events == ()


def test_a_release_without_metrics_is_not_measured_and_says_why(catalog: Catalog) -> None:
    # TensorRT-LLM on nodes whose driver runs the lock's 1.0.0, which serves no metrics.
    nodes = Inventory(tuple(GpuNode(f"l4-{i}", {GFD: "NVIDIA-L4"}, 1, (575, 57)) for i in range(4)))
    spec = {**MEASURED_SPEC, "workload": {**MEASURED_SPEC["workload"], "maxContextLength": 8192}}
    snap, first = settled(catalog, body(engine={"name": "tensorrt-llm"}, **spec), nodes=nodes)
    assert first.status is not None and first.status.plan is not None
    assert first.status.plan["engineVersion"] == "1.0.0"
    outcome = decide(replace(snap, now=NOW + timedelta(seconds=600)), config(catalog))
    assert not outcome.needs  # nothing asked of Prometheus
    slo = conditions(outcome)["SLOMet"]
    assert (slo.status, slo.reason) == ("Unknown", "NoEngineMetrics")
    assert "TensorRT-LLM 1.0.0 serves no Prometheus metrics" in slo.message


def test_rates_count_from_when_the_engines_first_served_however_old_the_object(
    catalog: Catalog,
) -> None:
    """Engines that first served 100 s before the end of a 10-minute window (their GPUs took
    longer than the window to come, or their weights to load) are measured over those 100 s,
    whatever the object's age, and the time is recorded. A later window that starts in a gap
    (scaled to zero, an outage) is measured whole: what the deployment was asked for."""
    snap, _ = settled(catalog, body(**MEASURED_SPEC))  # no engine seen yet
    assert "servedSince" not in snap.body["status"]["observed"]
    began = {
        **HEALTHY,
        "requests": vector(1200),
        "servedSeconds": vector(99.5),  # the first 1 s step that saw them; they began within it
        "replicas": vector(100.5 / 600),  # 1 at each of the 100.5 s of steps since
    }
    now = NOW + timedelta(seconds=60)
    first = decide(replace(snap, now=now, measured=measured_by(began)), config(catalog))
    assert first.status is not None and first.status.observed is not None
    seen = first.status.observed
    assert (seen.window_seconds, seen.requests_per_second) == (100, 12.0)  # not 2.0
    assert seen.replicas == pytest.approx(1.0)
    assert seen.served_since == "2026-11-22T11:59:20Z"  # NOW + 60 s - 100 s
    woken = decide(replace(after(snap, first, 660), measured=measured_by(began)), config(catalog))
    assert woken.status is not None and woken.status.observed is not None
    assert (woken.status.observed.window_seconds, woken.status.observed.requests_per_second) == (
        600,
        2.0,
    )
    assert woken.status.observed.served_since == "2026-11-22T11:59:20Z"  # kept


def test_an_engine_change_counts_from_when_the_new_engine_first_served(
    catalog: Catalog,
) -> None:
    """servedSince is of the engine whose metric names are read: TensorRT-LLM's counters are
    other series than vLLM's and begin when its engines do. Measured first after a spec moved
    from vLLM (status.plan still names it), the window counts from the new engines' first step
    and records it; vLLM's record of years of serving would read a sixth of the traffic."""
    # Nodes whose driver runs TensorRT-LLM 1.3.0rc20, a release that serves metrics.
    nodes = Inventory(tuple(GpuNode(f"l4-{i}", {GFD: "NVIDIA-L4"}, 1, (590, 48)) for i in range(4)))
    spec = {**MEASURED_SPEC, "workload": {**MEASURED_SPEC["workload"], "maxContextLength": 8192}}
    snap, _ = settled(catalog, body(engine={"name": "tensorrt-llm"}, **spec), nodes=nodes)
    status = snap.body["status"]
    assert status["plan"]["engine"] == "tensorrt-llm" and "observed" in status  # measured
    vllm_served = {**status["observed"], "servedSince": "2024-01-01T00:00:00Z"}
    began = {
        **HEALTHY,
        "requests": vector(1200),
        "servedSeconds": vector(99.5),
        "replicas": vector(100.5 / 600),
    }

    def measured(engine: str) -> Observed:
        written = {**status, "plan": {**status["plan"], "engine": engine}, "observed": vllm_served}
        now = NOW + timedelta(seconds=60)
        snapped = replace(snap, body={**snap.body, "status": written}, now=now)
        outcome = decide(replace(snapped, measured=measured_by(began)), config(catalog))
        assert outcome.status is not None and outcome.status.observed is not None
        return outcome.status.observed

    moved = measured("vllm")  # the last measurement read vLLM's engines
    assert (moved.window_seconds, moved.requests_per_second) == (100, 12.0)  # not 2.0
    assert moved.served_since == "2026-11-22T11:59:20Z"
    same = measured("tensorrt-llm")  # its own record stands: a gap at the start, measured whole
    assert (same.window_seconds, same.requests_per_second) == (600, 2.0)
    assert same.served_since == "2024-01-01T00:00:00Z"


def test_missing_or_partial_data_is_unknown_never_a_guess(catalog: Catalog) -> None:
    snap, _ = settled(catalog, body(**MEASURED_SPEC))  # measured with no data at all
    observed = snap.body["status"]["observed"]
    assert "ttftP95Seconds" not in observed and "no data" in observed["unknown"]["ttftP95Seconds"]
    judged = {c["type"]: c for c in snap.body["status"]["conditions"]}
    assert judged["SLOMet"]["status"] == "Unknown" and judged["PlanDrift"]["status"] == "Unknown"
    later = replace(snap, now=NOW + timedelta(seconds=60))
    # TTFT within its target, TPOT's histogram missing: not True.
    partial = {k: v for k, v in HEALTHY.items() if k != "tpot"}
    outcome = decide(replace(later, measured=measured_by(partial)), config(catalog))
    slo = conditions(outcome)["SLOMet"]
    assert (slo.status, slo.reason) == ("Unknown", "NotMeasured")
    assert "TPOT 100 ms: unknown" in slo.message and "TTFT 2500 ms: met by 100.0%" in slo.message
    assert conditions(outcome)["PlanDrift"].status == "False"  # the workload is known


def verdicts(outcome: Outcome) -> list[tuple[str, bool]]:
    """The SLOMet and PlanDrift events (a recommendation has events of its own)."""
    return [(e.reason, e.warning) for e in outcome.events if e.reason in MEASURED]


def test_slo_and_drift_transitions_post_one_event_each_and_ready_is_untouched(
    catalog: Catalog,
) -> None:
    snap, _ = settled(catalog, body(**MEASURED_SPEC))

    def measure(at: Snapshot, readings_: Readings) -> Outcome:
        outcome = decide(replace(at, measured=readings_), config(catalog))
        assert not outcome.needs and outcome.status is not None
        assert conditions(outcome)["Ready"].status == "True"  # SLOMet does not change Ready
        return outcome

    slow = measure(replace(snap, now=NOW + timedelta(seconds=60)), measured_by(SLOW))
    slo = conditions(slow)["SLOMet"]
    assert (slo.status, slo.reason) == ("False", "TargetMissed")
    assert "TTFT 2500 ms: met by 10.0%, under 95.0%" in slo.message
    assert verdicts(slow) == [("SLOMet", True), ("PlanDrift", False)]
    assert slow.events[0].message.startswith("SLOMet=False (TargetMissed): TTFT 2500 ms")
    assert slow.status is not None and slow.status.observed is not None
    assert slow.status.observed.end == "2026-11-22T12:01:00Z"
    assert slow.status.observed.ttft_p95_seconds is not None
    assert slow.status.observed.ttft_p95_seconds > 2.5

    # Refreshed with the same verdicts: new numbers, no event.
    again = measure(after(snap, slow, 120), measured_by(SLOW))
    assert verdicts(again) == []
    assert conditions(again)["SLOMet"].status == "False"

    met = measure(after(snap, again, 180), measured_by(HEALTHY))
    assert verdicts(met) == [("SLOMet", False)]
    assert conditions(met)["SLOMet"].reason == "TargetsMet"

    longer = {**HEALTHY, "inputTokensTotal": vector(2 * 7_372_800)}
    drifted = measure(after(snap, met, 240), measured_by(longer))
    assert verdicts(drifted) == [("PlanDrift", True)]
    drift = conditions(drifted)["PlanDrift"]
    assert (drift.status, drift.reason) == ("True", "WorkloadDrifted")
    assert "input tokens/request 2048 vs 1024 planned (+100%)" in drift.message

    # Prometheus stopped: every figure Unknown, both conditions Unknown, each said once.
    stopped = measure(after(snap, drifted, 300), measured_by({}, STOPPED))
    assert stopped.status is not None and stopped.status.observed is not None
    figures = stopped.status.observed.to_json_dict()
    # Every figure but when the engines first served, which the first measurement recorded.
    assert set(figures) == {"windowSeconds", "end", "servedSince", "price", "unknown"}
    assert figures["servedSince"] == slow.status.observed.served_since
    assert "connection failed" in figures["unknown"]["requests"]  # type: ignore[index]
    assert [c.status for c in (conditions(stopped)[t] for t in MEASURED)] == ["Unknown"] * 2
    assert [e.reason for e in stopped.events] == ["SLOMet", "PlanDrift"]  # nothing recommended
    assert stopped.status.recommendation is None


# Calibration and recommendation: HEALTHY's means are TTFT 0.45 s and a gap of 40 ms.


def sample_of(catalog: Catalog, snap: Snapshot, outcome: Outcome) -> tuple[float, float]:
    """The bounded measured/predicted ratios of one HEALTHY measurement, the way the
    calibration takes them: at the load Little's law gives (12 requests/s, 1.5 replicas)."""
    assert outcome.status is not None and outcome.status.observed is not None
    concurrency, inputs, outputs = measured_load(outcome.status.observed)  # type: ignore[misc]
    assert (inputs, outputs) == (1024, 256)
    assert concurrency == round(12 * (0.45 + 255 * 0.04) / 1.5)
    predicted = performance_at(
        LLMDeployment.model_validate(dict(snap.body)).spec,
        catalog,
        Plan.model_validate(snap.body["status"]["plan"]),
        concurrency=concurrency,
        input_tokens=inputs,
        output_tokens=outputs,
    )
    assert predicted is not None
    low, high = RATIO_BOUNDS
    return (
        min(max(0.45 / predicted.ttft_s, low), high),
        min(max(0.04 / predicted.tpot_s, low), high),
    )


def test_measurements_calibrate_and_the_recommendation_stands_until_the_workload_moves(
    catalog: Catalog,
) -> None:
    snap, _ = settled(catalog, body(**MEASURED_SPEC))
    snap = after(snap, decide(snap, config(catalog)), 0)  # rolled out at NOW
    assert ready(snap)
    # A window that began before the rollout finished (at NOW) measured another layout, or
    # cold starts: no sample. One that began after it gives one.
    early = decide(
        replace(snap, now=NOW + timedelta(seconds=60), measured=measured_by(HEALTHY)),
        config(catalog),
    )
    assert early.status is not None and early.status.calibration is None
    assert early.status.recommendation is not None  # the workload is measured all the same
    first = decide(
        replace(snap, now=NOW + timedelta(seconds=660), measured=measured_by(HEALTHY)),
        config(catalog),
    )
    assert first.status is not None and first.status.calibration is not None
    ttft, tpot = sample_of(catalog, snap, first)
    calibrated = first.status.calibration
    assert (calibrated.ttft_ratio, calibrated.tpot_ratio) == (round(ttft, 4), round(tpot, 4))
    assert calibrated.measurements == 1
    made = first.status.recommendation
    assert made is not None and made.feasible
    assert made.basis.ttft_ratio == calibrated.ttft_ratio  # made with the calibration
    assert made.basis.requests_per_second == 12 and made.basis.input_tokens == 1024

    # The same traffic again: smoothed towards the same samples, the recommendation kept.
    next_one = replace(after(snap, first, 720), measured=measured_by(HEALTHY))
    again = decide(next_one, config(catalog))
    assert again.status is not None and again.status.calibration is not None
    assert again.status.calibration.measurements == 2
    assert again.status.calibration.ttft_ratio == pytest.approx(ttft, abs=1e-3)
    assert again.status.recommendation == made
    assert "Recommended" not in [e.reason for e in again.events]

    # Twice the prompt: the workload left the recommendation's band; a new one, and an event
    # when its layout differs.
    longer = {**HEALTHY, "inputTokensTotal": vector(2 * 7_372_800)}
    later = replace(after(snap, again, 780), measured=measured_by(longer))
    moving = decide(later, config(catalog))
    assert moving.status is not None and moving.status.recommendation is not None
    # Smoothed, one measurement moves 30% of the way (1331 tokens): within the 35% band.
    assert moving.status.recommendation.measured.input_tokens == 1331.2
    assert moving.status.recommendation.since == made.since
    drifted = decide(
        replace(after(snap, moving, 840), measured=measured_by(longer)), config(catalog)
    )
    assert drifted.status is not None and drifted.status.recommendation is not None
    remade = drifted.status.recommendation
    # Out of it at the second (1546): made for what is measured now.
    assert remade.basis.input_tokens == 2048 and remade.since != made.since
    if (remade.gpu, remade.gpu_count, remade.replicas) != (made.gpu, made.gpu_count, made.replicas):
        assert [e.reason for e in drifted.events].count("Recommended") == 1

    # Prometheus stopped: nothing recommended from stale data; the calibration stays.
    stopped = decide(
        replace(after(snap, drifted, 900), measured=measured_by({}, STOPPED)), config(catalog)
    )
    assert stopped.status is not None and stopped.status.recommendation is None
    assert stopped.status.calibration == drifted.status.calibration


def test_calibration_off_keeps_none_and_the_plan_uses_only_the_model(catalog: Catalog) -> None:
    spec = {**MEASURED_SPEC, "planning": {"calibration": "off"}}
    snap, _ = settled(catalog, body(**spec))
    outcome = decide(
        replace(snap, now=NOW + timedelta(seconds=60), measured=measured_by(HEALTHY)),
        config(catalog),
    )
    assert outcome.status is not None and outcome.status.calibration is None
    assert outcome.status.recommendation is not None
    assert outcome.status.recommendation.basis.ttft_ratio == 1.0


def test_a_calibration_scales_the_estimates_the_slo_and_the_replicas(catalog: Catalog) -> None:
    spec = LLMDeployment.model_validate(body(**MEASURED_SPEC)).spec
    plain = plan_deployment(spec, catalog)
    slower = plan_deployment(spec, catalog, calibration=LatencyCalibration(ttft=1.5, tpot=2.0))
    assert slower.tpot_calibration == 2.0 and plain.tpot_calibration is None
    same = (slower.gpu, slower.quantization, slower.tensor_parallel) == (
        plain.gpu,
        plain.quantization,
        plain.tensor_parallel,
    )
    if same:  # the same layout: its estimates scale, and it needs more replicas for the rate
        assert slower.estimated_tpot_ms == pytest.approx(2 * (plain.estimated_tpot_ms or 0), 0.01)
        assert (slower.replicas or 0) > (plain.replicas or 0)
    assert (slower.cost_per_hour or 0) > (plain.cost_per_hour or 0)


def test_fold_smooths_bounded_samples() -> None:
    observed = Observed(
        window_seconds=60, end="2026-11-22T12:00:00Z", ttft_mean_seconds=1.3, tpot_mean_seconds=0.13
    )
    predicted = Performance(ttft_s=1.0, tpot_s=0.1, output_tokens_per_s=1, requests_per_s=1)
    first = fold(None, observed, predicted)
    assert first is not None and (first.ttft_ratio, first.tpot_ratio) == (1.3, 1.3)
    wild = observed.model_copy(update={"ttft_mean_seconds": 50.0})
    second = fold(first, wild, predicted)
    assert second is not None and second.measurements == 2
    assert second.ttft_ratio == pytest.approx(1.3 + SMOOTHING * (RATIO_BOUNDS[1] - 1.3))
    unknown = observed.model_copy(update={"ttft_mean_seconds": None})
    assert fold(second, unknown, predicted) is second


def test_thirty_noisy_minutes_change_the_recommendation_at_most_once(catalog: Catalog) -> None:
    """A measurement every 30 s for 30 minutes of steady traffic with noise: request rate and
    lengths +-15%, mean latencies +-10% (seeded). The first recommendation is made, then it
    stands: the smoothed workload stays within its 35% band and the smoothed ratios within
    25%."""
    rng = random.Random(7)
    snap, _ = settled(catalog, body(**MEASURED_SPEC))
    snap = after(snap, decide(snap, config(catalog)), 0)  # rolled out at NOW
    assert ready(snap)
    outcome = None
    made: list[str] = []
    announced = 0
    for n in range(1, 61):
        rate, inputs, outputs = (rng.uniform(0.85, 1.15) for _ in range(3))
        ttft, tpot = (rng.uniform(0.9, 1.1) for _ in range(2))
        noisy = {
            **HEALTHY,
            "requests": vector(7200 * rate),
            "inputTokensTotal": vector(7_372_800 * rate * inputs),
            "outputTokensTotal": vector(1_843_200 * rate * outputs),
            "ttftSum": vector(3240 * ttft),
            "tpotSum": vector(40_000 * tpot),
        }
        at = snap if outcome is None else after(snap, outcome, 600 + 30 * n)
        outcome = decide(
            replace(at, now=NOW + timedelta(seconds=600 + 30 * n), measured=measured_by(noisy)),
            config(catalog),
        )
        assert outcome.status is not None and outcome.status.recommendation is not None
        since = outcome.status.recommendation.since
        if not made or made[-1] != since:
            made.append(since)
        announced += sum(e.reason == "Recommended" for e in outcome.events)
    assert outcome is not None and outcome.status is not None
    assert outcome.status.calibration is not None
    assert outcome.status.calibration.measurements == 60
    # The first recommendation, and at most one change (the calibration settling from its
    # first sample): each announced at most once.
    assert len(made) <= 2 and announced <= len(made)


def test_a_leaderworkerset_is_current_once_its_controller_wrote_conditions() -> None:
    """LeaderWorkerSet v0.8 has no status.observedGeneration (its status: conditions,
    readyReplicas, updatedReplicas, replicas, hpaPodSelector); a Deployment has."""
    lws = {
        "metadata": {"generation": 3},
        "status": {
            "conditions": [{"type": "Available", "status": "True"}],
            "readyReplicas": 2,
            "updatedReplicas": 2,
            "replicas": 2,
            "hpaPodSelector": "leaderworkerset.sigs.k8s.io/name=m",
        },
    }
    assert workload_status_of(lws) == WorkloadStatus(True, 2, 2, 2, True)
    assert not workload_status_of({"metadata": {"generation": 1}}).up_to_date  # just made
    old = {"metadata": {"generation": 2}, "status": {"observedGeneration": 1, "replicas": 1}}
    assert not workload_status_of(old).up_to_date


def ready(snap: Snapshot) -> bool:
    """The stored status says the rollout is complete."""
    found = {c["type"]: c["status"] for c in snap.body["status"]["conditions"]}
    return found["Progressing"] == "False"


def test_the_plan_key_ignores_how_measurements_feed_planning(catalog: Catalog) -> None:
    plain = LLMDeployment.model_validate(body(**MEASURED_SPEC))
    off = LLMDeployment.model_validate(body(**MEASURED_SPEC, planning={"calibration": "off"}))
    # An upgrade that added spec.planning must not re-plan every object, nor a switch of it.
    assert plan_key(plain, []) == plan_key(off, [])


def test_an_upgrade_that_added_parallelism_expert_keeps_the_stored_plans_key() -> None:
    """spec.parallelism.expert (default auto) came after plans were stored: at auto the key is
    the one the operator made before the field existed (1bb44368b346abaf for this body, by
    plan_key at dac058b), so the upgrade re-plans nothing; a pinned degree is a new key."""
    plain = LLMDeployment.model_validate(body())
    assert plain.spec.parallelism.expert == "auto"
    assert plan_key(plain, []) == "1bb44368b346abaf"
    pinned = LLMDeployment.model_validate(body(parallelism={"expert": 1}))
    assert plan_key(pinned, []) != plan_key(plain, [])


def test_a_kept_recommendation_is_compared_with_the_plan_running_now(catalog: Catalog) -> None:
    snap, _ = settled(catalog, body(**MEASURED_SPEC))
    snap = after(snap, decide(snap, config(catalog)), 0)
    outcome = decide(
        replace(snap, now=NOW + timedelta(seconds=660), measured=measured_by(HEALTHY)),
        config(catalog),
    )
    assert outcome.status is not None and outcome.status.recommendation is not None
    made = outcome.status.recommendation
    assert made.feasible and made.replicas is not None
    # The user takes its replica count (spec.replicas: no new plan); its layout unchanged.
    taken = body(
        outcome.status.model_dump(mode="json", by_alias=True, exclude_none=True),
        **MEASURED_SPEC,
        replicas=made.replicas,
    )
    later = replace(
        snap, body=taken, now=NOW + timedelta(seconds=720), measured=measured_by(HEALTHY)
    )
    kept = decide(later, config(catalog))
    assert kept.status is not None and kept.status.recommendation is not None
    assert kept.status.recommendation.since == made.since
    plan = Plan.model_validate(kept.status.plan)
    same_layout = (made.gpu, made.quantization, made.tensor_parallel) == (
        plan.gpu,
        plan.quantization,
        plan.tensor_parallel,
    )
    assert kept.status.recommendation.same_as_running == same_layout
    if same_layout:
        assert kept.status.recommendation.cost_per_hour_change == 0
