"""`llmdeploy plan --diff OLD NEW`, run as a user runs it: plan files, an object's status,
stdin, bad input, and the exit codes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.test_cli import ROOT, assert_refused, run_cli

L4 = ROOT / "examples" / "llama-3.1-8b-l4.yaml"
H100 = ROOT / "examples" / "llama-3.1-70b-h100.yaml"


@pytest.fixture(scope="module")
def plans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The two examples' plans as `plan -o json` and `plan -o yaml` write them, and the first
    as an object whose status.plan the operator wrote, autoscaled to 6 replicas."""
    out = tmp_path_factory.mktemp("plans")
    old = run_cli("plan", "-f", str(L4), "-o", "json")
    new = run_cli("plan", "-f", str(H100), "-o", "yaml")
    assert old.returncode == new.returncode == 0, (old.stderr, new.stderr)
    (out / "old.json").write_text(old.stdout)
    (out / "new.yaml").write_text(new.stdout)
    obj = yaml.safe_load(L4.read_text())
    obj["metadata"]["namespace"] = "prod"
    plan = {k: v for k, v in json.loads(old.stdout).items() if v is not None}
    obj["status"] = {"replicas": 6, "plan": plan, "phase": "Ready", "costPerHour": "4.80"}
    (out / "object.yaml").write_text(yaml.safe_dump(obj))
    return {path.stem: path for path in out.iterdir()}


def diff(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    return run_cli("plan", "--diff", *args, stdin=stdin)


def as_json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def test_two_plan_files_side_by_side(plans: dict[str, Path]) -> None:
    result = diff(str(plans["old"]), str(plans["new"]))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"DIFF  old: {plans['old']} (a plan)"
    old = json.loads(plans["old"].read_text())
    gpu = next(line for line in lines if " GPU " in line)
    assert gpu.startswith("*") and old["gpu"] in gpu and "nvidia-h100-80gb" in gpu
    engine = next(line for line in lines if " engine " in line)
    assert not engine.startswith("*")
    # The 8B's fleet (its plan's cost), and one of the 70B's single H100 replica at 6.00.
    current = float(old["costPerHour"])
    assert f"{current:.2f} (current) + 6.00 (candidate) = {current + 6:.2f}" in result.stdout
    assert "estimate from the catalog prices" in result.stdout


def test_an_objects_status_plan_at_its_replicas_from_stdin(plans: dict[str, Path]) -> None:
    stdin = plans["object"].read_bytes()
    found = as_json(diff("-", str(plans["new"]), "-o", "json", stdin=stdin))
    plan = json.loads(plans["old"].read_text())
    six_replicas = round(6 * plan["costPerHour"] / plan["replicas"], 2)
    assert found["old"] == {
        "source": "stdin",
        "kind": "LLMDeployment",
        "object": "prod/llama-8b",
        "replicasFrom": "status.replicas",
        "replicas": 6,
        "costPerHour": six_replicas,
    }
    assert found["pilot"]["currentReplicas"] == 6 and found["pilot"]["candidateReplicas"] == 1
    assert found["pilot"]["overlapCostPerHour"] == pytest.approx(six_replicas + 6.0)
    assert "gpu" in found["changed"] and "engine" not in found["changed"]
    as_yaml = yaml.safe_load(diff("-", str(plans["new"]), "-o", "yaml", stdin=stdin).stdout)
    assert as_yaml == found


def test_a_plan_and_the_objects_status_of_it_differ_only_in_replicas(
    plans: dict[str, Path],
) -> None:
    found = as_json(diff(str(plans["old"]), str(plans["object"]), "-o", "json"))
    assert found["changed"] == ["replicas", "costPerHour"]
    assert found["pilot"]["candidateReplicas"] == 1  # 10% of 6, rounded up


def test_identical_plans_say_no_change(plans: dict[str, Path]) -> None:
    result = diff(str(plans["new"]), str(plans["new"]))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "no change: the two plans are the same"
    found = as_json(diff(str(plans["new"]), str(plans["new"]), "-o", "json"))
    assert found["changed"] == [] and found["pilot"] is None


def test_the_pilot_percent_sizes_the_candidate(plans: dict[str, Path]) -> None:
    found = as_json(
        diff(str(plans["new"]), str(plans["object"]), "--pilot-percent", "50", "-o", "json")
    )
    pilot = found["pilot"]
    assert (pilot["trafficPercent"], pilot["candidateReplicas"]) == (50, 3)
    old = json.loads(plans["old"].read_text())  # three of the 8B's one-GPU replicas
    assert pilot["candidateCostPerHour"] == pytest.approx(3 * old["costPerHour"] / old["replicas"])


def test_the_same_input_gives_the_same_bytes(plans: dict[str, Path]) -> None:
    for output in ("table", "json", "yaml"):
        args = (str(plans["object"]), str(plans["new"]), "-o", output)
        assert diff(*args).stdout == diff(*args).stdout


def test_an_infeasible_new_plan_exits_1_and_is_still_compared(
    plans: dict[str, Path], tmp_path: Path
) -> None:
    infeasible = tmp_path / "infeasible.yaml"
    infeasible.write_text(yaml.safe_dump({"feasible": False, "model": "m", "engine": "vllm"}))
    result = diff(str(plans["old"]), str(infeasible))
    assert result.returncode == 1, result.stderr
    assert "NO PILOT  the new plan is not feasible" in result.stdout


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("kind: Deployment\n", "BAD: kind: 'Deployment' is neither a plan nor an LLMDeployment"),
        ("kind: LLMDeployment\nmetadata: {name: x}\n", "BAD: status.plan: missing"),
        ("status: {plan: {feasible: true, model: m, engine: 7}}\n", "BAD: status.plan.engine"),
        ("feasible: true\nmodel: m\nengine: vllm\ngpuCount: two\n", "BAD: gpuCount"),
        ("spec: {}\n", "BAD: feasible: missing"),
        ("feasible: true\n---\nfeasible: false\n", "BAD: expected one document, found 2"),
        ("[", "BAD: malformed YAML"),
    ],
)
def test_bad_input_exits_2_naming_the_file_and_the_field(
    plans: dict[str, Path], tmp_path: Path, text: str, words: str
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    assert_refused(diff(str(plans["old"]), str(bad)), words.replace("BAD", str(bad)))


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--diff", "-", "-"), "--diff: stdin can be only one of OLD and NEW"),
        (("--diff", "OLD", "OLD", "--pilot-percent", "0"), "--pilot-percent: must be 1 to 100"),
        (("--diff", "OLD", "OLD", "--pilot-percent", "ten"), "--pilot-percent"),
        (("--diff", "OLD", "OLD", "-f", "x.yaml"), "-f: --diff compares two plans"),
        (("--diff", "OLD", "OLD", "--inventory", "n.yaml"), "--inventory: --diff compares"),
        (("--diff", "OLD"), "--diff: expected 2 arguments"),
        (("-f", "x.yaml", "--pilot-percent", "5"), "--pilot-percent goes with --diff"),
        ((), "give -f FILE (a manifest to plan) or --diff OLD NEW"),
        (("--diff", "OLD", "missing.json"), "missing.json: cannot read"),
    ],
)
def test_bad_options_exit_2(plans: dict[str, Path], args: tuple[str, ...], words: str) -> None:
    argv = [str(plans["old"]) if arg == "OLD" else arg for arg in args]
    result = run_cli("plan", *argv)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert words in result.stderr and "Traceback" not in result.stderr
