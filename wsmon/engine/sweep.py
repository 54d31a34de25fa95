"""The sweep job: leases expired by more than the clock skew go back to ready (or are re-adopted when
they are this monitor's own), due retries go back to ready, a retry decision an engine died in the
middle of is finished, operators' force releases are notified, and once an hour old notifications,
resolved alerts and operator actions are deleted (retention)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from wsmon.core.clock import isoformat, parse_iso
from wsmon.core.models import RECENT_EVENTS_KEPT, Workset, WorksetState
from wsmon.core.textsafe import strip_control
from wsmon.engine.store import LeaseLost, StateConflict, StoreError, WorksetNotFound
from wsmon.engine.store.base import parse_force_release_reason

if TYPE_CHECKING:
    from wsmon.config.settings import Settings
    from wsmon.core.clock import Clock
    from wsmon.engine.recent_changes import ChangeReads
    from wsmon.engine.store import Store

log = structlog.get_logger(__name__)

S = WorksetState
HALF_WRITTEN_RETRY_SECONDS = 60.0  # an `error` left between the two writes of a retry decision
# ... is only looked for this often: it is a minute old before it counts, and the look is a store
# Query that every sweep (every 3 s in the demo) paid for nothing
HALF_WRITTEN_LOOK_EVERY = timedelta(seconds=HALF_WRITTEN_RETRY_SECONDS / 2)
RETENTION_EVERY = timedelta(hours=1)  # how often the sweep prunes old notifications and alerts
# Operators' force releases are found in the store's history (they happen on any host) and
# notified by one engine per store; the watermark of that look survives restarts in the kv store.
FORCE_RELEASE_NOTICE_LEASE = "force-release-notifier"
FORCE_RELEASE_KV = ("engine", "force_release_watermark")
FORCE_RELEASE_FIRST_LOOKBACK = timedelta(minutes=10)  # how far back an engine's first ever look goes
FORCE_RELEASE_MAX_LOOKBACK = timedelta(days=1)  # after a long outage, older releases are old news
LEASE_RECOVERED_REASON = "recovered: lease of"  # the engine's own force release (not an operator's)
# The look for operators' force releases reads every state's partition of the change index (one
# Query per state); run on every sweep (every 3 s in the demo) it was most of the sweep's cost and
# the sweep overran. A notice of an operator's action may wait this long; the recovery may not.
FORCE_RELEASE_NOTICE_EVERY = timedelta(seconds=30)


def sweep_interval_seconds(settings: Settings) -> float:
    """How often the sweep runs: as often as the poll or the heartbeat, at most once a second."""
    return max(1.0, min(settings.discovery.poll_interval_seconds, settings.store.heartbeat_seconds))


class SweepHost(Protocol):
    """What the sweep uses of the engine it sweeps for."""

    settings: Settings
    store: Store
    clock: Clock
    monitor_id: str
    notifier: Any
    recent_changes: ChangeReads

    @property
    def active_worksets(self) -> list[str]: ...

    @property
    def claiming(self) -> bool: ...

    def _adopt(self, ws: Workset) -> bool: ...

    def _emit(self, event_type: str, workset: Workset | None = None, **details: Any) -> list[Any]: ...

    def _incr(self, name: str, value: float = 1.0, **dims: Any) -> None: ...


class Sweeper:
    """The sweep of one engine; remembers when retention last ran."""

    def __init__(self, engine: SweepHost) -> None:
        self.engine = engine
        # fixed for the engine's life
        self.settings, self.store, self.clock = engine.settings, engine.store, engine.clock
        self.monitor_id, self.notifier = engine.monitor_id, engine.notifier
        self.changes = engine.recent_changes
        self._last_run: datetime | None = None
        self._last_notice_look: datetime | None = None
        self._last_half_written_look: datetime | None = None

    def sweep(self) -> dict[str, list[str]]:
        """Recover expired leases; move due retries back to ready."""
        now = self.clock.now()
        result: dict[str, list[str]] = {"recovered": [], "adopted": [], "due": [],
                                        "force_released": []}
        active = set(self.engine.active_worksets)
        for ws in self.store.expired_leases(now):
            if ws.workset_id in active:
                continue
            if ws.lock_owner == self.monitor_id and self.engine.claiming:
                if self.engine._adopt(ws):
                    result["adopted"].append(ws.workset_id)
                continue
            try:
                self.store.force_release(
                    ws.workset_id, self.monitor_id,
                    f"{LEASE_RECOVERED_REASON} {ws.lock_owner} expired at "
                    f"{ws.lock_expires_at:%Y-%m-%d %H:%M:%S}Z")
            except (StateConflict, LeaseLost, WorksetNotFound):
                continue
            self.engine._incr("WorksetStateTransitions", State=S.READY.value)
            result["recovered"].append(ws.workset_id)
            log.warning("lease_recovered", workset=ws.workset_id, owner=ws.lock_owner)
        for ws in list(self.store.iter_worksets(state=S.RETRYING)):
            if ws.retry_after is None or ws.retry_after <= now:
                try:
                    self.store.update_state(ws.workset_id, S.READY, "retry due", self.monitor_id,
                                            expected_state=S.RETRYING)
                except (StateConflict, WorksetNotFound):
                    continue
                self.engine._incr("WorksetStateTransitions", State=S.READY.value)
                result["due"].append(ws.workset_id)
        stale = now - timedelta(seconds=HALF_WRITTEN_RETRY_SECONDS)
        half_written_due = (self._last_half_written_look is None
                            or now - self._last_half_written_look >= HALF_WRITTEN_LOOK_EVERY)
        if half_written_due:
            self._last_half_written_look = now
        for ws in list(self.store.iter_worksets(state=S.ERROR)) if half_written_due else ():
            # an engine died between "error" and "retrying": finish its decision
            if ws.retry_after is not None and ws.updated_at < stale:
                try:
                    self.store.update_state(ws.workset_id, S.RETRYING,
                                            "retry decided before an engine restart",
                                            self.monitor_id, expected_state=S.ERROR)
                except (StateConflict, WorksetNotFound):
                    continue
        try:
            if (self._last_notice_look is None
                    or now - self._last_notice_look >= FORCE_RELEASE_NOTICE_EVERY):
                self._last_notice_look = now
                result["force_released"] = [wid for wid, _ in self.notice_force_releases()]
        except StoreError as exc:  # the watermark stays: the next sweep looks again
            log.warning("force_release_notice_failed", error=strip_control(str(exc))[:300])
        try:
            self.prune_history()
        except StoreError as exc:  # worksets first: a failed prune waits for the next hour
            log.warning("history_prune_failed", error=strip_control(str(exc))[:300])
        return result

    def notice_force_releases(self) -> list[tuple[str, int]]:
        """Notify ``lock_force_released`` for every operator force release recorded since the
        last look; returns (workset, event seq) of those newly notified.

        Operators release through the store (dashboard on any host, ``wsmon release``), never
        through an engine, so the engine reads it back from the history. One engine per store
        looks (a named lease); the dedup id per (workset, event seq) keeps a restart or a lease
        handover from notifying twice."""
        if not self.notifier.channels:
            return []  # nobody to tell: spare the store the reads
        lease_seconds = max(90.0, 3 * sweep_interval_seconds(self.settings))
        if self.store.acquire_named_lease(FORCE_RELEASE_NOTICE_LEASE, self.monitor_id,
                                          lease_seconds) is None:
            return []
        stored = self.store.kv_get(*FORCE_RELEASE_KV)
        now = self.clock.now()
        since = (max(parse_iso(stored), now - FORCE_RELEASE_MAX_LOOKBACK) if stored
                 else now - FORCE_RELEASE_FIRST_LOOKBACK)
        changed, watermark = self.changes.changed_since(since)
        found: list[tuple[str, int]] = []
        for ws in changed:
            for event in self._events_since(ws, since):
                parsed = parse_force_release_reason(event)
                if parsed is None:
                    continue
                reason, holder = parsed
                if reason.startswith(LEASE_RECOVERED_REASON):
                    continue  # an engine recovering a dead holder's lease: the sweep logs that
                queued = self.engine._emit("lock_force_released", ws, actor=event.actor,
                                           previous_holder=holder, reason=reason or None,
                                           dedup_id=f"lock_force_released:{ws.workset_id}:{event.seq}")
                if not queued:
                    continue  # already notified (seen again inside the watermark's lag), or no channel
                found.append((ws.workset_id, event.seq))
                log.info("force_release_noticed", workset=strip_control(ws.workset_id),
                         actor=strip_control(event.actor), previous_holder=strip_control(holder or ""))
        self.store.kv_put(*FORCE_RELEASE_KV, isoformat(watermark))
        return found

    def _events_since(self, ws: Workset, since: datetime) -> list[Any]:
        recent = ws.recent_events
        if (len(recent) >= RECENT_EVENTS_KEPT and min(e.seq for e in recent) > 1
                and min(e.at for e in recent) >= since):
            # busier than the inline history: what happened before it is only in the full one
            recent = self.store.events(ws.workset_id)
        return [e for e in recent if e.at >= since]

    def prune_history(self) -> dict[str, int] | None:
        """At most once per ``RETENTION_EVERY`` (by the engine's clock): delete delivered and
        given-up notifications older than ``notify.outbox_retention_days``, alerts resolved
        more than ``alerts.resolved_retention_days`` ago and operator actions (the audit trail)
        older than ``store.audit_retention_days``, so the store stops growing with age.
        Returns what was removed, or None when it was not time yet."""
        now = self.clock.now()
        if self._last_run is not None and now - self._last_run < RETENTION_EVERY:
            return None
        self._last_run = now  # also on failure: retry next hour, not every sweep
        s = self.settings
        removed = {
            "notifications": self.store.prune_notifications(
                now - timedelta(days=s.notify.outbox_retention_days)),
            "alerts": self.store.prune_alerts(
                now - timedelta(days=s.alerts.resolved_retention_days)),
            "operator_actions": self.store.prune_operator_actions(
                now - timedelta(days=s.store.audit_retention_days)),
        }
        if any(removed.values()):
            log.info("history_pruned", **removed,
                     outbox_retention_days=s.notify.outbox_retention_days,
                     resolved_retention_days=s.alerts.resolved_retention_days,
                     audit_retention_days=s.store.audit_retention_days)
        return removed

