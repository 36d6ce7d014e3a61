"""`llmdeploy` command line: every decision the operator makes, reproducible offline.

Exit codes: 0 feasible, 1 nothing feasible (the plan is still printed), 2 invalid input,
3 internal error; `plan --diff` exits 1 when NEW is not feasible. `report`: 0 SLO met (or none
set), 1 SLO missed, 4 not enough data to tell (the report is printed in each case). Errors are
one line on stderr; --debug shows an internal error's traceback.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from llmdeploy.api.status import Calibration
from llmdeploy.api.types import (
    MAX_REQUESTS_PER_SECOND,
    EngineName,
    LLMDeployment,
    format_validation_error,
    parse_llmdeployment,
)
from llmdeploy.catalog import (
    Catalog,
    ImageLock,
    architecture_from_hf_config,
    load_catalog,
    load_image_lock,
)
from llmdeploy.controller.planning import desired_state, plan_for_cluster
from llmdeploy.controller.recommend import recommend, recommendation_basis
from llmdeploy.controller.settings import PrometheusEndpoint, with_default
from llmdeploy.controller.status import recorded_served_since
from llmdeploy.documents import DocumentError, decode, load_json, load_yaml_documents, read_text
from llmdeploy.measure.calibration import RATIO_BOUNDS, calibrated, latency_calibration
from llmdeploy.measure.observed import observe
from llmdeploy.measure.queries import WindowError, measurement_queries, window_seconds
from llmdeploy.measure.report import build_report, format_report
from llmdeploy.measure.results import RESULTS_FORMAT, SavedResults, readings, series
from llmdeploy.output_dir import write_rendered
from llmdeploy.render import (
    HostAccess,
    PrometheusTarget,
    RenderError,
    to_yaml,
)
from llmdeploy.sizing import (
    LatencyCalibration,
    Plan,
    SpecError,
    feasible_alternatives,
    plan_deployment,
)
from llmdeploy.sizing.diff import (
    DEFAULT_PILOT_PERCENT,
    DiffInputError,
    Side,
    diff_plans,
    format_diff,
    side,
)
from llmdeploy.sizing.inventory import (
    Inventory,
    NodeError,
    inventory_from_nodes,
    node_documents,
    provisionable_skus,
)

EXIT_FEASIBLE, EXIT_INFEASIBLE, EXIT_INVALID, EXIT_INTERNAL = 0, 1, 2, 3
EXIT_UNMEASURED = 4  # report: SLOMet is Unknown
MAX_COLD_START_S = 86_400.0
MAX_TRACE_T = 1e9  # seconds: three decades of trace
DEFAULT_SINCE = "24h"
MAX_TIMEOUT_S = 600.0

ENDPOINTS = TypeAdapter(dict[str, PrometheusEndpoint])


class InputError(Exception):
    """Input the user must fix; the message names the file or field."""


class SetupError(Exception):
    """What the command needs around it is missing (exit 3): the message says what."""


def _documents(path: str) -> tuple[str, list[Any]]:
    """The file's (or stdin's, for -) name for messages, and its YAML documents but empty ones."""
    origin = "stdin" if path == "-" else path
    text = decode(sys.stdin.buffer.read(), origin) if path == "-" else read_text(Path(path))
    return origin, [d for d in load_yaml_documents(text, origin) if d is not None]


def read_manifest(path: str) -> LLMDeployment:
    _, documents = _documents(path)
    matches = [d for d in documents if isinstance(d, dict) and d.get("kind") == "LLMDeployment"]
    if len(matches) != 1:
        found = "no" if not matches else str(len(matches))
        raise InputError(f"{path}: expected one LLMDeployment document, found {found}")
    try:
        return parse_llmdeployment(matches[0])
    except ValidationError as exc:
        raise InputError(format_validation_error(exc)) from None


def _with_hf_config(resource: LLMDeployment, path: str) -> LLMDeployment:
    """Fill spec.model.architecture from a local config.json (explicit spec values win)."""
    config = load_json(read_text(Path(path)), path)
    try:
        merged = architecture_from_hf_config(config, resource.spec.model.architecture)
    except ValueError as exc:
        raise InputError(f"--model-config {path}: {exc}") from None
    model = resource.spec.model.model_copy(update={"architecture": merged})
    spec = resource.spec.model_copy(update={"model": model})
    return resource.model_copy(update={"spec": spec})


def _load(args: argparse.Namespace) -> tuple[LLMDeployment, Catalog, ImageLock]:
    resource = read_manifest(args.file)
    if args.model_config:
        resource = _with_hf_config(resource, args.model_config)
    lock = load_image_lock(Path(args.image_lock) if args.image_lock else None)
    return resource, load_catalog(Path(p) for p in args.catalog), lock


class ClusterView:
    """What the operator plans against, from --inventory and --provisionable: its nodes and
    the SKUs a cluster autoscaler can add (None: every catalog SKU, unconstrained)."""

    def __init__(self, args: argparse.Namespace, catalog: Catalog) -> None:
        self.inventory = Inventory()
        path = args.inventory
        if args.from_cluster:
            path = "the current kubeconfig's cluster"
            self.inventory = inventory_from_nodes(_cluster_nodes())
        elif path is not None:
            if path == "-" and args.file == "-":
                raise InputError("--inventory: stdin is already the manifest (-f -)")
            origin = "stdin" if path == "-" else path
            raw = sys.stdin.buffer.read() if path == "-" else None
            text = decode(raw, origin) if raw is not None else read_text(Path(path))
            try:
                nodes = node_documents(load_yaml_documents(text, origin))
                self.inventory = inventory_from_nodes(nodes)
            except NodeError as exc:
                raise InputError(f"--inventory {origin}: {exc}") from None
        names = None if args.provisionable is None else args.provisionable.split(",")
        if names is not None:
            unknown = [n.strip() for n in names if n.strip() not in {*catalog.gpus, "*", ""}]
            if unknown:
                raise InputError(
                    f"--provisionable: unknown GPU {unknown[0]!r}; "
                    f"known: {', '.join(sorted(catalog.gpus))}"
                )
        if path is None and names is None:  # neither nodes nor autoscaler SKUs given
            self.provisionable: set[str] | None = None
            self.scope = (
                "planned for an unconstrained catalog (no --inventory): every catalog GPU "
                "counts as available and each engine's default image as the one that runs"
            )
        else:
            # As the operator does with LLMDEPLOY_PROVISIONABLE_GPUS (unset: none).
            self.provisionable = provisionable_skus(names)
            skus = sorted({sku for sku in catalog.gpus if self.inventory.sku_nodes(catalog, sku)})
            extra = (
                "every catalog GPU"
                if self.provisionable is None
                else ", ".join(sorted(self.provisionable)) or "none"
            )
            self.scope = (
                f"planned for the cluster: {len(self.inventory.nodes)} GPU node(s) of "
                f"{', '.join(skus) or 'no catalog SKU'}; provisionable: {extra}"
            )

    def plan(
        self,
        resource: LLMDeployment,
        catalog: Catalog,
        lock: ImageLock,
        calibration: LatencyCalibration | None = None,
    ) -> Plan:
        return plan_for_cluster(
            resource,
            catalog,
            self.inventory,
            self.provisionable,
            lock=lock,
            calibration=calibration,
        )


def _calibration(path: str | None) -> LatencyCalibration | None:
    """--calibration: an LLMDeployment or its status as the operator wrote it (its
    status.calibration), or the calibration mapping alone."""
    if path is None:
        return None
    documents = load_yaml_documents(read_text(Path(path)), path)
    if len(documents) != 1 or not isinstance(documents[0], dict):
        raise InputError(f"--calibration {path}: expected one mapping")
    found: Any = documents[0]
    for key in ("status", "calibration"):
        if isinstance(found, dict) and key in found:
            found = found[key]
    try:
        # Strict like the API server: no `true` or "2" for a number.
        calibration = Calibration.model_validate(found, strict=True)
    except ValidationError as exc:
        raise InputError(format_validation_error(exc, "--calibration")) from None
    low, high = RATIO_BOUNDS
    for field, ratio in (
        ("ttftRatio", calibration.ttft_ratio),
        ("tpotRatio", calibration.tpot_ratio),
    ):
        if not low <= ratio <= high:
            raise InputError(
                f"--calibration {path}: {field} {ratio:g} is outside [{low:g}, {high:g}], the "
                "range the operator keeps a calibration in"
            )
    return latency_calibration(calibration)


def _cluster_nodes() -> list[dict[str, Any]]:
    """The nodes of the current kubeconfig's cluster (`--from-cluster`), as JSON objects."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException
    from urllib3.exceptions import HTTPError

    try:
        # KUBECONFIG as it is now (the library reads it once, at import).
        api = config.new_client_from_config(os.environ.get("KUBECONFIG"))  # type: ignore[no-untyped-call]
        nodes = client.CoreV1Api(api).list_node(_request_timeout=(10, 60)).items
    except ConfigException as exc:
        raise InputError(f"--from-cluster: no usable kubeconfig: {exc}") from None
    except client.ApiException as exc:
        raise InputError(f"--from-cluster: list nodes: {exc.status} {exc.reason}") from None
    except HTTPError as exc:
        raise InputError(f"--from-cluster: the API server did not answer: {exc}") from None
    return [api.sanitize_for_serialization(node) for node in nodes]


