"""Catalogs as data: GPUs, models, quantization formats and engines.

The packaged YAML files under `data/` are the defaults; users extend or override them by id
with their own files (operator settings or `llmdeploy plan --catalog FILE`) without code changes.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    Strict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from llmdeploy.api.types import (
    ARCHITECTURE_ERROR,
    LaxEngineName,
    LaxPrecision,
    LaxQuantization,
    ModelArchitecture,
    Quantization,
    SpecModel,
    broken_architecture_rules,
    format_validation_error,
    to_camel,
)
from llmdeploy.documents import DocumentError, load_yaml_documents, read_text

# Hardware figures: finite, and bounded on both sides so that no product or quotient of them in
# the sizing math overflows to infinity or divides by zero.
Measure = Annotated[float, Field(ge=1e-3, le=1e9)]
VERSION_PATTERN = r"^[0-9]+(\.[0-9]+)*([-+.]?[A-Za-z0-9]+)*$"
Vendor = Literal["nvidia", "amd"]
Platform = Literal["cuda", "rocm"]
# The software stack a vendor's GPUs run engine images on.
PLATFORM_OF_VENDOR: dict[str, Platform] = {"nvidia": "cuda", "amd": "rocm"}
Version = Annotated[str, Field(max_length=64, pattern=VERSION_PATTERN)]
# The 4-bit formats whose scales (and zero points) come per group of inputs.
GROUPED_INT4 = (Quantization.INT4_AWQ, Quantization.INT4_GPTQ)


# Pure, and asked for every layout the planner tries (its release's rules are ranges): parsed
# once per release string. Bounded: a spec may name any release.
@functools.lru_cache(maxsize=512)
def version_key(version: str) -> tuple[int, ...]:
    """`0.11.1` -> (0, 11, 1, 1); release candidates sort below their release."""
    numbers = [int(n) for n in re.findall(r"\d+", version)]
    release = re.match(r"^[\d.]+", version)
    core = [int(n) for n in release.group(0).strip(".").split(".")] if release else numbers
    is_rc = 0 if re.search(r"rc|a|b|dev", version) else 1
    return (*core, is_rc, *numbers[len(core) :])


def version_within(version: str | None, since: str | None, until: str | None) -> bool:
    """Whether `version` lies in [since, until]; an unknown version lies in every range."""
    if version is None:
        return True
    key = version_key(version)
    return (since is None or key >= version_key(since)) and (
        until is None or key <= version_key(until)
    )


class CatalogError(DocumentError):
    """A catalog file or entry is malformed; the message names the file and field."""


class CatalogModel(SpecModel):
    """Checked like a spec: strict types, finite numbers, unknown fields refused."""


class Interconnect(CatalogModel):
    kind: Literal["nvlink", "pcie", "infinity-fabric"]
    bandwidth_gbps: Measure = Field(description="Per-GPU unidirectional GB/s for all-reduce.")


class Gpu(CatalogModel):
    id: str
    vendor: Vendor
    display_name: str
    architecture: str
    chip: str | None = Field(
        default=None,
        pattern=r"^[A-Z0-9]+$",
        description="The GPU die (GH100, GA100, ...): SKUs of one die share the compute "
        "efficiency the corpus fits (bench/fit_constants.py); without it the shared value.",
    )
    memory_gib: Measure = Field(
        description="Total memory as CUDA reports it, GiB (GPU Feature Discovery's where no CUDA "
        "figure was found)."
    )
    cuda_visible_memory_gib: Measure | None = Field(
        default=None,
        description="Total memory torch.cuda.mem_get_info reports, GiB: what vLLM multiplies by "
        "gpu_memory_utilization. Only with a cited public log (sources.cudaVisibleMemory); "
        "without it the budget uses memoryGiB.",
    )
    bandwidth_gbps: Measure = Field(description="Memory bandwidth, GB/s.")
    tflops: dict[Literal["bf16", "fp8", "int8"], Measure] = Field(
        description="Dense TFLOPS by compute dtype; bf16 is required (the fallback)."
    )
    fp8: bool
    interconnect: Interconnect
    gpus_per_node: int = Field(ge=1, le=64)
    product_labels: list[str]
    node_labels: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Other node labels that identify this SKU, by key (a cloud's own, e.g. "
        "GKE's accelerator label or a Karpenter instance label); any one of them matches.",
    )
    resource_name: str

    @property
    def product_label_key(self) -> str:
        """The GPU Feature Discovery (NVIDIA) or node labeller (AMD) product label."""
        return "nvidia.com/gpu.product" if self.vendor == "nvidia" else "amd.com/gpu.product-name"

    @property
    def visible_memory_gib(self) -> float:
        """The total an engine's memory budget starts from."""
        return self.cuda_visible_memory_gib or self.memory_gib

    @property
    def platform(self) -> Platform:
        return PLATFORM_OF_VENDOR[self.vendor]

    def selector_terms(self) -> list[tuple[str, list[str]]]:
        """(label key, values) pairs, each of which alone identifies a node of this SKU."""
        return [(self.product_label_key, self.product_labels), *sorted(self.node_labels.items())]

    # Zero is a price: GPUs already owned cost nothing more per hour.
    price_per_hour: Annotated[float, Field(ge=0, le=1e6)]
    price_date: str
    sources: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _has_bf16(self) -> Gpu:
        if "bf16" not in self.tflops:
            raise ValueError("tflops needs bf16, the fallback for other compute dtypes")
        if self.cuda_visible_memory_gib is not None and "cudaVisibleMemory" not in self.sources:
            raise ValueError("cudaVisibleMemoryGiB needs its source in sources.cudaVisibleMemory")
        return self

    def compute_tflops(self, dtype: str) -> float:
        """Dense tensor throughput for a compute dtype, falling back to bf16."""
        return self.tflops.get(dtype) or self.tflops["bf16"]  # type: ignore[call-overload]


