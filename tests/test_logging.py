"""Logging: JSON lines for the service, a file under the dashboard, and no secret in any of it."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from wsmon.config import Settings, load_settings
from wsmon.core.redaction import redact, redact_value
from wsmon.logging import configure_logging, reset_logging

AWS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
AWS_SESSION_KEY_ID = "ASIAY34FZKBOKMUTVV7A"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
LINEAR_KEY = "lin_api_" + "Zq9" * 13
SLACK_URL = "https://hooks.slack.com/services/T024BE7LD/B08ABCDEF/" + "x1Y2z3" * 4
ALL_SECRETS = (AWS_KEY_ID, AWS_SESSION_KEY_ID, AWS_SECRET, LINEAR_KEY, SLACK_URL, "T024BE7LD/B08ABCDEF")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    yield
    reset_logging()


@pytest.fixture
def json_log(tmp_path: Path) -> tuple[io.StringIO, structlog.stdlib.BoundLogger]:
    stream = io.StringIO()
    configure_logging(Settings(state_dir=tmp_path), "headless", stream=stream)
    return stream, structlog.get_logger("wsmon.test")


def events(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def assert_clean(text: str) -> None:
    for secret in ALL_SECRETS:
        assert secret not in text


def test_headless_writes_one_json_object_per_line(json_log) -> None:
    stream, log = json_log
    log.info("workset_claimed", workset_id="ws 1", fence=3)
    [event] = events(stream)
    assert event["event"] == "workset_claimed" and event["workset_id"] == "ws 1" and event["fence"] == 3
    assert event["level"] == "info" and event["logger"] == "wsmon.test" and event["timestamp"].endswith("Z")


@pytest.mark.parametrize("text", [
    f"key id {AWS_KEY_ID} used",
    f"session key {AWS_SESSION_KEY_ID}",
    f"aws_secret_access_key = {AWS_SECRET}",
    f'{{"SecretAccessKey": "{AWS_SECRET}"}}',
    f"posting with {LINEAR_KEY} now",
    f"webhook {SLACK_URL} returned 404",
])
def test_every_secret_shape_is_masked_inside_longer_text(json_log, text: str) -> None:
    stream, log = json_log
    log.warning("delivery_failed", detail=text)
    output = stream.getvalue()
    assert_clean(output)
    assert "****" in events(stream)[0]["detail"]


def test_values_under_secret_looking_keys_are_masked(json_log) -> None:
    stream, log = json_log
    log.info("request", token="t0k3n-value", password="hunter2", api_key="abc", webhook_url="x",
             authorization="Basic Zm9vOmJhcg==", aws_credentials={"id": "x"}, key="worksets/ws1/daylily.ready")
    [event] = events(stream)
    for name in ("token", "password", "api_key", "webhook_url", "authorization", "aws_credentials"):
        assert event[name] == "****", name
    assert event["key"] == "worksets/ws1/daylily.ready"  # an S3 key is what operators look for


def test_secrets_nested_in_dicts_and_lists_are_masked(json_log) -> None:
    stream, log = json_log
    log.info("sent", payload={"headers": {"Authorization": f"Bearer {LINEAR_KEY}"},
                              "targets": [SLACK_URL, {"deep": [f"id={AWS_KEY_ID}"]}]},
             pair=("ok", AWS_SECRET))
    assert_clean(stream.getvalue())
    [event] = events(stream)
    assert event["payload"]["targets"][1]["deep"] == ["id=AKIA****"]
    assert event["pair"] == ["ok", "****"]


def test_exception_text_and_traceback_are_masked(json_log) -> None:
    stream, log = json_log
    try:
        raise RuntimeError(f"Slack said no to {SLACK_URL} using {LINEAR_KEY} and secret={AWS_SECRET}")
    except RuntimeError:
        log.exception("notify_failed")
    [event] = events(stream)
    assert "RuntimeError" in event["exception"] and "Traceback" in event["exception"]
    assert_clean(stream.getvalue())


def test_stdlib_warnings_from_libraries_come_through_masked_and_their_chatter_does_not(json_log) -> None:
    stream, _ = json_log
    logging.getLogger("botocore.credentials").warning("found credentials %s", AWS_KEY_ID)
    logging.getLogger("botocore.endpoint").info("sending request")
    logging.getLogger("apscheduler.scheduler").debug("looking for jobs")
    [event] = events(stream)
    assert event["logger"] == "botocore.credentials" and event["level"] == "warning"
    assert event["event"] == "found credentials AKIA****"


def test_dashboard_mode_writes_only_to_a_file_under_the_state_dir(tmp_path: Path, capsys) -> None:
    path = configure_logging(Settings(state_dir=tmp_path), "tui")
    structlog.get_logger("wsmon.engine").info("tick", token="abc")
    logging.getLogger("botocore").warning("retrying")
    assert path == tmp_path / "wsmon.log"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [e["event"] for e in lines] == ["tick", "retrying"] and lines[0]["token"] == "****"
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_console_format_is_readable_and_strips_terminal_escapes(tmp_path: Path) -> None:
    stream = io.StringIO()
    configure_logging(Settings(state_dir=tmp_path, logging={"format": "console"}), "cli", stream=stream)
    structlog.get_logger("wsmon.cli").warning("odd_folder", workset_id="evil\x1b]52;c;aGk=\x07name", secret="s")
    line = stream.getvalue()
    assert "odd_folder" in line and "workset_id=evilname" in line and "secret=****" in line
    assert "\x1b]52" not in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_level_setting_filters_events(tmp_path: Path) -> None:
    stream = io.StringIO()
    configure_logging(Settings(state_dir=tmp_path, logging={"level": "warning"}), "headless", stream=stream)
    log = structlog.get_logger("wsmon.test")
    log.info("quiet")
    log.warning("loud")
    assert [e["event"] for e in events(stream)] == ["loud"]


def test_configuration_warnings_are_logged_once_logging_starts(tmp_path: Path) -> None:
    daylily = tmp_path / "monitor.yaml"
    daylily.write_text("cluster:\n  auto_teardown: true\n")
    settings = load_settings(None, {"daylily_yaml": str(daylily)}, env={"XDG_CONFIG_HOME": str(tmp_path)})
    stream = io.StringIO()
    configure_logging(settings, "headless", stream=stream)
    [event] = events(stream)
    assert event["event"] == "config_warning" and "cluster.auto_teardown" in event["detail"]


def test_reconfiguring_replaces_the_previous_handlers(tmp_path: Path) -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging(Settings(state_dir=tmp_path), "headless", stream=first)
    configure_logging(Settings(state_dir=tmp_path), "headless", stream=second)
    structlog.get_logger("wsmon.test").info("once")
    assert first.getvalue() == "" and len(events(second)) == 1


def test_redact_leaves_ordinary_text_alone() -> None:
    text = ("workset HG002 [urgent] s3://bucket/prefix/ws-1/ commit 3f786850e387550fdab836ed7e6dc881de23001b "
            "path daylily_monitoring/active_worksets/run_2024-05-01/sample.fastq.gz")
    assert redact(text) == text
    assert redact_value({"n": 3, "ok": True, "none": None, "items": ["a"]}) == {"n": 3, "ok": True, "none": None,
                                                                             "items": ["a"]}


def test_redact_masks_a_bare_secret_access_key_and_url_passwords() -> None:
    assert redact(AWS_SECRET) == "****"
    assert redact("https://user:pa55word@example.org/x") == "https://user:****@example.org/x"
    assert redact(f"Authorization: Bearer {'abc123' * 4}") == "Authorization: Bearer ****"
