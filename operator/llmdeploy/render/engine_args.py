"""Engine command lines derived from the plan.

Flag names were checked against the engines' sources (docs/engine-flags.md): vLLM's
`vllm/engine/arg_utils.py` and `entrypoints/openai/cli_args.py`; TensorRT-LLM's
`tensorrt_llm/commands/serve.py` and `tensorrt_llm/llmapi/llm_args.py`. Values the plan depends
on are always passed explicitly, because engine defaults change between releases.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from llmdeploy.api.types import EngineName, LLMDeploymentSpec, Quantization
from llmdeploy.catalog import Engine
from llmdeploy.sizing import Plan, SpecError

ENGINE_PORT = 8000
MODEL_DIR = "/models"
EXTRA_ARGS = "spec.engine.extraArgs"

# Other spellings of flags the plan sets, by engine (docs/engine-flags.md): vLLM's -tp/-pp/-q;
# trtllm-serve's long aliases and the newer name of its options file flag.
ALIASES = {
    EngineName.VLLM: {
        "-tp": "--tensor-parallel-size",
        "-pp": "--pipeline-parallel-size",
        "-q": "--quantization",
    },
    EngineName.TENSORRT_LLM: {
        "--tensor-parallel-size": "--tp-size",
        "--pipeline-parallel-size": "--pp-size",
        "--moe-expert-parallel-size": "--ep-size",
        "--config": "--extra-llm-api-options",
        "--free-gpu-memory-fraction": "--kv-cache-free-gpu-memory-fraction",
    },
}
TENSOR_FLAGS = ("--tensor-parallel-size", "--tp-size")
PIPELINE_FLAGS = ("--pipeline-parallel-size", "--pp-size")
# trtllm-serve flags whose value llmdeploy sets in the options file instead: the file's
# kv_cache_config would silently replace what the flag set.
TRTLLM_OPTION_FLAGS = ("--kv_cache_free_gpu_memory_fraction",)


def _flag_name(arg: str, engine: EngineName) -> str:
    """`--max_model_len=4` -> `--max-model-len` (both engines' parsers accept either
    spelling), `-tp=8` -> `--tensor-parallel-size`."""
    name = arg.split("=", 1)[0].replace("_", "-")
    return ALIASES[engine].get(name, name)


def _names(given: str, flag: str, engine: EngineName) -> bool:
    """Whether `given` (as _flag_name spells it) sets `flag` as the engine reads its command
    line: vLLM's parser is Python's argparse, which takes an unambiguous prefix of a long
    option for the option (`--tensor-parallel 8`, `--gpu-mem 0.99`); trtllm-serve's click
    takes whole names only."""
    if given == flag:
        return True
    return engine is EngineName.VLLM and len(given) > 2 and flag.startswith(given)


def _given_flags(spec: LLMDeploymentSpec) -> list[str]:
    return [
        _flag_name(a, spec.engine.name)
        for a in spec.engine.extra_args
        if a.startswith("-") and len(a) > 1
    ]


def _is_given(flag: str, given: Sequence[str], engine: EngineName) -> bool:
    name = _flag_name(flag, engine)
    return any(_names(g, name, engine) for g in given)


def check_extra_args(spec: LLMDeploymentSpec, engine: Engine, version: str | None) -> None:
    """A flag the target release no longer accepts is invalid input: the engine would exit at
    start, after the pod was scheduled and the weights downloaded."""
    if version is None:
        return
    for arg in spec.engine.extra_args:
        if not arg.startswith("-"):
            continue
        flag = arg.split("=", 1)[0]
        removed = engine.removed_flag(flag, version)
        if removed is not None:
            raise SpecError(
                EXTRA_ARGS,
                f"{flag} is not accepted by {engine.display_name} {version} (removed in "
                f"{removed.removed_in}; last seen in {removed.last_seen_in})",
            )


def _merge_extra_args(
    planned: list[tuple[str, str | None]],
    spec: LLMDeploymentSpec,
    set_elsewhere: Sequence[str] = (),
) -> list[str]:
    """Planned flags, then the user's extra args; a clash is an error unless allowed.
    `set_elsewhere`: flags whose value the plan sets in a file, which extraArgs may not touch
    either."""
    engine = spec.engine.name
    given = _given_flags(spec)
    for flag in set_elsewhere:
        if _is_given(flag, given, engine) and not spec.engine.allow_arg_overrides:
            raise SpecError(EXTRA_ARGS, f"{flag} is set by the plan in the engine's options file")
    args: list[str] = []
    for flag, value in planned:
        if _is_given(flag, given, engine):
            if not spec.engine.allow_arg_overrides:
                raise SpecError(
                    EXTRA_ARGS,
                    f"{flag} is set by the plan; remove it or set engine.allowArgOverrides: true",
                )
            continue
        args.append(flag)
        if value is not None:
            args.append(value)
    return args + list(spec.engine.extra_args)


def _override_value(spec: LLMDeploymentSpec, names: Sequence[str]) -> str | None:
    """The value extraArgs give a flag (`--flag value` or `--flag=value`), last one winning."""
    extra, engine, found = spec.engine.extra_args, spec.engine.name, None
    for index, arg in enumerate(extra):
        given = [_flag_name(arg, engine)]
        if not arg.startswith("-") or not any(_is_given(n, given, engine) for n in names):
            continue
        if "=" in arg:
            found = arg.split("=", 1)[1]
        elif index + 1 < len(extra):
            found = extra[index + 1]
        else:
            raise SpecError(EXTRA_ARGS, f"{arg} needs a value")
    return found


def effective_parallelism(spec: LLMDeploymentSpec, plan: Plan) -> tuple[int, int]:
    """(TP, PP) the engine will run: the plan's, or what allowed extraArgs override them with,
    so that the pods request the GPUs the engine will use."""
    layout = [plan.tensor_parallel or 1, plan.pipeline_parallel or 1]
    if not spec.engine.allow_arg_overrides:
        return layout[0], layout[1]
    for position, names in enumerate((TENSOR_FLAGS, PIPELINE_FLAGS)):
        value = _override_value(spec, names)
        if value is None:
            continue
        if not value.isdigit() or not 1 <= int(value) <= 64:
            raise SpecError(EXTRA_ARGS, f"{names[0]} {value!r} is not a size from 1 to 64")
        layout[position] = int(value)
    return layout[0], layout[1]


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


def _revision(spec: LLMDeploymentSpec) -> str | None:
    """The checkpoint revision the engine must load (a volume has no revisions)."""
    if spec.model.revision and not (spec.model.source or "").startswith("pvc://"):
        return spec.model.revision
    return None


SIXTEEN_BIT_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


def _quantization_flag(
    spec: LLMDeploymentSpec, plan: Plan, native: Quantization
) -> list[tuple[str, str | None]]:
    # Pre-quantized and native checkpoints carry quantization_config; the engine reads it and
    # picks the fastest kernel. Only an online conversion of a 16-bit checkpoint needs the flag.
    online = (
        plan.quantization == "fp8"
        and plan.checkpoint == spec.model.name
        and native in (Quantization.BF16, Quantization.FP16)
    )
    if online:
        return [("--quantization", "fp8")]
    if plan.quantization in SIXTEEN_BIT_DTYPES:
        return [("--dtype", SIXTEEN_BIT_DTYPES[plan.quantization])]
    return []


def vllm_args(
    spec: LLMDeploymentSpec, plan: Plan, *, multi_node: bool, native: Quantization
) -> list[str]:
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
        *_quantization_flag(spec, plan, native),
    ]
    # One switch: with it the MoE's EP size is the TP (no data parallelism) and every rank
    # holds whole experts (FusedMoEParallelConfig.make); without it each expert is TP-split.
    if (plan.expert_parallel or 1) > 1:
        planned.append(("--enable-expert-parallel", None))
    revision = _revision(spec)
    if revision:
        planned.append(("--revision", revision))
    if multi_node:
        planned.append(("--distributed-executor-backend", "ray"))
    return [model_reference(spec, plan), *_merge_extra_args(planned, spec)]


def trtllm_args(spec: LLMDeploymentSpec, plan: Plan, options_file: str) -> list[str]:
    """trtllm-serve 1.0.0 has no served-model-name option: the API answers under the model
    argument, which is spec.model.name unless a quantized variant or a source replaces it
    (docs/engine-flags.md)."""
    model = model_reference(spec, plan)
    if spec.model.served_name and spec.model.served_name != model:
        raise SpecError(
            "spec.model.servedName",
            f"trtllm-serve has no served-model-name option; the API answers under {model!r}",
        )
    planned: list[tuple[str, str | None]] = [
        ("--host", "0.0.0.0"),  # trtllm-serve binds localhost by default
        ("--port", str(ENGINE_PORT)),
        ("--backend", "pytorch"),
        ("--tp_size", str(plan.tensor_parallel)),
        ("--pp_size", str(plan.pipeline_parallel)),
        # Experts spread over EP ranks: trtllm-serve's --ep_size (moe_expert_parallel_size)
        # makes moe_tp_size = TP / EP; unset, Mapping TP-splits every expert (moe_ep_size 1,
        # tensorrt_llm/mapping.py), so EP 1 renders nothing, as before the field existed.
        *([("--ep_size", str(plan.expert_parallel))] if (plan.expert_parallel or 1) > 1 else []),
        ("--max_seq_len", str(plan.max_context_length)),
        ("--max_batch_size", str(plan.max_num_seqs)),
        ("--max_num_tokens", str(plan.max_num_batched_tokens)),
        ("--extra_llm_api_options", options_file),
    ]
    return [model, *_merge_extra_args(planned, spec, set_elsewhere=TRTLLM_OPTION_FLAGS)]


def trtllm_options(
    spec: LLMDeploymentSpec, plan: Plan, metrics_options: Mapping[str, bool]
) -> dict[str, object]:
    """The --extra_llm_api_options document (LlmArgs fields), for settings without a flag.

    trtllm-serve merges this file over the arguments its flags built, one top-level key at a
    time, so kv_cache_config here replaces the one the memory-fraction flag built: the
    fraction lives here, beside the KV dtype. Chunked prefill lets a prompt longer than
    max_num_tokens through in several steps, up to max_seq_len. `metrics_options` turn on the
    release's Prometheus metrics (catalog, engines.yaml `metrics`), which the measurements
    read even without autoscaling.
    """
    kv_cache: dict[str, object] = {"free_gpu_memory_fraction": plan.gpu_memory_utilization}
    if plan.kv_cache_dtype == "fp8":
        kv_cache["dtype"] = "fp8"
    options: dict[str, object] = {
        "enable_chunked_prefill": True,
        "kv_cache_config": kv_cache,
        **metrics_options,
    }
    if plan.quantization in SIXTEEN_BIT_DTYPES:
        options["dtype"] = SIXTEEN_BIT_DTYPES[plan.quantization]
    revision = _revision(spec)
    if revision:
        options["revision"] = revision
    return options


def engine_command(engine: EngineName) -> list[str]:
    return ["vllm", "serve"] if engine is EngineName.VLLM else ["trtllm-serve"]