class QuantizedCheckpoint(CatalogModel):
    """A published pre-quantized checkpoint of a catalog model, with the linear weights its
    quantization config leaves 16-bit (`modules_to_not_convert` or `ignore`). Embeddings and
    lm_head are counted 16-bit in every format, so only decoder-layer modules are listed."""

    id: str = Field(min_length=1, max_length=256, description="Hugging Face id.")
    # Tuples (a list in YAML is accepted) keep the model facts that hold these hashable.
    aliases: Annotated[tuple[str, ...], Strict(False)] = Field(
        default=(), description="Former ids of the repository."
    )
    quantization: LaxQuantization
    unquantized_layers: Annotated[tuple[Annotated[int, Field(ge=0)], ...], Strict(False)] = Field(
        default=(), description="Decoder layers whose linear weights all stay 16-bit."
    )
    unquantized_attention: bool = Field(
        default=False, description="The attention projections of every layer stay 16-bit."
    )
    group_size: Literal[32, 64, 128] | None = Field(
        default=None,
        description="Inputs per scale of a 4-bit AWQ/GPTQ checkpoint; the catalog's int4 "
        "formats count 128.",
    )
    weight_block_size: (
        Annotated[tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]], Strict(False)]
        | None
    ) = Field(
        default=None,
        description="An fp8 checkpoint's weight_block_size (quantization_config): block-scaled "
        "FP8 weights, one scale per block of [output, input] weights; absent for per-tensor or "
        "per-channel scales.",
    )
    source: str = Field(min_length=1, description="Where the checkpoint's config says so.")

    @field_validator("weight_block_size")
    @classmethod
    def _block_size_of_fp8(
        cls, value: tuple[int, int] | None, info: ValidationInfo
    ) -> tuple[int, int] | None:
        quantization = info.data.get("quantization")
        if value is not None and quantization != Quantization.FP8:
            raise ValueError(f"only fp8 checkpoints have one, not {quantization}")
        return value

    @field_validator("group_size")
    @classmethod
    def _group_size_of_a_grouped_format(cls, value: int | None, info: ValidationInfo) -> int | None:
        quantization = info.data.get("quantization")
        if value is not None and quantization not in GROUPED_INT4:
            raise ValueError(
                f"only {' and '.join(GROUPED_INT4)} checkpoints have one, not {quantization}"
            )
        return value


class ModelEntry(ModelArchitecture):
    id: str
    aliases: list[str] = Field(default_factory=list)
    family: str | None = None
    quantized_checkpoints: list[QuantizedCheckpoint] = Field(default_factory=list)
    source: str | None = None
    notes: str | None = None

    @model_validator(mode="after")
    def _checkpoint_layers_exist(self) -> ModelEntry:
        for index, checkpoint in enumerate(self.quantized_checkpoints):
            where = f"quantizedCheckpoints[{index}]"
            per_layer = checkpoint.unquantized_attention or checkpoint.unquantized_layers
            if per_layer and self.kv_lora_rank:
                raise ValueError(f"{where}: the layers of an MLA model are not counted one by one")
            beyond = [n for n in checkpoint.unquantized_layers if n >= (self.layers or 0)]
            if beyond:
                raise ValueError(
                    f"{where}.unquantizedLayers: {beyond} beyond the model's {self.layers} layers"
                )
        return self


