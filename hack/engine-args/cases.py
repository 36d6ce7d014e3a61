"""The vLLM command lines llmdeploy renders, per pinned vLLM release, for hack/check-engine-args.sh.

`versions` prints the vLLM releases the image lock pins; `cases VERSION` prints, as JSON, the
`vllm serve` arguments of every example (the golden renders) and of specs that force each
option the planner and renderer can emit, each pinned to VERSION (spec.engine.version), with
the GPU planned and the values the engine must hold; `gpus FILE` the GPUs of a cases file and
`skipped FILE` its cases that could not be rendered.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from llmdeploy.api.types import parse_llmdeployment
from llmdeploy.catalog import load_catalog, load_image_lock, version_key
from llmdeploy.render import render_manifests
from llmdeploy.sizing import SpecError, plan_deployment

ROOT = Path(__file__).resolve().parents[2]
AMD = "amd-mi300x-192gb"
# What each forced case changes in examples/llama-3.1-8b-l4.yaml's spec, and the option it
# makes the renderer emit.
FORCED: dict[str, dict[str, Any]] = {
    "fp8-online (--quantization fp8)": {"quantization": "fp8"},
    "bf16 (--dtype bfloat16)": {"quantization": "bf16"},
    "fp16 (--dtype float16)": {"quantization": "fp16"},
    "fp8 KV (--kv-cache-dtype fp8)": {"engine": {"name": "vllm", "kvCacheDtype": "fp8"}},
    "int4-awq checkpoint (no --quantization)": {
        "quantization": "int4-awq",
        "model": {
            "name": "meta-llama/Llama-3.1-8B-Instruct",
            "quantizedVariants": {"int4-awq": "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4"},
        },
    },
    "revision and served name (--revision, --served-model-name)": {
        "model": {
            "name": "meta-llama/Llama-3.1-8B-Instruct",
            "revision": "0e9e39f249a16976918f6564b8830bc894c89659",
            "servedName": "chat",
        }
    },
    "model from a volume (a path)": {
        "model": {
            "name": "meta-llama/Llama-3.1-8B-Instruct",
            "source": "pvc://models/llama-3.1-8b",
        }
    },
    "TP 2 (--tensor-parallel-size)": {"parallelism": {"tensor": 2, "pipeline": 1}},
    "extraArgs": {"engine": {"name": "vllm", "extraArgs": ["--disable-log-stats"]}},
    "MoE on AMD (ROCm image)": {
        "model": {"name": "Qwen/Qwen3-30B-A3B"},
        "placement": {"gpu": AMD},
    },
}


def vllm_versions() -> list[str]:
    lock = load_image_lock()
    found = {e.engine_version for e in lock.images if e.engine == "vllm"}
    return sorted(found, key=version_key)


def serve_args(objects: list[dict[str, Any]]) -> list[str] | None:
    """The arguments after `vllm serve` in the engine container (the leader's for a group)."""
    for obj in objects:
        spec = obj.get("spec") or {}
        templates = [spec.get("template")]
        group = spec.get("leaderWorkerTemplate") or {}
        templates += [group.get("leaderTemplate")]
        for template in filter(None, templates):
            for container in template["spec"]["containers"]:
                command = container.get("command") or []
                if command == ["vllm", "serve"] or 'vllm serve "$@"' in " ".join(command):
                    return [str(a) for a in container.get("args") or []]
    return None


def cases(version: str) -> list[dict[str, Any]]:
    catalog, lock = load_catalog(), load_image_lock()
    specs: list[tuple[str, dict[str, Any]]] = []
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        body = yaml.safe_load(path.read_text())
        if body["spec"].get("engine", {}).get("name", "vllm") == "vllm":
            specs.append((f"example {path.stem}", body))
    base = yaml.safe_load((ROOT / "examples" / "llama-3.1-8b-l4.yaml").read_text())
    for name, change in FORCED.items():
        body = copy.deepcopy(base)
        body["spec"].update(copy.deepcopy(change))
        specs.append((name, body))
    found = []
    for name, body in specs:
        body["spec"].setdefault("engine", {"name": "vllm"})["version"] = version
        resource = parse_llmdeployment(body)
        try:
            plan = plan_deployment(resource.spec, catalog, lock)
            if not plan.feasible:
                # A release pinned for one platform only: the same spec on the other.
                pinned = (
                    {"gpu": AMD}
                    if any(
                        e.engine_version == version and e.platform == "rocm" for e in lock.images
                    )
                    else {}
                )
                placement = {**body["spec"].get("placement", {}), **pinned}
                placement.pop("allowedGpus", None)
                body["spec"]["placement"] = placement
                resource = parse_llmdeployment(body)
                plan = plan_deployment(resource.spec, catalog, lock)
            if not plan.feasible:
                found.append({"case": name, "skipped": "; ".join(plan.reasons)})
                continue
            objects = render_manifests(resource, plan, catalog, lock)
        except SpecError as exc:
            found.append({"case": name, "skipped": str(exc)})
            continue
        args = serve_args(objects)
        assert args is not None, name
        platform = catalog.gpus[plan.gpu].platform if plan.gpu else "cuda"
        # What the release's EngineArgs must hold: the plan's values.
        expect = {
            "model": args[0],
            "tensor_parallel_size": plan.tensor_parallel,
            "pipeline_parallel_size": plan.pipeline_parallel,
            "max_model_len": plan.max_context_length,
            "gpu_memory_utilization": plan.gpu_memory_utilization,
            "max_num_seqs": plan.max_num_seqs,
            "max_num_batched_tokens": plan.max_num_batched_tokens,
            "kv_cache_dtype": plan.kv_cache_dtype,
            "served_model_name": [resource.spec.model.served_name or resource.spec.model.name],
        }
        found.append(
            {"case": name, "gpu": plan.gpu, "platform": platform, "args": args, "expect": expect}
        )
    return found


if __name__ == "__main__":
    command, *rest = sys.argv[1:] or [""]
    if command == "versions" and not rest:
        print("\n".join(vllm_versions()))
    elif command == "cases" and len(rest) == 1:
        print(json.dumps(cases(rest[0]), indent=1))
    elif command in ("gpus", "skipped") and len(rest) == 1:
        found = json.loads(Path(rest[0]).read_text())
        if command == "gpus":
            print("\n".join(sorted({c["gpu"] for c in found if "gpu" in c})))
        else:
            for case in (c for c in found if "skipped" in c):
                print(f"SKIP {case['case']}: not renderable: {case['skipped']}")
    else:
        sys.exit("usage: cases.py versions | cases VERSION | gpus FILE | skipped FILE")
