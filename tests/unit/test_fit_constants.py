"""The corpus of bench/data, its fixed split and bench/fit_constants.py."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import corpus
import fit_constants
from llmdeploy.catalog import load_catalog
from llmdeploy.sizing.engine_memory import mxfp4_layout


def test_split_follows_the_committed_rule() -> None:
    split = corpus.load_split()
    ids = [r.id for r in corpus.load_kv()] + [r.id for r in corpus.load_latency()]
    assert sorted(split) == sorted(ids)
    for row_id in ids:
        assert split[row_id] == ("held-out" if corpus.held_out_by_rule(row_id) else "fit"), row_id


def test_the_outside_sets_are_apart_from_the_corpus() -> None:
    """latency_outside.csv and kv_outside.csv are standing blind sets (bench/data/README.md,
    "Outside set"): none of their rows is a corpus row again, by id, by source reference or by
    its measured figures, and none is in the split."""
    split = set(corpus.load_split())
    outside, inside = corpus.load_latency("latency_outside.csv"), corpus.load_latency()
    ids = [r.id for r in outside]
    assert len(ids) == len(set(ids)) >= 25
    assert not set(ids) & ({r.id for r in inside} | split)
    assert not {r.source for r in outside} & {r.source for r in inside}

    def point(r: corpus.LatencyRow) -> tuple[object, ...]:
        return (r.plan_model, r.gpu, r.tensor, r.concurrency, r.ttft_ms, r.tpot_ms)

    assert not {point(r) for r in outside} & {point(r) for r in inside}
    kv_ids = [r.id for r in corpus.load_kv("kv_outside.csv")]
    assert kv_ids and len(set(kv_ids)) == len(kv_ids)
    assert not set(kv_ids) & ({r.id for r in corpus.load_kv()} | split)


def test_every_row_can_be_replanned() -> None:
    catalog = load_catalog()
    for row in corpus.load_kv() + corpus.load_kv("kv_outside.csv"):
        assert row.plan_model and row.quantization in catalog.quantizations, row.id
        assert row.gpu in catalog.gpus or row.gpu_memory_gib is not None, row.id
        assert corpus.predict_weights_gib(row, catalog) > 0, row.id
    for lrow in corpus.load_latency() + corpus.load_latency("latency_outside.csv"):
        ttft, tpot = corpus.predict_latency(lrow, catalog)
        assert ttft > 0 and tpot > 0, lrow.id


def test_the_fit_reads_only_fit_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Doubling every held-out and outside measurement leaves the fitted constants as they
    were, and the fit never opens kv_outside.csv."""
    before = fit_constants.fit()
    split = corpus.load_split()
    kv, load_latency, read = corpus.load_kv(), corpus.load_latency, corpus._read

    def doubled_kv() -> list[corpus.KvRow]:
        return [
            dataclasses.replace(r, kv_gib=2 * r.kv_gib)
            if split[r.id] == "held-out" and r.kv_gib is not None
            else r
            for r in kv
        ]

    def doubled_latency(name: str = "latency.csv") -> list[corpus.LatencyRow]:
        return [
            dataclasses.replace(r, ttft_ms=2 * r.ttft_ms, tpot_ms=2 * r.tpot_ms)
            if split.get(r.id, "outside") != "fit"
            else r
            for r in load_latency(name)
        ]

    opened: list[str] = []

    def recording(name: str) -> list[dict[str, str]]:
        opened.append(name)
        return read(name)

    monkeypatch.setattr(corpus, "_read", recording)
    monkeypatch.setattr(fit_constants, "load_kv", doubled_kv)
    monkeypatch.setattr(fit_constants, "load_latency", doubled_latency)
    assert fit_constants.fit() == before
    assert "kv_outside.csv" not in opened
    # The test changed something the fit could have read.
    assert any(split[r.id] == "held-out" for r in kv)
    assert doubled_latency("latency_outside.csv")[0].tpot_ms == 2 * (
        load_latency("latency_outside.csv")[0].tpot_ms
    )


def test_constants_are_restored_after_a_trial() -> None:
    before = corpus.current_constants()
    with corpus.constants({name: 0.0 for name in before}):
        assert set(corpus.current_constants().values()) == {0.0}
    assert corpus.current_constants() == before


