"""Operator metrics in Prometheus format (served on settings.metrics_port)."""

from __future__ import annotations

from prometheus_client import Counter

RECONCILES = Counter("llmdeploy_reconciles", "Reconciles of LLMDeployments")
ERRORS = Counter("llmdeploy_reconcile_errors", "Reconciles that failed on the API server")
DECISIONS = Counter("llmdeploy_plan_decisions", "New plans made")
APPLIES = Counter("llmdeploy_applied_objects", "Child objects created or changed")
SCALINGS = Counter("llmdeploy_scalings", "Replica changes written by the autoscaler")
