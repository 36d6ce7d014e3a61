"""The plan: the sizing engine's decision and its JSON contract (read by external tools).

Sizes, times and costs are finite and non-negative by type: a plan that is not fails as an
internal error where it is made, instead of reaching status or JSON as NaN or a negative size.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from llmdeploy.api.types import to_camel

Amount = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Number = Annotated[int, Field(ge=0)]


class PlanModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    def to_json_dict(self) -> dict[str, object]:
        return self.model_dump(mode="json", by_alias=True)


class Alternative(PlanModel):
    """A configuration the optimizer considered and did not choose, with the reason."""

    gpu: str
    gpu_count: Number
    tensor_parallel: Number
    pipeline_parallel: Number
    expert_parallel: Number | None = Field(
        default=None, description="Ranks the routed experts are spread over; absent: dense."
    )
    quantization: str
    kv_cache_dtype: str
    feasible: bool
    meets_slo: bool
    estimated_ttft_ms: Amount | None = None
    estimated_tpot_ms: Amount | None = None
    replicas: Number | None = None
    cost_per_hour: Amount | None = None
    cost_per_million_tokens: Amount | None = None
    reason: str


class Plan(PlanModel):
    feasible: bool
    model: str
    engine: str
    engine_version: str | None = Field(
        default=None, description="The engine release sized for: the image the renderer pins."
    )
    gpu: str | None = None
    gpu_count: Number | None = Field(default=None, description="GPUs per replica.")
    tensor_parallel: Number | None = None
    pipeline_parallel: Number | None = None
    expert_parallel: Number | None = Field(
        default=None,
        description="Ranks of a TP group the routed experts are spread over whole (1: every "
        "expert split over the TP ranks); absent for a dense model.",
    )
    quantization: str | None = None
    kv_cache_dtype: str | None = None
    max_context_length: Number | None = None
    max_num_seqs: Number | None = None
    max_num_batched_tokens: Number | None = None
    gpu_memory_utilization: Amount | None = None
    weights_gib_per_gpu: Amount | None = None
    activation_gib_per_gpu: Amount | None = None
    non_torch_gib_per_gpu: Amount | None = None
    cuda_graph_gib_per_gpu: Amount | None = Field(
        default=None,
        description="CUDA-graph memory the engine release takes out of the KV budget (vLLM from "
        "0.20 on CUDA); absent where it captures its graphs outside the budget.",
    )
    kv_cache_gib_per_gpu: Amount | None = None
    kv_cache_tokens: Number | None = Field(
        default=None,
        description="Per replica, as vLLM's 'GPU KV cache size' counts them (sliding-window "
        "layers not discounted: maxConcurrency says how many requests fit).",
    )
    max_concurrency: Amount | None = Field(
        default=None, description="Requests of maxContextLength the KV cache holds at once."
    )
    estimated_ttft_ms: Amount | None = None
    estimated_tpot_ms: Amount | None = None
    estimated_tokens_per_second: Amount | None = Field(default=None, description="Per replica.")
    replicas: Number | None = None
    cost_per_hour: Amount | None = Field(default=None, description="All replicas, USD.")
    cost_per_million_tokens: Amount | None = Field(default=None, description="Output tokens, USD.")
    checkpoint: str | None = Field(default=None, description="Checkpoint the engine loads.")
    ttft_calibration: Amount | None = Field(
        default=None, description="Measured/predicted TTFT the estimates were scaled by."
    )
    tpot_calibration: Amount | None = Field(
        default=None, description="Measured/predicted TPOT the estimates were scaled by."
    )
    reasons: list[str] = Field(default_factory=list)
    alternatives: list[Alternative] = Field(default_factory=list)
