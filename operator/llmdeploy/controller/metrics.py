"""Operator metrics in Prometheus format (served on settings.metrics_port)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from pydantic import ValidationError

from llmdeploy.api.status import LLMDeploymentStatus
from llmdeploy.api.types import LLMDeployment
from llmdeploy.sizing.performance import request_rate

RECONCILES = Counter(
    "llmdeploy_reconcile",
    "Reconciles by result: success, conflict (re-queued), error (the API server refused), "
    "unreachable (no answer in time), overdue (past LLMDEPLOY_RECONCILE_TIMEOUT_SECONDS: the "
    "object's status says ReconcileError), invalid (the spec cannot be planned), exception (a bug: "
    "the object's status says ReconcileError)",
    ["result"],
)
RECONCILE_SECONDS = Histogram(
    "llmdeploy_reconcile_duration_seconds",
    "Time of one reconcile: observe, decide and act",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
QUEUE_DEPTH = Gauge("llmdeploy_queue_depth", "Keys waiting for a worker")
QUEUE_WAIT_SECONDS = Histogram(
    "llmdeploy_queue_wait_seconds",
    "Time from a key's enqueue to its dequeue",
    buckets=(0.001, 0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
OBJECTS_TRACKED = Gauge("llmdeploy_objects_tracked", "LLMDeployments this replica tracks")
PLANS = Counter("llmdeploy_plan_decisions", "New plans made")
APPLIES = Counter("llmdeploy_applied_objects", "Child objects created or changed")
PRUNES = Counter("llmdeploy_pruned_objects", "Child objects deleted because no plan wants them")
SCALINGS = Counter("llmdeploy_scalings", "Replica changes written by the autoscaler")

# Per LLMDeployment: what the plan promised and how the measured conditions stand, set from
# the status the reconciler writes (one writer) and removed with the object. The rules in
# manifests/monitoring/rules join them with the engines' series on (namespace, llmdeployment).
DEPLOYMENT_LABELS = ("namespace", "llmdeployment", "gpu", "quantization", "engine")
CONDITION_STATUSES = ("True", "False", "Unknown")
PLAN_GAUGES = {
    "replicas": Gauge(
        "llmdeploy_plan_replicas",
        "Desired replicas (status.replicas: the plan's, the spec's or the autoscaler's)",
        DEPLOYMENT_LABELS,
    ),
    "gpus": Gauge("llmdeploy_plan_gpus", "GPUs of the desired replicas", DEPLOYMENT_LABELS),
    "cost_per_hour": Gauge(
        "llmdeploy_plan_cost_per_hour_usd",
        "USD per hour of the desired replicas (status.costPerHour)",
        DEPLOYMENT_LABELS,
    ),
    "replica_cost_per_hour": Gauge(
        "llmdeploy_plan_replica_cost_per_hour_usd",
        "USD per hour of one replica at the catalog price",
        DEPLOYMENT_LABELS,
    ),
    "cost_per_million_output_tokens": Gauge(
        "llmdeploy_plan_cost_per_million_output_tokens_usd",
        "USD per 1M output tokens of a fully used replica, as planned",
        DEPLOYMENT_LABELS,
    ),
    "ttft_seconds": Gauge(
        "llmdeploy_plan_ttft_seconds", "Predicted time to first token", DEPLOYMENT_LABELS
    ),
    "tpot_seconds": Gauge(
        "llmdeploy_plan_tpot_seconds", "Predicted time per output token", DEPLOYMENT_LABELS
    ),
    "capacity_requests_per_second": Gauge(
        "llmdeploy_plan_capacity_requests_per_second",
        "Requests/s the desired replicas serve at the planned concurrency",
        DEPLOYMENT_LABELS,
    ),
    "requests_per_second": Gauge(
        "llmdeploy_plan_requests_per_second",
        "The planned load: spec.workload.requestsPerSecond (absent when not set)",
        DEPLOYMENT_LABELS,
    ),
    "slo_ttft_seconds": Gauge(
        "llmdeploy_slo_ttft_seconds", "Target time to first token (spec.slo)", DEPLOYMENT_LABELS
    ),
    "slo_tpot_seconds": Gauge(
        "llmdeploy_slo_tpot_seconds", "Target time per output token (spec.slo)", DEPLOYMENT_LABELS
    ),
    "ttft_calibration": Gauge(
        "llmdeploy_calibration_ttft_ratio",
        "Measured / predicted mean TTFT, smoothed (status.calibration)",
        DEPLOYMENT_LABELS,
    ),
    "tpot_calibration": Gauge(
        "llmdeploy_calibration_tpot_ratio",
        "Measured / predicted mean TPOT, smoothed (status.calibration)",
        DEPLOYMENT_LABELS,
    ),
    "recommended_cost_change": Gauge(
        "llmdeploy_recommendation_cost_per_hour_change_usd",
        "USD per hour of status.recommendation against the running plan (negative: cheaper)",
        DEPLOYMENT_LABELS,
    ),
}
CONDITION_GAUGES = {
    "SLOMet": Gauge(
        "llmdeploy_slo_met",
        "1 for the status (True, False, Unknown) of the SLOMet condition, 0 for the others",
        (*DEPLOYMENT_LABELS, "status"),
    ),
    "PlanDrift": Gauge(
        "llmdeploy_plan_drift",
        "1 for the status (True, False, Unknown) of the PlanDrift condition, 0 for the others",
        (*DEPLOYMENT_LABELS, "status"),
    ),
}


@dataclass(frozen=True, slots=True)
class DeploymentSeries:
    """One LLMDeployment's samples: label values, gauge values by PLAN_GAUGES key, and the
    status of each condition in CONDITION_GAUGES."""

    labels: tuple[str, str, str, str, str]
    values: Mapping[str, float]
    conditions: Mapping[str, str]


def _number(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def deployment_series(
    namespace: str, name: str, body: Mapping[str, Any], status: LLMDeploymentStatus
) -> DeploymentSeries | None:
    """The samples of a status as decided (pure); None when it has no runnable plan (an
    invalid spec, no feasible plan), which exports nothing."""
    plan = status.plan or {}
    if not status.gpu or not plan.get("feasible"):
        return None
    try:
        spec = LLMDeployment.model_validate(dict(body)).spec
    except ValidationError:
        return None
    replicas = status.replicas or 0
    planned = _number(plan.get("replicas")) or 0.0
    gpus = _number(status.gpu_count)
    ttft = _number(plan.get("estimatedTtftMs"))
    tpot = _number(plan.get("estimatedTpotMs"))
    tokens = _number(plan.get("estimatedTokensPerSecond"))
    total = _number(plan.get("costPerHour"))
    values: dict[str, float | None] = {
        "replicas": replicas,
        "gpus": None if gpus is None else gpus * replicas,
        "cost_per_hour": _number(status.cost_per_hour),
        "replica_cost_per_hour": None if total is None or planned <= 0 else total / planned,
        "cost_per_million_output_tokens": _number(plan.get("costPerMillionTokens")),
        "ttft_seconds": None if ttft is None else ttft / 1000,
        "tpot_seconds": None if tpot is None else tpot / 1000,
        "requests_per_second": spec.workload.requests_per_second,
        "slo_ttft_seconds": None if spec.slo.ttft_ms is None else spec.slo.ttft_ms / 1000,
        "slo_tpot_seconds": None if spec.slo.tpot_ms is None else spec.slo.tpot_ms / 1000,
    }
    if status.calibration is not None:
        values["ttft_calibration"] = status.calibration.ttft_ratio
        values["tpot_calibration"] = status.calibration.tpot_ratio
    if status.recommendation is not None:
        values["recommended_cost_change"] = status.recommendation.cost_per_hour_change
    if tokens is not None and ttft is not None and tpot is not None and tpot > 0:
        per_replica = request_rate(tokens, ttft / 1000, tpot / 1000, spec.workload.output_tokens)
        values["capacity_requests_per_second"] = per_replica * replicas
    found = {c.type: c.status for c in status.conditions}
    labels = (namespace, name, status.gpu, status.quantization or "", str(plan.get("engine", "")))
    return DeploymentSeries(
        labels,
        {k: v for k, v in values.items() if v is not None},
        {type_: found.get(type_, "Unknown") for type_ in CONDITION_GAUGES},
    )


class DeploymentMetrics:
    """The per-LLMDeployment gauges this replica exports: set when the reconciler has written
    (or confirmed) a status, removed when the object is deleted or forgotten, and all of them
    when this replica stops acting, so that no series outlives what it describes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._exported: dict[tuple[str, str], DeploymentSeries] = {}

    def update(
        self, namespace: str, name: str, body: Mapping[str, Any], status: LLMDeploymentStatus
    ) -> None:
        series = deployment_series(namespace, name, body, status)
        with self._lock:
            self._remove((namespace, name), keep=series)
            if series is None:
                return
            self._exported[(namespace, name)] = series
            for key, gauge in PLAN_GAUGES.items():
                if key in series.values:
                    gauge.labels(*series.labels).set(series.values[key])
            for type_, gauge in CONDITION_GAUGES.items():
                for value in CONDITION_STATUSES:
                    current = series.conditions[type_] == value
                    gauge.labels(*series.labels, value).set(1 if current else 0)

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._remove((namespace, name))

    def retain(self, live: Callable[[], Iterable[tuple[str, str]]]) -> None:
        """Drop the series of objects `live()` (read under the lock that updates take) no
        longer has: an update that raced the object's deletion leaves none for long."""
        with self._lock:
            keep = set(live())
            for key in [k for k in self._exported if k not in keep]:
                self._remove(key)

    def clear(self) -> None:
        with self._lock:
            for key in list(self._exported):
                self._remove(key)

    def _remove(self, key: tuple[str, str], keep: DeploymentSeries | None = None) -> None:
        """Drop the series exported for `key` that `keep` (the next ones) will not set."""
        old = self._exported.pop(key, None)
        if old is None:
            return
        moved = keep is None or keep.labels != old.labels
        kept = {} if keep is None else keep.values
        for name, gauge in PLAN_GAUGES.items():
            if name in old.values and (moved or name not in kept):
                gauge.remove(*old.labels)
        if moved:
            for gauge in CONDITION_GAUGES.values():
                for value in CONDITION_STATUSES:
                    gauge.remove(*old.labels, value)


DEPLOYMENTS = DeploymentMetrics()
