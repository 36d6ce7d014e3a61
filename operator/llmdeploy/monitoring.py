"""The monitoring components' generated files (pure data; `make monitoring` writes them):

- manifests/monitoring/rules/prometheusrule.yaml: the PrometheusRule whose spec is the plain
  rule file beside it (rules.yaml, which promtool checks and tests);
- manifests/monitoring/dashboard/llmdeploy.json: the Grafana dashboard, per LLMDeployment.

tests/unit/test_monitoring.py fails when a committed file differs from what this writes; the
e2e test_measure.py evaluates every panel's query through a real Prometheus.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

RULES = Path("manifests/monitoring/rules/rules.yaml")
PROMETHEUS_RULE = Path("manifests/monitoring/rules/prometheusrule.yaml")
DASHBOARD = Path("manifests/monitoring/dashboard/llmdeploy.json")
NAMESPACE = "llmdeploy-system"

# Grafana's variables: the data source, and the deployment to show (from the operator's
# gauges, which every planned LLMDeployment has).
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
NAMESPACE_VAR, DEPLOYMENT_VAR = "namespace", "deployment"
# Selectors of one deployment: the operator's gauges and the recorded series label it
# `llmdeployment`, the engines' series `llmdeploy_io_deployment` (the rendered PodMonitor).
OURS = f'namespace="${NAMESPACE_VAR}", llmdeployment="${DEPLOYMENT_VAR}"'
ENGINES = f'namespace="${NAMESPACE_VAR}", llmdeploy_io_deployment="${DEPLOYMENT_VAR}"'


def _yaml_text(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    """Multi-line strings (PromQL) as literal blocks, as in the rule file."""
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(str, _yaml_text)


def prometheus_rule(rules_text: str) -> str:
    """The PrometheusRule (Prometheus Operator) whose spec is the rule file's groups."""
    rules = yaml.safe_load(rules_text)
    document = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "llmdeploy", "namespace": NAMESPACE},
        "spec": {"groups": rules["groups"]},
    }
    header = f"# Generated from {RULES.name} by `make monitoring`: edit that file, not this one.\n"
    body = yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=100)
    return header + body


def _target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {
        "datasource": DATASOURCE,
        "expr": expr,
        "legendFormat": legend,
        "range": True,
        "refId": ref,
    }


def _dashed(name: str, color: str, dots: bool = False) -> dict[str, Any]:
    """A series drawn as a reference line: the SLO dashed, a prediction dotted."""
    dash = [2, 6] if dots else [10, 6]
    return {
        "matcher": {"id": "byName", "options": name},
        "properties": [
            {"id": "custom.lineStyle", "value": {"dash": dash, "fill": "dot" if dots else "dash"}},
            {"id": "color", "value": {"fixedColor": color, "mode": "fixed"}},
        ],
    }


def _panel(
    title: str,
    description: str,
    unit: str,
    targets: list[tuple[str, str]],
    overrides: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "min": 0,
                "custom": {"lineWidth": 2, "fillOpacity": 0, "showPoints": "never"},
            },
            "overrides": overrides or [],
        },
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "none"},
        },
        "targets": [
            _target(expr, legend, chr(ord("A") + n)) for n, (expr, legend) in enumerate(targets)
        ],
    }


def _latency(name: str, long_name: str, slo_field: str) -> dict[str, Any]:
    return _panel(
        f"{name}: measured, predicted and SLO",
        f"{long_name}: the engines' p50 and p95 over 5m, the planner's prediction (dotted) and "
        f"the target, spec.slo.{slo_field} (dashed).",
        "s",
        [
            (f"llmdeploy:{name.lower()}_seconds:p50_rate5m{{{OURS}}}", "p50"),
            (f"llmdeploy:{name.lower()}_seconds:p95_rate5m{{{OURS}}}", "p95"),
            (f"max(llmdeploy_plan_{name.lower()}_seconds{{{OURS}}})", "predicted"),
            (f"max(llmdeploy_slo_{name.lower()}_seconds{{{OURS}}})", "SLO"),
        ],
        [_dashed("SLO", "red"), _dashed("predicted", "blue", dots=True)],
    )


def _condition(title: str, metric: str, description: str) -> dict[str, Any]:
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {
            "defaults": {
                "mappings": [],
                "color": {"mode": "thresholds"},
                "thresholds": {"mode": "absolute", "steps": [{"color": "text", "value": None}]},
            },
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "textMode": "name",
            "colorMode": "none",
            "graphMode": "none",
        },
        "targets": [_target(f"max by (status) ({metric}{{{OURS}}}) == 1", "{{status}}", "A")],
    }


