"""The cluster's GPUs as the planner sees them: which SKUs exist, how many per node, drivers.

Pure: the cluster layer reads nodes into an Inventory; this narrows the catalog to what the
cluster has, plus SKUs a cluster autoscaler can provision.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from llmdeploy.api.types import LLMDeploymentSpec
from llmdeploy.catalog import Catalog


@dataclass(frozen=True, slots=True)
class GpuNode:
    name: str
    labels: dict[str, str]  # the node's labels
    allocatable_gpus: int
    driver: tuple[int, int] | None  # nvidia.com/cuda.driver.major/minor


@dataclass(frozen=True, slots=True)
class Inventory:
    nodes: tuple[GpuNode, ...] = ()

    def sku_nodes(self, catalog: Catalog, sku: str) -> list[GpuNode]:
        terms = catalog.gpus[sku].selector_terms()
        return [n for n in self.nodes if any(n.labels.get(key) in values for key, values in terms)]

    def drivers(self, catalog: Catalog, sku: str) -> list[tuple[int, int]]:
        return [n.driver for n in self.sku_nodes(catalog, sku) if n.driver is not None]


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
