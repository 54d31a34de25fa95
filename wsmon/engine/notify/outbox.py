"""The outbox and its delivery: ``Notifier.emit`` renders an event once and enqueues one outbox
entry per channel whose filter takes it; ``Notifier.deliver`` (the engine's delivery job) sends
what is due, channel by channel.

The outbox gives at-least-once delivery with a dedup id; entries about the same subject (one
workset, one alert rule+subject) coalesce while they wait, so a channel that was down for an hour
gets the latest word on each subject rather than the whole backlog. A channel that fails is
*blocked* for a backoff that grows with its consecutive failures: while it is blocked no entry of
that channel is tried, so an outage costs one request per backoff period, not one per queued
message, and entries do not burn their attempts against a dead endpoint.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from wsmon.core.clock import Clock, SystemClock, isoformat
from wsmon.core.models import Alert, OutboxEntry, Workset
from wsmon.engine.notify.channels import TestResult, build_channels, test_channels
from wsmon.engine.notify.channels.base import Channel, ChannelError
from wsmon.engine.notify.message import EVENT_TYPES, Message, clean_line
from wsmon.engine.notify.render import Renderer

if TYPE_CHECKING:
    from wsmon.config.settings import NotifySettings, Settings
    from wsmon.engine.store import Store

log = structlog.get_logger(__name__)


HEALTH_NAMESPACE = "notify_health"

# A message-specific permanent failure (the receiver rejected this payload) is retried a few times
# only: it will not get better by waiting, but one flaky 4xx should not lose it.
PERMANENT_FAILURE_ATTEMPTS = 3


@dataclass
class ChannelReport:
    delivered: int = 0
    failed: int = 0
    dead: int = 0
    deferred: int = 0
    blocked_until: datetime | None = None
    last_error: str | None = None


@dataclass
class DeliveryReport:
    """One delivery pass, per channel; the totals are sums over the channels."""

    channels: dict[str, ChannelReport] = field(default_factory=dict)

    def channel(self, name: str) -> ChannelReport:
        return self.channels.setdefault(name, ChannelReport())

    @property
    def delivered(self) -> int:
        return sum(c.delivered for c in self.channels.values())

    @property
    def failed(self) -> int:
        return sum(c.failed for c in self.channels.values())

    @property
    def dead(self) -> int:
        return sum(c.dead for c in self.channels.values())

    @property
    def deferred(self) -> int:
        return sum(c.deferred for c in self.channels.values())


def _notify_settings(settings: Any) -> NotifySettings:
    return settings.notify if hasattr(settings, "notify") else settings


class Notifier:
    """Turns events into outbox entries and delivers them."""

    def __init__(self, settings: Settings, store: Store, *, clock: Clock | None = None,
                 channels: Mapping[str, Channel] | Iterable[Channel] | None = None) -> None:
        self.settings = settings
        self.ns = _notify_settings(settings)
        self.store = store
        self.clock = clock or getattr(store, "clock", None) or SystemClock()
        if channels is None:
            built = build_channels(settings, store, clock=self.clock)
        elif isinstance(channels, Mapping):
            built = dict(channels)
        else:
            built = {c.name: c for c in channels}
        self.channels: dict[str, Channel] = built
        self._secrets = [s for c in built.values() for s in c.secrets() if s]
        self.renderer = Renderer(self.ns, self.clock, self._secrets)
        self._blocked_until: dict[str, datetime] = {}
        self._consecutive_failures: dict[str, int] = {}

    # -- enqueue --------------------------------------------------------------------------------
    def emit(self, event_type: str, *, workset: Workset | None = None, alert: Alert | None = None,
             **details: Any) -> list[OutboxEntry]:
        """Queue ``event_type`` for every channel whose filter takes it. Never raises for a store
        or channel problem (a notification must not break the engine); returns what was queued."""
        if event_type not in EVENT_TYPES and event_type != "test":
            log.warning("notify_unknown_event", event_type=event_type)
        dedup_id = details.pop("dedup_id", None)
        coalesce_key = details.pop("coalesce_key", None)
        try:
            msg = self.renderer.render(event_type, workset=workset, alert=alert, **details)
        except Exception as exc:  # a rendering bug must not take the engine down
            log.error("notify_render_failed", event_type=event_type, error=type(exc).__name__)
            return []
        now = self.clock.now()
        if dedup_id is None:
            if alert is not None:
                dedup_id = f"{event_type}:{alert.alert_id}:{isoformat(alert.updated_at)}"
            elif workset is not None:
                dedup_id = (f"{event_type}:{workset.workset_id}:{isoformat(workset.state_changed_at)}:"
                            f"{workset.attempts}:{workset.fence}")
            else:
                dedup_id = f"{event_type}:{uuid.uuid4().hex}"
        if coalesce_key is None:
            if alert is not None:
                coalesce_key = f"alert:{alert.rule}:{alert.subject}"
            elif workset is not None:
                coalesce_key = f"workset:{workset.workset_id}"
            else:
                coalesce_key = f"event:{dedup_id}"
        msg.dedup_id = dedup_id
        queued: list[OutboxEntry] = []
        for name, channel in self.channels.items():
            if not channel.accepts(msg):
                continue
            entry = OutboxEntry(
                entry_id=uuid.uuid4().hex, channel=name, dedup_id=dedup_id, coalesce_key=coalesce_key,
                event_type=event_type, payload=msg.to_payload(), created_at=now, next_attempt_at=now,
            )
            try:
                if self.store.enqueue_notification(entry):
                    queued.append(entry)
            except Exception as exc:
                log.error("notify_enqueue_failed", channel=name, event_type=event_type,
                          error=clean_line(exc, self._secrets, 300))
        if queued:
            log.info("notify_queued", event_type=event_type, channels=[e.channel for e in queued])
        return queued

    # -- delivery -------------------------------------------------------------------------------
    def _backoff(self, attempts: int) -> float:
        base, cap = self.ns.backoff_base_seconds, self.ns.backoff_cap_seconds
        return min(cap, base * (2 ** max(0, attempts - 1)))

    def _record_health(self, name: str, ok: bool, error: str | None = None) -> None:
        now = self.clock.now()
        before = self._consecutive_failures.get(name)
        failures = 0 if ok else (before or 0) + 1
        self._consecutive_failures[name] = failures
        if ok and before == 0:
            return  # unchanged: spare the store a write per delivery
        try:
            previous = self.store.kv_get(HEALTH_NAMESPACE, name) or {}
            record = dict(previous)
            record.update({"ok": ok, "consecutive_failures": failures, "at": isoformat(now)})
            if ok:
                record["last_success_at"] = isoformat(now)
            else:
                record["last_error"] = error
                record["last_failure_at"] = isoformat(now)
            self.store.kv_put(HEALTH_NAMESPACE, name, record)
        except Exception as exc:
            log.warning("notify_health_write_failed", channel=name, error=type(exc).__name__)

    def deliver(self) -> DeliveryReport:
        """Send what is due, channel by channel. Never raises for a channel problem."""
        report = DeliveryReport()
        for name, channel in self.channels.items():
            self._deliver_channel(name, channel, report)
        self._dead_letter_orphans(report)
        return report

    def _deliver_channel(self, name: str, channel: Channel, report: DeliveryReport) -> None:
        now = self.clock.now()
        creport = report.channel(name)
        blocked = self._blocked_until.get(name)
        if blocked is not None and blocked > now:
            creport.blocked_until = blocked
            return
        try:
            due = self.store.due_notifications(now, limit=self.ns.batch_size, channel=name)
        except Exception as exc:
            log.warning("notify_outbox_unreadable", channel=name, error=type(exc).__name__)
            return
        for index, entry in enumerate(due):
            msg = Message.from_entry(entry)
            try:
                receipt = channel.send(msg)
            except Exception as exc:
                err = exc if isinstance(exc, ChannelError) else ChannelError(
                    f"{name}: unexpected {type(exc).__name__}")
                if not isinstance(exc, ChannelError):
                    log.error("notify_channel_bug", channel=name, error=type(exc).__name__)
                self._failed(name, entry, err, now, creport)
                if err.channel_wide:
                    creport.deferred += len(due) - index - 1
                    return
                continue
            self.store.mark_notification_delivered(entry.entry_id, self.clock.now(), as_read=entry)
            creport.delivered += 1
            self._blocked_until.pop(name, None)
            self._record_health(name, True)
            log.info("notify_delivered", channel=name, event_type=entry.event_type,
                     receipt=clean_line(receipt, self._secrets, 120), coalesced=entry.coalesced)

    def _failed(self, name: str, entry: OutboxEntry, err: ChannelError, now: datetime,
                creport: ChannelReport) -> None:
        attempts = entry.attempts + 1
        detail = clean_line(err.detail, self._secrets, 500)
        self._record_health(name, False, detail)
        give_up = attempts >= self.ns.max_attempts or (err.permanent and attempts >= PERMANENT_FAILURE_ATTEMPTS)
        delay = self._backoff(attempts)
        if err.channel_wide:
            channel_delay = self._backoff(self._consecutive_failures.get(name, 1))
            if err.retry_after is not None:
                channel_delay = max(channel_delay, err.retry_after)
            self._blocked_until[name] = now + timedelta(seconds=channel_delay)
            creport.blocked_until = self._blocked_until[name]
            delay = max(delay, channel_delay)
        if err.retry_after is not None:
            delay = max(delay, err.retry_after)
        next_at = None if give_up else now + timedelta(seconds=delay)
        try:
            self.store.mark_notification_failed(entry.entry_id, detail, next_at)
        except Exception as exc:
            log.warning("notify_mark_failed_failed", channel=name, error=type(exc).__name__)
        creport.last_error = detail
        if give_up:
            creport.dead += 1
            log.error("notify_dead", channel=name, event_type=entry.event_type, attempts=attempts, error=detail)
        else:
            creport.failed += 1
            log.warning("notify_failed", channel=name, event_type=entry.event_type, attempts=attempts,
                        retry_in_seconds=round(delay, 1), error=detail)

    def _dead_letter_orphans(self, report: DeliveryReport) -> None:
        """Entries for a channel that is no longer configured would wait forever: give them up."""
        now = self.clock.now()
        try:
            due = self.store.due_notifications(now, limit=self.ns.batch_size)
        except Exception:
            return
        for entry in due:
            if entry.channel not in self.channels:
                self.store.mark_notification_failed(
                    entry.entry_id, f"channel {entry.channel!r} is not configured any more", None)
                report.channel(entry.channel).dead += 1

    # -- operator test ----------------------------------------------------------------------------
    def send_test(self, channel: str | None = None, *, actor: str = "wsmon") -> list[TestResult]:
        """Send a test message straight through each channel (not via the outbox)."""
        return test_channels(self.channels, channel, actor=actor, clock=self.clock)

    def close(self) -> None:
        for channel in self.channels.values():
            try:
                channel.close()
            except Exception:
                pass


def outbox_summary(store: Store) -> dict[str, dict[str, int]]:
    """Counts per channel and status (for the dashboard and ``wsmon notify``)."""
    out: dict[str, dict[str, int]] = {}
    for entry in store.list_notifications(limit=5000):
        out.setdefault(entry.channel, {}).setdefault(entry.status, 0)
        out[entry.channel][entry.status] += 1
    return out
