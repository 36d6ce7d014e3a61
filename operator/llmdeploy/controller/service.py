"""What the operator wants, computed purely from the resource, the catalog and the inventory.

The kopf handlers feed observations in and write the results out; nothing here does I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from llmdeploy.api.status import Condition
from llmdeploy.api.types import LLMDeployment, duration_seconds
from llmdeploy.autoscale.decision import Decision
from llmdeploy.catalog import Catalog, ImageLock
from llmdeploy.cluster.kube import WORKLOAD_KINDS, PendingPod, WorkloadStatus
from llmdeploy.render import SPEC_HASH_ANNOTATION, render_manifests
from llmdeploy.sizing import Plan, plan_deployment
from llmdeploy.sizing.inventory import Inventory, cluster_catalog, placement_for_cluster


@dataclass(frozen=True, slots=True)
class Desired:
    plan: Plan
    plan_key: str  # changes when a new plan is due (spec minus replicas, excluded GPUs)
    objects: list[dict[str, Any]] = field(default_factory=list)
    workload_kind: str | None = None
    spec_hash: str | None = None  # the digest of the pod template every pod of this plan carries

    @classmethod
    def rendered(cls, plan: Plan, key: str, objects: list[dict[str, Any]]) -> Desired:
        kind = next(iter({o["kind"] for o in objects} & WORKLOAD_KINDS), None)
        spec_hash = next(
            (
                str(o["metadata"]["annotations"][SPEC_HASH_ANNOTATION])
                for o in objects
                if o["kind"] == kind
                and SPEC_HASH_ANNOTATION in o["metadata"].get("annotations", {})
            ),
            None,
        )
        return cls(plan, key, objects, kind, spec_hash)


def render_inputs(
    generation: int, key: str, plan: Plan, catalog: Catalog, inventory: Inventory
) -> tuple[Any, ...]:
    """Everything a render depends on besides the catalog and image lock, which are fixed for
    the process: the spec (its generation), the plan (its key) and the nodes' drivers."""
    drivers = inventory.drivers(catalog, plan.gpu) if plan.gpu in catalog.gpus else []
    return (generation, key, tuple(drivers))


