"""The CustomResourceDefinition, generated from the pydantic models (`llmdeploy crd`).

pydantic emits JSON Schema (draft 2020-12); Kubernetes wants a structural OpenAPI v3 schema:
no $ref, no null types, enums instead of const, exclusive bounds as booleans, int-or-string
instead of a string|integer union. Rules the types cannot state are CEL validations.
"""

from __future__ import annotations

from typing import Any

import yaml

from llmdeploy.api.status import LLMDeploymentStatus
from llmdeploy.api.types import (
    ACTIVATION_QUERY_REFUSED,
    ARCHITECTURE_RULES,
    DNS_LABEL_PATTERN,
    EXPERT_DIVIDES_TENSOR,
    GROUP,
    HPA_SCALE_TO_ZERO,
    HTTP_ROUTE_NEEDS_POOL,
    KIND,
    PROMETHEUS_URL_REFUSED,
    VERSION,
    VLLM_EXPERT_IS_TENSOR,
    LLMDeploymentSpec,
)

PLURAL = "llmdeployments"
SINGULAR = "llmdeployment"
SHORT_NAMES = ["llmdep"]

# CEL rules on the objects at these paths (relative to spec).
SPEC_RULES: dict[tuple[str, ...], list[dict[str, str]]] = {
    (): [
        {
            "rule": "!has(self.placement) || !has(self.placement.gpu) || "
            "!has(self.placement.allowedGpus) || size(self.placement.allowedGpus) == 0 || "
            "self.placement.gpu in self.placement.allowedGpus",
            "message": "placement.gpu must be one of placement.allowedGpus",
            "fieldPath": ".placement.gpu",
        },
        {
            "rule": "!has(self.workload) || !has(self.workload.maxContextLength) || "
            "self.workload.inputTokens + self.workload.outputTokens <= "
            "self.workload.maxContextLength",
            "message": "workload.inputTokens + workload.outputTokens must not exceed "
            "workload.maxContextLength",
            "fieldPath": ".workload.maxContextLength",
        },
        {
            "rule": "!has(self.parallelism) || !has(self.parallelism.expert) || "
            "type(self.parallelism.expert) != int || self.parallelism.expert == 1 || "
            "!has(self.parallelism.tensor) || type(self.parallelism.tensor) != int || "
            "self.parallelism.expert == self.parallelism.tensor || "
            "(has(self.engine) && has(self.engine.name) && self.engine.name != 'vllm')",
            "message": VLLM_EXPERT_IS_TENSOR,
            "fieldPath": ".parallelism.expert",
        },
    ],
    ("parallelism",): [
        {
            "rule": "!has(self.expert) || type(self.expert) != int || !has(self.tensor) || "
            "type(self.tensor) != int || self.tensor % self.expert == 0",
            "message": EXPERT_DIVIDES_TENSOR,
            "fieldPath": ".expert",
        },
    ],
    ("scaling", "scaleToZero", "activationMetric"): [
        {
            "rule": "!has(self.labels) || "
            "self.labels.all(k, k.matches('^[a-zA-Z_][a-zA-Z0-9_]{0,99}$'))",
            "message": "activationMetric.labels keys must be Prometheus label names",
            "fieldPath": ".labels",
        },
    ],
    ("model",): [
        {
            "rule": "!has(self.quantizedVariants) || self.quantizedVariants.all(k, k in "
            "['bf16', 'fp16', 'fp8', 'int8', 'int4-awq', 'int4-gptq', 'mxfp4'])",
            "message": "quantizedVariants keys must be quantization formats: bf16, fp16, fp8, "
            "int8, int4-awq, int4-gptq, mxfp4",
            "fieldPath": ".quantizedVariants",
        },
    ],
    ("scaling",): [
        {
            "rule": "!has(self.minReplicas) || !has(self.maxReplicas) || "
            "self.minReplicas <= self.maxReplicas",
            "message": "scaling.minReplicas must not exceed scaling.maxReplicas",
            "fieldPath": ".minReplicas",
        },
        {
            "rule": "!has(self.scaleToZero) || !has(self.mode) || self.mode != 'hpa'",
            "message": f"scaling.{HPA_SCALE_TO_ZERO}",
            "fieldPath": ".scaleToZero",
        },
        # A free URL or PromQL would be queried from the operator's or KEDA's position.
        {
            "rule": "!has(self.prometheusUrl)",
            "message": f"scaling.{PROMETHEUS_URL_REFUSED}",
            "fieldPath": ".prometheusUrl",
        },
        {
            "rule": "!has(self.scaleToZero) || !has(self.scaleToZero.activationQuery)",
            "message": f"scaling.{ACTIVATION_QUERY_REFUSED}",
            "fieldPath": ".scaleToZero.activationQuery",
        },
    ],
    ("routing",): [
        {
            "rule": "!has(self.httpRoute) || has(self.inferencePool)",
            "message": f"routing.{HTTP_ROUTE_NEEDS_POOL}",
            "fieldPath": ".httpRoute",
        },
    ],
    ("model", "architecture"): [rule.cel() for rule in ARCHITECTURE_RULES],
    ("model", "cache"): [
        {
            "rule": "!has(self.type) || self.type != 'pvc' || has(self.claimName)",
            "message": "claimName is required when type is pvc",
        },
        {
            "rule": "!has(self.type) || self.type != 'hostPath' || has(self.path)",
            "message": "path is required when type is hostPath",
        },
    ],
}
ROOT_RULES = [
    {
        "rule": f"self.metadata.name.matches('{DNS_LABEL_PATTERN}')",
        "message": "metadata.name must be a DNS label of at most 63 characters: it names the "
        "Service and the workload",
    }
]

