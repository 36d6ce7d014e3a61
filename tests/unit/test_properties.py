"""Property-based: any spec is rejected with a field path, planned, or reported infeasible;
a planned one renders only the expected objects. Never a traceback."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from pydantic import ValidationError

from llmdeploy.api.types import LLMDeployment, LLMDeploymentSpec, format_validation_error
from llmdeploy.catalog import Catalog, load_image_lock
from llmdeploy.render import RenderError, render_manifests, to_yaml
from llmdeploy.sizing import SpecError, plan_deployment
from tests.spec_strategies import spec_bodies

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
