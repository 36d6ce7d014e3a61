"""A periodic pass skips the render and the apply only while nothing they depend on moved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from llmdeploy.api.types import LLMDeployment
from llmdeploy.catalog import Catalog
from llmdeploy.cluster.kube import LiveChild, Owner, WorkloadStatus
from llmdeploy.controller import handlers
from llmdeploy.controller.service import plan_key, render_inputs
from llmdeploy.controller.settings import OperatorSettings
from llmdeploy.sizing import plan_deployment
from llmdeploy.sizing.inventory import GpuNode, Inventory

ROOT = Path(__file__).resolve().parents[2]
OWNER = Owner("llama-8b", "ns", "uid-1")
CHILDREN = frozenset({("Deployment", "llama-8b"), ("Service", "llama-8b")})


class Untouched:
    """The cluster layer's verdict on the listed children, set by the test."""

    def __init__(self) -> None:
        self.as_left = True

    def as_applied(self, owner: Owner, children: Any, seen: Any) -> bool:
        return self.as_left


def setup(catalog: Catalog) -> tuple[handlers.Context, LLMDeployment, dict[str, Any], Untouched]:
    body = yaml.safe_load((ROOT / "examples" / "llama-3.1-8b-l4.yaml").read_text())
    resource = LLMDeployment.model_validate(body)
    plan = plan_deployment(resource.spec, catalog)
    key = plan_key(resource, [])
    status = {"plan": plan.model_dump(mode="json", by_alias=True, exclude_none=True)}
    status["planKey"] = key
    cluster = Untouched()
    ctx = handlers.Context(OperatorSettings(), catalog, None, cluster)  # type: ignore[arg-type]
    ctx.rendered[OWNER.uid] = handlers.Rendered(
        render_inputs(3, key, plan, catalog, Inventory(())),
        CHILDREN,
        ("Deployment", "llama-8b"),
        "hash-1",
    )
    return ctx, resource, status, cluster


SEEN = {("ns", "Deployment", "llama-8b"): LiveChild("h", "g1", WorkloadStatus(True, 2, 2, 2))}


def test_unchanged_inputs_and_children_reuse_the_last_render(catalog: Catalog) -> None:
    ctx, resource, status, _ = setup(catalog)
    reused = handlers._last_render_stands(ctx, OWNER, resource, status, 3, Inventory(()), SEEN)
    assert reused is not None
    desired, workload = reused
    assert (desired.objects, desired.workload_kind, desired.spec_hash) == (
        [],
        "Deployment",
        "hash-1",
    )
    assert workload == WorkloadStatus(True, 2, 2, 2)


def test_a_new_generation_an_edited_child_new_drivers_or_no_listing_render_again(
    catalog: Catalog,
) -> None:
    ctx, resource, status, cluster = setup(catalog)
    inventory = Inventory(())
    assert handlers._last_render_stands(ctx, OWNER, resource, status, 4, inventory, SEEN) is None
    assert handlers._last_render_stands(ctx, OWNER, resource, status, 3, inventory, None) is None
    gpu = str(status["plan"]["gpu"])
    labels = {catalog.gpus[gpu].product_label_key: catalog.gpus[gpu].product_labels[0]}
    with_driver = Inventory((GpuNode("n1", labels, 1, (580, 1)),))
    assert render_inputs(3, "k", resource_plan(status), catalog, with_driver) != render_inputs(
        3, "k", resource_plan(status), catalog, inventory
    )
    assert handlers._last_render_stands(ctx, OWNER, resource, status, 3, with_driver, SEEN) is None
    cluster.as_left = False
    assert handlers._last_render_stands(ctx, OWNER, resource, status, 3, inventory, SEEN) is None


def resource_plan(status: dict[str, Any]) -> Any:
    return handlers._stored_plan(status)


def test_workload_progress_is_read_again_when_the_watch_and_the_list_disagree(
    catalog: Catalog,
) -> None:
    ctx, resource, status, _ = setup(catalog)
    listed = SEEN[("ns", "Deployment", "llama-8b")].workload
    ctx.reflected[OWNER.uid] = listed
    reused = handlers._last_render_stands(ctx, OWNER, resource, status, 3, Inventory(()), SEEN)
    assert reused is not None and reused[1] == listed
    # What an apply answered before the rollout was observed: the list is newer, or older.
    ctx.reflected[OWNER.uid] = WorkloadStatus(True, 2, 0, 0)
    reused = handlers._last_render_stands(ctx, OWNER, resource, status, 3, Inventory(()), SEEN)
    assert reused is not None and reused[1] is None  # the reconcile reads the workload
