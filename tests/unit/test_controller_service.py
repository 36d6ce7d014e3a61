"""Pure controller logic: cluster view of the catalog, capacity and status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from llmdeploy.api.types import LLMDeployment
from llmdeploy.catalog import Catalog, load_image_lock
from llmdeploy.cluster.kube import PendingPod, WorkloadStatus
from llmdeploy.controller.service import capacity_condition, desired_state, status_update
from llmdeploy.sizing.inventory import GpuNode, Inventory, cluster_catalog

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
GFD = "nvidia.com/gpu.product"
L4_NODES = Inventory(tuple(GpuNode(f"l4-{i}", {GFD: "NVIDIA-L4"}, 1, (550, 90)) for i in range(4)))


def resource(**spec: object) -> LLMDeployment:
    return LLMDeployment.model_validate(
        {
            "apiVersion": "llmdeploy.io/v1alpha1",
            "kind": "LLMDeployment",
            "metadata": {"name": "m", "namespace": "ns"},
            "spec": {"model": {"name": "meta-llama/Llama-3.1-8B-Instruct"}, **spec},
        }
    )


def test_cluster_view_keeps_present_and_provisionable_skus(catalog: Catalog) -> None:
    view = cluster_catalog(catalog, L4_NODES, set())
    assert sorted(view.gpus) == ["nvidia-l4"]
    assert view.gpus["nvidia-l4"].gpus_per_node == 1  # as the nodes have them
    view = cluster_catalog(catalog, L4_NODES, {"nvidia-h100-80gb"})
    assert sorted(view.gpus) == ["nvidia-h100-80gb", "nvidia-l4"]
    assert cluster_catalog(catalog, L4_NODES, None) is catalog


def test_desired_state_plans_on_the_cluster_and_picks_the_drivers_image(catalog: Catalog) -> None:
    desired = desired_state(resource(), catalog, load_image_lock(), L4_NODES, set())
    assert desired.plan.feasible and desired.plan.gpu == "nvidia-l4"
    workload = next(o for o in desired.objects if o["kind"] == "Deployment")
    image = workload["spec"]["template"]["spec"]["containers"][0]["image"]
    assert ":v0.8.5@" in image  # newest vLLM whose CUDA a 550 driver runs


def test_stored_plan_is_reused_while_inputs_are_unchanged(catalog: Catalog) -> None:
    first = desired_state(resource(), catalog, load_image_lock(), L4_NODES, set())
    # The inventory changed (H100s appeared) but the spec did not: keep the plan, no churn.
    h100 = GpuNode("h100", {GFD: "NVIDIA-H100-80GB-HBM3"}, 8, (570, 124))
    more = Inventory((*L4_NODES.nodes, h100))
    again = desired_state(
        resource(),
        catalog,
        load_image_lock(),
        more,
        set(),
        stored_plan=first.plan,
        stored_key=first.plan_key,
    )
    assert again.plan == first.plan
    changed = desired_state(
        resource(workload={"maxContextLength": 4096}),
        catalog,
        load_image_lock(),
        more,
        set(),
        stored_plan=first.plan,
        stored_key=first.plan_key,
    )
    assert changed.plan_key != first.plan_key


def test_no_allowed_gpu_on_the_cluster_is_an_infeasible_plan(catalog: Catalog) -> None:
    desired = desired_state(
        resource(placement={"gpu": "nvidia-h200-141gb"}),
        catalog,
        load_image_lock(),
        L4_NODES,
        set(),
    )
    assert not desired.plan.feasible and desired.objects == []
    assert "nvidia-h200-141gb" in desired.plan.reasons[0]


def test_capacity_turns_false_only_after_the_timeout() -> None:
    pod = PendingPod("p", NOW - timedelta(seconds=30), "0/4 nodes: Insufficient nvidia.com/gpu")
    waiting, starved = capacity_condition([pod], NOW, 60, 3)
    assert waiting.status == "True" and waiting.reason == "WaitingForCapacity" and starved is None
    late, starved = capacity_condition([pod], NOW + timedelta(seconds=31), 60, 3)
    assert late.status == "False" and late.reason == "InsufficientGPUs" and starved is pod
    assert "Insufficient nvidia.com/gpu" in late.message


def test_status_keeps_transition_times_and_reports_readiness(catalog: Catalog) -> None:
    r = resource()
    desired = desired_state(r, catalog, load_image_lock(), L4_NODES, set())
    replicas = desired.plan.replicas or 1
    rolling = WorkloadStatus(True, replicas, 0, replicas, True)
    first = status_update(r, 1, desired, rolling, None, None, [], NOW)
    assert first["phase"] == "Progressing"
    done = WorkloadStatus(True, replicas, replicas, replicas, True)
    later = NOW + timedelta(minutes=5)
    second = status_update(r, 1, desired, done, None, None, first["conditions"], later)
    assert second["phase"] == "Ready" and second["readyReplicas"] == replicas
    by_type = {c["type"]: c for c in second["conditions"]}
    old = {c["type"]: c for c in first["conditions"]}
    assert by_type["Planned"]["lastTransitionTime"] == old["Planned"]["lastTransitionTime"]
    assert by_type["Available"]["lastTransitionTime"] != old["Available"]["lastTransitionTime"]
    assert second["selector"] == "llmdeploy.io/deployment=m"


def test_a_cloud_label_from_a_catalog_extension_identifies_the_sku(tmp_path: Path) -> None:
    from llmdeploy.catalog import load_catalog

    extension = tmp_path / "gke.yaml"
    extension.write_text(
        yaml.safe_dump(
            {
                "gpus": [
                    {
                        **load_catalog().gpus["nvidia-l4"].model_dump(mode="json", by_alias=True),
                        "nodeLabels": {"cloud.google.com/gke-accelerator": ["nvidia-l4"]},
                    }
                ]
            }
        )
    )
    catalog = load_catalog([extension])
    # A node without GPU Feature Discovery labels, only the cloud's.
    node = GpuNode("gke-l4", {"cloud.google.com/gke-accelerator": "nvidia-l4"}, 1, None)
    inventory = Inventory((node,))
    assert inventory.sku_nodes(catalog, "nvidia-l4") == [node]
    desired = desired_state(resource(), catalog, load_image_lock(), inventory, set())
    assert desired.plan.gpu == "nvidia-l4"
    pod = next(o for o in desired.objects if o["kind"] == "Deployment")["spec"]["template"]
    terms = pod["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    keys = [t["matchExpressions"][0]["key"] for t in terms]
    assert keys == ["nvidia.com/gpu.product", "cloud.google.com/gke-accelerator"]


def test_schedulable_replicas_count_free_gpus_unless_provisionable(catalog: Catalog) -> None:
    from llmdeploy.sizing.inventory import schedulable_replicas

    in_use = {"l4-0": 1, "l4-1": 1}  # two of the four L4s are taken, by our two pods
    assert schedulable_replicas(catalog, L4_NODES, in_use, "nvidia-l4", 1, 1, 2, set()) == 4
    # ... or by someone else's: only the two free ones are ours to take.
    assert schedulable_replicas(catalog, L4_NODES, in_use, "nvidia-l4", 1, 1, 0, set()) == 2
    assert schedulable_replicas(catalog, L4_NODES, {}, "nvidia-l4", 2, 1, 0, set()) == 0
    # A cluster autoscaler can add L4 nodes: no cap, pending pods ask for capacity.
    assert (
        schedulable_replicas(catalog, L4_NODES, in_use, "nvidia-l4", 1, 1, 2, {"nvidia-l4"}) is None
    )
    assert schedulable_replicas(catalog, L4_NODES, in_use, "nvidia-l4", 1, 1, 2, None) is None


def test_spec_hash_is_what_this_plan_s_pods_carry(catalog: Catalog) -> None:
    """Capacity is judged on pods with this hash only: a pod of the previous plan, still
    pending while the rollout removes it, must not make a new plan look starved."""
    short = desired_state(resource(), catalog, load_image_lock(), L4_NODES, set())
    [workload] = [o for o in short.objects if o["kind"] == "Deployment"]
    pods = workload["spec"]["template"]["metadata"]["annotations"]
    assert short.spec_hash == pods["llmdeploy.io/spec-hash"]
    longer = desired_state(
        resource(workload={"maxContextLength": 4096}), catalog, load_image_lock(), L4_NODES, set()
    )
    assert longer.spec_hash != short.spec_hash
