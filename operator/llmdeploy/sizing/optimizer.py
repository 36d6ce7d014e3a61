"""Enumerate GPU x count x quantization x TP x PP x EP x KV dtype, drop the infeasible with a
reason, and pick the cheapest configuration per token that meets the SLO.

Ties go to fewer GPUs, then to higher precision.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Literal

from llmdeploy.api.types import (
    KvCacheDtype,
    LLMDeploymentSpec,
    Precision,
    Quantization,
)
from llmdeploy.catalog import Catalog, Engine, Gpu, ImageLock, QuantFormat, QuantizedCheckpoint
from llmdeploy.sizing.engine_memory import EngineMemory, engine_memory
from llmdeploy.sizing.memory import (
    GIB,
    MemoryBreakdown,
    memory_breakdown,
    request_kv_bytes,
    tensorrt_llm_served_context,
    weight_bytes_per_rank,
)
from llmdeploy.sizing.model_facts import ModelFacts, SpecError, resolve_model
from llmdeploy.sizing.moe_kernels import (
    NO_MOE_WORKSPACE,
    MoeWorkspace,
    expert_kernel,
    expert_split,
    moe_workspace,
)
from llmdeploy.sizing.performance import (
    DEFAULT_MAX_NUM_BATCHED_TOKENS,
    LatencyCalibration,
    Performance,
    estimate_performance,
    frontend_s,
    grouped_fp8_shares,
    replicas_for_rate,
)
from llmdeploy.sizing.plan import Alternative, Plan

PRECISION_RANK = {Precision.BF16: 0, Precision.FP8: 1, Precision.INT8: 2, Precision.INT4: 3}
SIXTEEN_BIT = (Quantization.BF16, Quantization.FP16)
MAX_ALTERNATIVES = 12
# Relative error of the KV-cache estimate the plan warns within: the +-10% band issue 14 holds
# the held-out corpus to (bench/sizing_accuracy.py; docs/benchmarks.md has the current figures).
KV_ESTIMATE_BAND = 0.10
# How far the latency model's estimates may be off: the 90th percentile of its |error| on the
# held-out corpus rows, to a whole percent. bench/sizing_accuracy.py (latency_estimate_bands)
# derives them; tests/unit/test_estimate_bands.py holds these to its output. A plan whose
# uncalibrated estimate is within the band of an SLO says so (_latency_band_reason).
TTFT_ESTIMATE_BAND = 0.42
TPOT_ESTIMATE_BAND = 0.16


@dataclass(frozen=True, slots=True)
class SearchSpace:
    gpus: tuple[Gpu, ...]
    formats: tuple[QuantFormat, ...]
    tensor: int | None  # pinned, or None for auto
    pipeline: int | None
    kv_dtypes: tuple[KvCacheDtype, ...]
    max_gpus: int
    expert: int | None = None  # pinned expert-parallel degree, or None for auto


@dataclass(slots=True, eq=False)  # identity, not field-by-field comparison
class Candidate:
    gpu: Gpu
    fmt: QuantFormat
    tensor: int
    pipeline: int
    kv_dtype: KvCacheDtype
    checkpoint: str | None = None
    infeasible: str | None = None
    memory: MemoryBreakdown | None = None
    performance: Performance | None = None
    replicas: int = 1
    cost_per_hour: float = 0.0
    cost_per_million_tokens: float = 0.0
    slo_miss: str | None = None
    expert: int = 1  # ranks the routed experts are spread over whole (1: each expert TP-split)

    @property
    def gpu_count(self) -> int:
        return self.tensor * self.pipeline

    def with_expert(self, expert: int) -> Candidate:
        """A copy with another expert-parallel degree (what dataclasses.replace gives, at a
        fraction of its cost: the MoE search copies a layout's EP 1 figures to every degree
        priced alike; tests/unit/test_planner_speed.py holds it to replace)."""
        return Candidate(
            self.gpu,
            self.fmt,
            self.tensor,
            self.pipeline,
            self.kv_dtype,
            self.checkpoint,
            self.infeasible,
            self.memory,
            self.performance,
            self.replicas,
            self.cost_per_hour,
            self.cost_per_million_tokens,
            self.slo_miss,
            expert,
        )

    @property
    def viable(self) -> bool:
        return self.infeasible is None and self.slo_miss is None

    def label(self) -> str:
        layout = f"TP{self.tensor}" + (f"xPP{self.pipeline}" if self.pipeline > 1 else "")
        layout += f" EP{self.expert}" if self.expert > 1 else ""
        kv = ", fp8 KV" if self.kv_dtype is KvCacheDtype.FP8 else ""
        return f"{self.gpu.id} x{self.gpu_count} {self.fmt.id} {layout}{kv}"


@dataclass(frozen=True, slots=True)
class _Context:
    spec: LLMDeploymentSpec
    model: ModelFacts
    engine: Engine
    max_context: int
    max_num_batched_tokens: int
    images: ImageLock | None
    drivers: Mapping[str, Sequence[tuple[int, int]]]  # the NVIDIA drivers of each SKU's nodes
    calibration: LatencyCalibration | None = None
    rules_by_gpu: dict[str, EngineMemory] = field(default_factory=dict)
    # Per GPU, as rules_by_gpu: every candidate on a GPU asks, and the answer is the GPU's.
    versions_by_gpu: dict[str, str | None] = field(default_factory=dict)
    block_sizes_by_gpu: dict[str, int] = field(default_factory=dict)
    known_checkpoints: dict[tuple[str, str], QuantizedCheckpoint | None] = field(
        default_factory=dict
    )
    layouts: dict[tuple[object, ...], list[Candidate]] = field(default_factory=dict)  # evaluated
    # Per (GPU, format, checkpoint, TP, EP): `_moe_workspace`, asked by the pricing and by each
    # KV dtype's memory.
    workspace: dict[tuple[object, ...], MoeWorkspace] = field(default_factory=dict)

    def known_checkpoint(self, c: Candidate) -> QuantizedCheckpoint | None:
        """The catalog's facts of the checkpoint the candidate loads
        (ModelFacts.quantized_checkpoint), looked up once per checkpoint and format."""
        if c.checkpoint is None:
            return None
        key = (c.checkpoint, c.fmt.id)
        if key not in self.known_checkpoints:
            self.known_checkpoints[key] = self.model.quantized_checkpoint(*key)
        return self.known_checkpoints[key]

    def engine_version(self, gpu: Gpu) -> str | None:
        """The release that would run on this GPU: the one the renderer will pin (the image
        lock's choice for the GPU's platform and its nodes' drivers); None when unknown (an
        image override without a version). Chosen once per GPU."""
        if gpu.id not in self.versions_by_gpu:
            self.versions_by_gpu[gpu.id] = self._engine_version(gpu)
        return self.versions_by_gpu[gpu.id]

    def _engine_version(self, gpu: Gpu) -> str | None:
        engine = self.spec.engine
        if engine.image or self.images is None:
            return engine.version
        engine_id, drivers = self.engine.id.value, self.drivers.get(gpu.id, ())
        chosen = self.images.choose(engine_id, gpu.platform, engine.version, drivers)
        usual = chosen.engine_version if chosen else engine.version
        if engine.version is not None or not self.spec.metrics_readers():
            return usual
        if self.engine.metrics_for(usual) is not None:
            return usual
        # Autoscaling or a PodMonitor reads metrics the lock's usual release does not serve:
        # the newest pinned release that serves them and runs on the nodes.
        for version in reversed(self.images.versions(engine_id, gpu.platform)):
            serving = self.images.choose(engine_id, gpu.platform, version, drivers)
            if serving and self.engine.metrics_for(version) is not None:
                return serving.engine_version
        return usual

    def block_size(self, gpu: Gpu) -> int:
        if gpu.id not in self.block_sizes_by_gpu:
            version = self.engine_version(gpu)
            self.block_sizes_by_gpu[gpu.id] = self.engine.block_size_for(
                gpu, self.model.is_mla, version
            )
        return self.block_sizes_by_gpu[gpu.id]

    def memory_rules(self, gpu: Gpu) -> EngineMemory:
        """The engine's accounting for the release that would run on this GPU (once per GPU:
        every candidate on it asks)."""
        rules = self.rules_by_gpu.get(gpu.id)
        if rules is None:
            version = self.engine_version(gpu)
            rules = engine_memory(self.engine.id.value, version, gpu, self.model.model_type)
            self.rules_by_gpu[gpu.id] = rules
        return rules


def _search(
    spec: LLMDeploymentSpec,
    catalog: Catalog,
    images: ImageLock | None,
    drivers: Mapping[str, Sequence[tuple[int, int]]] | None,
    calibration: LatencyCalibration | None = None,
) -> tuple[_Context, SearchSpace]:
    model = resolve_model(spec.model, catalog)
    engine = catalog.engines.get(spec.engine.name)
    if engine is None:
        raise SpecError("spec.engine.name", f"engine {spec.engine.name!r} is not in the catalog")
    ctx = _Context(
        spec=spec,
        model=model,
        engine=engine,
        max_context=_max_context(spec, model),
        max_num_batched_tokens=spec.engine.max_num_batched_tokens
        or engine.default_max_num_batched_tokens,
        images=images,
        drivers=drivers or {},
        calibration=calibration,
    )
    space = _search_space(spec, catalog, engine)
    _check_expert(model, space.expert)
    return ctx, space


def _check_expert(model: ModelFacts, expert: int | None) -> None:
    """A pinned expert-parallel degree the model cannot take: a dense model has no experts,
    and the planner sizes experts spread evenly. vLLM would run an uneven count without EPLB
    (determine_expert_map gives the remainder to some ranks; only EPLB asserts
    global_num_experts % ep_size == 0, vllm/model_executor/layers/fused_moe/layer.py), its
    busiest rank then holding more than the memory model counts."""
    path = "spec.parallelism.expert"
    if expert is None or expert == 1:
        return
    if not model.is_moe:
        raise SpecError(
            path, f"{model.id} is a dense model: it has no experts to spread; use 1 or auto"
        )
    if model.experts % expert:
        raise SpecError(
            path,
            f"the {model.experts} routed experts of {model.id} do not spread evenly over "
            f"{expert} ranks; the planner sizes an even spread only",
        )


def plan_deployment(
    spec: LLMDeploymentSpec,
    catalog: Catalog,
    images: ImageLock | None = None,
    drivers: Mapping[str, Sequence[tuple[int, int]]] | None = None,
    calibration: LatencyCalibration | None = None,
) -> Plan:
    """The plan for a spec; raises SpecError for input that names something impossible.

    With the image lock, a GPU is only a candidate where an image of the engine (at the
    pinned version) exists for its platform and runs on its nodes' NVIDIA `drivers` (by SKU;
    none known: the lock's default), and release-dependent facts (KV block size, refused
    dtypes) follow the release that will run there; the plan names it. With a
    `calibration`, every latency estimate is scaled by it (and so are the SLO checks and the
    replica count)."""
    ctx, space = _search(spec, catalog, images, drivers, calibration)
    ranked = _ranked(ctx, space)
    viable = [c for c in ranked if c.viable]
    if viable:
        return _plan(ctx, viable[0], ranked)
    return _infeasible_plan(ctx, catalog, space, ranked)


def feasible_alternatives(
    spec: LLMDeploymentSpec,
    catalog: Catalog,
    images: ImageLock | None = None,
    drivers: Mapping[str, Sequence[tuple[int, int]]] | None = None,
    calibration: LatencyCalibration | None = None,
) -> list[Alternative]:
    """Every configuration that fits, with its estimates: those meeting the SLO by rank (the
    first is the plan's choice, reason "chosen"), then those missing it. `plan` shows a few
    of them; `plan --plot` draws them all."""
    ctx, space = _search(spec, catalog, images, drivers, calibration)
    fits = [c for c in _ranked(ctx, space) if c.infeasible is None]
    best = fits[0] if fits and fits[0].viable else None
    return [_alternative(ctx, c, "chosen" if c is best else _why_lost(ctx, c, best)) for c in fits]


def _max_context(spec: LLMDeploymentSpec, model: ModelFacts) -> int:
    workload = spec.workload
    limit = workload.max_context_length or model.max_context_length
    if limit > model.max_context_length:
        raise SpecError(
            "spec.workload.maxContextLength",
            f"{limit} exceeds the model's maximum context of {model.max_context_length} tokens",
        )
    if workload.input_tokens + workload.output_tokens > limit:
        raise SpecError(
            "spec.workload.inputTokens",
            f"inputTokens + outputTokens ({workload.input_tokens + workload.output_tokens}) "
            f"exceed maxContextLength {limit}",
        )
    return limit


def _known_gpu(catalog: Catalog, gpu_id: str, path: str) -> Gpu:
    gpu = catalog.gpus.get(gpu_id)
    if gpu is None:
        raise SpecError(path, f"unknown GPU {gpu_id!r}; known: {', '.join(sorted(catalog.gpus))}")
    return gpu


def placement_gpus(spec: LLMDeploymentSpec, catalog: Catalog) -> tuple[Gpu, ...]:
    """The GPUs the spec's placement allows; SpecError for a name the catalog does not know
    (checked against the whole catalog before it is narrowed to a cluster's)."""
    placement = spec.placement
    allowed = [
        _known_gpu(catalog, gpu_id, f"spec.placement.allowedGpus[{i}]")
        for i, gpu_id in enumerate(placement.allowed_gpus)
    ]
    if placement.gpu is not None:
        pinned = _known_gpu(catalog, placement.gpu, "spec.placement.gpu")
        if allowed and pinned not in allowed:
            raise SpecError("spec.placement.gpu", f"{pinned.id!r} is not in allowedGpus")
        return (pinned,)
    return tuple(allowed) or tuple(catalog.gpus[g] for g in sorted(catalog.gpus))


def _search_space(spec: LLMDeploymentSpec, catalog: Catalog, engine: Engine) -> SearchSpace:
    placement = spec.placement
    gpus = placement_gpus(spec, catalog)

    if spec.quantization == "auto":
        floor = PRECISION_RANK[spec.min_precision]
        formats = tuple(
            f
            for q, f in sorted(catalog.quantizations.items())
            if PRECISION_RANK[f.precision] <= floor
            and engine.id in f.engines
            and q is not Quantization.FP16  # same size and speed as bf16; only when pinned
        )
    else:
        fmt = catalog.quantizations.get(spec.quantization)
        if fmt is None:
            raise SpecError("spec.quantization", f"{spec.quantization!r} is not in the catalog")
        formats = (fmt,)

    if spec.engine.kv_cache_dtype is not None:
        kv_dtypes: tuple[KvCacheDtype, ...] = (spec.engine.kv_cache_dtype,)
    elif (
        engine.fp8_kv_cache_architectures
        and PRECISION_RANK[spec.min_precision] >= PRECISION_RANK[Precision.FP8]
    ):
        kv_dtypes = (KvCacheDtype.AUTO, KvCacheDtype.FP8)
    else:
        kv_dtypes = (KvCacheDtype.AUTO,)

    parallelism = spec.parallelism
    return SearchSpace(
        gpus=gpus,
        formats=formats,
        tensor=None if parallelism.tensor == "auto" else parallelism.tensor,
        pipeline=None if parallelism.pipeline == "auto" else parallelism.pipeline,
        kv_dtypes=kv_dtypes,
        max_gpus=placement.max_gpus_per_replica,
        expert=None if parallelism.expert == "auto" else parallelism.expert,
    )


def _layouts(space: SearchSpace, gpu: Gpu) -> list[list[tuple[int, int]]]:
    """(TP, PP) pairs to try, grouped by TP with PP ascending. TP stays within a node; PP only
    spans nodes of full-node TP."""
    tensors = (
        [space.tensor] if space.tensor else [t for t in (1, 2, 4, 8, 16) if t <= gpu.gpus_per_node]
    )
    groups: list[list[tuple[int, int]]] = []
    for tensor in tensors:
        if space.pipeline:
            pipelines = [space.pipeline]
        elif tensor == gpu.gpus_per_node or space.tensor:
            pipelines = [p for p in range(1, 9) if tensor * p <= space.max_gpus]
        else:
            pipelines = [1] if tensor <= space.max_gpus else []
        if space.tensor and space.pipeline:
            pipelines = [space.pipeline]  # both pinned: evaluate and explain, even if too many
        groups.append([(tensor, pipeline) for pipeline in pipelines])
    return groups


def _expert_degrees(ctx: _Context, space: SearchSpace, tensor: int) -> tuple[list[int], str]:
    """The expert-parallel degrees to try with TP `tensor` (1 first), and why none is left.
    Expert parallelism runs over the TP ranks (no attention data parallelism): vLLM's
    --enable-expert-parallel makes the MoE's EP size the TP and each expert whole
    (FusedMoEParallelConfig.make: ep_size = tp_size x dp_size, the MoE's tp_size 1);
    TensorRT-LLM takes any moe_expert_parallel_size whose product with
    moe_tensor_parallel_size is the TP (trtllm-serve --ep_size): 1, half the TP and the TP are
    tried. A dense model, and a count of experts that does not spread evenly, take 1."""
    model, pinned = ctx.model, space.expert
    vllm = ctx.engine.id != "tensorrt-llm"
    if pinned is not None:
        if tensor % pinned:
            return [], f"spec.parallelism.expert {pinned} does not divide tensor parallel {tensor}"
        if vllm and pinned not in (1, tensor):
            return [], (
                f"{ctx.engine.display_name} spreads the experts over every TP rank: "
                f"spec.parallelism.expert {pinned} needs tensor parallel {pinned}, not {tensor}"
            )
        return [pinned], ""
    if not model.is_moe or tensor == 1:
        return [1], ""
    tried = (tensor,) if vllm else (tensor // 2, tensor)
    return [1, *(d for d in dict.fromkeys(tried) if d > 1 and model.experts % d == 0)], ""


def _gpu_unavailable(ctx: _Context, gpu: Gpu) -> str | None:
    """Why the engine cannot run on this GPU at all: a vendor it has no build for, or no
    pinned image of the engine (at the pinned version) for the GPU's platform."""
    engine = ctx.engine
    if gpu.vendor not in engine.vendors:
        vendors = " and ".join(v.upper() for v in engine.vendors)
        return (
            f"{engine.display_name} runs on {vendors} GPUs only; "
            f"{gpu.id} is an {gpu.vendor.upper()} GPU"
        )
    if ctx.images is None or ctx.spec.engine.image:
        return _no_metrics(ctx, gpu)
    versions = ctx.images.versions(engine.id.value, gpu.platform)
    wanted = ctx.spec.engine.version
    platform = "ROCm" if gpu.platform == "rocm" else "CUDA"
    release = f" {wanted}" if wanted else ""
    if versions and (wanted is None or wanted in versions):
        oldest = min(ctx.drivers.get(gpu.id, ()), default=None)
        if oldest is None or ctx.images.choose(engine.id.value, gpu.platform, wanted, [oldest]):
            return _no_metrics(ctx, gpu)
        return (
            f"the {gpu.id} nodes' NVIDIA driver {oldest[0]}.{oldest[1]} is older than every "
            f"pinned {engine.display_name}{release} image needs (image lock)"
        )
    known = f"; {platform} releases pinned: {', '.join(versions)}" if versions else ""
    return (
        f"no pinned {platform} image of {engine.display_name}{release} for {gpu.id}"
        f" (image lock){known}"
    )


def _no_metrics(ctx: _Context, gpu: Gpu) -> str | None:
    """Why the release that would run here cannot serve what reads its metrics: autoscaling
    on a release without them would never act, and a PodMonitor would scrape nothing."""
    readers = ctx.spec.metrics_readers()
    version = ctx.engine_version(gpu)
    if not readers or ctx.engine.metrics_for(version) is not None:
        return None
    engine = ctx.engine
    return (
        f"{engine.display_name} {version}, the pinned release for {gpu.id}, serves no "
        f"Prometheus metrics ({' and '.join(readers)} read them); releases that do: "
        f"{engine.releases_with_metrics()} (spec.engine.version)"
    )


def _kv_dtypes(ctx: _Context, space: SearchSpace, gpu: Gpu) -> tuple[tuple[KvCacheDtype, ...], str]:
    """The KV dtypes to try on this GPU, and why none is left (FP8 KV where the engine has no
    FP8 KV cache on the GPU's architecture)."""
    if gpu.architecture in ctx.engine.fp8_kv_cache_architectures:
        return space.kv_dtypes, ""
    kept = tuple(kv for kv in space.kv_dtypes if kv is not KvCacheDtype.FP8)
    reason = (
        f"{ctx.engine.display_name} has no FP8 KV cache on {gpu.architecture} ({gpu.id})"
        if not kept
        else ""
    )
    return kept, reason


def _format_unavailable(ctx: _Context, fmt: QuantFormat, gpu: Gpu) -> tuple[str | None, str | None]:
    """(reason it cannot be used, checkpoint to load)."""
    model, variants = ctx.model, ctx.spec.model.quantized_variants
    if ctx.engine.id not in fmt.engines:
        return f"{ctx.engine.display_name} does not serve {fmt.id}", None
    version = ctx.engine_version(gpu)
    refusal = ctx.engine.refusal(fmt.id.value, model.model_type, version)
    if refusal is not None:
        release = f", {ctx.engine.display_name} {version} on {gpu.id}" if version else ""
        return f"{fmt.id}: {refusal.reason} ({model.id} is {model.model_type}{release})", None
    if fmt.requires_fp8_hardware and not gpu.fp8:
        return (
            f"{gpu.id} ({gpu.architecture}) has no FP8 tensor cores; fp8 needs Ada or newer",
            None,
        )
    if fmt.id in variants:
        return None, variants[fmt.id]
    if fmt.id == model.native_dtype:
        return None, ctx.spec.model.name
    if fmt.applies_to == "experts" and not model.is_moe:
        return f"{fmt.id} applies to MoE experts and {model.id} is dense", None
    online = ctx.engine.id in fmt.online_engines
    if online and model.native_dtype in SIXTEEN_BIT:
        return None, ctx.spec.model.name
    if online:
        return (
            f"{fmt.id} cannot be made from the {model.native_dtype} checkpoint; "
            f"add spec.model.quantizedVariants.{fmt.id}",
            None,
        )
    return f"{fmt.id} needs a pre-quantized checkpoint in spec.model.quantizedVariants", None


def _layout_unsupported(ctx: _Context, gpu: Gpu, tensor: int, pipeline: int) -> str | None:
    model = ctx.model
    if tensor > gpu.gpus_per_node:
        return (
            f"tensorParallel {tensor} exceeds the {gpu.gpus_per_node} GPUs of one {gpu.id} node; "
            "use pipeline parallelism across nodes"
        )
    if model.attention_heads % tensor:
        return (
            f"tensorParallel {tensor} does not divide the {model.attention_heads} attention heads"
        )
    if not model.is_mla and model.kv_heads % tensor and tensor % model.kv_heads:
        return f"tensorParallel {tensor} and the {model.kv_heads} KV heads do not divide each other"
    if tensor * pipeline > gpu.gpus_per_node and not ctx.engine.multi_node:
        return (
            f"{ctx.engine.display_name} replicas spanning nodes are not supported yet "
            f"({tensor * pipeline} GPUs > {gpu.gpus_per_node} per {gpu.id} node)"
        )
    if pipeline > model.layers:
        return f"pipelineParallel {pipeline} exceeds the {model.layers} layers"
    return None


def _block_fp8_unsplit(ctx: _Context, c: Candidate, expert: int | None = None) -> str | None:
    """Why vLLM cannot load a block-scaled FP8 checkpoint's experts in this layout: each rank's
    share of an expert's intermediate size must be a whole number of the checkpoint's weight
    blocks, or Fp8MoEMethod.create_weights raises ("is not divisible by weight quantization
    block_n", and "block_k" wherever the TP is above 1; vLLM 0.8.5 to 0.14.0
    quantization/fp8.py Fp8MoEMethod.create_weights). Each expert is split tensor /
    expert-parallel ways (whole under EP = TP: FusedMoE's tp_size is then 1), but the block_k
    check reads get_tensor_model_parallel_world_size(), the TP itself, so it holds under EP
    too. `expert`: the degree to check, if not the candidate's."""
    model = ctx.model
    if ctx.engine.id.value != "vllm" or not model.is_moe:
        return None
    known = ctx.known_checkpoint(c)
    if known is None or known.weight_block_size is None:
        return None
    expert = c.expert if expert is None else expert
    block_n, block_k = known.weight_block_size
    split = expert_split(c.tensor, expert)
    blocks = block_n if c.tensor == 1 else math.lcm(block_n, block_k)
    if model.moe_intermediate_size % (split * blocks) == 0:
        return None
    return (
        f"vLLM cannot load {known.id} at spec.parallelism.tensor {c.tensor} with "
        f"spec.parallelism.expert {expert}: each GPU's share of the "
        f"{model.moe_intermediate_size}-wide expert intermediate size is not a multiple of "
        f"its {block_n}x{block_k} FP8 weight blocks"
    )


def _weight_bytes(ctx: _Context, c: Candidate) -> float:
    """The weights on one GPU of the layout (the same for every KV dtype: computed once per
    layout and degree, for the budget check and each candidate's memory)."""
    rules = ctx.memory_rules(c.gpu)
    known = ctx.known_checkpoint(c)
    return weight_bytes_per_rank(ctx.model, c.fmt, c.tensor, c.pipeline, rules, known, c.expert)


def _weights_exceed_budget(ctx: _Context, c: Candidate, weight_bytes: float) -> str | None:
    gpu = c.gpu
    utilization = ctx.spec.engine.gpu_memory_utilization
    budget = gpu.visible_memory_gib * utilization
    weights = weight_bytes / GIB
    if weights < budget:
        return None
    return (
        f"weights need {weights:.1f} GiB per GPU, more than the {budget:.1f} GiB budget "
        f"({gpu.visible_memory_gib:.1f} GiB x {utilization})"
    )


def _kv_bytes(dtype: str | None) -> float:
    """Bytes per KV-cache element: fp8 or the model's 16-bit dtype."""
    return 1.0 if dtype == KvCacheDtype.FP8 else 2.0


def _evaluate(
    ctx: _Context, candidate: Candidate, weight_bytes: float, timed: Performance | None = None
) -> Candidate:
    """Memory, performance, cost and SLO of a layout the model and format allow;
    `weight_bytes`: its weights on one GPU (`_weight_bytes`); `timed`: the layout's
    performance where another candidate's estimate holds for it (calibrated already)."""
    spec, model, gpu, fmt = ctx.spec, ctx.model, candidate.gpu, candidate.fmt
    tensor, pipeline = candidate.tensor, candidate.pipeline
    utilization = spec.engine.gpu_memory_utilization
    kv_bytes = _kv_bytes(candidate.kv_dtype)
    workload = spec.workload
    checkpoint = ctx.known_checkpoint(candidate)
    workspace = _moe_workspace(ctx, candidate)
    memory = memory_breakdown(
        model,
        gpu,
        fmt,
        tensor=tensor,
        pipeline=pipeline,
        kv_dtype_bytes=kv_bytes,
        gpu_memory_utilization=utilization,
        max_num_batched_tokens=ctx.max_num_batched_tokens,
        max_num_seqs=workload.concurrency,
        max_context_length=ctx.max_context,
        block_size=ctx.block_size(gpu),
        rules=ctx.memory_rules(gpu),
        budget_of_free_memory=ctx.engine.id == "tensorrt-llm",
        checkpoint=checkpoint,
        expert_parallel=candidate.expert,
        weights=weight_bytes,
        moe_workspace_growth=workspace.growth,
        moe_workspace_kept=workspace.kept,
        moe_workspace_step=workspace.step,
    )
    candidate.memory = memory
    # Without room for one request of maxContextLength vLLM refuses to start and TensorRT-LLM
    # serves a shorter context (_short_of_one_request).
    engine = ctx.engine.display_name
    if not memory.fits:
        candidate.infeasible = (
            f"{engine} would refuse to start: no room for KV cache: weights "
            f"{memory.weights_gib:.1f} + activations {memory.activation_gib:.1f} + non-torch "
            f"{memory.non_torch_gib:.1f}"
            + (f" + CUDA graphs {memory.cuda_graph_gib:.1f}" if memory.cuda_graph_gib else "")
            + f" GiB exceed the {memory.budget_gib:.1f} GiB budget per GPU"
        )
        return candidate
    if memory.max_concurrency < 1:
        candidate.infeasible = _short_of_one_request(ctx, candidate, memory)
        return candidate
    typical = workload.input_tokens + workload.output_tokens
    per_request = request_kv_bytes(model, tensor, pipeline, kv_bytes, typical, ctx.block_size(gpu))
    holds = int(memory.kv_cache_gib * GIB // per_request)
    if holds < workload.concurrency:
        candidate.infeasible = (
            f"KV cache holds {holds} concurrent requests of {typical} tokens, "
            f"workload.concurrency is {workload.concurrency}"
        )
        return candidate
    perf = timed if timed is not None else _performance(ctx, candidate, kv_bytes, checkpoint)
    candidate.performance = perf
    if spec.replicas is not None:
        candidate.replicas = spec.replicas
    elif workload.requests_per_second is not None:
        candidate.replicas = replicas_for_rate(workload.requests_per_second, perf.requests_per_s)
    replica_cost = gpu.price_per_hour * candidate.gpu_count
    candidate.cost_per_hour = replica_cost * candidate.replicas
    candidate.cost_per_million_tokens = replica_cost / (perf.output_tokens_per_s * 3600) * 1e6
    slo = spec.slo
    misses = []
    if slo.ttft_ms is not None and perf.ttft_s * 1000 > slo.ttft_ms:
        misses.append(f"TTFT {perf.ttft_s * 1000:.0f} ms > SLO {slo.ttft_ms:g} ms")
    if slo.tpot_ms is not None and perf.tpot_s * 1000 > slo.tpot_ms:
        misses.append(f"TPOT {perf.tpot_s * 1000:.1f} ms > SLO {slo.tpot_ms:g} ms")
    candidate.slo_miss = "; ".join(misses) or None
    return candidate


def _performance(
    ctx: _Context, candidate: Candidate, kv_bytes: float, checkpoint: QuantizedCheckpoint | None
) -> Performance:
    """The layout's estimate (`estimate_performance`), calibrated where the spec has one."""
    gpu, workload = candidate.gpu, ctx.spec.workload
    version = ctx.engine_version(gpu)
    perf = estimate_performance(
        ctx.model,
        gpu,
        candidate.fmt,
        tensor=candidate.tensor,
        pipeline=candidate.pipeline,
        kv_dtype_bytes=kv_bytes,
        concurrency=workload.concurrency,
        input_tokens=workload.input_tokens,
        output_tokens=workload.output_tokens,
        max_num_batched_tokens=ctx.max_num_batched_tokens,
        request_frontend_s=frontend_s(ctx.engine.id.value, version),
        engine=ctx.engine.id.value,
        engine_version=version,
        expert_parallel=candidate.expert,
        checkpoint=checkpoint,
        memory_rules=ctx.memory_rules(gpu),
    )
    if ctx.calibration is not None:
        perf = ctx.calibration.apply(perf)
    return perf


def _short_of_one_request(ctx: _Context, c: Candidate, memory: MemoryBreakdown) -> str:
    """Why a cache of less than one request of maxContextLength makes the layout infeasible.
    vLLM refuses to start (v1/core/kv_cache_utils.py check_enough_kv_cache_memory, 0.10.2 to
    0.14.0). TensorRT-LLM starts, with max_seq_len lowered to what the cache holds
    (memory.tensorrt_llm_served_context): still short of the context the spec asks for."""
    near = _near_limit(memory)
    if ctx.engine.id != "tensorrt-llm":
        return (
            f"{ctx.engine.display_name} would refuse to start: KV cache holds "
            f"{memory.kv_cache_tokens} tokens, less than one request of maxContextLength "
            f"{ctx.max_context}"
            + (", but within the estimate's error band: it may start" if near else "")
        )
    served = tensorrt_llm_served_context(
        ctx.model,
        c.tensor,
        c.pipeline,
        _kv_bytes(c.kv_dtype),
        memory.kv_cache_gib * GIB,
        ctx.max_context,
        ctx.block_size(c.gpu),
    )
    if not served:
        return (
            f"{ctx.engine.display_name} would fail to start: KV cache holds "
            f"{memory.kv_cache_tokens} tokens, not one block of a request"
        )
    return (
        f"{ctx.engine.display_name} would start with max_seq_len {served}, less than "
        f"maxContextLength {ctx.max_context}: its KV cache holds {memory.kv_cache_tokens} "
        "tokens, and it shortens max_seq_len to what the cache holds instead of refusing"
        + (", but within the estimate's error band: it may keep maxContextLength" if near else "")
    )


def _at_the_limit(ctx: _Context) -> str:
    """What the engine does if the cache turns out short of one request of maxContextLength."""
    if ctx.engine.id == "tensorrt-llm":
        return "TensorRT-LLM may lower max_seq_len below it"
    return f"{ctx.engine.display_name} may refuse to start"


def _near_limit(memory: MemoryBreakdown) -> bool:
    """Whether the cache holds one request of maxContextLength give or take the KV
    estimate's error band."""
    return abs(memory.max_concurrency - 1) <= KV_ESTIMATE_BAND


def _rank_key(ctx: _Context, c: Candidate) -> tuple[float, ...]:
    # With a request rate the bill is what matters; without, the price of a token.
    cost = c.cost_per_hour if ctx.spec.workload.requests_per_second else c.cost_per_million_tokens
    return (
        round(cost, 6),
        c.gpu_count,
        PRECISION_RANK[c.fmt.precision],
        0 if c.kv_dtype is KvCacheDtype.AUTO else 1,
        c.pipeline,
        c.expert,  # at the same cost, the engines' default: experts TP-split
    )


def _ranked(ctx: _Context, space: SearchSpace, reuse: bool = False) -> list[Candidate]:
    """All candidates: viable by rank, then SLO misses by latency, then infeasible ones.
    `reuse`: take the layouts an earlier search with `reuse` evaluated in this context (an
    infeasible spec's relaxed searches, _relaxations, try many layouts again)."""
    candidates: list[Candidate] = []
    searched: set[tuple[object, ...]] | None = set() if reuse else None  # layouts it evaluated
    for gpu in space.gpus:
        kv_dtypes, no_kv = _kv_dtypes(ctx, space, gpu)
        rejected_gpu = _gpu_unavailable(ctx, gpu) or no_kv
        if rejected_gpu:
            kv = space.kv_dtypes[0]
            candidates.append(Candidate(gpu, space.formats[0], 1, 1, kv, infeasible=rejected_gpu))
            continue
        for fmt in space.formats:
            unavailable, checkpoint = _format_unavailable(ctx, fmt, gpu)
            if unavailable:
                candidates.append(Candidate(gpu, fmt, 1, 1, kv_dtypes[0], infeasible=unavailable))
                continue
            for group in _layouts(space, gpu):
                for tensor, pipeline in group:
                    degrees, no_degree = _expert_degrees(ctx, space, tensor)
                    unsupported = _layout_unsupported(ctx, gpu, tensor, pipeline) or no_degree
                    if unsupported:
                        kv, expert = kv_dtypes[0], space.expert or 1
                        candidates.append(
                            Candidate(
                                gpu,
                                fmt,
                                tensor,
                                pipeline,
                                kv,
                                infeasible=unsupported,
                                expert=expert,
                            )
                        )
                        break
                    evaluated = _evaluate_layout(
                        ctx,
                        gpu,
                        fmt,
                        tensor,
                        pipeline,
                        checkpoint,
                        degrees,
                        kv_dtypes,
                        auto=space.expert is None,
                        searched=searched,
                    )
                    candidates.extend(evaluated)
                    # Deeper pipelines only add GPUs and hops once the model fits.
                    if any(c.infeasible is None for c in evaluated):
                        break
    viable = sorted((c for c in candidates if c.viable), key=lambda c: _rank_key(ctx, c))
    missed = sorted(
        (c for c in candidates if c.infeasible is None and c.slo_miss is not None),
        key=lambda c: c.performance.ttft_s + c.performance.tpot_s * 100 if c.performance else 0.0,
    )
    infeasible = [c for c in candidates if c.infeasible is not None]
    return viable + missed + infeasible


def _evaluate_layout(
    ctx: _Context,
    gpu: Gpu,
    fmt: QuantFormat,
    tensor: int,
    pipeline: int,
    checkpoint: str | None,
    degrees: Sequence[int],
    kv_dtypes: Sequence[KvCacheDtype],
    *,
    auto: bool,
    searched: set[tuple[object, ...]] | None = None,
) -> list[Candidate]:
    """One (TP, PP) layout with each expert-parallel degree and KV dtype; a degree whose
    weights exceed the budget is one infeasible candidate. A degree the model prices as EP 1
    takes EP 1's figures: it ties with EP 1, which the ranking prefers, and the plan shows it;
    one that differs only in vLLM's MoE workspace (`_spread_pricing` "workspace") takes EP 1's
    step times with memory of its own: it ties with EP 1 or, where the KV cache binds, loses.
    With `expert: auto` a degree priced apart by MXFP4's padding alone is not tried: the wait
    for the busiest rank's experts, which counts against spreading them, is not modelled, so
    the padding's few percent would choose EP on half the ledger (a pinned degree is priced).
    `searched` (the layouts this search took so far): take the candidates an earlier search
    of the context evaluated for the layout, the same context giving the same figures. Not
    twice within one search: a GPU listed twice keeps candidates of its own. `auto`: the
    search chooses the expert-parallel degree (spec.parallelism.expert is auto)."""
    key: tuple[object, ...] = ()
    if searched is not None:
        key = (gpu.id, fmt.id, tensor, pipeline, checkpoint, tuple(degrees), tuple(kv_dtypes))
        done = ctx.layouts.get(key) if key not in searched else None
        searched.add(key)
        if done is not None:
            return done
    evaluated: list[Candidate] = []
    for expert in degrees:
        first = Candidate(gpu, fmt, tensor, pipeline, kv_dtypes[0], checkpoint, expert=expert)
        pricing = _spread_pricing(ctx, first) if expert > 1 else "apart"
        if pricing == "padding" and auto:
            continue
        split = [c for c in evaluated if c.expert == 1]
        if split and pricing == "alike":
            evaluated.extend(c.with_expert(expert) for c in split)
            continue
        # Where only the MoE workspace differs, the step times are EP 1's.
        timed = {c.kv_dtype: c.performance for c in split} if pricing == "workspace" else {}
        unsplit = _block_fp8_unsplit(ctx, first)
        weights = 0.0 if unsplit else _weight_bytes(ctx, first)
        heavy = unsplit or _weights_exceed_budget(ctx, first, weights)
        if heavy:
            first.checkpoint, first.infeasible = None, heavy
            evaluated.append(first)
            continue
        evaluated.extend(
            _evaluate(
                ctx,
                Candidate(gpu, fmt, tensor, pipeline, kv, checkpoint, expert=expert),
                weights,
                timed.get(kv),
            )
            for kv in kv_dtypes
        )
    if searched is not None:
        ctx.layouts.setdefault(key, evaluated)
    return evaluated


def _spread_pricing(
    ctx: _Context, c: Candidate
) -> Literal["alike", "apart", "padding", "workspace"]:
    """How the model prices experts spread whole over `c.expert` ranks against TP-split ones:
    "apart" where the grouped FP8 kernel's measured rates or whether a block-FP8
    checkpoint's experts load (`_block_fp8_unsplit`) differ, "padding" where only MXFP4's
    padding of each expert's slice does (memory._mxfp4_layout_bytes), "workspace" where only
    vLLM's MoE workspace in the profiling step does (`_moe_workspace`: the memory
    differs, the step times are EP 1's), else "alike" (tests/unit/test_expert_parallel.py
    holds every other figure to EP 1's)."""
    if _block_fp8_unsplit(ctx, c) or _block_fp8_unsplit(ctx, c, expert=1):
        return "apart"
    known = ctx.known_checkpoint(c)
    shares = partial(
        grouped_fp8_shares, ctx.model, c.gpu, c.fmt, ctx.engine.id.value, ctx.engine_version(c.gpu)
    )
    if shares(c.tensor, c.expert, known) != shares(c.tensor, 1, known):
        return "apart"
    if c.fmt.id == Quantization.MXFP4:
        return "padding"
    spread = _moe_workspace(ctx, c) != _moe_workspace(ctx, c, expert=1)
    return "workspace" if spread else "alike"


def _moe_workspace(ctx: _Context, c: Candidate, expert: int | None = None) -> MoeWorkspace:
    """What vLLM's MoE workspace adds to the profiling step, keeps under its sampler step and
    comes to in the step (moe_kernels.moe_workspace) with the experts spread over `expert`
    ranks (the candidate's degree if None); none under TensorRT-LLM, whose MoE workspace was
    not read."""
    if ctx.engine.id.value != "vllm" or not ctx.model.is_moe:
        return NO_MOE_WORKSPACE
    expert = c.expert if expert is None else expert
    key = (c.gpu.id, c.fmt.id, c.checkpoint, c.tensor, expert)
    if key not in ctx.workspace:
        ctx.workspace[key] = moe_workspace(
            ctx.model,
            c.gpu,
            c.fmt,
            ctx.max_num_batched_tokens,
            ctx.engine_version(c.gpu),
            c.tensor,
            expert,
            ctx.known_checkpoint(c),
            ctx.memory_rules(c.gpu).mxfp4,
        )
    return ctx.workspace[key]


def _alternative(ctx: _Context, c: Candidate, reason: str) -> Alternative:
    perf = c.performance
    return Alternative(
        gpu=c.gpu.id,
        gpu_count=c.gpu_count,
        tensor_parallel=c.tensor,
        pipeline_parallel=c.pipeline,
        expert_parallel=c.expert if ctx.model.is_moe else None,
        quantization=c.fmt.id.value,
        kv_cache_dtype=c.kv_dtype.value,
        feasible=c.infeasible is None,
        meets_slo=c.viable,
        estimated_ttft_ms=round(perf.ttft_s * 1000, 1) if perf else None,
        estimated_tpot_ms=round(perf.tpot_s * 1000, 2) if perf else None,
        replicas=c.replicas if perf else None,
        cost_per_hour=round(c.cost_per_hour, 2) if perf else None,
        cost_per_million_tokens=round(c.cost_per_million_tokens, 3) if perf else None,
        reason=reason,
    )


def _why_lost(ctx: _Context, c: Candidate, best: Candidate | None) -> str:
    why = _why_lost_plain(ctx, c, best)
    if best is not None and c.expert != best.expert and _same_layout(c, best):
        # The chosen layout with the experts spread otherwise: say which way lost.
        return f"{_experts_way(ctx, c)} instead of {_experts_way(ctx, best)}: {why}"
    return why


def _same_layout(a: Candidate, b: Candidate) -> bool:
    """The same GPUs, format, TP, PP and KV dtype (the expert-parallel degree aside)."""
    return (a.gpu, a.fmt, a.tensor, a.pipeline, a.kv_dtype) == (
        b.gpu,
        b.fmt,
        b.tensor,
        b.pipeline,
        b.kv_dtype,
    )


def _experts_way(ctx: _Context, c: Candidate) -> str:
    """How a layout holds the routed experts, in words."""
    if c.expert == 1:
        return f"EP1 (every expert split {c.tensor} ways)"
    split = c.tensor // c.expert
    whole = "whole" if split == 1 else f"split {split} ways"
    return f"EP{c.expert} ({ctx.model.experts // c.expert} experts per GPU, {whole})"


def _why_lost_plain(ctx: _Context, c: Candidate, best: Candidate | None) -> str:
    if c.infeasible:
        return c.infeasible
    if c.slo_miss:
        return c.slo_miss
    assert best is not None
    if ctx.spec.workload.requests_per_second:
        delta = c.cost_per_hour - best.cost_per_hour
        if delta > 0.005:
            return f"costs ${c.cost_per_hour:.2f}/h vs ${best.cost_per_hour:.2f}/h"
    else:
        delta = c.cost_per_million_tokens - best.cost_per_million_tokens
        if delta > 0.0005:
            # A catalog price may be 0 (GPUs already owned): no percentage of nothing.
            base = best.cost_per_million_tokens
            more = f" (+{100 * delta / base:.0f}%)" if base > 0 else ""
            return f"costs ${c.cost_per_million_tokens:.3f} per 1M tokens vs ${base:.3f}{more}"
    if c.gpu_count > best.gpu_count:
        return "same cost with more GPUs"
    if PRECISION_RANK[c.fmt.precision] > PRECISION_RANK[best.fmt.precision]:
        return "same cost at lower precision"
    return "same cost; ranked lower on KV precision, pipeline depth or expert parallelism"


def _alternatives(
    ctx: _Context, ranked: Sequence[Candidate], best: Candidate | None
) -> list[Alternative]:
    """The runners-up, then the best each other GPU could do, then why others were dropped."""
    chosen: list[Candidate] = []
    seen_gpus = {best.gpu.id} if best else set()
    for c in ranked:
        if c is best:
            continue
        if len(chosen) < 4 and c.infeasible is None:
            chosen.append(c)
            seen_gpus.add(c.gpu.id)
    for c in ranked:
        if c.gpu.id not in seen_gpus and c is not best:
            chosen.append(c)
            seen_gpus.add(c.gpu.id)
    dropped: dict[str, Candidate] = {}
    for c in ranked:
        if c.infeasible and c not in chosen:
            dropped.setdefault(c.infeasible.split(";")[0].split(",")[0][:40], c)
    chosen.extend(list(dropped.values())[: max(0, MAX_ALTERNATIVES - len(chosen))])
    return [_alternative(ctx, c, _why_lost(ctx, c, best)) for c in chosen[:MAX_ALTERNATIVES]]


def _plan(ctx: _Context, best: Candidate, ranked: Sequence[Candidate]) -> Plan:
    memory, perf = best.memory, best.performance
    assert memory is not None and perf is not None
    spec = ctx.spec
    reasons = [
        f"{best.label()}: weights {memory.weights_gib:.1f} GiB + KV cache "
        f"{memory.kv_cache_gib:.1f} GiB per GPU within the {memory.budget_gib:.1f} GiB budget; "
        f"the cache holds {memory.kv_cache_tokens} tokens ({memory.max_concurrency:.1f} requests "
        f"of {ctx.max_context})",
        _objective(ctx, best),
    ]
    if ctx.model.is_moe and best.tensor > 1:
        reasons.append(_expert_reason(ctx, best, ranked))
    kernel = expert_kernel(best.fmt, ctx.memory_rules(best.gpu))
    if kernel is not None:
        reasons.append(f"MXFP4 experts priced as {MXFP4_KERNEL_NAMES[kernel]}")
    if _near_limit(memory):
        reasons.append(
            f"the KV cache estimate is within its error band (+-{KV_ESTIMATE_BAND:.0%}) of one "
            f"request of maxContextLength {ctx.max_context}: {_at_the_limit(ctx)}; lower "
            "maxContextLength or raise gpuMemoryUtilization for margin"
        )
    near_slo = _latency_band_reason(ctx, perf)
    if near_slo is not None:
        reasons.append(near_slo)
    if spec.replicas is None and spec.workload.requests_per_second:
        reasons.append(
            f"{best.replicas} replica(s) for {spec.workload.requests_per_second:g} requests/s "
            f"at {perf.requests_per_s:.2f} requests/s each"
        )
    return Plan(
        feasible=True,
        model=ctx.model.id,
        engine=ctx.engine.id.value,
        engine_version=ctx.engine_version(best.gpu),
        gpu=best.gpu.id,
        gpu_count=best.gpu_count,
        tensor_parallel=best.tensor,
        pipeline_parallel=best.pipeline,
        expert_parallel=best.expert if ctx.model.is_moe else None,
        quantization=best.fmt.id.value,
        kv_cache_dtype=best.kv_dtype.value,
        max_context_length=ctx.max_context,
        max_num_seqs=spec.workload.concurrency,
        max_num_batched_tokens=ctx.max_num_batched_tokens,
        gpu_memory_utilization=spec.engine.gpu_memory_utilization,
        weights_gib_per_gpu=round(memory.weights_gib, 2),
        activation_gib_per_gpu=round(memory.activation_gib, 2),
        non_torch_gib_per_gpu=round(memory.non_torch_gib, 2),
        cuda_graph_gib_per_gpu=round(memory.cuda_graph_gib, 2) or None,
        kv_cache_gib_per_gpu=round(memory.kv_cache_gib, 2),
        kv_cache_tokens=memory.kv_cache_tokens,
        max_concurrency=round(memory.max_concurrency, 2),
        estimated_ttft_ms=round(perf.ttft_s * 1000, 1),
        estimated_tpot_ms=round(perf.tpot_s * 1000, 2),
        estimated_tokens_per_second=round(perf.output_tokens_per_s, 1),
        replicas=best.replicas,
        cost_per_hour=round(best.cost_per_hour, 2),
        cost_per_million_tokens=round(best.cost_per_million_tokens, 3),
        checkpoint=best.checkpoint,
        ttft_calibration=ctx.calibration and ctx.calibration.ttft,
        tpot_calibration=ctx.calibration and ctx.calibration.tpot,
        reasons=reasons,
        alternatives=_alternatives(ctx, ranked, best),
    )


# How a plan's reasons name the MXFP4 experts' kernel it priced (moe_kernels.MXFP4_KERNELS):
# the one the rendered workload runs, which sets no backend variable, so vLLM's default.
MXFP4_KERNEL_NAMES = {
    "marlin": "vLLM's Marlin MoE (MXFP4 x BF16, weight-only)",
    "triton": "vLLM's Triton matmul_ogs MoE (MXFP4 x BF16, weight-only)",
    "flashinfer_bf16": (
        "vLLM's default FlashInfer MXFP4 x BF16 MoE (weights widened to BF16; the workload "
        "does not set VLLM_USE_FLASHINFER_MOE_MXFP4_MXFP8)"
    ),
    "flashinfer_mxfp8": "FlashInfer's MXFP4 x MXFP8 MoE (FP8 tensor cores)",
}


def _expert_reason(ctx: _Context, best: Candidate, ranked: Sequence[Candidate]) -> str:
    """How the chosen layout holds the routed experts, next to the other ways tried for it."""
    told = f"experts: {_experts_way(ctx, best)}"
    others = [
        c
        for c in ranked
        if c is not best and c.performance is not None and _same_layout(c, best)
        if c.expert != best.expert
    ]
    for other in others:
        perf = other.performance
        assert perf is not None
        told += (
            f"; {_experts_way(ctx, other)} est. TTFT {perf.ttft_s * 1000:.0f} ms, TPOT "
            f"{perf.tpot_s * 1000:.1f} ms, ${other.cost_per_million_tokens:.3f} per 1M tokens"
        )
    if ctx.spec.parallelism.expert != "auto":
        told += " (spec.parallelism.expert)"
    return told


def _objective(ctx: _Context, best: Candidate) -> str:
    slo = ctx.spec.slo
    targets = []
    if slo.ttft_ms is not None:
        targets.append(f"TTFT <= {slo.ttft_ms:g} ms")
    if slo.tpot_ms is not None:
        targets.append(f"TPOT <= {slo.tpot_ms:g} ms")
    goal = " and ".join(targets) or "no latency SLO"
    perf = best.performance
    assert perf is not None
    return (
        f"lowest cost meeting {goal}: ${best.cost_per_million_tokens:.3f} per 1M output tokens, "
        f"${best.cost_per_hour:.2f}/h, est. TTFT {perf.ttft_s * 1000:.0f} ms, "
        f"TPOT {perf.tpot_s * 1000:.1f} ms at concurrency {ctx.spec.workload.concurrency}"
    )


def _latency_band_reason(ctx: _Context, perf: Performance) -> str | None:
    """What the plan says when an estimate meets its SLO by less than the latency model's
    held-out error (TTFT_ESTIMATE_BAND, TPOT_ESTIMATE_BAND), or None. The error is relative to
    the measured figure (bench/corpus.py relative_error), so a deployment measured at the SLO
    may be estimated as low as SLO x (1 - band): an estimate from there up is within the band.
    A calibrated plan (status.calibration, `llmdeploy plan --calibration`) says nothing: its
    estimates are scaled by this deployment's measured / predicted ratios, which take the
    place of the error across setups the band describes, and the corpus has no figure for
    the error left after calibration (measurement noise, another load or layout)."""
    if ctx.calibration is not None:
        return None
    slo = ctx.spec.slo
    checks = (
        ("TTFT", perf.ttft_s * 1000, 0, slo.ttft_ms, TTFT_ESTIMATE_BAND),
        ("TPOT", perf.tpot_s * 1000, 1, slo.tpot_ms, TPOT_ESTIMATE_BAND),
    )
    near = [
        (metric, estimate, digits, target, band)
        for metric, estimate, digits, target, band in checks
        if target is not None and estimate >= target * (1 - band)
    ]
    if not near:
        return None
    told = "est. " + " and ".join(
        f"{metric} {estimate:.{digits}f} ms is {_under(estimate, target)} the {target:g} ms SLO"
        for metric, estimate, digits, target, _ in near
    )
    # The measured figure the band allows: estimate / (1 - band), above estimate x (1 + band),
    # so that the reader sees why an SLO the "+-" alone would clear is flagged.
    bands = "; ".join(
        f"{metric} +-{band:.0%} of the measured value: up to "
        f"{estimate / (1 - band):.{digits}f} ms measured"
        for metric, estimate, digits, _, band in near
    )
    if ctx.spec.planning.calibration == "off":
        follow = "spec.planning.calibration is off, so measurements will not correct the estimate"
    else:
        follow = (
            "once the operator measures its traffic (Prometheus), status.calibration corrects "
            "the estimates of status.recommendation and of the next plan"
        )
    return (
        f"{told}, within the latency model's held-out error ({bands}): the deployment may miss "
        f"the SLO; {follow}"
    )


def _under(estimate: float, target: float) -> str:
    """How far under its target an estimate is, in whole percent ("at" below half of one)."""
    margin = 1 - estimate / target
    return f"{margin:.0%} under" if round(margin * 100) > 0 else "at"


def _relaxations(
    ctx: _Context, catalog: Catalog, space: SearchSpace
) -> list[tuple[str, SearchSpace]]:
    """Looser search spaces, each named by what the user would change."""
    all_gpus = tuple(catalog.gpus[g] for g in sorted(catalog.gpus))
    formats = tuple(f for f in catalog.quantizations.values() if ctx.engine.id in f.engines)
    kv_all = (KvCacheDtype.AUTO, KvCacheDtype.FP8)
    return [
        # A pinned expert degree the layout cannot load or hold: the same GPUs with the
        # experts spread as the planner would (equal to `space` when the degree is auto).
        ("expert parallelism auto (spec.parallelism.expert)", replace(space, expert=None)),
        (
            "lower precision (quantization auto, minPrecision int4)",
            replace(space, formats=formats, kv_dtypes=kv_all),
        ),
        (
            "more GPUs per replica (parallelism auto, maxGpusPerReplica 64)",
            replace(space, tensor=None, pipeline=None, expert=None, max_gpus=64),
        ),
        (
            "another GPU SKU",
            replace(space, gpus=all_gpus, tensor=None, pipeline=None, expert=None),
        ),
        ("any GPU, precision and size", SearchSpace(all_gpus, formats, None, None, kv_all, 64)),
    ]


def _infeasible_plan(
    ctx: _Context, catalog: Catalog, space: SearchSpace, ranked: Sequence[Candidate]
) -> Plan:
    reasons = []
    missed = [c for c in ranked if c.infeasible is None]
    if missed:
        reasons.append(
            f"no configuration meets the SLO; closest: {missed[0].label()} ({missed[0].slo_miss})"
        )
    else:
        reasons.append("no configuration is feasible within the spec's constraints")
        # Configurations that got as far as the memory model first: theirs is the nearest miss.
        infeasible = sorted((c for c in ranked if c.infeasible), key=lambda c: c.memory is None)
        for reason in dict.fromkeys(c.infeasible for c in infeasible):
            if len(reasons) >= 6:
                break
            reasons.append(str(reason))
    for description, relaxed in _relaxations(ctx, catalog, space):
        if relaxed == space:
            continue
        viable = [c for c in _ranked(ctx, relaxed, reuse=True) if c.viable]
        if viable:
            reasons.append(f"would fit with {description}: {viable[0].label()}")
    return Plan(
        feasible=False,
        model=ctx.model.id,
        engine=ctx.engine.id.value,
        max_context_length=ctx.max_context,
        reasons=reasons,
        alternatives=_alternatives(ctx, ranked, None),
    )


def performance_at(
    spec: LLMDeploymentSpec,
    catalog: Catalog,
    plan: Plan,
    *,
    concurrency: int,
    input_tokens: int,
    output_tokens: int,
) -> Performance | None:
    """What the model predicts for a feasible plan's layout at another load (uncalibrated):
    what a measurement at that load is compared with. None when the plan names a GPU or
    format the catalog lacks."""
    gpu = catalog.gpus.get(plan.gpu or "")
    try:
        fmt = catalog.quantizations.get(Quantization(plan.quantization or ""))
    except ValueError:
        fmt = None
    if not plan.feasible or gpu is None or fmt is None or not plan.tensor_parallel:
        return None
    model = resolve_model(spec.model, catalog)
    return estimate_performance(
        model,
        gpu,
        fmt,
        tensor=plan.tensor_parallel,
        pipeline=plan.pipeline_parallel or 1,
        kv_dtype_bytes=_kv_bytes(plan.kv_cache_dtype),
        concurrency=max(1, concurrency),
        input_tokens=max(1, input_tokens),
        output_tokens=max(1, output_tokens),
        max_num_batched_tokens=int(plan.max_num_batched_tokens or DEFAULT_MAX_NUM_BATCHED_TOKENS),
        request_frontend_s=frontend_s(plan.engine, plan.engine_version),
        engine=plan.engine,
        engine_version=plan.engine_version,
        expert_parallel=plan.expert_parallel or 1,
        checkpoint=model.quantized_checkpoint(plan.checkpoint, fmt.id),
        memory_rules=engine_memory(plan.engine, plan.engine_version, gpu, model.model_type),
    )