def test_an_all_reduce_without_peer_to_peer_is_host_staged() -> None:
    """A row whose log shows no GPU peer-to-peer is re-planned with NCCL's shared-memory
    transport, slower than the SKU's NVLink and than the PCIe link itself."""
    catalog = load_catalog()
    row = next(r for r in corpus.load_latency() if r.interconnect == "pcie" and r.tensor > 1)
    assert catalog.gpus[row.gpu].interconnect.kind == "nvlink"
    no_p2p = corpus.predict_latency(row, catalog)[1]
    nvlink = corpus.predict_latency(dataclasses.replace(row, interconnect=""), catalog)[1]
    assert no_p2p > nvlink
    assert corpus.NO_PEER_TO_PEER.bandwidth_gbps < 32  # a PCIe Gen4 x16 link's


def test_the_codes_memory_constants_are_the_fits() -> None:
    """memory.py carries what fit_constants.py derives from the fit set (issue 14, deliverable
    4)."""
    fitted = fit_constants.fit_memory(load_catalog())
    code = corpus.current_constants()
    assert fitted == {name: code[name] for name in fitted}
    assert set(fitted) == set(corpus.FITTED["memory"][1])


def test_the_codes_performance_constants_are_the_fits() -> None:
    """performance.py carries what fit_constants.py derives from the fit set, the per-GPU
    efficiencies included, and no per-GPU value the fit does not produce."""
    fitted = fit_constants.fit_performance(load_catalog())
    code = corpus.current_constants()
    performance_names = [
        name for name in code if name.split("[", 1)[0] in corpus.FITTED["performance"][1]
    ]
    assert fitted == {name: code[name] for name in performance_names}


def test_stage_a_reads_only_lone_prefills() -> None:
    """The prefill stage's constants move with a lone row's TTFT and not with a loaded row's:
    under load the TTFT also measures the client, which must not set the GEMM rate."""
    catalog = load_catalog()
    split = corpus.load_split()
    rows = [r for r in corpus.load_latency() if split[r.id] == "fit"]
    lone = fit_constants.lone_rows(rows)
    loaded = [r for r in rows if r.ttft_comparable and r.concurrency > 1]
    assert lone and loaded and all(r.concurrency == 1 for r in lone)

    def stage_a(scale: float, scaled: list[corpus.LatencyRow]) -> dict[str, float]:
        changed = [
            dataclasses.replace(r, ttft_ms=scale * r.ttft_ms) if r in scaled else r for r in rows
        ]
        with fit_constants.empty_tables():
            return fit_constants.stage_a(changed, catalog, fit_constants.start_values())

    before = stage_a(1.0, [])
    assert stage_a(0.5, loaded) == before
    assert stage_a(0.5, lone) != before


def test_a_per_gpu_efficiency_is_used_for_its_gpu_only() -> None:
    catalog = load_catalog()
    rows = corpus.load_latency()
    h100 = next(r for r in rows if r.gpu == "nvidia-h100-80gb")
    a100 = next(r for r in rows if r.gpu == "nvidia-a100-80gb")
    before = (corpus.predict_latency(h100, catalog), corpus.predict_latency(a100, catalog))
    with corpus.constants({"BANDWIDTH_EFFICIENCY_BY_GPU[nvidia-h100-80gb]": 0.4}):
        assert corpus.predict_latency(h100, catalog)[1] > before[0][1]
        assert corpus.predict_latency(a100, catalog) == before[1]
    assert (corpus.predict_latency(h100, catalog), corpus.predict_latency(a100, catalog)) == before


