"""bench/prefix_replay.py: vLLM 0.8.2's prefix cache over tt-inference-server's sweep."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import prefix_replay


def runs(capacity: int) -> dict[tuple[int, int], list[int]]:
    return {(isl, osl): cached for isl, osl, cached in prefix_replay.replay(capacity)}


def test_the_client_draws_the_same_offsets_whatever_the_prompt_count() -> None:
    assert prefix_replay.offsets(4) == prefix_replay.offsets(8)[:4]


def test_a_request_whose_blocks_all_hit_recomputes_its_last_block() -> None:
    pool = prefix_replay.BlockPool(4096)
    prompt = list(range(128))
    assert pool.serve(prompt, 16) == 0
    assert pool.serve(prompt, 16) == 112
    assert pool.serve([*prompt, *range(1000, 1100)], 16) == 128


def test_a_finished_requests_tail_blocks_are_evicted_first() -> None:
    pool = prefix_replay.BlockPool(160)  # ten blocks
    first, second = list(range(64)), list(range(100, 164))
    pool.serve(first, 0)
    pool.serve(second, 0)
    # Three new blocks take the two never used, then the first prompt's last block only (freed
    # head first, its first block would have gone and nothing of it would hit).
    pool.serve(list(range(200, 248)), 0)
    assert pool.serve([*first, 1], 0) == 48


def test_the_sweep_reuses_earlier_runs_prompts() -> None:
    cached = runs(20000)
    # 128/1024 sends 128/128's prompts again; every request hits all but its last block.
    assert cached[(128, 1024)] == [112] * 4
    # 1024/128's prompts begin with the 128-token ones; request 0 repeats the warm-up prompt.
    assert cached[(1024, 128)] == [1008] + [128] * 7
    assert cached[(2048, 128)][1:] == [1024] * 7
    assert any(hit > 0 for hit in cached[(3072, 128)][1:])
    # The 3072-token prompts overflow this cache before the 4096-token run reaches them.
    assert cached[(4096, 128)][1:] == [0] * 7
    assert cached[(8192, 128)][1:] == [0] * 7


def test_a_small_cache_keeps_little_of_the_previous_run() -> None:
    cached = runs(9000)
    assert cached[(2048, 128)][1:] == [0] * 7
    assert cached[(3072, 128)][1:] == [0] * 7
