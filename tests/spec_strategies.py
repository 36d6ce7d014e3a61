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
