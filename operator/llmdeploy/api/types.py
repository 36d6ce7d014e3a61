"""The LLMDeployment custom resource (llmdeploy.io/v1alpha1) as pydantic models.

Field descriptions become `kubectl explain` text once the CRD is generated from these models.
Every spec model forbids unknown fields so a typo is reported with its path, not ignored.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel as _to_camel
from pydantic_core import PydanticCustomError

GROUP = "llmdeploy.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "LLMDeployment"
# metadata.name names the Service and the workload, so it must be a DNS label. Patterns here are
# matched by pydantic's Rust engine and by CEL's RE2, where `$` ends the text; Python's `re`
# also lets `$` match before a final newline, so Python code uses `fullmatch` on this pattern.
DNS_LABEL_PATTERN = r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"
# An RFC 1123 label: the names of settings' endpoints and of cluster objects they refer to.
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"


def to_camel(name: str) -> str:
    """snake_case -> camelCase, keeping unit spellings: weights_gib -> weightsGiB."""
    return _to_camel(name).replace("Gib", "GiB").replace("Gbps", "GBps")


_TYPE_TAGS = {"int", "str", "float", "bool", "dict", "list"}


def format_validation_error(error: ValidationError, prefix: str = "") -> str:
    """One clause per field: `spec.workload.concurrency: Input should be ...`.

    The members of a union each report at the same path; their messages are joined, so
    `quantization: fp9` hears every accepted value, not only the first member's `'auto'`.
    """
    lines: dict[str, list[str]] = {}
    for item in error.errors():
        parts: list[str] = [prefix] if prefix else []
        for part in item["loc"]:
            if isinstance(part, int):
                parts[-1:] = [f"{parts[-1] if parts else ''}[{part}]"]
            elif part in _TYPE_TAGS or "[" in str(part) or "function" in str(part):
                continue  # pydantic's union-member tags are not field names
            else:
                parts.append(str(part))
        path = ".".join(parts) or "(document)"
        messages = lines.setdefault(path, [])
        # A validator's own sentence, without pydantic's "Value error, " in front of it.
        message = item["msg"].removeprefix("Value error, ")
        if message not in messages:
            messages.append(message)
    return "; ".join(f"{path}: {_either(messages)}" for path, messages in lines.items())


def _either(messages: list[str]) -> str:
    """`Input should be 'auto'` + `Input should be 'bf16' or 'fp8'` -> one sentence."""
    lead = "Input should be "
    rest = [m.removeprefix(lead) if m.startswith(lead) else m for m in messages[1:]]
    return " or ".join([messages[0], *rest])


class SpecModel(BaseModel):
    """Base of every spec model: camelCase on the wire, unknown fields rejected.

    Strict like the API server's schema check, so the CLI accepts what admission accepts:
    `true` is no integer and `"16"` no number. Enums (see `Lax`) still take their string values,
    which is how they arrive in YAML and JSON. Infinity and NaN are no numbers either.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        strict=True,
        allow_inf_nan=False,
    )


class EngineName(StrEnum):
    VLLM = "vllm"
    TENSORRT_LLM = "tensorrt-llm"


class Quantization(StrEnum):
    """Weight formats. `mxfp4` exists only as a model's native format (gpt-oss)."""

    BF16 = "bf16"
    FP16 = "fp16"
    FP8 = "fp8"
    INT8 = "int8"
    INT4_AWQ = "int4-awq"
    INT4_GPTQ = "int4-gptq"
    MXFP4 = "mxfp4"


class KvCacheDtype(StrEnum):
    AUTO = "auto"
    FP8 = "fp8"


class Precision(StrEnum):
    """Precision tiers, highest first; used to bound how far `auto` may lower precision."""

    BF16 = "bf16"
    FP8 = "fp8"
    INT8 = "int8"
    INT4 = "int4"


# In strict mode an enum field wants an enum instance; documents carry the value as a string.
LaxEngineName = Annotated[EngineName, Strict(False)]
LaxQuantization = Annotated[Quantization, Strict(False)]
LaxKvCacheDtype = Annotated[KvCacheDtype, Strict(False)]
LaxPrecision = Annotated[Precision, Strict(False)]
Auto = Literal["auto"]
MAX_REQUESTS_PER_SECOND = 1e7
Count = Annotated[int, Field(ge=1, le=1_000_000)]
ARCHITECTURE_ERROR = "architecture"  # pydantic's error type for facts that contradict
SmallCount = Annotated[int, Field(ge=1, le=4096)]
Dimension = Annotated[int, Field(ge=1, le=10_000_000)]


