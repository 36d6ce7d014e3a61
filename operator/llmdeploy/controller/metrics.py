"""Operator metrics in Prometheus format (served on settings.metrics_port)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter(
    "llmdeploy_reconcile",
    "Reconciles by result: success, conflict (re-queued), error (the API server refused), "
    "unreachable (no answer in time), invalid (the spec cannot be planned), exception (a bug: "
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
