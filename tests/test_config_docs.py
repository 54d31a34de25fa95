"""docs/configuration.md is generated from the settings models and must not drift from them."""

from __future__ import annotations

from pathlib import Path

from wsmon.config.schema import iter_settings
from wsmon.config.docs import REGENERATE, render_configuration_markdown

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def test_configuration_reference_matches_the_settings_models() -> None:
    expected = render_configuration_markdown()
    actual = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
    assert actual == expected, (
        f"docs/configuration.md is out of date with wsmon/config/settings.py. Regenerate it with:\n    {REGENERATE}")


def test_every_setting_has_a_one_line_description() -> None:
    missing = [info.dotted for info in iter_settings() if not info.description.strip()]
    assert not missing, f"settings without description=: {', '.join(missing)}"


def test_reference_lists_every_setting_with_its_environment_variable() -> None:
    text = render_configuration_markdown()
    for info in iter_settings():
        assert f"`{info.dotted}`" in text and f"`{info.env_var}`" in text, info.dotted
