"""`llmdeploy plan`: output contract and exit codes, run as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PLAN_KEYS = {
    "feasible",
    "gpu",
    "gpuCount",
    "tensorParallel",
    "pipelineParallel",
    "quantization",
    "kvCacheDtype",
    "engine",
    "maxContextLength",
    "weightsGiBPerGpu",
    "kvCacheGiBPerGpu",
    "kvCacheTokens",
    "maxConcurrency",
    "estimatedTtftMs",
    "estimatedTpotMs",
    "estimatedTokensPerSecond",
    "replicas",
    "costPerHour",
    "costPerMillionTokens",
    "reasons",
    "alternatives",
}

MANIFEST = """\
apiVersion: llmdeploy.io/v1alpha1
kind: LLMDeployment
metadata: {{name: demo}}
spec:
  model: {{name: {model}}}
{extra}
"""


def run_plan(tmp_path: Path, text: str, *args: str) -> subprocess.CompletedProcess[str]:
    manifest = tmp_path / "llmd.yaml"
    manifest.write_text(text)
    return subprocess.run(
        [sys.executable, "-m", "llmdeploy.cli", "plan", "-f", str(manifest), *args],
        capture_output=True,
        text=True,
        check=False,
    )


def manifest(model: str = "meta-llama/Llama-3.1-8B-Instruct", extra: str = "") -> str:
    return MANIFEST.format(model=model, extra=extra)


def test_json_contract(tmp_path: Path) -> None:
    result = run_plan(tmp_path, manifest(), "-o", "json")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan.keys() >= PLAN_KEYS
    assert plan["feasible"] is True and plan["gpuCount"] >= 1
    assert isinstance(plan["alternatives"], list) and plan["alternatives"]
    assert {"gpu", "reason", "feasible"} <= plan["alternatives"][0].keys()


def test_table_shows_choice_and_alternatives(tmp_path: Path) -> None:
    result = run_plan(tmp_path, manifest())
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("PLAN")
    assert "WHY NOT" in result.stdout


def test_yaml_output(tmp_path: Path) -> None:
    import yaml

    result = run_plan(tmp_path, manifest(), "-o", "yaml")
    assert result.returncode == 0
    assert yaml.safe_load(result.stdout)["feasible"] is True


def test_infeasible_exits_1_with_json(tmp_path: Path) -> None:
    extra = "  placement: {gpu: nvidia-l4, maxGpusPerReplica: 1}\n  quantization: bf16"
    result = run_plan(tmp_path, manifest("meta-llama/Llama-3.1-70B-Instruct", extra), "-o", "json")
    assert result.returncode == 1
    plan = json.loads(result.stdout)
    assert plan["feasible"] is False and plan["reasons"]


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ("  placement: {gpu: nvidia-x999}", "spec.placement.gpu"),
        ("  placement: {allowedGpus: [nvidia-l4, tpu-v5]}", "spec.placement.allowedGpus[1]"),
        ("  quantization: int3", "spec.quantization"),
        ("  workload: {concurrency: -4}", "spec.workload.concurrency"),
        ("  workload: {inputTokens: 1e30}", "spec.workload.inputTokens"),
        ("  workload: {maxContextLength: 9000000}", "spec.workload.maxContextLength"),
        ("  engine: {gpuMemoryUtilization: 1.5}", "spec.engine.gpuMemoryUtilization"),
        ("  parallelism: {tensor: many}", "spec.parallelism.tensor"),
        ("  replicaz: 3", "spec.replicaz"),
    ],
)
def test_bad_input_exits_2_naming_the_field(tmp_path: Path, extra: str, field: str) -> None:
    result = run_plan(tmp_path, manifest(extra=extra))
    assert result.returncode == 2, result.stdout
    assert field in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_model_exits_2(tmp_path: Path) -> None:
    result = run_plan(tmp_path, manifest("acme/mystery-13b"))
    assert result.returncode == 2
    assert "spec.model.architecture" in result.stderr and "Traceback" not in result.stderr


def test_malformed_yaml_exits_2(tmp_path: Path) -> None:
    result = run_plan(tmp_path, "apiVersion: [unclosed\nkind: : :")
    assert result.returncode == 2
    assert "malformed YAML" in result.stderr and "Traceback" not in result.stderr


def test_hf_config_json_gives_the_architecture(tmp_path: Path) -> None:
    config = {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "num_hidden_layers": 40,
        "hidden_size": 5120,
        "intermediate_size": 17408,
        "num_attention_heads": 40,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "vocab_size": 151936,
        "max_position_embeddings": 40960,
        "tie_word_embeddings": False,
        "sliding_window": None,
        "use_sliding_window": False,
        "torch_dtype": "bfloat16",
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    result = run_plan(
        tmp_path, manifest("acme/Qwen3-14B-finetune"), "-o", "json", "--model-config", str(path)
    )
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    # 14.8e9 estimated parameters x 2 bytes per TP rank, on whatever was chosen
    assert plan["model"] == "acme/Qwen3-14B-finetune"
    assert plan["weightsGiBPerGpu"] > 0
