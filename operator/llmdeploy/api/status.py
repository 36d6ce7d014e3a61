"""Status of an LLMDeployment: Kubernetes-shaped conditions, phase, counts, and the plan."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llmdeploy.api.types import to_camel

Phase = Literal["Pending", "Progressing", "Ready", "Degraded", "Failed"]


class StatusModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class Condition(StatusModel):
    type: str = Field(
        description="Planned, Progressing, Available, CapacityAvailable, Degraded, "
        "MetricsAvailable, SLOMet, PlanDrift, Ready or Stalled (the spec cannot be planned: "
        "invalid, or no feasible plan)."
    )
    status: Literal["True", "False", "Unknown"] = Field(description="Condition status.")
    reason: str = Field(description="CamelCase reason for the last transition.")
    message: str = Field(default="", description="Human-readable detail.")
    observed_generation: int | None = Field(
        default=None, description="metadata.generation the condition was computed for."
    )
    last_transition_time: str | None = Field(
        default=None, description="When the status last changed (RFC 3339)."
    )


class GpuExclusion(StatusModel):
    gpu: str = Field(description="The SKU excluded.")
    excluded_at: str = Field(description="When its capacity was given up on (RFC 3339).")


class MeasuredModel(BaseModel):
    """What the operator and `llmdeploy report` measured (measure/observed.py computes it)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    def to_json_dict(self) -> dict[str, object]:
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Price(MeasuredModel):
    """The catalog price realized costs are computed from."""

    gpu: str
    gpus_per_replica: int
    usd_per_gpu_hour: float
    date: str = Field(description="The catalog's priceDate.")
    source: str | None = Field(default=None, description="The catalog's sources.price.")


class Observed(MeasuredModel):
    """Measured over `windowSeconds` up to `end`; a field that is None is Unknown, and
    `unknown` says why (by the field's camelCase name)."""

    window_seconds: int = Field(
        description="Seconds measured: the window, or, where the deployment's engines first "
        "served inside it (servedSince), the part of it since."
    )
    end: str = Field(description="End of the window, RFC 3339 (UTC).")
    served_since: str | None = Field(
        default=None,
        description="When the deployment's engines first served, RFC 3339 (UTC), as the first "
        "measurement that saw them found (where they served all through its window, that "
        "window's start: they served from then, if not before); kept by the later ones. A "
        "window that began before it measures rates from then: before it no engine could "
        "count a request.",
    )
    requests: float | None = Field(default=None, description="Requests finished in the window.")
    requests_per_second: float | None = Field(
        default=None, description="Requests finished per second."
    )
    input_tokens_mean: float | None = Field(
        default=None, description="Prompt tokens per request: the counters' ratio (exact)."
    )
    input_tokens_p50: float | None = Field(
        default=None, description="Median prompt length from the engine's 1-2-5 buckets."
    )
    output_tokens_mean: float | None = Field(
        default=None, description="Generated tokens per request: the counters' ratio."
    )
    output_tokens_p50: float | None = Field(
        default=None, description="Median generated length from the engine's buckets."
    )
    ttft_mean_seconds: float | None = Field(
        default=None, description="Time to first token, mean: the histogram's sum over count."
    )
    tpot_mean_seconds: float | None = Field(
        default=None, description="Time between tokens, mean: the histogram's sum over count."
    )
    ttft_p50_seconds: float | None = Field(default=None, description="Time to first token, median.")
    ttft_p95_seconds: float | None = Field(default=None, description="Time to first token, p95.")
    tpot_p50_seconds: float | None = Field(default=None, description="Time between tokens, median.")
    tpot_p95_seconds: float | None = Field(default=None, description="Time between tokens, p95.")
    ttft_within_slo: float | None = Field(
        default=None, description="Share of requests whose TTFT met spec.slo.ttftMs."
    )
    tpot_within_slo: float | None = Field(
        default=None, description="Share of gaps between tokens within spec.slo.tpotMs."
    )
    output_tokens_per_second: float | None = Field(
        default=None, description="Generated tokens per second, all replicas."
    )
    kv_cache_usage: float | None = Field(default=None, description="Average, 0-1.")
    replicas: float | None = Field(default=None, description="Serving replicas, on average.")
    cost_per_hour: float | None = Field(
        default=None, description="USD per hour of the serving replicas, on average."
    )
    cost_per_million_output_tokens: float | None = Field(
        default=None, description="USD: cost per hour over output tokens per hour."
    )
    price: Price | None = None
    unknown: dict[str, str] = Field(
        default_factory=dict, description="Why each absent figure is Unknown, by its name."
    )


