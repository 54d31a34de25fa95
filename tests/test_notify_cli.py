"""``wsmon notify test``: one line per channel, non-zero exit when any failed, secrets never shown."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from fake_receivers import LINEAR_KEY, SLACK_PATH, running_fake_service

from wsmon.cli.main import cli


@pytest.fixture
def service(clock):
    with running_fake_service(clock) as running:
        yield running


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("WSMON_"):
            monkeypatch.delenv(name)


def write_config(tmp_path: Path, base: str, *, slack: bool = True, linear: bool = True) -> Path:
    lines = ["[notify]", "request_timeout_seconds = 0.5"]
    if linear:
        key = tmp_path / "linear.key"
        key.write_text(LINEAR_KEY + "\n")
        key.chmod(0o600)
        lines += ['linear_team_id = "team-1"', f'linear_api_url = "{base}/graphql"',
                  f'linear_api_key_file = "{key}"']
    if slack:
        hook = tmp_path / "slack.url"
        hook.write_text(f"{base}{SLACK_PATH}\n")
        hook.chmod(0o600)
        lines.append(f'slack_webhook_url_file = "{hook}"')
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def invoke(config: Path, *args: str):
    return CliRunner().invoke(cli, ["--config", str(config), "notify", "test", *args])


def test_all_channels_ok(tmp_path, service):
    svc, base = service
    result = invoke(write_config(tmp_path, base))
    assert result.exit_code == 0, result.output
    lines = dict(line.split(None, 1) for line in result.output.strip().splitlines())
    assert lines["linear"].startswith("ok") and "OPS" in lines["linear"]
    assert lines["slack"].startswith("ok")
    assert len(svc.slack) == 1 and "test notification" in svc.slack[0]["text"]
    assert svc.issues == {}  # the Linear check never opens an issue
    assert LINEAR_KEY not in result.output and SLACK_PATH not in result.output


def test_a_failing_channel_makes_the_exit_non_zero(tmp_path, service):
    svc, base = service
    svc.faults[SLACK_PATH] = ["500"]
    result = invoke(write_config(tmp_path, base), "--json")
    assert result.exit_code == 1
    results = {r["channel"]: r for r in json.loads(result.output)}
    assert results["linear"]["ok"] is True
    assert results["slack"]["ok"] is False and "HTTP 500" in results["slack"]["detail"]
    assert SLACK_PATH not in result.output


def test_only_the_named_channel(tmp_path, service):
    svc, base = service
    result = invoke(write_config(tmp_path, base), "--channel", "slack")
    assert result.exit_code == 0, result.output
    assert [line.split()[0] for line in result.output.strip().splitlines()] == ["slack"]
    assert all(path == SLACK_PATH for path, _ in svc.attempts)


def test_unknown_channel_and_nothing_configured(tmp_path, service):
    _, base = service
    result = invoke(write_config(tmp_path, base, linear=False), "--channel", "linear")
    assert result.exit_code != 0 and "not configured" in result.output and "slack" in result.output
    result = invoke(write_config(tmp_path, base, linear=False, slack=False))
    assert result.exit_code != 0 and "no notification channel is configured" in result.output
    assert "Traceback" not in result.output


def test_wrong_linear_key_is_reported(tmp_path, service):
    _, base = service
    config = write_config(tmp_path, base, slack=False)
    (tmp_path / "linear.key").write_text("lin_api_wrongwrongwrongwrong\n")
    result = invoke(config)
    assert result.exit_code == 1
    assert "credentials refused" in result.output and "wrongwrong" not in result.output


def test_status_shows_outbox_and_channel_health(tmp_path, clock):
    from wsmon.engine.store import open_store
    from wsmon.core.models import OutboxEntry

    db = tmp_path / "s.db"
    store = open_store(f"sqlite:///{db}", clock=clock)
    for i, status in enumerate(["pending", "pending", "dead"]):
        entry = OutboxEntry(entry_id=f"e{i}", channel="slack", dedup_id=f"d{i}", coalesce_key=f"k{i}",
                            event_type="failed", payload={}, created_at=clock.now(), next_attempt_at=clock.now())
        store.enqueue_notification(entry)
        if status == "dead":
            store.mark_notification_failed(f"e{i}", "slack: rejected (HTTP 400)", None)
    store.kv_put("notify_health", "slack", {"ok": False, "consecutive_failures": 3,
                                            "last_failure_at": "2026-01-01T12:00:00Z",
                                            "last_error": "slack: server error (HTTP 500)"})
    store.close()
    config = tmp_path / "config.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{db}"\n')
    result = CliRunner().invoke(cli, ["--config", str(config), "notify", "status"])
    assert result.exit_code == 0, result.output
    assert "slack: outbox pending 2, dead 1; FAILING x3" in result.output and "HTTP 500" in result.output
    result = CliRunner().invoke(cli, ["--config", str(config), "notify", "status", "--json"])
    assert json.loads(result.output)["slack"]["outbox"] == {"pending": 2, "dead": 1}
