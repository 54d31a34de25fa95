"""The store contract: the one seam between the engine, the dashboard and the CLI.

Every backend implements ``Store``. What an operation may do (the state machine, the claim rule,
the still-held check, ack/resolve/silence rules, roll-ups, the cursor format) lives in
``rules.py`` and only there; a backend reads, writes under a condition and maps its errors.
The errors are in ``errors.py``; both are re-exported here.

Contract, in short (tests/contract/ checks all of it against every backend):

* Every state change is one conditional write naming the state it expects and, while a lease is
  held, the lease's fence. A write whose condition fails changes nothing.
* A claim (``acquire_lock``) is exactly one conditional write: the workset is ``ready`` and unlocked,
  or its lease expired more than ``max_clock_skew`` ago. It sets owner and expiry and increments
  ``fence``.
* A holder whose fence has moved on (the lease expired and was re-claimed, or an operator
  force-released it) gets ``LeaseLost`` from every write and changes nothing.
* Every transition appends an ``Event``; the workset keeps only the last ``RECENT_EVENTS_KEPT``
  inline, ``events()`` returns the whole history in order.
* States and priorities are accepted as the enum or its string value.
* Workset ids are stored exactly as given (spaces, unicode, brackets, escape characters).
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import structlog

from wsmon.core.clock import Clock, SystemClock
from wsmon.core.models import (
    Alert,
    AlertState,
    ClusterStatus,
    Event,
    Lease,
    MetricSample,
    MonitorInfo,
    NamedLease,
    OperatorAction,
    OutboxEntry,
    Page,
    Priority,
    QueueStats,
    Silence,
    Workset,
    WorksetState,
)
from wsmon.engine.store import rules
from wsmon.engine.store.errors import (
    ActiveAlertExists,
    AlertChanged,
    AlertNotFound,
    CorruptStore,
    IllegalTransition,
    InvalidCursor,
    LeaseLost,
    LockChanged,
    StateConflict,
    StoreError,
    StoreNotInitialized,
    StoreUnavailable,
    WorksetNotFound,
)
from wsmon.engine.store.rules import (
    FORCE_RELEASE_REASON_PREFIX,
    TRANSITIONS,
    check_fields,
    check_transition,
    force_release_reason,
    parse_force_release_reason,
)

log = structlog.get_logger(__name__)

#: How often a read-modify-write of an alert is retried when another writer got there first.
ALERT_CHANGE_ATTEMPTS = 6


class Store(abc.ABC):
    """The state store. Thread-safe: one instance may be shared by the engine's worker threads."""

    #: how long after a lease's expiry another owner may take it (clocks on hosts differ)
    max_clock_skew: timedelta
    clock: Clock

    def __init__(self, *, clock: Clock | None = None, max_clock_skew: float = 30.0,
                 default_lease_seconds: float = 300.0) -> None:
        self.clock = clock or SystemClock()
        self.max_clock_skew = timedelta(seconds=max_clock_skew)
        self.default_lease_seconds = default_lease_seconds

    # -- identity ---------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def url(self) -> str:
        """The URL the store was opened with, secrets removed (shown in the dashboard header)."""

    @abc.abstractmethod
    def init_schema(self) -> list[str]:
        """Create tables/indexes if missing (idempotent, waits until usable).

        Returns a human line per thing created or found ("created table wsmon-worksets", ...).
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    # -- worksets ---------------------------------------------------------------------------
    @abc.abstractmethod
    def register_workset(self, workset_id: str, bucket: str, prefix: str,
                         priority: Priority | str = "normal", metadata: dict[str, Any] | None = None,
                         customer_id: str | None = None, *, state: WorksetState | str = "ready",
                         state_at: datetime | None = None, actor: str = "wsmon",
                         reason: str = "registered", **fields: Any) -> bool:
        """Create the record; False (and no change) if the id exists.

        ``state``/``state_at`` let S3 import register a folder that only carries a terminal
        sentinel in that state with its sentinel's timestamp. ``fields`` are MUTABLE_WORKSET_FIELDS.
        Appends the first event (from_state None).
        """

    @abc.abstractmethod
    def get_workset(self, workset_id: str) -> Workset | None: ...

    @abc.abstractmethod
    def list_worksets(self, state: WorksetState | str | None = None,
                      priority: Priority | str | None = None, customer_id: str | None = None,
                      limit: int = 500, cursor: str | None = None) -> Page:
        """One page, ordered by (priority rank, created_at, workset_id). ``cursor`` is opaque."""

    def iter_worksets(self, state: WorksetState | str | None = None,
                      priority: Priority | str | None = None,
                      customer_id: str | None = None, page_size: int = 1000) -> Iterable[Workset]:
        cursor: str | None = None
        while True:
            page = self.list_worksets(state=state, priority=priority, customer_id=customer_id,
                                      limit=page_size, cursor=cursor)
            yield from page.items
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    @abc.abstractmethod
    def worksets_changed_since(self, since: datetime | None) -> tuple[list[Workset], datetime]:
        """Worksets whose record changed at or after ``since`` (all when None), and a watermark
        to pass next time. Drives the dashboard's diffed refresh without listing everything.
        The watermark trails "now" a little so a write committed late is never skipped."""

    @abc.abstractmethod
    def queue_stats(self, states: Iterable[WorksetState] | None = None) -> QueueStats:
        """Worksets per state and priority. With ``states``, only those are counted (the others
        read as zero): a caller that needs the ready queue does not pay for the finished ones."""

    @abc.abstractmethod
    def update_state(self, workset_id: str, new_state: WorksetState | str, reason: str,
                     actor: str, lease: Lease | None = None,
                     expected_state: WorksetState | str | None = None, **fields: Any) -> Workset:
        """One conditional write: state (and ``fields``) change only if the record is in
        ``expected_state`` (when given) and, with ``lease``, the fence still matches.

        Leaving locked/in_progress clears the lease fields. ``locked`` is reached only through
        ``acquire_lock`` (``StoreError`` here). Raises ``IllegalTransition``, ``StateConflict``,
        ``LeaseLost``, ``WorksetNotFound``.
        """

    @abc.abstractmethod
    def update_fields(self, workset_id: str, *, actor: str = "wsmon", lease: Lease | None = None,
                      expected_state: WorksetState | str | None = None, **fields: Any) -> Workset:
        """Change MUTABLE_WORKSET_FIELDS without a transition (no event), same conditions."""

    @abc.abstractmethod
    def set_priority(self, workset_id: str, priority: Priority | str, actor: str,
                     reason: str = "") -> Workset:
        """Change priority; recorded as an event (from_state == to_state)."""

    # -- leases -----------------------------------------------------------------------------
    @abc.abstractmethod
    def acquire_lock(self, workset_id: str, owner_id: str,
                     lease_seconds: float | None = None) -> Lease | None:
        """The claim. None if someone else holds it, it is not ready, or it does not exist.

        Taking over a lease that expired more than ``max_clock_skew`` ago keeps the workset's
        state (locked or in_progress) and records an event naming the previous owner."""

    @abc.abstractmethod
    def renew_lock(self, lease: Lease, lease_seconds: float | None = None) -> Lease:
        """Heartbeat: extend expiry, same fence. ``LeaseLost`` if the fence moved on."""

    @abc.abstractmethod
    def release_lock(self, lease: Lease, reason: str = "released") -> Workset:
        """The holder gives the workset back: locked/in_progress -> ready. ``LeaseLost`` if stale."""

    @abc.abstractmethod
    def adopt_lock(self, lease: Lease, lease_seconds: float | None = None) -> Lease:
        """Re-adopt after a restart: same owner, live or expired-but-unclaimed lease; the fence
        is bumped so any older process of this owner is fenced out. ``LeaseLost`` otherwise."""

    @abc.abstractmethod
    def force_release(self, workset_id: str, actor: str, reason: str, *,
                      expected_fence: int | None = None) -> Workset:
        """The operator's release: bump the fence, back to ready, record an event whose reason
        is ``force_release_reason(...)``.

        ``expected_fence``: the fence the operator was shown; if the lease changed hands since
        (the fence differs), raise ``LockChanged`` and change nothing.
        ``IllegalTransition`` from a state that cannot go back to ready (i.e. ready itself)."""

    @abc.abstractmethod
    def expired_leases(self, now: datetime | None = None) -> list[Workset]:
        """Worksets in locked/in_progress whose lease expired more than ``max_clock_skew`` ago."""

    # -- history ----------------------------------------------------------------------------
    @abc.abstractmethod
    def events(self, workset_id: str, limit: int | None = None) -> list[Event]:
        """The whole history in order (or the first ``limit``)."""

    # -- monitors ---------------------------------------------------------------------------
    @abc.abstractmethod
    def record_monitor_heartbeat(self, monitor_id: str, host: str, pid: int, version: str,
                                 role: str = "engine", details: dict[str, Any] | None = None,
                                 started_at: datetime | None = None) -> MonitorInfo: ...

    @abc.abstractmethod
    def list_monitors(self) -> list[MonitorInfo]: ...

    @abc.abstractmethod
    def remove_monitor(self, monitor_id: str) -> None:
        """A clean shutdown says goodbye so the dashboard does not show it as stale."""

    # -- named leases (e.g. which engine polls a given S3 source) ---------------------------
    @abc.abstractmethod
    def acquire_named_lease(self, name: str, owner_id: str,
                            lease_seconds: float) -> NamedLease | None:
        """Claim, or renew if ``owner_id`` already holds it (same fence on renew)."""

    @abc.abstractmethod
    def release_named_lease(self, lease: NamedLease) -> None: ...

    @abc.abstractmethod
    def get_named_lease(self, name: str) -> NamedLease | None: ...

    # -- small key/value state the engine keeps across restarts (ETag cache, index hashes) ---
    @abc.abstractmethod
    def kv_get(self, namespace: str, key: str) -> Any | None:
        """JSON-compatible value or None."""

    @abc.abstractmethod
    def kv_put(self, namespace: str, key: str, value: Any) -> None: ...

    @abc.abstractmethod
    def kv_put_many(self, namespace: str, items: Mapping[str, Any]) -> None: ...

    @abc.abstractmethod
    def kv_get_all(self, namespace: str) -> dict[str, Any]: ...

    @abc.abstractmethod
    def kv_delete(self, namespace: str, key: str) -> None: ...

    # -- clusters (written by the engine, read by the dashboard) ----------------------------
    @abc.abstractmethod
    def put_cluster_status(self, status: ClusterStatus) -> None: ...

    @abc.abstractmethod
    def list_cluster_status(self) -> list[ClusterStatus]: ...

    # -- alerts -----------------------------------------------------------------------------
    @abc.abstractmethod
    def put_alert(self, alert: Alert, expected_updated_at: datetime | None = None) -> Alert:
        """Create or replace. With ``expected_updated_at`` conditional on the stored
        ``updated_at`` (optimistic concurrency: ``AlertChanged`` when it differs or the alert is
        gone). ``ActiveAlertExists`` when another not-resolved alert has the same (rule, subject)."""

    @abc.abstractmethod
    def get_alert(self, alert_id: str) -> Alert | None: ...

    @abc.abstractmethod
    def find_active_alert(self, rule: str, subject: str) -> Alert | None:
        """The not-resolved alert for (rule, subject), if any: the dedup key."""

    @abc.abstractmethod
    def list_alerts(self, states: Iterable[AlertState | str] | None = None,
                    resolved_since: datetime | None = None, limit: int = 500) -> list[Alert]:
        """Not-resolved alerts in ``states`` (all not-resolved when None), plus resolved ones
        newer than ``resolved_since`` when given; newest first."""

    def ack_alert(self, alert_id: str, actor: str, note: str | None = None,
                  expires_at: datetime | None = None) -> Alert:
        """firing/pending -> acknowledged (idempotent for an acknowledged alert: updates the note)."""
        return self._change_alert(alert_id, lambda alert, now: rules.acknowledge(
            alert, actor, note, expires_at, now))

    def resolve_alert(self, alert_id: str, actor: str, reason: str = "") -> Alert:
        def change(alert: Alert, now: datetime) -> Alert:
            new = rules.resolve(alert, actor, now)
            if new is not alert:
                log.info("alert_resolved", alert_id=alert_id, actor=actor, reason=reason)
            return new

        return self._change_alert(alert_id, change)

    def _change_alert(self, alert_id: str, change: Any) -> Alert:
        """Read, apply the rule, write conditional on what was read (``put_alert`` with
        ``expected_updated_at``); when another writer got there first (``AlertChanged``), read
        again and re-apply, so the rule always decides on the current alert."""
        for _ in range(ALERT_CHANGE_ATTEMPTS):
            alert = self.get_alert(alert_id)
            if alert is None:
                raise AlertNotFound(alert_id)
            new = change(alert, self.clock.now())
            if new is alert:
                return alert
            try:
                return self.put_alert(new, expected_updated_at=alert.updated_at)
            except AlertChanged:
                continue
        raise StoreUnavailable(f"alert {alert_id!r} kept changing under us; try again")

    @abc.abstractmethod
    def silence(self, actor: str, ends_at: datetime, rule: str | None = None,
                subject: str | None = None, reason: str = "",
                starts_at: datetime | None = None) -> Silence: ...

    @abc.abstractmethod
    def list_silences(self, active_at: datetime | None = None) -> list[Silence]:
        """All silences, or only those active at ``active_at``."""

    @abc.abstractmethod
    def delete_silence(self, silence_id: str, actor: str) -> None: ...

    # -- notification outbox ----------------------------------------------------------------
    @abc.abstractmethod
    def enqueue_notification(self, entry: OutboxEntry) -> bool:
        """Add; False if (channel, dedup_id) already exists. A pending entry with the same
        (channel, coalesce_key) is replaced by this one and ``coalesced`` counts the folded ones."""

    @abc.abstractmethod
    def due_notifications(self, now: datetime, limit: int = 100,
                          channel: str | None = None) -> list[OutboxEntry]:
        """Pending entries with ``next_attempt_at <= now``, oldest first."""

    @abc.abstractmethod
    def mark_notification_delivered(self, entry_id: str, at: datetime, *,
                                    as_read: OutboxEntry | None = None) -> None:
        """Record the delivery. ``as_read`` is the entry as the deliverer read it
        (``due_notifications``): a backend may write from it instead of reading the entry
        again; a stale copy costs that read after all, never a lost change."""

    @abc.abstractmethod
    def mark_notification_failed(self, entry_id: str, error: str, next_attempt_at: datetime | None,
                                 ) -> None:
        """Count an attempt; ``next_attempt_at`` None means give up (status dead)."""

    @abc.abstractmethod
    def list_notifications(self, status: str | None = None, limit: int = 500,
                           since: datetime | None = None) -> list[OutboxEntry]:
        """Entries (of ``status`` when given). Without ``since``: oldest first by ``created_at``.

        With ``since``: only entries whose last activity is at or after it, NEWEST activity
        first, so a caller asking for "the last hour" sees the recent ones however many older
        ones there are. An entry's last activity is when it became delivered (``delivered_at``)
        or was given up (the store's clock when it went dead) and, while pending, its
        ``next_attempt_at``; never earlier than ``created_at``."""

    @abc.abstractmethod
    def prune_notifications(self, before: datetime) -> int:
        """Delete delivered and dead entries whose last activity (see ``list_notifications``) is
        older than ``before``; returns how many entries. Pending entries are never touched.

        Dedup records go with their entry, never earlier: the record of an entry, and those of
        the entries that were coalesced into it, are deleted together with it. So a dedup id
        is remembered for as long as the notification carrying it is pending, and for the whole
        retention after it was delivered or given up; the producers only ever re-emit an id
        when an engine re-processes a transition it already saw (a restart, a race between two
        engines), which happens within minutes, far inside any retention. Once pruned, the
        same id is accepted again. Coalescing guards of pruned entries go too."""

    @abc.abstractmethod
    def prune_alerts(self, before: datetime) -> int:
        """Delete resolved alerts whose ``resolved_at`` (and last change, ``updated_at``) is
        older than ``before``; returns how many. Alerts that are not resolved (pending, firing,
        acknowledged) are never touched."""

    # -- operator actions (the audit trail) ----------------------------------------------------
    @abc.abstractmethod
    def record_operator_action(self, entry: OperatorAction) -> None:
        """Append one entry to the audit trail (``entry.action_id`` unique; writing the same id
        again replaces it)."""

    @abc.abstractmethod
    def list_operator_actions(self, since: datetime | None = None, until: datetime | None = None,
                              limit: int = rules.OPERATOR_ACTIONS_LIMIT,
                              workset_id: str | None = None) -> list[OperatorAction]:
        """Entries with ``at`` in [since, until), NEWEST first (ties by ``action_id``, later
        first), at most ``limit``; only those whose target is ``workset_id`` when given. Reads
        only the range asked for (an index on time), never the whole trail."""

    @abc.abstractmethod
    def prune_operator_actions(self, before: datetime) -> int:
        """Delete entries older than ``before``; returns how many."""

    # -- metrics history (the dashboard's charts) -------------------------------------------
    @abc.abstractmethod
    def record_metric_samples(self, samples: Iterable[MetricSample]) -> None: ...

    @abc.abstractmethod
    def metric_history(self, name: str, since: datetime, until: datetime | None = None,
                       resolution: str = "minute",
                       dimensions: Mapping[str, str] | None = None) -> list[MetricSample]:
        """Samples of ``name`` in [since, until), oldest first. ``resolution`` minute | hour | day
        returns roll-ups (mean per bucket, bucket start as ``at``). ``dimensions`` filters by
        equality on the given keys."""

    @abc.abstractmethod
    def prune_metric_history(self, before: datetime) -> int:
        """Drop minute samples older than ``before``; returns how many."""


__all__ = [
    "ALERT_CHANGE_ATTEMPTS", "ActiveAlertExists", "AlertChanged", "AlertNotFound", "CorruptStore",
    "FORCE_RELEASE_REASON_PREFIX", "IllegalTransition", "InvalidCursor", "LeaseLost",
    "LockChanged", "StateConflict", "Store", "StoreError", "StoreNotInitialized",
    "StoreUnavailable", "TRANSITIONS", "WorksetNotFound", "check_fields", "check_transition",
    "force_release_reason", "parse_force_release_reason",
]