def _note(args: argparse.Namespace, message: str) -> None:
    """A line for stderr once stdout is written (errors stay one line)."""
    args.note = message


def _write(output: str, document: dict[str, Any], table: str) -> None:
    """`-o json|yaml|table`: the document in the order its model gives, or the table."""
    if output == "json":
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    elif output == "yaml":
        sys.stdout.write(yaml.safe_dump(document, sort_keys=False))
    else:
        sys.stdout.write(table)


def format_plan_table(plan: Plan) -> str:
    lines = []
    if plan.feasible:
        lines.append(
            f"PLAN  {plan.model} on {plan.engine}"
            f"{f' {plan.engine_version}' if plan.engine_version else ''}: "
            f"{plan.gpu} x{plan.gpu_count} "
            f"(TP {plan.tensor_parallel}, PP {plan.pipeline_parallel}"
            f"{f', EP {plan.expert_parallel}' if plan.expert_parallel else ''}), "
            f"{plan.quantization} "
            f"weights, {plan.kv_cache_dtype} KV cache, {plan.replicas} replica(s)"
        )
        lines.append(
            f"  memory/GPU  weights {plan.weights_gib_per_gpu} GiB, activations "
            f"{plan.activation_gib_per_gpu} GiB, non-torch {plan.non_torch_gib_per_gpu} GiB, "
            + (
                f"CUDA graphs {plan.cuda_graph_gib_per_gpu} GiB, "
                if plan.cuda_graph_gib_per_gpu
                else ""
            )
            + f"KV {plan.kv_cache_gib_per_gpu} GiB = {plan.kv_cache_tokens} tokens "
            f"({plan.max_concurrency} x {plan.max_context_length})"
        )
        lines.append(
            f"  estimate    TTFT {plan.estimated_ttft_ms} ms, TPOT {plan.estimated_tpot_ms} ms, "
            f"{plan.estimated_tokens_per_second} tokens/s per replica"
        )
        if plan.ttft_calibration is not None:
            lines.append(
                f"  calibrated  x{plan.ttft_calibration} TTFT, x{plan.tpot_calibration} TPOT "
                "(measured/predicted of the running deployment)"
            )
        lines.append(
            f"  cost        ${plan.cost_per_hour}/h, ${plan.cost_per_million_tokens} per 1M tokens"
        )
    else:
        lines.append(f"NO FEASIBLE PLAN  {plan.model} on {plan.engine}")
    lines.append("  why:")
    lines.extend(f"    - {reason}" for reason in plan.reasons)
    if plan.alternatives:
        # An MoE model's alternatives say how they hold the experts; a dense one's have no EP.
        moe = any(a.expert_parallel is not None for a in plan.alternatives)
        header = ("GPU", "GPUS", "QUANT", "TP", "PP", *(("EP",) if moe else ()), "KV", "TTFT")
        header += ("TPOT", "$/1M", "WHY NOT")
        rows = [header] + [
            (
                a.gpu,
                str(a.gpu_count),
                a.quantization,
                str(a.tensor_parallel),
                str(a.pipeline_parallel),
                *((str(a.expert_parallel),) if moe else ()),
                a.kv_cache_dtype,
                "-" if a.estimated_ttft_ms is None else f"{a.estimated_ttft_ms:.0f}ms",
                "-" if a.estimated_tpot_ms is None else f"{a.estimated_tpot_ms:.1f}ms",
                "-" if a.cost_per_million_tokens is None else f"{a.cost_per_million_tokens:.3f}",
                a.reason,
            )
            for a in plan.alternatives
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
        lines.append("  alternatives:")
        for row in rows:
            cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
            lines.append("    " + "  ".join([*cells, row[-1]]))
    return "\n".join(lines) + "\n"


def _plot_path(path: str) -> Path:
    if Path(path).suffix.lower() not in (".svg", ".png"):
        raise InputError(f"--plot {path}: the file name must end in .svg or .png")
    return Path(path)


def _save_picture(path: Path, draw: Callable[[Path], None]) -> None:
    try:
        draw(path)
    except OSError as exc:
        raise InputError(f"--plot {path}: {exc.strerror or exc}") from None


def _pictures() -> ModuleType:
    try:
        return importlib.import_module("llmdeploy.pictures")
    except ImportError as exc:
        if exc.name is None or not exc.name.startswith("matplotlib"):
            raise
        raise InputError("--plot needs matplotlib: pip install 'llmdeploy[plot]'") from None


def _diff_side(path: str) -> Side:
    origin, documents = _documents(path)
    if len(documents) != 1:
        raise InputError(f"{origin}: expected one document, found {len(documents)}")
    try:
        return side(documents[0], origin)
    except DiffInputError as exc:
        raise InputError(str(exc)) from None


# What plans a manifest, and so means nothing to --diff (which compares two plans).
PLANNING_OPTIONS = {
    "file": "-f",
    "model_config": "--model-config",
    "image_lock": "--image-lock",
    "inventory": "--inventory",
    "from_cluster": "--from-cluster",
    "provisionable": "--provisionable",
    "catalog": "--catalog",
    "plot": "--plot",
    "calibration": "--calibration",
}


def cmd_plan_diff(args: argparse.Namespace) -> int:
    given = [flag for key, flag in PLANNING_OPTIONS.items() if getattr(args, key)]
    if given:
        raise InputError(f"{given[0]}: --diff compares two plans and plans nothing itself")
    old_path, new_path = args.diff
    if old_path == new_path == "-":
        raise InputError("--diff: stdin can be only one of OLD and NEW")
    percent = DEFAULT_PILOT_PERCENT if args.pilot_percent is None else args.pilot_percent
    if not 1 <= percent <= 100:
        raise InputError(f"--pilot-percent: must be 1 to 100, not {percent}")
    diff = diff_plans(_diff_side(old_path), _diff_side(new_path), percent)
    _write(args.output, diff.to_json_dict(), format_diff(diff))
    return EXIT_FEASIBLE if diff.new.plan.feasible else EXIT_INFEASIBLE


def cmd_plan(args: argparse.Namespace) -> int:
    if args.diff is not None:
        return cmd_plan_diff(args)
    if args.pilot_percent is not None:
        raise InputError("--pilot-percent goes with --diff")
    if args.file is None:
        raise InputError("plan: give -f FILE (a manifest to plan) or --diff OLD NEW")
    resource, catalog, lock = _load(args)
    view = ClusterView(args, catalog)
    calibration = _calibration(args.calibration)
    plan = view.plan(resource, catalog, lock, calibration)
    if args.plot:
        path, pictures = _plot_path(args.plot), _pictures()
        alternatives = feasible_alternatives(resource.spec, catalog, lock, calibration=calibration)
        _save_picture(path, lambda p: pictures.plan_picture(resource, plan, alternatives, p))
    if args.output != "table":  # the table says it first
        _note(args, view.scope)
    _write(args.output, plan.to_json_dict(), f"SCOPE {view.scope}\n" + format_plan_table(plan))
    return EXIT_FEASIBLE if plan.feasible else EXIT_INFEASIBLE


def _report_feasibility(plan: Plan, scope: str) -> bool:
    if not plan.feasible:
        print(f"error: no feasible plan ({scope}): " + "; ".join(plan.reasons), file=sys.stderr)
    return plan.feasible


def _prometheus_targets(args: argparse.Namespace) -> dict[str, PrometheusTarget]:
    """The Prometheus endpoints objects may name, given as the operator's settings give them
    (LLMDEPLOY_PROMETHEUS_URL, LLMDEPLOY_PROMETHEUS_ENDPOINTS)."""
    try:
        named = ENDPOINTS.validate_json(args.prometheus_endpoints or "{}")
        default = PrometheusEndpoint(url=args.prometheus_url) if args.prometheus_url else None
        endpoints = with_default(named, default)
    except ValidationError as exc:
        raise InputError(format_validation_error(exc, "--prometheus-endpoints")) from None
    except ValueError as exc:
        raise InputError(f"--prometheus-url, --prometheus-endpoints: {exc}") from None
    return {name: endpoint.target() for name, endpoint in endpoints.items()}


def cmd_render(args: argparse.Namespace) -> int:
    resource, catalog, lock = _load(args)
    view = ClusterView(args, catalog)
    try:
        access = HostAccess(
            allowed_host_path_prefixes=tuple(args.allow_host_path_prefix),
            allow_control_plane_nodes=args.allow_control_plane_nodes,
        )
    except ValidationError as exc:
        raise InputError(format_validation_error(exc, "--allow-host-path-prefix")) from None
    # The operator's own decision: the same plan and the same objects it applies.
    desired = desired_state(
        resource,
        catalog,
        lock,
        view.inventory,
        view.provisionable,
        host_access=access,
        prometheus=_prometheus_targets(args),
    )
    if not _report_feasibility(desired.plan, view.scope):
        return EXIT_INFEASIBLE
    objects = list(desired.objects)
    _note(args, view.scope)
    if args.output_dir is None:
        sys.stdout.write(to_yaml(objects))
        return EXIT_FEASIBLE
    files = {
        f"{index:02d}-{obj['kind'].lower()}-{obj['metadata']['name']}.yaml": to_yaml([obj])
        for index, obj in enumerate(objects)
    }
    try:
        write_rendered(Path(args.output_dir), files)
    except OSError as exc:
        raise InputError(f"--output-dir {args.output_dir}: {exc}") from None
    return EXIT_FEASIBLE


def cmd_scale_sim(args: argparse.Namespace) -> int:
    from llmdeploy.api.types import ScalingSpec
    from llmdeploy.autoscale.policy import effective_scaling, hpa_default_spec
    from llmdeploy.autoscale.simulator import (
        TraceError,
        config_from_plan,
        read_trace,
        simulate,
        summarize,
    )

    cold_start = args.cold_start
    if cold_start is not None and not 0 <= cold_start <= MAX_COLD_START_S:  # NaN fails too
        raise InputError(f"--cold-start: must be 0 to {MAX_COLD_START_S:g} seconds")
    resource, catalog, lock = _load(args)
    view = ClusterView(args, catalog)
    plan = view.plan(resource, catalog, lock)
    if not _report_feasibility(plan, view.scope):
        return EXIT_INFEASIBLE
    try:
        trace = read_trace(read_text(Path(args.load)))
    except (TraceError, csv.Error) as exc:  # csv.Error: a field over its size limit
        raise InputError(f"--load {args.load}: {exc}") from None
    for point in trace:
        # Bounded like the spec's requestsPerSecond, so the queue stays finite.
        rate = point.requests_per_second or 0.0
        if abs(point.t) > MAX_TRACE_T or rate > MAX_REQUESTS_PER_SECOND:
            raise InputError(
                f"--load {args.load}: t must be within +-{MAX_TRACE_T:g} s and "
                f"requestsPerSecond at most {MAX_REQUESTS_PER_SECOND:g} (t={point.t:g})"
            )
    spec = resource.spec
    scaling = spec.scaling or ScalingSpec()
    if args.policy == "hpa-default":
        scaling = hpa_default_spec(scaling)
    lowest = 0 if scaling.scale_to_zero else scaling.min_replicas
    asked = scaling.min_replicas if spec.replicas is None else spec.replicas
    start = min(max(asked, lowest), scaling.max_replicas)
    config = config_from_plan(plan, spec.workload, cold_start, start)
    steps = simulate(trace, effective_scaling(scaling, plan, config.cold_start_s), config)
    _note(args, view.scope)
    if args.output == "json":
        sys.stdout.write(json.dumps([s.to_json() for s in steps], indent=2) + "\n")
        return EXIT_FEASIBLE
    summary = summarize(steps, spec.slo.ttft_ms)
    print(f"{'T':>7} {'RPS':>7} {'READY':>5} {'DESIRED':>7} {'QUEUE':>8} {'TTFT_MS':>9}  REASON")
    for s in steps:
        rps = "-" if s.requests_per_second is None else f"{s.requests_per_second:g}"
        print(
            f"{s.t:>7g} {rps:>7} {s.ready_replicas:>5} {s.desired_replicas:>7} "
            f"{s.queue_depth:>8.1f} {s.estimated_ttft_ms:>9.0f}  {s.reason}"
        )
    print(
        f"replica-seconds {summary['replicaSeconds']:.0f}, SLO-violation seconds "
        f"{summary['sloViolationSeconds']:.0f} (cold start {config.cold_start_s:.0f}s, "
        f"{config.capacity_rps:.2f} requests/s per replica)"
    )
    return EXIT_FEASIBLE


def _results_file(path: str, namespace: str, name: str) -> Path:
    """A file, or a directory holding NAMESPACE_NAME.json (DNS labels have no underscore)."""
    given = Path(path)
    return given / f"{namespace}_{name}.json" if given.is_dir() else given


def _saved_results(path: Path) -> SavedResults:
    document = load_json(read_text(path), str(path))
    try:
        return SavedResults.model_validate(document)
    except ValidationError as exc:
        raise InputError(f"{path}: {format_validation_error(exc)}") from None


def _write_results(path: Path, saved: SavedResults) -> None:
    text = json.dumps(saved.model_dump(mode="json", by_alias=True), indent=1) + "\n"
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"--save-results {path}: {exc.strerror or exc}") from None