PRINTER_COLUMNS = [
    {"name": "GPU", "type": "string", "jsonPath": ".status.gpu"},
    {"name": "GPUs", "type": "integer", "jsonPath": ".status.gpuCount"},
    {"name": "Quant", "type": "string", "jsonPath": ".status.quantization"},
    {"name": "TP", "type": "integer", "jsonPath": ".status.tensorParallel"},
    {"name": "Replicas", "type": "integer", "jsonPath": ".status.replicas"},
    {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas"},
    {"name": "$/h", "type": "string", "jsonPath": ".status.costPerHour"},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    """Inline every $ref (the models have no recursion)."""
    if isinstance(node, dict):
        if "$ref" in node:
            target = defs[node["$ref"].rsplit("/", 1)[-1]]
            merged = {**_resolve(target, defs), **{k: v for k, v in node.items() if k != "$ref"}}
            return _resolve(merged, defs)
        return {k: _resolve(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, defs) for v in node]
    return node


def _structural(node: dict[str, Any]) -> dict[str, Any]:
    """One JSON Schema node -> a structural OpenAPI v3 node."""
    node = {k: v for k, v in node.items() if k not in ("title", "propertyNames")}
    if "anyOf" in node:
        options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
        if node.get("default", ...) is None:
            node.pop("default")
        types = {o.get("type") for o in options}
        if types == {"string", "integer"}:
            node["x-kubernetes-int-or-string"] = True
            integer = next(o for o in options if o.get("type") == "integer")
            bounds = ["type(self) == int"]
            if "minimum" in integer:
                bounds.append(f"self >= {integer['minimum']}")
            if "maximum" in integer:
                bounds.append(f"self <= {integer['maximum']}")
            rule = f"({' && '.join(bounds)}) || self == 'auto'"
            node["x-kubernetes-validations"] = [
                {"rule": rule, "message": "must be auto or an integer within bounds"}
            ]
        elif len(options) == 1:
            node = {**options[0], **node}
        else:  # a union of string enums, e.g. "auto" | Quantization
            values: list[Any] = []
            for option in options:
                values.extend(option.get("enum", [option.get("const")]))
            node.update(type="string", enum=values)
    node.pop("title", None)  # also the one a resolved union member brought along
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if "exclusiveMinimum" in node:
        node.update(minimum=node.pop("exclusiveMinimum"), exclusiveMinimum=True)
    if "exclusiveMaximum" in node:
        node.update(maximum=node.pop("exclusiveMaximum"), exclusiveMaximum=True)
    if node.get("type") == "object":
        properties = node.get("properties")
        if properties is not None:
            node.pop("additionalProperties", None)  # the API server prunes and warns instead
            node["properties"] = {k: _structural(v) for k, v in properties.items()}
            for name, prop in node["properties"].items():
                # Objects whose fields all have defaults default to {} so their defaults apply;
                # not optional ones (`X | None = None`): their absence means "off".
                optional = any(o.get("type") == "null" for o in properties[name].get("anyOf", []))
                if (
                    prop.get("type") == "object"
                    and "properties" in prop
                    and not prop.get("required")
                    and name not in node.get("required", [])
                    and not optional
                ):
                    prop.setdefault("default", {})
        elif isinstance(node.get("additionalProperties"), dict):
            node["additionalProperties"] = _structural(node["additionalProperties"])
        elif node.get("additionalProperties") is not False:
            node["x-kubernetes-preserve-unknown-fields"] = True
            node.pop("additionalProperties", None)
    if node.get("type") == "array" and "items" in node:
        node["items"] = _structural(node["items"])
    return node


def _add_rules(spec_schema: dict[str, Any]) -> None:
    for path, rules in SPEC_RULES.items():
        node = spec_schema
        for key in path:
            node = node["properties"][key]
        node.setdefault("x-kubernetes-validations", []).extend(rules)


def openapi_schema() -> dict[str, Any]:
    spec_json = LLMDeploymentSpec.model_json_schema(by_alias=True)
    spec = _structural(_resolve(spec_json, spec_json.get("$defs", {})))
    spec.pop("$defs", None)
    _add_rules(spec)
    status_json = LLMDeploymentStatus.model_json_schema(by_alias=True)
    status = _structural(_resolve(status_json, status_json.get("$defs", {})))
    status.pop("$defs", None)
    for listed, key in (("conditions", "type"), ("gpuExclusions", "gpu")):
        status["properties"][listed]["x-kubernetes-list-type"] = "map"
        status["properties"][listed]["x-kubernetes-list-map-keys"] = [key]
    status["properties"]["conditions"]["items"]["required"] = ["type", "status", "reason"]
    return {
        "type": "object",
        "description": "An LLM inference service that llmdeploy sizes, runs and scales.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": {**spec, "description": "What to serve, for which traffic and latency."},
            "status": {**status, "description": "What llmdeploy decided and observes."},
        },
        "x-kubernetes-validations": ROOT_RULES,
    }


def build_crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": SHORT_NAMES,
                "categories": ["all", "llmdeploy"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": openapi_schema()},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                }
            ],
        },
    }


def crd_yaml() -> str:
    header = "# Generated from operator/llmdeploy/api by `make crds`; do not edit.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=True, width=100)
