"""Engine command lines derived from the plan.

Flag names were checked against the engines' sources (docs/engine-flags.md): vLLM's
`vllm/engine/arg_utils.py` and `entrypoints/openai/cli_args.py`; TensorRT-LLM's
`tensorrt_llm/commands/serve.py`. Values the plan depends on are always passed explicitly,
because engine defaults change between releases.
"""

from __future__ import annotations

from llmdeploy.api.types import EngineName, LLMDeploymentSpec
from llmdeploy.sizing import Plan, SpecError

ENGINE_PORT = 8000
MODEL_DIR = "/models"


# vLLM's short spellings of flags the plan sets (docs/engine-flags.md).
SHORT_FLAGS = {
    "-tp": "--tensor-parallel-size",
    "-pp": "--pipeline-parallel-size",
    "-q": "--quantization",
}


def _flag_name(arg: str) -> str:
    """`--max_model_len=4` -> `--max-model-len` (vLLM accepts both spellings), `-tp=8` ->
    `--tensor-parallel-size`."""
    name = arg.split("=", 1)[0].replace("_", "-")
    return SHORT_FLAGS.get(name, name)


def _merge_extra_args(planned: list[tuple[str, str | None]], spec: LLMDeploymentSpec) -> list[str]:
    """Planned flags, then the user's extra args; a clash is an error unless allowed."""
    extra = spec.engine.extra_args
    given = {_flag_name(a) for a in extra if a.startswith("-")}
    args: list[str] = []
    for flag, value in planned:
        if _flag_name(flag) in given:
            if not spec.engine.allow_arg_overrides:
                raise SpecError(
                    "spec.engine.extraArgs",
                    f"{flag} is set by the plan; remove it or set engine.allowArgOverrides: true",
                )
            continue
        args.append(flag)
        if value is not None:
            args.append(value)
    return args + list(extra)


def model_reference(spec: LLMDeploymentSpec, plan: Plan) -> str:
    """What the engine loads: a path on a mounted volume, or the checkpoint id."""
    source = spec.model.source
    if source and source.startswith("pvc://"):
        _, _, path = source.removeprefix("pvc://").partition("/")
        return f"{MODEL_DIR}/{path}".rstrip("/")
    if source and source.startswith("hf://"):
        return source.removeprefix("hf://")
    return plan.checkpoint or spec.model.name


def served_name(spec: LLMDeploymentSpec) -> str:
    return spec.model.served_name or spec.model.name


def _quantization_flag(spec: LLMDeploymentSpec, plan: Plan) -> list[tuple[str, str | None]]:
    # Pre-quantized and native checkpoints carry quantization_config; the engine reads it and
    # picks the fastest kernel. Only an online conversion needs the flag.
    online = plan.quantization == "fp8" and plan.checkpoint == spec.model.name
    if online:
        return [("--quantization", "fp8")]
    if plan.quantization in ("bf16", "fp16"):
        return [("--dtype", "bfloat16" if plan.quantization == "bf16" else "float16")]
    return []


def vllm_args(spec: LLMDeploymentSpec, plan: Plan, *, multi_node: bool) -> list[str]:
    planned: list[tuple[str, str | None]] = [
        ("--served-model-name", served_name(spec)),
        ("--host", "0.0.0.0"),
        ("--port", str(ENGINE_PORT)),
        ("--tensor-parallel-size", str(plan.tensor_parallel)),
        ("--pipeline-parallel-size", str(plan.pipeline_parallel)),
        ("--max-model-len", str(plan.max_context_length)),
        ("--gpu-memory-utilization", f"{plan.gpu_memory_utilization:g}"),
        ("--max-num-seqs", str(plan.max_num_seqs)),
        ("--max-num-batched-tokens", str(plan.max_num_batched_tokens)),
        ("--kv-cache-dtype", str(plan.kv_cache_dtype)),
        *_quantization_flag(spec, plan),
    ]
    if spec.model.revision and not (spec.model.source or "").startswith("pvc://"):
        planned.append(("--revision", spec.model.revision))
    if multi_node:
        planned.append(("--distributed-executor-backend", "ray"))
    return [model_reference(spec, plan), *_merge_extra_args(planned, spec)]


def trtllm_args(spec: LLMDeploymentSpec, plan: Plan, options_file: str | None) -> list[str]:
    planned: list[tuple[str, str | None]] = [
        ("--host", "0.0.0.0"),  # trtllm-serve binds localhost by default
        ("--port", str(ENGINE_PORT)),
        ("--backend", "pytorch"),
        ("--tp_size", str(plan.tensor_parallel)),
        ("--pp_size", str(plan.pipeline_parallel)),
        ("--max_seq_len", str(plan.max_context_length)),
        ("--max_batch_size", str(plan.max_num_seqs)),
        ("--max_num_tokens", str(plan.max_num_batched_tokens)),
        ("--kv_cache_free_gpu_memory_fraction", f"{plan.gpu_memory_utilization:g}"),
    ]
    if options_file:
        planned.append(("--extra_llm_api_options", options_file))
    return [model_reference(spec, plan), *_merge_extra_args(planned, spec)]


def trtllm_options(plan: Plan) -> dict[str, object] | None:
    """The --extra_llm_api_options document, for settings without a flag."""
    if plan.kv_cache_dtype == "fp8":
        return {"kv_cache_config": {"dtype": "fp8"}}
    return None


def engine_command(engine: EngineName) -> list[str]:
    return ["vllm", "serve"] if engine is EngineName.VLLM else ["trtllm-serve"]
