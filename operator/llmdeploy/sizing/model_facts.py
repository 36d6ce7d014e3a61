"""Resolve a spec's model into complete architecture facts the sizing math can rely on."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from pydantic import ValidationError

from llmdeploy.api.types import (
    ModelArchitecture,
    ModelSpec,
    Quantization,
    broken_architecture_rules,
    format_validation_error,
    to_camel,
)
from llmdeploy.catalog import Catalog, QuantizedCheckpoint


class SpecError(ValueError):
    """Invalid input; `field` is the path in the LLMDeployment the message is about."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class ModelFacts:
    id: str
    parameters: float
    active_parameters: float
    layers: int
    hidden_size: int
    intermediate_size: int
    attention_heads: int
    kv_heads: int
    head_dim: int
    vocab_size: int
    max_context_length: int
    tie_word_embeddings: bool
    native_dtype: Quantization
    experts: int = 0
    active_experts: int = 0
    shared_experts: int = 0
    moe_intermediate_size: int = 0
    first_dense_layers: int = 0
    kv_lora_rank: int = 0
    q_lora_rank: int = 0  # 0: the query projection is not factored
    qk_rope_head_dim: int = 0
    sliding_window: int = 0
    sliding_window_layers: int = 0
    model_type: str | None = None  # Hugging Face model_type, for engines' dtype refusals
    # Published pre-quantized checkpoints the catalog knows the 16-bit parts of.
    quantized_checkpoints: tuple[QuantizedCheckpoint, ...] = ()

    # Derived once in __post_init__: the planner reads them for every candidate.
    is_mla: bool = field(init=False)  # multi-head latent attention (a KV LoRA rank)
    is_moe: bool = field(init=False)  # routed experts (more than one)
    embedding_parameters: float = field(init=False)  # input embedding + lm_head (one if tied)
    routed_expert_parameters: float = field(init=False)
    active_routed_expert_parameters: float = field(init=False)  # the routed experts a token runs
    kv_projection_parameters: float = field(init=False)  # K and V projections, all layers
    attention_parameters_per_layer: float = field(init=False)  # Q, K, V and O projections
    mlp_width_per_token: int = field(init=False)  # widest MLP a token passes (dense or experts)

    def __post_init__(self) -> None:
        # Set first: the figures below read them.
        object.__setattr__(self, "is_mla", self.kv_lora_rank > 0)
        object.__setattr__(self, "is_moe", self.experts > 1)
        copies = 1 if self.tie_word_embeddings else 2
        routed = 0.0
        if self.is_moe:
            moe_layers = self.layers - self.first_dense_layers
            routed = float(
                self.experts * 3 * self.hidden_size * self.moe_intermediate_size * moe_layers
            )
        kv_projection = (
            0.0
            if self.is_mla
            else float(self.layers * 2 * self.hidden_size * self.kv_heads * self.head_dim)
        )
        moe_width = (self.active_experts + self.shared_experts) * self.moe_intermediate_size
        query = self.attention_heads * self.head_dim
        attention = (
            0.0
            if self.is_mla
            else float(
                2 * self.hidden_size * query + 2 * self.hidden_size * self.kv_heads * self.head_dim
            )
        )
        derived = {
            "embedding_parameters": float(self.vocab_size * self.hidden_size * copies),
            "routed_expert_parameters": routed,
            "active_routed_expert_parameters": routed * self.active_experts / max(1, self.experts),
            "kv_projection_parameters": kv_projection,
            "attention_parameters_per_layer": attention,
            "mlp_width_per_token": max(self.intermediate_size, moe_width),
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)

    def quantized_checkpoint(
        self, name: str | None, quantization: str
    ) -> QuantizedCheckpoint | None:
        """The catalog's facts of the checkpoint a plan loads, when it is a known pre-quantized
        checkpoint of this model in that format (by id or former id, case-insensitive)."""
        if name is None:
            return None
        key = name.lower()
        for checkpoint in self.quantized_checkpoints:
            names = (checkpoint.id, *checkpoint.aliases)
            if checkpoint.quantization == quantization and key in (n.lower() for n in names):
                return checkpoint
        return None


_REQUIRED = ("layers", "hidden_size", "attention_heads", "vocab_size", "max_context_length")