class ModelArchitecture(SpecModel):
    """Architecture facts of a model, as in its Hugging Face config.json.

    Given in the spec, these override or complete the catalog's entry, so a model that is not
    in the catalog can still be sized.
    """

    model_type: str | None = Field(
        default=None,
        max_length=64,
        pattern=r"^[a-z0-9_]+$",
        description="model_type of the config (e.g. gemma2): engines refuse some dtypes by it.",
    )
    parameters: Annotated[float, Field(gt=0, le=1e13)] | None = Field(
        default=None, description="Total parameter count (all experts included)."
    )
    active_parameters: Annotated[float, Field(gt=0, le=1e13)] | None = Field(
        default=None, description="Parameters used per token; for MoE models, the active ones."
    )
    layers: SmallCount | None = Field(default=None, description="num_hidden_layers.")
    hidden_size: Dimension | None = Field(default=None, description="hidden_size.")
    intermediate_size: Dimension | None = Field(
        default=None, description="Dense MLP intermediate_size."
    )
    attention_heads: SmallCount | None = Field(
        default=None, description="num_attention_heads (query heads)."
    )
    kv_heads: SmallCount | None = Field(
        default=None, description="num_key_value_heads; equal to attentionHeads without GQA."
    )
    head_dim: SmallCount | None = Field(
        default=None, description="head_dim from the config; not always hiddenSize/heads."
    )
    vocab_size: Dimension | None = Field(default=None, description="vocab_size.")
    max_context_length: Count | None = Field(
        default=None, description="Longest context the model supports (max_position_embeddings)."
    )
    tie_word_embeddings: bool | None = Field(
        default=None, description="Whether lm_head shares the input embedding's weights."
    )
    native_dtype: LaxQuantization | None = Field(
        default=None, description="Format of the published checkpoint's linear weights."
    )
    experts: SmallCount | None = Field(default=None, description="Routed experts (MoE).")
    active_experts: SmallCount | None = Field(
        default=None, description="Experts per token, num_experts_per_tok (MoE)."
    )
    shared_experts: Annotated[int, Field(ge=0, le=4096)] | None = Field(
        default=None, description="Always-active shared experts (MoE)."
    )
    moe_intermediate_size: Dimension | None = Field(
        default=None, description="Intermediate size of one expert (MoE)."
    )
    first_dense_layers: Annotated[int, Field(ge=0, le=4096)] | None = Field(
        default=None,
        description="Leading layers with a dense MLP (DeepSeek first_k_dense_replace).",
    )
    kv_lora_rank: SmallCount | None = Field(
        default=None, description="MLA latent KV rank; its presence marks an MLA model."
    )
    qk_rope_head_dim: SmallCount | None = Field(
        default=None, description="MLA rotary key dimension cached beside the latent."
    )
    q_lora_rank: SmallCount | None = Field(
        default=None,
        description=(
            "MLA query low rank (q_lora_rank); engines keep its down-projection whole on every "
            "GPU. Absent where the query projection is not factored (DeepSeek-V2-Lite)."
        ),
    )
    sliding_window: Count | None = Field(
        default=None, description="Window of the sliding-window attention layers, in tokens."
    )
    sliding_window_layers: Annotated[int, Field(ge=0, le=4096)] | None = Field(
        default=None, description="How many layers use the sliding window."
    )

    @model_validator(mode="after")
    def _consistent(self) -> ModelArchitecture:
        broken = [rule.message for rule in ARCHITECTURE_RULES if not rule.holds(self)]
        if broken:
            raise PydanticCustomError(ARCHITECTURE_ERROR, "; ".join(broken))
        return self