def panels() -> list[dict[str, Any]]:
    """The dashboard's panels, two to a row, top to bottom."""
    laid = [
        _condition(
            "SLOMet",
            "llmdeploy_slo_met",
            "The operator's SLOMet condition: True, False or Unknown (kubectl describe says why).",
        ),
        _condition(
            "PlanDrift",
            "llmdeploy_plan_drift",
            "The operator's PlanDrift condition: the measured workload against spec.workload.",
        ),
        _latency("TTFT", "Time to first token", "ttftMs"),
        _latency("TPOT", "Time between output tokens", "tpotMs"),
        _panel(
            "SLO attainment",
            "The share of requests (of gaps between tokens, for TPOT) within the target over "
            "5m; SLOMet wants 95%.",
            "percentunit",
            [
                (f"llmdeploy:ttft_slo_attainment:ratio_rate5m{{{OURS}}}", "TTFT"),
                (f"llmdeploy:tpot_slo_attainment:ratio_rate5m{{{OURS}}}", "TPOT"),
            ],
        ),
        _panel(
            "Measured / predicted latency",
            "p50 over the planner's prediction: 1 is as planned, 1.3 is 30% slower.",
            "none",
            [
                (f"llmdeploy:ttft_measured_per_predicted:ratio_rate5m{{{OURS}}}", "TTFT"),
                (f"llmdeploy:tpot_measured_per_predicted:ratio_rate5m{{{OURS}}}", "TPOT"),
            ],
        ),
        _panel(
            "Cost per 1M output tokens",
            "Realized: the serving engines' price per hour over the tokens they produced; "
            "planned: a fully used replica's (dotted).",
            "currencyUSD",
            [
                (f"llmdeploy:cost_per_million_output_tokens:rate5m{{{OURS}}}", "realized"),
                (
                    f"max(llmdeploy_plan_cost_per_million_output_tokens_usd{{{OURS}}})",
                    "planned",
                ),
            ],
            [_dashed("planned", "blue", dots=True)],
        ),
        _panel(
            "Cost per hour",
            "The serving engines at the catalog price, and the desired replicas' "
            "(status.costPerHour).",
            "currencyUSD",
            [
                (
                    f"llmdeploy:engines:count{{{OURS}}} * on (namespace, llmdeployment) "
                    f"max by (namespace, llmdeployment) "
                    f"(llmdeploy_plan_replica_cost_per_hour_usd{{{OURS}}})",
                    "serving",
                ),
                (f"max(llmdeploy_plan_cost_per_hour_usd{{{OURS}}})", "desired"),
            ],
        ),
        _panel(
            "Replicas and GPUs",
            "Engines publishing metrics now, the desired replicas, and their GPUs.",
            "none",
            [
                (f"llmdeploy:engines:count{{{OURS}}}", "serving replicas"),
                (f"max(llmdeploy_plan_replicas{{{OURS}}})", "desired replicas"),
                (f"max(llmdeploy_plan_gpus{{{OURS}}})", "desired GPUs"),
            ],
        ),
        _panel(
            "Load vs plan",
            "Finished requests/s over 5m, the planned load (spec.workload.requestsPerSecond) "
            "and what the desired replicas serve at the planned concurrency.",
            "reqps",
            [
                (f"llmdeploy:requests:rate5m{{{OURS}}}", "measured"),
                (f"max(llmdeploy_plan_requests_per_second{{{OURS}}})", "planned load"),
                (f"max(llmdeploy_plan_capacity_requests_per_second{{{OURS}}})", "capacity"),
            ],
            [_dashed("capacity", "red"), _dashed("planned load", "blue", dots=True)],
        ),
        _panel(
            "KV-cache usage",
            "Per engine; vllm:gpu_cache_usage_perc on vLLM before v0.12.",
            "percentunit",
            [
                (
                    f"vllm:kv_cache_usage_perc{{{ENGINES}}} "
                    f"or vllm:gpu_cache_usage_perc{{{ENGINES}}}",
                    "{{instance}}",
                ),
            ],
        ),
        _panel(
            "Queue",
            "Requests waiting for a place in a batch, and running, over all engines.",
            "none",
            [
                (f"sum(vllm:num_requests_waiting{{{ENGINES}}})", "waiting"),
                (f"sum(vllm:num_requests_running{{{ENGINES}}})", "running"),
            ],
        ),
    ]
    top = 0
    for n, panel in enumerate(laid):  # the two of a row are of one type, so of one height
        height = 4 if panel["type"] == "stat" else 8
        panel["id"] = n + 1
        panel["gridPos"] = {"h": height, "w": 12, "x": 12 * (n % 2), "y": top}
        top += height * (n % 2)
    return laid


def _variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "definition": query,
        "query": query,
        "refresh": 2,
        "sort": 1,
        "includeAll": False,
        "multi": False,
        "current": {},
        "options": [],
        "hide": 0,
        "regex": "",
    }


def dashboard() -> dict[str, Any]:
    return {
        "title": "llmdeploy: planned vs measured",
        "uid": "llmdeploy-measure",
        "description": "One LLMDeployment: what the plan promised beside what its engines do "
        "(docs/measure.md).",
        "tags": ["llmdeploy"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "1m",
        "annotations": {"list": []},
        "links": [],
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "refresh": 1,
                    "regex": "",
                },
                _variable(
                    NAMESPACE_VAR, "Namespace", "label_values(llmdeploy_plan_replicas, namespace)"
                ),
                _variable(
                    DEPLOYMENT_VAR,
                    "LLMDeployment",
                    f'label_values(llmdeploy_plan_replicas{{namespace="${NAMESPACE_VAR}"}}, '
                    "llmdeployment)",
                ),
            ]
        },
        "panels": panels(),
    }


def dashboard_json() -> str:
    return json.dumps(dashboard(), indent=2, sort_keys=True) + "\n"


def generated(root: Path) -> dict[Path, str]:
    """Each generated file under the repository `root`, and its content."""
    return {
        root / PROMETHEUS_RULE: prometheus_rule((root / RULES).read_text()),
        root / DASHBOARD: dashboard_json(),
    }


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else Path()
    for path, text in generated(root).items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