def _estimate_parameters(a: ModelArchitecture) -> float | None:
    """Parameter count from the architecture, for models the catalog does not know."""
    if a.kv_lora_rank or not (a.layers and a.hidden_size and a.attention_heads and a.vocab_size):
        return None  # MLA projections are not derivable from these facts alone
    hidden, heads = a.hidden_size, a.attention_heads
    kv_heads = a.kv_heads or heads
    head_dim = a.head_dim or hidden // heads
    inter = a.intermediate_size or 4 * hidden
    attention = 2 * hidden * heads * head_dim + 2 * hidden * kv_heads * head_dim
    if (a.experts or 0) > 1:
        experts = a.experts or 0
        moe_inter = a.moe_intermediate_size or inter
        dense_layers = a.first_dense_layers or 0
        moe_mlp = (experts + (a.shared_experts or 0)) * 3 * hidden * moe_inter + hidden * experts
        mlp_total = dense_layers * 3 * hidden * inter + (a.layers - dense_layers) * moe_mlp
    else:
        mlp_total = a.layers * 3 * hidden * inter
    embeddings = a.vocab_size * hidden * (1 if a.tie_word_embeddings else 2)
    return float(a.layers * attention + mlp_total + embeddings)


def resolve_model(spec: ModelSpec, catalog: Catalog) -> ModelFacts:
    """Catalog facts for the model, overridden field by field by `spec.model.architecture`."""
    entry = catalog.find_model(spec.name)
    facts: dict[str, object] = {}
    if entry is not None:
        facts.update(
            entry.model_dump(exclude_none=True, include=set(ModelArchitecture.model_fields))
        )
    given = spec.architecture.model_dump(exclude_none=True) if spec.architecture else {}
    facts.update(given)
    try:  # the spec's facts may contradict the catalog's they complete
        a = ModelArchitecture.model_validate(facts)
    except ValidationError as exc:

        def name(fact: str) -> str:
            return to_camel(fact) if fact in given else f"the catalog's {to_camel(fact)}"

        broken = broken_architecture_rules(facts, name)
        raise SpecError(
            "spec.model.architecture", "; ".join(broken) or format_validation_error(exc)
        ) from None
    missing = [name for name in _REQUIRED if getattr(a, name) is None]
    if missing:
        names = ", ".join(ModelArchitecture.model_fields[name].alias or name for name in missing)
        where = "is not in the catalog" if entry is None else "has incomplete facts"
        raise SpecError(
            "spec.model.architecture",
            f"model {spec.name!r} {where}; give {names} (or add it to a catalog file)",
        )
    parameters = a.parameters or _estimate_parameters(a)
    if parameters is None:
        raise SpecError(
            "spec.model.architecture.parameters",
            f"cannot derive the parameter count of {spec.name!r}; give parameters",
        )
    assert a.layers and a.hidden_size and a.attention_heads and a.vocab_size
    assert a.max_context_length
    sliding_window = a.sliding_window or 0
    model = ModelFacts(
        id=entry.id if entry is not None else spec.name,
        model_type=a.model_type,
        quantized_checkpoints=tuple(entry.quantized_checkpoints) if entry is not None else (),
        parameters=parameters,
        active_parameters=parameters,
        layers=a.layers,
        hidden_size=a.hidden_size,
        intermediate_size=a.intermediate_size or 4 * a.hidden_size,
        attention_heads=a.attention_heads,
        kv_heads=a.kv_heads or a.attention_heads,
        head_dim=a.head_dim or a.hidden_size // a.attention_heads,
        vocab_size=a.vocab_size,
        max_context_length=a.max_context_length,
        tie_word_embeddings=bool(a.tie_word_embeddings),
        native_dtype=a.native_dtype or Quantization.BF16,
        experts=a.experts or 0,
        active_experts=a.active_experts or 0,
        shared_experts=a.shared_experts or 0,
        moe_intermediate_size=a.moe_intermediate_size or 0,
        first_dense_layers=a.first_dense_layers or 0,
        kv_lora_rank=a.kv_lora_rank or 0,
        q_lora_rank=a.q_lora_rank or 0,
        qk_rope_head_dim=a.qk_rope_head_dim or 0,
        sliding_window=sliding_window,
        sliding_window_layers=(
            (a.sliding_window_layers if a.sliding_window_layers is not None else a.layers)
            if sliding_window
            else 0
        ),
    )
    # The embeddings and routed experts are part of the parameters; a count below theirs would
    # leave a negative remainder of weights.
    implied = model.embedding_parameters + model.routed_expert_parameters
    if parameters < implied:
        raise SpecError(
            "spec.model.architecture.parameters",
            f"{parameters:.4g} is fewer than the {implied:.4g} parameters of the embeddings "
            f"and routed experts alone",
        )
    active = a.active_parameters
    if active is None:
        routed = model.routed_expert_parameters
        share = model.active_experts / model.experts if model.is_moe else 1.0
        active = parameters - routed + routed * share
    return replace(model, active_parameters=min(active, parameters))
