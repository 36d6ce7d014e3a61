"""The desired state of an object: its plan for the cluster, the key that says when a new one
is due, the rendered children and which of them differ from what runs."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from llmdeploy.api.types import LLMDeployment, duration_seconds
from llmdeploy.catalog import Catalog, ImageLock
from llmdeploy.cluster.objects import (
    ChildKey,
    Owner,
    WorkloadStatus,
    prepared,
)
from llmdeploy.controller.state import Config, Desired, Snapshot
from llmdeploy.render import (
    NO_HOST_ACCESS,
    HostAccess,
    PrometheusTarget,
    render_manifests,
)
from llmdeploy.render.kinds import WORKLOAD_KINDS
from llmdeploy.sizing import (
    LatencyCalibration,
    Plan,
    plan_deployment,
)
from llmdeploy.sizing.inventory import (
    Inventory,
    cluster_catalog,
    placement_for_cluster,
)
from llmdeploy.sizing.optimizer import placement_gpus


def plan_key(resource: LLMDeployment, excluded: Sequence[str]) -> str:
    # Not replicas (the autoscaler's), nor planning, rollout or routing: how measurements feed
    # the next plan, how it goes out and how traffic reaches it do not make one (and an
    # operator upgrade that added such a field re-plans nothing).
    spec = resource.spec.model_dump(
        mode="json", by_alias=True, exclude={"replicas", "planning", "rollout", "routing"}
    )
    # A planning field added later is left out at the default that plans as before it existed
    # (parallelism.expert auto: the stored plan was made without expert parallelism), so the
    # upgrade that added it keeps every stored plan's key; pinned, it is part of the key.
    if spec["parallelism"].get("expert") == "auto":
        del spec["parallelism"]["expert"]
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
    drivers = gpu_drivers(inventory, catalog, plan.gpu)
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


def pending_timeout_seconds(resource: LLMDeployment) -> int:
    return duration_seconds(resource.spec.placement.pending_timeout)


def render_inputs(
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
    return (generation, key, tuple(gpu_drivers(inventory, config.catalog, plan.gpu)), serving)


def gpu_drivers(inventory: Inventory, catalog: Catalog, gpu: str | None) -> list[tuple[int, int]]:
    """The driver versions of the nodes with the plan's GPU: they pick its image."""
    return inventory.drivers(catalog, gpu) if gpu and gpu in catalog.gpus else []


def workload_of(snap: Snapshot, name: str) -> tuple[str, WorkloadStatus] | None:
    """The live workload of that name, with its kind."""
    for kind in sorted(WORKLOAD_KINDS):
        live = snap.children.get((kind, name))
        if live is not None and live.workload is not None:
            return kind, live.workload
    return None


def changed_objects(
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
