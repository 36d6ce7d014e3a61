"""decide, the pure half of a reconcile: plans, children, capacity, autoscaling, status."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from llmdeploy.api.types import LLMDeployment
from llmdeploy.autoscale.decision import AutoscalerState, MetricsReading
from llmdeploy.catalog import Catalog, load_image_lock
from llmdeploy.cluster.objects import LiveChild, PendingPod, WorkloadStatus
from llmdeploy.controller.decide import (
    Config,
    Outcome,
    Snapshot,
    capacity_condition,
    decide,
    desired_state,
    status_update,
    stored_exclusions,
)
from llmdeploy.render import HostAccess, PrometheusTarget
from llmdeploy.sizing.inventory import GpuNode, Inventory, cluster_catalog
from tests.unit.conftest import GFD, L4_NODES, body

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


def config(catalog: Catalog, prometheus: bool = True) -> Config:
    endpoints = {"default": PrometheusTarget(url="http://prometheus:9090")} if prometheus else {}
    return Config(catalog, LOCK, set(), endpoints, NO_HOST)


def settled(
    catalog: Catalog,
    b: dict[str, Any],
    ready: int | None = None,
    **extra: Any,
) -> tuple[Snapshot, Outcome]:
    """A first decide, then the snapshot of what its act left: status written, every child
    applied by this process and seen by the watch, `ready` replicas serving."""
    first = decide(Snapshot(b, {}, {}, L4_NODES, NOW), config(catalog))
    assert first.status is not None
    status = first.status.model_dump(mode="json", by_alias=True, exclude_none=True)
    replicas = status["replicas"] if ready is None else ready
    children = {}
    applied = {}
    for obj in first.apply:
        name = (obj["kind"], obj["metadata"]["name"])
        digest = obj["metadata"]["annotations"]["llmdeploy.io/applied-hash"]
        workload = (
            WorkloadStatus(True, status["replicas"], replicas, status["replicas"], True)
            if obj["kind"] == "Deployment"
            else None
        )
        children[name] = LiveChild(f"uid-{name[0]}", "u1", digest, "g1", workload)
        applied[name] = (digest, "g1")
    snap = Snapshot(
        {**b, "status": status}, children, applied, L4_NODES, NOW, first.rendered, **extra
    )
    return snap, first


def complete(snap: Snapshot, cfg: Config, **observed: Any) -> Outcome:
    """Answer decide's needs from `observed` the way the reconcile would observe them."""
    outcome = decide(snap, cfg)
    for _ in range(3):
        if not outcome.needs:
            return outcome
        if outcome.needs.pending_pods:
            snap = replace(snap, pending=observed.get("pending", ()))
        if outcome.needs.queries:
            snap = replace(snap, metrics=observed["metrics"])
        if outcome.needs.gpus_in_use:
            snap = replace(snap, gpus_in_use=observed.get("gpus", ({}, 0)))
        outcome = decide(snap, cfg)
    raise AssertionError(f"still needs {outcome.needs}")


def conditions(outcome: Outcome) -> dict[str, Any]:
    assert outcome.status is not None
    return {c.type: c for c in outcome.status.conditions}


def test_a_new_object_is_planned_applied_and_announced(catalog: Catalog) -> None:
    outcome = decide(Snapshot(body(), {}, {}, L4_NODES, NOW), config(catalog))
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
    waiting = complete(snap, config(catalog), pending=young)
    assert conditions(waiting)["CapacityAvailable"].reason == "WaitingForCapacity"
    assert waiting.requeue_after_s == 240  # the deadline is a source of its own
    old = (PendingPod("p", NOW - timedelta(seconds=301), "0/4 nodes have GPUs"),)
    starved = complete(snap, config(catalog), pending=old)
    assert starved.status is not None
    assert starved.status.excluded_gpus == ["nvidia-l4"] and starved.status.plan_key is None
    assert [e.reason for e in starved.events] == ["FallbackReplan"]
    assert starved.apply == () and starved.requeue_after_s == 0


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
    assert expired.requeue_after_s is None


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
    status holds the scale-down window."""
    snap, _ = settled(catalog, body(replicas=4, scaling=scaling()))
    history = AutoscalerState(recommendations=[(NOW.timestamp() - 30, 4)])
    status = {
        **snap.body["status"],
        "autoscaler": {"state": history.model_dump(mode="json", by_alias=True)},
    }
    idle = MetricsReading({"queueDepth": 0.0})
    taken_over = replace(snap, body={**snap.body, "status": status}, autoscaler=None)
    assert complete(taken_over, config(catalog), metrics=idle).scale_to is None
    forgotten = replace(taken_over, body={**snap.body, "status": {**status, "autoscaler": {}}})
    assert complete(forgotten, config(catalog), metrics=idle).scale_to == 1


@pytest.mark.parametrize(
    "state", [{"recommendations": "garbage"}, {"idleSince": "yesterday"}, "x", [1, 2]]
)
def test_an_unreadable_autoscaler_history_starts_afresh(catalog: Catalog, state: object) -> None:
    """Like a first start: a status edited by hand or written by another release must not
    stop the object's reconciles."""
    snap, _ = settled(catalog, body(replicas=4, scaling=scaling()))
    status = {**snap.body["status"], "autoscaler": {"state": state}}
    garbled = replace(snap, body={**snap.body, "status": status}, autoscaler=None)
    outcome = complete(garbled, config(catalog), metrics=MetricsReading({"queueDepth": 0.0}))
    assert outcome.status is not None and outcome.status.autoscaler is not None
    assert outcome.status.autoscaler["state"]["recommendations"]  # a history of its own now
    assert outcome.scale_to == 1  # no history holds the scale-down, as when there was none


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
