"""decide: what one reconcile should do, as a pure function of what observe saw.

No I/O and no clients here (an import contract in `make lint` enforces it): the same snapshot
always gives the same outcome, and unit tests drive every decision with plain data.

Some observations cost a request and matter only in some states (pending pods while replicas
are missing, Prometheus for operator-mode autoscaling and for a measurement that is due, GPUs in
use before a scale-up). decide asks for them through `Outcome.needs`; the reconcile observes
them and decides again.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from llmdeploy.api.status import (
    Calibration,
    Candidate,
    Condition,
    FailedPlan,
    Generation,
    GenerationMeasurement,
    GpuExclusion,
    LLMDeploymentStatus,
    Observed,
    Phase,
    Recommendation,
    RecommendationBasis,
    RolloutStatus,
)
from llmdeploy.api.types import LLMDeployment, duration_seconds, format_validation_error
from llmdeploy.autoscale.decision import (
    IDLE_SIGNALS,
    AutoscalerState,
    Decision,
    MetricsReading,
    Observation,
    serving_share,
)
from llmdeploy.autoscale.decision import decide as decide_replicas
from llmdeploy.autoscale.policy import effective_scaling
from llmdeploy.autoscale.promql import activation_query, query
from llmdeploy.catalog import Catalog, ImageLock
from llmdeploy.cluster.objects import (
    OLD_FINALIZER,
    ChildKey,
    LiveChild,
    Owner,
    PendingPod,
    WorkloadStatus,
    prepared,
)
from llmdeploy.controller.rollout import (
    OVERRIDE_ANNOTATION,
    CandidateHealth,
    generation_of,
    override,
    pilot_replicas,
    step,
    traffic_share,
)
from llmdeploy.controller.routing import routable
from llmdeploy.measure.calibration import SMOOTHING, calibrated, latency_calibration
from llmdeploy.measure.observed import Verdict, observe, plan_drift, slo_met
from llmdeploy.measure.queries import MeasurementQueries, measurement_queries, window_seconds
from llmdeploy.measure.results import Readings
from llmdeploy.render import (
    DEFAULT_PROMETHEUS,
    GENERATION_LABEL,
    NO_HOST_ACCESS,
    SPEC_HASH_ANNOTATION,
    HostAccess,
    PrometheusTarget,
    RenderError,
    prometheus_endpoint,
    render_manifests,
    workload_name,
)
from llmdeploy.render.kinds import WORKLOAD_KINDS
from llmdeploy.sizing import (
    LatencyCalibration,
    Plan,
    SpecError,
    plan_deployment,
)
from llmdeploy.sizing.inventory import (
    Inventory,
    cluster_catalog,
    placement_for_cluster,
    schedulable_replicas,
)
from llmdeploy.sizing.optimizer import placement_gpus

# The autoscaler's history changes every tick; it is persisted on a change of decision or
# this often, which bounds what a fail-over can lose of it.
PERSIST_AUTOSCALER_EVERY_S = 30.0
ACTIVATION = "activation"  # its key among the readings and in status.autoscaler.metrics
EXCLUDED_GPU_TTL_S = 3600.0  # a stock-out seldom lasts longer; then the SKU is tried again
MEASURE_INTERVAL_S = 60.0  # status.observed is this old at most (plus a resync)
MEASURE_WINDOW = "10m"
MEASURE_WINDOW_S = window_seconds(MEASURE_WINDOW)
# A pilot's first measurement covers at least this much serving (or a whole window).
PILOT_MIN_WINDOW_S = 60
MAX_FAILED_PLANS = 10  # rolled-back plans remembered in status.rollout.failed
# The kinds a pilot's generation has of its own; everything else is shared by the generations.
GENERATION_KINDS = WORKLOAD_KINDS | {"ConfigMap", "InferencePool"}


@dataclass(frozen=True, slots=True)
class Config:
    """What decide needs from the operator's process: fixed while it runs."""

    catalog: Catalog
    lock: ImageLock
    provisionable: set[str] | None
    prometheus: Mapping[str, PrometheusTarget]  # the endpoints the settings allow, by name
    host_access: HostAccess  # what objects may reach beyond their namespace
    excluded_gpu_ttl_s: float = EXCLUDED_GPU_TTL_S  # how long a starved SKU stays excluded
    measure_interval_s: float = MEASURE_INTERVAL_S  # between two measurements of an object
    measure_window_s: int = MEASURE_WINDOW_S  # what one measurement covers, up to its time


@dataclass(frozen=True, slots=True)
class Desired:
    plan: Plan
    plan_key: str  # changes when a new plan is due (spec minus replicas, excluded GPUs)
    objects: tuple[dict[str, Any], ...] = ()
    workload_kind: str | None = None
    spec_hash: str | None = None  # the digest of the pod template every pod of this plan carries
    generation: str = ""  # its workload's generation label ("": the first workload's, none)

    @classmethod
    def rendered(
        cls, plan: Plan, key: str, objects: Sequence[dict[str, Any]], generation: str = ""
    ) -> Desired:
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
        return cls(plan, key, tuple(objects), kind, spec_hash, generation)


@dataclass(frozen=True, slots=True)
class Rendered:
    """A render and the inputs it came from, kept in the object's record: an unchanged object
    is not rendered again on every resync."""

    inputs: tuple[Any, ...]
    desired: Desired


@dataclass(frozen=True, slots=True)
class Remembered:
    """The autoscaler's state between status writes, and when it was last persisted."""

    state: AutoscalerState
    persisted_at: float


