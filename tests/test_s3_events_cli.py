"""`wsmon s3-events setup|status` on moto, and `wsmon iam-policy` with events configured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from wsmon.cli.main import cli
from wsmon.config import load_settings
from wsmon.core import aws
from wsmon.engine.service import Engine


@pytest.fixture
def aws_world(moto_endpoint: str, unique_name: str, tmp_path: Path, no_user_config: None):
    s3 = aws.client("s3", endpoint_url=moto_endpoint, region="us-west-2")
    sqs = aws.client("sqs", endpoint_url=moto_endpoint, region="us-west-2")
    s3.create_bucket(Bucket=unique_name, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    config = tmp_path / "wsmon.toml"
    config.write_text(f'[aws]\nendpoint_url = "{moto_endpoint}"\nregion = "us-west-2"\n'
                      f'[store]\nurl = "sqlite:///{tmp_path}/s.db"\n')
    return s3, sqs, unique_name, config


def run(config: Path, *args: str):
    return CliRunner().invoke(cli, ["--config", str(config), *args])


def existing_rules(s3, sqs, bucket: str) -> dict:
    """A topic rule and another queue's rule under other prefixes."""
    other = sqs.create_queue(QueueName=f"{bucket}-other")["QueueUrl"]
    other_arn = sqs.get_queue_attributes(QueueUrl=other, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    config = {
        "TopicConfigurations": [{
            "Id": "audit", "TopicArn": "arn:aws:sns:us-west-2:123456789012:audit",
            "Events": ["s3:ObjectCreated:*"],
            "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "audit/"}]}}}],
        "QueueConfigurations": [{
            "Id": "thumbnails", "QueueArn": other_arn, "Events": ["s3:ObjectCreated:Put"],
            "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "images/"}]}}}],
    }
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=config)
    return config


def current(s3, bucket: str) -> dict:
    return {k: v for k, v in s3.get_bucket_notification_configuration(Bucket=bucket).items()
            if k != "ResponseMetadata"}


def test_setup_keeps_the_bucket_s_two_other_rules(aws_world) -> None:
    s3, sqs, bucket, config = aws_world
    before = existing_rules(s3, sqs, bucket)
    result = run(config, "s3-events", "setup", "--bucket", bucket, "--prefix", "active",
                 "--queue-name", f"{bucket}-ev")
    assert result.exit_code == 0, result.output
    after = current(s3, bucket)
    assert after["TopicConfigurations"] == before["TopicConfigurations"]
    assert before["QueueConfigurations"][0] in after["QueueConfigurations"]
    ours = [r for r in after["QueueConfigurations"] if r["Id"] == f"wsmon-{bucket}-ev"]
    assert len(ours) == 1 and ours[0]["Filter"]["Key"]["FilterRules"] == [
        {"Name": "prefix", "Value": "active/"}]
    queue_url = sqs.get_queue_url(QueueName=f"{bucket}-ev")["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    assert json.loads(attrs["RedrivePolicy"])["deadLetterTargetArn"].endswith(f":{bucket}-ev-dlq")
    statement = json.loads(attrs["Policy"])["Statement"][0]
    assert statement["Condition"]["ArnEquals"] == {"aws:SourceArn": f"arn:aws:s3:::{bucket}"}
    assert statement["Condition"]["StringEquals"]["aws:SourceAccount"]
    assert f'events_queue = "{queue_url}"' in result.output
    assert "sqs:ReceiveMessage" in result.output
    # S3 now delivers: its set-up test event, then a real upload under the prefix
    s3.put_object(Bucket=bucket, Key="active/w1/daylily.ready", Body=b"")
    bodies = [json.loads(m["Body"]) for m in sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])]
    assert any(b.get("Event") == "s3:TestEvent" for b in bodies)
    assert any("Records" in b for b in bodies)
    again = run(config, "s3-events", "setup", "--bucket", bucket, "--prefix", "active",
                "--queue-name", f"{bucket}-ev")
    assert again.exit_code == 0, again.output
    assert current(s3, bucket) == after  # a second run changes nothing


def test_dry_run_changes_nothing(aws_world) -> None:
    s3, sqs, bucket, config = aws_world
    before = existing_rules(s3, sqs, bucket)
    result = run(config, "s3-events", "setup", "--bucket", bucket, "--prefix", "active",
                 "--queue-name", f"{bucket}-dry", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "dry run" in result.output
    assert current(s3, bucket) == before
    assert f"{bucket}-dry" not in " ".join(sqs.list_queues(QueueNamePrefix=bucket).get("QueueUrls", []))


def test_an_overlapping_rule_is_reported_not_replaced(aws_world) -> None:
    s3, sqs, bucket, config = aws_world
    before = existing_rules(s3, sqs, bucket)
    before["TopicConfigurations"][0]["Filter"]["Key"]["FilterRules"][0]["Value"] = "active/"
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=before)
    result = run(config, "s3-events", "setup", "--bucket", bucket, "--prefix", "active/ws",
                 "--queue-name", f"{bucket}-c")
    assert result.exit_code == 1
    assert "conflict" in result.output and "audit" in result.output
    assert current(s3, bucket) == before


def test_status_shows_depths_mode_and_last_event(aws_world, tmp_path: Path) -> None:
    s3, sqs, bucket, config = aws_world
    assert run(config, "s3-events", "setup", "--bucket", bucket, "--prefix", "active",
               "--queue-name", f"{bucket}-st").exit_code == 0
    url = sqs.get_queue_url(QueueName=f"{bucket}-st")["QueueUrl"]
    config.write_text(config.read_text() + f'[discovery]\nsources = [{{ bucket = "{bucket}", '
                                           f'prefix = "active", events_queue = "{url}" }}]\n')
    assert run(config, "store", "init").exit_code == 0
    result = run(config, "s3-events", "status", "--json")
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.output)
    assert row["depth"] == 1 and row["dlq_depth"] == 0  # S3's test event waits
    assert row["mode"] == "not consumed yet" and row["last_event_at"] is None

    s3.put_object(Bucket=bucket, Key="active/w1/daylily_work.yaml", Body=b"x: 1\n")
    settings = load_settings(config, {"clusters": {"static": [], "slurm_usage": False},
                                      "metrics": {"sink": "none"}, "runner": {"kind": "simulated"},
                                      "state_dir": str(tmp_path / "state")})
    engine = Engine(settings.model_copy(update={"discovery": settings.discovery.model_copy(
        update={"events_wait_seconds": 0})}), monitor_id="engine-st")
    try:
        engine.run_cycle()
        events = engine._event_discovery()
        while events.consume_once(events.consumers[0]).received:
            pass
    finally:
        engine.stop(0)
    [row] = json.loads(run(config, "s3-events", "status", "--json").output)
    assert row["depth"] == 0 and row["mode"] == "events" and row["last_event_at"]
    text = run(config, "s3-events", "status").output
    assert "mode events" in text and f"last event {row['last_event_at']}" in text


def test_iam_policy_includes_the_queue_statements_when_events_are_configured(tmp_path) -> None:
    config = tmp_path / "wsmon.toml"
    config.write_text('[discovery]\nsources = [{ bucket = "b", prefix = "active", events_queue = '
                      '"https://sqs.us-west-2.amazonaws.com/123456789012/wsmon-b-events" }]\n')
    policy = json.loads(run(config, "iam-policy").output)
    consume = next(s for s in policy["Statement"] if s["Sid"] == "ConsumeS3Events")
    assert consume["Resource"] == ["arn:aws:sqs:us-west-2:123456789012:wsmon-b-events"]
    assert set(consume["Action"]) == {"sqs:ReceiveMessage", "sqs:DeleteMessage",
                                      "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes"}
    config.write_text('[discovery]\nsources = [{ bucket = "b", prefix = "active" }]\n')
    policy = json.loads(run(config, "iam-policy").output)
    assert not any(s["Sid"].startswith("ConsumeS3Events") for s in policy["Statement"])


class _BucketWithEventBridge:
    """moto's GetBucketNotificationConfiguration leaves EventBridgeConfiguration out, so the
    merge is checked on what S3 itself returns."""

    def get_bucket_notification_configuration(self, Bucket: str) -> dict:
        return {"EventBridgeConfiguration": {}, "LambdaFunctionConfigurations": [{
            "Id": "index", "LambdaFunctionArn": "arn:aws:lambda:us-west-2:1:function:index",
            "Events": ["s3:ObjectRemoved:*"]}]}


def test_eventbridge_setting_and_a_lambda_rule_are_written_back() -> None:
    from wsmon.engine.s3.event_setup import plan_setup

    plan = plan_setup(_BucketWithEventBridge(), "b", "active", "q", region="us-west-2",
                      account="123456789012")
    assert plan.merged["EventBridgeConfiguration"] == {}
    # a Lambda rule on every removal overlaps any prefix: reported, not replaced
    assert plan.merged["LambdaFunctionConfigurations"] == \
        _BucketWithEventBridge().get_bucket_notification_configuration("b")["LambdaFunctionConfigurations"]
    assert len(plan.conflicts) == 1 and "index" in plan.conflicts[0]
