"""`wsmon iam-policy`: least privilege for exactly what the configuration touches."""

from __future__ import annotations

import json

from click.testing import CliRunner

from wsmon.cli.main import cli


def policy_for(tmp_path, toml: str, *args: str) -> dict:
    config = tmp_path / "wsmon.toml"
    config.write_text(toml)
    result = CliRunner().invoke(cli, ["--config", str(config), "iam-policy", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def statement(policy: dict, sid: str) -> dict:
    return next(s for s in policy["Statement"] if s["Sid"] == sid)


CONFIG = """
[store]
url = "dynamodb://wsmon?region=us-west-2"
[discovery]
sources = [{ bucket = "ws-bucket", prefix = "daylily_monitoring/active_worksets" }]
allowed_buckets = ["reads-bucket"]
[notify]
sns_topic_arn = "arn:aws:sns:us-west-2:123456789012:alerts"
[metrics]
namespace = "Daylily/WorksetMonitor"
"""


def test_s3_access_is_limited_to_the_source_prefix(tmp_path) -> None:
    policy = policy_for(tmp_path, CONFIG)
    listing = statement(policy, "ListWorksetFolders0")
    assert listing["Resource"] == "arn:aws:s3:::ws-bucket"
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["daylily_monitoring/active_worksets/*"]}}
    objects = statement(policy, "ReadWriteWorksetFiles0")
    assert objects["Resource"] == ["arn:aws:s3:::ws-bucket/daylily_monitoring/active_worksets/*"]
    assert set(objects["Action"]) == {"s3:GetObject", "s3:PutObject", "s3:DeleteObject"}
    assert statement(policy, "CheckFastqObjects")["Action"] == ["s3:GetObject"]


def test_store_topic_and_metrics_are_named_exactly(tmp_path) -> None:
    policy = policy_for(tmp_path, CONFIG, "--account", "123456789012")
    store = statement(policy, "StateStore")
    assert "arn:aws:dynamodb:us-west-2:123456789012:table/wsmon-events" in store["Resource"]
    assert "arn:aws:dynamodb:us-west-2:123456789012:table/wsmon/index/*" in store["Resource"]
    assert "dynamodb:CreateTable" not in store["Action"] and "dynamodb:Scan" not in store["Action"]
    assert statement(policy, "PublishNotifications")["Resource"] == "arn:aws:sns:us-west-2:123456789012:alerts"
    metrics = statement(policy, "PublishMetrics")
    assert metrics["Condition"] == {"StringEquals": {"cloudwatch:namespace": "Daylily/WorksetMonitor"}}
    assert all(s["Sid"] != "StateStoreInit" for s in policy["Statement"])
    with_init = policy_for(tmp_path, CONFIG, "--with-init")
    assert "dynamodb:CreateTable" in statement(with_init, "StateStoreInit")["Action"]


def test_nothing_configured_is_a_clear_error(tmp_path) -> None:
    config = tmp_path / "wsmon.toml"
    config.write_text('[metrics]\nsink = "none"\n')
    result = CliRunner().invoke(cli, ["--config", str(config), "iam-policy"])
    assert result.exit_code != 0
    assert "nothing to grant" in result.output
