"""The public measurement corpus (bench/data) and the sizing model's predictions for its rows.

A row is re-planned with the planner's own functions. A parameter the source does not give is
replaced by what the engine that made the row would have used (`engine_defaults`):
gpu_memory_utilization 0.9, max_model_len the model's context, and the scheduler defaults of
the row's engine generation and GPU class.
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType

from llmdeploy.api.types import ModelSpec
from llmdeploy.catalog import Catalog, Gpu, Interconnect
from llmdeploy.sizing import memory, performance, resolve_model
from llmdeploy.sizing.engine_memory import EngineMemory, Generation, engine_memory, vllm_memory
from llmdeploy.sizing.memory import (
    GIB,
    memory_breakdown,
    tensorrt_llm_served_context,
    weight_bytes_per_rank,
)
from llmdeploy.sizing.model_facts import ModelFacts
from llmdeploy.sizing.moe_kernels import NO_MOE_WORKSPACE, MoeWorkspace, moe_workspace
from llmdeploy.sizing.performance import estimate_performance

DATA = Path(__file__).resolve().parent / "data"
DEFAULT_UTILIZATION = 0.9
BLOCK_SIZE = 16
TENSORRT_LLM = "tensorrt-llm"
# trtllm-serve's KV pages hold 32 tokens (llm_args.py KvCacheConfig tokens_per_block); without
# flags it steps 8192 tokens and 2048 requests (llm_args.py max_num_tokens, max_batch_size).
TENSORRT_LLM_BLOCK_SIZE = 32
TENSORRT_LLM_DEFAULTS = (8192, 2048)
# All-reduce without GPU peer-to-peer: NCCL stages every transfer through host shared memory
# (its SHM transport), far below the PCIe link's 32 GB/s. Bus bandwidth of NCCL's all-reduce
# over SHM on PCIe Gen4 GPUs: 6.13 GB/s averaged over 8 B to 512 MiB messages (NVIDIA/nccl
# issue #1817, 8x L20); 3.9 GB/s at most on two PCIe Gen3 GPUs (NVIDIA/nccl issue #384).
NO_PEER_TO_PEER = Interconnect(kind="pcie", bandwidth_gbps=6.13)


def engine_defaults(
    generation: str, gpu: Gpu, max_model_len: int, sliding_window: bool = False
) -> tuple[int, int]:
    """vLLM's (max_num_batched_tokens, max_num_seqs) when the command line sets neither.

    V1 (the API server): 8192 and 1024 on GPUs of >= 70 GiB other than the A100, else 2048 and
    256 (vLLM tests/engine/test_arg_utils.py test_defaults_with_usage_context; the A100 logs of
    dennislee22/vLLM-benchmarking show max_num_batched_tokens=2048). V0 without chunked
    prefill: a step of max(max_model_len, 2048) tokens and 256 sequences (vllm/config.py
    SchedulerConfig; vllm#10517's profile peak grows with max_model_len). V0 turns chunked
    prefill on by itself above 32K tokens on CUDA for a model without sliding window (vLLM PR
    #6666, vllm/engine/arg_utils.py, later _set_default_args_v0 with current_platform.is_cuda(),
    so not on ROCm: the MI300X V0 logs show chunked_prefill_enabled=False), and then steps 2048
    tokens (SchedulerConfig; 512 in 0.6.x, which moves a plan by a few MiB).
    """
    if generation == "v0":
        if max_model_len > 32768 and gpu.vendor == "nvidia" and not sliding_window:
            return 2048, 256
        return max(max_model_len, 2048), 256
    if gpu.memory_gib >= 70 and "a100" not in gpu.id:
        return 8192, 1024
    return 2048, 256


def held_out_by_rule(row_id: str) -> bool:
    """The split rule of bench/data/README.md, fixed before any fitting."""
    return int(hashlib.sha256(row_id.encode()).hexdigest()[:8], 16) % 3 == 0


def _float(text: str) -> float | None:
    return float(text) if text.strip() else None


def _int(text: str) -> int | None:
    return int(text) if text.strip() else None


@dataclass(frozen=True)
class KvRow:
    id: str
    source: str  # repository + reference
    model: str  # the checkpoint the source ran
    plan_model: str
    gpu: str
    gpu_memory_gib: float | None
    tensor: int
    pipeline: int
    quantization: str
    kv_dtype: str
    engine: str  # vllm / tensorrt-llm
    engine_version: str
    engine_generation: str  # v0 / v1 from the log lines' format; empty when unknown
    sampler: str  # flashinfer / pytorch where the log says; empty when it does not
    moe_backend: str  # MXFP4 MoE kernel where the log says (marlin, triton); else empty
    gpu_memory_utilization: float | None
    max_model_len: int | None
    max_num_batched_tokens: int | None
    max_num_seqs: int | None
    outcome: str
    weights_gib: float | None
    kv_gib: float | None
    kv_tokens: int | None
    mla_off: bool = False  # the run set VLLM_MLA_DISABLE=1 (its quote says so)


@dataclass(frozen=True)
class LatencyRow:
    id: str
    source: str
    model: str  # the checkpoint the run loaded
    plan_model: str
    gpu: str
    tensor: int
    pipeline: int
    interconnect: str  # "pcie" where the run's log shows no GPU peer-to-peer; else the SKU's
    quantization: str
    kv_dtype: str
    engine: str
    engine_version: str
    endpoint: str  # chat / completions where the source says; empty: counted as chat
    concurrency: int
    load: str
    input_tokens: int
    output_tokens: int
    ttft_ms: float
    tpot_ms: float
    ttft_valid: bool  # false where the source shows prefill was skipped (prefix-cache hits)
    statistic: str  # median / mean / unknown: what the source's figures are

    @property
    def ttft_comparable(self) -> bool:
        """Whether the row's TTFT measures whole prefills (no prefix-cache hits)."""
        return self.ttft_valid


def _read(name: str) -> list[dict[str, str]]:
    with (DATA / name).open(newline="") as f:
        return list(csv.DictReader(f))


def load_split() -> dict[str, str]:
    return {r["id"]: r["set"] for r in _read("split.csv")}


def load_kv(name: str = "kv_memory.csv") -> list[KvRow]:
    """The KV/weights rows of `name`: kv_memory.csv (split into fit and held-out), or
    kv_outside.csv (never fitted; bench/data/README.md says why)."""
    return [
        KvRow(
            id=r["id"],
            source=f"{r['repository']} {r['reference']}",
            model=r["model"],
            plan_model=r["plan_model"],
            gpu=r["gpu"],
            gpu_memory_gib=_float(r["gpu_memory_gib"]),
            tensor=int(r["tensor"]),
            pipeline=int(r["pipeline"]),
            quantization=r["quantization"],
            kv_dtype=r["kv_dtype"],
            engine=r["engine"],
            engine_version=r["engine_version"],
            engine_generation=r["engine_generation"],
            sampler=r["sampler"],
            moe_backend=r["moe_backend"],
            gpu_memory_utilization=_float(r["gpu_memory_utilization"]),
            max_model_len=_int(r["max_model_len"]),
            max_num_batched_tokens=_int(r["max_num_batched_tokens"]),
            max_num_seqs=_int(r["max_num_seqs"]),
            outcome=r["outcome"],
            weights_gib=_float(r["weights_gib"]),
            kv_gib=_float(r["kv_gib"]),
            kv_tokens=_int(r["kv_tokens"]),
            mla_off="VLLM_MLA_DISABLE=1" in r["quote"],
        )
        for r in _read(name)
    ]


def load_latency(name: str = "latency.csv") -> list[LatencyRow]:
    """The latency rows of `name`: latency.csv (split into fit and held-out), or
    latency_outside.csv (never fitted; bench/data/README.md says why)."""
    return [
        LatencyRow(
            id=r["id"],
            source=f"{r['repository']} {r['reference']}",
            model=r["model"],
            plan_model=r["plan_model"],
            gpu=r["gpu"],
            tensor=int(r["tensor"]),
            pipeline=int(r["pipeline"]),
            interconnect=r["interconnect"],
            quantization=r["quantization"],
            kv_dtype=r["kv_dtype"],
            engine=r["engine"],
            engine_version=r["engine_version"],
            endpoint=r.get("endpoint", ""),
            concurrency=int(r["concurrency"]),
            load=r["load"],
            input_tokens=int(r["input_tokens"]),
            output_tokens=int(r["output_tokens"]),
            ttft_ms=float(r["ttft_ms"]),
            tpot_ms=float(r["tpot_ms"]),
            ttft_valid=r["ttft_valid"] == "yes",
            statistic=r["statistic"],
        )
        for r in _read(name)
    ]


def _gpu(catalog: Catalog, sku: str, memory_gib: float | None) -> Gpu:
    """The catalog SKU; a SKU it lacks stands in as another with the log's memory (only the
    memory model reads it)."""
    gpu = catalog.gpus.get(sku) or catalog.gpus["nvidia-h100-80gb"].model_copy(update={"id": sku})
    if memory_gib is not None:
        gpu = gpu.model_copy(update={"memory_gib": memory_gib, "cuda_visible_memory_gib": None})
    return gpu


_MODELS: dict[tuple[int, str], ModelFacts] = {}


def _model(catalog: Catalog, name: str) -> ModelFacts:
    """Resolved once per catalog: the fit re-plans every row many times."""
    key = (id(catalog), name)
    if key not in _MODELS:
        _MODELS[key] = resolve_model(ModelSpec(name=name), catalog)
    return _MODELS[key]


def _kv_bytes(kv_dtype: str) -> float:
    return 1.0 if kv_dtype.startswith("fp8") else 2.0


@dataclass(frozen=True)
class KvPrediction:
    weights_gib: float
    kv_gib: float
    kv_tokens: int
    budget_gib: float
    refused: bool


def scheduler(row: KvRow, catalog: Catalog) -> tuple[int, int, int]:
    """(max_model_len, max_num_batched_tokens, max_num_seqs) the row's engine ran with."""
    model = _model(catalog, row.plan_model)
    context = row.max_model_len or model.max_context_length
    gpu = _gpu(catalog, row.gpu, row.gpu_memory_gib)
    if row.engine == TENSORRT_LLM:
        batched, seqs = TENSORRT_LLM_DEFAULTS
    else:
        generation = row.engine_generation or "v1"
        batched, seqs = engine_defaults(generation, gpu, context, model.sliding_window > 0)
    return context, row.max_num_batched_tokens or batched, row.max_num_seqs or seqs


def rules(row: KvRow, catalog: Catalog) -> EngineMemory:
    """The accounting of the release that made the row (a V1 row of unknown release as the
    newest read), with the sampler and MoE kernel its log names, and MLA off where it ran so."""
    gpu = _gpu(catalog, row.gpu, row.gpu_memory_gib)
    if row.engine == TENSORRT_LLM:
        return engine_memory(TENSORRT_LLM, row.engine_version or None, gpu)
    generation: Generation = "v0" if row.engine_generation == "v0" else "v1"
    flashinfer = {"flashinfer": True, "pytorch": False}.get(row.sampler)
    accounting = vllm_memory(
        row.engine_version or None,
        gpu,
        generation,
        flashinfer=flashinfer,
        mxfp4_backend=row.moe_backend or None,
        model_type=_model(catalog, row.plan_model).model_type,
    )
    # Without MLA there is no W_UK/W_UV copy (engine_memory.py MLA_DEQUANTIZED_KV_B_SINCE).
    return replace(accounting, mla_dequantized_kv_b_proj=False) if row.mla_off else accounting


def row_moe_workspace(row: KvRow, catalog: Catalog) -> MoeWorkspace:
    """The bytes the row's MoE kernel adds to the profiling step, keeps under its sampler step
    and comes to in the step, as the planner counts them (optimizer._moe_workspace; none under
    TensorRT-LLM)."""
    if row.engine == TENSORRT_LLM:
        return NO_MOE_WORKSPACE
    model = _model(catalog, row.plan_model)
    _, batched, _ = scheduler(row, catalog)
    return moe_workspace(
        model,
        _gpu(catalog, row.gpu, row.gpu_memory_gib),
        catalog.quantizations[row.quantization],
        batched,
        row.engine_version or None,
        row.tensor,
        1,
        model.quantized_checkpoint(row.model, row.quantization),
        rules(row, catalog).mxfp4,
    )


def predict_kv(row: KvRow, catalog: Catalog) -> KvPrediction:
    model = _model(catalog, row.plan_model)
    fmt = catalog.quantizations[row.quantization]
    context, batched, seqs = scheduler(row, catalog)
    trtllm = row.engine == TENSORRT_LLM
    gpu = _gpu(catalog, row.gpu, row.gpu_memory_gib)
    checkpoint = model.quantized_checkpoint(row.model, row.quantization)
    workspace = row_moe_workspace(row, catalog)
    m = memory_breakdown(
        model,
        gpu,
        fmt,
        tensor=row.tensor,
        pipeline=row.pipeline,
        kv_dtype_bytes=_kv_bytes(row.kv_dtype),
        gpu_memory_utilization=row.gpu_memory_utilization or DEFAULT_UTILIZATION,
        max_num_batched_tokens=batched,
        max_num_seqs=seqs,
        max_context_length=context,
        block_size=TENSORRT_LLM_BLOCK_SIZE if trtllm else BLOCK_SIZE,
        rules=rules(row, catalog),
        budget_of_free_memory=trtllm,
        checkpoint=checkpoint,
        moe_workspace_growth=workspace.growth,
        moe_workspace_kept=workspace.kept,
        moe_workspace_step=workspace.step,
    )
    short = m.max_concurrency < 1
    if trtllm and short:  # it lowers max_seq_len to what the cache holds, if a block fits
        kv, dtype = m.kv_cache_gib * GIB, _kv_bytes(row.kv_dtype)
        block = TENSORRT_LLM_BLOCK_SIZE
        short = not tensorrt_llm_served_context(
            model, row.tensor, row.pipeline, dtype, kv, context, block
        )
    refused = not m.fits or short
    return KvPrediction(m.weights_gib, m.kv_cache_gib, m.kv_cache_tokens, m.budget_gib, refused)


def predict_weights_gib(row: KvRow, catalog: Catalog) -> float:
    model = _model(catalog, row.plan_model)
    fmt = catalog.quantizations[row.quantization]
    checkpoint = model.quantized_checkpoint(row.model, row.quantization)
    rank = weight_bytes_per_rank(
        model, fmt, row.tensor, row.pipeline, rules(row, catalog), checkpoint
    )
    return rank / GIB


def engine_max_num_tokens() -> dict[str, int]:
    """The step token budget (TensorRT-LLM's --max_num_tokens, vLLM's
    --max-num-batched-tokens) a row's run set, by row id (bench/data/latency_engine.csv, each
    value cited); rows it lacks ran the default."""
    return {r["id"]: int(r["max_num_tokens"]) for r in _read("latency_engine.csv")}


_ENGINE_MAX_NUM_TOKENS = engine_max_num_tokens()


def async_scheduling_settings() -> dict[str, bool]:
    """The async scheduling a row's serving command sets, by row id (bench/data/
    latency_client.csv `async_scheduling` for the corpus, latency_outside_serving.csv for the
    outside rows, each value cited); rows they lack ran the release's default."""
    setting = {"yes": True, "no": False}
    return {
        r["id"]: setting[r["async_scheduling"]]
        for name in ("latency_client.csv", "latency_outside_serving.csv")
        for r in _read(name)
        if r["async_scheduling"] in setting
    }


_ASYNC_SCHEDULING = async_scheduling_settings()


def expert_parallel_degrees() -> dict[str, int]:
    """The expert-parallel degree a row's run set, by row id (bench/data/latency_layout.csv,
    each value cited); rows it lacks ran without expert parallelism (1), as plans deploy."""
    return {r["id"]: int(r["expert_parallel"]) for r in _read("latency_layout.csv")}


_EXPERT_PARALLEL = expert_parallel_degrees()


def expert_parallel(row: LatencyRow) -> int:
    """The expert-parallel degree `row` ran with (expert_parallel_degrees; else 1)."""
    return _EXPERT_PARALLEL.get(row.id, 1)


def latency_setup(row: LatencyRow, catalog: Catalog) -> tuple[ModelFacts, Gpu, int, int]:
    """The model, the GPU (without peer-to-peer where the row's log says so) and the
    (max_num_batched_tokens, max_num_seqs) a latency row is re-planned with: the step budget
    its run set (engine_max_num_tokens), else the engine's default."""
    model = _model(catalog, row.plan_model)
    gpu = catalog.gpus[row.gpu]
    if row.interconnect == "pcie":
        gpu = gpu.model_copy(update={"interconnect": NO_PEER_TO_PEER})
    batched, seqs = engine_defaults("v1", gpu, model.max_context_length)
    return model, gpu, _ENGINE_MAX_NUM_TOKENS.get(row.id, batched), seqs


def moe_backends() -> dict[str, str]:
    """The MXFP4 MoE backend a vLLM latency row's server was set to, by row id (bench/data/
    latency_moe_backend.csv, each value cited); rows it lacks ran the release's default."""
    return {r["id"]: r["moe_backend"] for r in _read("latency_moe_backend.csv")}


_MOE_BACKENDS = moe_backends()


def moe_activations() -> dict[str, str]:
    """The activations a vLLM latency row's server set FlashInfer's MXFP4 MoE to, by row id
    (bench/data/latency_moe_activation.csv for the corpus, latency_outside_moe_activation.csv
    for the outside rows, each value cited: `mxfp8` where the server set
    VLLM_USE_FLASHINFER_MOE_MXFP4_MXFP8=1); rows they lack ran the default, MXFP4 x BF16."""
    return {
        r["id"]: r["moe_activation"]
        for name in ("latency_moe_activation.csv", "latency_outside_moe_activation.csv")
        for r in _read(name)
    }


_MOE_ACTIVATIONS = moe_activations()


def latency_rules(row: LatencyRow, model: ModelFacts, gpu: Gpu) -> EngineMemory:
    """The memory rules of the release a latency row ran (an unknown release as the newest
    read), with the MXFP4 MoE backend and activations its server set (moe_backends,
    moe_activations): how the engine lays out the weights its steps read, and the kernel that
    multiplies them (StepModel.memory_rules)."""
    version = row.engine_version or None
    if row.engine == "vllm":
        return vllm_memory(
            version,
            gpu,
            mxfp4_backend=_MOE_BACKENDS.get(row.id),
            model_type=model.model_type,
            mxfp4_activation=_MOE_ACTIVATIONS.get(row.id),
        )
    return engine_memory(row.engine, version, gpu, model.model_type)


def predict_latency(row: LatencyRow, catalog: Catalog) -> tuple[float, float]:
    """(TTFT ms, TPOT ms)."""
    model, gpu, batched, _ = latency_setup(row, catalog)
    perf = estimate_performance(
        model,
        gpu,
        catalog.quantizations[row.quantization],
        tensor=row.tensor,
        pipeline=row.pipeline,
        kv_dtype_bytes=_kv_bytes(row.kv_dtype),
        concurrency=row.concurrency,
        input_tokens=row.input_tokens,
        output_tokens=row.output_tokens,
        max_num_batched_tokens=batched,
        burst=row.load == "burst",
        request_frontend_s=performance.frontend_s(
            row.engine, row.engine_version or None, row.endpoint or "chat"
        ),
        engine=row.engine,
        engine_version=row.engine_version or None,
        async_scheduling=_ASYNC_SCHEDULING.get(row.id),
        expert_parallel=expert_parallel(row),
        checkpoint=model.quantized_checkpoint(row.model, row.quantization),
        memory_rules=latency_rules(row, model, gpu),
    )
    return perf.ttft_s * 1000, perf.tpot_s * 1000


def relative_error(predicted: float, measured: float) -> float:
    return (predicted - measured) / abs(measured)


@dataclass(frozen=True)
class Summary:
    rows: int
    median: float  # of |error|
    p90: float
    max: float
    within_10: float  # share of rows within +-10%


def summarize(errors: list[float]) -> Summary | None:
    if not errors:
        return None
    absolute = sorted(abs(e) for e in errors)

    def quantile(q: float) -> float:  # linear interpolation between closest ranks
        position = q * (len(absolute) - 1)
        low, high = math.floor(position), math.ceil(position)
        return absolute[low] + (absolute[high] - absolute[low]) * (position - low)

    within = sum(1 for e in absolute if e <= 0.10) / len(absolute)
    return Summary(len(absolute), quantile(0.5), quantile(0.9), absolute[-1], within)


# The constants bench/fit_constants.py re-derives, by module. A `dict` constant (per GPU SKU or
# chip) is one constant per key, named `NAME[key]`.
FITTED: dict[str, tuple[ModuleType, tuple[str, ...]]] = {
    "memory": (
        memory,
        (
            "NON_TORCH_SINGLE_GPU_GIB",
            "NON_TORCH_SNAPSHOT_SINGLE_GPU_GIB",
            "NON_TORCH_SNAPSHOT_MULTI_GPU_BASE_GIB",
            "NON_TORCH_SNAPSHOT_PER_TP_RANK_GIB",
            "NON_TORCH_ALLREDUCE_FUSION_GIB",
            "NON_TORCH_GRAPH_PROFILING_GIB",
            "ACTIVATION_HIDDEN_COPIES",
            "ACTIVATION_MLP_COPIES",
        ),
    ),
    "performance": (
        performance,
        (
            "BANDWIDTH_EFFICIENCY",
            "COMPUTE_EFFICIENCY",
            "PER_LAYER_OVERHEAD_S",
            "MOE_LAYER_OVERHEAD_S",
            "MLA_LAYER_OVERHEAD_S",
            "TRITON_MOE_LAYER_OVERHEAD_S",
            "WEIGHT_ONLY_DEQUANT_FLOP",
            "TTFT_OVERHEAD_S",
            "TTFT_LOAD_OVERHEAD_S",
            "TTFT_OVERHEAD_PER_STREAMED_TOKEN_S",
            "DECODE_HOST_PER_SEQUENCE_S",
            "BANDWIDTH_EFFICIENCY_BY_GPU",
            "COMPUTE_EFFICIENCY_BY_CHIP",
        ),
    ),
}


def current_constants() -> dict[str, float]:
    values: dict[str, float] = {}
    for module, names in FITTED.values():
        for name in names:
            value = getattr(module, name)
            if isinstance(value, dict):
                values.update({f"{name}[{key}]": float(v) for key, v in value.items()})
            else:
                values[name] = float(value)
    return values


def _owner(name: str) -> ModuleType:
    base = name.split("[", 1)[0]
    return next(module for module, names in FITTED.values() if base in names)


@contextmanager
def constants(values: dict[str, float]) -> Iterator[None]:
    """The sizing modules with `values` in place of their constants, restored after; a
    `NAME[key]` value sets one key of a per-GPU or per-chip table."""
    saved = {
        (module, name): (dict(v) if isinstance(v := getattr(module, name), dict) else v)
        for module, names in FITTED.values()
        for name in names
    }
    try:
        for name, value in values.items():
            module = _owner(name)
            if "[" in name:
                base, key = name[:-1].split("[", 1)
                getattr(module, base)[key] = value
            else:
                setattr(module, name, value)
        yield
    finally:
        for (module, name), value in saved.items():
            if isinstance(value, dict):
                table = getattr(module, name)
                table.clear()
                table.update(value)
            else:
                setattr(module, name, value)