class QuantFormat(CatalogModel):
    id: LaxQuantization
    precision: LaxPrecision = Field(description="Quality tier, for minPrecision.")
    weight_bytes: Annotated[float, Field(ge=0.01, le=16)] = Field(
        description="Bytes per quantized parameter, scales included."
    )
    applies_to: Literal["linear", "experts"] = Field(
        description="Which weights take this format; the rest stay 16-bit."
    )
    compute_dtype: Literal["bf16", "fp8", "int8"]
    online_engines: list[LaxEngineName] = Field(
        description="Engines that quantize a 16-bit checkpoint to this format at load time."
    )
    requires_fp8_hardware: bool = False
    engines: list[LaxEngineName]
    source: str | None = None


class VersionRange(CatalogModel):
    """Engine releases a fact was read in: [since, until], open where left out."""

    since: Version | None = None
    until: Version | None = None

    def covers(self, version: str | None) -> bool:
        return version_within(version, self.since, self.until)


class BlockSizeRule(VersionRange):
    """A KV-cache block size the engine forces for MLA models on some GPU architectures."""

    architectures: list[str] = Field(min_length=1)
    block_size: int = Field(ge=1, le=4096)
    source: str


class DtypeRefusal(VersionRange):
    """A weight dtype the engine refuses for some model types (Hugging Face model_type)."""

    quantization: LaxQuantization
    model_types: list[str] = Field(min_length=1)
    reason: str
    source: str


class RemovedFlag(CatalogModel):
    """A command-line flag the engine no longer accepts from `removed_in` on; `last_seen_in` is
    the newest release checked that still had it (releases between were not checked)."""

    flag: str = Field(pattern=r"^--?[A-Za-z0-9][-_A-Za-z0-9]*$")
    removed_in: Version
    last_seen_in: Version


class MetricsEndpoint(VersionRange):
    """Where releases of an engine serve Prometheus metrics, and the LLM API options (the
    engine's options file) that turn them on; a release no entry covers serves none."""

    path: str = Field(pattern=r"^/[A-Za-z0-9/_.-]*$", max_length=128)
    options: dict[str, bool] = Field(default_factory=dict)
    source: str


class Engine(CatalogModel):
    id: LaxEngineName
    display_name: str
    vendors: list[Vendor] = Field(
        min_length=1, description="GPU vendors the engine's images run on (CUDA or ROCm)."
    )
    block_size: int = Field(ge=1, le=4096, description="Tokens per KV-cache block.")
    mla_block_sizes: list[BlockSizeRule] = Field(
        default_factory=list, description="Block sizes forced for MLA models, by release."
    )
    default_max_num_batched_tokens: int = Field(ge=1, le=1_048_576)
    fp8_kv_cache_architectures: list[str] = Field(
        default_factory=list, description="GPU architectures the engine keeps an FP8 KV cache on."
    )
    dtype_refusals: list[DtypeRefusal] = Field(default_factory=list)
    removed_flags: list[RemovedFlag] = Field(default_factory=list)
    removed_flags_source: str | None = None
    multi_node: bool = Field(description="llmdeploy can launch a replica spanning nodes.")
    metrics: list[MetricsEndpoint] = Field(
        default_factory=list,
        description="Prometheus endpoints by release; a release none covers serves no metrics.",
    )
    source: str | None = None

    def metrics_for(self, version: str | None) -> MetricsEndpoint | None:
        """The release's Prometheus endpoint, None where it serves none. An unknown release
        (an image override without engine.version) is taken to be a current one."""
        for endpoint in self.metrics:
            if endpoint.covers(version):
                return endpoint
        return None

    def releases_with_metrics(self) -> str:
        """`1.3.0rc20 and newer`, for reasons that say which releases do serve metrics."""
        ranges = [f"{e.since or 'any'}{f' to {e.until}' if e.until else ' and newer'}"
                  for e in self.metrics]  # fmt: skip
        return " or ".join(ranges) or "none"

    def block_size_for(self, gpu: Gpu, mla: bool, version: str | None) -> int:
        """Tokens per KV block on this GPU; an unknown release takes the engine's default."""
        if mla and version is not None:
            for rule in self.mla_block_sizes:
                if gpu.architecture in rule.architectures and rule.covers(version):
                    return rule.block_size
        return self.block_size

    def refusal(
        self, quantization: str, model_type: str | None, version: str | None
    ) -> DtypeRefusal | None:
        """Why the engine refuses this dtype for the model type; an unknown release refuses
        whatever any release refuses, so the planner never proposes it."""
        for rule in self.dtype_refusals:
            if (
                rule.quantization == quantization
                and model_type in rule.model_types
                and rule.covers(version)
            ):
                return rule
        return None

    def removed_flag(self, flag: str, version: str) -> RemovedFlag | None:
        for entry in self.removed_flags:
            if _same_flag(entry.flag, flag) and version_key(version) >= version_key(
                entry.removed_in
            ):
                return entry
        return None