class Calibration(MeasuredModel):
    """Measured over predicted latency of the running plan, smoothed over measurements."""

    ttft_ratio: float = Field(
        gt=0,
        allow_inf_nan=False,
        description="Mean TTFT measured / predicted at the measured load.",
    )
    tpot_ratio: float = Field(
        gt=0,
        allow_inf_nan=False,
        description="Mean TPOT measured / predicted at the measured load.",
    )
    measurements: int = Field(default=0, description="Measurements folded in.")
    end: str | None = Field(
        default=None, description="End of the last measurement folded in, RFC 3339 (UTC)."
    )


class RecommendationBasis(MeasuredModel):
    """The measurement a recommendation was made for: it stands while they stay close."""

    requests_per_second: float
    input_tokens: float
    output_tokens: float
    ttft_ratio: float = 1.0
    tpot_ratio: float = 1.0


class Recommendation(MeasuredModel):
    """The plan llmdeploy would choose now for the measured workload; never applied by itself."""

    feasible: bool
    summary: str = Field(description="The layout, or why none fits.")
    gpu: str | None = None
    gpu_count: int | None = None
    quantization: str | None = None
    tensor_parallel: int | None = None
    pipeline_parallel: int | None = None
    expert_parallel: int | None = None
    replicas: int | None = None
    cost_per_hour: float | None = Field(default=None, description="USD, all replicas.")
    cost_per_hour_change: float | None = Field(
        default=None, description="USD per hour against the running plan (negative: cheaper)."
    )
    estimated_ttft_ms: float | None = None
    estimated_tpot_ms: float | None = None
    same_as_running: bool = Field(description="The running plan's layout and replicas.")
    basis: RecommendationBasis = Field(description="The measurement it was made for.")
    measured: RecommendationBasis = Field(
        description="The measurements since, smoothed: a new recommendation is made when they "
        "leave the basis's band (workload +-35%, latency ratios +-25%)."
    )
    since: str = Field(description="When it was made, RFC 3339 (UTC).")

    def describe(self) -> str:
        """One line for an Event and `llmdeploy report`."""
        b = self.basis
        measured = (
            f"measured {b.requests_per_second:.3g} requests/s of {b.input_tokens:.0f}+"
            f"{b.output_tokens:.0f} tokens, latency x{b.ttft_ratio:.2f} TTFT "
            f"x{b.tpot_ratio:.2f} TPOT of the model's"
        )
        if not self.feasible:
            return f"{self.summary} ({measured})"
        if self.same_as_running:
            return f"keep the running plan: {self.summary} ({measured})"
        change = self.cost_per_hour_change or 0.0
        return f"{self.summary}, {change:+.2f} $/h against the running plan ({measured})"


RolloutPhase = Literal["Stable", "Piloting", "Promoting", "RolledBack"]


class Generation(StatusModel):
    """One generation of engines: a workload running one plan."""

    generation: str = Field(
        default="", description="Its id (the plan key's head); '' for the first workload."
    )
    workload: str = Field(description="The Deployment or LeaderWorkerSet that runs it.")
    plan_key: str | None = Field(default=None, description="The plan's key.")


class Candidate(Generation):
    plan: dict[str, Any] = Field(description="The candidate's plan.")
    replicas: int = Field(description="Its replicas while piloting.")
    stale_override: str = Field(
        default="",
        description="The llmdeploy.io/pilot annotation when it started: one left from an earlier "
        "pilot of the same plan, which does not decide this one.",
    )
    capacity_limit: int | None = Field(
        default=None,
        description="The replicas a full cluster had room for, when fewer than its share.",
    )
    started_at: str = Field(description="When it was created (RFC 3339).")
    serving_since: str | None = Field(
        default=None, description="When its replicas were all ready: the duration counts from."
    )


