"""spec.routing: the InferencePool and HTTPRoute renders, the engine-type labels, the API's
checks, and the Routable condition."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from pydantic import ValidationError

from llmdeploy.api.crd import build_crd
from llmdeploy.api.types import LLMDeploymentSpec, format_validation_error
from llmdeploy.catalog import Catalog
from llmdeploy.cluster.objects import LiveChild, route_parents_of
from llmdeploy.controller.decide import decide
from llmdeploy.controller.index import Index
from llmdeploy.controller.planning import plan_key
from llmdeploy.controller.reconciler import Reconciler
from llmdeploy.controller.settings import OperatorSettings
from llmdeploy.render import RenderError, render_manifests
from llmdeploy.render.manifests import ENGINE_PORT
from tests.unit.conftest import body
from tests.unit.test_decide import LOCK, conditions, config, resource, settled
from tests.unit.test_reconciler import Cluster as FakeCluster
from tests.unit.test_render import example, pod_templates, render, resource_from

POOL = {"endpointPicker": {"service": "my-epp", "port": 9002}}
ROUTE = {"gateway": {"name": "gw", "namespace": "gateways"}, "hostnames": ["llm.example.com"]}


def kind(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == name)


def with_routing(name: str, **routing: Any) -> dict[str, Any]:
    document = example(name)
    document["spec"]["routing"] = routing
    return document


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def test_the_pool_selects_the_engine_pods_and_the_route_sends_to_the_pool(
    catalog: Catalog,
) -> None:
    objects, _ = render(example("llama-3.1-8b-routing"), catalog)
    pool, route, deployment = (
        kind(objects, k) for k in ("InferencePool", "HTTPRoute", "Deployment")
    )
    selector = pool["spec"]["selector"]["matchLabels"]
    assert selector == deployment["spec"]["selector"]["matchLabels"]
    assert matches(selector, deployment["spec"]["template"]["metadata"]["labels"])
    ports = deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert pool["spec"]["targetPorts"] == [{"number": ENGINE_PORT}]
    assert [p["containerPort"] for p in ports] == [ENGINE_PORT]
    assert pool["spec"]["endpointPickerRef"] == {
        "kind": "Service",
        "name": "my-epp",
        "port": {"number": 9002},
        "failureMode": "FailClose",
    }
    assert route["spec"] == {
        "parentRefs": [
            {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "inference-gateway"}
        ],
        "hostnames": ["llm.example.com"],
        "rules": [
            {
                "matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}],
                "backendRefs": [
                    {
                        "group": "inference.networking.k8s.io",
                        "kind": "InferencePool",
                        "name": "llama-8b-routed",
                        "weight": 100,
                    }
                ],
            }
        ],
    }
    # Children of the object like every other: indexed, owned and pruned by that label.
    assert pool["metadata"]["labels"]["llmdeploy.io/deployment"] == "llama-8b-routed"
    assert route["metadata"]["labels"]["llmdeploy.io/deployment"] == "llama-8b-routed"


def test_a_multi_node_pool_selects_the_leaders_only(catalog: Catalog) -> None:
    objects, _ = render(with_routing("llama-3.1-405b-multinode", inferencePool=POOL), catalog)
    pool, lws = kind(objects, "InferencePool"), kind(objects, "LeaderWorkerSet")
    selector = pool["spec"]["selector"]["matchLabels"]
    leader, worker = (t["metadata"]["labels"] for t in pod_templates(lws))
    assert selector["llmdeploy.io/role"] == "leader"
    assert matches(selector, leader) and not matches(selector, worker)
    assert "HTTPRoute" not in {o["kind"] for o in objects}  # none asked for


@pytest.mark.parametrize(
    ("name", "engine_type"),
    [
        ("llama-3.1-8b-l4", "vllm"),
        ("llama-3.1-405b-multinode", "vllm"),
        ("tensorrt-llm-llama-8b", "trtllm-serve"),
    ],
)
def test_engine_pods_say_their_engine_to_endpoint_pickers(
    name: str, engine_type: str, catalog: Catalog
) -> None:
    objects, _ = render(example(name), catalog)
    templates = [t for o in objects for t in pod_templates(o)]
    assert templates
    for template in templates:
        labels = template["metadata"]["labels"]
        assert labels["llm-d.ai/engine-type"] == engine_type
        assert labels["inference.networking.k8s.io/engine-type"] == engine_type
    assert "InferencePool" not in {o["kind"] for o in objects}  # without spec.routing


def _route_render(catalog: Catalog, backends: Any) -> list[dict[str, Any]]:
    resource = resource_from(example("llama-3.1-8b-routing"))
    _, plan = render(example("llama-3.1-8b-routing"), catalog)
    return render_manifests(resource, plan, catalog, LOCK, route_backends=backends)


def test_a_pilot_passes_the_pools_and_their_weights(catalog: Catalog) -> None:
    objects = _route_render(catalog, [("llama-8b-routed", 90), ("llama-8b-routed-5f2c", 10)])
    refs = kind(objects, "HTTPRoute")["spec"]["rules"][0]["backendRefs"]
    assert [(r["name"], r["weight"], r["kind"]) for r in refs] == [
        ("llama-8b-routed", 90, "InferencePool"),
        ("llama-8b-routed-5f2c", 10, "InferencePool"),
    ]
    # The pool itself is the object's own, whatever the route's backends.
    assert kind(objects, "InferencePool")["metadata"]["name"] == "llama-8b-routed"


@pytest.mark.parametrize(
    ("backends", "message"),
    [
        ([], "1 to 16 distinct pools"),
        ([("a", 50), ("a", 50)], "1 to 16 distinct pools"),
        ([(f"p{i}", 1) for i in range(17)], "1 to 16 distinct pools"),
        ([("Pool", 100)], "not a DNS label"),
        ([("pool\n", 100)], "not a DNS label"),
        ([("pool", -1)], "not in 0..1000000"),
        ([("pool", 1_000_001)], "not in 0..1000000"),
        ([("a", 0), ("b", 0)], "all have weight 0"),
    ],
)
def test_route_backends_the_route_would_refuse_are_a_render_error(
    backends: Any, message: str, catalog: Catalog
) -> None:
    with pytest.raises(RenderError, match=message):
        _route_render(catalog, backends)


def spec_with(**routing: Any) -> dict[str, Any]:
    return {"model": {"name": "m"}, "routing": routing}


def test_a_route_needs_a_pool_at_admission_and_in_the_cli() -> None:
    with pytest.raises(ValidationError) as caught:
        LLMDeploymentSpec.model_validate(spec_with(httpRoute=ROUTE))
    assert "httpRoute needs inferencePool" in format_validation_error(caught.value)
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    rules = schema["properties"]["spec"]["properties"]["routing"]["x-kubernetes-validations"]
    assert rules == [
        {
            "rule": "!has(self.httpRoute) || has(self.inferencePool)",
            "message": "routing.httpRoute needs inferencePool: the route's backend is the pool",
            "fieldPath": ".httpRoute",
        }
    ]


@pytest.mark.parametrize(
    ("routing", "path"),
    [
        ({"inferencePool": {"endpointPicker": {"service": "EPP", "port": 9002}}}, "service"),
        ({"inferencePool": {"endpointPicker": {"service": "epp\n", "port": 9002}}}, "service"),
        ({"inferencePool": {"endpointPicker": {"service": "epp", "port": 0}}}, "port"),
        ({"inferencePool": {"endpointPicker": {"service": "epp", "port": 65536}}}, "port"),
        ({"inferencePool": {"endpointPicker": {"service": "epp", "port": "9002"}}}, "port"),
        (
            {"inferencePool": {"endpointPicker": {"service": "e", "port": 1, "failureMode": "x"}}},
            "failureMode",
        ),
        ({"inferencePool": POOL, "httpRoute": {"gateway": {"name": "gw\n"}}}, "gateway.name"),
        (
            {"inferencePool": POOL, "httpRoute": {"gateway": {"name": "g", "namespace": "N"}}},
            "gateway.namespace",
        ),
        ({"inferencePool": POOL, "httpRoute": {**ROUTE, "hostnames": ["a_b"]}}, "hostnames"),
        ({"inferencePool": POOL, "httpRoute": {**ROUTE, "pathPrefix": "v1"}}, "pathPrefix"),
        ({"inferencePool": POOL, "httpRoute": {**ROUTE, "pathPrefix": "/a//b"}}, "pathPrefix"),
        ({"inferencePool": POOL, "httpRoute": {**ROUTE, "pathPrefix": "/a/../b"}}, "pathPrefix"),
        ({"inferencePool": POOL, "httpRoute": {**ROUTE, "pathPrefix": "/%2f"}}, "pathPrefix"),
        ({"inferencePool": POOL, "httpRoute": {**ROUTE, "pathPrefix": "/v1\n"}}, "pathPrefix"),
        ({"inferencePool": POOL, "httpRoute": {**ROUTE, "gateways": []}}, "gateways"),
    ],
)
def test_routing_input_is_checked_with_its_field_path(routing: dict[str, Any], path: str) -> None:
    with pytest.raises(ValidationError) as caught:
        LLMDeploymentSpec.model_validate(spec_with(**routing))
    message = format_validation_error(caught.value, "spec")
    assert message.startswith("spec.routing.") and path in message, message


def test_routing_makes_no_new_plan() -> None:
    plain = resource()
    routed = resource(routing={"inferencePool": POOL, "httpRoute": ROUTE})
    assert plan_key(plain, []) == plan_key(routed, [])


# Routable, through decide: the children as the watch shows them after the first act.


def routable_after(
    catalog: Catalog, picker: bool | None, route: bool = True, **changes: Any
) -> tuple[Any, Any]:
    routing = {"inferencePool": POOL, **({"httpRoute": ROUTE} if route else {})}
    snap, _ = settled(catalog, body(routing=routing))
    snap = replace(snap, endpoint_picker=picker, **changes)
    outcome = decide(snap, config(catalog))
    return conditions(outcome).get("Routable"), outcome


def _route_status(*conditions: dict[str, Any], generation: int = 1) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "generation": generation},
        "status": {
            "parents": [
                {
                    "parentRef": {"name": "gw", "namespace": "gateways"},
                    "controllerName": "example.com/gateway",
                    "conditions": list(conditions),
                }
            ]
        },
    }


def _with_route(snap_children: dict[Any, LiveChild], route: dict[str, Any]) -> dict[Any, Any]:
    children = dict(snap_children)
    key = ("HTTPRoute", "m")
    children[key] = replace(children[key], route_parents=route_parents_of(route))
    return children


ACCEPTED = {"type": "Accepted", "status": "True", "reason": "Accepted", "observedGeneration": 1}
REFUSED = {
    "type": "Accepted",
    "status": "False",
    "reason": "NotAllowedByListeners",
    "message": "no listener admits routes from ns",
    "observedGeneration": 1,
}


def test_routable_follows_the_picker_and_the_gateways_verdict(catalog: Catalog) -> None:
    missing, outcome = routable_after(catalog, picker=False)
    assert (missing.status, missing.reason) == ("False", "EndpointPickerNotFound")
    assert "my-epp" in missing.message and "endpointPicker.service" in missing.message
    assert any(e.reason == "Routable" and e.warning for e in outcome.events)
    assert not outcome.apply  # the objects stay applied; only the condition says it

    snap, _ = settled(catalog, body(routing={"inferencePool": POOL, "httpRoute": ROUTE}))
    waiting, _ = routable_after(catalog, picker=True)
    assert (waiting.status, waiting.reason) == ("Unknown", "WaitingForGateway")

    refused, outcome = routable_after(
        catalog, picker=True, children=_with_route(dict(snap.children), _route_status(REFUSED))
    )
    assert (refused.status, refused.reason) == ("False", "RouteNotAccepted")
    assert "NotAllowedByListeners" in refused.message and "gateways/gw" in refused.message

    accepted, _ = routable_after(
        catalog, picker=True, children=_with_route(dict(snap.children), _route_status(ACCEPTED))
    )
    assert (accepted.status, accepted.reason) == ("True", "Routable")

    unresolved = {**ACCEPTED, "type": "ResolvedRefs", "status": "False", "reason": "InvalidKind"}
    both = _route_status(ACCEPTED, unresolved)
    refs, _ = routable_after(catalog, picker=True, children=_with_route(dict(snap.children), both))
    assert (refs.status, refs.reason) == ("False", "RouteRefsNotResolved")


def test_a_verdict_on_an_earlier_generation_of_the_route_is_not_taken(catalog: Catalog) -> None:
    stale = _route_status(ACCEPTED, generation=2)
    assert route_parents_of(stale)[0].conditions == ()
    snap, _ = settled(catalog, body(routing={"inferencePool": POOL, "httpRoute": ROUTE}))
    waiting, _ = routable_after(
        catalog, picker=True, children=_with_route(dict(snap.children), stale)
    )
    assert waiting.reason == "WaitingForGateway"


def test_a_pool_without_a_route_is_routable_once_applied_with_its_picker(
    catalog: Catalog,
) -> None:
    ready, _ = routable_after(catalog, picker=True, route=False)
    assert (ready.status, ready.reason) == ("True", "Routable")
    snap, _ = settled(catalog, body(routing={"inferencePool": POOL}))
    children = {k: v for k, v in snap.children.items() if k[0] != "InferencePool"}
    applying, outcome = routable_after(catalog, picker=True, route=False, children=children)
    assert (applying.status, applying.reason) == ("Unknown", "Applying")
    assert [o["kind"] for o in outcome.apply] == ["InferencePool"]
    refused = "InferencePool (inference.networking.k8s.io/v1) is not served by this cluster"
    failed, _ = routable_after(catalog, picker=True, route=False, children=children, error=refused)
    assert (failed.status, failed.reason) == ("False", "ApplyFailed")
    assert failed.message == f"InferencePool/m not applied: {refused}"


def test_no_routing_no_routable(catalog: Catalog) -> None:
    snap, _ = settled(catalog, body())
    assert "Routable" not in conditions(decide(snap, config(catalog)))


def test_a_picker_service_event_finds_the_objects_that_name_it() -> None:
    index = Index()
    for name, service in (("a", "my-epp"), ("b", "other-epp"), ("c", None)):
        spec: dict[str, Any] = {"model": {"name": "m"}}
        if service is not None:
            spec["routing"] = {"inferencePool": {"endpointPicker": {"service": service}}}
        index.object_seen(
            {"metadata": {"namespace": "ns", "name": name, "uid": name}, "spec": spec}
        )
    index.object_seen(
        {
            "metadata": {"namespace": "elsewhere", "name": "d", "uid": "d"},
            "spec": spec_with(inferencePool=POOL),
        }
    )
    assert index.picker_users("ns", "my-epp") == [("ns", "a")]
    assert index.picker_users("ns", "nobody") == []
    assert index.picker_users("elsewhere", "my-epp") == [("elsewhere", "d")]
    index.object_seen({"metadata": {"namespace": "ns", "name": "e", "uid": "e"}, "spec": "garbled"})
    assert index.picker_users("ns", "my-epp") == [("ns", "a")]


def test_the_reconcile_learns_of_the_picker_from_the_names_map_or_asks(
    catalog: Catalog,
) -> None:
    cluster = FakeCluster()
    cluster.body = body(routing={"inferencePool": POOL})
    settings = OperatorSettings(standalone=True, workers=1, status_interval_seconds=3600)
    made = Reconciler(settings, catalog, LOCK, cluster)  # type: ignore[arg-type]
    made.object_event("ADDED", cluster.body)
    # Before any relist the names map cannot answer: the API server is asked.
    assert made._reconcile_one(("ns", "m"))[0] == "success"
    assert ("Service", "my-epp") in cluster.asked
    routable = {c["type"]: c for c in cluster.body["status"]["conditions"]}["Routable"]
    assert routable["reason"] == "EndpointPickerNotFound"
    # Once relisted, the map answers; the picker's Service appearing queues the object.
    made.names.relisted({}, made.names.mark())
    while made.queue.get(timeout_s=0) is not None:
        made.queue.done(("ns", "m"))
    service = {"metadata": {"namespace": "ns", "name": "my-epp", "uid": "s1"}}
    made.child_event("Service", "ADDED", service)
    assert made.queue.get(timeout_s=0) is not None
    made.queue.done(("ns", "m"))
    cluster.asked.clear()
    made.object_event("MODIFIED", cluster.body)
    assert made._reconcile_one(("ns", "m"))[0] == "success"
    assert ("Service", "my-epp") not in cluster.asked
    routable = {c["type"]: c for c in cluster.body["status"]["conditions"]}["Routable"]
    # The first reconcile applied the pool (its answer is in the index): routable now.
    assert (routable["status"], routable["reason"]) == ("True", "Routable")
