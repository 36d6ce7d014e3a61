"""The plan: the sizing engine's decision and its JSON contract (read by external tools)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from llmdeploy.api.types import to_camel


class PlanModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    def to_json_dict(self) -> dict[str, object]:
        return self.model_dump(mode="json", by_alias=True)


class Alternative(PlanModel):
    """A configuration the optimizer considered and did not choose, with the reason."""

    gpu: str
    gpu_count: int
    tensor_parallel: int
    pipeline_parallel: int
    quantization: str
    kv_cache_dtype: str
    feasible: bool
    meets_slo: bool
    estimated_ttft_ms: float | None = None
    estimated_tpot_ms: float | None = None
    replicas: int | None = None
    cost_per_hour: float | None = None
    cost_per_million_tokens: float | None = None
    reason: str


class Plan(PlanModel):
    feasible: bool
    model: str
    engine: str
    gpu: str | None = None
    gpu_count: int | None = Field(default=None, description="GPUs per replica.")
    tensor_parallel: int | None = None
    pipeline_parallel: int | None = None
    quantization: str | None = None
    kv_cache_dtype: str | None = None
    max_context_length: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    gpu_memory_utilization: float | None = None
    weights_gib_per_gpu: float | None = None
    activation_gib_per_gpu: float | None = None
    non_torch_gib_per_gpu: float | None = None
    kv_cache_gib_per_gpu: float | None = None
    kv_cache_tokens: int | None = Field(default=None, description="Per replica.")
    max_concurrency: float | None = Field(
        default=None, description="Requests of maxContextLength the KV cache holds at once."
    )
    estimated_ttft_ms: float | None = None
    estimated_tpot_ms: float | None = None
    estimated_tokens_per_second: float | None = Field(default=None, description="Per replica.")
    replicas: int | None = None
    cost_per_hour: float | None = Field(default=None, description="All replicas, USD.")
    cost_per_million_tokens: float | None = Field(default=None, description="Output tokens, USD.")
    checkpoint: str | None = Field(default=None, description="Checkpoint the engine loads.")
    reasons: list[str] = Field(default_factory=list)
    alternatives: list[Alternative] = Field(default_factory=list)
