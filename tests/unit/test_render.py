"""Rendering: schema validity, plan-derived engine arguments, pinning, safety, determinism."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from llmdeploy.api.types import LLMDeployment
from llmdeploy.autoscale.policy import cold_start_estimate
from llmdeploy.catalog import Catalog, load_image_lock
from llmdeploy.render import SPEC_HASH_ANNOTATION, HostAccess, PrometheusTarget, render_manifests
from llmdeploy.sizing import Plan, SpecError, plan_deployment
from tests.unit.conftest import engine_options

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
K8S_VERSION = "1.35.0"
NOT_IN_CORE_SCHEMAS = {"LeaderWorkerSet", "PodMonitor", "InferencePool", "HTTPRoute"}


def resource_from(body: dict[str, Any]) -> LLMDeployment:
    return LLMDeployment.model_validate(body)


def example(name: str) -> dict[str, Any]:
    document = yaml.safe_load((ROOT / "examples" / f"{name}.yaml").read_text())
    assert isinstance(document, dict)
    return document


# The operator's Prometheus endpoints as KEDA sees them: "default" open, "team-a" behind
# credentials KEDA holds in a ClusterTriggerAuthentication.
PROMETHEUS = {
    "default": PrometheusTarget(url="http://prometheus.monitoring:9090"),
    "team-a": PrometheusTarget(
        url="https://prom-a.team-a:9090", keda_authentication="prom-a", keda_auth_modes="bearer"
    ),
}


def render(body: dict[str, Any], catalog: Catalog) -> tuple[list[dict[str, Any]], Plan]:
    resource = resource_from(body)
    lock = load_image_lock()
    plan = plan_deployment(resource.spec, catalog, lock)
    assert plan.feasible, plan.reasons
    return render_manifests(resource, plan, catalog, lock, prometheus=PROMETHEUS), plan


def engine_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    for obj in objects:
        if obj["kind"] == "Deployment":
            pod = obj["spec"]["template"]["spec"]
        elif obj["kind"] == "LeaderWorkerSet":
            pod = obj["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]
        else:
            continue
        return next(c for c in pod["containers"] if c["name"] == "engine")  # type: ignore[no-any-return]
    raise AssertionError("no workload rendered")


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def pod_templates(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj["kind"] == "LeaderWorkerSet":
        template = obj["spec"]["leaderWorkerTemplate"]
        return [template["leaderTemplate"], template["workerTemplate"]]
    if obj["kind"] == "Deployment":
        return [obj["spec"]["template"]]
    return []


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_rendered_objects_validate_against_kubernetes_schemas(path: Path, catalog: Catalog) -> None:
    objects, _ = render(yaml.safe_load(path.read_text()), catalog)
    for obj in objects:
        if obj["kind"] in NOT_IN_CORE_SCHEMAS:
            # CRD kinds: their pod templates are core PodTemplateSpecs and are checked as such
            # here; the whole objects against the real CRDs in tests/e2e/test_schemas.py.
            for template in pod_templates(obj):
                wrapped = {
                    "apiVersion": "v1",
                    "kind": "PodTemplate",
                    "metadata": {"name": "t"},
                    "template": template,
                }
                kubernetes_validate.validate(wrapped, K8S_VERSION, strict=True)
            continue
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_a_broken_object_fails_schema_validation(catalog: Catalog) -> None:
    objects, _ = render(example("llama-3.1-8b-l4"), catalog)
    broken = copy.deepcopy(objects[0])
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


@pytest.mark.parametrize("name", ["llama-3.1-8b-l4", "llama-3.1-70b-h100", "qwen3-30b-a3b-moe"])
def test_vllm_args_follow_the_plan(name: str, catalog: Catalog) -> None:
    objects, plan = render(example(name), catalog)
    args = engine_container(objects)["args"]
    assert flag(args, "--tensor-parallel-size") == str(plan.tensor_parallel)
    assert flag(args, "--pipeline-parallel-size") == str(plan.pipeline_parallel)
    assert flag(args, "--max-model-len") == str(plan.max_context_length)
    assert float(flag(args, "--gpu-memory-utilization")) == plan.gpu_memory_utilization
    assert flag(args, "--max-num-seqs") == str(plan.max_num_seqs)
    assert flag(args, "--kv-cache-dtype") == plan.kv_cache_dtype
    if plan.quantization == "fp8":
        assert flag(args, "--quantization") == "fp8"
    else:
        assert "--quantization" not in args


def test_trtllm_args_follow_the_plan(catalog: Catalog) -> None:
    objects, plan = render(example("tensorrt-llm-llama-8b"), catalog)
    container = engine_container(objects)
    args = container["args"]
    assert container["command"] == ["trtllm-serve"]
    assert flag(args, "--tp_size") == str(plan.tensor_parallel)
    assert flag(args, "--pp_size") == str(plan.pipeline_parallel)
    assert flag(args, "--max_seq_len") == str(plan.max_context_length)
    assert flag(args, "--host") == "0.0.0.0"
    assert flag(args, "--max_num_tokens") == str(plan.max_num_batched_tokens)
    # The fraction is set in the options file only: its kv_cache_config replaces the flag's.
    assert "--kv_cache_free_gpu_memory_fraction" not in args
    options = engine_options(objects)
    assert options["kv_cache_config"] == {
        "dtype": "fp8",
        "free_gpu_memory_fraction": plan.gpu_memory_utilization,
    }
    assert options["dtype"] == "bfloat16"


def test_multi_node_replica_is_a_leaderworkerset_with_ray(catalog: Catalog) -> None:
    objects, plan = render(example("llama-3.1-405b-multinode"), catalog)
    kinds = [o["kind"] for o in objects]
    assert "LeaderWorkerSet" in kinds and "Deployment" not in kinds
    lws = next(o for o in objects if o["kind"] == "LeaderWorkerSet")
    assert lws["spec"]["leaderWorkerTemplate"]["size"] == plan.pipeline_parallel == 2
    leader = engine_container(objects)
    assert flag(leader["args"], "--distributed-executor-backend") == "ray"
    assert leader["resources"]["limits"]["nvidia.com/gpu"] == str(plan.tensor_parallel)
    service = next(o for o in objects if o["kind"] == "Service")
    assert service["spec"]["selector"]["leaderworkerset.sigs.k8s.io/worker-index"] == "0"


def test_every_image_is_pinned_by_a_recorded_digest(catalog: Catalog) -> None:
    recorded = {entry.image for entry in load_image_lock().images}
    for path in EXAMPLES:
        objects, _ = render(yaml.safe_load(path.read_text()), catalog)
        for obj in objects:
            for template in pod_templates(obj):
                pod = template["spec"]
                for container in pod["containers"] + pod.get("initContainers", []):
                    assert "@sha256:" in container["image"]
                    assert container["image"] in recorded


def test_newest_image_the_nodes_driver_runs(catalog: Catalog) -> None:
    from llmdeploy.render.images import select_image

    spec = resource_from(example("llama-3.1-8b-l4")).spec
    lock = load_image_lock()
    old_driver, _ = select_image(spec, lock, [(550, 90)])
    new_driver, _ = select_image(spec, lock, [(580, 95), (590, 48)])
    assert ":v0.8.5@" in old_driver  # CUDA 12.4 is the newest a 550 driver runs
    assert ":v0.24.0@" in new_driver and "cu129" not in new_driver
    _, entry = select_image(spec, lock)
    assert entry is not None and entry.default


def test_unpinned_override_is_rejected_unless_allowed(catalog: Catalog) -> None:
    body = example("llama-3.1-8b-l4")
    body["spec"]["engine"] = {"image": "example.org/vllm:latest"}
    with pytest.raises(SpecError) as err:
        render(body, catalog)
    assert err.value.field == "spec.engine.image"
    body["spec"]["engine"]["allowUnpinnedImage"] = True
    objects, _ = render(body, catalog)
    assert engine_container(objects)["image"] == "example.org/vllm:latest"


def test_secret_is_referenced_never_copied(catalog: Catalog) -> None:
    objects, _ = render(example("llama-3.1-8b-l4"), catalog)
    text = yaml.safe_dump(objects)
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    init = pod["initContainers"][0]
    # A file of the Secret's volume, read by huggingface_hub; no environment variable holds it.
    assert {"name": "HF_TOKEN_PATH", "value": "/var/run/llmdeploy/hf-token/token"} in init["env"]
    assert all("secretKeyRef" not in str(e) for e in init["env"])
    volume = next(v for v in pod["volumes"] if v["name"] == "hf-token")
    assert volume["secret"] == {
        "secretName": "hf-token",
        "items": [{"key": "token", "path": "token"}],
        "defaultMode": 0o440,
    }
    mount = next(m for m in init["volumeMounts"] if m["name"] == "hf-token")
    assert mount == {
        "name": "hf-token",
        "mountPath": "/var/run/llmdeploy/hf-token",
        "readOnly": True,
    }
    assert "kind: Secret" not in text
    engine = engine_container(objects)
    assert all("HF_TOKEN" not in str(e) for e in engine["env"])
    assert all(m["name"] != "hf-token" for m in engine["volumeMounts"])


def _pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def test_root_filesystem_is_read_only_with_writable_volumes(catalog: Catalog) -> None:
    objects, _ = render(example("llama-3.1-8b-l4"), catalog)
    pod = _pod(objects)
    for container in pod["containers"] + pod["initContainers"]:
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["workingDir"] == "/home/llmdeploy"
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/tmp", "/home/llmdeploy", "/models"} <= mounts
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["tmp"]["emptyDir"] == {"sizeLimit": "10Gi"}
    assert volumes["home"]["emptyDir"] == {"sizeLimit": "10Gi"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_engine_container_has_a_high_uid_a_user_name_and_bounded_disk(
    path: Path, catalog: Catalog
) -> None:
    objects, _ = render(yaml.safe_load(path.read_text()), catalog)
    pods = [t["spec"] for obj in objects for t in pod_templates(obj)]
    assert pods
    for pod in pods:
        # Above the UIDs node images give their accounts (1000 is often the admin user).
        assert pod["securityContext"]["runAsUser"] >= 10000
        assert pod["securityContext"]["runAsGroup"] >= 10000
        for container in pod["containers"] + pod.get("initContainers", []):
            # The image has no passwd entry for the UID: getpass.getuser() reads USER.
            assert {"name": "USER", "value": "llmdeploy"} in container["env"]
            resources = container["resources"]
            assert "ephemeral-storage" in resources["requests"], container["name"]
            assert "ephemeral-storage" in resources["limits"], container["name"]


def test_model_cache_and_ephemeral_storage_follow_the_weights(catalog: Catalog) -> None:
    body = example("llama-3.1-8b-l4")
    body["spec"]["quantization"] = "bf16"  # stored as loaded
    objects, plan = render(body, catalog)
    pod = _pod(objects)
    checkpoint = (plan.weights_gib_per_gpu or 0) * (plan.gpu_count or 1)
    cache = next(v for v in pod["volumes"] if v["name"] == "model-cache")
    limit = int(cache["emptyDir"]["sizeLimit"].removesuffix("Gi"))
    assert 2 * checkpoint < limit < 2 * checkpoint + 10  # room for a second copy, no more
    resources = engine_container(objects)["resources"]
    requested = int(resources["requests"]["ephemeral-storage"].removesuffix("Gi"))
    assert checkpoint < requested < checkpoint + 4
    # The pod's bound is its containers' limits: every emptyDir on disk fits under it.
    assert resources["limits"]["ephemeral-storage"] == f"{limit + 10 + 10 + 2}Gi"


def test_a_bf16_checkpoint_quantized_at_load_is_sized_as_stored(catalog: Catalog) -> None:
    body = example("llama-3.1-8b-l4")
    body["spec"]["quantization"] = "fp8"
    objects, plan = render(body, catalog)
    assert plan.quantization == "fp8" and plan.checkpoint == body["spec"]["model"]["name"]
    stored = 2 * (plan.weights_gib_per_gpu or 0) * (plan.gpu_count or 1)  # bf16 on disk
    requested = engine_container(objects)["resources"]["requests"]["ephemeral-storage"]
    assert int(requested.removesuffix("Gi")) >= stored


def test_a_volume_cache_is_not_counted_as_ephemeral(catalog: Catalog) -> None:
    body = example("llama-3.1-8b-l4")
    body["spec"]["model"]["cache"] = {"type": "pvc", "claimName": "models"}
    objects, _ = render(body, catalog)
    resources = engine_container(objects)["resources"]
    assert resources["requests"]["ephemeral-storage"] == "2Gi"
    assert resources["limits"]["ephemeral-storage"] == "22Gi"


def test_readiness_and_liveness_probes_differ(catalog: Catalog) -> None:
    objects, _ = render(example("llama-3.1-8b-l4"), catalog)
    engine = engine_container(objects)
    readiness, liveness = engine["readinessProbe"], engine["livenessProbe"]
    assert readiness["httpGet"]["path"] == "/health" and readiness["timeoutSeconds"] >= 5
    assert liveness["timeoutSeconds"] > readiness["timeoutSeconds"]
    tolerated = liveness["periodSeconds"] * liveness["failureThreshold"]
    assert tolerated > readiness["periodSeconds"] * readiness["failureThreshold"]
    assert engine["startupProbe"]["timeoutSeconds"] >= 5


def test_pods_are_hardened(catalog: Catalog) -> None:
    objects, _ = render(example("llama-3.1-70b-h100"), catalog)
    pod = next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for container in pod["containers"] + pod["initContainers"]:
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    affinity = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    expression = affinity["nodeSelectorTerms"][0]["matchExpressions"][0]
    assert expression["key"] == "nvidia.com/gpu.product"
    assert "NVIDIA-H100-80GB-HBM3" in expression["values"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]


INJECTIONS = [
    "evil\nkind: Secret",
    "a: b",
    "{{ v.image }}",
    "x\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: stolen}",
    "'\"; rm -rf / #",
    "... \n--- !!python/object:os.system",
    "del \x7f, C1 \x85 \x9f, BOM \ufeff, noncharacter \ufffe",
]


@pytest.mark.parametrize("payload", INJECTIONS)
def test_user_strings_cannot_inject_fields_or_objects(payload: str, catalog: Catalog) -> None:
    body = example("llama-3.1-8b-l4")
    body["spec"]["model"]["servedName"] = payload
    body["spec"]["engine"] = {
        "extraArgs": [payload, f"--enable-lora={payload}"],
        "image": payload,
        "allowUnpinnedImage": True,
    }
    body["spec"]["placement"]["nodeSelector"] = {payload[:316]: payload[:63]}
    body["spec"]["placement"]["tolerations"] = [{"key": payload[:316], "value": payload[:63]}]
    objects, _ = render(body, catalog)
    clean_body = example("llama-3.1-8b-l4")
    clean_body["spec"]["placement"]["tolerations"] = [{"key": "k", "value": "v"}]
    clean_body["spec"]["engine"] = {"image": "vllm", "allowUnpinnedImage": True}
    clean, _ = render(clean_body, catalog)
    assert [o["kind"] for o in objects] == [o["kind"] for o in clean]
    args = engine_container(objects)["args"]
    assert flag(args, "--served-model-name") == payload
    assert args[-2:] == [payload, f"--enable-lora={payload}"]
    assert engine_container(objects)["image"] == payload
    # Same structure: only values differ, no key was added anywhere.
    assert _keys(objects) == _keys(clean)


def _keys(node: Any, prefix: str = "") -> set[str]:
    if isinstance(node, dict):
        out = set()
        for key, value in node.items():
            if key in ("nodeSelector",):
                continue  # its keys are user data by design
            out |= {f"{prefix}/{key}"} | _keys(value, f"{prefix}/{key}")
        return out
    if isinstance(node, list):
        return set().union(*(_keys(v, prefix + "[]") for v in node)) if node else set()
    return set()


def test_secret_reference_must_be_a_secret_name() -> None:
    from pydantic import ValidationError

    from llmdeploy.api.types import format_validation_error

    body = example("llama-3.1-8b-l4")
    body["spec"]["model"]["tokenSecretRef"] = {"name": "x\nkind: Secret", "key": "token"}
    with pytest.raises(ValidationError) as err:
        resource_from(body)
    assert "spec.model.tokenSecretRef.name" in format_validation_error(err.value)


def test_extra_args_cannot_override_planned_flags(catalog: Catalog) -> None:
    body = example("llama-3.1-8b-l4")
    body["spec"]["engine"] = {"extraArgs": ["--max_model_len=999999"]}
    with pytest.raises(SpecError) as err:
        render(body, catalog)
    assert err.value.field == "spec.engine.extraArgs" and "--max-model-len" in err.value.message
    body["spec"]["engine"]["allowArgOverrides"] = True
    objects, _ = render(body, catalog)
    args = engine_container(objects)["args"]
    assert "--max-model-len" not in args and "--max_model_len=999999" in args


@pytest.mark.parametrize(
    "extra", [["-tp", "8"], ["-tp=8"], ["-pp", "2"], ["-q", "fp8"], ["--tensor_parallel_size=2"]]
)
def test_short_and_underscore_flags_clash_too(extra: list[str], catalog: Catalog) -> None:
    body = example("llama-3.1-8b-l4")
    body["spec"]["quantization"] = "fp8"
    body["spec"]["placement"] = {"gpu": "nvidia-l4"}
    body["spec"]["engine"] = {"extraArgs": extra}
    with pytest.raises(SpecError, match="is set by the plan") as err:
        render(body, catalog)
    assert err.value.field == "spec.engine.extraArgs"


def test_a_digest_with_a_trailing_newline_is_no_pin(catalog: Catalog) -> None:
    body = example("llama-3.1-8b-l4")
    body["spec"]["engine"] = {"image": "vllm/vllm-openai@sha256:" + "0" * 64 + "\n"}
    with pytest.raises(SpecError, match="pinned by digest"):
        render(body, catalog)


def test_render_checks_the_whole_name(catalog: Catalog) -> None:
    resource = resource_from(example("llama-3.1-8b-l4"))
    resource = resource.model_copy(
        update={"metadata": resource.metadata.model_copy(update={"name": "t1\n"})}
    )
    plan = plan_deployment(resource.spec, catalog)
    with pytest.raises(SpecError, match="DNS label"):
        render_manifests(resource, plan, catalog, load_image_lock())


def _with_host_path(path: str) -> dict[str, Any]:
    body = example("llama-3.1-8b-l4")
    body["spec"]["model"]["cache"] = {"type": "hostPath", "path": path}
    return body


def test_host_path_is_refused_by_default(catalog: Catalog) -> None:
    with pytest.raises(SpecError, match="hostPath is off") as err:
        render(_with_host_path("/"), catalog)
    assert err.value.field == "spec.model.cache.path"


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/var/cache/llm", True),
        ("/var/cache/llm/models", True),
        ("/var/cache/llm/./models", True),
        ("/var/cache/llmx", False),
        ("/var/cache/llm/../../etc", False),
        ("/", False),
    ],
)
def test_host_path_within_an_allowed_prefix(path: str, allowed: bool, catalog: Catalog) -> None:
    resource = resource_from(_with_host_path(path))
    plan = plan_deployment(resource.spec, catalog)
    access = HostAccess(allowed_host_path_prefixes=("/var/cache/llm/",))
    if not allowed:
        with pytest.raises(SpecError, match="/var/cache/llm/"):
            render_manifests(resource, plan, catalog, load_image_lock(), host_access=access)
        return
    objects = render_manifests(resource, plan, catalog, load_image_lock(), host_access=access)
    pod = next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "model-cache")
    assert volume["hostPath"]["path"].startswith("/var/cache/llm")
    assert "/./" not in volume["hostPath"]["path"]


@pytest.mark.parametrize(
    ("placement", "field"),
    [
        ({"nodeSelector": {"node-role.kubernetes.io/control-plane": ""}}, "nodeSelector"),
        ({"nodeSelector": {"node-role.kubernetes.io/master": ""}}, "nodeSelector"),
        (
            {
                "tolerations": [
                    {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}
                ]
            },
            "tolerations[0]",
        ),
        ({"tolerations": [{"key": "a"}, {"operator": "Exists"}]}, "tolerations[1]"),
    ],
)
def test_control_plane_nodes_are_refused_unless_allowed(
    placement: dict[str, Any], field: str, catalog: Catalog
) -> None:
    body = example("llama-3.1-8b-l4")
    body["spec"]["placement"].update(placement)
    with pytest.raises(SpecError, match="control-plane") as err:
        render(body, catalog)
    assert err.value.field == f"spec.placement.{field}"
    resource = resource_from(body)
    plan = plan_deployment(resource.spec, catalog)
    access = HostAccess(allow_control_plane_nodes=True)
    assert render_manifests(resource, plan, catalog, load_image_lock(), host_access=access)


def test_render_cli_passes_host_access(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(_with_host_path("/var/cache/llm")))
    command = [sys.executable, "-m", "llmdeploy.cli", "render", "-f", str(path)]
    refused = subprocess.run(command, capture_output=True, text=True, check=False)
    assert refused.returncode == 2 and "hostPath is off" in refused.stderr
    allowed = subprocess.run(
        [*command, "--allow-host-path-prefix", "/var/cache"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert allowed.returncode == 0, allowed.stderr
    assert "path: /var/cache/llm" in allowed.stdout


def test_spec_hash_changes_with_the_pod_not_with_replicas(catalog: Catalog) -> None:
    def spec_hash(body: dict[str, Any]) -> str:
        objects, _ = render(body, catalog)
        return str(objects[0]["metadata"]["annotations"][SPEC_HASH_ANNOTATION])

    body = example("llama-3.1-70b-h100")
    base = spec_hash(body)
    body["spec"]["replicas"] = 5
    assert spec_hash(body) == base
    body["spec"]["workload"]["maxContextLength"] = 16384
    assert spec_hash(body) != base


def test_render_cli_is_byte_for_byte_deterministic(tmp_path: Path) -> None:
    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "llmdeploy.cli",
                "render",
                "-f",
                str(ROOT / "examples" / "llama-3.1-70b-h100.yaml"),
                *extra,
            ],
            capture_output=True,
            text=True,
            check=False,
        )

    first, second = run(), run()
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    assert len([d for d in yaml.safe_load_all(first.stdout)]) == 4
    out = tmp_path / "out"
    assert run("--output-dir", str(out)).returncode == 0
    assert sorted(p.name for p in out.iterdir()) == [
        ".llmdeploy-rendered",
        "00-deployment-llama-70b.yaml",
        "01-service-llama-70b.yaml",
        "02-poddisruptionbudget-llama-70b.yaml",
        "03-podmonitor-llama-70b.yaml",
    ]


def test_render_of_infeasible_plan_exits_1(tmp_path: Path) -> None:
    body = example("llama-3.1-405b-multinode")
    body["spec"]["placement"] = {"gpu": "nvidia-l4", "maxGpusPerReplica": 2}
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(body))
    result = subprocess.run(
        [sys.executable, "-m", "llmdeploy.cli", "render", "-f", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1 and "no feasible plan" in result.stderr
    assert result.stdout == ""


def _with_scaling(mode: str, **scaling: Any) -> dict[str, Any]:
    body = example("llama-3.1-8b-l4")
    body["metadata"]["namespace"] = "team-a"
    body["spec"]["scaling"] = {"mode": mode, "minReplicas": 1, "maxReplicas": 8, **scaling}
    return body


def test_hpa_mode_renders_a_valid_autoscaling_v2_hpa_on_the_scale_subresource(
    catalog: Catalog,
) -> None:
    objects, plan = render(_with_scaling("hpa"), catalog)
    hpa = objects[-1]
    assert hpa["kind"] == "HorizontalPodAutoscaler"
    kubernetes_validate.validate(hpa, K8S_VERSION, strict=True)
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "llmdeploy.io/v1alpha1",
        "kind": "LLMDeployment",
        "name": "llama-8b",
    }
    names = [m["external"]["metric"]["name"] for m in hpa["spec"]["metrics"]]
    assert names == ["vllm_num_requests_running", "vllm_num_requests_waiting"]
    # Derived from the plan: three times the time a replica takes to load its model.
    window = hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"]
    assert window == int(3 * cold_start_estimate(plan))


def test_keda_mode_renders_prometheus_triggers(catalog: Catalog) -> None:
    with pytest.raises(SpecError) as err:
        render(_with_scaling("keda", prometheus="elsewhere"), catalog)
    assert err.value.field == "spec.scaling.prometheus"
    assert "no Prometheus endpoint named elsewhere" in str(err.value)
    objects, _ = render(
        _with_scaling(
            "keda",
            metrics=[{"type": "kvCacheUsage", "target": 0.8}, {"type": "ttftP95", "target": 500}],
        ),
        catalog,
    )
    scaled = objects[-1]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1" and scaled["kind"] == "ScaledObject"
    triggers = scaled["spec"]["triggers"]
    assert [t["metricType"] for t in triggers] == ["Value", "Value"]
    assert 'llmdeploy_io_deployment="llama-8b"' in triggers[0]["metadata"]["query"]
    assert "vllm:kv_cache_usage_perc" in triggers[0]["metadata"]["query"]
    assert "histogram_quantile(0.95" in triggers[1]["metadata"]["query"]
    assert scaled["spec"]["minReplicaCount"] == 1 and scaled["spec"]["maxReplicaCount"] == 8
    # The HPA KEDA creates behaves like the operator's own policy.
    assert scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleUp"]
    # The default endpoint's address, and no credentials: that endpoint needs none.
    assert {t["metadata"]["serverAddress"] for t in triggers} == {
        "http://prometheus.monitoring:9090"
    }
    assert all("authenticationRef" not in t and "authModes" not in t["metadata"] for t in triggers)


def test_latency_targets_in_milliseconds_become_thresholds_in_seconds(catalog: Catalog) -> None:
    # Queries and external metrics answer in seconds, as Prometheus and the engines do; the
    # spec's targets stay in milliseconds, like spec.slo.
    metrics = [{"type": "ttftP95", "target": 500}, {"type": "tpotP95", "target": 40}]
    hpa, _ = render(_with_scaling("hpa", metrics=metrics), catalog)
    external = [m["external"] for m in hpa[-1]["spec"]["metrics"]]
    assert [e["metric"]["name"] for e in external] == [
        "llmdeploy_ttft_p95_seconds",
        "llmdeploy_tpot_p95_seconds",
    ]
    assert [e["target"]["value"] for e in external] == ["0.5", "0.04"]
    keda, _ = render(_with_scaling("keda", metrics=metrics), catalog)
    triggers = keda[-1]["spec"]["triggers"]
    assert [t["metadata"]["threshold"] for t in triggers] == ["0.5", "0.04"]
    assert all(t["metadata"]["query"].startswith("histogram_quantile(0.95") for t in triggers)


def test_keda_queries_a_named_endpoint_with_the_credentials_the_admin_gave_keda(
    catalog: Catalog,
) -> None:
    objects, _ = render(_with_scaling("keda", prometheus="team-a"), catalog)
    for trigger in objects[-1]["spec"]["triggers"]:
        assert trigger["metadata"]["serverAddress"] == "https://prom-a.team-a:9090"
        assert trigger["metadata"]["authModes"] == "bearer"
        assert trigger["authenticationRef"] == {
            "kind": "ClusterTriggerAuthentication",
            "name": "prom-a",
        }


@pytest.mark.parametrize(
    "value",
    [
        "\U0001f999 llama",
        "line\u2028separator",
        "nul\u0000 and \u202e bidi",
        "a backslash \\ud83e that is text",
        {"k": ["\u00e9", "\U0001f999"]},
    ],
)
def test_yaml_quote_round_trips_through_both_yaml_parsers(value: Any) -> None:
    from llmdeploy.render.manifests import yaml_quote

    quoted = yaml_quote(value)
    assert yaml.load(quoted, Loader=yaml.SafeLoader) == value
    assert yaml.load(quoted, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) == value


def test_keda_scale_to_zero_idles_at_zero_and_wakes_on_activation(catalog: Catalog) -> None:
    stz = {"idleSeconds": 600, "activationMetric": {"name": "gateway_pending"}}
    objects, _ = render(_with_scaling("keda", scaleToZero=stz), catalog)
    spec = objects[-1]["spec"]
    assert spec["idleReplicaCount"] == 0 and spec["cooldownPeriod"] == 600
    assert spec["minReplicaCount"] == 1  # the normal range keeps its floor
    triggers = spec["triggers"]
    assert [t["name"] for t in triggers] == ["runningRequests", "queueDepth", "activation"]
    assert all(t["metadata"]["activationThreshold"] == "0" for t in triggers)
    # Read within the object's own namespace, whatever labels the spec adds.
    assert triggers[-1]["metadata"]["query"] == 'sum(gateway_pending{namespace="team-a"})'
    plain, _ = render(_with_scaling("keda"), catalog)
    assert "idleReplicaCount" not in plain[-1]["spec"]
    assert all("activationThreshold" not in t["metadata"] for t in plain[-1]["spec"]["triggers"])


def test_scale_to_zero_with_mode_hpa_is_invalid_input(tmp_path: Path) -> None:
    manifest = tmp_path / "hpa.yaml"
    manifest.write_text(yaml.safe_dump(_with_scaling("hpa", scaleToZero={})))
    result = subprocess.run(
        [sys.executable, "-m", "llmdeploy.cli", "render", "-f", str(manifest)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "spec.scaling" in result.stderr and "HPAScaleToZero" in result.stderr


def test_render_offline_takes_the_operators_prometheus_endpoints(tmp_path: Path) -> None:
    manifest = tmp_path / "keda.yaml"
    manifest.write_text(yaml.safe_dump(_with_scaling("keda", prometheus="team-a")))

    def cli(*flags: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "llmdeploy.cli", "render", "-f", str(manifest), *flags]
        return subprocess.run(command, capture_output=True, text=True, check=False)

    missing = cli("--prometheus-url", "http://prometheus:9090")
    assert missing.returncode == 2
    assert "spec.scaling.prometheus: no Prometheus endpoint named team-a" in missing.stderr
    endpoints = '{"team-a": {"url": "https://prom-a:9090", "kedaAuthentication": "prom-a"}}'
    rendered = cli("--prometheus-endpoints", endpoints)
    assert rendered.returncode == 0, rendered.stderr
    scaled = list(yaml.safe_load_all(rendered.stdout))[-1]
    assert scaled["spec"]["triggers"][0]["metadata"]["serverAddress"] == "https://prom-a:9090"
    bad = cli("--prometheus-endpoints", '{"team-a": {"url": "http://x/#"}}')
    assert bad.returncode == 2 and "--prometheus-endpoints" in bad.stderr


def test_autoscaling_reads_the_metric_names_of_the_engine(catalog: Catalog) -> None:
    body = example("tensorrt-llm-llama-8b")
    body["spec"]["scaling"] = {"mode": "hpa"}
    objects, _ = render(body, catalog)
    names = [m["external"]["metric"]["name"] for m in objects[-1]["spec"]["metrics"]]
    assert names == ["trtllm_num_requests_running", "trtllm_num_requests_waiting"]
    body["spec"]["scaling"] = {
        "mode": "keda",
        "metrics": [{"type": "kvCacheUsage", "target": 0.8}, {"type": "tpotP95", "target": 50}],
    }
    objects, _ = render(body, catalog)
    queries = [t["metadata"]["query"] for t in objects[-1]["spec"]["triggers"]]
    assert "avg(trtllm_kv_cache_utilization{" in queries[0]
    assert "rate(trtllm_time_per_output_token_seconds_bucket{" in queries[1]
    assert not any("vllm:" in q for q in queries)


@pytest.mark.parametrize("engine", ["vllm", "tensorrt-llm"])
def test_every_metric_type_has_a_query_for_every_engine(engine: str) -> None:
    from typing import get_args

    from llmdeploy.api.types import EngineName, ScalingMetric
    from llmdeploy.autoscale.promql import query

    types = get_args(ScalingMetric.model_fields["type"].annotation)
    prefix = {"vllm": "vllm:", "tensorrt-llm": "trtllm_"}[engine]
    for metric_type in types:
        promql = query(metric_type, "team-a", "llama", EngineName(engine))
        assert prefix in promql and 'llmdeploy_io_deployment="llama"' in promql, promql


def test_startup_probe_allows_a_safety_multiple_of_the_autoscalers_cold_start(
    catalog: Catalog,
) -> None:
    from llmdeploy.render.manifests import STARTUP_PROBE_SAFETY_FACTOR

    objects, plan = render(example("llama-3.1-70b-h100"), catalog)
    probe = engine_container(objects)["startupProbe"]
    budget = probe["failureThreshold"] * probe["periodSeconds"]
    expected = cold_start_estimate(plan)
    assert (
        STARTUP_PROBE_SAFETY_FACTOR * expected
        <= budget
        < STARTUP_PROBE_SAFETY_FACTOR * expected + 10
    )


@pytest.mark.parametrize("name", ["llama-3.1-8b-l4", "llama-3.1-405b-multinode"])
def test_network_policy_admits_the_engine_port_from_allowed_namespaces(
    name: str, catalog: Catalog
) -> None:
    body = example(name)
    assert "NetworkPolicy" not in [o["kind"] for o in render(body, catalog)[0]]  # opt-in
    body["spec"]["networkPolicy"] = {"enabled": True, "allowedNamespaces": ["monitoring", "gw"]}
    objects, _ = render(body, catalog)
    policy = next(o for o in objects if o["kind"] == "NetworkPolicy")
    kubernetes_validate.validate(policy, K8S_VERSION, strict=True)
    name_label = body["metadata"]["name"]
    assert policy["spec"]["podSelector"] == {"matchLabels": {"llmdeploy.io/deployment": name_label}}
    api, *peers = policy["spec"]["ingress"]
    port = engine_container(objects)["ports"][0]["containerPort"]
    assert api["ports"] == [{"port": port, "protocol": "TCP"}]
    assert api["from"] == [
        {"podSelector": {}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gw"}}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
    ]
    multi_node = any(o["kind"] == "LeaderWorkerSet" for o in objects)
    assert peers == (
        [{"from": [{"podSelector": {"matchLabels": {"llmdeploy.io/deployment": name_label}}}]}]
        if multi_node
        else []
    )


def test_network_policy_namespaces_must_be_names() -> None:
    body = example("llama-3.1-8b-l4")
    body["spec"]["networkPolicy"] = {"enabled": True, "allowedNamespaces": ["a}\n- {}"]}
    with pytest.raises(ValueError, match="allowedNamespaces"):
        resource_from(body)