@dataclass(frozen=True, slots=True)
class Relation:
    """`left` divides, or does not exceed, `right`; checked when both are given and `unless`
    is not. One row yields both the pydantic check and the CRD's CEL rule (api/crd.py)."""

    left: str
    relation: Literal["divides", "at most"]
    right: str
    unless: str | None = None

    def holds(self, facts: BaseModel) -> bool:
        left, right = getattr(facts, self.left), getattr(facts, self.right)
        if left is None or right is None:
            return True
        if self.unless is not None and getattr(facts, self.unless) is not None:
            return True
        return bool(right % left == 0 if self.relation == "divides" else left <= right)

    @property
    def message(self) -> str:
        return self.told_with(to_camel)

    def told_with(self, name: Callable[[str], str]) -> str:
        """The rule in the words of whoever wrote the facts: `name` maps a field to them."""
        verb = "must divide" if self.relation == "divides" else "must not exceed"
        unless = f" unless {name(self.unless)} is given" if self.unless else ""
        return f"{name(self.left)} {verb} {name(self.right)}{unless}"

    def cel(self) -> dict[str, str]:
        left, right = f"self.{to_camel(self.left)}", f"self.{to_camel(self.right)}"
        guards = [f"!has({left})", f"!has({right})"]
        if self.unless:
            guards.append(f"has(self.{to_camel(self.unless)})")
        test = f"{right} % {left} == 0" if self.relation == "divides" else f"{left} <= {right}"
        return {
            "rule": " || ".join([*guards, test]),
            "message": self.message,
            "fieldPath": f".{to_camel(self.left)}",
        }


# Facts that contradict each other make the sizing math divide by zero or go negative.
ARCHITECTURE_RULES = (
    # headDim defaults to hiddenSize / attentionHeads.
    Relation("attention_heads", "divides", "hidden_size", unless="head_dim"),
    # Grouped-query attention: each KV head serves a whole group of query heads, so kvHeads
    # divides attentionHeads (and so does not exceed it).
    Relation("kv_heads", "divides", "attention_heads"),
    Relation("active_experts", "at most", "experts"),
    Relation("sliding_window_layers", "at most", "layers"),
    Relation("first_dense_layers", "at most", "layers"),
)


def broken_architecture_rules(
    facts: Mapping[str, Any], name: Callable[[str], str] = to_camel
) -> list[str]:
    """The rules that `facts` (field -> value, each field valid on its own) break, told with
    `name`'s words for the fields."""
    view = ModelArchitecture.model_construct(**facts)
    return [rule.told_with(name) for rule in ARCHITECTURE_RULES if not rule.holds(view)]


class SecretKeyRef(SpecModel):
    name: str = Field(
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
        description="Name of a Secret in the same namespace.",
    )
    key: str = Field(
        max_length=253, pattern=r"^[-._a-zA-Z0-9]+$", description="Key within the Secret."
    )


class ModelCacheSpec(SpecModel):
    type: Literal["emptyDir", "pvc", "hostPath"] = Field(
        default="emptyDir",
        description="emptyDir: per pod; pvc: a shared ReadWriteMany claim; hostPath: per node.",
    )
    claim_name: str | None = Field(
        default=None,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="PersistentVolumeClaim holding the Hugging Face cache (type pvc).",
    )
    path: str | None = Field(
        default=None,
        max_length=1024,
        pattern=r"^/[A-Za-z0-9._/-]*$",
        description="Directory on the node (type hostPath).",
    )


class ModelSpec(SpecModel):
    name: str = Field(
        min_length=1,
        max_length=256,
        description="Catalog id or Hugging Face id, e.g. meta-llama/Llama-3.1-8B-Instruct.",
    )
    architecture: ModelArchitecture | None = Field(
        default=None, description="Overrides or completes the catalog's architecture facts."
    )
    quantized_variants: dict[
        LaxQuantization, Annotated[str, Field(min_length=1, max_length=256)]
    ] = Field(
        default_factory=dict,
        description="Pre-quantized checkpoints by format, e.g. int4-awq: org/Model-AWQ.",
    )
    source: str | None = Field(
        default=None,
        max_length=1024,
        pattern=r"^(hf://[A-Za-z0-9._/-]+|pvc://[a-z0-9][-a-z0-9.]*/[A-Za-z0-9._/-]*)$",
        description="Where weights come from: hf://<id> (default: the checkpoint) or "
        "pvc://<claim>/<path> (weights already on a volume; no download).",
    )
    served_name: str | None = Field(
        default=None,
        max_length=256,
        description="Model name clients send to the OpenAI API; default: spec.model.name.",
    )
    cache: ModelCacheSpec = Field(
        default_factory=ModelCacheSpec, description="Where downloaded weights are kept."
    )
    revision: str | None = Field(
        default=None,
        max_length=256,
        pattern=r"^[A-Za-z0-9._/-]+$",
        description="Checkpoint revision (branch, tag or commit).",
    )
    token_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret holding the Hugging Face token; referenced, never copied."
    )


