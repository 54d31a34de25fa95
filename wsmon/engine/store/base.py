"""The store contract: the one seam between the engine, the dashboard and the CLI.

Every backend implements ``Store``. The state machine of ARCHITECTURE.md lives here and only
here (``check_transition``); backends call it before every conditional write.

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
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

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
    OutboxEntry,
    Page,
    Priority,
    QueueStats,
    Silence,
    Workset,
    WorksetState,
)

S = WorksetState

# from-state -> allowed to-states. "operator retry" and "force release" are the transitions back
# to READY; ``retrying -> ready`` is the engine noticing ``retry_after`` has passed.
TRANSITIONS: Mapping[WorksetState, frozenset[WorksetState]] = {
    S.READY: frozenset({S.LOCKED, S.IGNORED, S.ERROR, S.COMPLETE, S.FAILED}),
    S.LOCKED: frozenset({S.IN_PROGRESS, S.READY, S.ERROR, S.IGNORED}),
    S.IN_PROGRESS: frozenset({S.COMPLETE, S.ERROR, S.READY, S.IGNORED}),
    S.ERROR: frozenset({S.RETRYING, S.FAILED, S.READY, S.IGNORED}),
    S.RETRYING: frozenset({S.READY, S.FAILED, S.IGNORED}),
    S.FAILED: frozenset({S.READY, S.IGNORED}),
    S.IGNORED: frozenset({S.READY}),
    S.COMPLETE: frozenset({S.READY, S.IGNORED}),
}
# Notes on the less obvious edges:
#   ready -> error/complete/failed : S3 import of a folder that only carries a terminal sentinel,
#                                    and validation failing before any claim.
#   locked/in_progress -> ready    : release (holder) or force release (operator).
#   complete -> ready              : an operator deliberately re-runs a finished workset.
#   * -> ignored                   : operator or a ``daylily.ignore`` sentinel.


class StoreError(Exception):
    """Base class; the message is meant for an operator."""


class StoreUnavailable(StoreError):
    """The backend cannot be reached, or refused us (the message says what to do)."""


class StoreNotInitialized(StoreError):
    """Tables/schema missing: run ``wsmon store init``."""


class CorruptStore(StoreError):
    """The SQLite file is not a database or is damaged."""


class WorksetNotFound(StoreError, KeyError):
    def __init__(self, workset_id: str) -> None:
        super().__init__(f"no workset {workset_id!r} in the store")
        self.workset_id = workset_id

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


class AlertNotFound(StoreError, KeyError):
    def __init__(self, alert_id: str) -> None:
        super().__init__(f"no alert {alert_id!r} in the store")
        self.alert_id = alert_id

    def __str__(self) -> str:
        return str(self.args[0])


class IllegalTransition(StoreError):
    def __init__(self, from_state: WorksetState, to_state: WorksetState) -> None:
        super().__init__(
            f"illegal transition {from_state.value} -> {to_state.value}"
        )
        self.from_state = from_state
        self.to_state = to_state


class StateConflict(StoreError):
    """The record was not in the state the caller expected (someone else changed it)."""

    def __init__(self, workset_id: str, expected: WorksetState | None, actual: WorksetState) -> None:
        exp = expected.value if expected else "?"
        super().__init__(
            f"workset {workset_id!r} is {actual.value}, expected {exp}; it changed meanwhile"
        )
        self.workset_id = workset_id
        self.expected = expected
        self.actual = actual


class LockChanged(StateConflict):
    """A force release named the fence the operator saw and the lease has moved on since.
    Nothing was changed."""

    def __init__(self, workset_id: str, expected_fence: int, actual: WorksetState,
                 current_holder: str | None, current_fence: int) -> None:
        now = (f"now held by {current_holder}" if current_holder
               else f"now {actual.value}, not held")
        StoreError.__init__(
            self, f"workset {workset_id!r} changed meanwhile: {now} (fence {current_fence}), "
                  f"not fence {expected_fence} as shown"
        )
        self.workset_id = workset_id
        self.expected = None
        self.actual = actual
        self.expected_fence = expected_fence
        self.current_holder = current_holder
        self.current_fence = current_fence


class LeaseLost(StoreError):
    """The caller's lease is no longer the current one: its fence moved on. Nothing was changed."""

    def __init__(self, workset_id: str, fence: int, current_fence: int | None = None) -> None:
        cur = "" if current_fence is None else f" (current fence {current_fence})"
        super().__init__(f"lease on {workset_id!r} with fence {fence} was lost{cur}")
        self.workset_id = workset_id
        self.fence = fence
        self.current_fence = current_fence


# Every operator force release records a reason starting with this, so the engine can tell it
# apart from a holder's own release when it reads the history (to notify about it).
FORCE_RELEASE_REASON_PREFIX = "force release by "


def force_release_reason(actor: str, reason: str, holder: str | None, fence: int) -> str:
    """The event reason both backends record for ``force_release``: says each thing once."""
    why = f"{FORCE_RELEASE_REASON_PREFIX}{actor}"
    if reason:
        why += f": {reason}"
    if holder:
        why += f" (was held by {holder}, fence {fence})"
    return why


def parse_force_release_reason(event: Event) -> tuple[str, str | None] | None:
    """(operator reason, previous holder) of a ``force_release`` event; None for any other."""
    prefix = f"{FORCE_RELEASE_REASON_PREFIX}{event.actor}"
    if (not event.reason.startswith(prefix) or event.to_state is not S.READY
            or event.from_state not in (S.LOCKED, S.IN_PROGRESS)):
        return None
    rest = event.reason[len(prefix):]
    holder = None
    held = re.search(r" \(was held by (.*), fence \d+\)$", rest)
    if held:
        holder, rest = held.group(1), rest[:held.start()]
    if rest and not rest.startswith(": "):
        return None  # an actor whose name merely starts like this one
    return rest[2:], holder


def check_transition(from_state: WorksetState | str, to_state: WorksetState | str) -> None:
    """Raise ``IllegalTransition`` unless the state machine allows ``from_state -> to_state``."""
    src, dst = WorksetState.parse(from_state), WorksetState.parse(to_state)
    if dst not in TRANSITIONS[src]:
        raise IllegalTransition(src, dst)


def check_fields(fields: Mapping[str, Any]) -> None:
    from wsmon.core.models import MUTABLE_WORKSET_FIELDS

    unknown = set(fields) - MUTABLE_WORKSET_FIELDS
    if unknown:
        raise ValueError(
            f"cannot set workset field(s) {sorted(unknown)}; settable: {sorted(MUTABLE_WORKSET_FIELDS)}"
        )


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
    def queue_stats(self) -> QueueStats: ...

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
        ``updated_at`` (optimistic concurrency; ``StoreError`` on conflict)."""

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

    @abc.abstractmethod
    def ack_alert(self, alert_id: str, actor: str, note: str | None = None,
                  expires_at: datetime | None = None) -> Alert:
        """firing/pending -> acknowledged (idempotent for an acknowledged alert: updates the note)."""

    @abc.abstractmethod
    def resolve_alert(self, alert_id: str, actor: str, reason: str = "") -> Alert: ...

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
    def mark_notification_delivered(self, entry_id: str, at: datetime) -> None: ...

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
