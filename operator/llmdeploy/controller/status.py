"""The status decide writes: conditions, phase, the plan's summary, the autoscaler's record,
and reading back what an earlier reconcile stored."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from llmdeploy.api.status import (
    Condition,
    Generation,
    GpuExclusion,
    LLMDeploymentStatus,
    Observed,
    RolloutStatus,
)
from llmdeploy.api.types import LLMDeployment
from llmdeploy.autoscale.decision import (
    AutoscalerState,
    Decision,
)
from llmdeploy.cluster.objects import (
    Owner,
    PendingPod,
    WorkloadStatus,
)
from llmdeploy.controller.planning import cost_at, desired_replicas
from llmdeploy.controller.state import Desired
from llmdeploy.render import (
    workload_name,
)
from llmdeploy.sizing import (
    Plan,
)


def new_condition(
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
        return new_condition("CapacityAvailable", True, "Scheduled", "", generation), None
    oldest = min(pending, key=lambda p: p.since)
    waited = (now - oldest.since).total_seconds()
    if waited < timeout_s:
        message = f"{len(pending)} pod(s) waiting for GPUs for {waited:.0f}s: {oldest.message}"
        return new_condition(
            "CapacityAvailable", True, "WaitingForCapacity", message, generation
        ), None
    message = (
        f"{len(pending)} pod(s) unschedulable for {waited:.0f}s (> {timeout_s}s): {oldest.message}"
    )
    return new_condition(
        "CapacityAvailable", False, "InsufficientGPUs", message, generation
    ), oldest


def rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def stored_exclusions(status: Mapping[str, Any], now: datetime) -> dict[str, datetime]:
    """Each SKU of status.excludedGpus and when it was excluded, from status.gpuExclusions.
    One with no readable time there (written by an older release, or by hand) counts from
    `now`: its TTL starts when this operator first sees it."""
    times: dict[str, datetime] = {}
    for entry in status.get("gpuExclusions") or []:
        try:
            at = datetime.fromisoformat(str(entry["excludedAt"]))
        except (TypeError, KeyError, ValueError):
            continue
        times[str(entry.get("gpu"))] = at if at.tzinfo else at.replace(tzinfo=UTC)
    return {str(gpu): times.get(str(gpu), now) for gpu in status.get("excludedGpus") or []}


def exclusion_fields(excluded: Mapping[str, datetime]) -> dict[str, Any]:
    """status.excludedGpus (the plan's input) and status.gpuExclusions (when, for the TTL)."""
    return {
        "excluded_gpus": sorted(excluded),
        "gpu_exclusions": [
            GpuExclusion(gpu=gpu, excluded_at=rfc3339(at)) for gpu, at in sorted(excluded.items())
        ]
        or None,
    }


def stamp_conditions(
    conditions: Sequence[Condition], previous: Sequence[Mapping[str, Any]], now: datetime
) -> list[Condition]:
    """lastTransitionTime kept where a condition's status did not change."""
    before = {c.get("type"): c for c in previous}
    stamp = rfc3339(now)
    stamped = []
    for condition in conditions:
        old = before.get(condition.type)
        unchanged = old is not None and old.get("status") == condition.status
        time = old.get("lastTransitionTime") if unchanged and old else None
        stamped.append(condition.model_copy(update={"last_transition_time": time or stamp}))
    return stamped


def invalid_status(
    generation: int,
    message: str,
    previous: Sequence[Mapping[str, Any]],
    now: datetime,
    excluded: Mapping[str, datetime] | None = None,
) -> LLMDeploymentStatus:
    """Status of a resource whose spec cannot be planned: Planned=False, phase Failed."""
    conditions = [
        new_condition("Planned", False, "InvalidSpec", message, generation),
        new_condition("Ready", False, "InvalidSpec", message, generation),
        # kstatus (Flux, kpt, Config Sync) reads Stalled=True as Failed, not as in progress.
        new_condition("Stalled", True, "InvalidSpec", message, generation),
    ]
    return LLMDeploymentStatus(
        observed_generation=generation,
        phase="Failed",
        conditions=stamp_conditions(conditions, previous, now),
        **exclusion_fields(excluded or {}),
    )


def status_update(
    resource: LLMDeployment,
    generation: int,
    desired: Desired,
    workload: WorkloadStatus | None,
    capacity: Condition | None,
    error: str | None,
    previous: Sequence[Mapping[str, Any]],
    now: datetime,
    excluded: Mapping[str, datetime] | None = None,
    extra: Sequence[Condition] = (),
) -> LLMDeploymentStatus:
    """The whole status the operator owns, with lastTransitionTime kept where nothing changed.
    `error`: why applying failed; `extra`: conditions of other parts (the autoscaler's)."""
    plan = desired.plan
    replicas = desired_replicas(resource, plan)
    ready = workload.ready_replicas if workload else 0
    status = LLMDeploymentStatus(
        observed_generation=generation,
        **exclusion_fields(excluded or {}),
        plan=plan.model_dump(mode="json", by_alias=True, exclude_none=True),
        plan_key=desired.plan_key,
        gpu=plan.gpu,
        gpu_count=plan.gpu_count,
        quantization=plan.quantization,
        tensor_parallel=plan.tensor_parallel,
        expert_parallel=plan.expert_parallel,
        cost_per_hour=None if plan.cost_per_hour is None else f"{cost_at(plan, replicas):.2f}",
        replicas=replicas if plan.feasible else 0,
        ready_replicas=ready,
        selector=f"llmdeploy.io/deployment={resource.metadata.name}",
    )
    if not plan.feasible:
        why = "; ".join(plan.reasons)
        conditions = [
            new_condition("Planned", False, "NoFeasiblePlan", why, generation),
            new_condition("Ready", False, "NoFeasiblePlan", why, generation),
            new_condition("Stalled", True, "NoFeasiblePlan", why, generation),
        ]
        return status.model_copy(
            update={"phase": "Failed", "conditions": stamp_conditions(conditions, previous, now)}
        )
    settled = bool(
        workload
        and workload.exists
        and workload.up_to_date
        and workload.updated_replicas >= replicas
        and ready >= replicas
    )
    available = ready >= replicas and (ready > 0 or replicas == 0)
    counts = f"{ready}/{replicas} replicas ready"
    conditions = [
        new_condition(
            "Planned",
            True,
            "Planned",
            f"{plan.gpu} x{plan.gpu_count} {plan.quantization} TP{plan.tensor_parallel} "
            f"PP{plan.pipeline_parallel}{expert_label(plan)}, {replicas} replica(s), "
            f"${plan.cost_per_hour}/h",
            generation,
        ),
        new_condition(
            "Progressing",
            not settled,
            "RolloutComplete" if settled else "RolloutInProgress",
            counts,
            generation,
        ),
        new_condition(
            "Available",
            available,
            "MinimumReplicasAvailable" if ready >= replicas else "ReplicasNotReady",
            counts,
            generation,
        ),
    ]
    if capacity is not None:
        conditions.append(capacity)
    conditions.append(
        new_condition("Degraded", True, "ApplyFailed", error, generation)
        if error
        else new_condition("Degraded", False, "ReconcileSucceeded", "", generation)
    )
    conditions.extend(extra)
    # kstatus and Flux read Ready: serving the current generation, rollout done, no error.
    ready_now = settled and available and not error
    conditions.append(
        new_condition(
            "Ready",
            ready_now,
            "Ready" if ready_now else ("ApplyFailed" if error else "RolloutInProgress"),
            error or counts,
            generation,
        )
    )
    if error:
        phase = "Degraded"
    elif capacity is not None and capacity.status == "False":
        phase = "Pending"
    else:
        phase = "Ready" if settled else "Progressing"
    return status.model_copy(
        update={"phase": phase, "conditions": stamp_conditions(conditions, previous, now)}
    )


def autoscaler_status(
    decision: Decision,
    values: Mapping[str, float | None],
    now: datetime,
    previous: Mapping[str, Any] | None,
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
        return new_condition("MetricsAvailable", None, "ScaledToZero", decision.reason, generation)
    if decision.metrics_available:
        return new_condition("MetricsAvailable", True, "MetricsRead", "", generation)
    return new_condition(
        "MetricsAvailable", False, "MetricsUnavailable", decision.reason, generation
    )


def settled_rollout(
    resource: LLMDeployment,
    rollout: RolloutStatus | None,
    owner: Owner,
    serving: str,
    key: str,
) -> RolloutStatus | None:
    """status.rollout when no pilot runs: the serving generation, with the last pilot's
    outcome and measurements and the plans rolled back, which stay remembered. Absent for an
    object that never piloted."""
    current = Generation(
        generation=serving, workload=workload_name(owner.name, serving), plan_key=key
    )
    if rollout is None:
        return RolloutStatus(current=current) if resource.spec.rollout.strategy == "Pilot" else None
    kept = rollout.reason == "Promoted"  # the last pilot's outcome, while it is the latest
    return rollout.model_copy(
        update={
            "current": current,
            "candidate": None,
            "phase": "Stable",
            "traffic_percent": 0,
            "reason": rollout.reason if kept else "",
            "message": rollout.message if kept else "",
        }
    )


Stored = TypeVar("Stored", bound=BaseModel)


def read_stored(model: type[Stored], value: object) -> Stored | None:
    """A status field as written; None (decide it afresh) when absent or unreadable (written
    by hand, or by another release)."""
    if not value:
        return None
    try:
        return model.model_validate(value)
    except ValidationError:
        return None


def stored_autoscaler_state(stored: object) -> AutoscalerState:
    """The autoscaler's persisted history; a fresh one, as on a first start, when it cannot be
    read (status written by hand or by another release): one garbled field must not stop the
    object's reconciles."""
    try:
        return AutoscalerState.model_validate(stored or {})
    except ValidationError:
        return AutoscalerState()


def expert_label(plan: Plan) -> str:
    """` EP8` where the plan spreads the experts over ranks, else nothing."""
    return f" EP{plan.expert_parallel}" if (plan.expert_parallel or 1) > 1 else ""


def plan_summary(plan: Plan) -> str:
    return (
        f"{plan.gpu} x{plan.gpu_count} {plan.quantization} TP{plan.tensor_parallel} "
        f"PP{plan.pipeline_parallel}{expert_label(plan)} KV {plan.kv_cache_dtype}, "
        f"{plan.replicas} replica(s), "
        f"est. TTFT {plan.estimated_ttft_ms} ms TPOT {plan.estimated_tpot_ms} ms, "
        f"${plan.cost_per_hour}/h"
    )


def planned_message(status: Mapping[str, Any]) -> str | None:
    return next(
        (c.get("message") for c in status.get("conditions") or [] if c.get("type") == "Planned"),
        None,
    )


def recorded_served_since(status: Mapping[str, Any]) -> float | None:
    """When the engines first served, as a measurement recorded it
    (status.observed.servedSince); None where none has."""
    observed = read_stored(Observed, status.get("observed"))
    first = observed.served_since if observed else None
    return parse_timestamp(first) if first else None


def parse_timestamp(text: str) -> float | None:
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return None
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


def kept_conditions(status: Mapping[str, Any], types: Sequence[str]) -> list[Condition]:
    return [
        Condition.model_validate(c)
        for c in status.get("conditions") or []
        if isinstance(c, Mapping) and c.get("type") in types
    ]


def replace_conditions(
    new: LLMDeploymentStatus,
    conditions: Sequence[Condition],
    previous: Sequence[Mapping[str, Any]],
    now: datetime,
) -> LLMDeploymentStatus:
    replaced = {c.type for c in conditions}
    kept = [c for c in new.conditions if c.type not in replaced]
    return new.model_copy(
        update={"conditions": [*kept, *stamp_conditions(conditions, previous, now)]}
    )
