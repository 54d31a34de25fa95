"""Every subcommand exits with the documented codes (docs/cli.md): 2 for a configuration problem,
4 when the store cannot be opened or reached, whichever command the operator ran."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from wsmon.cli.main import cli
from wsmon.cli.exits import EXIT_STORE, EXIT_USAGE

UNREACHABLE_DYNAMODB = "dynamodb://wsmon-gone?region=us-west-2&endpoint_url=http://127.0.0.1:9"


pytestmark = pytest.mark.usefixtures("no_user_config")


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.mark.parametrize("command", [
    ["store", "info"], ["store", "init"], ["notify", "status"], ["list"], ["show", "ws-1"],
    ["release", "ws-1", "--yes"], [],
], ids=lambda c: " ".join(c) or "dashboard")
def test_an_unreachable_store_exits_4_with_a_message(command: list[str]) -> None:
    # [] is the dashboard, which first asks the store whether an engine already serves it
    # (--attach skips that and opens with a "store unreachable" banner, retrying)
    result = run("--store", UNREACHABLE_DYNAMODB, *command)
    assert result.exit_code == EXIT_STORE, result.output
    assert "cannot reach DynamoDB" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("command", [["store", "info"], ["notify", "status"], ["list"]],
                         ids=lambda c: " ".join(c))
def test_a_missing_sqlite_store_exits_4_and_creates_nothing(tmp_path: Path,
                                                           command: list[str]) -> None:
    missing = tmp_path / "typo" / "state.db"
    result = run("--store", f"sqlite:///{missing}", *command)
    assert result.exit_code == EXIT_STORE, result.output
    assert not missing.exists()


@pytest.mark.parametrize("command", [
    ["store", "info"], ["store", "init"], ["notify", "status"], ["notify", "test"], ["list"],
    ["scan"], ["iam-policy"], ["--headless", "--once"],
], ids=lambda c: " ".join(c))
def test_a_broken_config_file_exits_2(tmp_path: Path, command: list[str]) -> None:
    config = tmp_path / "broken.toml"
    config.write_text("[store]\nlease_seconds = -1\n", encoding="utf-8")
    result = run("--config", str(config), *command)
    assert result.exit_code == EXIT_USAGE, result.output
    assert "lease_seconds" in result.output


def test_scan_without_sources_and_notify_test_without_channels_exit_2(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'state.db'}"
    scan = run("--store", store, "scan")
    assert scan.exit_code == EXIT_USAGE and "discovery.sources" in scan.output
    notify = run("--store", store, "notify", "test")
    assert notify.exit_code == EXIT_USAGE
    assert "no notification channel is configured" in notify.output


@pytest.mark.parametrize("mode", [["--headless", "--once"], ["--headless"], []],
                         ids=lambda m: " ".join(m) or "dashboard")
def test_a_missing_aws_profile_is_one_line_and_exit_2_in_every_mode(tmp_path: Path,
                                                                   mode: list[str]) -> None:
    config = tmp_path / "wsmon.toml"
    config.write_text(f'[aws]\nprofile = "no-such-profile"\nregion = "us-west-2"\n'
                      f'[store]\nurl = "sqlite:///{tmp_path / "state.db"}"\n'
                      '[[discovery.sources]]\nbucket = "omics"\nprefix = "in/"\n', encoding="utf-8")
    result = run("--config", str(config), *mode)
    assert result.exit_code == EXIT_USAGE, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "'no-such-profile'" in lines[0] and "aws.profile" in lines[0]
    assert "Traceback" not in result.output
