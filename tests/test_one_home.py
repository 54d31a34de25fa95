"""The rules that used to be written more than once, now each in one place, and what callers get from it:
the store opened from settings, who acted, the redactor, the store URL forms, the logging set-up."""

from __future__ import annotations

import io
import json
import re
import socket
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from wsmon.cli.context import CliContext
from wsmon.cli.main import cli
from wsmon.config import Settings
from wsmon.core import identity
from wsmon.core.redaction import MASK, SECRET_MARK, redact, scrub
from wsmon.core.store_url import SUPPORTED_SCHEMES, store_url_problem
from wsmon.engine.store.from_settings import open_store_from_settings

# -- the store opened from settings --------------------------------------------------------------


def _settings(tmp_path: Path) -> Settings:
    return Settings(state_dir=tmp_path, store={"lease_seconds": 123.0, "max_clock_skew_seconds": 7.0})


def test_the_store_gets_the_configured_lease_and_clock_skew(tmp_path: Path) -> None:
    store = open_store_from_settings(_settings(tmp_path))
    try:
        assert store.default_lease_seconds == 123.0
        assert store.max_clock_skew.total_seconds() == 7.0
        assert (tmp_path / "state.db").exists()  # no store.url: SQLite in the state directory
    finally:
        store.close()


def test_a_command_opens_the_store_with_the_same_settings_as_the_engine(tmp_path: Path) -> None:
    """ops_cmd once opened its store without the lease and clock-skew settings; now every command
    goes through the CLI context, which goes through the one helper."""
    obj = CliContext(overrides={"state_dir": str(tmp_path),
                                "store": {"lease_seconds": 123.0, "max_clock_skew_seconds": 7.0}})
    store = obj.open_store()
    try:
        assert store.default_lease_seconds == 123.0
        assert store.max_clock_skew.total_seconds() == 7.0
    finally:
        store.close()


def test_commands_do_not_create_a_store_where_a_typo_points(tmp_path: Path) -> None:
    missing = tmp_path / "typo" / "state.db"
    result = CliRunner().invoke(cli, ["--store", f"sqlite:///{missing}", "list"])
    assert result.exit_code == 4, result.output
    assert not missing.exists()


# -- who acted -----------------------------------------------------------------------------------


def test_operator_and_monitor_ids_name_the_user_and_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(identity.getpass, "getuser", lambda: "alice")
    monkeypatch.setattr(socket, "gethostname", lambda: "head-node")
    assert identity.operator_actor() == "alice@head-node"
    assert identity.default_monitor_id() == "head-node-alice"
    assert Settings().effective_monitor_id == "head-node-alice"
    assert Settings(monitor_id="engine-a").effective_monitor_id == "engine-a"


def test_without_a_passwd_entry_the_uid_stands_in(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_user() -> str:
        raise KeyError("getpwuid(): uid not found")

    monkeypatch.setattr(identity.getpass, "getuser", no_user)
    monkeypatch.setattr(identity.os, "getuid", lambda: 4242)
    monkeypatch.setattr(socket, "gethostname", lambda: "box")
    assert identity.operator_actor() == "4242@box"


# -- one redactor for logs and notifications -----------------------------------------------------

SLACK_TOKEN = "xoxb-" + "1234567890-abcdefghij"
PRIVATE_KEY = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----"


@pytest.mark.parametrize("secret", [SLACK_TOKEN, PRIVATE_KEY, "AKIAIOSFODNN7EXAMPLE",
                                    "lin_api_" + "Zq9" * 13])
def test_logs_and_notifications_mask_the_same_secrets(secret: str, tmp_path: Path) -> None:
    """The patterns the notifier had on its own (Slack tokens, private keys) now mask log lines too."""
    from wsmon.logging import configure_logging, reset_logging

    stream = io.StringIO()
    configure_logging(Settings(state_dir=tmp_path), "headless", stream=stream)
    try:
        import structlog

        structlog.get_logger("wsmon.test").error("delivery_failed", detail=f"server said {secret} back")
    finally:
        reset_logging()
    [event] = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert secret not in event["detail"] and MASK in event["detail"]
    assert secret not in scrub(f"server said {secret} back")


def test_scrub_also_hides_configured_secrets_home_paths_and_key_files() -> None:
    text = "posting to https://example.org/hook/s3cr3t-path failed; key /home/alice/.ssh/id_rsa"
    out = scrub(text, secrets=["https://example.org/hook/s3cr3t-path"])
    assert "s3cr3t" not in out and SECRET_MARK in out
    assert "/home/alice" not in out and "id_rsa" not in out
    assert redact("queue depth 12, workset ws-1 ready") == "queue depth 12, workset ws-1 ready"


# -- store URL forms -----------------------------------------------------------------------------


def test_store_url_forms_are_checked_in_one_place() -> None:
    from wsmon.engine.store import StoreError, open_store

    assert set(SUPPORTED_SCHEMES) == {"sqlite", "dynamodb"}
    assert store_url_problem("sqlite:///tmp/x.db") is None
    assert store_url_problem("dynamodb://table-1?region=us-west-2") is None
    assert "unknown scheme postgres://" in store_url_problem("postgres://db/x")
    assert "no path" in store_url_problem("sqlite://")
    assert "no table name" in store_url_problem("dynamodb://?region=us-west-2")
    with pytest.raises(StoreError, match=re.escape("sqlite:///PATH or dynamodb://TABLE")):
        open_store("postgres://db/x")


def test_config_check_names_a_bad_store_url_and_where_it_was_set(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[store]\nurl = "postgres://db/x"\n', encoding="utf-8")
    result = CliRunner().invoke(cli, ["--config", str(config), "config", "check"])
    assert result.exit_code != 0
    assert "store.url" in result.output and "unknown scheme postgres://" in result.output
    assert str(config) in result.output


# -- one logging set-up --------------------------------------------------------------------------


def test_dashboard_logging_that_cannot_write_its_file_says_so_and_lets_the_dashboard_start(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from wsmon.logging import configure_logging, reset_logging

    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the state directory should be", encoding="utf-8")
    blocked.chmod(stat.S_IRUSR)
    try:
        assert configure_logging(Settings(state_dir=blocked / "state"), "tui") is None
        assert "wsmon: logging not configured" in capsys.readouterr().err
        with pytest.raises(OSError):  # the service must not run without the log it was told to write
            configure_logging(Settings(state_dir=blocked / "state", logging={"file": str(blocked / "x.log")}),
                              "headless", stream=io.StringIO())
    finally:
        reset_logging()
