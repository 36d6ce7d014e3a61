"""kopf handlers: thin. Validate -> read the cluster -> pure service -> apply -> status.

One reconcile serves create/update/resume and the periodic pass (controller/resync.py), so a
deleted or edited child is repaired, status follows the workload, and starved capacity is
noticed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol, cast

import kopf
from pydantic import ValidationError

from llmdeploy.api.status import Condition
from llmdeploy.api.types import (
    API_VERSION,
    GROUP,
    KIND,
    VERSION,
    LLMDeployment,
    format_validation_error,
)
from llmdeploy.autoscale.decision import IDLE_SIGNALS, AutoscalerState, Observation, decide
from llmdeploy.autoscale.policy import effective_scaling
from llmdeploy.autoscale.prometheus import PrometheusConfig, read_metrics, read_queries
from llmdeploy.catalog import Catalog, ImageLock
from llmdeploy.cluster.kube import (
    Children,
    Cluster,
    ClusterError,
    Owner,
    WorkloadStatus,
    workload_status_of,
)
from llmdeploy.controller import metrics
from llmdeploy.controller.locks import ObjectLocks
from llmdeploy.controller.resync import Tracked
from llmdeploy.controller.service import (
    Desired,
    autoscaler_status,
    capacity_condition,
    desired_replicas,
    desired_state,
    invalid_status,
    metrics_condition,
    pending_timeout_seconds,
    plan_key,
    render_inputs,
    stamp_conditions,
    status_update,
)
from llmdeploy.controller.settings import OperatorSettings
from llmdeploy.render import RenderError
from llmdeploy.sizing import Plan, SpecError
from llmdeploy.sizing.inventory import Inventory, schedulable_replicas

PLURAL = "llmdeployments"


class Notify(Protocol):
    """Posts an event about an LLMDeployment: kopf's poster in kopf's handlers, a direct
    write in the periodic pass (kopf's poster works only inside kopf's own tasks)."""

    def __call__(
        self, body: Mapping[str, Any], reason: str, message: str, *, warning: bool = False
    ) -> None: ...


def kopf_notify(
    body: Mapping[str, Any], reason: str, message: str, *, warning: bool = False
) -> None:
    (kopf.warn if warning else kopf.info)(body, reason=reason, message=message[:1000])  # type: ignore[arg-type]


class Context:
    """Everything the handlers share, built once at startup and kept in kopf's memo."""

    def __init__(
        self, settings: OperatorSettings, catalog: Catalog, lock: ImageLock, cluster: Cluster
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.lock = lock
        self.cluster = cluster
        # Autoscaler state between status writes, by object uid: (state, when last persisted).
        self.autoscalers: dict[str, tuple[AutoscalerState, float]] = {}
        # Children applied last time, by object uid: prune only when this set changes (and
        # once after a start), not on every reconcile.
        self.children: dict[str, frozenset[tuple[str, str]]] = {}
        # The workload progress each object's status last showed, by uid: a child's watch
        # event that does not move it (most do not) needs no read of the owner.
        self.reflected: dict[str, WorkloadStatus] = {}
        # What each object's last reconcile rendered, by uid (see Rendered).
        self.rendered: dict[str, Rendered] = {}
        # kopf's change handlers and the periodic pass can reach one object at once.
        self.locks = ObjectLocks()
        # What the watch delivered, for the periodic pass.
        self.tracked = Tracked()


def _stored_plan(status: dict[str, Any]) -> Plan | None:
    try:
        return Plan.model_validate(status["plan"]) if status.get("plan") else None
    except ValidationError:
        return None


def reconcile(
    ctx: Context,
    body: kopf.Body,
    patch: kopf.Patch,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
    notify: Notify = kopf_notify,
    seen: Children | None = None,
) -> None:
    """`seen`: the children as the periodic pass listed them, if it did."""
    metrics.RECONCILES.inc()
    status: dict[str, Any] = dict(body.get("status") or {})
    generation = int(body.metadata.get("generation") or 0)
    now = datetime.now(UTC)
    previous = status.get("conditions") or []
    try:
        resource = LLMDeployment.model_validate(dict(body))
    except ValidationError as exc:
        message = format_validation_error(exc)
        _write_status(patch, status, invalid_status(generation, message, previous, now))
        _event_once(notify, body, status, "InvalidSpec", message, warning=True)
        return
    owner = Owner(body.metadata.name, body.metadata.namespace or "default", body.metadata.uid or "")
    excluded = list(status.get("excludedGpus") or [])
    try:
        inventory = ctx.cluster.inventory()
        reused = _last_render_stands(ctx, owner, resource, status, generation, inventory, seen)
        desired = (
            reused[0]
            if reused
            else desired_state(
                resource,
                ctx.catalog,
                ctx.lock,
                inventory,
                ctx.settings.provisionable(),
                excluded,
                _stored_plan(status),
                status.get("planKey"),
            )
        )
    except (SpecError, RenderError) as exc:
        update = status_update(
            resource,
            generation,
            None,
            None,
            None,
            ("InvalidSpec", str(exc)),
            previous,
            now,
            excluded,
        )
        _write_status(patch, status, update)
        _event_once(notify, body, status, "InvalidSpec", str(exc), warning=True)
        return
    except ClusterError as exc:
        metrics.ERRORS.inc()
        raise kopf.TemporaryError(str(exc), delay=10) from None

    if desired.plan_key != status.get("planKey"):
        metrics.DECISIONS.inc()
        plan = desired.plan
        if plan.feasible:
            notify(body, "Planned", _summary(plan))
        else:
            notify(body, "NoFeasiblePlan", "; ".join(plan.reasons), warning=True)

    error = None
    workload = None
    capacity = None
    try:
        # An infeasible re-plan leaves what runs untouched: never tear down serving replicas
        # for a plan that cannot run.
        if reused is not None:
            workload = reused[1]
        elif desired.plan.feasible:
            workload = _apply(
                ctx,
                body,
                owner,
                desired,
                logger,
                notify,
                seen,
                first_time=not status.get("planKey"),
            )
            children = ctx.children[owner.uid]
            ctx.rendered[owner.uid] = Rendered(
                render_inputs(generation, desired.plan_key, desired.plan, ctx.catalog, inventory),
                children,
                next(((k, n) for k, n in children if k == desired.workload_kind), None),
                desired.spec_hash,
            )
        if desired.workload_kind:
            if workload is None:
                workload = ctx.cluster.workload_status(owner, desired.workload_kind)
            ctx.reflected[owner.uid] = workload
            # Pods can only be waiting for GPUs while fewer are ready than wanted.
            wanted = desired_replicas(resource, desired.plan)
            pending = (
                []
                if workload.ready_replicas >= wanted
                else ctx.cluster.unschedulable_pods(owner, desired.spec_hash)
            )
            capacity, starved = capacity_condition(
                pending, now, pending_timeout_seconds(resource), generation
            )
            if starved is not None and resource.spec.placement.fallback and desired.plan.gpu:
                _fall_back(
                    notify, body, patch, status, desired.plan.gpu, starved.message, generation
                )
                return
    except ClusterError as exc:
        metrics.ERRORS.inc()
        error = ("ApplyFailed", str(exc))
        logger.warning("reconcile failed: %s", exc)
    update = status_update(
        resource, generation, desired, workload, capacity, error, previous, now, excluded
    )
    scaling = resource.spec.scaling
    if (
        scaling is not None
        and scaling.mode == "operator"
        and error is None
        and desired.plan.feasible
        and workload is not None
        and workload.exists
    ):
        _autoscale(
            ctx,
            notify,
            body,
            owner,
            resource,
            desired,
            workload.ready_replicas,
            status,
            update,
            now,
            generation,
        )
    _write_status(patch, status, update)
    if error and error[1]:
        raise kopf.TemporaryError(error[1], delay=15)


@dataclass(frozen=True, slots=True)
class Rendered:
    """What an object's last reconcile rendered and applied, small enough to keep for every
    object: a periodic pass that finds the same inputs and every child as that reconcile left
    it needs neither a render nor an apply."""

    inputs: tuple[Any, ...]
    children: frozenset[tuple[str, str]]
    workload: tuple[str, str] | None  # (kind, name)
    spec_hash: str | None


def _last_render_stands(
    ctx: Context,
    owner: Owner,
    resource: LLMDeployment,
    status: dict[str, Any],
    generation: int,
    inventory: Inventory,
    seen: Children | None,
) -> tuple[Desired, WorkloadStatus | None] | None:
    memo = ctx.rendered.get(owner.uid)
    plan = _stored_plan(status)
    if seen is None or memo is None or plan is None or memo.workload is None:
        return None
    key = plan_key(resource, list(status.get("excludedGpus") or []))
    if (
        status.get("planKey") != key
        or not plan.feasible
        or memo.inputs != render_inputs(generation, key, plan, ctx.catalog, inventory)
        or not ctx.cluster.as_applied(owner, memo.children, seen)
    ):
        return None
    kind, name = memo.workload
    # The pass's list may be older than what the watch has since shown, or the other way
    # round: when the two disagree, neither is trusted and the reconcile reads the workload.
    listed = seen[(owner.namespace, kind, name)].workload
    known = ctx.reflected.get(owner.uid)
    return Desired(plan, key, [], kind, memo.spec_hash), listed if known in (None, listed) else None


PERSIST_AUTOSCALER_EVERY_S = 60.0


def _autoscale(
    ctx: Context,
    notify: Notify,
    body: kopf.Body,
    owner: Owner,
    resource: LLMDeployment,
    desired: Desired,
    ready: int,
    status: dict[str, Any],
    update: dict[str, Any],
    now: datetime,
    generation: int,
) -> None:
    """Operator-mode autoscaling: read Prometheus, decide, write through /scale. The caller
    holds the object's lock, or two runs would decide from the same reading and both scale."""
    assert resource.spec.scaling is not None
    scaling = effective_scaling(resource.spec.scaling, desired.plan)
    settings = ctx.settings
    stz = scaling.scale_to_zero
    wanted: list[str] = [m.type for m in scaling.metrics]
    if stz is not None:  # idleness is read from these whatever the spec scales on
        wanted += [t for t in IDLE_SIGNALS if t not in wanted]
    url = scaling.prometheus_url or settings.prometheus_url
    values: dict[str, float | None] = dict.fromkeys(wanted)
    activation = None
    problem = None
    current = desired_replicas(resource, desired.plan)
    if url:
        config = PrometheusConfig(
            url,
            settings.prometheus_timeout_seconds,
            settings.prometheus_bearer_token_file,
            settings.prometheus_ca_file,
            settings.prometheus_insecure_skip_verify,
        )
        if current > 0:
            engine = resource.spec.engine.name
            reading = read_metrics(
                config, wanted, owner.namespace, owner.name, engine, now.timestamp()
            )
            values, problem = reading.values, reading.problem
        elif stz is not None and stz.activation_query:
            reading = read_queries(config, {"activation": stz.activation_query}, now.timestamp())
            activation, problem = reading.values["activation"], reading.problem
    previous = status.get("autoscaler") or {}
    remembered = ctx.autoscalers.get(owner.uid)
    if remembered is not None:
        state, persisted = remembered
    else:  # after a restart: the history stored on the object
        state = AutoscalerState.model_validate(previous.get("state") or {})
        persisted = now.timestamp()
    observation = Observation(now.timestamp(), current, ready, values, activation=activation)
    decision = decide(scaling, observation, state)
    if decision.desired_replicas > current:
        # Cap a scale-up by the GPUs free now (unless an autoscaler can add nodes).
        plan = desired.plan
        assert plan.gpu is not None
        multi_node = desired.workload_kind == "LeaderWorkerSet"
        in_use, placed = ctx.cluster.gpus_in_use(owner)
        schedulable = schedulable_replicas(
            ctx.catalog,
            ctx.cluster.inventory(),
            in_use,
            plan.gpu,
            plan.tensor_parallel or 1 if multi_node else plan.gpu_count or 1,
            plan.pipeline_parallel or 1 if multi_node else 1,
            placed,
            settings.provisionable(),
        )
        observation = replace(observation, schedulable_replicas=schedulable)
        decision = decide(scaling, observation, state)
    if not url:
        decision = replace(decision, reason=f"holding {current}: no Prometheus URL configured")
    elif problem is not None and decision.desired_replicas == current:
        decision = replace(decision, reason=f"{decision.reason}; Prometheus: {problem}")
    if decision.desired_replicas != current:
        # A run that read the object before another one scaled it must not scale again.
        version = str(body.metadata.get("resourceVersion") or "")
        if not ctx.cluster.scale(owner, decision.desired_replicas, version):
            # Changed since read: the next run decides from the new object; until then the
            # status keeps what the run that changed it wrote.
            _keep_autoscaler_status(status, update)
            return
        metrics.SCALINGS.inc()
        notify(body, "Scaled", decision.reason)
    seen = values if activation is None else {**values, "activationQuery": activation}
    fresh = autoscaler_status(decision, seen, now, previous)
    # The history changes every tick; persist it on a change of decision or once a minute.
    if (
        decision.desired_replicas != current
        or fresh["reason"] != previous.get("reason")
        # A lost end of an idle stretch could, after a restart, send busy replicas to zero.
        or fresh["state"].get("idleSince") != (previous.get("state") or {}).get("idleSince")
        or now.timestamp() - persisted >= PERSIST_AUTOSCALER_EVERY_S
    ):
        update["autoscaler"] = fresh
        persisted = now.timestamp()
    else:
        update["autoscaler"] = previous
    ctx.autoscalers[owner.uid] = (decision.state, persisted)
    conditions = [Condition.model_validate(c) for c in update["conditions"]]
    conditions.append(metrics_condition(decision, generation))
    update["conditions"] = stamp_conditions(conditions, status.get("conditions") or [], now)


def _keep_autoscaler_status(status: dict[str, Any], update: dict[str, Any]) -> None:
    if status.get("autoscaler"):
        update["autoscaler"] = status["autoscaler"]
    kept = [c for c in status.get("conditions") or [] if c.get("type") == "MetricsAvailable"]
    update["conditions"] = [*update["conditions"], *kept]


def _apply(
    ctx: Context,
    body: kopf.Body,
    owner: Owner,
    desired: Desired,
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
    notify: Notify,
    seen: Children | None,
    first_time: bool,
) -> WorkloadStatus | None:
    """Apply the children, prune the ones no longer desired; the workload's progress."""
    changed = []
    workload = None
    for obj in desired.objects:
        applied = ctx.cluster.apply(obj, owner, seen)
        if applied.changed:
            changed.append(f"{obj['kind']}/{obj['metadata']['name']}")
        workload = applied.workload or workload
    keep = frozenset((o["kind"], o["metadata"]["name"]) for o in desired.objects)
    # A resource never planned before has no children to prune.
    known = ctx.children.get(owner.uid, keep if first_time else None)
    pruned = ctx.cluster.prune(owner, set(keep)) if known != keep else []
    ctx.children[owner.uid] = keep
    if changed:
        metrics.APPLIES.inc(len(changed))
        notify(body, "Applied", ", ".join(changed))
        logger.info("applied %s", ", ".join(changed))
    if pruned:
        notify(body, "Pruned", ", ".join(pruned))
        logger.info("pruned %s", ", ".join(pruned))
    return workload


def _fall_back(
    notify: Notify,
    body: kopf.Body,
    patch: kopf.Patch,
    status: dict[str, Any],
    gpu: str,
    why: str,
    generation: int,
) -> None:
    """Drop the starved SKU and let the next reconcile plan without it. The generation is
    marked handled, or the periodic pass would leave the object to kopf, which does not
    react to a status change."""
    excluded = sorted({*(status.get("excludedGpus") or []), gpu})
    patch.status["excludedGpus"] = excluded
    patch.status["planKey"] = None
    patch.status["observedGeneration"] = generation
    notify(
        body,
        "FallbackReplan",
        f"{gpu} capacity did not arrive ({why}); re-planning without it",
        warning=True,
    )


def _summary(plan: Plan) -> str:
    return (
        f"{plan.gpu} x{plan.gpu_count} {plan.quantization} TP{plan.tensor_parallel} "
        f"PP{plan.pipeline_parallel} KV {plan.kv_cache_dtype}, {plan.replicas} replica(s), "
        f"est. TTFT {plan.estimated_ttft_ms} ms TPOT {plan.estimated_tpot_ms} ms, "
        f"${plan.cost_per_hour}/h"
    )


# Written together or not at all: a merge patch of some of them, computed from an older read,
# could land after a fresher refresh and leave e.g. phase Ready beside an old readyReplicas.
WORKLOAD_FIELDS = ("readyReplicas", "phase", "conditions")


def _write_status(patch: kopf.Patch, current: dict[str, Any], update: dict[str, Any]) -> None:
    """Patch only what changed: an unchanged object gets no write."""
    changed = {key for key, value in update.items() if current.get(key) != value}
    if changed & set(WORKLOAD_FIELDS):
        changed |= {key for key in WORKLOAD_FIELDS if key in update}
    for key in changed:
        patch.status[key] = update[key]


def _event_once(
    notify: Notify,
    body: kopf.Body,
    status: dict[str, Any],
    reason: str,
    message: str,
    *,
    warning: bool,
) -> None:
    """An event per new problem, not one per periodic pass."""
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Planned" and condition.get("message") == message:
            return
    notify(body, reason, message, warning=warning)


def refresh_from_workload(ctx: Context, workload_body: dict[str, Any]) -> None:
    """A child workload moved (pods became ready, a rollout finished): bring the owner's
    status up to date now instead of at the next periodic pass. Status only; no plan, no apply.
    The owner comes from the watch; read only if the watch has not delivered it or is behind."""
    owners = [
        r
        for r in (workload_body.get("metadata") or {}).get("ownerReferences") or []
        if r.get("kind") == KIND and r.get("apiVersion") == API_VERSION
    ]
    if not owners:
        return
    workload = workload_status_of(workload_body)
    uid = str(owners[0].get("uid") or "")
    if ctx.reflected.get(uid) == workload:
        return
    namespace, name = workload_body["metadata"]["namespace"], owners[0]["name"]
    parent = ctx.tracked.get(uid)
    try:
        known = parent is not None and _reflect(ctx, parent, workload)
    except ClusterError as exc:
        if exc.status != 409:
            raise
        known = False
    if not known:  # not watched yet, or the watch is behind the reconcile's status write
        known = _reflect(ctx, ctx.cluster.get_llmdeployment(namespace, name), workload)
    if known:  # an owner that is gone must not leave an entry behind
        ctx.reflected[uid] = workload


def _reflect(ctx: Context, parent: dict[str, Any] | None, workload: WorkloadStatus) -> bool:
    """Write the workload's progress into the owner's status; False if there is no planned
    owner to write it to."""
    status = (parent or {}).get("status") or {}
    plan = _stored_plan(status)
    if parent is None or plan is None or not status.get("planKey"):
        return False  # not reconciled yet: the reconcile will write the status
    try:
        resource = LLMDeployment.model_validate(parent)
    except ValidationError:
        return False
    generation = int(parent["metadata"].get("generation") or 0)
    previous = status.get("conditions") or []
    capacity = next(
        (Condition.model_validate(c) for c in previous if c.get("type") == "CapacityAvailable"),
        None,
    )
    update = status_update(
        resource,
        generation,
        Desired(plan, status["planKey"]),
        workload,
        capacity,
        None,
        previous,
        datetime.now(UTC),
        list(status.get("excludedGpus") or []),
    )
    # Only what the workload tells; the plan is the reconcile's. The resourceVersion
    # precondition makes a write based on a stale read fail instead of undoing a newer status.
    changed = {k: update[k] for k in WORKLOAD_FIELDS if status.get(k) != update.get(k)}
    if changed:
        metadata = parent["metadata"]
        ctx.cluster.patch_status(
            metadata["namespace"], metadata["name"], changed, metadata["resourceVersion"]
        )
    return True


def reconcile_in_kopf(
    ctx: Context, body: kopf.Body, patch: kopf.Patch, logger: logging.Logger
) -> None:
    """kopf's change handlers: kopf serializes them per object, this lock against the pass."""
    with ctx.locks.hold(body.metadata.uid or ""):
        reconcile(ctx, body, patch, logger)


def reconcile_in_pass(ctx: Context, body: dict[str, Any], seen: Children | None = None) -> None:
    """The periodic pass's reconcile of one object, outside kopf. It works from the latest body
    the watch has delivered, read under the object's lock: the body the pass started with may
    be older than what a change handler has applied since, and rendering from it would undo
    that. Its status patch carries that body's resourceVersion (409 rather than undoing a newer
    status)."""
    uid = str(body["metadata"].get("uid") or "")

    def notify(
        body: Mapping[str, Any], reason: str, message: str, *, warning: bool = False
    ) -> None:
        with contextlib.suppress(ClusterError):  # an event is not worth failing a reconcile
            ctx.cluster.post_event(body, reason, message, warning=warning)

    with ctx.locks.hold(uid):
        latest = ctx.tracked.get(uid)
        if latest is None:
            return  # deleted while the pass was on its way here
        metadata = latest["metadata"]
        if metadata.get("deletionTimestamp"):
            return  # going: nothing to repair (children go by owner references)
        if (latest.get("status") or {}).get("observedGeneration") != metadata.get("generation"):
            return  # a spec kopf has not handled yet is its change handler's (which retries)
        logger = logging.getLogger(f"llmdeploy.pass.{metadata['namespace']}.{metadata['name']}")
        patch = kopf.Patch()
        try:
            reconcile(ctx, kopf.Body(cast(kopf.RawBody, latest)), patch, logger, notify, seen)
        except kopf.TemporaryError as exc:
            logger.warning("periodic reconcile: %s", exc)
        changes = dict(patch.get("status") or {})
        if changes:
            with contextlib.suppress(ClusterError):  # 409: newer than this body; next pass
                ctx.cluster.patch_status(
                    metadata["namespace"], metadata["name"], changes, metadata["resourceVersion"]
                )


def forget(ctx: Context, uid: str) -> None:
    """Children go by garbage collection; only this process's memory of the object is left."""
    ctx.tracked.gone(uid)
    with ctx.locks.hold(uid):  # a reconcile under way would write its memories back
        ctx.autoscalers.pop(uid, None)
        ctx.children.pop(uid, None)
        ctx.reflected.pop(uid, None)
        ctx.rendered.pop(uid, None)
        ctx.cluster.forget(uid)


def register(registry: kopf.OperatorRegistry, ctx: Context) -> None:
    """Bind the handlers to this operator's registry and settings."""

    def on_change(body: kopf.Body, patch: kopf.Patch, logger: Any, **_: Any) -> None:
        reconcile_in_kopf(ctx, body, patch, logger)

    def track(body: kopf.Body, type: str | None, **_: Any) -> None:
        if type == "DELETED":
            forget(ctx, body.metadata.uid or "")
        else:
            ctx.tracked.seen(body)

    def on_workload(body: kopf.Body, **_: Any) -> None:
        with contextlib.suppress(ClusterError):  # the periodic pass catches up
            refresh_from_workload(ctx, dict(body))

    kopf.on.event(
        "apps",
        "v1",
        "deployments",
        registry=registry,
        id="workload",
        labels={"app.kubernetes.io/managed-by": "llmdeploy"},
    )(on_workload)
    # Watch events, not a delete handler or a timer: neither makes kopf add a finalizer.
    kopf.on.event(GROUP, VERSION, PLURAL, registry=registry, id="track")(track)
    for decorator in (kopf.on.create, kopf.on.update, kopf.on.resume):
        decorator(GROUP, VERSION, PLURAL, registry=registry, id="reconcile")(on_change)
