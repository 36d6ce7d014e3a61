"""`llmdeploy render` of every example against committed golden files.

Regenerate after an intended change: LLMDEPLOY_UPDATE_GOLDEN=1 pytest tests/golden
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llmdeploy.catalog import load_catalog, load_image_lock
from llmdeploy.cli import read_manifest
from llmdeploy.render import render_manifests, to_yaml
from llmdeploy.sizing import plan_deployment

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
EXPECTED = Path(__file__).parent / "expected"


def render_example(path: Path) -> str:
    resource = read_manifest(str(path))
    catalog, lock = load_catalog(), load_image_lock()
    plan = plan_deployment(resource.spec, catalog, lock)
    return to_yaml(render_manifests(resource, plan, catalog, lock))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_render_matches_golden(example: Path) -> None:
    rendered = render_example(example)
    golden = EXPECTED / f"{example.stem}.yaml"
    if os.environ.get("LLMDEPLOY_UPDATE_GOLDEN"):
        golden.write_text(rendered, encoding="utf-8")
    assert golden.exists(), f"no golden file for {example.name}; run with LLMDEPLOY_UPDATE_GOLDEN=1"
    assert rendered == golden.read_text(encoding="utf-8")


def test_examples_cover_the_promised_cases() -> None:
    names = {p.stem for p in EXAMPLES}
    assert {
        "llama-3.1-8b-l4",
        "llama-3.1-70b-h100",
        "qwen3-30b-a3b-moe",
        "llama-3.1-405b-multinode",
        "tensorrt-llm-llama-8b",
        "deepseek-r1-h200-ep",
    } <= names