class EngineSpec(SpecModel):
    name: LaxEngineName = Field(default=EngineName.VLLM, description="Inference engine.")
    version: str | None = Field(
        default=None,
        max_length=64,
        pattern=r"^[0-9A-Za-z.+-]+$",
        description="Engine version from the image lock; default: the lock's default.",
    )
    image: str | None = Field(
        default=None,
        max_length=512,
        description="Engine image override; pinned by digest unless allowUnpinnedImage.",
    )
    allow_unpinned_image: bool = Field(
        default=False, description="Accept an image override without an @sha256 digest."
    )
    gpu_memory_utilization: float = Field(
        default=0.9,
        ge=0.1,
        le=0.99,
        description="Fraction of GPU memory the engine may use (vLLM gpu_memory_utilization).",
    )
    kv_cache_dtype: LaxKvCacheDtype | None = Field(
        default=None,
        description="KV cache precision; unset: the planner chooses; auto: the model dtype.",
    )
    max_num_batched_tokens: Annotated[int, Field(ge=256, le=1_048_576)] | None = Field(
        default=None, description="Token budget of one engine step; default 8192."
    )
    extra_args: list[Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=list,
        description="Additional engine arguments, appended verbatim; a flag the engine "
        "release removed is refused.",
    )
    allow_arg_overrides: bool = Field(
        default=False,
        description="Let extraArgs replace flags the plan sets (TP, max length, ...); the pods "
        "then request the GPUs of the overridden TP x PP.",
    )


class PlacementSpec(SpecModel):
    gpu: str | None = Field(default=None, max_length=64, description="Pin one GPU SKU id.")
    allowed_gpus: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list, description="GPU SKU ids the planner may choose from; empty: all."
    )
    max_gpus_per_replica: Annotated[int, Field(ge=1, le=256)] = Field(
        default=32, description="Upper bound on GPUs in one replica."
    )
    node_selector: dict[
        Annotated[str, Field(max_length=316)], Annotated[str, Field(max_length=63)]
    ] = Field(default_factory=dict, description="Extra node labels replicas require.")
    pending_timeout: str = Field(
        default="10m",
        pattern=r"^[0-9]{1,6}(s|m|h)$",
        description="How long replicas may wait for GPUs before CapacityAvailable turns False.",
    )
    fallback: bool = Field(
        default=False,
        description="After pendingTimeout, re-plan without the starved GPU SKU.",
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Extra taints replicas tolerate (the GPU taint is added)."
    )


def duration_seconds(text: str) -> int:
    """`90s`, `10m`, `2h` -> seconds (the format pendingTimeout accepts)."""
    return int(text[:-1]) * {"s": 1, "m": 60, "h": 3600}[text[-1]]


class Toleration(SpecModel):
    key: str | None = Field(default=None, max_length=316, description="Taint key.")
    operator: Literal["Exists", "Equal"] = Field(default="Equal", description="Match operator.")
    value: str | None = Field(default=None, max_length=63, description="Taint value.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect; empty matches all."
    )
    toleration_seconds: int | None = Field(
        default=None, description="How long a NoExecute taint is tolerated."
    )


# Expert parallelism runs over the TP ranks of a stage (no attention data parallelism): each
# expert is split tensor / expert ways (TensorRT-LLM: moe_expert_parallel_size x
# moe_tensor_parallel_size = tensor_parallel_size, llmapi/llm_args.py), so the degree divides
# TP. vLLM has one switch, --enable-expert-parallel, whose EP size is TP x DP
# (FusedMoEParallelConfig.make, vllm/model_executor/layers/fused_moe/config.py): without data
# parallelism, the TP itself.
EXPERT_DIVIDES_TENSOR = "parallelism.expert must be 1 or divide parallelism.tensor"
VLLM_EXPERT_IS_TENSOR = (
    "parallelism.expert must be 1 or equal parallelism.tensor with engine vllm: "
    "--enable-expert-parallel spreads the experts over every TP rank"
)


class ParallelismSpec(SpecModel):
    tensor: Auto | Annotated[int, Field(ge=1, le=64)] = Field(
        default="auto", description="Tensor-parallel size, or auto."
    )
    pipeline: Auto | Annotated[int, Field(ge=1, le=64)] = Field(
        default="auto", description="Pipeline-parallel size (across nodes), or auto."
    )
    expert: Auto | Annotated[int, Field(ge=1, le=64)] = Field(
        default="auto",
        description="Expert-parallel size of an MoE model, or auto: 1 splits every expert over "
        "the TP ranks, N spreads the experts whole over N of them (N divides tensor; with "
        "vLLM N is tensor). Dense models take 1.",
    )

    @model_validator(mode="after")
    def _expert_divides_tensor(self) -> ParallelismSpec:
        tensor, expert = self.tensor, self.expert
        if isinstance(tensor, int) and isinstance(expert, int) and tensor % expert:
            raise ValueError(EXPERT_DIVIDES_TENSOR)
        return self