def _plan_file(path: str) -> Plan:
    """A plan as `plan -o json` writes it, or the operator's status.plan."""
    documents = [d for d in load_yaml_documents(read_text(Path(path)), path) if d is not None]
    if len(documents) != 1:
        raise InputError(f"--plan {path}: expected one plan document, found {len(documents)}")
    try:
        return Plan.model_validate(documents[0])
    except ValidationError as exc:
        raise InputError(f"--plan {path}: {format_validation_error(exc)}") from None


def _measure(
    args: argparse.Namespace, namespace: str, name: str, engine: EngineName
) -> SavedResults:
    """Saved results from --from-results, or fresh ones from --prometheus."""
    if args.from_results is not None:
        if args.since is not None or args.save_results is not None:
            raise InputError("--since and --save-results go with --prometheus, not --from-results")
        path = _results_file(args.from_results, namespace, name)
        saved = _saved_results(path)
        if (saved.namespace, saved.name, saved.engine) != (namespace, name, engine):
            raise InputError(
                f"--from-results {path}: results of {saved.namespace}/{saved.name} "
                f"({saved.engine.value}), not of {namespace}/{name} ({engine.value})"
            )
        return saved
    from llmdeploy.autoscale.prometheus import PrometheusConfig
    from llmdeploy.measure.prometheus import collect

    if not args.prometheus.startswith(("http://", "https://")):
        raise InputError(f"--prometheus {args.prometheus}: not an http:// or https:// URL")
    if not 0 < args.timeout <= MAX_TIMEOUT_S:
        raise InputError(f"--timeout: must be above 0 and at most {MAX_TIMEOUT_S:g} seconds")
    window = args.since or DEFAULT_SINCE
    try:
        window_s = window_seconds(window)
    except WindowError as exc:
        raise InputError(f"--since: {exc}") from None
    config = PrometheusConfig(
        url=args.prometheus.rstrip("/"),
        timeout_s=args.timeout,
        bearer_token_file=Path(args.bearer_token_file) if args.bearer_token_file else None,
        ca_file=Path(args.ca_file) if args.ca_file else None,
    )
    queries = measurement_queries(namespace, name, engine, window_s, with_series=True)
    end = float(int(time.time()))
    instant, series = collect(config, queries, end)
    saved = SavedResults(
        format=RESULTS_FORMAT,
        namespace=namespace,
        name=name,
        engine=engine,
        window=window,
        end=end,
        step_seconds=queries.step_s,
        instant=instant,
        series=series,
    )
    if args.save_results is not None:
        _write_results(_results_file(args.save_results, namespace, name), saved)
    return saved