@dataclass(frozen=True, slots=True)
class Needs:
    """Observations decide asks for before it can decide."""

    pending_pods: bool = False
    spec_hash: str | None = None  # of the pods whose scheduling matters: the current plan's
    queries: tuple[tuple[str, str], ...] = ()  # (key, PromQL) to read from Prometheus
    measure: MeasurementQueries | None = None  # a measurement for status.observed
    prometheus: str = DEFAULT_PROMETHEUS  # the endpoint to read them from
    # GPUs in use, with the pods of this generation of the object ("": the first workload's)
    # counted as its placed replicas; None: not asked.
    gpus_in_use: str | None = None
    crashes_of: str | None = None  # a pilot's candidate generation: does a pod of it crash?
    serving: str | None = None  # a pilot's serving workload the watch does not show: is it gone?
    # A pilot's measurement of each generation from its own series: (generation, queries).
    generations: tuple[tuple[str, MeasurementQueries], ...] = ()

    def __bool__(self) -> bool:
        return bool(
            self.pending_pods
            or self.queries
            or self.measure
            or self.gpus_in_use is not None
            or self.crashes_of is not None
            or self.serving is not None
            or self.generations
        )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One object as observe saw it. Optional observations are None until asked for."""

    body: Mapping[str, Any]
    children: Mapping[ChildKey, LiveChild]
    applied: Mapping[ChildKey, tuple[str, str]]  # what this process applied: (hash, revision)
    inventory: Inventory
    now: datetime
    rendered: Rendered | None = None
    autoscaler: Remembered | None = None
    error: str | None = None  # why the last act failed, if it did
    pending: tuple[PendingPod, ...] | None = None
    metrics: MetricsReading | None = None
    # (GPUs by node, the serving generation's pods among them)
    gpus_in_use: tuple[dict[str, int], int] | None = None
    measured: Readings | None = None  # the measurement's readings, taken at `now`
    crash: str | None = None  # Needs.crashes_of's answer: how a pod crashes, "" for none
    serving_exists: bool | None = None  # Needs.serving's answer
    generations_measured: Mapping[str, Readings] | None = None  # by generation, at `now`
    endpoint_picker: bool | None = None  # whether spec.routing's picker Service exists


@dataclass(frozen=True, slots=True)
class Event:
    reason: str
    message: str
    warning: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    needs: Needs = field(default_factory=Needs)
    apply: tuple[dict[str, Any], ...] = ()  # prepared children to server-side apply
    prune: tuple[tuple[ChildKey, str], ...] = ()  # ((kind, name), uid) to delete
    status: LLMDeploymentStatus | None = None  # the whole status the operator owns
    events: tuple[Event, ...] = ()  # posted once the status is written
    scale_to: int | None = None  # replicas to write through /scale
    scale_reason: str = ""
    # (kind, name, replicas) of a workload to scale through its own /scale: a pilot's serving
    # generation, whose template is no longer the spec's to re-apply.
    scale_workload: tuple[str, str, int] | None = None
    remove_finalizer: bool = False
    rendered: Rendered | None = None
    autoscaler: Remembered | None = None
    # A deadline (pending capacity, an exclusion's expiry, the next measurement) or a re-plan.
    requeue_after_s: float | None = None


def owner_of(body: Mapping[str, Any]) -> Owner:
    metadata = body["metadata"]
    return Owner(metadata["name"], metadata.get("namespace") or "default", metadata["uid"])


def plan_key(resource: LLMDeployment, excluded: Sequence[str]) -> str:
    # Not replicas (the autoscaler's), nor planning, rollout or routing: how measurements feed
    # the next plan, how it goes out and how traffic reaches it do not make one (and an
    # operator upgrade that added such a field re-plans nothing).
    spec = resource.spec.model_dump(
        mode="json", by_alias=True, exclude={"replicas", "planning", "rollout", "routing"}
    )
    canonical = json.dumps({"spec": spec, "excluded": sorted(excluded)}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def plan_for_cluster(
    resource: LLMDeployment,
    catalog: Catalog,
    inventory: Inventory,
    provisionable: set[str] | None,
    excluded: Sequence[str] = (),
    lock: ImageLock | None = None,
    calibration: LatencyCalibration | None = None,
) -> Plan:
    """Plan against the GPUs the cluster has or can provision, and the images the lock pins
    for their platforms and the nodes' drivers; raises SpecError. `llmdeploy plan/render`
    call this too, with the nodes of --inventory (and --calibration)."""
    placement_gpus(resource.spec, catalog)  # an unknown SKU is invalid input, not infeasible
    view = cluster_catalog(catalog, inventory, provisionable)
    spec, reason = placement_for_cluster(resource.spec, view, excluded)
    if spec is None:
        return Plan(
            feasible=False,
            model=resource.spec.model.name,
            engine=resource.spec.engine.name.value,
            reasons=[reason],
        )
    return plan_deployment(spec, view, lock, inventory.drivers_by_sku(view), calibration)


def desired_state(
    resource: LLMDeployment,
    catalog: Catalog,
    lock: ImageLock,
    inventory: Inventory,
    provisionable: set[str] | None,
    excluded: Sequence[str] = (),
    stored_plan: Plan | None = None,
    stored_key: str | None = None,
    host_access: HostAccess = NO_HOST_ACCESS,
    prometheus: Mapping[str, PrometheusTarget] | None = None,
    calibration: LatencyCalibration | None = None,
    serving: str = "",
) -> Desired:
    """The plan (reused while its inputs are unchanged, so replicas do not churn when the
    inventory moves, nor when the calibration does) and the objects that run it. Raises
    SpecError or RenderError."""
    key = plan_key(resource, excluded)
    if stored_plan is not None and stored_key == key:
        plan = stored_plan
    else:
        plan = plan_for_cluster(
            resource, catalog, inventory, provisionable, excluded, lock, calibration
        )
    if not plan.feasible or plan.gpu is None:
        return Desired(plan, key)
    drivers = _drivers(inventory, catalog, plan.gpu)
    objects = render_manifests(
        resource,
        plan,
        catalog,
        lock,
        drivers,
        host_access=host_access,
        prometheus=prometheus,
        generation=serving,
    )
    return Desired.rendered(plan, key, objects, serving)


def cost_at(plan: Plan, replicas: int) -> float:
    """USD per hour of `replicas` replicas of the plan's layout."""
    return (plan.cost_per_hour or 0.0) / max(plan.replicas or 1, 1) * replicas


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


def _rfc3339(when: datetime) -> str:
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


def _exclusion_fields(excluded: Mapping[str, datetime]) -> dict[str, Any]:
    """status.excludedGpus (the plan's input) and status.gpuExclusions (when, for the TTL)."""
    return {
        "excluded_gpus": sorted(excluded),
        "gpu_exclusions": [
            GpuExclusion(gpu=gpu, excluded_at=_rfc3339(at)) for gpu, at in sorted(excluded.items())
        ]
        or None,
    }


