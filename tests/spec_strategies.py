"""Hypothesis strategies for LLMDeployment specs, valid and invalid, shared by unit and e2e."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

GPUS = [
    "nvidia-l4",
    "nvidia-a10g",
    "nvidia-l40s",
    "nvidia-a100-40gb",
    "nvidia-a100-80gb",
    "nvidia-h100-80gb",
    "nvidia-h200-141gb",
    "nvidia-b200-180gb",
    "amd-mi300x-192gb",
]
MODELS = [
    "meta-llama/Llama-3.1-8B-Instruct",
    "meta-llama/Llama-3.1-70B-Instruct",
    "Qwen/Qwen3-30B-A3B",
    "Qwen/Qwen2.5-7B-Instruct",
    "deepseek-ai/DeepSeek-V3",
    "google/gemma-2-27b-it",
    "openai/gpt-oss-20b",
    "mistralai/Mixtral-8x7B-Instruct-v0.1",
]
QUANTS = ["auto", "bf16", "fp16", "fp8", "int8", "int4-awq", "int4-gptq", "mxfp4"]
NASTY = [
    "x\nkind: Secret",
    "a: b",
    "{{ v.image }}",
    "---\napiVersion: v1",
    "' OR 1=1 --",
    "$(rm -rf /)",
    "é\u202e\u0000",
    "🦙" * 40,
    "a" * 5000,
    "",
    " ",
    "null",
    "~",
    "-1",
]

nasty_text = st.one_of(st.sampled_from(NASTY), st.text(max_size=80))
number = st.one_of(
    st.integers(min_value=-10, max_value=10),
    st.integers(min_value=1, max_value=300_000),
    st.sampled_from([0, -1, 2**31, 10**12, 10**30]),
)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


@st.composite
def spec_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A spec dict: mostly plausible, with invalid values mixed in at every field."""
    model: dict[str, Any] = {"name": draw(st.one_of(st.sampled_from(MODELS), nasty_text))}
    if draw(st.booleans()):
        model["servedName"] = draw(nasty_text)
    spec: dict[str, Any] = {"model": model}
    if draw(st.booleans()):
        spec["quantization"] = draw(st.one_of(st.sampled_from(QUANTS), nasty_text))
    placement: dict[str, Any] = {}
    if draw(st.booleans()):
        placement["gpu"] = draw(st.one_of(st.sampled_from(GPUS), nasty_text))
    if draw(st.booleans()):
        placement["allowedGpus"] = draw(
            st.lists(st.one_of(st.sampled_from(GPUS), nasty_text), max_size=3)
        )
    if draw(st.booleans()):
        placement["maxGpusPerReplica"] = draw(number)
    if placement:
        spec["placement"] = placement
    workload = {
        k: v
        for k, v in {
            "maxContextLength": draw(maybe(number)),
            "concurrency": draw(maybe(number)),
            "inputTokens": draw(maybe(number)),
            "outputTokens": draw(maybe(number)),
        }.items()
        if v is not None
    }
    if workload:
        spec["workload"] = workload
    if draw(st.booleans()):
        spec["parallelism"] = {"tensor": draw(st.one_of(st.just("auto"), number, nasty_text))}
    if draw(st.booleans()):
        spec["engine"] = {
            "name": draw(st.sampled_from(["vllm", "tensorrt-llm", "sglang"])),
            "extraArgs": draw(st.lists(nasty_text, max_size=2)),
        }
    if draw(st.booleans()):
        spec["slo"] = {"ttftMs": draw(number), "tpotMs": draw(number)}
    if draw(st.booleans()):
        spec["replicas"] = draw(number)
    return spec


# Schema-valid input: every value within its field's bounds, the architecture consistent by
# construction (the rules of ARCHITECTURE_RULES), extremes included.

ENGINES = ["vllm", "tensorrt-llm"]


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _extreme(low: int, high: int) -> st.SearchStrategy[int]:
    """Mostly plausible sizes, sometimes the bounds themselves."""
    return st.one_of(st.integers(low, min(high, 4 * low + 64)), st.integers(low, high))


