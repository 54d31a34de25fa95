"""Event-driven discovery: S3 event notifications read from SQS, each applied to the one folder it
names through the poll's own sync path (``S3Source.sync_event_folders``).

With ``events_queue`` set, the poller long-polls the queue (``WaitTimeSeconds`` up to 20, at most
10 messages) and the full poll becomes a reconcile pass every ``events_reconcile_seconds``
(notifications are at-least-once and may be late or, rarely, lost). What an event says is never
trusted, only what S3 holds when the folder is listed, so an event applied twice, late or out of
order changes nothing.

A message is deleted only after every folder it named was synced and its store write succeeded.
A message that is not an S3 event (``WS-AWS-008``) is logged, set aside (invisible for
``SET_ASIDE_SECONDS``, whatever the queue's own visibility timeout) and never deleted: the
redrive policy moves it to the dead-letter queue; the other messages of the batch go on.

Only the engine holding a source's poll lease consumes that source's queue. When the queue cannot
be read, the source falls back to the full poll at ``poll_interval_seconds`` and the failure is
reported as the health of component ``sqs <queue name>`` (the ``backend_errors`` alert fires
once it lasts ``alerts.backend_errors.for_seconds``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import unquote_plus

import structlog

from wsmon.core.clock import Clock, SystemClock, isoformat
from wsmon.core.textsafe import strip_control
from wsmon.engine.s3.listing import normalize_prefix
from wsmon.engine.s3.report import PollReport

log = structlog.get_logger(__name__)

MAX_MESSAGES = 10  # SQS's limit per ReceiveMessage
KV_EVENTS = "s3.events"  # queue URL -> {"last_event_at", "mode", "error", "monitor_id", "at"}
NOT_UNDERSTOOD = "WS-AWS-008"
SET_ASIDE_SECONDS = 300  # a message that is not an S3 event stays invisible this long
LEASE_CHECK_SECONDS = 5.0  # how often an engine without the poll lease looks again
MAX_FAILURE_BACKOFF_SECONDS = 60.0

MODE_EVENTS = "events"
MODE_FALLBACK = "fallback"  # queue unreadable: full poll at the normal interval
MODE_POLL = "poll"


class MessageNotUnderstood(ValueError):
    """A queue message that is not an S3 event notification in any format wsmon reads."""


@dataclass(frozen=True)
class ObjectEvent:
    """One object change: the bucket and the key, or the keys it may be (see ``parse_message``)."""

    bucket: str
    keys: tuple[str, ...]
    removed: bool


def parse_message(body: str) -> list[ObjectEvent]:
    """The object events of one SQS message body; ``[]`` for S3's ``s3:TestEvent``.

    Formats: S3's direct notification (``Records``, keys URL-encoded), the same wrapped by SNS
    (``Type: Notification``), and EventBridge's (``detail-type``/``detail``). EventBridge keys
    are taken both as they are and URL-decoded: listing a folder that does not exist costs one
    request and changes nothing, while missing the real one would wait for the reconcile."""
    try:
        doc = json.loads(body)
    except (TypeError, ValueError) as exc:
        raise MessageNotUnderstood(f"not JSON: {exc}") from None
    return _parse_document(doc, depth=0)


def _parse_document(doc: Any, depth: int) -> list[ObjectEvent]:
    if not isinstance(doc, dict):
        raise MessageNotUnderstood("not a JSON object")
    if doc.get("Event") == "s3:TestEvent":
        return []
    if doc.get("Type") == "Notification" and isinstance(doc.get("Message"), str) and depth == 0:
        try:
            inner = json.loads(doc["Message"])
        except ValueError as exc:
            raise MessageNotUnderstood(f"SNS message is not JSON: {exc}") from None
        return _parse_document(inner, depth + 1)
    if isinstance(doc.get("Records"), list):
        return [_direct_record(r) for r in doc["Records"]]
    if "detail-type" in doc and doc.get("source") == "aws.s3":
        return [_eventbridge(doc)]
    raise MessageNotUnderstood("neither an S3 notification nor an EventBridge S3 event")


def _direct_record(record: Any) -> ObjectEvent:
    try:
        name = str(record["eventName"])
        bucket = str(record["s3"]["bucket"]["name"])
        key = unquote_plus(str(record["s3"]["object"]["key"]))
    except (KeyError, TypeError) as exc:
        raise MessageNotUnderstood(f"S3 record without {exc}") from None
    return ObjectEvent(bucket, (key,), removed=name.startswith("ObjectRemoved"))


def _eventbridge(doc: dict[str, Any]) -> ObjectEvent:
    try:
        bucket = str(doc["detail"]["bucket"]["name"])
        raw = str(doc["detail"]["object"]["key"])
    except (KeyError, TypeError) as exc:
        raise MessageNotUnderstood(f"EventBridge S3 event without {exc}") from None
    keys = (raw,) if unquote_plus(raw) == raw else (raw, unquote_plus(raw))
    return ObjectEvent(bucket, keys, removed="Deleted" in str(doc.get("detail-type")))


def folder_of(bucket: str, key: str, sources: Iterable[tuple[str, str]]) -> tuple[str, str] | None:
    """The workset folder (bucket, folder prefix) a key lies in, or None when the key is not
    inside a folder directly under one of ``sources`` ((bucket, normalized prefix) pairs):
    index logs at the source level, other prefixes, other buckets."""
    for src_bucket, src_prefix in sources:
        if src_bucket != bucket or not key.startswith(src_prefix):
            continue
        rest = key[len(src_prefix):]
        name, slash, _ = rest.partition("/")
        if slash and name:
            return bucket, f"{src_prefix}{name}/"
    return None


def folder_is_empty(s3: Any, bucket: str, prefix: str) -> bool:
    """Whether no object at all is left under the folder (the vanished rule's condition)."""
    resp = s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
    return not resp.get("KeyCount") and not resp.get("Contents")


def queue_name(queue_url: str) -> str:
    return queue_url.rstrip("/").rsplit("/", 1)[-1]


@dataclass
class BatchOutcome:
    """What one receive did."""

    received: int = 0
    deleted: int = 0
    test_events: int = 0
    not_understood: int = 0
    folders: list[tuple[str, str]] = field(default_factory=list)
    failed: set[tuple[str, str]] = field(default_factory=set)
    report: PollReport | None = None


class QueueConsumer:
    """One queue: receive a batch, sync each folder it names once, delete what was carried out."""

    def __init__(self, queue_url: str, lease_name: str, source: Any, sqs: Any, *,
                 wait_seconds: int, clock: Clock | None = None) -> None:
        self.queue_url = queue_url
        self.lease_name = lease_name
        self.source = source
        self.sqs = sqs
        self.wait_seconds = wait_seconds
        self.clock = clock or SystemClock()
        self.sources = [(s.bucket, normalize_prefix(s.prefix))
                        for s in source.settings.discovery.sources]
        self.last_event_at: datetime | None = None

    def receive_and_apply(self) -> BatchOutcome:
        """One long-poll receive and what it brought. AWS errors of the receive propagate (the
        caller falls back to polling); a failed delete only means the message comes again."""
        resp = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=MAX_MESSAGES,
                                        WaitTimeSeconds=self.wait_seconds)
        messages = resp.get("Messages") or []
        outcome = BatchOutcome(received=len(messages))
        if not messages:
            return outcome
        named: dict[str, set[tuple[str, str]]] = {}  # receipt handle -> folders
        for message in messages:
            try:
                events = parse_message(message.get("Body", ""))
            except MessageNotUnderstood as exc:
                outcome.not_understood += 1
                log.warning("s3events.message_not_understood", code=NOT_UNDERSTOOD,
                            queue=queue_name(self.queue_url),
                            message_id=strip_control(str(message.get("MessageId", "?"))),
                            error=strip_control(str(exc))[:300])
                self._set_aside(message)
                continue
            if not events:
                outcome.test_events += 1
            folders = {f for ev in events for key in ev.keys
                       if (f := folder_of(ev.bucket, key, self.sources)) is not None}
            named[message["ReceiptHandle"]] = folders
            for folder in sorted(folders):
                if folder not in outcome.folders:
                    outcome.folders.append(folder)
        if len(named) > outcome.test_events:
            self.last_event_at = self.clock.now()
        if outcome.folders:
            outcome.report, outcome.failed = self.source.sync_event_folders(outcome.folders)
        done = [handle for handle, folders in named.items() if not folders & outcome.failed]
        outcome.deleted = self._delete(done)
        log.info("s3events.batch", queue=queue_name(self.queue_url), received=outcome.received,
                 folders=len(outcome.folders), failed=len(outcome.failed), deleted=outcome.deleted,
                 not_understood=outcome.not_understood)
        return outcome

    def _set_aside(self, message: dict[str, Any]) -> None:
        """Keep a message that cannot be applied out of the next receives for a while, whatever
        the queue's own visibility timeout: it waits for the redrive, not in a tight loop."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.sqs.change_message_visibility(QueueUrl=self.queue_url,
                                               ReceiptHandle=message["ReceiptHandle"],
                                               VisibilityTimeout=SET_ASIDE_SECONDS)
        except (ClientError, BotoCoreError, KeyError) as exc:  # the queue's timeout still applies
            log.warning("s3events.set_aside_failed", queue=queue_name(self.queue_url),
                        error=strip_control(str(exc))[:300])

    def _delete(self, handles: list[str]) -> int:
        if not handles:
            return 0
        from botocore.exceptions import BotoCoreError, ClientError

        entries = [{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(handles)]
        try:
            resp = self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
        except (ClientError, BotoCoreError) as exc:
            log.warning("s3events.delete_failed", queue=queue_name(self.queue_url),
                        error=strip_control(str(exc))[:300])
            return 0
        return len(resp.get("Successful") or [])


@dataclass
class QueueState:
    failing_since: datetime | None = None
    error: str = ""
    reported_ok: bool = False


class EventDiscovery:
    """The event consumers of one engine (one per queue, each in its own thread while the
    engine runs) and the rule for when a source's full poll still runs."""

    def __init__(self, settings: Any, store: Any, sources: list[tuple[str, Any]], *,
                 clock: Clock | None = None, monitor_id: str, sqs_client: Any = None,
                 health: Callable[[str, bool, str], None] | None = None,
                 on_report: Callable[[PollReport], None] | None = None) -> None:
        self.settings = settings
        self.discovery = settings.discovery
        self.store = store
        self.clock = clock or SystemClock()
        self.monitor_id = monitor_id
        self._health = health or (lambda component, ok, detail: None)
        self._on_report = on_report or (lambda report: None)
        self.consumers: list[QueueConsumer] = []
        self._events_groups: set[str] = set()
        self._last_full_poll: dict[str, datetime] = {}
        self._states: dict[str, QueueState] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        queues_of: dict[str, list[str]] = {}
        for lease_name, source in sources:
            members = source.settings.discovery.sources
            queues = [effective_queue(self.discovery, m) for m in members]
            if queues and all(queues):
                self._events_groups.add(lease_name)
            queues_of[lease_name] = sorted({q for q in queues if q})
        if any(queues_of.values()) and sqs_client is None:
            from wsmon.core import aws

            aws_cfg = settings.aws
            sqs_client = aws.client("sqs", profile=aws_cfg.profile, region=aws_cfg.region,
                                    endpoint_url=aws_cfg.endpoint_url,
                                    max_attempts=aws_cfg.max_attempts,
                                    read_timeout=self.discovery.events_wait_seconds + 10)
        for lease_name, source in sources:
            for url in queues_of[lease_name]:
                self.consumers.append(QueueConsumer(url, lease_name, source, sqs_client,
                                                    wait_seconds=self.discovery.events_wait_seconds,
                                                    clock=self.clock))
                self._states[url] = QueueState()

    @property
    def enabled(self) -> bool:
        return bool(self.consumers)

    # -- the poll's schedule ---------------------------------------------------------------
    def mode(self, lease_name: str) -> str:
        if lease_name not in self._events_groups:
            return MODE_POLL
        failing = any(self._states[c.queue_url].failing_since is not None
                      for c in self.consumers if c.lease_name == lease_name)
        return MODE_FALLBACK if failing else MODE_EVENTS

    def full_poll_due(self, lease_name: str) -> bool:
        """Whether the poll job should list the whole source now: always without events or
        while the queue cannot be read; with events once every events_reconcile_seconds."""
        if self.mode(lease_name) != MODE_EVENTS:
            return True
        last = self._last_full_poll.get(lease_name)
        return last is None or self.clock.now() - last >= timedelta(
            seconds=self.discovery.events_reconcile_seconds)

    def full_poll_done(self, lease_name: str) -> None:
        self._last_full_poll[lease_name] = self.clock.now()

    # -- consuming -------------------------------------------------------------------------
    def holds_lease(self, lease_name: str) -> bool:
        held = self.store.get_named_lease(lease_name)
        return held is not None and held.owner_id == self.monitor_id and \
            held.expires_at > self.clock.now()

    def consume_once(self, consumer: QueueConsumer) -> BatchOutcome | None:
        """One receive on ``consumer``'s queue when this engine holds its source's poll lease;
        None when it does not, or when the queue could not be read (then: fallback)."""
        from botocore.exceptions import BotoCoreError, ClientError

        from wsmon.core.aws import describe_client_error

        if not self.holds_lease(consumer.lease_name):
            return None
        state = self._states[consumer.queue_url]
        component = f"sqs {queue_name(consumer.queue_url)}"
        try:
            outcome = consumer.receive_and_apply()
        except (ClientError, BotoCoreError) as exc:
            detail = describe_client_error(exc) if isinstance(exc, ClientError) else str(exc)
            if state.failing_since is None:
                state.failing_since = self.clock.now()
                log.warning("s3events.queue_unreadable", queue=queue_name(consumer.queue_url),
                            error=strip_control(detail)[:300], fallback="full poll every "
                            f"{self.discovery.poll_interval_seconds:g}s")
            state.error = strip_control(detail)[:300]
            state.reported_ok = False
            self._health(component, False, f"events queue unreadable: {detail}")
            self._publish(consumer)
            return None
        if outcome.report is not None:
            self._on_report(outcome.report)
        if state.failing_since is not None or not state.reported_ok:
            if state.failing_since is not None:
                log.info("s3events.queue_readable_again", queue=queue_name(consumer.queue_url))
            state.failing_since, state.error, state.reported_ok = None, "", True
            self._health(component, True, "")
            self._publish(consumer)
        elif outcome.received > outcome.test_events:
            self._publish(consumer)
        return outcome

    def _publish(self, consumer: QueueConsumer) -> None:
        """Mode and last event time where `wsmon monitors` and `wsmon s3-events status` read
        them (one small write per batch of events, none while idle)."""
        state = self._states[consumer.queue_url]
        try:
            self.store.kv_put(KV_EVENTS, consumer.queue_url, {
                "mode": self.mode(consumer.lease_name), "source": consumer.lease_name,
                "last_event_at": isoformat(consumer.last_event_at) if consumer.last_event_at else
                (self.store.kv_get(KV_EVENTS, consumer.queue_url) or {}).get("last_event_at"),
                "error": state.error, "monitor_id": self.monitor_id,
                "at": isoformat(self.clock.now())})
        except Exception as exc:  # status is best effort; the events themselves were applied
            log.warning("s3events.status_write_failed", error=strip_control(str(exc))[:200])

    def status(self) -> list[dict[str, Any]]:
        """Per queue: the source, its mode, the last event time (for the heartbeat)."""
        return [{"source": c.lease_name, "queue": queue_name(c.queue_url),
                 "mode": self.mode(c.lease_name),
                 "last_event_at": isoformat(c.last_event_at) if c.last_event_at else None}
                for c in self.consumers]

    # -- threads ---------------------------------------------------------------------------
    def start(self) -> None:
        for consumer in self.consumers:
            thread = threading.Thread(target=self._run, args=(consumer,), daemon=True,
                                      name=f"wsmon-events-{queue_name(consumer.queue_url)}")
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop consuming. A receive in flight is not waited for past ``timeout``: what it
        brings back is not applied and comes again after the visibility timeout."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)

    def _run(self, consumer: QueueConsumer) -> None:
        failure_backoff = min(MAX_FAILURE_BACKOFF_SECONDS, self.discovery.poll_interval_seconds)
        while not self._stop.is_set():
            try:
                if not self.holds_lease(consumer.lease_name):
                    self._stop.wait(LEASE_CHECK_SECONDS)
                    continue
                if self._stop.is_set():
                    return
                self.consume_once(consumer)
                if self._states[consumer.queue_url].failing_since is not None:
                    self._stop.wait(failure_backoff)  # never a tight loop on a broken queue
            except Exception as exc:  # a store outage: the poll job reports it; try again later
                log.warning("s3events.consume_failed", queue=queue_name(consumer.queue_url),
                            error=strip_control(str(exc))[:300])
                self._stop.wait(failure_backoff)


def effective_queue(discovery: Any, source: Any) -> str | None:
    """The queue of one source: its own ``events_queue``, else ``discovery.events_queue``."""
    return getattr(source, "events_queue", None) or discovery.events_queue or None
