"""Full-search planner latency per LLMDeployment (goal: under 5 ms on the CI machine).

Plans a set of representative specs many times and prints median and p95 per plan, with the
repository's image lock, as the controller and `llmdeploy plan` do (each GPU's release is then
the lock's choice, and the release rules are read for it). `--no-image-lock`: without it, as
this bench measured until 2026-12-06 (no release known; comparable with the older figures).
Run: .venv/bin/python bench/planner_latency.py [--repeat N] [--no-image-lock]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

from llmdeploy.api.types import LLMDeploymentSpec
from llmdeploy.catalog import load_catalog, load_image_lock
from llmdeploy.sizing import plan_deployment

SPECS: dict[str, dict[str, object]] = {
    "llama-8b auto": {"model": {"name": "meta-llama/Llama-3.1-8B-Instruct"}},
    "llama-70b rps+slo": {
        "model": {"name": "meta-llama/Llama-3.1-70B-Instruct"},
        "workload": {"maxContextLength": 32768, "concurrency": 32, "requestsPerSecond": 5},
        "slo": {"ttftMs": 800, "tpotMs": 50},
    },
    "llama-405b multi-node": {
        "model": {"name": "meta-llama/Llama-3.1-405B-Instruct"},
        "workload": {"maxContextLength": 32768},
    },
    "qwen3-235b moe": {"model": {"name": "Qwen/Qwen3-235B-A22B"}},
    "deepseek-v3 mla": {
        "model": {"name": "deepseek-ai/DeepSeek-V3"},
        "workload": {"maxContextLength": 16384},
    },
    "gemma-2-27b sliding": {"model": {"name": "google/gemma-2-27b-it"}},
    "infeasible (relaxations)": {
        "model": {"name": "meta-llama/Llama-3.1-405B-Instruct"},
        "placement": {"allowedGpus": ["nvidia-l4"], "maxGpusPerReplica": 4},
    },
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument(
        "--no-image-lock", action="store_true", help="plan without the image lock (older runs)"
    )
    args = parser.parse_args()
    catalog = load_catalog()
    lock = None if args.no_image_lock else load_image_lock()
    print(
        f"machine: {platform.machine()}, {platform.python_implementation()} "
        f"{platform.python_version()}, repeat {args.repeat}"
        f"{', image lock' if lock else ', no image lock'}\n"
    )
    print("| spec | median ms | p95 ms | feasible |")
    print("|---|---|---|---|")
    for name, body in SPECS.items():
        spec = LLMDeploymentSpec.model_validate(body)
        samples = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            plan = plan_deployment(spec, catalog, lock)
            samples.append((time.perf_counter() - start) * 1000)
        samples.sort()
        p95 = samples[int(0.95 * (len(samples) - 1))]
        print(f"| {name} | {statistics.median(samples):.2f} | {p95:.2f} | {plan.feasible} |")


if __name__ == "__main__":
    main()
