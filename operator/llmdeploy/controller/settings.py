"""Operator settings, from LLMDEPLOY_* environment variables (a mounted ConfigMap sets them)."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from llmdeploy.api.types import NAME_PATTERN
from llmdeploy.controller.state import EXCLUDED_GPU_TTL_S, MEASURE_INTERVAL_S, MEASURE_WINDOW
from llmdeploy.measure.queries import WindowError, window_seconds
from llmdeploy.render import DEFAULT_PROMETHEUS, HostAccess, PrometheusTarget
from llmdeploy.render.manifests import KEDA_AUTH_MODES, PROMETHEUS_URL_PATTERN
from llmdeploy.sizing.inventory import provisionable_skus


class PrometheusEndpoint(BaseModel):
    """A Prometheus the operator may query, with the credentials that belong to it alone."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    url: str = Field(pattern=PROMETHEUS_URL_PATTERN, max_length=2048)
    bearer_token_file: Path | None = None
    ca_file: Path | None = None
    insecure_skip_verify: bool = False
    # For objects in mode keda: KEDA queries the same endpoint with credentials of its own.
    keda_authentication: str | None = Field(default=None, pattern=NAME_PATTERN)
    keda_auth_modes: str | None = Field(default=None, pattern=KEDA_AUTH_MODES)

    def target(self) -> PrometheusTarget:
        """The endpoint as KEDA sees it (no credentials of the operator's); checked here."""
        return PrometheusTarget.model_construct(
            url=self.url,
            keda_authentication=self.keda_authentication,
            keda_auth_modes=self.keda_auth_modes,
        )


def with_default(
    named: Mapping[str, PrometheusEndpoint], default: PrometheusEndpoint | None
) -> dict[str, PrometheusEndpoint]:
    """The named endpoints and the flat default (prometheus_url), which may not both name it."""
    if default is None:
        return dict(named)
    if DEFAULT_PROMETHEUS in named:
        raise ValueError(
            f'prometheus_endpoints names "{DEFAULT_PROMETHEUS}", which prometheus_url already '
            "is: set one of them"
        )
    return {**named, DEFAULT_PROMETHEUS: default}


