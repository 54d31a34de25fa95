"""The guides stay true to the code: every link and image resolves, every command is documented,
every Daylily monitor key has a row in the migration guide."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from wsmon.cli import LAZY_COMMANDS
from wsmon.daylily_yaml import DAYLILY_KEYS

DOCS = Path(__file__).resolve().parents[1] / "docs"
GUIDES = ["quickstart.md", "operator-guide.md", "cli.md", "migration.md", "troubleshooting.md",
          "architecture.md"]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("name", GUIDES)
def test_guide_exists_and_its_links_resolve(name: str) -> None:
    path = DOCS / name
    text = path.read_text(encoding="utf-8")
    for target in LINK.findall(text):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        assert (path.parent / target).exists(), f"{name} links to missing {target}"


def test_cli_reference_covers_every_command() -> None:
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    for name in LAZY_COMMANDS:
        assert f"wsmon {name}" in text, f"docs/cli.md does not document `wsmon {name}`"


def test_cli_reference_lists_the_exit_codes_the_commands_use() -> None:
    from wsmon.commands import ops_cmd

    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    for code in (ops_cmd.EXIT_OK, ops_cmd.EXIT_REFUSED, ops_cmd.EXIT_USAGE, ops_cmd.EXIT_NOT_FOUND,
                 ops_cmd.EXIT_STORE):
        assert re.search(rf"^\| {code} \|", text, re.MULTILINE), f"exit code {code} undocumented"


def test_migration_guide_maps_every_daylily_key() -> None:
    text = (DOCS / "migration.md").read_text(encoding="utf-8")
    for key in DAYLILY_KEYS:
        assert f"`{key.key}`" in text, f"docs/migration.md has no row for {key.key}"
        if key.target is not None:
            assert f"`{key.target_dotted}`" in text, f"{key.key} should map to {key.target_dotted}"


SNAPSHOTS = DOCS.parent / "tests" / "__snapshots__" / "test_app_snapshots"
# docs image -> the snapshot test's SVG it is a copy of
SCREENSHOTS = {
    "queue.svg": "test_screen[queue-160x48].svg",
    "detail.svg": "test_detail_of_running_workset_with_log_tail.svg",
    "clusters.svg": "test_screen[clusters-160x48].svg",
    "alerts.svg": "test_screen[alerts-160x48].svg",
    "release-dialog.svg": "test_screen[release-80x24].svg",
    "store-banner.svg": "test_store_failure_banner.svg",
}


@pytest.mark.parametrize("image", sorted(SCREENSHOTS))
def test_screenshots_are_the_current_snapshots(image: str) -> None:
    """The guide shows what the dashboard renders today: each image is its snapshot test's SVG."""
    snapshot = SNAPSHOTS / SCREENSHOTS[image]
    if not snapshot.exists():
        pytest.skip(f"snapshot {snapshot.name} not generated in this checkout")
    assert (DOCS / "images" / image).read_bytes() == snapshot.read_bytes(), (
        f"docs/images/{image} is out of date: cp '{snapshot.relative_to(DOCS.parent)}' docs/images/{image}")
