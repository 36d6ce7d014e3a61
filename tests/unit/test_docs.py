"""Docs that follow the code: the generated settings table (`make docs` rewrites it) and the
catalog-extension example."""

from __future__ import annotations

from pathlib import Path

from llmdeploy.catalog import Catalog, load_catalog
from llmdeploy.controller.settings import OperatorSettings, settings_markdown

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_the_settings_table_is_up_to_date() -> None:
    assert (DOCS / "settings.md").read_text() == settings_markdown(), "run `make docs`"


def test_the_settings_table_lists_every_setting_with_a_description() -> None:
    table = settings_markdown()
    for name, field in OperatorSettings.model_fields.items():
        assert f"`LLMDEPLOY_{name.upper()}`" in table
        assert field.description, f"{name} has no description"


def test_the_catalog_extension_example_adds_a_gpu_and_a_model(catalog: Catalog) -> None:
    # The `catalog` fixture is the packaged catalog extended by examples/catalog/extension.yaml.
    assert "nvidia-rtx-3090" in catalog.gpus
    model = catalog.find_model("support-agent-8b")
    assert model is not None and model.id == "example-org/llama-3.1-8b-support-agent"
    packaged = load_catalog().find_model("meta-llama/Llama-3.1-8B-Instruct")
    assert packaged is not None
    facts = {"id", "aliases", "family", "source", "notes"}
    assert model.model_dump(exclude=facts) == packaged.model_dump(exclude=facts)
