"""Notifications: outbox, filters, coalescing, SNS through moto, Linear and Slack against a real
HTTP server on 127.0.0.1 that injects 429s, 500s and timeouts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fake_receivers import CLIENT_TIMEOUT, LINEAR_KEY, SLACK_PATH, FakeService, running_fake_service

from wsmon.core.aws import client as aws_client
from wsmon.config.settings import Settings
from wsmon.engine.alerts import AlertEvaluator
from wsmon.engine.notify import (
    LinearChannel,
    Message,
    Notifier,
    SlackChannel,
    SnsChannel,
    ascii_subject,
    build_channels,
    parse_retry_after,
    truncate_utf8,
)
from wsmon.engine.store import open_store
from wsmon.core.models import Alert, AlertState, Severity


@pytest.fixture
def service(clock) -> Iterator[tuple[FakeService, str]]:
    with running_fake_service(clock) as running:
        yield running


@pytest.fixture
def store(tmp_path, clock):
    s = open_store(f"sqlite:///{tmp_path}/s.db", clock=clock)
    yield s
    s.close()


def make_notifier(store, clock, base: str, *, slack_filter=None, linear_filter=None, **notify) -> Notifier:
    settings = Settings(monitor_id="engine-a", notify={"request_timeout_seconds": CLIENT_TIMEOUT, **notify})
    ns = settings.notify
    channels = {
        "linear": LinearChannel(LINEAR_KEY, "team-1", store, api_url=f"{base}/graphql", timeout=CLIENT_TIMEOUT,
                                filter=linear_filter, clock=clock, resolved_state_id=ns.linear_resolved_state_id),
        "slack": SlackChannel(f"{base}{SLACK_PATH}", timeout=CLIENT_TIMEOUT, filter=slack_filter, clock=clock),
    }
    return Notifier(settings, store, clock=clock, channels=channels)


def failed_workset(store, name: str, *, priority: str = "normal", details: str = "exit 1"):
    store.register_workset(name, "bucket", f"worksets/{name}/", priority=priority)
    return store.update_state(name, "error", "pipeline failed", "engine-a", error_code="WS-RES-001",
                              error_details=details)


def drain(notifier: Notifier, clock, *, step: float = 30.0, rounds: int = 400) -> None:
    for _ in range(rounds):
        notifier.deliver()
        if not notifier.store.list_notifications(status="pending"):
            return
        clock.advance(step)
    raise AssertionError("outbox never drained")


def make_alert(clock, alert_id: str = "a1", state: AlertState = AlertState.FIRING, **kw) -> Alert:
    now = clock.now()
    base = dict(alert_id=alert_id, rule="queue_depth", subject="priority=urgent", severity=Severity.CRITICAL,
                state=state, summary="12 urgent worksets ready (threshold 10)", pending_since=now,
                fired_at=now, updated_at=now)
    base.update(kw)
    return Alert(**base)


# -- delivery and recovery ----------------------------------------------------------------------


def test_every_event_delivered_exactly_once_per_channel_after_429_500_and_timeouts(store, clock, service):
    svc, base = service
    notifier = make_notifier(store, clock, base, linear_filter=None)
    svc.faults["/graphql"] = ["429:120", "500", "timeout", "ratelimited"]
    svc.faults[SLACK_PATH] = ["500", "timeout", "429:45", "503"]
    names = [f"ws-{i}" for i in range(5)]
    for name in names:
        notifier.emit("failed", workset=failed_workset(store, name))
    notifier.emit("alert_firing", alert=make_alert(clock))

    drain(notifier, clock)

    slack_titles = [body["text"] for body in svc.slack]
    assert sorted(slack_titles) == sorted([f"Workset failed: {n}" for n in names]
                                          + ["[FIRING] critical: 12 urgent worksets ready (threshold 10)"])
    created = [inp["title"] for kind, inp in svc.mutations if kind == "issueCreate"]
    assert sorted(created) == sorted(slack_titles)
    assert store.list_notifications(status="dead") == []
    assert len(store.list_notifications(status="delivered")) == 12


def test_retry_after_is_honoured(store, clock, service):
    svc, base = service
    notifier = make_notifier(store, clock, base)
    svc.faults[SLACK_PATH] = ["429:600"]
    notifier.emit("failed", workset=failed_workset(store, "w"))
    first = clock.now()
    for _ in range(40):  # 20 minutes of delivery runs every 30 s
        notifier.deliver()
        clock.advance(30)
    slack_times = [at for path, at in svc.attempts if path == SLACK_PATH]
    assert len(slack_times) == 2 and len(svc.slack) == 1
    assert slack_times[1] - first >= timedelta(seconds=600)


def test_channel_down_for_an_hour_loses_nothing_and_floods_nothing(store, clock, service):
    svc, base = service
    notifier = make_notifier(store, clock, base, linear_filter=None)
    svc.down.add(SLACK_PATH)
    worksets = ["alpha", "beta", "gamma"]
    for name in worksets:
        store.register_workset(name, "bucket", f"w/{name}/")
    for minute in range(60):
        name = worksets[minute % 3]
        ws = store.get_workset(name)
        if minute < 3:
            notifier.emit("registered", workset=ws)
        elif minute < 6:
            lease = store.acquire_lock(name, "engine-a", lease_seconds=86400)
            ws = store.update_state(name, "in_progress", "started", "engine-a", lease=lease)
            notifier.emit("started", workset=ws)
        for _ in range(4):  # delivery every 15 s
            notifier.deliver()
            clock.advance(15)
    probes = svc.count(SLACK_PATH)
    assert probes <= 12, f"{probes} requests against a channel that was down"
    assert store.list_notifications(status="dead") == []
    svc.down.clear()
    drain(notifier, clock, step=60)
    # one message per workset: the latest word, saying what was folded into it
    assert sorted(b["text"] for b in svc.slack) == sorted(f"Workset started: {n}" for n in worksets)
    assert all("1 earlier notification" in b["attachments"][0]["text"] for b in svc.slack)
    # Linear was up all along: one issue per workset, the later event commented on it
    assert [k for k, _ in svc.mutations].count("issueCreate") == 3
    assert [k for k, _ in svc.mutations].count("commentCreate") == 3


def test_permanent_rejection_goes_dead_and_the_channel_alert_fires(store, clock, service):
    svc, base = service
    notifier = make_notifier(store, clock, base, linear_filter=None)
    svc.faults[SLACK_PATH] = ["400", "400", "400"]
    notifier.emit("failed", workset=failed_workset(store, "w"))
    drain(notifier, clock)
    [dead] = store.list_notifications(status="dead")
    assert dead.channel == "slack" and dead.attempts == 3 and "HTTP 400" in dead.last_error
    assert SLACK_PATH not in dead.last_error and "T0SECRET" not in dead.last_error
    settings = Settings(monitor_id="engine-a", alerts={"channel_failing": {"threshold": 3}})
    AlertEvaluator(settings, store, clock=clock).evaluate()
    [alert] = [a for a in store.list_alerts() if a.rule == "channel_failing"]
    assert alert.subject == "slack" and alert.state is AlertState.FIRING


def test_dedup_id_makes_a_repeated_emit_a_no_op(store, clock, service):
    _, base = service
    notifier = make_notifier(store, clock, base)
    ws = failed_workset(store, "w")
    assert len(notifier.emit("failed", workset=ws)) == 2  # linear and slack
    assert notifier.emit("failed", workset=ws) == []
    assert len(notifier.emit("failed", workset=ws, dedup_id="something-else")) == 2


# -- Linear idempotency ------------------------------------------------------------------------


def test_linear_one_issue_per_alert_then_comments(store, clock, service):
    svc, base = service
    notifier = make_notifier(store, clock, base, slack_filter=None, linear_resolved_state_id="state-done")
    alert = make_alert(clock)
    notifier.emit("alert_firing", alert=alert)
    drain(notifier, clock)
    clock.advance(60)
    acked = alert.model_copy(update={"state": AlertState.ACKNOWLEDGED, "acknowledged_by": "alice@ops",
                                     "acknowledged_at": clock.now(), "updated_at": clock.now()})
    notifier.emit("alert_acknowledged", alert=acked)
    drain(notifier, clock)
    clock.advance(60)
    refired = acked.model_copy(update={"state": AlertState.FIRING, "updated_at": clock.now()})
    notifier.emit("alert_firing", alert=refired)
    drain(notifier, clock)
    clock.advance(60)
    resolved = refired.model_copy(update={"state": AlertState.RESOLVED, "resolved_at": clock.now(),
                                          "updated_at": clock.now()})
    notifier.emit("alert_resolved", alert=resolved)
    drain(notifier, clock)

    kinds = [k for k, _ in svc.mutations]
    assert kinds == ["issueCreate", "commentCreate", "commentCreate", "commentCreate", "issueUpdate"]
    [issue] = svc.issues.values()
    assert issue["input"]["teamId"] == "team-1" and issue["input"]["priority"] == 1  # critical → urgent
    assert issue["state"] == "state-done"
    assert store.kv_get("linear_issues", "alert:a1")["id"] == "iss-1"
    # a new alert for the same rule and subject opens a new issue
    notifier.emit("alert_firing", alert=make_alert(clock, alert_id="a2"))
    drain(notifier, clock)
    assert len(svc.issues) == 2


def test_linear_create_that_timed_out_after_succeeding_is_not_repeated(store, clock, service):
    svc, base = service
    notifier = make_notifier(store, clock, base, slack_filter=None)
    svc.faults["/graphql"] = ["late"]
    notifier.emit("alert_firing", alert=make_alert(clock))
    drain(notifier, clock)
    assert len(svc.issues) == 1 and store.kv_get("linear_issues", "alert:a1")["id"] == "iss-1"
    notifier.emit("alert_resolved", alert=make_alert(clock, state=AlertState.RESOLVED, resolved_at=clock.now(),
                                                     updated_at=clock.now() + timedelta(seconds=1)))
    drain(notifier, clock)
    assert [k for k, _ in svc.mutations] == ["issueCreate", "commentCreate"]


def test_linear_priority_follows_workset_priority_and_issue_recreated_if_deleted(store, clock, service):
    svc, base = service
    notifier = make_notifier(store, clock, base)
    notifier.emit("dead_lettered", workset=failed_workset(store, "low one", priority="low"))
    drain(notifier, clock)
    [issue] = svc.issues.values()
    assert issue["input"]["priority"] == 4
    svc.issues.clear()  # someone deleted it in Linear
    notifier.emit("validation_failed", workset=store.get_workset("low one"), dedup_id="v1")
    drain(notifier, clock)
    assert len(svc.issues) == 1 and store.list_notifications(status="dead") == []


# -- filters -----------------------------------------------------------------------------------


def test_channel_filters(store, clock, service):
    from wsmon.config.settings import ChannelFilter

    _, base = service
    notifier = make_notifier(
        store, clock, base,
        slack_filter=ChannelFilter(event_types=["failed", "completed", "alert_firing"], priorities=["urgent"]),
        linear_filter=ChannelFilter(severities=["critical"]),
    )
    urgent = failed_workset(store, "u", priority="urgent")
    normal = failed_workset(store, "n", priority="normal")
    sent = {
        "urgent failed": notifier.emit("failed", workset=urgent),
        "normal failed": notifier.emit("failed", workset=normal),
        "urgent retrying": notifier.emit("retrying", workset=urgent),
        "warning alert": notifier.emit("alert_firing", alert=make_alert(clock, "w1", severity=Severity.WARNING)),
        "critical alert": notifier.emit("alert_firing", alert=make_alert(clock, "c1", subject="s2")),
        "dead letter": notifier.emit("dead_lettered", workset=normal, dedup_id="dl"),
    }
    channels = {k: sorted(e.channel for e in v) for k, v in sent.items()}
    assert channels == {
        "urgent failed": ["slack"],
        "normal failed": [],
        "urgent retrying": [],
        "warning alert": ["slack"],  # alerts carry no priority: the priority filter does not hide them
        "critical alert": ["linear", "slack"],
        "dead letter": ["linear"],
    }


# -- SNS via moto --------------------------------------------------------------------------------


@pytest.fixture
def sns_topic(moto_endpoint, unique_name):
    sns = aws_client("sns", region="us-west-2", endpoint_url=moto_endpoint)
    sqs = aws_client("sqs", region="us-west-2", endpoint_url=moto_endpoint)
    topic = sns.create_topic(Name=unique_name)["TopicArn"]
    queue = sqs.create_queue(QueueName=unique_name)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)

    def read() -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        for _ in range(5):
            resp = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            msgs = resp.get("Messages", [])
            if not msgs and got:
                break
            got += [json.loads(m["Body"]) for m in msgs]
        return got

    return topic, read


def test_sns_publishes_with_subject_and_filter_attributes(store, clock, moto_endpoint, sns_topic):
    topic, read = sns_topic
    settings = Settings(monitor_id="engine-a", aws={"endpoint_url": moto_endpoint, "region": "us-west-2"},
                        notify={"sns_topic_arn": topic})
    notifier = Notifier(settings, store, clock=clock, channels=build_channels(settings, store, clock=clock))
    assert list(notifier.channels) == ["sns"]
    name = "Ünïcode workset " + "x" * 120
    notifier.emit("dead_lettered", workset=failed_workset(store, name, priority="urgent"))
    report = notifier.deliver()
    assert report.delivered == 1
    [msg] = read()
    assert len(msg["Subject"]) <= 100 and msg["Subject"].isascii()
    assert msg["Subject"].startswith("Workset dead lettered: Unicode workset xxx")
    attrs = {k: v["Value"] for k, v in msg["MessageAttributes"].items()}
    assert attrs["event_type"] == "dead_lettered" and attrs["priority"] == "urgent"
    assert attrs["severity"] == "critical" and attrs["workset"] == name
    assert name in msg["Message"] and "WS-RES-001" in msg["Message"]


def test_sns_message_truncated_deterministically_within_256k(store, clock, moto_endpoint, sns_topic):
    topic, read = sns_topic
    channel = SnsChannel(topic, client=aws_client("sns", region="us-west-2", endpoint_url=moto_endpoint))
    huge = "é" * 200_000  # 400,000 bytes of UTF-8
    msg = Message(event_type="failed", title="big " + "ü" * 300, text=huge, severity="warning",
                  at="2026-01-01T00:00:00Z", workset_id="w")
    subject, body, attrs = channel.render(msg)
    assert len(body.encode("utf-8")) <= 256 * 1024
    assert channel.render(msg) == (subject, body, attrs)  # same input, same cut
    assert "truncated" in body.splitlines()[-1]
    body.encode("utf-8")  # never cut inside a character
    assert len(subject) <= 100 and subject.isascii()
    channel.send(msg)
    [got] = read()
    assert got["Message"] == body


def test_truncation_and_subject_helpers():
    assert truncate_utf8("short", 100) == "short"
    cut = truncate_utf8("a" * 1000, 100)
    assert len(cut.encode()) <= 100 and cut.startswith("a" * 10)
    assert ascii_subject("\x1b[31mred\x1b[0m\nline two") == "red line two"
    assert ascii_subject("日本語") == "wsmon notification"
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("garbage") is None


# -- secrets and scrubbing -----------------------------------------------------------------------


def test_no_secret_home_path_or_key_file_leaves(store, clock, service, moto_endpoint, sns_topic):
    svc, base = service
    topic, read = sns_topic
    settings = Settings(monitor_id="engine-a", notify={"request_timeout_seconds": CLIENT_TIMEOUT})
    channels = {
        "linear": LinearChannel(LINEAR_KEY, "team-1", store, api_url=f"{base}/graphql", timeout=CLIENT_TIMEOUT, clock=clock),
        "slack": SlackChannel(f"{base}{SLACK_PATH}", timeout=CLIENT_TIMEOUT, clock=clock),
        "sns": SnsChannel(topic, client=aws_client("sns", region="us-west-2", endpoint_url=moto_endpoint)),
    }
    notifier = Notifier(settings, store, clock=clock, channels=channels)
    leaky = (f"Traceback: open('/home/alice/keys/deploy.pem') failed; tried ~/.ssh/id_rsa and /root/.aws/creds; "
             f"key={LINEAR_KEY} webhook {base}{SLACK_PATH} AKIAABCDEFGHIJKLMNOP aws_secret_access_key=abc/DEF+ghi")
    ws = failed_workset(store, "evil\x1b]52;c;ZXZpbA==\x07 [b]name[/b]", details=leaky)
    notifier.emit("failed", workset=ws, text=leaky)
    drain(notifier, clock)  # (emitted together they would coalesce into one)
    notifier.emit("dead_lettered", workset=ws, reason=leaky)
    drain(notifier, clock)
    outgoing = svc.raw_bodies + [json.dumps(m) for m in read()]
    assert len(outgoing) >= 4
    for body in outgoing:
        for forbidden in (LINEAR_KEY, "T0SECRET", "XyZsecretToken", "/home/alice", "deploy.pem", "id_rsa",
                          "/root/", "AKIAABCDEFGHIJKLMNOP", "abc/DEF+ghi", "\x1b", "\\u001b"):
            assert forbidden not in body, forbidden
    # and nothing secret was stored in the outbox either
    for entry in store.list_notifications():
        assert LINEAR_KEY not in json.dumps(entry.payload) and "/home/alice" not in json.dumps(entry.payload)
    # the key only ever travels in the Authorization header
    assert any(h.get("Authorization") == LINEAR_KEY for h in svc.headers)


def test_slack_message_shape(store, clock, service):
    svc, base = service
    notifier = make_notifier(store, clock, base, dashboard_url="https://wsmon.example/ws/{workset_id}")
    notifier.emit("failed", workset=failed_workset(store, "a<b>&c"))
    notifier.emit("alert_firing", alert=make_alert(clock))
    drain(notifier, clock)
    by_title = {b["text"]: b for b in svc.slack}
    ws_msg = by_title["Workset failed: a&lt;b&gt;&amp;c"]
    att = ws_msg["attachments"][0]
    assert att["color"] == "#daa038"
    assert "<https://wsmon.example/ws/a%3Cb%3E%26c|Workset a&lt;b&gt;&amp;c>" in att["text"]
    alert_msg = by_title["[FIRING] critical: 12 urgent worksets ready (threshold 10)"]
    assert alert_msg["attachments"][0]["color"] == "#d00000"


def test_build_channels_reads_secrets_from_the_environment(store, monkeypatch):
    monkeypatch.setenv("WSMON_LINEAR_API_KEY", LINEAR_KEY)
    monkeypatch.setenv("WSMON_SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T/B/C")
    settings = Settings(notify={"linear_team_id": "team-1"})
    channels = build_channels(settings, store)
    assert sorted(channels) == ["linear", "slack"]
    monkeypatch.delenv("WSMON_LINEAR_API_KEY")
    monkeypatch.delenv("WSMON_SLACK_WEBHOOK_URL")
    assert build_channels(Settings(notify={"linear_team_id": "team-1"}), store) == {}
