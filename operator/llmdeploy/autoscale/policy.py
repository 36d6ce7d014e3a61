"""The effective scaling policy: the spec's, completed with defaults derived from the plan."""

from __future__ import annotations

from llmdeploy.api.types import (
    ScalingBehavior,
    ScalingMetric,
    ScalingPolicy,
    ScalingRules,
    ScalingSpec,
)
from llmdeploy.sizing import Plan

ENGINE_START_S = 60.0
STORAGE_BYTES_PER_S = 500e6
MIN_SCALE_DOWN_WINDOW_S = 120
MAX_SCALE_DOWN_WINDOW_S = 900
SCALE_DOWN_COLD_STARTS = 3  # the default scale-down window, in replica cold starts


def cold_start_estimate(plan: Plan) -> float:
    """Expected seconds until a new replica serves: engine start plus reading its weights from
    storage. The one estimate of model load: the autoscaler's windows and scale-sim use it as
    is, the rendered startup probe a safety multiple of it."""
    weights = (plan.weights_gib_per_gpu or 0) * 2**30 * (plan.gpu_count or 1)
    return ENGINE_START_S + weights / STORAGE_BYTES_PER_S


def default_metrics(concurrency: int) -> list[ScalingMetric]:
    """Scale before the engine queues: 80% of the planned concurrent sequences per replica,
    and a queue of more than half a batch per replica. Running requests stop rising once a
    replica is full, so past that point the queue is the only signal of overload, and every
    waiting request already pays in TTFT."""
    return [
        ScalingMetric(type="runningRequests", target=max(1.0, 0.8 * concurrency)),
        ScalingMetric(type="queueDepth", target=float(max(1, concurrency // 2))),
    ]


def _hpa_scale_up() -> ScalingRules:
    """Kubernetes HPA's default scale-up: double or add 4 pods every 15 s, no window."""
    return ScalingRules(
        stabilization_window_seconds=0,
        policies=[
            ScalingPolicy(type="Percent", value=100, period_seconds=15),
            ScalingPolicy(type="Pods", value=4, period_seconds=15),
        ],
    )


def _scale_down_at_once(window_s: int) -> ScalingRules:
    return ScalingRules(
        stabilization_window_seconds=window_s,
        policies=[ScalingPolicy(type="Percent", value=100, period_seconds=15)],
    )


def default_behavior(cold_start_s: float) -> ScalingBehavior:
    """Up as fast as Kubernetes HPA does. Down once lower recommendations have lasted three
    times the time a replica takes to come back: a replica released sooner is too often
    needed again before a new one could load (twice was measured to cost SLO seconds on the
    diurnal trace, docs/benchmarks.md)."""
    window = int(
        min(
            max(SCALE_DOWN_COLD_STARTS * cold_start_s, MIN_SCALE_DOWN_WINDOW_S),
            MAX_SCALE_DOWN_WINDOW_S,
        )
    )
    return ScalingBehavior(scale_up=_hpa_scale_up(), scale_down=_scale_down_at_once(window))


def effective_scaling(
    scaling: ScalingSpec, plan: Plan, cold_start_s: float | None = None
) -> ScalingSpec:
    """The spec with metrics and behavior filled in."""
    cold_start = cold_start_s if cold_start_s is not None else cold_start_estimate(plan)
    return scaling.model_copy(
        update={
            "metrics": scaling.metrics or default_metrics(plan.max_num_seqs or 1),
            "behavior": scaling.behavior or default_behavior(cold_start),
        }
    )


def hpa_default_spec(scaling: ScalingSpec) -> ScalingSpec:
    """Kubernetes HPA's default behavior (autoscaling/v2), same bounds and metrics: a baseline."""
    behavior = ScalingBehavior(scale_up=_hpa_scale_up(), scale_down=_scale_down_at_once(300))
    return scaling.model_copy(update={"behavior": behavior, "tolerance": 0.1})