def _same_flag(a: str, b: str) -> bool:
    """`--swap_space` and `--swap-space` name one flag (both engines accept either spelling
    where they normalise, and llmdeploy must not let a spelling slip past the check)."""
    return a.replace("_", "-") == b.replace("_", "-")


class Catalog(CatalogModel):
    gpus: dict[str, Gpu]
    models: dict[str, ModelEntry]
    quantizations: dict[LaxQuantization, QuantFormat]
    engines: dict[LaxEngineName, Engine]

    def find_model(self, name: str) -> ModelEntry | None:
        key = name.lower()
        for model in self.models.values():
            if model.id.lower() == key or key in (alias.lower() for alias in model.aliases):
                return model
        return None


_SECTIONS: dict[str, type[Gpu] | type[ModelEntry] | type[QuantFormat] | type[Engine]] = {
    "gpus": Gpu,
    "models": ModelEntry,
    "quantizations": QuantFormat,
    "engines": Engine,
}


def _one_document(text: str, origin: str) -> Any:
    """The file's YAML document; None when it is empty."""
    try:
        documents = [d for d in load_yaml_documents(text, origin) if d is not None]
    except DocumentError as exc:
        raise CatalogError(str(exc)) from None
    if len(documents) > 1:
        raise CatalogError(f"{origin}: expected one YAML document, found {len(documents)}")
    return documents[0] if documents else None


def _read_yaml(text: str, origin: str) -> Mapping[str, Any]:
    document = _one_document(text, origin)
    if document is None:
        return {}
    if not isinstance(document, Mapping):
        raise CatalogError(f"{origin}: expected a mapping with keys {sorted(_SECTIONS)}")
    unknown = set(document) - set(_SECTIONS)
    if unknown:
        raise CatalogError(f"{origin}: unknown sections {sorted(unknown)}")
    return document


def _merge(into: dict[str, dict[str, Any]], document: Mapping[str, Any], origin: str) -> None:
    for section in _SECTIONS:
        rows = document.get(section) or []
        if not isinstance(rows, list):
            raise CatalogError(f"{origin}: {section} must be a list")
        for index, row in enumerate(rows):
            if not isinstance(row, Mapping) or "id" not in row:
                raise CatalogError(f"{origin}: {section}[{index}] needs an id")
            into[section][str(row["id"])] = dict(row)


def _packaged_documents() -> Iterable[tuple[str, str]]:
    data = resources.files("llmdeploy.catalog") / "data"
    for name in ("gpus.yaml", "models.yaml", "quantizations.yaml", "engines.yaml"):
        yield f"catalog/data/{name}", (data / name).read_text(encoding="utf-8")


def load_catalog(extensions: Iterable[Path] = ()) -> Catalog:
    """The packaged catalog, extended or overridden by id with each file in order."""
    rows: dict[str, dict[str, Any]] = {section: {} for section in _SECTIONS}
    for origin, text in _packaged_documents():
        _merge(rows, _read_yaml(text, origin), origin)
    for path in extensions:
        _merge(rows, _read_yaml(_read_file(Path(path)), str(path)), str(path))
    return _validate(rows)


def _read_file(path: Path) -> str:
    try:
        return read_text(path)
    except DocumentError as exc:
        raise CatalogError(str(exc)) from None