def cmd_report(args: argparse.Namespace) -> int:
    resource, catalog, lock = _load(args)
    plot = _plot_path(args.plot) if args.plot else None
    pictures = _pictures() if plot else None  # before asking Prometheus anything
    namespace = args.namespace or resource.metadata.namespace or "default"
    name = resource.metadata.name
    spec = resource.spec
    plan = _plan_file(args.plan) if args.plan else plan_deployment(spec, catalog, lock)
    saved = _measure(args, namespace, name, spec.engine.name)
    window_s = window_seconds(saved.window)
    missing = measurement_queries(namespace, name, saved.engine, window_s).missing
    observed = observe(
        readings(saved.instant, missing),
        plan=plan,
        catalog=catalog,
        slo=spec.slo,
        window_s=window_s,
        end=saved.end,
        served_since=_served_since(resource),
    )
    calibration = None
    if spec.planning.calibration == "auto" and plan.feasible:
        calibration = calibrated(None, observed, spec, plan, catalog)
    basis = recommendation_basis(observed, calibration) if plan.feasible else None
    recommendation = None
    if basis is not None:  # planned as `plan` does without --inventory: any catalog GPU
        recommendation = recommend(
            resource,
            plan,
            basis,
            calibration,
            catalog=catalog,
            inventory=Inventory(),
            provisionable=None,
            excluded=(),
            lock=lock,
            now=datetime.fromtimestamp(saved.end, UTC),
        )
    report = build_report(
        namespace,
        name,
        spec,
        plan,
        observed,
        calibration=calibration,
        recommendation=recommendation,
    )
    _write(args.output, report.to_json_dict(), format_report(report))
    if plot is not None and pictures is not None:
        points = series(saved.series)
        _save_picture(plot, lambda p: pictures.report_picture(report, points, saved.end, p))
    return {"True": EXIT_FEASIBLE, "False": EXIT_INFEASIBLE}.get(
        report.slo_met.status, EXIT_UNMEASURED
    )


