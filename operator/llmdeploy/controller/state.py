"""What one reconcile sees (Snapshot), asks to observe first (Needs) and does (Outcome).

Plain data shared by decide and its parts; no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from llmdeploy.api.status import (
    LLMDeploymentStatus,
)
from llmdeploy.autoscale.decision import (
    AutoscalerState,
    MetricsReading,
)
from llmdeploy.catalog import Catalog, ImageLock
from llmdeploy.cluster.objects import (
    ChildKey,
    LiveChild,
    Owner,
    PendingPod,
)
from llmdeploy.measure.queries import MeasurementQueries, window_seconds
from llmdeploy.measure.results import Readings
from llmdeploy.render import (
    DEFAULT_PROMETHEUS,
    SPEC_HASH_ANNOTATION,
    HostAccess,
    PrometheusTarget,
)
from llmdeploy.render.kinds import WORKLOAD_KINDS
from llmdeploy.sizing import (
    Plan,
)
from llmdeploy.sizing.inventory import (
    Inventory,
)

EXCLUDED_GPU_TTL_S = 3600.0  # a stock-out seldom lasts longer; then the SKU is tried again
MEASURE_INTERVAL_S = 60.0  # status.observed is this old at most (plus a resync)
MEASURE_WINDOW = "10m"
MEASURE_WINDOW_S = window_seconds(MEASURE_WINDOW)


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
