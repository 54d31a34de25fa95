"""Event-driven discovery on moto: S3 delivers its notifications (the set-up test event, keys
URL-encoded) to an SQS queue, the engine applies them folder by folder, and the full poll becomes
an hourly reconcile. Time comes from a ManualClock; nothing sleeps."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from test_s3source import World
from wsmon.core import aws
from wsmon.cli.main import cli
from wsmon.config.settings import Settings
from wsmon.engine.s3.events import (
    MODE_EVENTS,
    MODE_FALLBACK,
    MessageNotUnderstood,
    folder_of,
    parse_message,
)
from wsmon.engine.service import Engine
from wsmon.screens.snapshot import engine_status


class EventWorld(World):
    """A bucket whose prefix notifies an SQS queue, and an engine wired to that queue."""

    def __init__(self, endpoint: str, name: str, tmp_path: Path) -> None:
        super().__init__(endpoint, name, tmp_path)
        self.sqs = aws.client("sqs", endpoint_url=endpoint, region="us-west-2", max_attempts=3)
        self.queue_url = self.sqs.create_queue(QueueName=f"{name}-events")["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])[
            "Attributes"]["QueueArn"]
        self.s3.put_bucket_notification_configuration(Bucket=self.bucket, NotificationConfiguration={
            "QueueConfigurations": [{
                "Id": "wsmon", "QueueArn": arn, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"],
                "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": self.prefix}]}}}]})
        self.engines: list[Engine] = []

    def settings(self, queue: str | None = None, **discovery: Any) -> Settings:
        disc = {"sources": [{"bucket": self.bucket, "prefix": self.prefix,
                             "events_queue": queue or self.queue_url}],
                "ready_lock_backoff_seconds": 0, "events_wait_seconds": 0, **discovery}
        return Settings(monitor_id="engine-ev", state_dir=self.tmp_path / "state",
                        aws={"endpoint_url": self.endpoint, "region": "us-west-2"},
                        store={"url": f"sqlite:///{self.tmp_path}/s.db"},
                        clusters={"static": [], "slurm_usage": False}, metrics={"sink": "none"},
                        runner={"kind": "simulated"}, discovery=disc)

    def engine(self, queue: str | None = None, **discovery: Any) -> Engine:
        engine = Engine(self.settings(queue, **discovery), store=self.store, clock=self.clock,
                        s3_client=self.s3)
        self.engines.append(engine)
        return engine

    def depth(self) -> tuple[int, int]:
        attrs = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]), \
            int(attrs["ApproximateNumberOfMessagesNotVisible"])

    def drain(self, engine: Engine) -> list[Any]:
        """Receive until the queue has nothing visible; the batches' outcomes."""
        events = engine._event_discovery()
        outcomes = []
        for _ in range(200):
            outcome = events.consume_once(events.consumers[0])
            assert outcome is not None, "the engine holds the poll lease and the queue is readable"
            if not outcome.received:
                return outcomes
            outcomes.append(outcome)
        pytest.fail("the queue never ran dry: a message keeps coming back")


def monitors_output(world: EventWorld) -> str:
    config = world.tmp_path / "wsmon.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{world.tmp_path}/s.db"\n')
    result = CliRunner().invoke(cli, ["--config", str(config), "monitors"])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def ew(moto_endpoint: str, unique_name: str, tmp_path: Path):
    world = EventWorld(moto_endpoint, unique_name, tmp_path)
    yield world
    for engine in world.engines:
        engine.stop(0)


def started(world: EventWorld, **discovery: Any) -> Engine:
    """An engine that has done its first (reconcile) poll and holds the poll lease."""
    engine = world.engine(**discovery)
    engine.run_cycle()
    return engine


# -- formats, pure ------------------------------------------------------------------------------
def direct(bucket: str, key: str, name: str = "ObjectCreated:Put") -> str:
    return json.dumps({"Records": [{"eventSource": "aws:s3", "eventName": name,
                                    "s3": {"bucket": {"name": bucket}, "object": {"key": key}}}]})