def _served_since(resource: LLMDeployment) -> float | None:
    """When the operator found the engines first served (status.observed.servedSince), where
    the manifest carries its status (`kubectl get -o yaml`); None: not known, the whole window
    is measured."""
    status = (resource.model_extra or {}).get("status")
    return recorded_served_since(status) if isinstance(status, dict) else None


def cmd_crd(args: argparse.Namespace) -> int:
    from llmdeploy.api.crd import crd_yaml

    sys.stdout.write(crd_yaml())
    return EXIT_FEASIBLE


def cmd_run(args: argparse.Namespace) -> int:
    from pydantic_settings import SettingsError

    from llmdeploy.controller.run import NoClusterError, run_operator
    from llmdeploy.controller.settings import OperatorSettings

    try:
        settings = OperatorSettings()
    except ValidationError as exc:
        raise InputError(format_validation_error(exc, "settings")) from None
    except SettingsError as exc:  # a JSON setting that does not parse; names the field
        raise InputError(f"settings: {exc}") from None
    try:
        run_operator(settings)
    except NoClusterError as exc:
        raise SetupError(str(exc)) from None
    return 0


def _add_input_options(parser: argparse.ArgumentParser, file_required: bool = True) -> None:
    parser.add_argument(
        "-f", "--file", required=file_required, help="LLMDeployment manifest, or - for stdin"
    )
    parser.add_argument(
        "--catalog",
        action="append",
        default=[],
        metavar="FILE",
        help="extra catalog file (gpus/models/...), overriding entries by id; repeatable",
    )
    parser.add_argument(
        "--model-config",
        metavar="CONFIG_JSON",
        help="a Hugging Face config.json giving the model's architecture",
    )
    parser.add_argument("--image-lock", metavar="FILE", help="replace the packaged image lock")
    nodes = parser.add_mutually_exclusive_group()
    nodes.add_argument(
        "--inventory",
        metavar="FILE",
        help="the cluster's nodes as `kubectl get nodes -o yaml` prints them (or Node "
        "documents), - for stdin: plan for their GPUs and drivers as the operator does "
        "(default: an unconstrained catalog)",
    )
    nodes.add_argument(
        "--from-cluster",
        action="store_true",
        help="read the nodes from the current kubeconfig's cluster instead of --inventory",
    )
    parser.add_argument(
        "--provisionable",
        metavar="SKU,...",
        help="GPUs a cluster autoscaler can add, '*' for all: the operator's "
        "LLMDEPLOY_PROVISIONABLE_GPUS (with --inventory, default none)",
    )


