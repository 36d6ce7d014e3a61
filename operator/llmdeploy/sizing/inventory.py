"""The cluster's GPUs as the planner sees them: which SKUs exist, how many per node, drivers.

Pure: the operator lists nodes and `llmdeploy plan/render --inventory` reads them from a file;
both turn them into an Inventory with `inventory_from_nodes`, so they cannot disagree. This
narrows the catalog to what the cluster has, plus SKUs a cluster autoscaler can provision.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from llmdeploy.api.types import LLMDeploymentSpec
from llmdeploy.catalog import Catalog


@dataclass(frozen=True, slots=True)
class GpuNode:
    name: str
    labels: dict[str, str]  # the node's labels
    allocatable_gpus: int
    driver: tuple[int, int] | None  # nvidia.com/cuda.driver.major/minor


PRODUCT_LABELS = ("nvidia.com/gpu.product", "amd.com/gpu.product-name")
GPU_RESOURCES = ("nvidia.com/gpu", "amd.com/gpu")
DRIVER_LABELS = ("nvidia.com/cuda.driver.major", "nvidia.com/cuda.driver.minor")


class NodeError(ValueError):
    """A node document the inventory cannot read; the message names the node and field."""


@dataclass(frozen=True, slots=True)
class Inventory:
    nodes: tuple[GpuNode, ...] = ()

    def sku_nodes(self, catalog: Catalog, sku: str) -> list[GpuNode]:
        terms = catalog.gpus[sku].selector_terms()
        return [n for n in self.nodes if any(n.labels.get(key) in values for key, values in terms)]

    def drivers(self, catalog: Catalog, sku: str) -> list[tuple[int, int]]:
        return [n.driver for n in self.sku_nodes(catalog, sku) if n.driver is not None]

    def drivers_by_sku(self, catalog: Catalog) -> dict[str, list[tuple[int, int]]]:
        """The NVIDIA drivers of each SKU's nodes: what picks the image the plan is sized for."""
        return {sku: self.drivers(catalog, sku) for sku in sorted(catalog.gpus)}


def gpu_node(node: Mapping[str, Any]) -> GpuNode | None:
    """A Node (as the API serves it, in JSON form) as the planner sees it; None for a node
    with neither GPUs nor a GPU product label."""
    metadata = node.get("metadata") or {}
    name = str(metadata.get("name") or "")
    labels = {str(k): str(v) for k, v in (metadata.get("labels") or {}).items()}
    allocatable = (node.get("status") or {}).get("allocatable") or {}
    resource = next((r for r in GPU_RESOURCES if r in allocatable), None)
    gpus = 0
    if resource is not None:
        count = str(allocatable[resource])
        if not count.isdigit():  # extended resources are whole numbers
            raise NodeError(
                f"node {name or '?'}: status.allocatable[{resource}] must be a whole number, "
                f"got {count!r}"
            )
        gpus = int(count)
    if not gpus and not any(k in labels for k in PRODUCT_LABELS):
        return None
    major, minor = (labels.get(key, "") for key in DRIVER_LABELS)
    driver = (int(major), int(minor)) if major.isdigit() and minor.isdigit() else None
    return GpuNode(name, labels, gpus, driver)


def inventory_from_nodes(nodes: Iterable[Mapping[str, Any]]) -> Inventory:
    found = (gpu_node(node) for node in nodes)
    return Inventory(tuple(sorted((n for n in found if n is not None), key=lambda n: n.name)))


def node_documents(documents: Iterable[object]) -> list[Mapping[str, Any]]:
    """The Nodes in YAML/JSON documents: `kubectl get nodes -o yaml|json` (a List) or Node
    documents one by one."""
    nodes: list[Mapping[str, Any]] = []
    for index, document in enumerate(documents):
        if document is None:
            continue
        kind = document.get("kind") if isinstance(document, dict) else None
        if kind in ("List", "NodeList"):
            assert isinstance(document, dict)
            items = document.get("items") or []
            if not isinstance(items, list):
                raise NodeError(f"document {index}: items must be a list")
            entries: list[object] = list(items)
        else:
            entries = [document]
        for entry in entries:
            if not isinstance(entry, dict) or entry.get("kind", "Node") != "Node":
                what = entry.get("kind") if isinstance(entry, dict) else type(entry).__name__
                raise NodeError(f"document {index}: expected Nodes, found {what}")
            if not isinstance(entry.get("metadata"), dict) or not entry["metadata"].get("name"):
                raise NodeError(f"document {index}: a Node without metadata.name")
            nodes.append(entry)
    return nodes


def schedulable_replicas(
    catalog: Catalog,
    inventory: Inventory,
    gpus_in_use: dict[str, int],
    sku: str,
    gpus_per_pod: int,
    pods_per_replica: int,
    placed_pods: int,
    provisionable: Collection[str] | None,
) -> int | None:
    """How many replicas fit: those whose pods hold GPUs already plus what the SKU's free GPUs
    can take; None when a cluster autoscaler can add nodes of the SKU (then pending pods are
    how capacity gets requested)."""
    if provisionable is None or sku in provisionable:
        return None
    pods = sum(
        max(0, node.allocatable_gpus - gpus_in_use.get(node.name, 0)) // max(gpus_per_pod, 1)
        for node in inventory.sku_nodes(catalog, sku)
    )
    return (placed_pods + pods) // max(pods_per_replica, 1)


def provisionable_skus(names: Collection[str] | None) -> set[str] | None:
    """LLMDEPLOY_PROVISIONABLE_GPUS (or --provisionable) as the planner takes it: unset is
    none, '*' every catalog SKU (None)."""
    if names is None:
        return set()
    skus = {n.strip() for n in names if n.strip()}
    return None if "*" in skus else skus


def cluster_catalog(
    catalog: Catalog, inventory: Inventory, provisionable: Collection[str] | None
) -> Catalog:
    """The catalog restricted to SKUs on the cluster's nodes (GPUs per node as the nodes have
    them) plus `provisionable` SKUs; `provisionable=None` means every catalog SKU counts."""
    if provisionable is None:
        return catalog
    gpus = {}
    for sku, gpu in catalog.gpus.items():
        nodes = inventory.sku_nodes(catalog, sku)
        if sku in provisionable:
            gpus[sku] = gpu
        elif nodes:
            per_node = max(n.allocatable_gpus for n in nodes)
            gpus[sku] = gpu.model_copy(update={"gpus_per_node": max(1, per_node)})
    return catalog.model_copy(update={"gpus": gpus})


def placement_for_cluster(
    spec: LLMDeploymentSpec, catalog: Catalog, excluded: Collection[str] = ()
) -> tuple[LLMDeploymentSpec | None, str]:
    """The spec with allowedGpus narrowed to the SKUs the cluster offers, minus excluded ones;
    or None and the reason when none is left."""
    placement = spec.placement
    available = [g for g in sorted(catalog.gpus) if g not in excluded]
    wanted = [placement.gpu] if placement.gpu else placement.allowed_gpus or available
    allowed = [g for g in wanted if g in available]
    if not allowed:
        offered = ", ".join(available) or "none"
        return (
            None,
            f"no GPU the spec allows ({', '.join(wanted)}) is on the cluster or "
            f"provisionable; the cluster offers: {offered}",
        )
    narrowed = placement.model_copy(update={"allowed_gpus": allowed})
    return spec.model_copy(update={"placement": narrowed}), ""
