"""Generated docs are in step with their source: `make docs` rewrites them."""

from __future__ import annotations

from pathlib import Path

from llmdeploy.controller.settings import OperatorSettings, settings_markdown

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_the_settings_table_is_up_to_date() -> None:
    assert (DOCS / "settings.md").read_text() == settings_markdown(), "run `make docs`"


def test_the_settings_table_lists_every_setting_with_a_description() -> None:
    table = settings_markdown()
    for name, field in OperatorSettings.model_fields.items():
        assert f"`LLMDEPLOY_{name.upper()}`" in table
        assert field.description, f"{name} has no description"
