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
        description="Planned, Progressing, Available, Degraded, CapacityAvailable, Ready or "
        "Stalled (the spec cannot be planned: invalid, or no feasible plan)."
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
