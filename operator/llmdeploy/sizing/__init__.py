"""Pure sizing: (spec, catalog) -> Plan. No I/O, no Kubernetes."""

from llmdeploy.sizing.model_facts import ModelFacts, SpecError, resolve_model
from llmdeploy.sizing.optimizer import feasible_alternatives, plan_deployment
from llmdeploy.sizing.plan import Alternative, Plan

__all__ = [
    "Alternative",
    "ModelFacts",
    "Plan",
    "SpecError",
    "feasible_alternatives",
    "plan_deployment",
    "resolve_model",
]
