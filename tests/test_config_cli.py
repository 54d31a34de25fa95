"""``wsmon config show`` / ``wsmon config check`` as an operator runs them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from wsmon.cli.main import cli

LINEAR_KEY = "lin_api_" + "Kp4" * 13
SLACK_URL = "https://hooks.slack.com/services/T0AAA/B0BBB/" + "w3bh00k" * 3


pytestmark = pytest.mark.usefixtures("no_user_config")


def run(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_show_prints_each_value_with_its_source_and_masks_secrets(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", '[store]\nlease_seconds = 120\n[[discovery.sources]]\nbucket = "omics"\n')
    result = run("--config", str(config), "--theme", "wsmon-light", "config", "show",
                 env={"WSMON_LINEAR_API_KEY": LINEAR_KEY, "WSMON_UI__REFRESH_INTERVAL": "5"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()

    def line(section: str, key: str) -> str:
        start = lines.index(f"[{section}]")
        return next(l for l in lines[start + 1:] if l.startswith(f"{key} = "))

    assert line("store", "lease_seconds").endswith(f"# file {config}")
    assert line("store", "heartbeat_seconds").endswith("# default")
    assert line("ui", "refresh_interval").startswith("refresh_interval = 5.0") and \
        line("ui", "refresh_interval").endswith("# env WSMON_UI__REFRESH_INTERVAL")
    assert line("ui", "theme").endswith("# flag")
    assert line("notify", "linear_api_key").startswith('linear_api_key = "****"')
    assert line("notify", "slack_webhook_url").startswith("slack_webhook_url = unset")
    assert f"# config file: {config}" in result.output
    assert LINEAR_KEY not in result.output


def test_show_json_has_settings_sources_and_masked_secrets(tmp_path: Path) -> None:
    key_file = write(tmp_path / "slack", SLACK_URL + "\n")
    config = write(tmp_path / "c.toml", f'[notify]\nslack_webhook_url_file = "{key_file}"\n')
    result = run("--config", str(config), "config", "show", "--json", env={"WSMON_LINEAR_API_KEY": LINEAR_KEY})
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["settings"]["notify"]["linear_api_key"] == "****"
    assert data["settings"]["notify"]["slack_webhook_url"] is None
    assert data["settings"]["notify"]["slack_webhook_url_file"] == str(key_file)
    assert data["sources"]["notify.linear_api_key"] == "env WSMON_LINEAR_API_KEY"
    assert data["sources"]["notify.slack_webhook_url_file"] == f"file {config}"
    assert data["sources"]["store.lease_seconds"] == "default"
    assert data["config_file"] == str(config)
    assert LINEAR_KEY not in result.output and SLACK_URL not in result.output


def test_show_on_a_broken_config_lists_problems_without_a_traceback(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", '[ui]\ntheme = 3\nrefresh = 1\n')
    result = run("--config", str(config), "config", "show")
    assert result.exit_code != 0
    assert "ui.theme" in result.output and "ui.refresh" in result.output and "Traceback" not in result.output


def test_check_passes_on_a_good_config(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", '[[discovery.sources]]\nbucket = "omics"\nprefix = "in/"\n')
    result = run("--config", str(config), "config", "check")
    assert result.exit_code == 0, result.output
    assert "configuration OK" in result.output and "warning" not in result.output


def test_check_prints_daylily_warnings_but_still_passes(tmp_path: Path, daylily_fixtures: str) -> None:
    daylily = shutil.copy(Path(daylily_fixtures) / "test_snv" / "daylily_info.yaml", tmp_path / "daylily.yaml")
    result = run("config", "check", env={"WSMON_DAYLILY_YAML": str(daylily)})
    assert result.exit_code == 0, result.output
    warnings = [l for l in result.output.splitlines() if l.startswith("warning:")]
    assert len(warnings) == 3 and all("is not used by wsmon" in w for w in warnings)
    assert result.output.rstrip().splitlines()[-1].startswith("configuration OK")


def test_check_lists_every_problem_and_exits_1(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", '[scheduler]\naz_preference = "maybe"\n[store]\nlease_seconds = 0\n')
    result = run("--config", str(config), "config", "check", env={"WSMON_STORE_URL": "sqlite:///x"})
    assert result.exit_code == 1
    assert "configuration has 3 problems:" in result.output
    assert f'{config} line 2: scheduler.az_preference = "maybe" is not allowed; allowed values: "soft", "hard".' \
        in result.output
    assert "store.lease_seconds = 0 is too small" in result.output
    assert "did you mean WSMON_STORE__URL?" in result.output


def test_check_finds_a_secret_file_that_cannot_be_read(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-key"
    config = write(tmp_path / "c.toml", f'[notify]\nlinear_api_key_file = "{missing}"\n'
                                        '[[discovery.sources]]\nbucket = "b"\n')
    result = run("--config", str(config), "config", "check")
    assert result.exit_code == 1
    assert f"notify.linear_api_key_file (file {config}): {missing} does not exist." in result.output


def test_check_rejects_an_unknown_store_scheme(tmp_path: Path) -> None:
    result = run("--store", "postgres://db/wsmon", "config", "check")
    assert result.exit_code == 1
    assert "store.url (flag): unknown scheme postgres://" in result.output and "sqlite:///PATH" in result.output


def test_check_rejects_an_inline_secret(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", f'[notify]\nslack_webhook_url = "{SLACK_URL}"\n')
    result = run("--config", str(config), "config", "check")
    assert result.exit_code == 1
    assert "notify.slack_webhook_url is written inline" in result.output
    assert SLACK_URL not in result.output


def test_check_reports_a_state_dir_it_cannot_write(tmp_path: Path) -> None:
    blocker = write(tmp_path / "a-file", "")
    result = run("config", "check", env={"WSMON_STATE_DIR": str(blocker / "wsmon")})
    assert result.exit_code == 1
    assert f"state_dir (env WSMON_STATE_DIR): {blocker / 'wsmon'} cannot be created: {blocker} is a file" in result.output


def test_check_says_how_each_command_runs_and_warns_about_an_empty_placeholder(
        tmp_path: Path, daylily_fixtures: str) -> None:
    text = (Path(daylily_fixtures) / "test_snv" / "daylily_info.yaml").read_text()
    text = text.replace("  profile: daylily-service-lsmc\n", "")  # no AWS profile on this host
    text = text.replace("clone_command: day-clone {clone_args}",
                        "clone_command: echo cloning && day-clone {clone_args}")
    daylily = write(tmp_path / "daylily.yaml", text)
    result = run("config", "check", env={"WSMON_DAYLILY_YAML": str(daylily)})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "command stage: argv mode, runs as argv, each value exactly one argument, no shell" in lines
    assert "command clone: shell mode, runs through bash -lc, every value shell-quoted" in lines
    assert any(l.startswith("command run: shell (bash in tmux)") for l in lines)
    (empty,) = [l for l in lines if "{profile}" in l]
    assert empty.startswith("warning: runner.stage_command: {profile} is empty (aws.profile")
    assert "left out" in empty