def _validate(rows: dict[str, dict[str, Any]]) -> Catalog:
    parsed: dict[str, dict[Any, Any]] = {}
    for section, model in _SECTIONS.items():
        parsed[section] = {}
        for key, row in rows[section].items():
            try:
                entry = model.model_validate(row)
            except ValidationError as exc:
                raise CatalogError(format_validation_error(exc, f"{section}[{key}]")) from None
            parsed[section][entry.id] = entry
    return Catalog.model_validate(parsed)


_HF_KEYS: dict[str, str] = {
    "num_hidden_layers": "layers",
    "hidden_size": "hidden_size",
    "intermediate_size": "intermediate_size",
    "num_attention_heads": "attention_heads",
    "num_key_value_heads": "kv_heads",
    "head_dim": "head_dim",
    "vocab_size": "vocab_size",
    "max_position_embeddings": "max_context_length",
    "tie_word_embeddings": "tie_word_embeddings",
    "moe_intermediate_size": "moe_intermediate_size",
    "first_k_dense_replace": "first_dense_layers",
    "kv_lora_rank": "kv_lora_rank",
    "qk_rope_head_dim": "qk_rope_head_dim",
    "sliding_window": "sliding_window",
}
# Facts with several spellings across model families: the first one a config sets, wins.
_HF_CHOICES: dict[str, tuple[str, ...]] = {
    "experts": ("num_local_experts", "n_routed_experts", "num_experts"),
    "active_experts": ("num_experts_per_tok", "num_experts_per_token"),
    "shared_experts": ("n_shared_experts",),
}
# What a fact the config did not write would be called in one (in an error about it).
_HF_NAMES = {
    **{field: key for key, field in _HF_KEYS.items()},
    **{field: keys[0] for field, keys in _HF_CHOICES.items()},
    "sliding_window_layers": "num_hidden_layers",
}


def architecture_from_hf_config(
    config: object, given: ModelArchitecture | None = None
) -> ModelArchitecture:
    """Architecture facts from a Hugging Face config.json (text models, or a VLM's text_config),
    completed by `given` (a spec's facts, which win).

    Checked as strictly as a spec: a layer count written as "32" is refused, not converted.
    Raises ValueError whose message names each fact as it was written: the config.json key
    (`num_key_value_heads`), or the spec's field for a fact of `given`.
    """
    if not isinstance(config, Mapping):
        raise ValueError(f"expected a JSON object, found {type(config).__name__}")
    if isinstance(config.get("text_config"), Mapping):
        config = {**config, **config["text_config"]}
    written = {field: key for key, field in _HF_KEYS.items() if config.get(key) is not None}
    for field, keys in _HF_CHOICES.items():
        key = next((k for k in keys if config.get(k)), None)
        if key is not None:
            written[field] = key
    facts: dict[str, Any] = {field: config[key] for field, key in written.items()}
    if isinstance(config.get("model_type"), str):
        facts["model_type"] = config["model_type"]
    if facts.get("kv_lora_rank"):
        # MLA caches one latent per token and layer; the head count seen by the cache is 1.
        facts.setdefault("kv_heads", 1)
    if config.get("use_sliding_window") is False:  # Qwen configs carry an unused window
        facts.pop("sliding_window", None)
    quant = config.get("quantization_config")
    if isinstance(quant, Mapping):
        method = str(quant.get("quant_method", "")).lower()
        native = {"fp8": "fp8", "mxfp4": "mxfp4", "awq": "int4-awq", "gptq": "int4-gptq"}
        if method in native:
            facts["native_dtype"] = native[method]
            written["native_dtype"] = "quantization_config.quant_method"
    # Validated before the window's layers are counted from it.
    checked = _hf_validated(facts, written)
    if checked.sliding_window and checked.layers:
        layer_types = config.get("layer_types")
        if isinstance(layer_types, list):
            facts["sliding_window_layers"] = sum(t == "sliding_attention" for t in layer_types)
            written["sliding_window_layers"] = "the sliding_attention entries of layer_types"
        elif config.get("model_type") in ("gemma2", "gemma3_text", "gemma3"):
            facts["sliding_window_layers"] = checked.layers // 2  # alternating layers
        else:
            facts["sliding_window_layers"] = checked.layers
    if given is not None:
        spec = given.model_dump(exclude_none=True)
        facts.update(spec)
        written.update({field: f"spec.model.architecture.{to_camel(field)}" for field in spec})
    return _hf_validated(facts, written)


