"""Accuracy of the sizing model against public measurements (../shared/reference/sizing-public.md).

Prints a markdown table of predicted vs measured values and the error of each row.
Run: .venv/bin/python bench/sizing_accuracy.py
"""

from __future__ import annotations

from dataclasses import dataclass

from llmdeploy.api.types import ModelSpec
from llmdeploy.catalog import load_catalog
from llmdeploy.sizing import resolve_model
from llmdeploy.sizing.memory import GIB, kv_capacity, memory_breakdown, weight_bytes_per_rank
from llmdeploy.sizing.performance import estimate_performance


@dataclass(frozen=True)
class LatencyRow:
    input_tokens: int
    output_tokens: int
    concurrency: int
    tensor: int
    ttft_ms: float
    tpot_ms: float


# Qwen/Qwen3-32B, vLLM 0.12, H100 SXM, bf16 (ai-dynamo/aiconfigurator silicon samples).
QWEN3_32B_H100 = [
    LatencyRow(1024, 128, 8, 2, 154.2, 18.04),
    LatencyRow(1024, 128, 8, 4, 126.1, 11.76),
    LatencyRow(1024, 128, 8, 8, 90.8, 8.66),
    LatencyRow(1024, 128, 32, 2, 250.5, 29.38),
    LatencyRow(1024, 128, 32, 4, 182.1, 19.18),
    LatencyRow(1024, 128, 64, 8, 193.5, 21.32),
    LatencyRow(1024, 1024, 16, 2, 187.4, 17.38),
    LatencyRow(1024, 1024, 32, 4, 177.9, 13.69),
]


def error(predicted: float, measured: float) -> str:
    return f"{100 * (predicted - measured) / measured:+.1f}%"


def main() -> None:
    catalog = load_catalog()
    bf16 = catalog.quantizations["bf16"]
    h100 = catalog.gpus["nvidia-h100-80gb"]

    print("### Memory (vLLM startup logs)\n")
    print("| case | measured | predicted | error |")
    print("|---|---|---|---|")
    llama8b = resolve_model(ModelSpec(name="meta-llama/Llama-3.1-8B-Instruct"), catalog)
    weights = weight_bytes_per_rank(llama8b, bf16, 2, 1) / GIB
    print(
        f"| Llama-3-8B TP2 weights/GPU (vllm#10511) | 7.48 GiB | {weights:.2f} GiB "
        f"| {error(weights, 7.48)} |"
    )
    rtx3090 = h100.model_copy(update={"id": "rtx-3090", "memory_gib": 23.58})
    memory = memory_breakdown(
        llama8b,
        rtx3090,
        bf16,
        tensor=1,
        pipeline=1,
        kv_dtype_bytes=2,
        gpu_memory_utilization=0.9,
        max_num_batched_tokens=8192,
        max_num_seqs=256,
        max_context_length=8192,
        block_size=16,
    )
    print(
        f"| Llama-3.1-8B on RTX 3090, KV GiB (vllm#10517) | 3.81 GiB | "
        f"{memory.kv_cache_gib:.2f} GiB | {error(memory.kv_cache_gib, 3.81)} |"
    )
    print(
        f"| Llama-3.1-8B on RTX 3090, KV tokens (vllm#10517) | 31232 | "
        f"{memory.kv_cache_tokens} | {error(memory.kv_cache_tokens, 31232)} |"
    )
    qwen14b = resolve_model(
        ModelSpec.model_validate(
            {
                "name": "Qwen/Qwen3-14B",
                "architecture": {
                    "layers": 40,
                    "hiddenSize": 5120,
                    "attentionHeads": 40,
                    "kvHeads": 8,
                    "headDim": 128,
                    "vocabSize": 151936,
                    "maxContextLength": 40960,
                    "intermediateSize": 17408,
                },
            }
        ),
        catalog,
    )
    tokens, concurrency = kv_capacity(qwen14b, 1, 1, 2, 6.51 * GIB, 32768, 16)
    print(
        f"| Qwen3-14B tokens from 6.51 GiB KV (LMCache#1739) | 42656 | {tokens} "
        f"| {error(tokens, 42656)} |"
    )
    print(
        f"| Qwen3-14B concurrency at 32768 (LMCache#1739) | 1.30 | {concurrency:.2f} "
        f"| {error(concurrency, 1.30)} |"
    )

    print("\n### Latency: Qwen3-32B bf16 on H100 SXM, vLLM 0.12 (AIConfigurator samples)\n")
    print(
        "| in | out | conc | TP | TTFT meas. | TTFT pred. | err | TPOT meas. | TPOT pred. | err |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    qwen32b = resolve_model(ModelSpec(name="Qwen/Qwen3-32B"), catalog)
    ttft_errors, tpot_errors = [], []
    for row in QWEN3_32B_H100:
        perf = estimate_performance(
            qwen32b,
            h100,
            bf16,
            tensor=row.tensor,
            pipeline=1,
            kv_dtype_bytes=2,
            concurrency=row.concurrency,
            input_tokens=row.input_tokens,
            output_tokens=row.output_tokens,
        )
        ttft, tpot = perf.ttft_s * 1000, perf.tpot_s * 1000
        ttft_errors.append(abs(ttft - row.ttft_ms) / row.ttft_ms)
        tpot_errors.append(abs(tpot - row.tpot_ms) / row.tpot_ms)
        print(
            f"| {row.input_tokens} | {row.output_tokens} | {row.concurrency} | {row.tensor} "
            f"| {row.ttft_ms} | {ttft:.1f} | {error(ttft, row.ttft_ms)} "
            f"| {row.tpot_ms} | {tpot:.2f} | {error(tpot, row.tpot_ms)} |"
        )
    mean = lambda xs: 100 * sum(xs) / len(xs)  # noqa: E731
    print(f"\nMean absolute error: TTFT {mean(ttft_errors):.1f}%, TPOT {mean(tpot_errors):.1f}%")


if __name__ == "__main__":
    main()