def test_the_fusion_workspace_is_fitted_on_the_rows_that_book_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rows whose release and GPU book FlashInfer's all-reduce fusion workspace at TP > 1
    (0.19.0 on H100) move NON_TORCH_ALLREDUCE_FUSION_GIB and nothing else; the other
    snapshot-era multi-GPU rows set the line it sits on."""
    from llmdeploy.sizing.memory import allreduce_fusion

    catalog = load_catalog()
    kv, split = corpus.load_kv(), corpus.load_split()
    before = fit_constants.fit_memory(catalog)

    def fused(r: corpus.KvRow) -> bool:
        return allreduce_fusion(r.tensor, r.pipeline, corpus.rules(r, catalog))

    assert any(fused(r) and split[r.id] == "fit" and r.kv_gib for r in kv)

    def shifted() -> list[corpus.KvRow]:
        return [
            dataclasses.replace(r, kv_gib=r.kv_gib - 1.0)
            if split[r.id] == "fit" and r.kv_gib is not None and fused(r)
            else r
            for r in kv
        ]

    monkeypatch.setattr(fit_constants, "load_kv", shifted)
    after = fit_constants.fit_memory(catalog)
    assert after["NON_TORCH_ALLREDUCE_FUSION_GIB"] == pytest.approx(
        before["NON_TORCH_ALLREDUCE_FUSION_GIB"] + 1.0
    )
    assert {k: v for k, v in after.items() if k != "NON_TORCH_ALLREDUCE_FUSION_GIB"} == {
        k: v for k, v in before.items() if k != "NON_TORCH_ALLREDUCE_FUSION_GIB"
    }


def test_a_row_gets_its_releases_defaults_unless_its_log_names_the_kernels() -> None:
    catalog = load_catalog()
    row = next(r for r in corpus.load_kv() if r.id == "v27508-h100-gpt-oss-120b")
    # A pip install (its traceback's site-packages): PyTorch's sampler, the kernel unnamed.
    assert (row.engine_version, row.sampler, row.moe_backend) == ("0.11.0", "pytorch", "")
    own = corpus.rules(row, catalog)
    assert (own.sampler_bytes_per_logit, own.mxfp4.backend) == (38.0, "marlin")
    # 0.11.0 on CUDA: FlashInfer's sampler (14 bytes per logit), Marlin for MXFP4 on Hopper.
    defaults = corpus.rules(dataclasses.replace(row, sampler=""), catalog)
    assert (defaults.sampler_bytes_per_logit, defaults.mxfp4.backend) == (14.0, "marlin")
    named = corpus.rules(dataclasses.replace(row, moe_backend="triton"), catalog)
    assert (named.sampler_bytes_per_logit, named.mxfp4.backend) == (38.0, "triton")
    # The release matters: unknown, the row is planned as the newest release read.
    newest = corpus.rules(dataclasses.replace(row, engine_version=""), catalog)
    assert newest.cuda_graph_gib > 0 and defaults.cuda_graph_gib == 0


def test_v0_turns_chunked_prefill_on_above_32k_tokens_on_cuda_only() -> None:
    """vLLM PR #6666: V0 profiles a 2048-token step above 32K tokens on CUDA; below, on ROCm or
    with sliding window it profiles the whole max_model_len (bench/corpus.py engine_defaults)."""
    catalog = load_catalog()
    a100, mi300x = catalog.gpus["nvidia-a100-80gb"], catalog.gpus["amd-mi300x-192gb"]
    assert corpus.engine_defaults("v0", a100, 131072) == (2048, 256)
    assert corpus.engine_defaults("v0", a100, 32768) == (32768, 256)
    assert corpus.engine_defaults("v0", mi300x, 131072) == (131072, 256)
    assert corpus.engine_defaults("v0", a100, 131072, sliding_window=True) == (131072, 256)
    row = next(r for r in corpus.load_kv("kv_outside.csv") if r.id.startswith("oci-a10-"))
    assert corpus.scheduler(row, catalog)[1] == 2048


def test_a_latency_row_is_replanned_with_the_step_budget_its_run_set() -> None:
    catalog = load_catalog()
    rows = {r.id: r for r in corpus.load_latency()}
    budgets = corpus.engine_max_num_tokens()
    assert budgets and set(budgets) <= set(rows)  # every side-file id is a corpus row
    for row_id, budget in budgets.items():
        # TensorRT-LLM without chunked prefill runs a context whole: it must fit the budget
        # beside the other streams' decodes (the prefilling request does not decode).
        row = rows[row_id]
        assert budget >= row.input_tokens + row.concurrency - 1
        assert corpus.latency_setup(row, catalog)[2] == budget
    other = next(r for r in rows.values() if r.id not in budgets)
    assert (
        corpus.latency_setup(other, catalog)[2]
        == corpus.engine_defaults(
            "v1",
            catalog.gpus[other.gpu],
            corpus._model(catalog, other.plan_model).max_context_length,
        )[0]
    )


def test_a_latency_row_s_expert_parallel_degree_is_the_one_its_source_states() -> None:
    """bench/data/latency_layout.csv: every id is a corpus latency row, its degree divides
    the row's TP (TensorRT-LLM: MoE TP x EP = TP) and is the one the row's quote states."""
    rows = {r["id"]: r for r in corpus._read("latency.csv")}
    degrees = corpus.expert_parallel_degrees()
    assert degrees and set(degrees) <= set(rows)
    assert {8, 4, 1} <= set(degrees.values())
    for row_id, degree in degrees.items():
        row = rows[row_id]
        assert degree >= 1 and int(row["tensor"]) % degree == 0, row_id
        stated = ("EP=None", "EP=1") if degree == 1 else (f"EP={degree}",)
        stated += (f"decode_ep {degree},", f"ep {degree},")
        assert any(s in row["quote"] for s in stated), row_id


def test_an_outside_row_s_async_scheduling_is_the_one_its_notes_state() -> None:
    """bench/data/latency_outside_serving.csv: every id is an outside latency row (none is a
    corpus row), and each row whose notes list the server's async-scheduling flag is in it
    with `yes`, so the blind rows are replayed with their servers' setting, as the corpus
    rows of the same scripts are (latency_client.csv)."""
    outside = {r["id"]: r for r in corpus._read("latency_outside.csv")}
    serving = {r["id"]: r["async_scheduling"] for r in corpus._read("latency_outside_serving.csv")}
    assert serving and set(serving) <= set(outside)
    assert not set(serving) & {r["id"] for r in corpus._read("latency.csv")}
    stated = {i for i, r in outside.items() if "async-scheduling" in r["notes"]}
    assert serving == dict.fromkeys(stated, "yes")
    assert all(corpus.async_scheduling_settings()[i] for i in stated)


def test_a_latency_row_s_mxfp4_moe_backend_is_the_one_its_notes_state() -> None:
    """bench/data/latency_moe_backend.csv: every id is a vLLM MXFP4 corpus latency row, and
    each such row whose notes set the server's MoE backend variable is in it with that
    backend (VLLM_MXFP4_USE_MARLIN=1: marlin; VLLM_USE_FLASHINFER_MOE_MXFP4_MXFP8=1:
    flashinfer), so the replay reads the experts as that kernel lays them out."""
    rows = {r["id"]: r for r in corpus._read("latency.csv")}
    backends = corpus.moe_backends()
    assert backends and set(backends) <= set(rows)
    variables = {
        "VLLM_MXFP4_USE_MARLIN=1": "marlin",
        "VLLM_USE_FLASHINFER_MOE_MXFP4_MXFP8=1": "flashinfer",
    }
    stated = {
        row_id: backend
        for row_id, row in rows.items()
        for variable, backend in variables.items()
        if row["engine"] == "vllm" and row["quantization"] == "mxfp4" and variable in row["notes"]
    }
    assert backends == stated


def test_a_latency_row_s_mxfp4_moe_activations_are_the_ones_its_notes_state() -> None:
    """bench/data/latency_moe_activation.csv (corpus) and latency_outside_moe_activation.csv
    (outside rows): every id is a vLLM MXFP4 latency row of its table on FlashInfer's backend
    (latency_moe_backend.csv, or its release's default on its GPU), and each vLLM MXFP4 row whose
    notes set VLLM_USE_FLASHINFER_MOE_MXFP4_MXFP8=1 is in it with `mxfp8`, so the replay charges
    the kernel the server ran, not vLLM's default MXFP4 x BF16 one."""
    catalog = load_catalog()
    for table, side in (
        ("latency.csv", "latency_moe_activation.csv"),
        ("latency_outside.csv", "latency_outside_moe_activation.csv"),
    ):
        rows = {r["id"]: r for r in corpus._read(table)}
        activations = {r["id"]: r["moe_activation"] for r in corpus._read(side)}
        assert activations and set(activations) <= set(rows)
        for row_id in activations:
            row = rows[row_id]
            default = mxfp4_layout(row["engine_version"], catalog.gpus[row["gpu"]]).backend
            assert corpus.moe_backends().get(row_id, default) == "flashinfer"
        stated = {
            row_id: "mxfp8"
            for row_id, row in rows.items()
            if row["engine"] == "vllm"
            and row["quantization"] == "mxfp4"
            and "VLLM_USE_FLASHINFER_MOE_MXFP4_MXFP8=1" in row["notes"]
        }
        assert activations == stated