class GenerationMeasurement(StatusModel):
    """What one generation's own series said over the seconds measured (`windowSeconds`)."""

    generation: str
    end: str = Field(description="End of the window (RFC 3339).")
    window_seconds: int = Field(
        description="Seconds measured: the operator's measurement window, or the time since "
        "the candidate served if that is shorter."
    )
    requests: float | None = None
    ttft_within_slo: float | None = Field(default=None, description="Share, 0-1.")
    tpot_within_slo: float | None = Field(default=None, description="Share, 0-1.")
    ttft_mean_seconds: float | None = None
    tpot_mean_seconds: float | None = None
    cost_per_million_output_tokens: float | None = Field(default=None, description="USD.")
    slo_met: Literal["True", "False", "Unknown"] = "Unknown"
    slo_message: str = ""


class FailedPlan(StatusModel):
    plan_key: str = Field(description="A plan that was rolled back: not tried again unchanged.")
    reason: str
    message: str = ""
    at: str = Field(description="When (RFC 3339).")


class RolloutStatus(StatusModel):
    """spec.rollout.strategy Pilot: which generations serve, and what decided."""

    phase: RolloutPhase = "Stable"
    current: Generation = Field(description="The generation serving the plan in status.plan.")
    candidate: Candidate | None = Field(default=None, description="The plan being piloted.")
    traffic_percent: int = Field(
        default=0, description="The candidate's share of the traffic (see docs/rollouts.md)."
    )
    reason: str = ""
    message: str = ""
    measurements: list[GenerationMeasurement] = Field(
        default_factory=list, description="The last measurement of each serving generation."
    )
    failed: list[FailedPlan] = Field(default_factory=list, description="Rolled-back plans.")


class LLMDeploymentStatus(StatusModel):
    phase: Phase | None = Field(default=None, description="Summary of the conditions.")
    observed_generation: int | None = Field(
        default=None, description="The generation the operator last acted on."
    )
    conditions: list[Condition] = Field(default_factory=list, description="Current conditions.")
    gpu: str | None = Field(default=None, description="Chosen GPU SKU.")
    gpu_count: int | None = Field(default=None, description="GPUs per replica.")
    quantization: str | None = Field(default=None, description="Chosen weight format.")
    tensor_parallel: int | None = Field(default=None, description="Chosen tensor parallelism.")
    expert_parallel: int | None = Field(
        default=None, description="Chosen expert parallelism of an MoE model (1: TP-split)."
    )
    cost_per_hour: str | None = Field(
        default=None, description="Estimated USD per hour of all replicas, e.g. '6.00'."
    )
    replicas: int | None = Field(default=None, description="Desired replicas.")
    ready_replicas: int | None = Field(default=None, description="Replicas serving.")
    selector: str | None = Field(
        default=None, description="Label selector of the engine pods (scale subresource)."
    )
    plan_key: str | None = Field(
        default=None, description="Digest of the inputs the plan was made from."
    )
    excluded_gpus: list[str] = Field(
        default_factory=list,
        description="SKUs dropped after starving past pendingTimeout (placement.fallback); "
        "each is tried again once the operator's excluded-GPU TTL has passed.",
    )
    gpu_exclusions: list[GpuExclusion] | None = Field(
        default=None,
        description="When each SKU of excludedGpus was excluded, which starts its TTL.",
    )
    autoscaler: dict[str, Any] | None = Field(
        default=None,
        description="Last autoscaling decision: metrics, desired replicas, reason, last scale "
        "time, and the recommendation history that survives an operator restart.",
    )
    plan: dict[str, Any] | None = Field(
        default=None, description="The sizing plan (the `llmdeploy plan -o json` contract)."
    )
    calibration: Calibration | None = Field(
        default=None,
        description="Measured/predicted latency of the running plan (spec.planning.calibration).",
    )
    recommendation: Recommendation | None = Field(
        default=None,
        description="The plan llmdeploy would choose now for the measured workload and "
        "calibration, and its cost against the running one; absent without a full "
        "measurement. Nothing is applied by it.",
    )
    rollout: RolloutStatus | None = Field(
        default=None, description="Pilot rollouts: the generations and the pilot's state."
    )
    observed: Observed | None = Field(
        default=None,
        description="What the engines' metrics in Prometheus say, over the operator's "
        "measurement window up to `end`; refreshed every measurement interval. A figure "
        "that is absent is Unknown, and `unknown` says why (docs/measure.md).",
    )