def build_parser() -> argparse.ArgumentParser:
    # No abbreviated long flags: `--out` is no `--output`, and a flag added later cannot
    # change what an abbreviation in someone's script means.
    parser = argparse.ArgumentParser(prog="llmdeploy", description=__doc__, allow_abbrev=False)
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an internal error"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, allow_abbrev=False)

    plan = command("plan", help="size an LLMDeployment and explain the choice")
    _add_input_options(plan, file_required=False)  # or --diff
    plan.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")
    plan.add_argument(
        "--diff",
        nargs=2,
        metavar=("OLD", "NEW"),
        help="compare two plans instead: each a plan (`plan -o json|yaml`) or an LLMDeployment "
        "with status.plan (kubectl get -o yaml), - for stdin; with the $/h of piloting NEW",
    )
    plan.add_argument(
        "--pilot-percent",
        type=int,
        metavar="P",
        help=f"with --diff: the pilot's share of traffic, which sizes the candidate at "
        f"max(1, ceil(P%% of NEW's replicas)) (default {DEFAULT_PILOT_PERCENT})",
    )
    plan.add_argument(
        "--plot",
        metavar="FILE",
        help="also draw cost vs predicted latency of every configuration that fits (.svg, .png)",
    )
    plan.add_argument(
        "--calibration",
        metavar="FILE",
        help="scale latency estimates by a measured calibration: an LLMDeployment or status "
        "with status.calibration (kubectl get -o yaml), or {ttftRatio, tpotRatio, ...}",
    )
    plan.set_defaults(handler=cmd_plan)
    render = command("render", help="print the Kubernetes objects for GitOps")
    _add_input_options(render)
    render.add_argument("--output-dir", metavar="DIR", help="write one file per object")
    render.add_argument(
        "--allow-host-path-prefix",
        action="append",
        default=[],
        metavar="DIR",
        help="node directory a hostPath model cache may be in (default: hostPath is refused); "
        "repeatable",
    )
    render.add_argument(
        "--allow-control-plane-nodes",
        action="store_true",
        help="let placement select or tolerate control-plane nodes",
    )
    render.add_argument(
        "--prometheus-url",
        metavar="URL",
        help="the Prometheus endpoint named default (the operator's LLMDEPLOY_PROMETHEUS_URL)",
    )
    render.add_argument(
        "--prometheus-endpoints",
        metavar="JSON",
        help="named Prometheus endpoints (the operator's LLMDEPLOY_PROMETHEUS_ENDPOINTS)",
    )
    render.set_defaults(handler=cmd_render)
    crd = command("crd", help="print the LLMDeployment CustomResourceDefinition")
    crd.set_defaults(handler=cmd_crd)
    sim = command("scale-sim", help="replay a load trace through the autoscaler")
    _add_input_options(sim)
    sim.add_argument(
        "--load",
        required=True,
        metavar="TRACE",
        help="CSV with columns t,requestsPerSecond (empty: metrics unavailable)",
    )
    sim.add_argument("-o", "--output", choices=("table", "json"), default="table")
    sim.add_argument(
        "--cold-start",
        type=float,
        metavar="SECONDS",
        help="model load time of a new replica (default: from the model size)",
    )
    sim.add_argument(
        "--policy",
        choices=("spec", "hpa-default"),
        default="spec",
        help="the spec's scaling behavior, or Kubernetes HPA's defaults",
    )
    sim.set_defaults(handler=cmd_scale_sim)
    report = command(
        "report", help="planned vs measured latency, traffic and cost, from Prometheus"
    )
    _add_input_options(report)
    source = report.add_mutually_exclusive_group(required=True)
    source.add_argument("--prometheus", metavar="URL", help="query this Prometheus")
    source.add_argument(
        "--from-results",
        metavar="PATH",
        help="saved query results (a file, or a directory with NAMESPACE_NAME.json)",
    )
    report.add_argument(
        "--since",
        metavar="DURATION",
        help=f"window to measure, e.g. 1h, 7d (default {DEFAULT_SINCE})",
    )
    report.add_argument(
        "--save-results", metavar="PATH", help="also write the query results (file or directory)"
    )
    report.add_argument(
        "--namespace", help="the deployment's namespace (default: the manifest's, else default)"
    )
    report.add_argument(
        "--plan",
        metavar="FILE",
        help="the plan in force, as `plan -o json` or status.plan (default: plan the manifest)",
    )
    report.add_argument("--bearer-token-file", metavar="FILE", help="token for Prometheus")
    report.add_argument("--ca-file", metavar="FILE", help="CA bundle for an https Prometheus")
    report.add_argument(
        "--timeout", type=float, default=30.0, metavar="SECONDS", help="per query (default 30)"
    )
    report.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table")
    report.add_argument(
        "--plot",
        metavar="FILE",
        help="also draw latency over time against the SLO and the prediction, and the cost per "
        "1M output tokens (.svg, .png)",
    )
    report.set_defaults(handler=cmd_report)
    run = command("run", help="run the operator (settings from LLMDEPLOY_* env)")
    run.set_defaults(handler=cmd_run)
    return parser


def _error(message: str, code: int) -> int:
    print("error: " + " ".join(message.split()), file=sys.stderr)  # one line, always
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        if getattr(args, "note", None):
            print(f"note: {args.note}", file=sys.stderr)
    except (InputError, DocumentError, SpecError, RenderError) as exc:
        return _error(str(exc), EXIT_INVALID)
    except SetupError as exc:
        return _error(str(exc), EXIT_INTERNAL)
    except BrokenPipeError:
        # Whatever read stdout stopped; the interpreter's final flush must not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return _error("output closed before it was all written (broken pipe)", EXIT_INTERNAL)
    except Exception as exc:
        if args.debug:
            raise
        return _error(
            f"internal error: {type(exc).__name__}: {exc} (--debug shows the traceback)",
            EXIT_INTERNAL,
        )
    return code


if __name__ == "__main__":
    raise SystemExit(main())
