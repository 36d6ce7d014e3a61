"""Pilot rollouts (spec.rollout.strategy Pilot): a candidate generation serves a share of the
traffic beside the serving one, is measured against it, then promoted or rolled back.
controller/rollout.py has the steps; this is their reconcile."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from llmdeploy.api.status import (
    Calibration,
    Candidate,
    Condition,
    FailedPlan,
    Generation,
    GenerationMeasurement,
    Observed,
    Phase,
    Recommendation,
    RolloutStatus,
)
from llmdeploy.api.types import LLMDeployment, duration_seconds
from llmdeploy.autoscale.decision import (
    Decision,
)
from llmdeploy.cluster.objects import (
    ChildKey,
    Owner,
    WorkloadStatus,
)
from llmdeploy.controller.planning import (
    changed_objects,
    desired_replicas,
    gpu_drivers,
    pending_timeout_seconds,
    plan_for_cluster,
    workload_of,
)
from llmdeploy.controller.recommend import stored_calibration
from llmdeploy.controller.rollout import (
    OVERRIDE_ANNOTATION,
    CandidateHealth,
    generation_of,
    override,
    pilot_replicas,
    step,
    traffic_share,
)
from llmdeploy.controller.scaling import autoscale
from llmdeploy.controller.state import (
    Config,
    Desired,
    Event,
    Needs,
    Outcome,
    Remembered,
    Snapshot,
    owner_of,
)
from llmdeploy.controller.status import (
    capacity_condition,
    kept_conditions,
    metrics_condition,
    new_condition,
    parse_timestamp,
    plan_summary,
    planned_message,
    read_stored,
    replace_conditions,
    rfc3339,
    status_update,
)
from llmdeploy.measure.calibration import latency_calibration
from llmdeploy.measure.observed import observe, slo_met
from llmdeploy.measure.queries import measurement_queries
from llmdeploy.measure.results import Readings
from llmdeploy.render import (
    GENERATION_LABEL,
    SPEC_HASH_ANNOTATION,
    RenderError,
    prometheus_endpoint,
    render_manifests,
    workload_name,
)
from llmdeploy.render.kinds import WORKLOAD_KINDS
from llmdeploy.sizing import (
    Plan,
    SpecError,
)

# A pilot's first measurement covers at least this much serving (or a whole window).
PILOT_MIN_WINDOW_S = 60
MAX_FAILED_PLANS = 10  # rolled-back plans remembered in status.rollout.failed
# The kinds a pilot's generation has of its own; everything else is shared by the generations.
GENERATION_KINDS = WORKLOAD_KINDS | {"ConfigMap", "InferencePool"}


def serving_generation(snap: Snapshot, rollout: RolloutStatus | None) -> Generation:
    """The generation serving status.plan: status.rollout says; when it cannot be read (written
    by hand), a workload named after the plan's generation is the one a pilot promoted, else
    the object's first workload serves."""
    if rollout is not None:
        return rollout.current
    status: Mapping[str, Any] = snap.body.get("status") or {}
    key = str(status.get("planKey") or "")
    owner = owner_of(snap.body)
    promoted = generation_of(key) if key else ""
    if not promoted or workload_of(snap, workload_name(owner.name, promoted)) is None:
        promoted = ""
    return Generation(
        generation=promoted, workload=workload_name(owner.name, promoted), plan_key=key or None
    )


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
        window_seconds=observed.window_seconds,
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
    served_s = now - (parse_timestamp(candidate.serving_since) or now)
    ends = [parse_timestamp(m.end) for m in stored if m.generation == candidate.generation]
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
        new_condition(type_, status, "PilotRolledBack", why, generation)
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
    scaled = autoscale(
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


def decide_pilot(
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
    running = read_stored(Plan, status.get("plan"))
    running_key = status.get("planKey")
    if running is None or not running.feasible or not running_key or key == running_key:
        return None
    owner = owner_of(body)
    current = serving_generation(snap, rollout)
    in_pilot = rollout is not None and rollout.candidate is not None
    rolled_back = rollout is not None and any(f.plan_key == key for f in rollout.failed)
    # Status says what serves; the watch may not have shown its workload yet (a restart), or
    # it was deleted: a fresh read tells.
    seen = workload_of(snap, current.workload)
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
        carried = kept_conditions(status, ("CapacityAvailable",))
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
            kept_conditions(status, ("SLOMet", "PlanDrift", "MetricsAvailable")),
        )
        new_status = replace_conditions(new_status, conditions, previous, snap.now)
        if phase is not None and snap.error is None:  # an apply that failed: Degraded
            new_status = new_status.model_copy(update={"phase": phase})
        new_status = new_status.model_copy(
            update={
                "rollout": rolled,
                "autoscaler": autoscaler_field,
                "observed": read_stored(Observed, status.get("observed")),
                "calibration": read_stored(Calibration, status.get("calibration")),
                "recommendation": read_stored(Recommendation, status.get("recommendation")),
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
            gpu_drivers(snap.inventory, config.catalog, plan.gpu),
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

    def roll_back(ended: RolloutStatus, why: str) -> Outcome:
        """The serving generation alone, unrouted, and the plan marked rolled back."""
        return outcome(
            ended,
            rolled_back_conditions(why, generation),
            phase="Degraded",
            piloting=False,
            apply=changed_objects(unrouted(), snap, owner),
            prune=_other_generations(snap, owner, [current.workload]),
        )

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
        return roll_back(frozen, why)
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
                latency_calibration(stored_calibration(resource, status)),
            )
        except SpecError:
            raise  # invalid input: said as such by decide, never a plan gone out in place
        if not plan.feasible:
            why = "; ".join(plan.reasons)
            if planned_message(status) != why:
                events.append(Event("NoFeasiblePlan", why, True))
            return outcome(
                rollout.model_copy(
                    update={"candidate": None, "phase": "Stable", "traffic_percent": 0}
                ),
                [
                    new_condition("Planned", False, "NoFeasiblePlan", why, generation),
                    new_condition("Ready", False, "NoFeasiblePlan", why, generation),
                    new_condition("Stalled", True, "NoFeasiblePlan", why, generation),
                ],
                phase="Failed",
                piloting=False,
                apply=changed_objects(unrouted(), snap, owner),
                prune=_other_generations(snap, owner, [current.workload]),
            )
        gen = generation_of(key)
        candidate = Candidate(
            generation=gen,
            workload=workload_name(owner.name, gen),
            plan_key=key,
            plan=plan.model_dump(mode="json", by_alias=True, exclude_none=True),
            replicas=pilot_replicas(replicas, pilot_spec.traffic_percent),
            started_at=rfc3339(snap.now),
            stale_override=written_now,
        )
        rollout = rollout.model_copy(update={"phase": "Piloting", "measurements": []})
        events.append(
            Event(
                "PilotStarted",
                f"{plan_summary(plan)} as {candidate.workload}, beside {current.workload}",
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
        candidate = candidate.model_copy(update={"serving_since": rfc3339(snap.now)})
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
            plan_key=key, reason=next_step.reason, message=next_step.message, at=rfc3339(snap.now)
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
        return roll_back(rolled, why)
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
            snap.now.timestamp() - (parse_timestamp(candidate.serving_since) or 0.0)
        )
        requeue = max(1.0, left) if requeue is None else min(requeue, max(1.0, left))
    if capacity_due is not None:
        requeue = capacity_due if requeue is None else min(requeue, capacity_due)
    return outcome(
        piloting,
        [
            new_condition("Progressing", True, f"Pilot{next_step.phase}", message, generation),
            # The spec's plan does not serve yet: GitOps tools wait for the pilot's outcome.
            new_condition("Ready", False, f"Pilot{next_step.phase}", message, generation),
        ],
        phase="Pending" if capacity is not None and capacity.status == "False" else "Progressing",
        apply=changed_objects([*objects, *routed(share, candidate)], snap, owner),
        prune=_other_generations(snap, owner, [current.workload, candidate.workload]),
        requeue=requeue,
        capacity=capacity,
        # The candidate's part of the requests: by the route's weights once they split them,
        # else (the shared Service, or the pool before a share) over its ready pods only.
        beside=candidate.replicas
        if share and current.generation and weighted
        else min(candidate.replicas, workload.ready_replicas if workload.exists else 0),
    )