# kopf pauses every replica when two share a peering priority, so the rank is combined with the
# start time in microseconds (peering_priority in run.py); this bound keeps it inside an int64.
PRIORITY_BOUND = 900


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LLMDEPLOY_", frozen=True)

    namespaces: Annotated[
        list[Annotated[str, StringConstraints(pattern=NAME_PATTERN, max_length=63)]], NoDecode
    ] = Field(
        default_factory=list,
        description="Namespaces to watch (comma-separated names); empty: all.",
    )
    catalog_files: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, description="Catalog extension files (GPUs, models, prices)."
    )
    image_lock_file: Path | None = Field(default=None, description="Replacement image lock.")
    provisionable_gpus: Annotated[list[str], NoDecode] | None = Field(
        default=None,
        description="SKUs a cluster autoscaler can add even with no node yet; '*' for all. "
        "Unset: only SKUs on the cluster's nodes.",
    )
    prometheus_url: str | None = Field(
        default=None,
        pattern=PROMETHEUS_URL_PATTERN,
        description="The default Prometheus, for operator-mode autoscaling and measurements.",
    )
    prometheus_endpoints: dict[
        Annotated[str, StringConstraints(pattern=NAME_PATTERN)],
        PrometheusEndpoint,
    ] = Field(
        default_factory=dict,
        description="More Prometheus endpoints objects may name in spec.scaling.prometheus, "
        'as JSON: {"team-a": {"url": "https://...", "bearerTokenFile": "/var/run/..."}}. '
        "Objects can name no other; the flat prometheus_* settings are the one named default.",
    )
    prometheus_timeout_seconds: float = Field(
        default=5.0, gt=0, le=60, description="Deadline of one query, retries included."
    )
    prometheus_reading_timeout_seconds: float = Field(
        default=20.0,
        gt=0,
        le=600,
        description="Deadline of all the queries of one reading together (an autoscaler tick, "
        "a measurement): a Prometheus that answers each query slowly but in time holds a "
        "reconcile no longer than this.",
    )
    prometheus_backoff_seconds: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description="A Prometheus endpoint that did not answer in time (or at all, or took over "
        "half the deadline) is not asked again for this long: readings meanwhile say why at once, "
        "and then one asks while the others wait.",
    )
    prometheus_bearer_token_file: Path | None = Field(
        default=None, description="File with a bearer token for Prometheus."
    )
    prometheus_ca_file: Path | None = Field(default=None, description="CA bundle for https.")
    prometheus_insecure_skip_verify: bool = Field(
        default=False, description="Skip TLS verification of the default Prometheus."
    )
    prometheus_keda_authentication: str | None = Field(
        default=None,
        pattern=NAME_PATTERN,
        description="For objects in mode keda: the ClusterTriggerAuthentication KEDA uses "
        "with the default endpoint.",
    )
    prometheus_keda_auth_modes: str | None = Field(
        default=None, pattern=KEDA_AUTH_MODES, description="KEDA's authModes for it."
    )
    measure_interval_seconds: float = Field(
        default=MEASURE_INTERVAL_S,
        ge=1,
        le=86_400,
        description="Seconds between measurements of each LLMDeployment from its Prometheus "
        "endpoint (status.observed, SLOMet, PlanDrift).",
    )
    measure_window: str = Field(
        default=MEASURE_WINDOW,
        description="The window each measurement covers, up to its time: a whole number of "
        "s, m, h or d, e.g. 10m.",
    )
    allowed_host_path_prefixes: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Node directories an LLMDeployment's model.cache.hostPath may be in "
        "(comma-separated); empty: hostPath is refused.",
    )
    allow_control_plane_nodes: bool = Field(
        default=False, description="Let placement select or tolerate control-plane nodes."
    )
    excluded_gpu_ttl_seconds: float = Field(
        default=EXCLUDED_GPU_TTL_S,
        gt=0,
        description="How long a SKU that placement.fallback dropped (status.excludedGpus) "
        "stays excluded; then the plan is made again and the SKU tried again.",
    )
    status_interval_seconds: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="Seconds between periodic resyncs, which enqueue every LLMDeployment "
        "(repairs, capacity checks, the operator-mode autoscaler's tick).",
    )
    relist_seconds: float = Field(
        default=300.0,
        gt=0,
        description="Seconds between full lists that rebuild the watch-fed index (a watch "
        "that restarts after a gap sends no event for what went in the gap).",
    )
    workers: int = Field(
        default=4, ge=1, le=256, description="Work-queue workers: concurrent reconciles."
    )
    reconcile_timeout_seconds: float = Field(
        default=60.0, gt=0, description="Bound of one reconcile; the rest waits for a retry."
    )
    stall_seconds: float = Field(
        default=120.0,
        gt=0,
        description="Liveness fails when work is pending and no reconcile has reached the API "
        "server for this long.",
    )
    api_connections: int = Field(
        default=16,
        ge=1,
        le=1000,
        description="Most connections kopf opens to the API server at once for requests, "
        "besides its watches; more requests wait.",
    )
    peering_name: str = Field(default="llmdeploy", description="kopf peering object.")
    standalone: bool = Field(default=False, description="Run without peering (no HA).")
    priority: int = Field(
        default=0,
        ge=-PRIORITY_BOUND,
        le=PRIORITY_BOUND,
        description="Peering rank of this replica: the highest acts. Replicas of the same rank "
        "(a shared setting included) are ordered by start time, the first acting.",
    )
    peering_lifetime_seconds: int = Field(
        default=60,
        ge=5,
        le=3600,
        description="A replica that stops renewing its peering record for this long is taken "
        "for dead, and a paused replica takes over.",
    )
    health_port: int = Field(default=8080, ge=0, le=65535, description="/healthz port; 0 off.")
    metrics_port: int = Field(default=9090, ge=0, le=65535, description="/metrics port; 0 off.")
    json_logs: bool = Field(default=False, description="Log JSON lines.")
    watch_server_timeout_seconds: int = Field(
        default=300, ge=10, description="The API server ends each watch after this long."
    )
    watch_client_timeout_seconds: int = Field(
        default=330, ge=10, description="A watch silent for this long is dropped and restarted."
    )
    request_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Read timeout of every API request, kopf's and the operator's own.",
    )
    connect_timeout_seconds: float = Field(
        default=5.0, gt=0, description="Connect timeout of every API request."
    )

    @field_validator(
        "namespaces",
        "catalog_files",
        "provisionable_gpus",
        "allowed_host_path_prefixes",
        mode="before",
    )
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("measure_window")
    @classmethod
    def _window(cls, value: str) -> str:
        try:
            window_seconds(value)
        except WindowError as exc:
            raise ValueError(str(exc)) from None
        return value

    def measure_window_seconds(self) -> int:
        return window_seconds(self.measure_window)

    def prometheus(self) -> dict[str, PrometheusEndpoint]:
        """Every endpoint an object may name, the default included."""
        default = None
        if self.prometheus_url:
            default = PrometheusEndpoint(
                url=self.prometheus_url,
                bearer_token_file=self.prometheus_bearer_token_file,
                ca_file=self.prometheus_ca_file,
                insecure_skip_verify=self.prometheus_insecure_skip_verify,
                keda_authentication=self.prometheus_keda_authentication,
                keda_auth_modes=self.prometheus_keda_auth_modes,
            )
        return with_default(self.prometheus_endpoints, default)

    @model_validator(mode="after")
    def _one_default(self) -> OperatorSettings:
        self.prometheus()  # raises when both name the default
        return self

    def prometheus_targets(self) -> dict[str, PrometheusTarget]:
        """Every endpoint an object may name, as the renderer needs it for KEDA."""
        return {name: endpoint.target() for name, endpoint in self.prometheus().items()}

    def host_access(self) -> HostAccess:
        return HostAccess(
            allowed_host_path_prefixes=tuple(self.allowed_host_path_prefixes),
            allow_control_plane_nodes=self.allow_control_plane_nodes,
        )

    def provisionable(self) -> set[str] | None:
        """None when every catalog SKU counts as provisionable."""
        return provisionable_skus(self.provisionable_gpus)