def _stamp(
    conditions: Sequence[Condition], previous: Sequence[Mapping[str, Any]], now: datetime
) -> list[Condition]:
    """lastTransitionTime kept where a condition's status did not change."""
    before = {c.get("type"): c for c in previous}
    stamp = _rfc3339(now)
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
        _condition("Planned", False, "InvalidSpec", message, generation),
        _condition("Ready", False, "InvalidSpec", message, generation),
        # kstatus (Flux, kpt, Config Sync) reads Stalled=True as Failed, not as in progress.
        _condition("Stalled", True, "InvalidSpec", message, generation),
    ]
    return LLMDeploymentStatus(
        observed_generation=generation,
        phase="Failed",
        conditions=_stamp(conditions, previous, now),
        **_exclusion_fields(excluded or {}),
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
        **_exclusion_fields(excluded or {}),
        plan=plan.model_dump(mode="json", by_alias=True, exclude_none=True),
        plan_key=desired.plan_key,
        gpu=plan.gpu,
        gpu_count=plan.gpu_count,
        quantization=plan.quantization,
        tensor_parallel=plan.tensor_parallel,
        cost_per_hour=None if plan.cost_per_hour is None else f"{cost_at(plan, replicas):.2f}",
        replicas=replicas if plan.feasible else 0,
        ready_replicas=ready,
        selector=f"llmdeploy.io/deployment={resource.metadata.name}",
    )
    if not plan.feasible:
        why = "; ".join(plan.reasons)
        conditions = [
            _condition("Planned", False, "NoFeasiblePlan", why, generation),
            _condition("Ready", False, "NoFeasiblePlan", why, generation),
            _condition("Stalled", True, "NoFeasiblePlan", why, generation),
        ]
        return status.model_copy(
            update={"phase": "Failed", "conditions": _stamp(conditions, previous, now)}
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
        _condition(
            "Planned",
            True,
            "Planned",
            f"{plan.gpu} x{plan.gpu_count} {plan.quantization} TP{plan.tensor_parallel} "
            f"PP{plan.pipeline_parallel}, {replicas} replica(s), ${plan.cost_per_hour}/h",
            generation,
        ),
        _condition(
            "Progressing",
            not settled,
            "RolloutComplete" if settled else "RolloutInProgress",
            counts,
            generation,
        ),
        _condition(
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
        _condition("Degraded", True, "ApplyFailed", error, generation)
        if error
        else _condition("Degraded", False, "ReconcileSucceeded", "", generation)
    )
    conditions.extend(extra)
    # kstatus and Flux read Ready: serving the current generation, rollout done, no error.
    ready_now = settled and available and not error
    conditions.append(
        _condition(
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
        update={"phase": phase, "conditions": _stamp(conditions, previous, now)}
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
        return _condition("MetricsAvailable", None, "ScaledToZero", decision.reason, generation)
    if decision.metrics_available:
        return _condition("MetricsAvailable", True, "MetricsRead", "", generation)
    return _condition("MetricsAvailable", False, "MetricsUnavailable", decision.reason, generation)


def pending_timeout_seconds(resource: LLMDeployment) -> int:
    return duration_seconds(resource.spec.placement.pending_timeout)


def _render_inputs(
    generation: int,
    key: str,
    plan: Plan,
    config: Config,
    inventory: Inventory,
    serving: str,
) -> tuple[Any, ...]:
    """Everything a render depends on besides the catalog and image lock, which are fixed for
    the process: the spec (its generation), the plan (its key), the nodes' drivers and the
    serving workload's generation."""
    return (generation, key, tuple(_drivers(inventory, config.catalog, plan.gpu)), serving)


def _drivers(inventory: Inventory, catalog: Catalog, gpu: str | None) -> list[tuple[int, int]]:
    """The driver versions of the nodes with the plan's GPU: they pick its image."""
    return inventory.drivers(catalog, gpu) if gpu and gpu in catalog.gpus else []


def _settled_rollout(
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


def _stored(model: type[Stored], value: object) -> Stored | None:
    """A status field as written; None (decide it afresh) when absent or unreadable (written
    by hand, or by another release)."""
    if not value:
        return None
    try:
        return model.model_validate(value)
    except ValidationError:
        return None


def _stored_state(stored: object) -> AutoscalerState:
    """The autoscaler's persisted history; a fresh one, as on a first start, when it cannot be
    read (status written by hand or by another release): one garbled field must not stop the
    object's reconciles."""
    try:
        return AutoscalerState.model_validate(stored or {})
    except ValidationError:
        return AutoscalerState()


def _summary(plan: Plan) -> str:
    return (
        f"{plan.gpu} x{plan.gpu_count} {plan.quantization} TP{plan.tensor_parallel} "
        f"PP{plan.pipeline_parallel} KV {plan.kv_cache_dtype}, {plan.replicas} replica(s), "
        f"est. TTFT {plan.estimated_ttft_ms} ms TPOT {plan.estimated_tpot_ms} ms, "
        f"${plan.cost_per_hour}/h"
    )


def _planned_message(status: Mapping[str, Any]) -> str | None:
    return next(
        (c.get("message") for c in status.get("conditions") or [] if c.get("type") == "Planned"),
        None,
    )


def decide(snap: Snapshot, config: Config) -> Outcome:
    body = snap.body
    status: Mapping[str, Any] = body.get("status") or {}
    metadata = body["metadata"]
    generation = int(metadata.get("generation") or 0)
    previous = status.get("conditions") or []
    excluded_at, expired, next_expiry = _live_exclusions(status, snap.now, config)
    excluded = sorted(excluded_at)
    upgrade = OLD_FINALIZER in (metadata.get("finalizers") or [])

    def invalid(message: str) -> Outcome:
        events = (
            () if _planned_message(status) == message else (Event("InvalidSpec", message, True),)
        )
        return Outcome(
            status=invalid_status(generation, message, previous, snap.now, excluded_at),
            events=(*expired, *events),
            remove_finalizer=upgrade,
        )

    try:
        resource = LLMDeployment.model_validate(dict(body))
    except ValidationError as exc:
        return invalid(format_validation_error(exc))
    key = plan_key(resource, excluded)
    rollout = _stored(RolloutStatus, status.get("rollout"))
    if resource.spec.rollout.strategy == "Pilot":
        try:
            piloted = _pilot(
                snap, config, resource, key, excluded, excluded_at, expired, rollout, upgrade
            )
        except (SpecError, RenderError) as exc:
            return invalid(str(exc))
        if piloted is not None:
            return piloted
    # Which workload serves: a pilot promoted earlier named it after its generation.
    serving = _serving(snap, rollout).generation
    stored = _stored(Plan, status.get("plan")) if status.get("planKey") == key else None
    memo = snap.rendered
    try:
        if (
            stored is not None
            and memo is not None
            and memo.inputs
            == _render_inputs(generation, key, stored, config, snap.inventory, serving)
        ):
            desired = memo.desired
        else:
            desired = desired_state(
                resource,
                config.catalog,
                config.lock,
                snap.inventory,
                config.provisionable,
                excluded,
                stored,
                key,
                config.host_access,
                config.prometheus,
                latency_calibration(_stored_calibration(resource, status)),
                serving,
            )
    except (SpecError, RenderError) as exc:
        return invalid(str(exc))
    plan = desired.plan
    if memo is None or memo.desired is not desired:
        inputs = _render_inputs(generation, key, plan, config, snap.inventory, serving)
        memo = Rendered(inputs, desired) if plan.feasible else None
    rendered = memo
    events: list[Event] = list(expired)
    if key != status.get("planKey"):
        events.append(
            Event("Planned", _summary(plan))
            if plan.feasible
            else Event("NoFeasiblePlan", "; ".join(plan.reasons), True)
        )
    owner = owner_of(body)

    # Children. An infeasible re-plan leaves what runs untouched: never tear down serving
    # replicas for a plan that cannot run.
    apply: list[dict[str, Any]] = []
    prune: list[tuple[ChildKey, str]] = []
    if plan.feasible:
        apply = _changed(desired.objects, snap, owner)
        wanted = {(o["kind"], o["metadata"]["name"]) for o in desired.objects}
        prune = sorted(
            (name, live.uid)
            for name, live in snap.children.items()
            if name not in wanted and live.owner_uid == owner.uid
        )

    workload_status = None
    if desired.workload_kind:
        live_workload = snap.children.get(
            (desired.workload_kind, workload_name(owner.name, serving))
        )
        workload_status = (live_workload and live_workload.workload) or WorkloadStatus(False)
    # Pods can only be waiting for GPUs while fewer are ready than wanted.
    replicas = desired_replicas(resource, plan)
    capacity = None
    requeue = None
    if plan.feasible and workload_status is not None and workload_status.exists:
        if not workload_status.up_to_date:
            # Its controller has not acted on this generation yet: no pods of it to judge,
            # so the last verdict stands (and a new workload gets none) until it has.
            capacity = next(iter(_kept_conditions(status, ("CapacityAvailable",))), None)
        elif workload_status.ready_replicas < replicas:
            if snap.pending is None:
                needs = Needs(pending_pods=True, spec_hash=desired.spec_hash)
                return Outcome(needs=needs, rendered=rendered)
            timeout = pending_timeout_seconds(resource)
            capacity, starved = capacity_condition(snap.pending, snap.now, timeout, generation)
            if starved is not None and resource.spec.placement.fallback and plan.gpu:
                excluded_at[plan.gpu] = snap.now
                return _fall_back(
                    status, excluded_at, expired, plan.gpu, starved.message, generation, upgrade
                )
            if snap.pending and starved is None:  # the capacity deadline
                oldest = min(p.since for p in snap.pending)
                requeue = max(1.0, timeout - (snap.now - oldest).total_seconds())
        else:
            capacity, _ = capacity_condition((), snap.now, 0, generation)

    extra: list[Condition] = []
    observed = None
    calibration = _stored_calibration(resource, status)
    recommendation = None
    if plan.feasible:
        deployed = workload_status is not None and workload_status.exists
        measured = _measurement(snap, config, resource, plan, status, generation, deployed)
        if isinstance(measured, Needs):
            return Outcome(needs=measured, rendered=rendered)
        observed, verdicts, due_in = measured
        for type_, verdict in verdicts:
            extra.append(_condition_of(type_, verdict, generation))
            event = _transition_event(type_, verdict, previous)
            if event is not None:
                events.append(event)
        calibration, recommendation, recommended = _learned(
            snap, config, resource, plan, status, observed, excluded
        )
        if recommended is not None:
            events.append(recommended)
        unapplied = {(c["kind"], c["metadata"]["name"]) for c in apply}
        routed = routable(
            resource, owner.namespace, snap.children, unapplied, snap.endpoint_picker, snap.error
        )
        if routed is not None:
            extra.append(_condition_of("Routable", routed, generation))
            event = _transition_event("Routable", routed, previous)
            if event is not None:
                events.append(event)
        if due_in is not None:
            requeue = due_in if requeue is None else min(requeue, due_in)
    scale_to = None
    scale_reason = ""
    remembered = snap.autoscaler
    autoscaler_field = status.get("autoscaler")
    scaling = resource.spec.scaling
    if (
        scaling is not None
        and scaling.mode == "operator"
        and snap.error is None
        and plan.feasible
        and workload_status is not None
        and workload_status.exists
    ):
        scaled = _autoscale(snap, config, resource, desired, workload_status, status, generation)
        if isinstance(scaled, Needs):
            return Outcome(needs=scaled, rendered=rendered)
        decision, remembered, autoscaler_field = scaled
        extra.append(metrics_condition(decision, generation))
        if decision.desired_replicas != desired_replicas(resource, plan):
            scale_to, scale_reason = decision.desired_replicas, decision.reason

    new_status = status_update(
        resource,
        generation,
        desired,
        workload_status,
        capacity,
        snap.error,
        previous,
        snap.now,
        excluded_at,
        extra,
    ).model_copy(
        update={
            "autoscaler": autoscaler_field,
            "observed": observed,
            "calibration": calibration,
            "recommendation": recommendation,
            "rollout": _settled_rollout(resource, rollout, owner, serving, key),
        }
    )
    if next_expiry is not None:  # a deadline of its own, like the capacity's
        requeue = next_expiry if requeue is None else min(requeue, next_expiry)
    if snap.error and _degraded_message(status) != snap.error:
        events.append(Event("ApplyFailed", snap.error, True))
    return Outcome(
        apply=tuple(apply),
        prune=tuple(prune),
        status=new_status,
        events=tuple(events),
        scale_to=scale_to,
        scale_reason=scale_reason,
        remove_finalizer=upgrade,
        rendered=rendered,
        autoscaler=remembered,
        requeue_after_s=requeue,
    )


def _degraded_message(status: Mapping[str, Any]) -> str | None:
    return next(
        (
            c.get("message")
            for c in status.get("conditions") or []
            if c.get("type") == "Degraded" and c.get("status") == "True"
        ),
        None,
    )


def reconcile_error(
    status: Mapping[str, Any], generation: int, message: str, now: datetime
) -> tuple[dict[str, Any], tuple[Event, ...]]:
    """A reconcile that raised what the operator does not expect (a bug): the status patch that
    says so (Degraded=True and Ready=False, reason ReconcileError; every other condition and
    field as it was, for the plan may still run) and a Warning event once per distinct failure,
    not once per retry. The next reconcile that succeeds writes Degraded=False again."""
    previous = [c for c in status.get("conditions") or [] if isinstance(c, Mapping)]
    failing = _stamp(
        [
            _condition("Degraded", True, "ReconcileError", message, generation),
            _condition("Ready", False, "ReconcileError", message, generation),
        ],
        previous,
        now,
    )
    conditions = [
        *(c for c in previous if c.get("type") not in ("Degraded", "Ready")),
        *(c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in failing),
    ]
    wanted = {"phase": "Degraded", "conditions": conditions}
    patch = {k: v for k, v in wanted.items() if status.get(k) != v}
    told = _degraded_message(status) == message
    return patch, () if told else (Event("ReconcileError", message, True),)


def _fall_back(
    status: Mapping[str, Any],
    excluded: Mapping[str, datetime],
    expired: Sequence[Event],
    gpu: str,
    why: str,
    generation: int,
    upgrade: bool,
) -> Outcome:
    """Drop the starved SKU (`excluded` has it, since now); the reconcile that follows plans
    without it."""
    current = LLMDeploymentStatus.model_validate(dict(status))
    update = {**_exclusion_fields(excluded), "plan_key": None, "observed_generation": generation}
    return Outcome(
        status=current.model_copy(update=update),
        events=(
            *expired,
            Event(
                "FallbackReplan",
                f"{gpu} capacity did not arrive ({why}); re-planning without it",
                True,
            ),
        ),
        remove_finalizer=upgrade,
        requeue_after_s=0.0,
    )


def _live_exclusions(
    status: Mapping[str, Any], now: datetime, config: Config
) -> tuple[dict[str, datetime], tuple[Event, ...], float | None]:
    """The exclusions still within the TTL, an event for each that ran out (its SKU is planned
    with again), and the seconds until the next one runs out."""
    ttl = timedelta(seconds=config.excluded_gpu_ttl_s)
    live: dict[str, datetime] = {}
    expired = []
    for gpu, at in stored_exclusions(status, now).items():
        if now - at < ttl:
            live[gpu] = at
        else:
            expired.append(
                Event(
                    "ExclusionExpired",
                    f"{gpu} was excluded at {_rfc3339(at)}, more than "
                    f"{config.excluded_gpu_ttl_s:g}s ago (LLMDEPLOY_EXCLUDED_GPU_TTL_SECONDS); "
                    "planning with it again",
                )
            )
    next_expiry = min(((at + ttl - now).total_seconds() for at in live.values()), default=None)
    return live, tuple(expired), None if next_expiry is None else max(1.0, next_expiry)


def _autoscale(
    snap: Snapshot,
    config: Config,
    resource: LLMDeployment,
    desired: Desired,
    workload: WorkloadStatus,
    status: Mapping[str, Any],
    generation: int,
    beside: int | None = None,
    piloting: bool = False,
) -> Needs | tuple[Decision, Remembered, dict[str, Any]]:
    """Operator-mode autoscaling: the decision, the state to remember, status.autoscaler.
    `beside`: while a pilot runs, the replicas its candidate serves with (the routing's
    split), which take their share of the load the engines report; `piloting`: a candidate
    runs, so no scale to zero."""
    assert resource.spec.scaling is not None
    scaling = effective_scaling(resource.spec.scaling, desired.plan)
    if piloting:  # a pilot compares the generations under load: never to zero
        scaling = scaling.model_copy(update={"scale_to_zero": None})
    stz = scaling.scale_to_zero
    wanted: list[str] = [m.type for m in scaling.metrics]
    if stz is not None:  # idleness is read from these whatever the spec scales on
        wanted += [t for t in IDLE_SIGNALS if t not in wanted]
    current = desired_replicas(resource, desired.plan)
    now = snap.now.timestamp()
    reading = snap.metrics
    endpoint = prometheus_endpoint(scaling)
    known = endpoint in config.prometheus
    if known and reading is None:
        owner = owner_of(snap.body)
        if current > 0:
            engine = resource.spec.engine.name
            queries = tuple((t, query(t, owner.namespace, owner.name, engine)) for t in wanted)
            return Needs(queries=queries, prometheus=endpoint)
        if stz is not None and stz.activation_metric is not None:
            promql = activation_query(stz.activation_metric, owner.namespace)
            return Needs(queries=((ACTIVATION, promql),), prometheus=endpoint)
    reading = reading or MetricsReading(dict.fromkeys(wanted))
    values = {t: reading.values.get(t) for t in wanted}
    activation = reading.values.get(ACTIVATION)
    autoscaler = status.get("autoscaler")
    previous: Mapping[str, Any] = autoscaler if isinstance(autoscaler, Mapping) else {}
    # What this process remembers since the last status write, else (after a start or a
    # fail-over) the history stored on the object.
    stored = previous.get("state")
    remembered = snap.autoscaler or Remembered(_stored_state(stored), now)
    own = values if beside is None else serving_share(values, current, beside)
    observation = Observation(now, current, workload.ready_replicas, own, activation=activation)
    decision = decide_replicas(scaling, observation, remembered.state)
    if decision.desired_replicas > current:
        # Cap a scale-up by the GPUs free now (unless an autoscaler can add nodes).
        if snap.gpus_in_use is None:
            return Needs(gpus_in_use=desired.generation)
        plan = desired.plan
        assert plan.gpu is not None
        multi_node = desired.workload_kind == "LeaderWorkerSet"
        in_use, placed = snap.gpus_in_use
        schedulable = schedulable_replicas(
            config.catalog,
            snap.inventory,
            in_use,
            plan.gpu,
            plan.tensor_parallel or 1 if multi_node else plan.gpu_count or 1,
            plan.pipeline_parallel or 1 if multi_node else 1,
            placed,
            config.provisionable,
        )
        observation = replace(observation, schedulable_replicas=schedulable)
        decision = decide_replicas(scaling, observation, remembered.state)
    if beside:
        decision = replace(
            decision,
            reason=f"{decision.reason} (the serving generation's share of the load: "
            f"{current} of {current + beside} replicas)",
        )
    if not known:
        why = (
            f"no Prometheus endpoint named {endpoint} in the operator's settings"
            if scaling.prometheus
            else "no Prometheus configured"
        )
        decision = replace(decision, reason=f"holding {current}: {why}")
    elif reading.problem is not None and decision.desired_replicas == current:
        decision = replace(decision, reason=f"{decision.reason}; Prometheus: {reading.problem}")
    seen = values if activation is None else {**values, ACTIVATION: activation}
    fresh = autoscaler_status(decision, seen, snap.now, previous)
    persisted = remembered.persisted_at
    if (
        decision.desired_replicas != current
        or fresh["reason"] != previous.get("reason")
        # A lost end of an idle stretch could, after a restart, send busy replicas to zero.
        or fresh["state"].get("idleSince")
        != (stored.get("idleSince") if isinstance(stored, Mapping) else None)
        or now - persisted >= PERSIST_AUTOSCALER_EVERY_S
        or not previous
    ):
        field_value, persisted = fresh, now
    else:
        field_value = dict(previous)
    return decision, Remembered(decision.state, persisted), field_value


# The status of a measured condition whose transition to it is a Warning event.
WARN_ON = {"SLOMet": "False", "PlanDrift": "True", "Routable": "False"}


def _measurement(
    snap: Snapshot,
    config: Config,
    resource: LLMDeployment,
    plan: Plan,
    status: Mapping[str, Any],
    generation: int,
    serving: bool,
) -> Needs | tuple[Observed | None, list[tuple[str, Verdict]], float | None]:
    """status.observed, the SLOMet and PlanDrift verdicts, and the seconds until the next
    measurement is due; or the measurement to take first. A measurement is due when status
    has none, or it is an interval old, or the spec changed since (the SLO it was judged
    against may have); otherwise the one in status is reused. Nothing is measured before the
    workload exists."""
    scaling = resource.spec.scaling
    endpoint = prometheus_endpoint(scaling)

    def unknown(reason: str, why: str) -> list[tuple[str, Verdict]]:
        verdict = Verdict(status="Unknown", reason=reason, message=f"not measured: {why}")
        return [("SLOMet", verdict), ("PlanDrift", verdict)]

    if endpoint not in config.prometheus:
        why = (
            f"no Prometheus endpoint named {endpoint} in the operator's settings"
            if endpoint != DEFAULT_PROMETHEUS
            else "no Prometheus configured (LLMDEPLOY_PROMETHEUS_URL)"
        )
        return None, unknown("NoPrometheus", why), None
    engine = config.catalog.engines[resource.spec.engine.name]
    if engine.metrics_for(plan.engine_version) is None:
        why = f"{engine.display_name} {plan.engine_version} serves no Prometheus metrics"
        return None, unknown("NoEngineMetrics", why), None
    if not serving:
        return None, unknown("NotDeployed", "the engines' workload does not exist yet"), None
    now = snap.now.timestamp()
    if snap.measured is not None:
        observed = observe(
            snap.measured,
            plan=plan,
            catalog=config.catalog,
            slo=resource.spec.slo,
            window_s=config.measure_window_s,
            end=now,
        )
        age = 0.0
    else:
        stored = _stored(Observed, status.get("observed"))
        end = None if stored is None else _timestamp(stored.end)
        age = math.inf if end is None else now - end
        fresh = 0 <= age < config.measure_interval_s
        if stored is None or not fresh or status.get("observedGeneration") != generation:
            owner = owner_of(snap.body)
            queries = measurement_queries(
                owner.namespace, owner.name, resource.spec.engine.name, config.measure_window_s
            )
            return Needs(measure=queries, prometheus=endpoint)
        observed = stored
    verdicts = [
        ("SLOMet", slo_met(observed, resource.spec.slo)),
        ("PlanDrift", plan_drift(observed, resource.spec.workload)),
    ]
    return observed, verdicts, max(1.0, math.ceil(config.measure_interval_s - age))


def _stored_calibration(resource: LLMDeployment, status: Mapping[str, Any]) -> Calibration | None:
    if resource.spec.planning.calibration == "off":
        return None
    return _stored(Calibration, status.get("calibration"))


# A recommendation stands while the smoothed measurement stays this close to the one it was
# made for: wider than PlanDrift's band, so that noise around a measurement made at one of its
# extremes does not make it flap (tests/unit/test_decide.py, thirty noisy minutes).
WORKLOAD_BAND = 0.35
RATIO_BAND = 0.25


def _learned(
    snap: Snapshot,
    config: Config,
    resource: LLMDeployment,
    plan: Plan,
    status: Mapping[str, Any],
    observed: Observed | None,
    excluded: Sequence[str],
) -> tuple[Calibration | None, Recommendation | None, Event | None]:
    """status.calibration and status.recommendation after this measurement, and the event of
    a new recommendation. Only a new, full measurement changes them; without one (no
    Prometheus, partial data) nothing is recommended."""
    calibration = _stored_calibration(resource, status)
    basis = recommendation_basis(observed, calibration)
    if observed is None or basis is None:
        return calibration, None, None
    stored = _stored(Recommendation, status.get("recommendation"))
    if stored is not None:  # the running plan may have changed since
        stored = _against(stored, plan, desired_replicas(resource, plan))
    if snap.measured is None:  # the measurement in status, reused
        return calibration, stored, None
    if resource.spec.planning.calibration == "auto" and _rolled_out_before(status, observed):
        calibration = calibrated(calibration, observed, resource.spec, plan, config.catalog)
        basis = recommendation_basis(observed, calibration) or basis
    if stored is not None:
        # Noise moves the smoothed measurement little; a lasting change moves it out of the
        # band at once, and the new recommendation is for what is measured now.
        smoothed = _smoothed(stored.measured, basis)
        if _close(stored.basis, smoothed):
            return calibration, stored.model_copy(update={"measured": smoothed}), None
    made = recommend(
        resource,
        plan,
        basis,
        calibration,
        catalog=config.catalog,
        inventory=snap.inventory,
        provisionable=config.provisionable,
        excluded=excluded,
        lock=config.lock,
        now=snap.now,
    )
    if stored is not None and _layout(stored) == _layout(made):
        return calibration, made, None
    if stored is None and made.same_as_running:
        return calibration, made, None
    return calibration, made, Event("Recommended", made.describe())


def recommendation_basis(
    observed: Observed | None, calibration: Calibration | None
) -> RecommendationBasis | None:
    """What a recommendation is made for: a measurement's workload and the calibration; None
    when the measurement lacks one of its figures."""
    if observed is None:
        return None
    rate, inputs, outputs = (
        observed.requests_per_second,
        observed.input_tokens_mean,
        observed.output_tokens_mean,
    )
    if rate is None or inputs is None or outputs is None or rate <= 0:
        return None
    return RecommendationBasis(
        requests_per_second=rate,
        input_tokens=inputs,
        output_tokens=outputs,
        ttft_ratio=calibration.ttft_ratio if calibration else 1.0,
        tpot_ratio=calibration.tpot_ratio if calibration else 1.0,
    )


def _rolled_out_before(status: Mapping[str, Any], observed: Observed) -> bool:
    """Whether the running layout finished rolling out before the measurement's window
    began: only then is every latency in it the layout the plan predicts for (not the one
    before a change, nor a rollout's cold starts)."""
    progressing = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "Progressing"), None
    )
    if progressing is None or progressing.get("status") != "False":
        return False
    done, end = (
        _timestamp(str(progressing.get("lastTransitionTime") or "")),
        _timestamp(observed.end),
    )
    return done is not None and end is not None and done <= end - observed.window_seconds


def _against(r: Recommendation, running: Plan, replicas: int) -> Recommendation:
    """`r`'s comparison with the plan running now, at the replicas wanted now."""
    if not r.feasible:
        return r
    same = _layout(r) == _layout(running, replicas)
    change = round((r.cost_per_hour or 0.0) - cost_at(running, replicas), 2)
    return r.model_copy(update={"same_as_running": same, "cost_per_hour_change": change})


def _smoothed(before: RecommendationBasis, sample: RecommendationBasis) -> RecommendationBasis:
    """The measured workload smoothed as the calibration is (its ratios are already)."""

    def towards(a: float, b: float) -> float:
        return round(a + SMOOTHING * (b - a), 4)

    return sample.model_copy(
        update={
            "requests_per_second": towards(before.requests_per_second, sample.requests_per_second),
            "input_tokens": towards(before.input_tokens, sample.input_tokens),
            "output_tokens": towards(before.output_tokens, sample.output_tokens),
        }
    )


def _close(made_for: RecommendationBasis, now: RecommendationBasis) -> bool:
    def within(a: float, b: float, tolerance: float) -> bool:
        return abs(b / a - 1) <= tolerance if a > 0 else b == a

    return (
        within(made_for.requests_per_second, now.requests_per_second, WORKLOAD_BAND)
        and within(made_for.input_tokens, now.input_tokens, WORKLOAD_BAND)
        and within(made_for.output_tokens, now.output_tokens, WORKLOAD_BAND)
        and within(made_for.ttft_ratio, now.ttft_ratio, RATIO_BAND)
        and within(made_for.tpot_ratio, now.tpot_ratio, RATIO_BAND)
    )


def _layout(r: Recommendation | Plan, replicas: int | None = None) -> tuple[Any, ...]:
    """What runs: SKU, GPUs, format, parallelism and replicas (a plan's, or `replicas`)."""
    return (
        r.gpu,
        r.gpu_count,
        r.quantization,
        r.tensor_parallel,
        r.pipeline_parallel,
        r.replicas if replicas is None else replicas,
    )


def recommend(
    resource: LLMDeployment,
    running: Plan,
    basis: RecommendationBasis,
    calibration: Calibration | None,
    *,
    catalog: Catalog,
    inventory: Inventory,
    provisionable: set[str] | None,
    excluded: Sequence[str],
    lock: ImageLock,
    now: datetime,
) -> Recommendation:
    """The plan for the measured workload, with the calibration, against the running one
    (the operator's status.recommendation and `llmdeploy report`'s)."""
    workload = resource.spec.workload.model_copy(
        update={
            "requests_per_second": round(basis.requests_per_second, 3),
            "input_tokens": max(1, round(basis.input_tokens)),
            "output_tokens": max(1, round(basis.output_tokens)),
        }
    )
    spec = resource.spec.model_copy(update={"workload": workload, "replicas": None})
    since = _rfc3339(now)
    try:
        plan = plan_for_cluster(
            resource.model_copy(update={"spec": spec}),
            catalog,
            inventory,
            provisionable,
            excluded,
            lock,
            latency_calibration(calibration),
        )
    except SpecError as exc:
        plan = Plan(feasible=False, model=running.model, engine=running.engine, reasons=[str(exc)])
    if not plan.feasible:
        return Recommendation(
            feasible=False,
            summary="no plan fits the measured workload: " + "; ".join(plan.reasons),
            same_as_running=False,
            basis=basis,
            measured=basis,
            since=since,
        )
    made = Recommendation(
        feasible=True,
        summary=_summary(plan),
        gpu=plan.gpu,
        gpu_count=plan.gpu_count,
        quantization=plan.quantization,
        tensor_parallel=plan.tensor_parallel,
        pipeline_parallel=plan.pipeline_parallel,
        replicas=plan.replicas,
        cost_per_hour=plan.cost_per_hour,
        estimated_ttft_ms=plan.estimated_ttft_ms,
        estimated_tpot_ms=plan.estimated_tpot_ms,
        same_as_running=False,
        basis=basis,
        measured=basis,
        since=since,
    )
    return _against(made, running, desired_replicas(resource, running))


def _timestamp(text: str) -> float | None:
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        return None
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


def _condition_of(type_: str, verdict: Verdict, generation: int) -> Condition:
    return Condition(
        type=type_,
        status=verdict.status,
        reason=verdict.reason,
        message=verdict.message,
        observed_generation=generation,
    )


def _transition_event(
    type_: str, verdict: Verdict, previous: Sequence[Mapping[str, Any]]
) -> Event | None:
    """An event when the condition's status changes (a condition not yet in status counts as
    Unknown): not on every refresh of its numbers."""
    before = next((c.get("status") for c in previous if c.get("type") == type_), "Unknown")
    if before == verdict.status:
        return None
    message = f"{type_}={verdict.status} ({verdict.reason}): {verdict.message}"
    return Event(type_, message, WARN_ON[type_] == verdict.status)


# --- Pilot rollouts (spec.rollout.strategy Pilot; controller/rollout.py has the steps) ---


def _serving(snap: Snapshot, rollout: RolloutStatus | None) -> Generation:
    """The generation serving status.plan: status.rollout says; when it cannot be read (written
    by hand), a workload named after the plan's generation is the one a pilot promoted, else
    the object's first workload serves."""
    if rollout is not None:
        return rollout.current
    status: Mapping[str, Any] = snap.body.get("status") or {}
    key = str(status.get("planKey") or "")
    owner = owner_of(snap.body)
    promoted = generation_of(key) if key else ""
    if not promoted or _workload_of(snap, workload_name(owner.name, promoted)) is None:
        promoted = ""
    return Generation(
        generation=promoted, workload=workload_name(owner.name, promoted), plan_key=key or None
    )


def _workload_of(snap: Snapshot, name: str) -> tuple[str, WorkloadStatus] | None:
    """The live workload of that name, with its kind."""
    for kind in sorted(WORKLOAD_KINDS):
        live = snap.children.get((kind, name))
        if live is not None and live.workload is not None:
            return kind, live.workload
    return None


def _changed(
    objects: Sequence[dict[str, Any]], snap: Snapshot, owner: Owner
) -> list[dict[str, Any]]:
    """The prepared objects that differ from what runs, or that someone else changed since."""
    apply = []
    for obj in objects:
        child, digest = prepared(obj, owner)
        name: ChildKey = (obj["kind"], obj["metadata"]["name"])
        live = snap.children.get(name)
        mine = snap.applied.get(name)
        if live is None or live.applied_hash != digest or mine != (digest, live.revision):
            apply.append(child)
    return apply


def _other_generations(
    snap: Snapshot, owner: Owner, keep: Sequence[str]
) -> list[tuple[ChildKey, str]]:
    """This object's workloads, engine-options ConfigMaps and InferencePools of generations not
    in `keep` (the shared pool, named after the object, stays)."""
    names = {owner.name, *(n for w in keep for n in (w, f"{w}-engine-options"))}
    return sorted(
        (key, live.uid)
        for key, live in snap.children.items()
        if key[0] in GENERATION_KINDS and key[1] not in names and live.owner_uid == owner.uid
    )


def _kept_conditions(status: Mapping[str, Any], types: Sequence[str]) -> list[Condition]:
    return [
        Condition.model_validate(c)
        for c in status.get("conditions") or []
        if isinstance(c, Mapping) and c.get("type") in types
    ]


def _replace_conditions(
    new: LLMDeploymentStatus,
    conditions: Sequence[Condition],
    previous: Sequence[Mapping[str, Any]],
    now: datetime,
) -> LLMDeploymentStatus:
    replaced = {c.type for c in conditions}
    kept = [c for c in new.conditions if c.type not in replaced]
    return new.model_copy(update={"conditions": [*kept, *_stamp(conditions, previous, now)]})


def _generation_measurement(
    generation: str,
    measured: Readings,
    plan: Plan,
    config: Config,
    resource: LLMDeployment,
    window_s: int,
    now: datetime,
) -> GenerationMeasurement:
    observed = observe(
        measured,
        plan=plan,
        catalog=config.catalog,
        slo=resource.spec.slo,
        window_s=window_s,
        end=now.timestamp(),
    )
    verdict = slo_met(observed, resource.spec.slo)
    return GenerationMeasurement(
        generation=generation,
        end=observed.end,
        window_seconds=window_s,
        requests=observed.requests,
        ttft_within_slo=observed.ttft_within_slo,
        tpot_within_slo=observed.tpot_within_slo,
        ttft_mean_seconds=observed.ttft_mean_seconds,
        tpot_mean_seconds=observed.tpot_mean_seconds,
        cost_per_million_output_tokens=observed.cost_per_million_output_tokens,
        slo_met=verdict.status,
        slo_message=verdict.message,
    )


def _pilot_measurements(
    snap: Snapshot,
    config: Config,
    resource: LLMDeployment,
    rollout: RolloutStatus,
    candidate: Candidate,
    running: Plan,
) -> Needs | tuple[list[GenerationMeasurement], float | None]:
    """Each serving generation's measurement from its own series since the candidate served
    (the stored one while it is fresh), and the seconds until the next is due; or the queries
    to run first."""
    stored = [
        m
        for m in rollout.measurements
        if m.generation in (candidate.generation, rollout.current.generation)
    ]
    endpoint = prometheus_endpoint(resource.spec.scaling)
    if candidate.serving_since is None or endpoint not in config.prometheus:
        return stored, None
    now = snap.now.timestamp()
    served_s = now - (_timestamp(candidate.serving_since) or now)
    ends = [_timestamp(m.end) for m in stored if m.generation == candidate.generation]
    age = now - ends[0] if ends and ends[0] is not None else math.inf
    if 0 <= age < config.measure_interval_s:
        return stored, max(1.0, math.ceil(config.measure_interval_s - age))
    least = min(PILOT_MIN_WINDOW_S, config.measure_window_s)
    if served_s < least:
        return stored, max(1.0, math.ceil(least - served_s))
    window = int(min(config.measure_window_s, served_s))
    owner = owner_of(snap.body)
    engine = resource.spec.engine.name
    if snap.generations_measured is None:
        asked = tuple(
            (g, measurement_queries(owner.namespace, owner.name, engine, window, generation=g))
            for g in (candidate.generation, rollout.current.generation)
        )
        return Needs(generations=asked, prometheus=endpoint)
    plans = {
        candidate.generation: Plan.model_validate(candidate.plan),
        rollout.current.generation: running,
    }
    fresh = [
        _generation_measurement(g, r, plans[g], config, resource, window, snap.now)
        for g, r in sorted(snap.generations_measured.items())
        if g in plans
    ]
    return fresh, config.measure_interval_s


def rolled_back_conditions(why: str, generation: int) -> list[Condition]:
    """The spec's plan was rolled back and is not tried again until the spec changes: not
    served (Ready=False) and stalled (kstatus: Failed; Argo CD: Degraded), as an infeasible
    spec is, while the serving generation goes on."""
    return [
        _condition(type_, status, "PilotRolledBack", why, generation)
        for type_, status in (("Degraded", True), ("Ready", False), ("Stalled", True))
    ]


def _pilot_scaling(
    snap: Snapshot,
    config: Config,
    resource: LLMDeployment,
    serving: Desired,
    workload: WorkloadStatus,
    status: Mapping[str, Any],
    beside: int | None,
    piloting: bool,
) -> Needs | tuple[int | None, Decision | None, Remembered | None, Any]:
    """Operator-mode autoscaling of a pilot's serving generation (`beside`: the replicas its
    candidate serves with; None: hold, as at the switch): the count to write through the
    object's /scale, the decision, and the autoscaler's state and status field."""
    scaling = resource.spec.scaling
    if (
        beside is None
        or scaling is None
        or scaling.mode != "operator"
        or snap.error is not None
        or not workload.exists
    ):
        return None, None, snap.autoscaler, status.get("autoscaler")
    generation = int(snap.body["metadata"].get("generation") or 0)
    scaled = _autoscale(
        snap, config, resource, serving, workload, status, generation, beside, piloting
    )
    if isinstance(scaled, Needs):
        return scaled
    decision, remembered, field_value = scaled
    count = desired_replicas(resource, serving.plan)
    return (
        None if decision.desired_replicas == count else decision.desired_replicas,
        decision,
        remembered,
        field_value,
    )


def _pilot(
    snap: Snapshot,
    config: Config,
    resource: LLMDeployment,
    key: str,
    excluded: Sequence[str],
    excluded_at: Mapping[str, datetime],
    expired: Sequence[Event],
    rollout: RolloutStatus | None,
    upgrade: bool,
) -> Outcome | None:
    """A new plan under spec.rollout.strategy Pilot while the current one serves: run it as a
    second generation on a share of the traffic, measure both, and promote or roll it back.
    None when there is nothing to pilot against (first plan, nothing serving, the plan is
    the running one): the plan then goes out in place."""
    body = snap.body
    status: Mapping[str, Any] = body.get("status") or {}
    running = _stored(Plan, status.get("plan"))
    running_key = status.get("planKey")
    if running is None or not running.feasible or not running_key or key == running_key:
        return None
    owner = owner_of(body)
    current = _serving(snap, rollout)
    in_pilot = rollout is not None and rollout.candidate is not None
    rolled_back = rollout is not None and any(f.plan_key == key for f in rollout.failed)
    # Status says what serves; the watch may not have shown its workload yet (a restart), or
    # it was deleted: a fresh read tells.
    seen = _workload_of(snap, current.workload)
    if seen is None and snap.serving_exists is None:
        return Outcome(needs=Needs(serving=current.workload))
    gone = seen is None and not snap.serving_exists
    if not (in_pilot or rolled_back or (status.get("readyReplicas") and not gone)):
        return None  # nothing serves, nothing to protect: the plan goes out in place
    current_kind, current_status = seen or (
        "Deployment",
        WorkloadStatus(
            not gone, ready_replicas=0 if gone else int(status.get("readyReplicas") or 0)
        ),
    )
    generation = int(body["metadata"].get("generation") or 0)
    previous = status.get("conditions") or []
    rollout = rollout or RolloutStatus(current=current)
    pilot_spec = resource.spec.rollout.pilot
    replicas = desired_replicas(resource, running)
    events: list[Event] = list(expired)
    routing = resource.spec.routing
    weighted = routing is not None and routing.http_route is not None

    def outcome(
        rolled: RolloutStatus,
        conditions: Sequence[Condition],
        apply: Sequence[dict[str, Any]] = (),
        prune: Sequence[tuple[ChildKey, str]] = (),
        requeue: float | None = None,
        plan: Plan = running,
        plan_key: str = running_key,
        workload: WorkloadStatus = current_status,
        kind: str = current_kind,
        capacity: Condition | None = None,
        beside: int | None = 0,
        phase: Phase | None = None,
        piloting: bool = True,
    ) -> Outcome:
        """`beside`: the replicas the candidate serves with, None once it is promoted. Until
        then the serving generation keeps the spec's count, which operator-mode autoscaling
        moves from the load of both generations."""
        serving = Desired(plan, plan_key, workload_kind=kind, generation=current.generation)
        scaled = _pilot_scaling(snap, config, resource, serving, workload, status, beside, piloting)
        if isinstance(scaled, Needs):
            return Outcome(needs=scaled)
        scale_to, decision, remembered, autoscaler_field = scaled
        if decision is not None:
            conditions = [*conditions, metrics_condition(decision, generation)]
        target = replicas if scale_to is None else scale_to
        resize = None
        if beside is not None and seen is not None and seen[1].wanted != target:
            resize = (current_kind, current.workload, target)
        carried = _kept_conditions(status, ("CapacityAvailable",))
        new_status = status_update(
            resource,
            generation,
            serving,
            workload,
            capacity or (carried[0] if carried else None),
            snap.error,
            previous,
            snap.now,
            excluded_at,
            _kept_conditions(status, ("SLOMet", "PlanDrift", "MetricsAvailable")),
        )
        new_status = _replace_conditions(new_status, conditions, previous, snap.now)
        if phase is not None and snap.error is None:  # an apply that failed: Degraded
            new_status = new_status.model_copy(update={"phase": phase})
        new_status = new_status.model_copy(
            update={
                "rollout": rolled,
                "autoscaler": autoscaler_field,
                "observed": _stored(Observed, status.get("observed")),
                "calibration": _stored(Calibration, status.get("calibration")),
                "recommendation": _stored(Recommendation, status.get("recommendation")),
            }
        )
        return Outcome(
            apply=tuple(apply),
            prune=tuple(prune),
            status=new_status,
            events=tuple(events),
            scale_to=scale_to,
            scale_reason=decision.reason if decision is not None else "",
            scale_workload=resize,
            remove_finalizer=upgrade,
            autoscaler=remembered,
            requeue_after_s=requeue,
        )

    def render(plan: Plan, gen: str, **routing: Any) -> list[dict[str, Any]]:
        """The objects of one generation of this object, with the operator's settings."""
        return render_manifests(
            resource,
            plan,
            config.catalog,
            config.lock,
            _drivers(snap.inventory, config.catalog, plan.gpu),
            host_access=config.host_access,
            prometheus=config.prometheus,
            generation=gen,
            **routing,
        )

    def unrouted() -> list[dict[str, Any]]:
        """With spec.routing.httpRoute: the shared pool and the route as they are without a
        pilot, so that no weight is left on a candidate's pool about to go."""
        if not weighted:
            return []
        try:
            plain = render(running, current.generation)
        except (SpecError, RenderError):
            return []
        return [o for o in plain if o["kind"] in ("InferencePool", "HTTPRoute")]

    failed = next((f for f in rollout.failed if f.plan_key == key), None)
    if failed is not None:  # rolled back: not tried again until the spec changes
        serves = "is gone: nothing serves" if gone else "still serves"
        why = (
            f"plan {key} was rolled back ({failed.reason}: {failed.message}); "
            f"{current.workload} {serves}"
        )
        frozen = rollout.model_copy(
            update={"phase": "RolledBack", "candidate": None, "traffic_percent": 0,
                    "reason": failed.reason, "message": why}
        )  # fmt: skip
        return outcome(
            frozen,
            rolled_back_conditions(why, generation),
            phase="Degraded",
            piloting=False,
            apply=_changed(unrouted(), snap, owner),
            prune=_other_generations(snap, owner, [current.workload]),
        )
    candidate = (
        rollout.candidate if rollout.candidate and rollout.candidate.plan_key == key else None
    )
    annotations = dict(body["metadata"].get("annotations") or {})
    written_now = str(annotations.get(OVERRIDE_ANNOTATION, ""))
    if candidate is not None and candidate.stale_override not in ("", written_now):
        # The left-over annotation was removed or changed: whatever is written from now on
        # is for this pilot, the same value again included.
        candidate = candidate.model_copy(update={"stale_override": ""})
    if candidate is None:
        try:
            plan = plan_for_cluster(
                resource,
                config.catalog,
                snap.inventory,
                config.provisionable,
                excluded,
                config.lock,
                latency_calibration(_stored_calibration(resource, status)),
            )
        except SpecError:
            raise  # invalid input: said as such by decide, never a plan gone out in place
        if not plan.feasible:
            why = "; ".join(plan.reasons)
            if _planned_message(status) != why:
                events.append(Event("NoFeasiblePlan", why, True))
            return outcome(
                rollout.model_copy(
                    update={"candidate": None, "phase": "Stable", "traffic_percent": 0}
                ),
                [
                    _condition("Planned", False, "NoFeasiblePlan", why, generation),
                    _condition("Ready", False, "NoFeasiblePlan", why, generation),
                    _condition("Stalled", True, "NoFeasiblePlan", why, generation),
                ],
                phase="Failed",
                piloting=False,
                apply=_changed(unrouted(), snap, owner),
                prune=_other_generations(snap, owner, [current.workload]),
            )
        gen = generation_of(key)
        candidate = Candidate(
            generation=gen,
            workload=workload_name(owner.name, gen),
            plan_key=key,
            plan=plan.model_dump(mode="json", by_alias=True, exclude_none=True),
            replicas=pilot_replicas(replicas, pilot_spec.traffic_percent),
            started_at=_rfc3339(snap.now),
            stale_override=written_now,
        )
        rollout = rollout.model_copy(update={"phase": "Piloting", "measurements": []})
        events.append(
            Event(
                "PilotStarted",
                f"{_summary(plan)} as {candidate.workload}, beside {current.workload}",
            )
        )
    candidate_plan = Plan.model_validate(candidate.plan)
    # A pilot under way: KEDA's idle count (0) waits until it ends, as scaleToZero does.
    replicas = max(replicas, 1)
    # A SpecError (a name too long for <name>-<generation>) is invalid input: never in place.
    rendered = render(candidate_plan, candidate.generation)
    objects = [o for o in rendered if o["kind"] in WORKLOAD_KINDS or o["kind"] == "ConfigMap"]

    def routed(share: int, pilot: Candidate) -> list[dict[str, Any]]:
        """With spec.routing.httpRoute: the candidate's own InferencePool and the route that
        gives it `share` percent of the requests, beside the shared pool (the current plan's,
        leaders only for a LeaderWorkerSet) narrowed to the current generation. With no share
        yet, or a current generation whose pods carry no label to leave out: the shared pool
        and the route as without a pilot, which spread requests over both generations."""
        plain = unrouted()
        if not share or not current.generation or not plain:
            return plain
        pooled = render(
            candidate_plan,
            pilot.generation,
            route_backends=[(owner.name, 100 - share), (pilot.workload, share)],
            generation_pool=True,
        )
        shared = next(o for o in plain if o["kind"] == "InferencePool")
        narrowed = copy.deepcopy(shared)
        narrowed["spec"]["selector"]["matchLabels"][GENERATION_LABEL] = current.generation
        return [*(o for o in pooled if o["kind"] in ("InferencePool", "HTTPRoute")), narrowed]

    kind = next(o["kind"] for o in objects if o["kind"] in WORKLOAD_KINDS)
    live = snap.children.get((kind, candidate.workload))
    workload = (live and live.workload) or WorkloadStatus(False)
    if workload.exists and snap.crash is None:
        return Outcome(needs=Needs(crashes_of=candidate.generation))
    capacity = None
    capacity_due = None
    if workload.exists and workload.up_to_date and workload.ready_replicas < candidate.replicas:
        # The candidate waits for GPUs beside the serving generation, which goes on serving.
        if snap.pending is None:
            spec_hash = next(
                o["metadata"]["annotations"].get(SPEC_HASH_ANNOTATION)
                for o in objects
                if o["kind"] in WORKLOAD_KINDS
            )
            return Outcome(needs=Needs(pending_pods=True, spec_hash=spec_hash))
        timeout = pending_timeout_seconds(resource)
        capacity, starved = capacity_condition(snap.pending, snap.now, timeout, generation)
        capacity = capacity.model_copy(
            update={"message": f"candidate {candidate.workload}: {capacity.message}".rstrip(": ")}
        )
        if starved is not None and workload.ready_replicas and candidate.serving_since is None:
            # A full cluster: the pilot goes on with the replicas it got.
            limit = workload.ready_replicas
            candidate = candidate.model_copy(update={"replicas": limit, "capacity_limit": limit})
        elif snap.pending and starved is None:
            oldest = min(p.since for p in snap.pending)
            capacity_due = max(1.0, timeout - (snap.now - oldest).total_seconds())
    if (
        candidate.serving_since is None
        and workload.exists
        and workload.ready_replicas >= candidate.replicas
    ):
        candidate = candidate.model_copy(update={"serving_since": _rfc3339(snap.now)})
    measured = _pilot_measurements(snap, config, resource, rollout, candidate, running)
    if isinstance(measured, Needs):
        return Outcome(needs=measured)
    measurements, due_in = measured
    by_generation = {m.generation: m for m in measurements}
    health = CandidateHealth(
        ready=workload.ready_replicas if workload.exists else 0, crash=snap.crash or None
    )
    next_step = step(
        rollout,
        candidate,
        pilot_spec,
        replicas,
        health,
        by_generation.get(candidate.generation),
        by_generation.get(rollout.current.generation),
        override(annotations, candidate),
        snap.now,
        serving_gone=gone,
    )
    if next_step.verdict == "rollback":
        failure = FailedPlan(
            plan_key=key, reason=next_step.reason, message=next_step.message, at=_rfc3339(snap.now)
        )
        why = f"{candidate.workload} rolled back: {next_step.reason}: {next_step.message}"
        events.append(Event("PilotRolledBack", why, True))
        rolled = rollout.model_copy(
            update={
                "phase": "RolledBack", "candidate": None, "traffic_percent": 0,
                "reason": next_step.reason, "message": why, "measurements": measurements,
                "failed": [*rollout.failed, failure][-MAX_FAILED_PLANS:],
            }
        )  # fmt: skip
        return outcome(
            rolled,
            rolled_back_conditions(why, generation),
            phase="Degraded",
            piloting=False,
            apply=_changed(unrouted(), snap, owner),
            prune=_other_generations(snap, owner, [current.workload]),
        )
    if next_step.verdict == "switch":
        promoted = Generation(
            generation=candidate.generation, workload=candidate.workload, plan_key=key
        )
        events.append(
            Event(
                "Promoted", f"{candidate.workload} serves all traffic; removing {current.workload}"
            )
        )
        switched = RolloutStatus(
            current=promoted, reason="Promoted", message=f"{candidate.workload} promoted",
            measurements=measurements, failed=rollout.failed,
        )  # fmt: skip
        return outcome(
            switched,
            [],
            requeue=0.0,
            plan=candidate_plan,
            plan_key=key,
            workload=workload,
            kind=kind,
            beside=None,
        )
    candidate = candidate.model_copy(update={"replicas": next_step.candidate_replicas})
    for obj in objects:
        if obj["kind"] in WORKLOAD_KINDS:
            obj["spec"]["replicas"] = candidate.replicas
    if next_step.verdict == "promote":
        events.append(Event("PilotPromoting", next_step.message))
    # Its share of the replicas, which the route's weights make exact: each generation then
    # serves the same load per replica, so their costs per token compare.
    share = traffic_share(replicas, candidate.replicas) if candidate.serving_since else 0
    piloting = rollout.model_copy(
        update={
            "phase": next_step.phase, "candidate": candidate, "traffic_percent": share,
            "reason": next_step.reason, "message": next_step.message, "measurements": measurements,
        }
    )  # fmt: skip
    message = f"{candidate.workload}: {next_step.reason}; {next_step.message}"
    requeue = due_in
    if candidate.serving_since is not None and next_step.phase == "Piloting":
        left = duration_seconds(pilot_spec.duration) - (
            snap.now.timestamp() - (_timestamp(candidate.serving_since) or 0.0)
        )
        requeue = max(1.0, left) if requeue is None else min(requeue, max(1.0, left))
    if capacity_due is not None:
        requeue = capacity_due if requeue is None else min(requeue, capacity_due)
    return outcome(
        piloting,
        [
            _condition("Progressing", True, f"Pilot{next_step.phase}", message, generation),
            # The spec's plan does not serve yet: GitOps tools wait for the pilot's outcome.
            _condition("Ready", False, f"Pilot{next_step.phase}", message, generation),
        ],
        phase="Pending" if capacity is not None and capacity.status == "False" else "Progressing",
        apply=_changed([*objects, *routed(share, candidate)], snap, owner),
        prune=_other_generations(snap, owner, [current.workload, candidate.workload]),
        requeue=requeue,
        capacity=capacity,
        # The candidate's part of the requests: by the route's weights once they split them,
        # else (the shared Service, or the pool before a share) over its ready pods only.
        beside=candidate.replicas
        if share and current.generation and weighted
        else min(candidate.replicas, workload.ready_replicas if workload.exists else 0),
    )