class WorkloadSpec(SpecModel):
    max_context_length: Annotated[int, Field(ge=16, le=10_000_000)] | None = Field(
        default=None,
        description="Longest request (prompt + output) to serve; default: the model's maximum.",
    )
    concurrency: Annotated[int, Field(ge=1, le=65_536)] = Field(
        default=16, description="Concurrent sequences per replica the plan must hold."
    )
    input_tokens: Annotated[int, Field(ge=1, le=10_000_000)] = Field(
        default=1024, description="Prompt length of a typical request."
    )
    output_tokens: Annotated[int, Field(ge=1, le=10_000_000)] = Field(
        default=256, description="Output length of a typical request."
    )
    requests_per_second: Annotated[float, Field(gt=0, le=MAX_REQUESTS_PER_SECOND)] | None = Field(
        default=None, description="Total request rate to serve; sets the replica count."
    )


class SloSpec(SpecModel):
    ttft_ms: Annotated[float, Field(gt=0, le=3.6e6)] | None = Field(
        default=None, description="Target time to first token, milliseconds."
    )
    tpot_ms: Annotated[float, Field(gt=0, le=3.6e6)] | None = Field(
        default=None, description="Target time per output token, milliseconds."
    )


class ScalingMetric(SpecModel):
    type: Literal["queueDepth", "kvCacheUsage", "runningRequests", "ttftP95", "tpotP95"] = Field(
        description="queueDepth and runningRequests: waiting / running requests per ready "
        "replica; kvCacheUsage: fraction 0-1 of the KV cache in use; ttftP95 / tpotP95: "
        "target in milliseconds (like spec.slo), read from the engine's histograms in seconds. "
        "Metric names follow engine.name "
        "(vllm:* or trtllm_*)."
    )
    target: float = Field(gt=0, le=1e7, description="Value per replica the autoscaler holds.")


class ScalingPolicy(SpecModel):
    type: Literal["Pods", "Percent"] = Field(description="Change by a number or a percentage.")
    value: int = Field(ge=1, le=10_000, description="How many pods or what percent.")
    period_seconds: int = Field(ge=1, le=1800, description="Within this many seconds.")


class ScalingRules(SpecModel):
    stabilization_window_seconds: int = Field(
        ge=0, le=3600, description="Act on the most conservative recommendation of this window."
    )
    policies: list[ScalingPolicy] = Field(min_length=1, description="Rate limits.")
    select_policy: Literal["Max", "Min", "Disabled"] = Field(
        default="Max", description="Which policy applies when several do (HPA semantics)."
    )


class ScalingBehavior(SpecModel):
    scale_up: ScalingRules = Field(description="How fast replicas are added.")
    scale_down: ScalingRules = Field(description="How fast replicas are removed.")


# A HorizontalPodAutoscaler goes below one replica only with the alpha HPAScaleToZero gate.
PROMETHEUS_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]{0,99}")
# Both were accepted for mode keda until KEDA, too, was found to query whatever a tenant named.
# The fields stay in the schema so that an old manifest is refused, not silently pruned.
PROMETHEUS_URL_REFUSED = (
    "prometheusUrl is not accepted: the operator and KEDA query only the Prometheus endpoints "
    "the operator's settings allow; name one with scaling.prometheus"
)
ACTIVATION_QUERY_REFUSED = (
    "scaleToZero.activationQuery is not accepted: no tenant PromQL runs, in mode operator or "
    "keda; use scaleToZero.activationMetric"
)
HPA_SCALE_TO_ZERO = (
    "scaleToZero needs mode operator or keda: a HorizontalPodAutoscaler cannot scale to zero "
    "without the alpha HPAScaleToZero feature gate"
)


