"""The CRD is generated from the models, committed, and must not go stale."""

from __future__ import annotations

from pathlib import Path

import yaml

from llmdeploy.api.crd import build_crd, crd_yaml

ROOT = Path(__file__).resolve().parents[2]


def test_committed_crd_is_current() -> None:
    committed = (ROOT / "crds" / "llmdeployments.yaml").read_text()
    assert committed == crd_yaml(), "crds/ is stale: run `make crds`"


def _walk(node: object, path: str = "") -> list[str]:
    problems = []
    if isinstance(node, dict):
        for bad in ("$ref", "anyOf", "const", "title", "$defs"):
            if bad in node and not (bad == "anyOf" and node.get("x-kubernetes-int-or-string")):
                problems.append(f"{path}: {bad}")
        if node.get("type") == "null":
            problems.append(f"{path}: null type")
        for key, value in node.items():
            problems.extend(_walk(value, f"{path}.{key}"))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            problems.extend(_walk(value, f"{path}[{index}]"))
    return problems


def test_schema_is_structural_and_documented() -> None:
    version = build_crd()["spec"]["versions"][0]
    schema = version["schema"]["openAPIV3Schema"]
    assert _walk(schema) == []
    spec = schema["properties"]["spec"]

    def undocumented(node: dict[str, object], path: str) -> list[str]:
        missing = []
        for name, prop in (node.get("properties") or {}).items():  # type: ignore[attr-defined]
            if "description" not in prop:
                missing.append(f"{path}.{name}")
            missing.extend(undocumented(prop, f"{path}.{name}"))
        return missing

    assert undocumented(spec, "spec") == []


def test_subresources_printer_columns_and_names() -> None:
    crd = build_crd()
    version = crd["spec"]["versions"][0]
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    assert "status" in version["subresources"]
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns[:7] == ["GPU", "GPUs", "Quant", "TP", "Replicas", "Ready", "$/h"]
    assert crd["spec"]["names"]["shortNames"] == ["llmdep"]
    rules = yaml.safe_dump(version["schema"])
    assert "placement.gpu must be one of placement.allowedGpus" in rules
