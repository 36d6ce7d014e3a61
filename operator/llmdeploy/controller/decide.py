"""decide: what one reconcile should do, as a pure function of what observe saw.

No I/O and no clients here (an import contract in `make lint` enforces it): the same snapshot
always gives the same outcome, and unit tests drive every decision with plain data.

Some observations cost a request and matter only in some states (pending pods while replicas
are missing, Prometheus for operator-mode autoscaling and for a measurement that is due, GPUs in
use before a scale-up). decide asks for them through `Outcome.needs`; the reconcile observes
them and decides again.

This module is the entry and the normal path; its parts are their own modules: state (the
data of a reconcile), planning (the desired state), status (what is written back), scaling
(operator-mode autoscaling), recommend (measure, calibrate, recommend) and pilot (a pilot
rollout's reconcile).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from llmdeploy.api.status import (
    Condition,
    LLMDeploymentStatus,
    RolloutStatus,
)
from llmdeploy.api.types import LLMDeployment, format_validation_error
from llmdeploy.cluster.objects import (
    OLD_FINALIZER,
    ChildKey,
    WorkloadStatus,
)
from llmdeploy.controller.pilot import decide_pilot, serving_generation
from llmdeploy.controller.planning import (
    changed_objects,
    desired_replicas,
    desired_state,
    pending_timeout_seconds,
    plan_key,
    render_inputs,
)
from llmdeploy.controller.recommend import (
    learned,
    measurement,
    stored_calibration,
    transition_event,
    verdict_condition,
)
from llmdeploy.controller.routing import routable
from llmdeploy.controller.scaling import autoscale
from llmdeploy.controller.state import Config, Event, Needs, Outcome, Rendered, Snapshot, owner_of
from llmdeploy.controller.status import (
    capacity_condition,
    exclusion_fields,
    invalid_status,
    kept_conditions,
    metrics_condition,
    new_condition,
    plan_summary,
    planned_message,
    read_stored,
    rfc3339,
    settled_rollout,
    stamp_conditions,
    status_update,
    stored_exclusions,
)
from llmdeploy.measure.calibration import latency_calibration
from llmdeploy.render import (
    RenderError,
    workload_name,
)
from llmdeploy.sizing import (
    Plan,
    SpecError,
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
            () if planned_message(status) == message else (Event("InvalidSpec", message, True),)
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
    rollout = read_stored(RolloutStatus, status.get("rollout"))
    if resource.spec.rollout.strategy == "Pilot":
        try:
            piloted = decide_pilot(
                snap, config, resource, key, excluded, excluded_at, expired, rollout, upgrade
            )
        except (SpecError, RenderError) as exc:
            return invalid(str(exc))
        if piloted is not None:
            return piloted
    # Which workload serves: a pilot promoted earlier named it after its generation.
    serving = serving_generation(snap, rollout).generation
    stored = read_stored(Plan, status.get("plan")) if status.get("planKey") == key else None
    memo = snap.rendered
    try:
        if (
            stored is not None
            and memo is not None
            and memo.inputs
            == render_inputs(generation, key, stored, config, snap.inventory, serving)
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
                latency_calibration(stored_calibration(resource, status)),
                serving,
            )
    except (SpecError, RenderError) as exc:
        return invalid(str(exc))
    plan = desired.plan
    if memo is None or memo.desired is not desired:
        inputs = render_inputs(generation, key, plan, config, snap.inventory, serving)
        memo = Rendered(inputs, desired) if plan.feasible else None
    rendered = memo
    events: list[Event] = list(expired)
    if key != status.get("planKey"):
        events.append(
            Event("Planned", plan_summary(plan))
            if plan.feasible
            else Event("NoFeasiblePlan", "; ".join(plan.reasons), True)
        )
    owner = owner_of(body)

    # Children. An infeasible re-plan leaves what runs untouched: never tear down serving
    # replicas for a plan that cannot run.
    apply: list[dict[str, Any]] = []
    prune: list[tuple[ChildKey, str]] = []
    if plan.feasible:
        apply = changed_objects(desired.objects, snap, owner)
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
            capacity = next(iter(kept_conditions(status, ("CapacityAvailable",))), None)
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
    calibration = stored_calibration(resource, status)
    recommendation = None
    if plan.feasible:
        deployed = workload_status is not None and workload_status.exists
        measured = measurement(snap, config, resource, plan, status, generation, deployed)
        if isinstance(measured, Needs):
            return Outcome(needs=measured, rendered=rendered)
        observed, verdicts, due_in = measured
        for type_, verdict in verdicts:
            extra.append(verdict_condition(type_, verdict, generation))
            event = transition_event(type_, verdict, previous)
            if event is not None:
                events.append(event)
        calibration, recommendation, recommended = learned(
            snap, config, resource, plan, status, observed, excluded
        )
        if recommended is not None:
            events.append(recommended)
        unapplied = {(c["kind"], c["metadata"]["name"]) for c in apply}
        routed = routable(
            resource, owner.namespace, snap.children, unapplied, snap.endpoint_picker, snap.error
        )
        if routed is not None:
            extra.append(verdict_condition("Routable", routed, generation))
            event = transition_event("Routable", routed, previous)
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
        scaled = autoscale(snap, config, resource, desired, workload_status, status, generation)
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
            "rollout": settled_rollout(resource, rollout, owner, serving, key),
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
    failing = stamp_conditions(
        [
            new_condition("Degraded", True, "ReconcileError", message, generation),
            new_condition("Ready", False, "ReconcileError", message, generation),
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
    update = {**exclusion_fields(excluded), "plan_key": None, "observed_generation": generation}
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
                    f"{gpu} was excluded at {rfc3339(at)}, more than "
                    f"{config.excluded_gpu_ttl_s:g}s ago (LLMDEPLOY_EXCLUDED_GPU_TTL_SECONDS); "
                    "planning with it again",
                )
            )
    next_expiry = min(((at + ttl - now).total_seconds() for at in live.values()), default=None)
    return live, tuple(expired), None if next_expiry is None else max(1.0, next_expiry)