class ActivationMetric(SpecModel):
    name: str = Field(
        pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$",
        max_length=200,
        description="Prometheus metric name, e.g. a gateway's waiting requests.",
    )
    labels: dict[str, Annotated[str, StringConstraints(max_length=256)]] = Field(
        default_factory=dict,
        max_length=8,
        description="Exact label matches besides namespace, which is always this object's.",
    )

    @field_validator("labels")
    @classmethod
    def _label_names(cls, labels: dict[str, str]) -> dict[str, str]:
        for name in labels:
            if not PROMETHEUS_LABEL.fullmatch(name):
                raise ValueError(f"{name!r} is not a Prometheus label name")
        return labels


class ScaleToZeroSpec(SpecModel):
    idle_seconds: int = Field(
        default=900,
        ge=60,
        le=86_400,
        description="Scale to zero after the engines have reported no running and no waiting "
        "requests for this long. Missing or stale metrics restart the count.",
    )
    activation_metric: ActivationMetric | None = Field(
        default=None,
        description="A metric read while at zero replicas, always within this object's "
        "namespace: a sum above 0 scales to minReplicas. Without it, only a write to the scale "
        "subresource (kubectl scale) brings replicas back.",
    )
    activation_query: str | None = Field(
        default=None,
        max_length=4096,
        description="Not accepted (use activationMetric): no tenant PromQL runs.",
    )


class ScalingSpec(SpecModel):
    mode: Literal["operator", "hpa", "keda"] = Field(
        default="operator",
        description="operator: llmdeploy scales; hpa: emit an autoscaling/v2 "
        "HorizontalPodAutoscaler on external metrics (prometheus-adapter); keda: a ScaledObject.",
    )
    min_replicas: int = Field(default=1, ge=1, le=10_000, description="Lower bound.")
    max_replicas: int = Field(default=10, ge=1, le=10_000, description="Upper bound.")
    metrics: list[ScalingMetric] = Field(
        default_factory=list,
        description="Signals to scale on; default: runningRequests at 80% of the planned "
        "concurrency and queueDepth of half a batch per replica.",
    )
    tolerance: float = Field(
        default=0.1, ge=0, le=1, description="Ignore ratios within 1 +- tolerance."
    )
    behavior: ScalingBehavior | None = Field(
        default=None,
        description="Stabilization windows and rate limits (HPA semantics). Default, from the "
        "plan: add up to 4 replicas or double every 15 s; remove after three times a replica's "
        "cold start (model load) of lower recommendations, at least 2 minutes, at once.",
    )

    scale_to_zero: ScaleToZeroSpec | None = Field(
        default=None,
        description="Go to zero replicas after an idle period (modes operator and keda); "
        "minReplicas still bounds the range while there is traffic.",
    )

    @model_validator(mode="after")
    def _bounds(self) -> ScalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas must not exceed maxReplicas")
        if self.scale_to_zero is not None and self.mode == "hpa":
            raise ValueError(HPA_SCALE_TO_ZERO)
        if self.prometheus_url is not None:
            raise ValueError(PROMETHEUS_URL_REFUSED)
        if self.scale_to_zero is not None and self.scale_to_zero.activation_query is not None:
            raise ValueError(ACTIVATION_QUERY_REFUSED)
        return self

    prometheus: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="The name of a Prometheus endpoint the operator's settings allow "
        "(LLMDEPLOY_PROMETHEUS_ENDPOINTS): queried by the operator's autoscaling (mode "
        "operator) or by KEDA (mode keda), and in every mode by the measurements "
        "(status.observed); default: the operator's default endpoint (LLMDEPLOY_PROMETHEUS_URL).",
    )
    prometheus_url: str | None = Field(
        default=None,
        max_length=2048,
        description="Not accepted: name an allowed endpoint with `prometheus` instead.",
    )


class MonitoringSpec(SpecModel):
    pod_monitor: bool = Field(
        default=False,
        description="Emit a PodMonitor (monitoring.coreos.com/v1) for engine metrics.",
    )


