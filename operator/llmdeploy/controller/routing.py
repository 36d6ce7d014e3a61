"""The Routable condition: whether spec.routing's objects can carry traffic. Pure, for decide.

Routable is True once the InferencePool (and the HTTPRoute) are applied as rendered, the
endpoint picker's Service exists, and, with an HTTPRoute, the Gateway's controller accepted it
and resolved its backends. An object without spec.routing.inferencePool has no Routable.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from llmdeploy.api.types import LLMDeployment
from llmdeploy.cluster.objects import ChildKey, LiveChild
from llmdeploy.measure.observed import Verdict

PICKER_FIELD = "spec.routing.inferencePool.endpointPicker.service"


def endpoint_picker_of(body: Mapping[str, Any]) -> str | None:
    """The picker Service an LLMDeployment's body names, read as written (the body may be
    invalid: a reconcile says so, this only routes Service events to it)."""
    try:
        name = body["spec"]["routing"]["inferencePool"]["endpointPicker"]["service"]
    except (KeyError, TypeError):
        return None
    return name if isinstance(name, str) else None


def routable(
    resource: LLMDeployment,
    namespace: str,
    children: Mapping[ChildKey, LiveChild],
    unapplied: Collection[ChildKey],
    picker_found: bool | None,
    error: str | None = None,
) -> Verdict | None:
    """The Routable verdict. `unapplied`: the children this reconcile (re)applies, which are
    not yet as rendered; `picker_found`: whether the picker's Service exists (None: unknown);
    `error`: why the last apply failed, if it did."""
    routing = resource.spec.routing
    if routing is None or routing.inference_pool is None:
        return None
    name = resource.metadata.name
    service = routing.inference_pool.endpoint_picker.service
    if picker_found is False:
        return Verdict(
            status="False",
            reason="EndpointPickerNotFound",
            message=f"Service {service} ({PICKER_FIELD}) does not exist in namespace "
            f"{namespace}: the gateway has no endpoint picker to ask for a pod",
        )
    wanted: list[ChildKey] = [("InferencePool", name)]
    if routing.http_route is not None:
        wanted.append(("HTTPRoute", name))
    pending = sorted(
        f"{kind}/{child}"
        for kind, child in wanted
        if (kind, child) not in children or (kind, child) in unapplied
    )
    if pending and error:  # e.g. the cluster does not serve the InferencePool CRD
        return Verdict(
            status="False",
            reason="ApplyFailed",
            message=f"{', '.join(pending)} not applied: {error}",
        )
    if pending:
        return Verdict(
            status="Unknown", reason="Applying", message=f"{', '.join(pending)} not applied yet"
        )
    if picker_found is None:
        return Verdict(
            status="Unknown",
            reason="EndpointPickerUnknown",
            message=f"whether Service {service} exists is not known yet",
        )
    pool = f"InferencePool {name} (engine pods of {name}) with endpoint picker {service}"
    if routing.http_route is None:
        return Verdict(status="True", reason="Routable", message=pool)
    gateway_ref = routing.http_route.gateway
    gateway = f"{gateway_ref.namespace or namespace}/{gateway_ref.name}"
    parents = [p for p in children[("HTTPRoute", name)].route_parents if p.gateway == gateway]
    verdicts = {
        (type_, status): (p.controller, reason, message)
        for p in parents
        for type_, status, reason, message in p.conditions
    }
    for type_, reason in (
        ("Accepted", "RouteNotAccepted"),
        ("ResolvedRefs", "RouteRefsNotResolved"),
    ):
        refused = verdicts.get((type_, "False"))
        if refused is not None:
            controller, why, message = refused
            return Verdict(
                status="False",
                reason=reason,
                message=f"Gateway {gateway} ({controller}): HTTPRoute {name} {type_}=False "
                f"({why}): {message}",
            )
    accepted = verdicts.get(("Accepted", "True"))
    if accepted is None:
        return Verdict(
            status="Unknown",
            reason="WaitingForGateway",
            message=f"no controller of Gateway {gateway} has accepted HTTPRoute {name} yet",
        )
    return Verdict(
        status="True",
        reason="Routable",
        message=f"{pool}; HTTPRoute {name} accepted by Gateway {gateway} ({accepted[0]})",
    )
