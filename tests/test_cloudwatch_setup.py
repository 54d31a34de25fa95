"""wsmon cloudwatch install/uninstall on moto: the alarms and dashboard it makes, idempotence, and
that uninstall removes exactly its own."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from wsmon.cli.main import cli
from wsmon.core import aws

TOPIC = "arn:aws:sns:us-west-2:123456789012:wsmon-pager"


@pytest.fixture
def env(moto_endpoint, unique_name, tmp_path, no_user_config, monkeypatch):
    monkeypatch.setenv("WSMON_AWS__ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("WSMON_AWS__REGION", "us-west-2")
    monkeypatch.setenv("WSMON_MONITOR_ID", "head-1")
    cw = aws.client("cloudwatch", endpoint_url=moto_endpoint, region="us-west-2", max_attempts=2)
    store = f"sqlite:///{tmp_path / unique_name}.db"  # the group is the store's name
    return cw, store, unique_name


def run(store: str, *args: str):
    result = CliRunner().invoke(cli, ["--store", store, "cloudwatch", *args])
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def alarms(cw, prefix: str) -> dict:
    return {a["AlarmName"]: a for a in cw.describe_alarms(AlarmNamePrefix=prefix)["MetricAlarms"]}


def test_install_creates_the_alarms_and_dashboard_and_twice_changes_nothing(env) -> None:
    cw, store, group = env
    prefix = f"wsmon-{group}-"
    planned = run(store, "install", "--dry-run", "--sns-topic", TOPIC)
    assert planned and all(line.startswith("would create") for line in planned)
    assert alarms(cw, prefix) == {}  # a dry run changes nothing

    first = run(store, "install", "--sns-topic", TOPIC)
    assert sum(line.startswith("create") for line in first) == 7  # six alarms and the dashboard
    made = alarms(cw, prefix)
    assert sorted(made) == sorted(f"{prefix}{what}-head-1" for what in (
        "heartbeat-missing", "queue-depth", "error-rate", "lock-failures", "dead-letters",
        "outbox-backlog"))
    beat = made[f"{prefix}heartbeat-missing-head-1"]
    assert beat["MetricName"] == "EngineHeartbeat" and beat["Namespace"] == "Daylily/WorksetMonitor"
    assert beat["Dimensions"] == [{"Name": "MonitorId", "Value": "head-1"}]
    assert beat["TreatMissingData"] == "breaching"
    assert beat["ComparisonOperator"] == "LessThanThreshold" and beat["Threshold"] == 1.0
    assert beat["EvaluationPeriods"] == 3  # three 60 s heartbeats
    locks = made[f"{prefix}lock-failures-head-1"]
    assert (locks["MetricName"], locks["Threshold"], locks["Period"]) == ("WorksetLockFailures", 50.0, 300)
    dead = made[f"{prefix}dead-letters-head-1"]
    assert dead["MetricName"] == "WorksetDeadLettered" and dead["Threshold"] == 0.0
    assert made[f"{prefix}outbox-backlog-head-1"]["MetricName"] == "NotificationOutboxBacklog"
    depth = made[f"{prefix}queue-depth-head-1"]
    stats = [m["MetricStat"]["Metric"] for m in depth["Metrics"] if "MetricStat" in m]
    assert {d["Value"] for m in stats for d in m["Dimensions"] if d["Name"] == "Priority"} == {
        "urgent", "normal", "low"}
    assert all(m["MetricName"] == "WorksetQueueDepth" for m in stats) and depth["Threshold"] == 50.0
    for alarm in made.values():
        assert alarm["AlarmActions"] == [TOPIC] and alarm["OKActions"] == [TOPIC]

    body = json.loads(cw.get_dashboard(DashboardName=f"wsmon-{group}")["DashboardBody"])
    titles = [w["properties"].get("title", "") for w in body["widgets"]]
    for title in ("Queue depth", "Throughput", "Error rate", "Lock contention",
                  "Processing duration", "Cost per workset"):
        assert any(t.startswith(title) for t in titles), title
    text = json.dumps(body)
    for metric in ("WorksetQueueDepth", "WorksetStateTransitions", "WorksetLockFailures",
                   "WorksetProcessingDuration", "WorksetCost"):
        assert metric in text

    again = run(store, "install", "--sns-topic", TOPIC)
    assert again and all(line.startswith("unchanged") for line in again)
    changed = run(store, "install", "--sns-topic", TOPIC + "-2")
    assert sum(line.startswith("update") for line in changed) == 6


def test_uninstall_removes_exactly_what_install_created(env) -> None:
    cw, store, group = env
    prefix = f"wsmon-{group}-"
    # someone else's alarm under our prefix, and someone else's alarm and dashboard elsewhere
    theirs = {"Namespace": "Other", "MetricName": "Thing", "Statistic": "Sum", "Period": 60,
              "EvaluationPeriods": 1, "Threshold": 1.0, "ComparisonOperator": "GreaterThanThreshold"}
    cw.put_metric_alarm(AlarmName=f"{prefix}hand-made", **theirs)
    cw.put_metric_alarm(AlarmName=f"team-{group}-cpu", **theirs)
    cw.put_dashboard(DashboardName=f"team-{group}", DashboardBody=json.dumps({"widgets": []}))
    run(store, "install", "--sns-topic", TOPIC)
    assert len(alarms(cw, prefix)) == 7

    removed = run(store, "uninstall")
    assert sum(line.startswith("delete") for line in removed) == 7
    assert any(line.startswith("kept") and line.endswith(f"{prefix}hand-made") for line in removed)
    assert list(alarms(cw, prefix)) == [f"{prefix}hand-made"]
    assert list(alarms(cw, f"team-{group}-")) == [f"team-{group}-cpu"]
    names = [d["DashboardName"] for d in cw.list_dashboards()["DashboardEntries"]]
    assert f"wsmon-{group}" not in names and f"team-{group}" in names
    assert run(store, "uninstall") == [f"kept      alarm     {prefix}hand-made"]


def test_iam_policy_with_cloudwatch_setup_covers_install_and_uninstall(env) -> None:
    _, store, group = env
    result = CliRunner().invoke(cli, ["--store", store, "iam-policy", "--with-cloudwatch-setup"])
    assert result.exit_code == 0, result.output
    actions = {a for s in json.loads(result.output)["Statement"] for a in s["Action"]}
    assert {"cloudwatch:PutMetricAlarm", "cloudwatch:DeleteAlarms", "cloudwatch:DescribeAlarms",
            "cloudwatch:PutDashboard", "cloudwatch:DeleteDashboards",
            "cloudwatch:GetDashboard"} <= actions
    assert f"alarm:wsmon-{group}-*" in result.output
