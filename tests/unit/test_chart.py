"""charts/llmdeploy renders what manifests/ renders: the same objects, field for field, beyond
labels and annotations, for the default install, the namespaced one and the monitoring
component. Rendered with the real helm (hack/helm.sh) and `kubectl kustomize`."""

from __future__ import annotations

import difflib
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "llmdeploy"
MANIFESTS = REPO / "manifests"
NAMESPACE = "llmdeploy-system"
KEEP = {"helm.sh/resource-policy": "keep"}
Key = tuple[str, str, str, str]


@pytest.fixture(scope="module")
def helm() -> str:
    """The cached helm binary (`make helm`; built here on first use)."""
    built = subprocess.run(
        [str(REPO / "hack" / "helm.sh")], capture_output=True, text=True, check=True
    )
    return built.stdout.strip()


def documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def template(helm: str, *values: str) -> subprocess.CompletedProcess[str]:
    sets = [arg for value in values for arg in ("--set", value)]
    command = [helm, "template", "llmdeploy", str(CHART), "--namespace", NAMESPACE, *sets]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def chart(helm: str, *values: str) -> list[dict[str, Any]]:
    rendered = template(helm, *values)
    assert rendered.returncode == 0, rendered.stderr
    return documents(rendered.stdout)


def kustomize(directory: Path) -> list[dict[str, Any]]:
    built = subprocess.run(
        ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, check=False
    )
    assert built.returncode == 0, built.stderr
    return documents(built.stdout)


