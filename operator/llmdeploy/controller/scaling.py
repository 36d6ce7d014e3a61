"""Operator-mode autoscaling inside a reconcile: read the engines' metrics, decide the
replicas, cap a scale-up by the GPUs free, and remember the autoscaler's state."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from llmdeploy.api.types import LLMDeployment
from llmdeploy.autoscale.decision import (
    IDLE_SIGNALS,
    Decision,
    MetricsReading,
    Observation,
    serving_share,
)
from llmdeploy.autoscale.decision import decide as decide_replicas
from llmdeploy.autoscale.policy import effective_scaling
from llmdeploy.autoscale.promql import activation_query, query
from llmdeploy.cluster.objects import (
    WorkloadStatus,
)
from llmdeploy.controller.planning import desired_replicas
from llmdeploy.controller.state import Config, Desired, Needs, Remembered, Snapshot, owner_of
from llmdeploy.controller.status import autoscaler_status, stored_autoscaler_state
from llmdeploy.render import (
    prometheus_endpoint,
)
from llmdeploy.sizing.inventory import (
    schedulable_replicas,
)

# The autoscaler's history changes every tick; it is persisted on a change of decision or
# this often, which bounds what a fail-over can lose of it.
PERSIST_AUTOSCALER_EVERY_S = 30.0
ACTIVATION = "activation"  # its key among the readings and in status.autoscaler.metrics


def autoscale(
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
    remembered = snap.autoscaler or Remembered(stored_autoscaler_state(stored), now)
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