def _hf_validated(facts: dict[str, Any], written: Mapping[str, str]) -> ModelArchitecture:
    def name(field: str) -> str:
        return written.get(field) or _HF_NAMES.get(field, field)

    try:
        return ModelArchitecture.model_validate(facts)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            if error["type"] == ARCHITECTURE_ERROR:
                problems.extend(broken_architecture_rules(facts, name))
            else:
                field = str(error["loc"][0]) if error["loc"] else ""
                problems.append(f"{name(field)}: {error['msg']}")
        raise ValueError("; ".join(problems)) from None


class PinnedImage(CatalogModel):
    engine: LaxEngineName
    # Ordered by their numbers (version_key), so they must start with some.
    engine_version: Version
    platform: Platform = Field(default="cuda", description="cuda: NVIDIA GPUs; rocm: AMD GPUs.")
    cuda_version: Version | None = None
    min_driver: str | None = Field(
        default=None,
        max_length=64,
        pattern=r"^[0-9]+\.[0-9]+(\.[0-9]+)*$",
        description="Minimum NVIDIA driver for the CUDA version.",
    )
    rocm_version: Version | None = None
    image: str = Field(pattern=r"^[^@\s]+@sha256:[0-9a-f]{64}$")
    default: bool = False
    source: str

    @model_validator(mode="after")
    def _platform_facts(self) -> PinnedImage:
        if self.platform == "cuda" and (self.cuda_version is None or self.min_driver is None):
            raise ValueError("a cuda image needs cudaVersion and minDriver")
        if self.platform == "rocm" and self.rocm_version is None:
            raise ValueError("a rocm image needs rocmVersion")
        if self.platform == "rocm" and (self.cuda_version or self.min_driver):
            raise ValueError("a rocm image has no cudaVersion or minDriver")
        return self

    def runs_on(self, driver: tuple[int, int]) -> bool:
        """Whether an NVIDIA driver (major, minor) runs this image's CUDA."""
        if self.min_driver is None:  # ROCm: no NVIDIA driver floor
            return True
        major, minor = (int(p) for p in self.min_driver.split(".")[:2])
        return driver >= (major, minor)


class ImageLock(CatalogModel):
    images: list[PinnedImage]

    def entries(self, engine: str, platform: Platform, version: str | None) -> list[PinnedImage]:
        return [
            e
            for e in self.images
            if e.engine == engine
            and e.platform == platform
            and (version is None or e.engine_version == version)
        ]

    def choose(
        self,
        engine: str,
        platform: Platform,
        version: str | None = None,
        drivers: Sequence[tuple[int, int]] = (),
    ) -> PinnedImage | None:
        """The image that runs: with the NVIDIA drivers of the nodes the replicas may land
        on, the newest release whose CUDA all of them run (for one release, its newest CUDA);
        without, the default (or newest) entry. None when no entry fits. The planner sizes for
        this release and the renderer pins it, so both follow one choice."""
        entries = self.entries(engine, platform, version)
        if drivers and platform == "cuda":
            oldest = min(drivers)
            entries = [e for e in entries if e.runs_on(oldest)]
        else:
            entries = [e for e in entries if e.default] or entries
        if not entries:
            return None
        return max(
            entries,
            key=lambda e: (version_key(e.engine_version), version_key(e.cuda_version or "0")),
        )

    def versions(self, engine: str, platform: Platform) -> list[str]:
        found = {
            e.engine_version for e in self.images if e.engine == engine and e.platform == platform
        }
        return sorted(found, key=version_key)

    @model_validator(mode="after")
    def _one_default(self) -> ImageLock:
        seen: set[tuple[str, str]] = set()
        for entry in self.images:
            key = (entry.engine.value, entry.platform)
            if entry.default and key in seen:
                raise ValueError(f"more than one default image for {key[0]} on {key[1]}")
            if entry.default:
                seen.add(key)
        return self


def load_image_lock(path: Path | None = None) -> ImageLock:
    """The packaged images.lock.yaml, or a replacement file."""
    if path is None:
        text = (resources.files("llmdeploy.catalog") / "data" / "images.lock.yaml").read_text(
            encoding="utf-8"
        )
        origin = "catalog/data/images.lock.yaml"
    else:
        text = _read_file(path)
        origin = str(path)
    try:
        return ImageLock.model_validate(_one_document(text, origin))
    except ValidationError as exc:
        raise CatalogError(format_validation_error(exc, origin)) from None