@st.composite
def architectures(draw: st.DrawFn) -> dict[str, Any]:
    heads = draw(_extreme(1, 4096))
    layers = draw(_extreme(1, 4096))
    facts: dict[str, Any] = {
        "layers": layers,
        "attentionHeads": heads,
        "kvHeads": draw(st.sampled_from(_divisors(heads))),
        "vocabSize": draw(_extreme(1, 10_000_000)),
        "maxContextLength": draw(st.one_of(st.integers(8192, 1_000_000), _extreme(16, 1_000_000))),
    }
    if draw(st.booleans()):
        facts["headDim"] = draw(_extreme(1, 4096))
        facts["hiddenSize"] = draw(_extreme(1, 10_000_000))
    else:
        facts["hiddenSize"] = heads * draw(_extreme(1, 10_000_000 // heads))
    optional = {
        "parameters": st.floats(1, 1e13),
        "activeParameters": st.floats(1, 1e13),
        "intermediateSize": _extreme(1, 10_000_000),
        "tieWordEmbeddings": st.booleans(),
        "nativeDtype": st.sampled_from(QUANTS[1:]),
        "kvLoraRank": _extreme(1, 4096),
        "qkRopeHeadDim": _extreme(1, 4096),
        "qLoraRank": _extreme(1, 4096),
        "sharedExperts": st.integers(0, 4096),
        "moeIntermediateSize": _extreme(1, 10_000_000),
        "firstDenseLayers": st.integers(0, layers),
        "slidingWindow": _extreme(1, 1_000_000),
        "slidingWindowLayers": st.integers(0, layers),
    }
    for name, strategy in optional.items():
        if draw(st.integers(0, 3)) == 0:
            facts[name] = draw(strategy)
    if draw(st.booleans()):
        experts = draw(_extreme(1, 4096))
        facts["experts"] = experts
        facts["activeExperts"] = draw(st.integers(1, experts))
    return facts


@st.composite
def valid_spec_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A spec within every bound of the schema; the planner may still find it infeasible."""
    if draw(st.booleans()):
        model: dict[str, Any] = {"name": "acme/generated", "architecture": draw(architectures())}
    else:
        model = {"name": draw(st.sampled_from(MODELS))}
    # Mostly requests that fit the context, so that most specs reach the planner's search.
    context = draw(st.one_of(st.none(), st.integers(4096, 8192), _extreme(16, 10_000_000)))
    half = (context or 8192) // 2
    tokens = _extreme(1, 10_000_000) if draw(st.integers(0, 7)) == 0 else st.integers(1, half)
    workload: dict[str, Any] = {
        "concurrency": draw(_extreme(1, 65_536)),
        "inputTokens": draw(tokens),
        "outputTokens": draw(tokens),
    }
    if context is not None:
        workload["maxContextLength"] = context
    if draw(st.booleans()):
        workload["requestsPerSecond"] = draw(st.floats(1e-9, 1e7))
    spec: dict[str, Any] = {
        "model": model,
        "workload": workload,
        "quantization": draw(st.sampled_from(QUANTS)),
        "minPrecision": draw(st.sampled_from(["bf16", "fp8", "int8", "int4"])),
        "engine": {
            "name": draw(st.sampled_from(ENGINES)),
            "gpuMemoryUtilization": draw(st.floats(0.1, 0.99)),
        },
        "placement": {
            "allowedGpus": draw(
                st.lists(st.sampled_from([*GPUS, "generated-gpu"]), max_size=3, unique=True)
            ),
            "maxGpusPerReplica": draw(_extreme(1, 256)),
        },
        "parallelism": {
            "tensor": draw(st.one_of(st.just("auto"), st.integers(1, 64))),
            "pipeline": draw(st.one_of(st.just("auto"), st.integers(1, 64))),
        },
    }
    if draw(st.booleans()):
        spec["engine"]["kvCacheDtype"] = draw(st.sampled_from(["auto", "fp8"]))
    if draw(st.booleans()):
        spec["engine"]["maxNumBatchedTokens"] = draw(_extreme(256, 1_048_576))
    if draw(st.booleans()):
        spec["slo"] = {
            "ttftMs": draw(st.floats(1e-3, 3.6e6)),
            "tpotMs": draw(st.floats(1e-3, 3.6e6)),
        }
    if draw(st.booleans()):
        spec["replicas"] = draw(st.integers(0, 10_000))
    return spec


@st.composite
def gpu_rows(draw: st.DrawFn) -> dict[str, Any]:
    """A catalog GPU within every bound the loader enforces."""
    measure = st.floats(1e-3, 1e9)
    return {
        "id": "generated-gpu",
        "vendor": "nvidia",
        "displayName": "Generated",
        "architecture": "generated",
        "memoryGiB": draw(measure),
        "bandwidthGBps": draw(measure),
        "tflops": {"bf16": draw(measure), "fp8": draw(measure)},
        "fp8": draw(st.booleans()),
        "interconnect": {
            "kind": draw(st.sampled_from(["nvlink", "pcie", "infinity-fabric"])),
            "bandwidthGBps": draw(measure),
        },
        "gpusPerNode": draw(st.integers(1, 64)),
        "productLabels": ["Generated"],
        "resourceName": "nvidia.com/gpu",
        "pricePerHour": draw(st.floats(0, 1e6)),
        "priceDate": "2026-11",
    }