def _kind(annotation: Any) -> str:
    text = str(annotation)
    if "list[" in text:
        return "comma-separated list"
    if "dict[" in text:
        return "JSON object"
    for name, kind in (("bool", "boolean"), ("int", "integer"), ("float", "number")):
        if text in {name, f"<class '{name}'>"}:
            return kind
    return "path" if "Path" in text else "string"


def settings_markdown() -> str:
    """docs/settings.md: every setting of OperatorSettings (tests/unit/test_docs.py keeps the
    file in step; `make docs` writes it)."""
    lines = [
        "# Operator settings",
        "",
        "<!-- Generated from OperatorSettings (operator/llmdeploy/controller/settings.py) by",
        "     `make docs`; tests/unit/test_docs.py fails when this file is stale. -->",
        "",
        "Each setting is an environment variable of the operator, set in the `llmdeploy-settings`",
        "ConfigMap (`manifests/base/settings.yaml`, or the chart's `settings` value). A value that",
        "does not parse stops the operator at start with the variable's name and the reason.",
        "",
        "| variable | type | default | what it does |",
        "| --- | --- | --- | --- |",
    ]
    for name, field in OperatorSettings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        shown = "unset" if default is None or default in ([], {}) else f"`{json.dumps(default)}`"
        description = (field.description or "").replace("|", "\\|")
        lines.append(
            f"| `LLMDEPLOY_{name.upper()}` | {_kind(field.annotation)} | {shown} | {description} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(settings_markdown())
