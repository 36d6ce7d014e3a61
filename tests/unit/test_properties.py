"""Property-based: any spec is rejected with a field path, planned, or reported infeasible;
a planned one renders only the expected objects. Never a traceback."""

from __future__ import annotations

import math
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from pydantic import ValidationError

from llmdeploy.api.types import LLMDeployment, LLMDeploymentSpec, format_validation_error
from llmdeploy.catalog import Catalog, Gpu, load_image_lock
from llmdeploy.render import RenderError, render_manifests, to_yaml
from llmdeploy.sizing import Plan, SpecError, plan_deployment
from tests.spec_strategies import gpu_rows, spec_bodies, valid_spec_bodies

EXPECTED_KINDS = {
    "Deployment",
    "LeaderWorkerSet",
    "Service",
    "PodDisruptionBudget",
    "ConfigMap",
    "PodMonitor",
}


@settings(
    max_examples=300,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(body=spec_bodies())
def test_every_spec_is_rejected_planned_or_infeasible(
    body: dict[str, Any], catalog: Catalog
) -> None:
    try:
        spec = LLMDeploymentSpec.model_validate(body)
    except ValidationError as exc:
        message = format_validation_error(exc)
        assert message and ":" in message
        return
    try:
        plan = plan_deployment(spec, catalog)
    except SpecError as exc:
        assert exc.field.startswith(("spec.", "metadata.")) and exc.message
        return
    if not plan.feasible:
        assert plan.reasons
        return
    resource = LLMDeployment.model_validate(
        {
            "apiVersion": "llmdeploy.io/v1alpha1",
            "kind": "LLMDeployment",
            "metadata": {"name": "prop"},
            "spec": body,
        }
    )
    try:
        objects = render_manifests(resource, plan, catalog, load_image_lock())
    except (SpecError, RenderError) as exc:
        assert str(exc)
        return
    documents = list(yaml.safe_load_all(to_yaml(objects)))
    assert len(documents) == len(objects)
    assert {d["kind"] for d in documents} <= EXPECTED_KINDS
    assert all(d["metadata"]["name"].startswith("prop") for d in documents)


def _numbers(node: object) -> list[float]:
    if isinstance(node, dict):
        return [n for value in node.values() for n in _numbers(value)]
    if isinstance(node, list):
        return [n for value in node for n in _numbers(value)]
    if isinstance(node, int | float) and not isinstance(node, bool):
        return [float(node)]
    return []


def assert_finite_and_non_negative(plan: Plan) -> None:
    numbers = _numbers(plan.to_json_dict())
    assert all(math.isfinite(n) and n >= 0 for n in numbers), plan.to_json_dict()


@settings(
    max_examples=200,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(body=valid_spec_bodies(), gpu=gpu_rows())
def test_schema_valid_input_plans_and_renders_without_raising(
    body: dict[str, Any], gpu: dict[str, Any], catalog: Catalog
) -> None:
    """Parse -> plan -> render of any spec within the schema's bounds, against a catalog with
    a generated GPU within the loader's bounds: a refusal names a field, a plan is finite and
    non-negative, and what renders parses."""
    extended = catalog.model_copy(
        update={"gpus": {**catalog.gpus, gpu["id"]: Gpu.model_validate(gpu)}}
    )
    document = {
        "apiVersion": "llmdeploy.io/v1alpha1",
        "kind": "LLMDeployment",
        "metadata": {"name": "prop"},
        "spec": body,
    }
    resource = LLMDeployment.model_validate(document)  # schema-valid by construction
    try:
        plan = plan_deployment(resource.spec, extended)
    except SpecError as exc:
        assert exc.field.startswith("spec.") and exc.message
        return
    assert_finite_and_non_negative(plan)
    if not plan.feasible:
        assert plan.reasons
        return
    try:
        objects = render_manifests(resource, plan, extended, load_image_lock())
    except SpecError as exc:
        assert exc.field.startswith("spec.") and exc.message
        return
    assert list(yaml.safe_load_all(to_yaml(objects)))
