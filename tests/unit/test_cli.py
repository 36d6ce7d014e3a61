"""`llmdeploy plan`: output contract and exit codes, run as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llmdeploy import cli
from tests.unit.conftest import write_image_lock

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
    scope, plan = result.stdout.splitlines()[:2]
    assert scope.startswith("SCOPE planned for an unconstrained catalog") and plan.startswith(
        "PLAN"
    )
    assert "WHY NOT" in result.stdout


def test_yaml_output(tmp_path: Path) -> None:
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


# Every bad input below exits 2 (3 for an internal failure) with one line on stderr.

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "llama-3.1-8b-l4.yaml"


def run_cli(
    *args: str, stdin: bytes = b"", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "llmdeploy.cli", *args],
        input=stdin,
        capture_output=True,
        check=False,
        env=env,
    )
    return subprocess.CompletedProcess(
        result.args,
        result.returncode,
        result.stdout.decode("utf-8", "replace"),
        result.stderr.decode("utf-8", "replace"),
    )


def assert_refused(result: subprocess.CompletedProcess[str], words: str, code: int = 2) -> None:
    assert result.returncode == code, (result.stdout, result.stderr)
    assert words in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_non_utf8_file_and_stdin_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(manifest().encode() + b"# caf\xe9\n")
    assert_refused(run_cli("plan", "-f", str(path)), "not UTF-8")
    assert_refused(run_cli("plan", "-f", "-", stdin=b"kind: \xff\xfe"), "stdin: not UTF-8")


def test_deep_nesting_exits_2(tmp_path: Path) -> None:
    text = manifest().replace("metadata: {name: demo}", "metadata: {name: demo, x: " + "[" * 500)
    text = text.replace("\nspec:", "]" * 500 + "}\nspec:", 1)
    assert_refused(run_plan(tmp_path, text), "nested too deeply")


def test_integer_beyond_4300_digits_exits_2(tmp_path: Path) -> None:
    result = run_plan(tmp_path, manifest(extra="  replicas: " + "9" * 5000))
    assert_refused(result, "digits")


def test_strict_types_offline(tmp_path: Path) -> None:
    result = run_plan(tmp_path, manifest(extra="  workload: {concurrency: true}"))
    assert_refused(result, "spec.workload.concurrency: Input should be a valid integer")


def test_unknown_quantization_lists_the_formats(tmp_path: Path) -> None:
    result = run_plan(tmp_path, manifest(extra="  quantization: fp9"))
    assert_refused(result, "spec.quantization: Input should be 'auto' or 'bf16', 'fp16'")


def test_nonsense_architecture_exits_2(tmp_path: Path) -> None:
    extra = "  model: {name: acme/x, architecture: {hiddenSize: 64, attentionHeads: 128}}"
    text = manifest().replace("  model: {name: meta-llama/Llama-3.1-8B-Instruct}\n", "") + extra
    assert_refused(run_plan(tmp_path, text), "attentionHeads must divide hiddenSize")


@pytest.mark.parametrize(
    ("config", "words"),
    [
        (b"[1, 2]", "expected a JSON object, found list"),
        (b'{"num_hidden_layers": "32"}', "layers: Input should be a valid integer"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"vocab_size": ' + b"9" * 5000 + b"}", "malformed JSON"),
        (b"{\xff}", "not UTF-8"),
    ],
)
def test_bad_model_config_exits_2(tmp_path: Path, config: bytes, words: str) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(config)
    result = run_plan(tmp_path, manifest("acme/x"), "--model-config", str(path))
    assert_refused(result, words)


def test_model_config_contradicting_the_spec_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"num_attention_heads": 32, "hidden_size": 4096}))
    text = manifest("acme/x", "    architecture: {kvHeads: 64}").replace(
        "  model: {name: acme/x}\n", "  model:\n    name: acme/x\n"
    )
    result = run_plan(tmp_path, text, "--model-config", str(path))
    # Each fact is named where the user wrote it: the spec's field, the config.json's key.
    assert_refused(result, "spec.model.architecture.kvHeads must divide num_attention_heads")


@pytest.mark.parametrize(
    ("config", "words"),
    [
        (
            {"num_attention_heads": 32, "num_key_value_heads": 64, "hidden_size": 4096},
            "num_key_value_heads must divide num_attention_heads",
        ),
        (
            {"num_attention_heads": 30, "hidden_size": 4096},
            "num_attention_heads must divide hidden_size unless head_dim is given",
        ),
        (
            {"n_routed_experts": 4, "num_experts_per_tok": 8},
            "num_experts_per_tok must not exceed n_routed_experts",
        ),
        (
            {"num_hidden_layers": 4, "first_k_dense_replace": 8},
            "first_k_dense_replace must not exceed num_hidden_layers",
        ),
        ({"num_hidden_layers": 0}, "num_hidden_layers: Input should be greater than or equal"),
        ({"max_position_embeddings": 2.5}, "max_position_embeddings: Input should be a valid"),
        (
            {
                "num_hidden_layers": 2,
                "sliding_window": 64,
                "layer_types": ["sliding_attention"] * 3,
            },
            "the sliding_attention entries of layer_types must not exceed num_hidden_layers",
        ),
    ],
)
def test_model_config_errors_name_the_config_json_keys(
    tmp_path: Path, config: dict[str, object], words: str
) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    result = run_plan(tmp_path, manifest("acme/x"), "--model-config", str(path))
    assert_refused(result, f"--model-config {path}: {words}")
    ours = ("kvHeads", "attentionHeads", "hiddenSize", " layers", "activeExperts", "DenseLayers")
    assert not any(name in result.stderr for name in ours), result.stderr


def test_abbreviated_long_flags_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "llmd.yaml"
    path.write_text(manifest())
    for abbreviated, args in (
        ("--out", ("plan", "-f", str(path), "--out", "json")),  # of --output
        ("--model", ("plan", "-f", str(path), "--model", "c.json")),  # of --model-config
        ("--deb", ("--deb", "plan", "-f", str(path))),  # of --debug
    ):
        result = run_cli(*args)
        assert result.returncode == 2 and result.stdout == "", args
        assert f"unrecognized arguments: {abbreviated}" in result.stderr
        assert "Traceback" not in result.stderr
    assert run_cli("plan", "-f", str(path), "--output", "json").returncode == 0


def test_run_outside_a_cluster_without_a_kubeconfig_exits_3(tmp_path: Path) -> None:
    env = {
        k: v for k, v in os.environ.items() if k != "KUBECONFIG" and not k.startswith("KUBERNETES_")
    }
    env.update(HOME=str(tmp_path), LLMDEPLOY_METRICS_PORT="0", LLMDEPLOY_HEALTH_PORT="0")
    result = run_cli("run", env=env)
    assert_refused(result, "no Kubernetes API server to connect to: not running in a cluster", 3)
    assert "internal error" not in result.stderr


def test_a_setting_that_is_not_json_exits_2(tmp_path: Path) -> None:
    env = {**os.environ, "LLMDEPLOY_PROMETHEUS_ENDPOINTS": '{"team-a": '}
    result = run_cli("run", env=env)
    assert_refused(result, 'settings: error parsing value for field "prometheus_endpoints"')
    assert "internal error" not in result.stderr


def test_missing_catalog_exits_2(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.yaml")
    assert_refused(run_plan(tmp_path, manifest(), "--catalog", missing), "cannot read")
    env = {**os.environ, "LLMDEPLOY_CATALOG_FILES": missing}
    assert_refused(run_cli("run", env=env), "missing.yaml: cannot read")


def test_malformed_image_lock_version_exits_2(tmp_path: Path) -> None:
    lock = write_image_lock(tmp_path / "lock.yaml", engineVersion="0..8")
    result = run_cli("render", "-f", str(EXAMPLE), "--image-lock", str(lock))
    assert_refused(result, "engineVersion")


@pytest.mark.parametrize("cold_start", ["nan", "-5", "inf", "1e12"])
def test_scale_sim_refuses_bad_cold_starts(tmp_path: Path, cold_start: str) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text("t,requestsPerSecond\n0,1\n60,2\n")
    result = run_cli(
        "scale-sim", "-f", str(EXAMPLE), "--load", str(trace), f"--cold-start={cold_start}"
    )
    assert_refused(result, "--cold-start")


@pytest.mark.parametrize(
    ("rows", "words"),
    [
        ("0,1e300\n", "requestsPerSecond at most"),
        ("0,nan\n", "finite"),
        ("1e300,1\n", "t must be within"),
        ("0," + "1" * 200_000 + "\n", "field larger than field limit"),
        ("0,\x001\n", "must be numbers"),
    ],
)
def test_scale_sim_refuses_bad_traces(tmp_path: Path, rows: str, words: str) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text("t,requestsPerSecond\n" + rows)
    assert_refused(run_cli("scale-sim", "-f", str(EXAMPLE), "--load", str(trace)), words)


def test_broken_pipe_is_one_line(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "llmdeploy.cli", "render", "-f", str(EXAMPLE)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the reader is gone before the first write
    stderr = process.stderr.read().decode()
    process.stderr.close()
    result = subprocess.CompletedProcess(process.args, process.wait(), "", stderr)
    assert_refused(result, "broken pipe", code=3)


def test_internal_error_exits_3_without_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("planner\nbroke")

    monkeypatch.setattr(cli, "plan_for_cluster", broken)
    assert cli.main(["plan", "-f", str(EXAMPLE)]) == 3
    assert capsys.readouterr().err == (
        "error: internal error: RuntimeError: planner broke (--debug shows the traceback)\n"
    )
    with pytest.raises(RuntimeError):
        cli.main(["--debug", "plan", "-f", str(EXAMPLE)])


def render_into(out: Path, example: Path = EXAMPLE) -> subprocess.CompletedProcess[str]:
    return run_cli("render", "-f", str(example), "--output-dir", str(out))


def test_output_dir_replaces_links_instead_of_following_them(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    outside = tmp_path / "precious"
    outside.write_text("keep me\n")
    (out / "00-deployment-llama-8b.yaml").symlink_to(outside)
    result = render_into(out)
    assert result.returncode == 0, result.stderr
    assert outside.read_text() == "keep me\n"
    written = out / "00-deployment-llama-8b.yaml"
    assert not written.is_symlink() and "kind: Deployment" in written.read_text()


def test_output_dir_that_is_a_link_or_a_file_exits_2(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    assert_refused(render_into(tmp_path / "link"), "symbolic link")
    assert list(real.iterdir()) == []
    (tmp_path / "file").write_text("x")
    assert_refused(render_into(tmp_path / "file"), "--output-dir")


def test_output_dir_removes_its_own_stale_files_and_nothing_else(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    body = yaml.safe_load(EXAMPLE.read_text())
    body["spec"]["monitoring"] = {"podMonitor": True}
    with_monitor = tmp_path / "with-monitor.yaml"
    with_monitor.write_text(yaml.safe_dump(body))
    assert render_into(out, with_monitor).returncode == 0
    before = {p.name for p in out.iterdir()}
    assert "03-podmonitor-llama-8b.yaml" in before
    (out / "kustomization.yaml").write_text("resources: []\n")
    (out / "09-deployment-other.yaml").write_text("mine\n")  # looks rendered, is not listed
    (out / ".llmdeploy-rendered").write_text(
        (out / ".llmdeploy-rendered").read_text() + "../precious\n"
    )
    assert render_into(out).returncode == 0
    after = {p.name for p in out.iterdir()}
    assert "03-podmonitor-llama-8b.yaml" not in after
    assert {"kustomization.yaml", "09-deployment-other.yaml"} <= after
    index = (out / ".llmdeploy-rendered").read_text().split()
    assert sorted(index) == sorted(
        after - {"kustomization.yaml", "09-deployment-other.yaml", ".llmdeploy-rendered"}
    )


def test_a_calibration_from_an_objects_status_scales_the_estimates(tmp_path: Path) -> None:
    plain = json.loads(run_plan(tmp_path, manifest(), "-o", "json").stdout)
    status = tmp_path / "status.yaml"
    status.write_text(
        yaml.safe_dump(
            {"status": {"calibration": {"ttftRatio": 1.5, "tpotRatio": 1.25, "measurements": 3}}}
        )
    )
    result = run_plan(tmp_path, manifest(), "-o", "json", "--calibration", str(status))
    assert result.returncode == 0, result.stderr
    calibrated = json.loads(result.stdout)
    assert (calibrated["ttftCalibration"], calibrated["tpotCalibration"]) == (1.5, 1.25)
    assert plain.get("ttftCalibration") is None
    if calibrated["gpu"] == plain["gpu"] and calibrated["quantization"] == plain["quantization"]:
        assert calibrated["estimatedTpotMs"] > plain["estimatedTpotMs"]
    table = run_plan(tmp_path, manifest(), "--calibration", str(status)).stdout
    assert "calibrated  x1.5 TTFT, x1.25 TPOT" in table

    status.write_text("calibration: {ttftRatio: fast}\n")
    refused = run_plan(tmp_path, manifest(), "--calibration", str(status))
    assert refused.returncode == 2 and "--calibration.ttftRatio" in refused.stderr
    status.write_text("{ttftRatio: 1, tpotRatio: 0}\n")  # would divide by zero
    refused = run_plan(tmp_path, manifest(), "--calibration", str(status))
    assert refused.returncode == 2 and "--calibration.tpotRatio" in refused.stderr


def test_a_calibration_file_is_parsed_strictly_and_within_the_operator_s_bounds(
    tmp_path: Path,
) -> None:
    status = tmp_path / "calibration.yaml"
    for text, field in (
        ("{ttftRatio: true, tpotRatio: 1}\n", "--calibration.ttftRatio"),  # not 1
        ('{ttftRatio: 1, tpotRatio: "2"}\n', "--calibration.tpotRatio"),  # not 2
        ("{ttftRatio: 1e300, tpotRatio: 1}\n", "ttftRatio 1e+300 is outside [0.5, 2]"),
    ):
        status.write_text(text)
        refused = run_plan(tmp_path, manifest(), "--calibration", str(status))
        assert refused.returncode == 2 and field in refused.stderr, (text, refused.stderr)
        assert "Traceback" not in refused.stderr
