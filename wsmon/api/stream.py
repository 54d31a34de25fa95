"""``GET /events/stream``: workset and alert changes as Server-Sent Events.

One ``EventHub`` per server watches the store (``worksets_changed_since`` and the open alerts,
every ``api.stream_poll_seconds``) in a thread and hands each change to every connected client.
Event ids are ``<hub epoch>-<sequence>``; the last ``api.stream_history`` events are kept, so a
client that reconnects with ``Last-Event-ID`` gets exactly what it missed, or a ``reset`` event
(re-read over REST) when that is no longer known. Each client has its own buffer of at most
``api.stream_client_buffer`` events: a client that stops reading is disconnected when it fills,
and nothing it did holds up anyone else or grows without bound.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog

from wsmon.core.clock import Clock
from wsmon.core.models import Alert, Workset
from wsmon.engine.store.base import Store

log = structlog.get_logger("wsmon.api")

KEEPALIVE_SECONDS = 15.0
_SEEN_KEPT = 20_000  # last published version per record, to skip repeats the watermark brings back


@dataclass(frozen=True)
class StreamEvent:
    seq: int
    kind: str  # "workset" | "alert"
    data: dict[str, Any]


@dataclass(eq=False)
class Subscriber:
    loop: asyncio.AbstractEventLoop
    limit: int
    pending: deque[StreamEvent] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    dropped: bool = False


def workset_event(ws: Workset) -> dict[str, Any]:
    """What a stream client needs to update a row; the full record is GET /worksets/{id}."""
    return {
        "workset_id": ws.workset_id, "state": ws.state.value, "priority": ws.priority.value,
        "customer_id": ws.customer_id, "cluster_name": ws.cluster_name, "fence": ws.fence,
        "lock_owner": ws.lock_owner if ws.state.holds_lease else None, "attempts": ws.attempts,
        "error_code": ws.error_code, "schedule_reason": ws.schedule_reason,
        "s3_missing": ws.s3_missing, "state_changed_at": ws.state_changed_at.isoformat(),
        "updated_at": ws.updated_at.isoformat(),
    }


def alert_event(alert: Alert) -> dict[str, Any]:
    return alert.model_dump(mode="json")


class EventHub:
    def __init__(self, store: Store, clock: Clock, *, poll_seconds: float = 0.5,
                 history: int = 1000, client_buffer: int = 256) -> None:
        self.store = store
        self.clock = clock
        self.poll_seconds = poll_seconds
        self.client_buffer = client_buffer
        self.epoch = uuid.uuid4().hex[:8]
        self._history: deque[StreamEvent] = deque(maxlen=history)
        self._seq = 0
        self._lock = threading.Lock()
        self._subscribers: set[Subscriber] = set()
        self._seen: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._watermark: datetime | None = None
        self._alerts_since: datetime | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.dropped_clients = 0
        self.published = 0
        self.last_error: str | None = None

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        now = self.clock.now()
        self._watermark = now  # changes from now on; the past is what GET /worksets is for
        self._alerts_since = now
        self._remember_open_alerts()
        self._thread = threading.Thread(target=self._run, name="wsmon-api-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.last_error is None

    @property
    def status(self) -> str:
        if self.last_error:
            return f"store poll failing ({self.last_error})"
        return f"{len(self._subscribers)} client(s)"

    @property
    def clients(self) -> int:
        return len(self._subscribers)

    # -- watching the store -----------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.poll_once()
                self.last_error = None
            except Exception as exc:  # noqa: BLE001 - the store may be down for a while; keep watching
                self.last_error = type(exc).__name__
                log.warning("api.stream_poll_failed", error=type(exc).__name__)

    def _remember_open_alerts(self) -> None:
        try:
            for alert in self.store.list_alerts():
                self._changed(("alert", alert.alert_id), json.dumps(alert_event(alert), sort_keys=True))
        except Exception:  # noqa: BLE001, S110 - noticed again on the first poll
            pass

    def _changed(self, key: tuple[str, str], version: str) -> bool:
        if self._seen.get(key) == version:
            self._seen.move_to_end(key)
            return False
        self._seen[key] = version
        self._seen.move_to_end(key)
        while len(self._seen) > _SEEN_KEPT:
            self._seen.popitem(last=False)
        return True

    def poll_once(self) -> int:
        """Publish what changed since the last look; returns how many events."""
        changed, self._watermark = self.store.worksets_changed_since(self._watermark)
        events = []
        for ws in sorted(changed, key=lambda w: (w.updated_at, w.workset_id)):
            data = workset_event(ws)
            # what a client sees, not the timestamp alone: two writes within one clock tick differ
            if self._changed(("workset", ws.workset_id), json.dumps(data, sort_keys=True)):
                events.append(("workset", data))
        since = self._alerts_since
        self._alerts_since = self.clock.now() - timedelta(seconds=max(5.0, 4 * self.poll_seconds))
        for alert in sorted(self.store.list_alerts(resolved_since=since), key=lambda a: a.updated_at):
            data = alert_event(alert)
            if self._changed(("alert", alert.alert_id), json.dumps(data, sort_keys=True)):
                events.append(("alert", data))
        for kind, data in events:
            self.publish(kind, data)
        return len(events)

    # -- fan-out ----------------------------------------------------------------------------
    def publish(self, kind: str, data: dict[str, Any]) -> StreamEvent:
        with self._lock:
            self._seq += 1
            event = StreamEvent(self._seq, kind, data)
            self._history.append(event)
            subscribers = list(self._subscribers)
        self.published += 1
        for sub in subscribers:
            try:
                sub.loop.call_soon_threadsafe(self._deliver, sub, event)
            except RuntimeError:  # that client's loop is gone (server shutting down)
                with self._lock:
                    self._subscribers.discard(sub)
        return event

    def _deliver(self, sub: Subscriber, event: StreamEvent) -> None:
        if sub.dropped:
            return
        if len(sub.pending) >= sub.limit:
            # a client this far behind is not reading; let it go, it resumes with Last-Event-ID
            sub.dropped = True
            sub.pending.clear()
            with self._lock:
                self._subscribers.discard(sub)
            self.dropped_clients += 1
            log.info("api.stream_client_dropped", buffered=sub.limit)
        else:
            sub.pending.append(event)
        sub.wake.set()

    def event_id(self, event: StreamEvent) -> str:
        return f"{self.epoch}-{event.seq}"

    def subscribe(self, last_event_id: str | None) -> tuple[Subscriber, list[StreamEvent], bool]:
        """A new client: its buffer, the events it missed, and whether it must re-read (reset)."""
        sub = Subscriber(asyncio.get_running_loop(), self.client_buffer)
        with self._lock:
            self._subscribers.add(sub)
            history = list(self._history)
            current = self._seq
        if not last_event_id:
            return sub, [], False
        epoch, _, seq_text = last_event_id.strip().partition("-")
        if epoch != self.epoch or not seq_text.isdigit() or int(seq_text) > current:
            return sub, [], True  # from another server run, or made up
        seq = int(seq_text)
        if seq < current and (not history or history[0].seq > seq + 1):
            return sub, [], True  # older than what is kept
        return sub, [e for e in history if e.seq > seq], False

    def unsubscribe(self, sub: Subscriber) -> None:
        with self._lock:
            self._subscribers.discard(sub)


def _frame(event_id: str | None, kind: str, data: dict[str, Any]) -> str:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def event_frames(hub: EventHub, last_event_id: str | None,
                       is_disconnected: Any) -> AsyncIterator[str]:
    sub, missed, reset = hub.subscribe(last_event_id)
    try:
        yield f"retry: 2000\n: wsmon event stream {hub.epoch}\n\n"
        if reset:
            yield _frame(None, "reset", {"reason": "the events since Last-Event-ID are no longer "
                                                   "kept; re-read the worksets and alerts"})
        for event in missed:
            yield _frame(hub.event_id(event), event.kind, event.data)
        while True:
            try:
                await asyncio.wait_for(sub.wake.wait(), timeout=KEEPALIVE_SECONDS)
            except asyncio.TimeoutError:
                if await is_disconnected():
                    return
                yield ": keepalive\n\n"
                continue
            sub.wake.clear()
            if sub.dropped:
                return
            while sub.pending:
                event = sub.pending.popleft()
                yield _frame(hub.event_id(event), event.kind, event.data)
    finally:
        hub.unsubscribe(sub)
