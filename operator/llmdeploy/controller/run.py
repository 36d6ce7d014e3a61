"""`llmdeploy run`: the operator process."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import uuid
import warnings
from collections.abc import Mapping
from typing import Any

import aiohttp
import kopf
import prometheus_client
from kopf._core.engines.peering import Identity  # a NewType of str that kopf.run is typed with
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from llmdeploy.catalog import load_catalog, load_image_lock
from llmdeploy.cluster.kube import Cluster, Timeouts, with_timeouts
from llmdeploy.controller.handlers import register
from llmdeploy.controller.reconciler import Reconciler
from llmdeploy.controller.settings import OperatorSettings
from llmdeploy.render.kinds import CHILD_KINDS


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        extra = getattr(record, "k8s_ref", None)  # kopf's per-object loggers set it
        if extra:
            entry["object"] = extra
        return json.dumps(entry, default=str)


class NoClusterError(Exception):
    """Neither a cluster's service account nor a kubeconfig says where the API server is."""


def _api_client(settings: OperatorSettings) -> k8s.ApiClient:
    try:
        k8s_config.load_incluster_config()  # type: ignore[no-untyped-call]
    except k8s_config.ConfigException:
        try:
            k8s_config.load_kube_config()  # type: ignore[no-untyped-call]
        except k8s_config.ConfigException as exc:
            raise NoClusterError(
                "no Kubernetes API server to connect to: not running in a cluster, and no "
                f"usable kubeconfig (KUBECONFIG or ~/.kube/config): {exc}"
            ) from None
    timeouts = Timeouts(settings.connect_timeout_seconds, settings.request_timeout_seconds)
    return with_timeouts(k8s.ApiClient(), timeouts)


def build_registry(
    settings: OperatorSettings, identity: str, priority: int
) -> kopf.OperatorRegistry:
    catalog = load_catalog(settings.catalog_files)
    lock = load_image_lock(settings.image_lock_file)
    cluster = Cluster(_api_client(settings))
    scopes: list[str | None] = list(settings.namespaces) or [None]

    def peers() -> list[Mapping[str, Any]]:
        return [cluster.peers(settings.peering_name, scope) for scope in scopes]

    reconciler = Reconciler(
        settings, catalog, lock, cluster, None if settings.standalone else peers, identity, priority
    )
    registry = kopf.OperatorRegistry()
    register(registry, reconciler)

    # A private registry does not get kopf's default login handlers.
    @kopf.on.login(registry=registry)
    async def login(**kwargs: Any) -> kopf.AiohttpSession | None:
        # kopf's watches hold connections of the same pool for minutes: one per watched kind
        # and scope (LLMDeployments, every child kind, peering), plus CRDs and namespaces.
        watches = (len(CHILD_KINDS) + 2) * max(1, len(settings.namespaces)) + 2
        info = await asyncio.to_thread(kopf.login_via_client, **kwargs)  # reads files
        return pooled(info, settings.api_connections + watches)

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        operator = reconciler.settings
        settings.watching.server_timeout = operator.watch_server_timeout_seconds
        settings.watching.client_timeout = operator.watch_client_timeout_seconds
        settings.watching.connect_timeout = operator.connect_timeout_seconds
        settings.networking.request_timeout = operator.request_timeout_seconds
        settings.networking.connect_timeout = operator.connect_timeout_seconds
        # Events are the reconciler's own; kopf would post one per handled watch event.
        settings.posting.enabled = False
        # The priority comes through kopf.run below; kopf.run also makes a named peering
        # mandatory, which a standalone operator must not wait for.
        settings.peering.standalone = operator.standalone
        settings.peering.mandatory = not operator.standalone
        settings.peering.lifetime = operator.peering_lifetime_seconds

    @kopf.on.startup(registry=registry)
    def start(**_: Any) -> None:
        if not reconciler.settings.standalone:
            cluster.ensure_peering(reconciler.settings.peering_name, reconciler.settings.namespaces)
        reconciler.start()

    @kopf.on.cleanup(registry=registry)
    def stop(**_: Any) -> None:
        reconciler.stop()

    return registry


def pooled(info: kopf.ConnectionInfo | None, connections: int) -> kopf.AiohttpSession | None:
    """kopf's own session with at most `connections` connections to the API server. kopf's
    default has no limit: a burst of patches at start opened ~250, each holding 128 KiB of
    buffers (tracemalloc, 1,000 objects), the largest growth of the operator's peak memory.
    Call from the event loop (an async login handler): the session binds to it."""
    if info is None:
        return None
    with warnings.catch_warnings():  # kopf's own session is built the same way
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="kopf")
        auth = info.as_aiohttp_basic_auth()
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections, ssl=info.as_ssl_context()),
        headers=info.as_http_headers(),
        auth=auth,
        proxy=info.proxy_url,
        trust_env=info.trust_env,
    )
    return kopf.AiohttpSession(
        server=info.server,
        default_namespace=info.default_namespace,
        expiration=info.expiration,
        aiohttp_session=session,
    )


def own_identity() -> str:
    """This replica's name in the peering object: unique per process, and readable."""
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


def peering_priority(settings: OperatorSettings, started: float) -> int:
    """kopf pauses every replica when two share a priority, so no setting can give two replicas
    the same one: the configured rank comes first, then the start time (in milliseconds), the
    replica that started first ranking higher, so a restarted replica queues behind it."""
    return settings.priority * 10**13 - int(started * 1000)


def run_operator(settings: OperatorSettings) -> None:
    handler = logging.StreamHandler()
    if settings.json_logs:
        handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    # kopf logs every handled watch event at INFO ("Handler ... succeeded"): thousands a minute.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    identity = own_identity()
    priority = peering_priority(settings, time.time())
    registry = build_registry(settings, identity, priority)
    if settings.metrics_port:
        prometheus_client.start_http_server(settings.metrics_port)
    kopf.run(
        registry=registry,
        clusterwide=not settings.namespaces,
        namespaces=settings.namespaces,
        standalone=settings.standalone,
        peering_name=settings.peering_name,
        priority=priority,
        identity=Identity(identity),
        liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz"
        if settings.health_port
        else None,
    )
