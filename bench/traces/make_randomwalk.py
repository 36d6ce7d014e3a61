"""Writes bench/traces/randomwalk.csv: a held-out trace, made after the policy defaults were
chosen on the other four, to show how they do on load they were not tuned on.

A random walk (sigma 0.25 requests/s per 15 s step, kept within 0.2-8) with a 3% chance per
step of a +4 requests/s burst; fixed seed, so the file is reproducible.
Run: .venv/bin/python bench/traces/make_randomwalk.py
"""

from __future__ import annotations

import random
from pathlib import Path

SEED = 7
STEPS = 481
STEP_S = 15


def main() -> None:
    rng = random.Random(SEED)
    level = 2.0
    rows = ["t,requestsPerSecond"]
    for i in range(STEPS):
        level = min(8.0, max(0.2, level + rng.gauss(0, 0.25)))
        burst = 4.0 if rng.random() < 0.03 else 0.0
        rows.append(f"{i * STEP_S},{level + burst:.3f}")
    (Path(__file__).parent / "randomwalk.csv").write_text("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
