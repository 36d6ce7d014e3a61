"""Replay of vLLM 0.8.2's prefix cache over tt-inference-server's concurrency-1 sweep (the tt143
rows of bench/data/latency.csv): how many of each request's prompt tokens were served from the
cache that the sweep's earlier runs left (bench/data/README.md, flags of branch ttftlone).

The sweep (tt-inference-server benchmarking/run_benchmarks.py at 8b5823395) runs its ISL/OSL
pairs in order against one server; its client (tenstorrent/vllm tstesco/benchmark-uplift,
benchmarks/benchmark_serving.py) seeds numpy with 0 and draws fixed lengths, so every run draws
the same offsets and prompt i is tokens (offsets[i] + i + j) % vocab, j < ISL. Each run first
sends input_requests[0] once (its initial single prompt test run). Prompts are replayed as token
ids: the server re-tokenizes the decoded text, which keeps a shared prefix but its last tokens.

vLLM 0.8.2 V1 (v1/core): 16-token blocks, a full block cached by the hash of its tokens and its
parent's; a request takes the longest cached chain of its prompt's full blocks, and recomputes
the last block when they all hit (sched/scheduler.py); blocks are taken from the head of an LRU
free queue (evicting what they cached), and a finished request's blocks go back to its tail,
last block first (kv_cache_manager.py free). Output tokens are unique: they never hit.

Run: .venv/bin/python bench/prefix_replay.py CAPACITY_TOKENS...
"""

from __future__ import annotations

import argparse
from collections import OrderedDict
from collections.abc import Iterator

import numpy as np

BLOCK = 16
# Qwen2.5's tokenizer.vocab_size (the modulus of the client's prompt tokens).
VOCAB = 151643
# BATCH_1_BENCHMARK_COMMON_ISL_OSL_PAIRS up to 8192 (benchmark_config.py), with get_num_prompts'
# request count for each.
SWEEP: tuple[tuple[int, int, int], ...] = (
    (128, 128, 8),
    (128, 1024, 4),
    (1024, 128, 8),
    (2048, 128, 8),
    (3072, 128, 8),
    (4096, 128, 8),
    (8192, 128, 8),
)

BlockHash = tuple[object, tuple[int, ...]]


def offsets(count: int) -> list[int]:
    """The client's per-prompt offsets: seed 0; the fixed lengths draw nothing before them."""
    rng = np.random.RandomState(0)
    return [int(x) for x in rng.randint(0, VOCAB, size=count)]


class BlockPool:
    """The prefix cache of `capacity` tokens."""

    def __init__(self, capacity: int) -> None:
        self.free: OrderedDict[int, None] = OrderedDict((b, None) for b in range(capacity // BLOCK))
        self.cached: dict[BlockHash, int] = {}
        self.hash_of: dict[int, BlockHash] = {}

    def serve(self, prompt: list[int], output_tokens: int) -> int:
        """Run one request to completion; the prompt tokens it found cached."""
        chain: list[BlockHash] = []
        for start in range(0, len(prompt) - BLOCK + 1, BLOCK):
            chain.append((chain[-1] if chain else None, tuple(prompt[start : start + BLOCK])))
        hits = next((i for i, h in enumerate(chain) if h not in self.cached), len(chain))
        if hits * BLOCK == len(prompt):
            hits -= 1
        blocks = [self.cached[h] for h in chain[:hits]]
        for block in blocks:
            self.free.pop(block, None)
        for _ in range(-(-(len(prompt) + output_tokens) // BLOCK) - hits):
            block, _ = self.free.popitem(last=False)
            old = self.hash_of.pop(block, None)
            if old is not None and self.cached.get(old) == block:
                del self.cached[old]
            blocks.append(block)
        for i in range(hits, len(chain)):
            self.cached[chain[i]] = blocks[i]
            self.hash_of[blocks[i]] = chain[i]
        for block in reversed(blocks):
            self.free[block] = None
        return hits * BLOCK


def replay(capacity: int) -> Iterator[tuple[int, int, list[int]]]:
    """(ISL, OSL, cached prompt tokens of each request of the run's main part) per run."""
    pool = BlockPool(capacity)
    for isl, osl, count in SWEEP:
        prompts = [
            [(offset + i + j) % VOCAB for j in range(isl)]
            for i, offset in enumerate(offsets(count))
        ]
        pool.serve(prompts[0], osl)  # the client's initial single prompt test run
        yield isl, osl, [pool.serve(p, osl) for p in prompts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("capacity", type=int, nargs="+", help="KV cache size in tokens")
    for capacity in parser.parse_args().capacity:
        print(f"capacity {capacity} tokens")
        for isl, osl, cached in replay(capacity):
            new = isl - sum(cached) / len(cached)
            print(f"  {isl}/{osl}: cached tokens per request {cached}, mean new {new:.0f}")


if __name__ == "__main__":
    main()