NamespaceName = Annotated[
    str, StringConstraints(max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
]


class PlanningSpec(SpecModel):
    calibration: Literal["auto", "off"] = Field(
        default="auto",
        description="auto: measured/predicted TTFT and TPOT ratios (status.calibration) scale "
        "the latency estimates of this object's next plan and of status.recommendation; off: "
        "the catalog's model alone.",
    )


class NetworkPolicySpec(SpecModel):
    enabled: bool = Field(
        default=False,
        description="Emit a NetworkPolicy (networking.k8s.io/v1): the engine port admits pods "
        "of this namespace and of allowedNamespaces only; the pods of a multi-node replica "
        "always reach each other. Egress is left open (model download).",
    )
    allowed_namespaces: list[NamespaceName] = Field(
        default_factory=list,
        max_length=64,
        description="Other namespaces whose pods may call the API and scrape metrics "
        "(e.g. the gateway's and Prometheus's).",
    )


class PilotGates(SpecModel):
    slo: bool = Field(
        default=True,
        description="The candidate's measured TTFT and TPOT meet spec.slo (SLOMet); a breach "
        "rolls it back at once.",
    )
    cost_per_token: bool = Field(
        default=True,
        description="The candidate's measured cost per 1M output tokens is not worse than the "
        "current generation's by more than costTolerancePercent.",
    )


class PilotSpec(SpecModel):
    traffic_percent: Annotated[int, Field(ge=1, le=50)] = Field(
        default=10,
        description="Share of traffic the candidate gets while piloting: HTTPRoute weights "
        "with spec.routing.httpRoute, else approximated by its share of the replicas.",
    )
    duration: str = Field(
        default="15m",
        pattern=r"^[0-9]{1,6}(s|m|h)$",
        description="How long the gates must hold, from the candidate's first ready replica, "
        "before it is promoted.",
    )
    gates: PilotGates = Field(default_factory=PilotGates, description="What must hold.")
    cost_tolerance_percent: Annotated[float, Field(ge=0, le=100, allow_inf_nan=False)] = Field(
        default=5, description="How much worse the candidate's cost per token may be."
    )


class RolloutSpec(SpecModel):
    strategy: Literal["Rolling", "Pilot"] = Field(
        default="Rolling",
        description="Rolling: a new plan replaces the running one in place. Pilot: it runs "
        "beside it on a share of the traffic, is measured, then promoted or rolled back "
        "(docs/rollouts.md).",
    )
    pilot: PilotSpec = Field(default_factory=PilotSpec, description="The pilot's settings.")


# An RFC 1123 subdomain, as Gateway API names its objects' sectionName (and as a Gateway's
# name must be to exist at all).
SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# HTTPRoute hostnames (Gateway API v1's pattern): a DNS name, or one with a leading wildcard.
HOSTNAME_PATTERN = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# A PathPrefix value: absolute, of URL path characters without percent-encoding, no empty or
# all-dot segment (the HTTPRoute CRD's CEL rules refuse `//`, `/./`, `/../`, `%2f` and `#`).
_PATH_CHARS = "A-Za-z0-9_~!$&'()*+,;=:@-"
_SEGMENT = rf"[.{_PATH_CHARS}]*[{_PATH_CHARS}][.{_PATH_CHARS}]*"  # not all dots
PATH_PREFIX_PATTERN = rf"^/({_SEGMENT}(/{_SEGMENT})*/?)?$"
HTTP_ROUTE_NEEDS_POOL = "httpRoute needs inferencePool: the route's backend is the pool"


class EndpointPickerSpec(SpecModel):
    service: str = Field(
        max_length=63,
        pattern=DNS_LABEL_PATTERN,
        description="Name of the endpoint picker's (EPP) Service in this namespace.",
    )
    port: int = Field(ge=1, le=65535, description="The picker's gRPC (ext-proc) port.")
    failure_mode: Literal["FailOpen", "FailClose"] | None = Field(
        default=None,
        description="What the gateway does when the picker does not answer: FailOpen sends "
        "the request to any endpoint of the pool; FailClose (the InferencePool's default) "
        "refuses it.",
    )


class InferencePoolSpec(SpecModel):
    endpoint_picker: EndpointPickerSpec = Field(
        description="The endpoint picker that chooses an engine pod for each request."
    )


class GatewayRefSpec(SpecModel):
    name: str = Field(max_length=253, pattern=SUBDOMAIN_PATTERN, description="Gateway name.")
    namespace: NamespaceName | None = Field(
        default=None, description="The Gateway's namespace; default: this object's."
    )
    section_name: str | None = Field(
        default=None,
        max_length=253,
        pattern=SUBDOMAIN_PATTERN,
        description="One listener of the Gateway; default: every listener that admits it.",
    )


class HTTPRouteSpec(SpecModel):
    gateway: GatewayRefSpec = Field(description="The Gateway the route attaches to.")
    hostnames: list[Annotated[str, StringConstraints(max_length=253, pattern=HOSTNAME_PATTERN)]] = (
        Field(
            default_factory=list,
            max_length=16,
            description="Host names the route answers; empty: every host the listener does.",
        )
    )
    path_prefix: str = Field(
        default="/",
        max_length=1024,
        pattern=PATH_PREFIX_PATTERN,
        description="Requests whose path begins with this go to the InferencePool.",
    )


class RoutingSpec(SpecModel):
    inference_pool: InferencePoolSpec | None = Field(
        default=None,
        description="Render an InferencePool (inference.networking.k8s.io/v1) of the engine "
        "pods (the leaders of a multi-node replica) behind the given endpoint picker.",
    )
    http_route: HTTPRouteSpec | None = Field(
        default=None,
        description="Render an HTTPRoute (gateway.networking.k8s.io/v1) that sends a Gateway's "
        "traffic to the InferencePool; needs inferencePool.",
    )

    @model_validator(mode="after")
    def _route_needs_pool(self) -> RoutingSpec:
        if self.http_route is not None and self.inference_pool is None:
            raise ValueError(HTTP_ROUTE_NEEDS_POOL)
        return self


class LLMDeploymentSpec(SpecModel):
    model: ModelSpec = Field(description="The model to serve.")
    engine: EngineSpec = Field(default_factory=EngineSpec, description="Engine settings.")
    placement: PlacementSpec = Field(
        default_factory=PlacementSpec, description="Where replicas may run."
    )
    quantization: Auto | LaxQuantization = Field(
        default="auto", description="Weight format, or auto to let the planner choose."
    )
    min_precision: LaxPrecision = Field(
        default=Precision.INT4,
        description="Lowest precision auto may choose; bf16 forbids lowering precision.",
    )
    parallelism: ParallelismSpec = Field(
        default_factory=ParallelismSpec,
        description="Tensor, pipeline and expert parallelism.",
    )
    workload: WorkloadSpec = Field(default_factory=WorkloadSpec, description="Expected traffic.")
    slo: SloSpec = Field(default_factory=SloSpec, description="Latency targets.")
    replicas: Annotated[int, Field(ge=0, le=10_000)] | None = Field(
        default=None, description="Replica count; default: from requestsPerSecond, else 1."
    )
    monitoring: MonitoringSpec = Field(
        default_factory=MonitoringSpec, description="Metrics scraping."
    )
    network_policy: NetworkPolicySpec = Field(
        default_factory=NetworkPolicySpec, description="Ingress isolation of the engine pods."
    )
    scaling: ScalingSpec | None = Field(
        default=None, description="Autoscale replicas from the engines' metrics."
    )
    planning: PlanningSpec = Field(
        default_factory=PlanningSpec, description="How measurements feed the next plan."
    )
    rollout: RolloutSpec = Field(
        default_factory=RolloutSpec, description="How a new plan replaces the running one."
    )
    routing: RoutingSpec | None = Field(
        default=None,
        description="Traffic entry through the Gateway API Inference Extension (docs/routing.md).",
    )

    @model_validator(mode="after")
    def _vllm_expert_is_tensor(self) -> LLMDeploymentSpec:
        tensor, expert = self.parallelism.tensor, self.parallelism.expert
        pinned = isinstance(tensor, int) and isinstance(expert, int)
        if pinned and self.engine.name is EngineName.VLLM and expert not in (1, tensor):
            raise ValueError(VLLM_EXPERT_IS_TENSOR)
        return self

    def metrics_readers(self) -> list[str]:
        """The fields that read the engines' Prometheus metrics: they need a release that
        serves them."""
        wanted = (("spec.scaling", self.scaling is not None),
                  ("spec.monitoring.podMonitor", self.monitoring.pod_monitor))  # fmt: skip
        return [field for field, on in wanted if on]


class ObjectMeta(BaseModel):
    """The part of metadata llmdeploy reads; the rest is kept as is."""

    model_config = ConfigDict(extra="allow", strict=True)
    name: str = Field(
        default="llmdeployment",
        max_length=63,
        pattern=DNS_LABEL_PATTERN,
        description="A DNS label: it names the Service and the workload.",
    )
    namespace: str | None = Field(default=None, max_length=63)


class LLMDeployment(BaseModel):
    model_config = ConfigDict(extra="allow")
    api_version: Literal["llmdeploy.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["LLMDeployment"]
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: LLMDeploymentSpec


def parse_llmdeployment(document: Any) -> LLMDeployment:
    """Validate a decoded manifest; raises pydantic.ValidationError with field paths."""
    return LLMDeployment.model_validate(document)