def plan_key(resource: LLMDeployment, excluded: Sequence[str]) -> str:
    spec = resource.spec.model_dump(mode="json", by_alias=True, exclude={"replicas"})
    canonical = json.dumps({"spec": spec, "excluded": sorted(excluded)}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def plan_for_cluster(
    resource: LLMDeployment,
    catalog: Catalog,
    inventory: Inventory,
    provisionable: set[str] | None,
    excluded: Sequence[str] = (),
) -> Plan:
    """Plan against the GPUs the cluster has or can provision; raises SpecError."""
    view = cluster_catalog(catalog, inventory, provisionable)
    spec, reason = placement_for_cluster(resource.spec, view, excluded)
    if spec is None:
        return Plan(
            feasible=False,
            model=resource.spec.model.name,
            engine=resource.spec.engine.name.value,
            reasons=[reason],
        )
    return plan_deployment(spec, view)


def desired_state(
    resource: LLMDeployment,
    catalog: Catalog,
    lock: ImageLock,
    inventory: Inventory,
    provisionable: set[str] | None,
    excluded: Sequence[str] = (),
    stored_plan: Plan | None = None,
    stored_key: str | None = None,
) -> Desired:
    """The plan (reused while its inputs are unchanged, so replicas do not churn when the
    inventory moves) and the objects that run it. Raises SpecError for invalid input."""
    key = plan_key(resource, excluded)
    if stored_plan is not None and stored_key == key:
        plan = stored_plan
    else:
        plan = plan_for_cluster(resource, catalog, inventory, provisionable, excluded)
    if not plan.feasible or plan.gpu is None:
        return Desired(plan, key)
    drivers = inventory.drivers(catalog, plan.gpu) if plan.gpu in catalog.gpus else []
    return Desired.rendered(plan, key, render_manifests(resource, plan, catalog, lock, drivers))


def desired_replicas(resource: LLMDeployment, plan: Plan) -> int:
    if resource.spec.replicas is not None:
        return resource.spec.replicas
    return plan.replicas or 0


def _condition(
    type_: str, ok: bool | None, reason: str, message: str, generation: int
) -> Condition:
    status = "Unknown" if ok is None else ("True" if ok else "False")
    return Condition(
        type=type_, status=status, reason=reason, message=message, observed_generation=generation
    )


def capacity_condition(
    pending: Sequence[PendingPod], now: datetime, timeout_s: int, generation: int
) -> tuple[Condition, PendingPod | None]:
    """CapacityAvailable, and the pod that has starved past the timeout, if any."""
    if not pending:
        return _condition("CapacityAvailable", True, "Scheduled", "", generation), None
    oldest = min(pending, key=lambda p: p.since)
    waited = (now - oldest.since).total_seconds()
    if waited < timeout_s:
        message = f"{len(pending)} pod(s) waiting for GPUs for {waited:.0f}s: {oldest.message}"
        return _condition(
            "CapacityAvailable", True, "WaitingForCapacity", message, generation
        ), None
    message = (
        f"{len(pending)} pod(s) unschedulable for {waited:.0f}s (> {timeout_s}s): {oldest.message}"
    )
    return _condition("CapacityAvailable", False, "InsufficientGPUs", message, generation), oldest


def status_update(
    resource: LLMDeployment,
    generation: int,
    desired: Desired | None,
    workload: WorkloadStatus | None,
    capacity: Condition | None,
    error: tuple[str, str] | None,
    previous: Sequence[dict[str, Any]],
    now: datetime,
    excluded: Sequence[str] = (),
) -> dict[str, Any]:
    """The whole status the operator owns, with lastTransitionTime kept where nothing changed.

    `error` is (reason, message) of a failure: an invalid spec when `desired` is None, else a
    failure to apply.
    """
    if desired is None:
        _, message = error or ("InvalidSpec", "")
        return {
            **invalid_status(generation, message, previous, now),
            "excludedGpus": list(excluded),
        }
    conditions: list[Condition] = []
    status: dict[str, Any] = {"observedGeneration": generation, "excludedGpus": list(excluded)}
    plan = desired.plan
    replicas = desired_replicas(resource, plan)
    status.update(
        plan=plan.model_dump(mode="json", by_alias=True, exclude_none=True),
        planKey=desired.plan_key,
        gpu=plan.gpu,
        gpuCount=plan.gpu_count,
        quantization=plan.quantization,
        tensorParallel=plan.tensor_parallel,
        costPerHour=None
        if plan.cost_per_hour is None
        else f"{plan.cost_per_hour / max(plan.replicas or 1, 1) * replicas:.2f}",
        replicas=replicas if plan.feasible else 0,
        readyReplicas=workload.ready_replicas if workload else 0,
        selector=f"llmdeploy.io/deployment={resource.metadata.name}",
    )
    if not plan.feasible:
        conditions.append(
            _condition("Planned", False, "NoFeasiblePlan", "; ".join(plan.reasons), generation)
        )
        status.update(phase="Failed", conditions=_stamp(conditions, previous, now))
        return status
    conditions.append(
        _condition(
            "Planned",
            True,
            "Planned",
            f"{plan.gpu} x{plan.gpu_count} {plan.quantization} TP{plan.tensor_parallel} "
            f"PP{plan.pipeline_parallel}, {replicas} replica(s), ${plan.cost_per_hour}/h",
            generation,
        )
    )
    ready = workload.ready_replicas if workload else 0
    settled = bool(
        workload
        and workload.exists
        and workload.up_to_date
        and workload.updated_replicas >= replicas
        and ready >= replicas
    )
    conditions.append(
        _condition(
            "Progressing",
            not settled,
            "RolloutInProgress" if not settled else "RolloutComplete",
            f"{ready}/{replicas} replicas ready",
            generation,
        )
    )
    conditions.append(
        _condition(
            "Available",
            ready >= replicas and (ready > 0 or replicas == 0),
            "MinimumReplicasAvailable" if ready >= replicas else "ReplicasNotReady",
            f"{ready}/{replicas} replicas ready",
            generation,
        )
    )
    if capacity is not None:
        conditions.append(capacity)
    if error:
        conditions.append(_condition("Degraded", True, error[0], error[1], generation))
    else:
        conditions.append(_condition("Degraded", False, "ReconcileSucceeded", "", generation))
    if error:
        phase = "Degraded"
    elif capacity is not None and capacity.status == "False":
        phase = "Pending"
    else:
        phase = "Ready" if settled else "Progressing"
    status.update(phase=phase, conditions=_stamp(conditions, previous, now))
    return status


def invalid_status(
    generation: int, message: str, previous: Sequence[dict[str, Any]], now: datetime
) -> dict[str, Any]:
    """Status of a resource whose spec cannot be planned: Planned=False, phase Failed."""
    condition = _condition("Planned", False, "InvalidSpec", message, generation)
    return {
        "observedGeneration": generation,
        "phase": "Failed",
        "conditions": _stamp([condition], previous, now),
    }


def autoscaler_status(
    decision: Decision,
    values: dict[str, float | None],
    now: datetime,
    previous: dict[str, Any] | None,
) -> dict[str, Any]:
    """status.autoscaler: what was seen and decided, and the state to restore after a restart."""
    previous = previous or {}
    scaled = decision.state.last_scale_time
    return {
        "metrics": {k: (None if v is None else round(v, 4)) for k, v in sorted(values.items())},
        "desiredReplicas": decision.desired_replicas,
        "reason": decision.reason,
        "lastScaleTime": datetime.fromtimestamp(scaled, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if scaled is not None
        else previous.get("lastScaleTime"),
        "state": decision.state.model_dump(mode="json", by_alias=True),
    }


def metrics_condition(decision: Decision, generation: int) -> Condition:
    if decision.at_zero:  # no replicas, no engine metrics: expected, not a failure
        return _condition("MetricsAvailable", None, "ScaledToZero", decision.reason, generation)
    if decision.metrics_available:
        return _condition("MetricsAvailable", True, "MetricsRead", "", generation)
    return _condition("MetricsAvailable", False, "MetricsUnavailable", decision.reason, generation)


def stamp_conditions(
    conditions: Sequence[Condition], previous: Sequence[dict[str, Any]], now: datetime
) -> list[dict[str, Any]]:
    return _stamp(list(conditions), previous, now)


def _stamp(
    conditions: list[Condition], previous: Sequence[dict[str, Any]], now: datetime
) -> list[dict[str, Any]]:
    before = {c.get("type"): c for c in previous}
    stamped = []
    for condition in conditions:
        old = before.get(condition.type)
        unchanged = old is not None and old.get("status") == condition.status
        time = old.get("lastTransitionTime") if unchanged and old else None
        condition = condition.model_copy(
            update={
                "last_transition_time": time or now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            }
        )
        stamped.append(condition.model_dump(by_alias=True, exclude_none=True))
    return stamped


def pending_timeout_seconds(resource: LLMDeployment) -> int:
    return duration_seconds(resource.spec.placement.pending_timeout)
