"""`llmdeploy plan/render --inventory/--provisionable`: the operator's inputs offline, read by
the operator's own parser, and a plan sized for the image that will run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmdeploy import cli
from llmdeploy.catalog import load_catalog, load_image_lock
from llmdeploy.sizing import plan_deployment
from llmdeploy.sizing.inventory import inventory_from_nodes, node_documents
from tests.unit.conftest import make_spec

ROOT = Path(__file__).resolve().parents[2]
NODES = ROOT / "hack" / "testenv" / "nodes.yaml"
L4, GFD = "nvidia-l4", "nvidia.com/gpu.product"


def _testenv_nodes() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(NODES.read_text()) if d]


def node(name: str, product: str, gpus: int, driver: tuple[int, int] | None) -> dict[str, Any]:
    labels = {GFD: product}
    if driver:
        labels["nvidia.com/cuda.driver.major"] = str(driver[0])
        labels["nvidia.com/cuda.driver.minor"] = str(driver[1])
    resource = "amd.com/gpu" if product.startswith("AMD") else "nvidia.com/gpu"
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "status": {"allocatable": {"cpu": "8", resource: str(gpus)}},
    }


def write_nodes(path: Path, nodes: list[dict[str, Any]]) -> Path:
    # As `kubectl get nodes -o yaml` prints them.
    path.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": nodes}))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_node_list_and_node_documents_give_one_inventory(tmp_path: Path) -> None:
    nodes = _testenv_nodes()
    listed = yaml.safe_load(write_nodes(tmp_path / "n.yaml", nodes).read_text())
    from_list = inventory_from_nodes(node_documents([listed]))
    from_documents = inventory_from_nodes(node_documents(nodes))
    assert from_list == from_documents
    names = [n.name for n in from_list.nodes]
    assert names == sorted(names) and "kwok-cpu-0" not in names  # no GPU, no product label
    l4 = {n.name: n for n in from_list.nodes if n.labels.get(GFD) == "NVIDIA-L4"}
    assert l4["kwok-l4-0"].driver == (570, 124) and l4["kwok-l4-2"].driver == (550, 144)
    assert l4["kwok-l4-0"].allocatable_gpus == 1


@pytest.mark.parametrize(
    ("document", "words"),
    [
        ({"kind": "List", "items": [{"kind": "Pod", "metadata": {"name": "p"}}]}, "found Pod"),
        ({"kind": "List", "items": [{"kind": "Node", "metadata": {}}]}, "metadata.name"),
        ({"kind": "List", "items": "x"}, "items must be a list"),
        (
            node("bad", "NVIDIA-L4", 1, None)
            | {"status": {"allocatable": {"nvidia.com/gpu": "x"}}},
            "node bad: status.allocatable[nvidia.com/gpu] must be a whole number",
        ),
    ],
)
def test_bad_inventory_exits_2_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], document: Any, words: str
) -> None:
    path = tmp_path / "nodes.yaml"
    path.write_text(yaml.safe_dump(document))
    example = str(ROOT / "examples" / "llama-3.1-8b-l4.yaml")
    code, _, err = run(capsys, "plan", "-f", example, "--inventory", str(path))
    assert code == 2 and f"--inventory {path}: " in err and words in err


def test_without_an_inventory_the_output_says_the_catalog_was_unconstrained(
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = str(ROOT / "examples" / "qwen3-30b-a3b-moe.yaml")
    code, out, _ = run(capsys, "plan", "-f", example)
    assert code == 0 and out.startswith("SCOPE planned for an unconstrained catalog")
    code, out, err = run(capsys, "plan", "-f", example, "-o", "json")
    assert json.loads(out)["gpu"] == "amd-mi300x-192gb" and "unconstrained catalog" in err
    code, out, err = run(capsys, "render", "-f", example)
    assert code == 0 and "unconstrained catalog" in err and "rocm" in out


def test_the_cluster_narrows_the_gpus_and_its_drivers_pick_the_release(
    capsys: pytest.CaptureFixture[str],
) -> None:
    qwen = str(ROOT / "examples" / "qwen3-30b-a3b-moe.yaml")
    code, out, err = run(capsys, "plan", "-f", qwen, "-o", "json", "--inventory", str(NODES))
    assert code == 0 and json.loads(out)["gpu"] == "nvidia-h100-80gb"
    assert "planned for the cluster" in err and "provisionable: none" in err
    # The L4 nodes include 550-driver ones: the newest vLLM all of them run is 0.8.5.
    l4 = str(ROOT / "examples" / "llama-3.1-8b-l4.yaml")
    code, out, _ = run(capsys, "plan", "-f", l4, "-o", "json", "--inventory", str(NODES))
    assert code == 0 and json.loads(out)["engineVersion"] == "0.8.5"
    code, out, _ = run(capsys, "render", "-f", l4, "--inventory", str(NODES))
    images = {
        c["image"]
        for d in yaml.safe_load_all(out)
        if d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert code == 0 and len(images) == 1 and ":v0.8.5@sha256:" in images.pop()
    code, out, _ = run(capsys, "plan", "-f", l4, "-o", "json")
    assert json.loads(out)["engineVersion"] == "0.11.0"  # the lock's default


def test_provisionable_adds_skus_as_the_operator_setting_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory = write_nodes(tmp_path / "nodes.yaml", [node("l4-0", "NVIDIA-L4", 1, (570, 124))])
    qwen = str(ROOT / "examples" / "qwen3-30b-a3b-moe.yaml")
    code, out, _ = run(capsys, "plan", "-f", qwen, "-o", "json", "--inventory", str(inventory))
    assert code == 1 and not json.loads(out)["feasible"]  # 30B bf16 does not fit one L4
    code, out, err = run(
        capsys, "plan", "-f", qwen, "-o", "json", "--inventory", str(inventory),
        "--provisionable", "nvidia-h100-80gb",
    )  # fmt: skip
    assert code == 0 and json.loads(out)["gpu"] == "nvidia-h100-80gb"
    assert "provisionable: nvidia-h100-80gb" in err
    code, _, err = run(capsys, "plan", "-f", qwen, "--provisionable", "nvidia-h100-8gb")
    assert code == 2 and "--provisionable: unknown GPU 'nvidia-h100-8gb'" in err


def test_the_plan_is_sized_for_the_release_the_nodes_drivers_run() -> None:
    """Gemma 2 in float16: vLLM refuses it since 0.10.0 and 0.8.5 serves it. The release is
    the one the nodes' driver picks, not the lock's default."""
    catalog, lock = load_catalog(), load_image_lock()
    spec = make_spec("google/gemma-2-9b-it", quantization="fp16", placement={"gpu": L4})
    old = plan_deployment(spec, catalog, lock, {L4: [(550, 144)]})
    assert old.feasible and old.engine_version == "0.8.5"
    new = plan_deployment(spec, catalog, lock, {L4: [(590, 48)]})
    newest = lock.choose("vllm", "cuda", None, [(590, 48)])
    assert newest is not None and newest.engine_version != "0.8.5"
    why = " ".join(new.reasons)
    assert not new.feasible and "refuses float16" in why
    assert f"(google/gemma-2-9b-it is gemma2, vLLM {newest.engine_version} on {L4})" in why
    too_old = plan_deployment(spec, catalog, lock, {L4: [(535, 104)]})
    assert not too_old.feasible
    why = " ".join(too_old.reasons)
    assert "nvidia-l4 nodes' NVIDIA driver 535.104 is older than every pinned vLLM" in why


def test_from_cluster_without_a_kubeconfig_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    example = str(ROOT / "examples" / "llama-3.1-8b-l4.yaml")
    code, _, err = run(capsys, "plan", "-f", example, "--from-cluster")
    assert code == 2 and err.startswith("error: --from-cluster: no usable kubeconfig")
    with pytest.raises(SystemExit) as exited:  # one source of nodes
        cli.main(["plan", "-f", example, "--from-cluster", "--inventory", str(NODES)])
    assert exited.value.code == 2