def overlay(
    root: Path, components: list[str], extra: list[dict[str, Any]], patches: list[str]
) -> list[dict[str, Any]]:
    """A user's overlay: manifests/base, `components` of manifests/, `extra` objects and
    `patches`, built by kustomize (which takes directories by relative path)."""

    def up(path: Path) -> str:
        return os.path.relpath(path, root)

    for index, document in enumerate(extra):
        (root / f"extra-{index}.yaml").write_text(yaml.safe_dump(document))
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [up(MANIFESTS / "base"), *(f"extra-{i}.yaml" for i in range(len(extra)))],
        "components": [up(MANIFESTS / component) for component in components],
        "patches": [{"patch": patch} for patch in patches],
    }
    (root / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return kustomize(root)


def comparable(objects: list[dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    """Objects by identity, without the labels and annotations each install adds its own way
    (the pod template's labels, which the selector matches, are compared). The Namespace is
    left out: Helm cannot own the namespace its release is stored in."""
    out: dict[Key, dict[str, Any]] = {}
    for obj in objects:
        if obj["kind"] == "Namespace":
            continue
        obj = yaml.safe_load(yaml.safe_dump(obj))
        obj["metadata"].pop("labels", None)
        obj["metadata"].pop("annotations", None)
        obj.get("spec", {}).get("template", {}).get("metadata", {}).pop("annotations", None)
        meta = obj["metadata"]
        key = (obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])
        assert key not in out, f"{key} rendered twice"
        out[key] = obj
    return out


def assert_same(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> None:
    chart_objects, kustomize_objects = comparable(ours), comparable(theirs)
    assert sorted(chart_objects) == sorted(kustomize_objects)
    for key, obj in kustomize_objects.items():
        if chart_objects[key] != obj:
            diff = difflib.unified_diff(
                yaml.safe_dump(obj).splitlines(),
                yaml.safe_dump(chart_objects[key]).splitlines(),
                "kustomize",
                "helm",
                lineterm="",
            )
            pytest.fail(f"{key} differs:\n" + "\n".join(diff))


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def test_the_default_chart_is_manifests_and_the_kopf_peering_crds(helm: str) -> None:
    expected = kustomize(MANIFESTS) + kustomize(MANIFESTS / "kopf-peering-crds")
    assert_same(chart(helm), expected)


def test_namespaced_is_the_namespaced_component_with_a_rolebinding_per_namespace(
    helm: str, tmp_path: Path
) -> None:
    ours = chart(
        helm,
        "namespaced.enabled=true",
        "namespaced.namespaces={llm-serving,team-b}",
        "kopfPeeringCRDs.install=false",
    )
    # What manifests/namespaced tells a user to do for a second namespace.
    binding = yaml.safe_load((MANIFESTS / "namespaced" / "rolebinding.yaml").read_text())
    second = {**binding, "metadata": {**binding["metadata"], "namespace": "team-b"}}
    settings = yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "llmdeploy-settings", "namespace": NAMESPACE},
            "data": {"LLMDEPLOY_NAMESPACES": "llm-serving,team-b"},
        }
    )
    assert_same(ours, overlay(tmp_path, ["namespaced"], [second], [settings]))
    bindings = of_kind(ours, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["llm-serving", "team-b"]
    assert [b["metadata"]["name"] for b in of_kind(ours, "ClusterRoleBinding")] == [
        "llmdeploy-cluster-read"
    ]


def test_monitoring_is_the_monitoring_component(helm: str, tmp_path: Path) -> None:
    ours = chart(helm, "monitoring.enabled=true", "kopfPeeringCRDs.install=false")
    assert_same(ours, overlay(tmp_path, ["monitoring"], [], []))
    assert len(of_kind(ours, "PodMonitor")) == 1


def test_rules_and_dashboard_are_their_components(helm: str, tmp_path: Path) -> None:
    ours = chart(
        helm,
        "monitoring.rules.enabled=true",
        "monitoring.dashboard.enabled=true",
        "kopfPeeringCRDs.install=false",
    )
    components = ["monitoring/rules", "monitoring/dashboard"]
    assert_same(ours, overlay(tmp_path, components, [], []))
    (rule,) = of_kind(ours, "PrometheusRule")
    assert [g["name"] for g in rule["spec"]["groups"]] == ["llmdeploy.rules", "llmdeploy.alerts"]
    (dashboard,) = [o for o in of_kind(ours, "ConfigMap") if "llmdeploy.json" in o["data"]]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert not of_kind(chart(helm, "kopfPeeringCRDs.install=false"), "PrometheusRule")


def test_values_reach_the_objects(helm: str) -> None:
    digest = "sha256:" + "ab" * 32
    ours = chart(
        helm,
        "image.repository=registry.invalid:5000/llmdeploy",
        f"image.digest={digest}",
        "replicas=3",
        "provisionableGPUs={nvidia-l4,nvidia-h100-80gb}",
        "settings.LLMDEPLOY_PEERING_LIFETIME_SECONDS=90",
        "resources.limits.memory=1Gi",
    )
    (deployment,) = of_kind(ours, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"registry.invalid:5000/llmdeploy@{digest}"
    assert deployment["spec"]["replicas"] == 3
    assert container["resources"]["limits"]["memory"] == "1Gi"
    (settings,) = of_kind(ours, "ConfigMap")
    assert settings["data"]["LLMDEPLOY_PROVISIONABLE_GPUS"] == "nvidia-l4,nvidia-h100-80gb"
    assert settings["data"]["LLMDEPLOY_PEERING_LIFETIME_SECONDS"] == "90"
    assert settings["data"]["LLMDEPLOY_JSON_LOGS"] == "true"


def test_a_settings_change_rolls_the_operator(helm: str) -> None:
    def checksum(*values: str) -> str:
        (deployment,) = of_kind(chart(helm, *values), "Deployment")
        return str(deployment["spec"]["template"]["metadata"]["annotations"]["checksum/settings"])

    assert checksum() != checksum("settings.LLMDEPLOY_JSON_LOGS=false")


def test_every_crd_is_kept_on_uninstall_and_kopfs_can_be_left_out(helm: str) -> None:
    crds = of_kind(chart(helm), "CustomResourceDefinition")
    assert len(crds) == 3
    assert all(crd["metadata"]["annotations"].items() >= KEEP.items() for crd in crds)
    names = {
        c["metadata"]["name"]
        for c in of_kind(chart(helm, "kopfPeeringCRDs.install=false"), "CustomResourceDefinition")
    }
    assert names == {"llmdeployments.llmdeploy.io"}


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("image.digest=latest", "at '/image/digest'"),
        ("image.repository=llmdeploy:0.1.0", "at '/image/repository'"),
        ("namespaced.enabled=true", "at '/namespaced/namespaces': minItems"),
        ("settings.LLMDEPLOY_NAMESPACES=a", "settings.LLMDEPLOY_NAMESPACES: set by the value"),
        ("settings.NOT_OURS=a", "'NOT_OURS' does not match pattern '^LLMDEPLOY_"),
        ("replicas=0", "at '/replicas': minimum"),
        ("provisionableGPUs={Bad SKU}", "at '/provisionableGPUs/0'"),
    ],
)
def test_bad_values_are_refused_with_a_reason(helm: str, value: str, reason: str) -> None:
    rendered = template(helm, value)
    assert rendered.returncode != 0
    assert reason in rendered.stderr, rendered.stderr