def test_direct_sns_and_eventbridge_formats_name_the_decoded_key() -> None:
    assert parse_message(direct("b", "active/gen+ok+01/daylily.ready"))[0].keys == (
        "active/gen ok 01/daylily.ready",)
    assert parse_message(direct("b", "active/a%2Bb/x", "ObjectRemoved:Delete"))[0].removed
    wrapped = json.dumps({"Type": "Notification", "Message": direct("b", "active/w/x")})
    assert parse_message(wrapped)[0].keys == ("active/w/x",)
    bridge = json.dumps({"source": "aws.s3", "detail-type": "Object Deleted",
                         "detail": {"bucket": {"name": "b"}, "object": {"key": "active/a+b/x"}}})
    event = parse_message(bridge)[0]
    assert event.removed and set(event.keys) == {"active/a+b/x", "active/a b/x"}
    assert parse_message(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"})) == []


@pytest.mark.parametrize("body", ["not json", "[]", '{"hello": 1}', '{"Records": [{"s3": {}}]}',
                                  '{"Type": "Notification", "Message": "nope"}'])
def test_anything_else_is_not_understood(body: str) -> None:
    with pytest.raises(MessageNotUnderstood):
        parse_message(body)


def test_only_keys_inside_a_folder_of_a_source_name_a_folder() -> None:
    sources = [("b", "active/")]
    assert folder_of("b", "active/w1/sample_data/x.fq", sources) == ("b", "active/w1/")
    assert folder_of("b", "active/daylily.ready.log", sources) is None  # the index logs
    assert folder_of("b", "other/w1/x", sources) is None
    assert folder_of("c", "active/w1/x", sources) is None


# -- on moto -------------------------------------------------------------------------------------
def test_upload_while_the_engine_runs_is_registered_by_its_event_not_a_poll(ew: EventWorld) -> None:
    engine = ew.engine(events_wait_seconds=1)
    engine.start()
    deadline = time.monotonic() + 60  # a bound on a hang, not a speed check (bench/ measures it)
    while engine.poll_counts["requests"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)  # the start-up reconcile has listed the (empty) source
    ew.workset("gen ok 01")  # a space: S3 sends the key as gen+ok+01
    while ew.store.get_workset("gen ok 01") is None and time.monotonic() < deadline:
        time.sleep(0.05)
    ws = ew.store.get_workset("gen ok 01")
    assert ws is not None and ws.prefix == f"{ew.prefix}gen ok 01/"
    assert engine.poll_counts["polls"] == 1  # only the start-up reconcile: the event did it
    assert engine._event_discovery().mode(engine._sources[0][0]) == MODE_EVENTS
    engine.heartbeat()
    assert "S3 events, last " in engine_status(ew.store.list_monitors(), ew.clock.now(), 60).text
    lines = monitors_output(ew)
    assert f"via queue {ew.queue_url.rsplit('/', 1)[-1]}: mode events, last event " in lines


def test_test_event_is_consumed_silently_and_full_poll_waits_for_the_hour(ew: EventWorld) -> None:
    engine = started(ew)
    outcomes = ew.drain(engine)
    assert [(o.test_events, o.folders, o.deleted) for o in outcomes] == [(1, [], 1)]
    assert ew.depth() == (0, 0)
    assert engine.poll() == []  # events on: no full poll until the reconcile is due
    ew.clock.advance(minutes=59)
    assert engine.poll() == []
    ew.clock.advance(minutes=1)
    assert len(engine.poll()) == 1


def test_deleted_folder_is_marked_vanished_by_its_events(ew: EventWorld) -> None:
    engine = started(ew)
    ew.workset("w1")
    ew.drain(engine)
    assert ew.store.get_workset("w1") is not None
    for key in ew.keys("w1"):
        ew.s3.delete_object(Bucket=ew.bucket, Key=f"{ew.prefix}w1/{key}")
    outcomes = ew.drain(engine)
    assert any(o.report and o.report.missing == ["w1"] for o in outcomes)
    assert ew.store.get_workset("w1").s3_missing
    assert ew.depth() == (0, 0)


def test_burst_of_500_objects_in_50_folders_is_50_syncs(ew: EventWorld) -> None:
    engine = started(ew)
    ew.drain(engine)  # the set-up test event
    for n in range(50):
        ew.put(f"{ew.prefix}b{n:02d}/daylily_work.yaml", "dy-r: produce\n")
        for i in range(9):
            ew.put(f"{ew.prefix}b{n:02d}/sample_data/part-{i}.fq", "x")
    assert ew.depth()[0] == 500
    ew.take_counts()
    outcomes = ew.drain(engine)
    assert sum(o.received for o in outcomes) == 500
    assert sum(len(o.folders) for o in outcomes) == 50
    assert len({f for o in outcomes for f in o.folders}) == 50
    assert ew.take_counts()["ListObjectsV2"] == 50  # one listing per folder, not per object
    assert ew.depth() == (0, 0)


def test_duplicated_and_reordered_events_change_nothing(ew: EventWorld) -> None:
    engine = started(ew)
    ew.workset("w1")
    ew.drain(engine)
    before = ew.store.get_workset("w1")
    created = direct(ew.bucket, f"{ew.prefix}w1/daylily.ready")
    removed_late = direct(ew.bucket, f"{ew.prefix}w1/daylily.ready", "ObjectRemoved:Delete")
    for body in (created, created, removed_late):  # a duplicate, then an old removal arriving late
        ew.sqs.send_message(QueueUrl=ew.queue_url, MessageBody=body)
    outcomes = ew.drain(engine)
    assert outcomes and not any(o.report.changed for o in outcomes if o.report)
    after = ew.store.get_workset("w1")
    assert after.model_dump() == before.model_dump() and not after.s3_missing


def test_unparseable_message_is_left_for_the_redrive_and_blocks_nothing(ew: EventWorld) -> None:
    engine = started(ew)
    ew.drain(engine)
    # even on a queue that makes every received message visible again at once
    ew.sqs.set_queue_attributes(QueueUrl=ew.queue_url, Attributes={"VisibilityTimeout": "0"})
    ew.sqs.send_message(QueueUrl=ew.queue_url, MessageBody="garbage that is not an event")
    ew.workset("w2")
    outcomes = ew.drain(engine)
    assert sum(o.not_understood for o in outcomes) == 1
    assert ew.store.get_workset("w2") is not None
    assert ew.depth() == (0, 1)  # only the garbage, set aside: not received again and again


def test_queue_unreachable_falls_back_to_polling_and_raises_the_alert(ew: EventWorld) -> None:
    missing = ew.queue_url + "-gone"
    engine = ew.engine(missing)
    engine.run_cycle()
    events = engine._event_discovery()
    name = engine._sources[0][0]
    assert events.consume_once(events.consumers[0]) is None
    assert events.mode(name) == MODE_FALLBACK
    assert len(engine.poll()) == 1  # the full poll at the normal interval, not hourly
    ew.clock.advance(engine.settings.alerts.backend_errors.for_seconds + 1)
    assert events.consume_once(events.consumers[0]) is None
    engine.evaluate_alerts()
    alerts = [a for a in ew.store.list_alerts() if a.rule == "backend_errors"]
    assert [a.subject for a in alerts] == [f"sqs {missing.rsplit('/', 1)[-1]}"]
    engine.heartbeat()
    assert "S3 events unreadable: polling" in engine_status(
        ew.store.list_monitors(), ew.clock.now(), 60).text
    assert "mode fallback" in monitors_output(ew)
