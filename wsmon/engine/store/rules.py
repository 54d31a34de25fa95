"""The store's rules: pure functions over the models, shared by every backend.

A backend reads a record, asks a rule what the write is (or why it is refused), and writes it
under a condition that pins what it read; it never decides on its own what an operation may do.
Nothing here does I/O or reads a clock: the caller passes ``now``.

Workset writes are described by a ``Change``: the fields it sets (``None`` clears one) and at
most one history event. ``apply`` turns a record and a change into the new record; the SQLite
backend writes that record, the DynamoDB backend writes the changed attributes.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from wsmon.core.clock import isoformat, utc
from wsmon.core.models import (
    MUTABLE_WORKSET_FIELDS,
    RECENT_EVENTS_KEPT,
    Alert,
    AlertState,
    Event,
    Lease,
    MetricSample,
    OperatorAction,
    OutboxEntry,
    Priority,
    Silence,
    Workset,
    WorksetState,
)
from wsmon.engine.store.errors import (
    IllegalTransition,
    InvalidCursor,
    LeaseLost,
    LockChanged,
    StateConflict,
    StoreError,
)

S = WorksetState

# -- the state machine -----------------------------------------------------------------------

# from-state -> allowed to-states. "operator retry" and "force release" are the transitions back
# to READY; ``retrying -> ready`` is the engine noticing ``retry_after`` has passed.
TRANSITIONS: Mapping[WorksetState, frozenset[WorksetState]] = {
    S.READY: frozenset({S.LOCKED, S.IGNORED, S.ERROR, S.COMPLETE, S.FAILED}),
    S.LOCKED: frozenset({S.IN_PROGRESS, S.READY, S.ERROR, S.IGNORED}),
    S.IN_PROGRESS: frozenset({S.COMPLETE, S.ERROR, S.READY, S.IGNORED}),
    S.ERROR: frozenset({S.RETRYING, S.FAILED, S.READY, S.IGNORED}),
    S.RETRYING: frozenset({S.READY, S.FAILED, S.IGNORED}),
    S.FAILED: frozenset({S.READY, S.IGNORED}),
    S.IGNORED: frozenset({S.READY, S.ERROR}),
    S.COMPLETE: frozenset({S.READY, S.IGNORED, S.ERROR}),
}
# Notes on the less obvious edges:
#   ready -> error/complete/failed : S3 import of a folder that only carries a terminal sentinel,
#                                    and validation failing before any claim.
#   locked/in_progress -> ready    : release (holder) or force release (operator).
#   complete -> ready              : an operator deliberately re-runs a finished workset.
#   complete/ignored -> error      : a retry request in S3 whose files fail validation: one write
#                                    straight to error, never through ready (claimable).
#   * -> ignored                   : operator or a ``daylily.ignore`` sentinel.


def check_transition(from_state: WorksetState | str, to_state: WorksetState | str) -> None:
    """Raise ``IllegalTransition`` unless the state machine allows ``from_state -> to_state``."""
    src, dst = WorksetState.parse(from_state), WorksetState.parse(to_state)
    if dst not in TRANSITIONS[src]:
        raise IllegalTransition(src, dst)


def check_fields(fields: Mapping[str, Any]) -> None:
    """Callers may set only MUTABLE_WORKSET_FIELDS; state, lease and timestamps are the store's."""
    unknown = set(fields) - MUTABLE_WORKSET_FIELDS
    if unknown:
        raise ValueError(
            f"cannot set workset field(s) {sorted(unknown)}; settable: {sorted(MUTABLE_WORKSET_FIELDS)}"
        )


# -- describing a write ------------------------------------------------------------------------

@dataclass(frozen=True)
class NewEvent:
    """A history event about to be appended; the backend numbers it (``seq``)."""

    at: datetime
    actor: str
    from_state: WorksetState | None
    to_state: WorksetState
    reason: str

    def numbered(self, workset_id: str, seq: int) -> Event:
        return Event(workset_id=workset_id, seq=seq, at=self.at, actor=self.actor,
                     from_state=self.from_state, to_state=self.to_state, reason=self.reason or "")


@dataclass(frozen=True)
class Change:
    """One write to a workset record: ``fields`` to set (None clears one), at most one event.

    ``validate``: the change carries values from the caller, so the new record is validated
    (a bad value is a ValueError and nothing is written); the store's own values are typed.
    """

    fields: Mapping[str, Any]
    event: NewEvent | None = None
    validate: bool = False
    #: the lease this write creates or extends (claim, renew, adopt)
    lease: Lease | None = field(default=None, compare=False)


def apply(ws: Workset, change: Change) -> Workset:
    """The record after ``change`` (history not included: see ``with_event``)."""
    if not change.validate:
        return ws.model_copy(update=dict(change.fields))
    data = ws.model_dump()
    data.update(change.fields)
    return Workset.model_validate(data)


def with_event(ws: Workset, event: Event) -> Workset:
    """The record with ``event`` among its last ``RECENT_EVENTS_KEPT`` inline events."""
    return ws.model_copy(update={"recent_events": [*ws.recent_events, event][-RECENT_EVENTS_KEPT:]})


# -- registering -------------------------------------------------------------------------------

def new_workset(workset_id: str, bucket: str, prefix: str, priority: Priority | str,
                metadata: dict[str, Any] | None, customer_id: str | None,
                state: WorksetState | str, state_at: datetime | None, actor: str, reason: str,
                fields: Mapping[str, Any], now: datetime) -> tuple[Workset, NewEvent]:
    """The record a registration creates and its first event (from_state None).

    Refused: an empty id, fields the store owns, a state only a claim reaches. A record that
    fails validation is a ValueError; nothing is written in any of these cases.
    """
    if not isinstance(workset_id, str) or workset_id == "":
        raise ValueError("workset_id must be a non-empty string")
    check_fields(fields)
    initial = WorksetState.parse(state)
    if initial.holds_lease:
        raise StoreError(
            f"cannot register workset {workset_id!r} as {initial.value}: a workset only "
            "becomes locked or in_progress through a claim"
        )
    prio = Priority.parse(priority)
    now = utc(now)
    changed_at = utc(state_at) if state_at is not None else now
    data: dict[str, Any] = {
        "workset_id": workset_id, "bucket": bucket, "prefix": prefix, "state": initial,
        "priority": prio, "customer_id": customer_id, "metadata": metadata or {},
        "created_at": now, "updated_at": now, "state_changed_at": changed_at,
    }
    data.update(fields)
    if customer_id is not None:  # the explicit argument wins over fields
        data["customer_id"] = customer_id
    ws = Workset.model_validate(data)
    return ws, NewEvent(changed_at, actor, None, initial, reason)


# -- the caller's conditions -------------------------------------------------------------------

def check_lease_is_for(workset_id: str, lease: Lease | None) -> None:
    """A lease on one workset never writes another (checked before anything is read)."""
    if lease is not None and lease.workset_id != workset_id:
        raise ValueError(f"lease is for workset {lease.workset_id!r}, not {workset_id!r}")


def lease_held(ws: Workset, lease: Lease) -> bool:
    """Is ``lease`` still the current one? The fence is the truth; owner and state count too,
    because a holder that already left locked/in_progress (lease cleared, fence unchanged) no
    longer holds anything."""
    return (ws.fence == lease.fence and ws.lock_owner == lease.owner_id
            and ws.state.holds_lease)


def check_lease_held(ws: Workset, lease: Lease) -> None:
    if not lease_held(ws, lease):
        raise LeaseLost(lease.workset_id, lease.fence, ws.fence)


def check_conditions(ws: Workset, lease: Lease | None,
                     expected_state: WorksetState | str | None) -> None:
    """The caller's conditions on the record it is about to change: the lease is still held,
    then the state is the one it expected."""
    if lease is not None:
        check_lease_held(ws, lease)
    if expected_state is not None:
        expected = WorksetState.parse(expected_state)
        if ws.state is not expected:
            raise StateConflict(ws.workset_id, expected, ws.state)


# -- leases ------------------------------------------------------------------------------------

def lease_duration(default_seconds: float, lease_seconds: float | None) -> timedelta:
    seconds = default_seconds if lease_seconds is None else lease_seconds
    if seconds <= 0:
        raise ValueError(f"lease_seconds must be positive, not {seconds}")
    return timedelta(seconds=seconds)


def claim_cutoff(now: datetime, max_clock_skew: timedelta) -> datetime:
    """A lease that expired before this instant may be taken by someone else."""
    return utc(now) - max_clock_skew


def is_free(ws: Workset) -> bool:
    return ws.state is S.READY and ws.lock_owner is None


def lease_expired(ws: Workset, now: datetime, max_clock_skew: timedelta) -> bool:
    """Held, and expired more than the allowed clock skew ago."""
    return (ws.state.holds_lease and ws.lock_expires_at is not None
            and ws.lock_expires_at < claim_cutoff(now, max_clock_skew))


def claim(ws: Workset, owner_id: str, now: datetime, duration: timedelta,
          max_clock_skew: timedelta) -> Change | None:
    """The claim rule: free (ready and unowned), or a lease expired more than the clock skew
    ago. None when neither. Taking over an expired lease keeps the state (a running workset is
    not rewound) and names the previous owner in the event."""
    free = is_free(ws)
    if not (free or lease_expired(ws, now, max_clock_skew)):
        return None
    now = utc(now)
    target = S.LOCKED if free else ws.state
    expires = now + duration
    fence = ws.fence + 1
    fields: dict[str, Any] = {"state": target, "lock_owner": owner_id, "lock_acquired_at": now,
                              "lock_expires_at": expires, "fence": fence, "updated_at": now}
    if free:
        fields["state_changed_at"] = now
        reason = "claimed"
    else:
        reason = f"claimed: lease of {ws.lock_owner} expired at {_iso(ws.lock_expires_at)}"
    lease = Lease(workset_id=ws.workset_id, owner_id=owner_id, fence=fence, expires_at=expires)
    return Change(fields, NewEvent(now, owner_id, ws.state, target, reason), lease=lease)


def renew(ws: Workset, lease: Lease, now: datetime, duration: timedelta) -> Change:
    """Heartbeat: same fence, new expiry. ``LeaseLost`` once the fence moved on."""
    check_lease_held(ws, lease)
    now = utc(now)
    expires = now + duration
    return Change({"lock_expires_at": expires, "updated_at": now},
                  lease=lease.model_copy(update={"expires_at": expires}))


def adopt(ws: Workset, lease: Lease, now: datetime, duration: timedelta) -> Change:
    """Re-adopt a lease this owner already held (after a restart, or when its own lease lapsed,
    e.g. through a store outage). Live or expired makes no difference: if nobody else claimed
    it, fence and owner are unchanged and this owner may carry on, under a new fence that
    fences out any older process of the same owner that still thinks it holds it."""
    check_lease_held(ws, lease)
    now = utc(now)
    expires = now + duration
    fence = ws.fence + 1
    why = f"lease re-adopted by its owner (fence {ws.fence} -> {fence})"
    return Change({"lock_expires_at": expires, "fence": fence, "updated_at": now},
                  NewEvent(now, lease.owner_id, ws.state, ws.state, why),
                  lease=lease.model_copy(update={"fence": fence, "expires_at": expires}))


_NO_LEASE = {"lock_owner": None, "lock_acquired_at": None, "lock_expires_at": None}


def transition(ws: Workset, target: WorksetState | str, actor: str, reason: str, now: datetime,
               fields: Mapping[str, Any] | None = None) -> Change:
    """A state change (``update_state``): legal per TRANSITIONS, never into locked (only a claim
    gets there), and leaving locked/in_progress clears the lease fields (the holder's later
    writes then fail the still-held check)."""
    dst = WorksetState.parse(target)
    check_transition(ws.state, dst)
    if dst is S.LOCKED:
        raise StoreError(
            f"workset {ws.workset_id!r} can only become locked through a claim (acquire_lock)"
        )
    now = utc(now)
    changes: dict[str, Any] = dict(fields or {})
    changes.update(state=dst, updated_at=now, state_changed_at=now)
    if not dst.holds_lease:
        changes.update(_NO_LEASE)
    return Change(changes, NewEvent(now, actor, ws.state, dst, reason), validate=bool(fields))


def release(ws: Workset, lease: Lease, reason: str, now: datetime) -> Change:
    """The holder gives the workset back: locked/in_progress -> ready."""
    check_lease_held(ws, lease)
    return transition(ws, S.READY, lease.owner_id, reason, now)


# Every operator force release records a reason starting with this, so the engine can tell it
# apart from a holder's own release when it reads the history (to notify about it).
FORCE_RELEASE_REASON_PREFIX = "force release by "


def force_release_reason(actor: str, reason: str, holder: str | None, fence: int) -> str:
    """The event reason of ``force_release``: says each thing once."""
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


def force_release(ws: Workset, actor: str, reason: str, expected_fence: int | None,
                  now: datetime) -> Change:
    """The operator's release: back to ready under a new fence. ``LockChanged`` when the lease
    is no longer the one the operator was shown (``expected_fence``)."""
    if expected_fence is not None and ws.fence != expected_fence:
        raise LockChanged(ws.workset_id, expected_fence, ws.state, ws.lock_owner, ws.fence)
    check_transition(ws.state, S.READY)
    now = utc(now)
    changes = {"state": S.READY, "fence": ws.fence + 1, "updated_at": now,
               "state_changed_at": now, **_NO_LEASE}
    why = force_release_reason(actor, reason, ws.lock_owner, ws.fence)
    return Change(changes, NewEvent(now, actor, ws.state, S.READY, why))


def edit_fields(now: datetime, fields: Mapping[str, Any]) -> Change:
    """``update_fields``: no transition, no event."""
    return Change({**fields, "updated_at": utc(now)}, validate=True)


def reprioritise(ws: Workset, priority: Priority | str, actor: str, reason: str,
                 now: datetime) -> Change:
    """A priority change is an event (from_state == to_state)."""
    prio = Priority.parse(priority)
    now = utc(now)
    why = reason or f"priority {ws.priority.value} -> {prio.value}"
    return Change({"priority": prio, "updated_at": now},
                  NewEvent(now, actor, ws.state, ws.state, why))


# -- named leases ------------------------------------------------------------------------------

def named_lease_fence(holder: str | None, fence: int | None, expires_at: datetime | None,
                      owner_id: str, now: datetime, max_clock_skew: timedelta) -> int | None:
    """The fence ``owner_id`` gets for a named lease now held by ``holder`` (None: nobody), or
    None when it may not take it. Renewal keeps the fence; a released lease or one abandoned
    for longer than the clock skew is taken with the next fence; a first claim gets fence 1."""
    if fence is None:
        return 1
    if holder == owner_id:
        return fence
    if holder is None or expires_at is None or expires_at < claim_cutoff(now, max_clock_skew):
        return fence + 1
    return None


# -- monitors ----------------------------------------------------------------------------------

def monitor_details_json(details: Mapping[str, Any] | None) -> str:
    """A monitor's ``details`` as stored: JSON, with anything JSON has no type for as its text,
    so a heartbeat never fails on a detail."""
    return json.dumps(dict(details or {}), default=str, ensure_ascii=False,
                      separators=(",", ":"), sort_keys=True)


# -- listing -----------------------------------------------------------------------------------

#: ``worksets_changed_since`` hands back a watermark this far behind "now": a write whose
#: timestamp was taken just before a concurrent read but committed (or, on DynamoDB, reached an
#: eventually consistent index) after it is still picked up next time.
CHANGE_WATERMARK_LAG = timedelta(seconds=2)


def change_watermark(now: datetime) -> datetime:
    return utc(now) - CHANGE_WATERMARK_LAG


def check_page_limit(limit: int) -> None:
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")


def check_limit(limit: int | None) -> None:
    """``limit`` of a list that is not paged: 0 means nothing, a negative number is an error."""
    if limit is not None and limit < 0:
        raise ValueError(f"limit must not be negative, not {limit}")


_CURSOR_VERSION = 1


def encode_cursor(position: Mapping[str, Any]) -> str:
    """The one page-cursor format: URL-safe base64 of a versioned JSON object."""
    raw = json.dumps({"v": _CURSOR_VERSION, **position}, ensure_ascii=False,
                     separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str, valid: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The position in ``cursor``; ``InvalidCursor`` unless it decodes and ``valid`` says the
    backend recognises its shape."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        if isinstance(data, dict) and data.get("v") == _CURSOR_VERSION and valid(data):
            return data
    except (ValueError, TypeError, KeyError, binascii.Error, UnicodeDecodeError):
        pass
    raise InvalidCursor(cursor) from None


# -- alerts ------------------------------------------------------------------------------------

def acknowledge(alert: Alert, actor: str, note: str | None, expires_at: datetime | None,
                now: datetime) -> Alert:
    """firing/pending -> acknowledged; again on an acknowledged alert updates the note and
    expiry and keeps the first acknowledgement time. A resolved alert is refused."""
    if alert.state is AlertState.RESOLVED:
        raise StoreError(f"alert {alert.alert_id!r} is already resolved; nothing to acknowledge")
    now = utc(now)
    first = alert.state is not AlertState.ACKNOWLEDGED
    return alert.model_copy(update={
        "state": AlertState.ACKNOWLEDGED, "acknowledged_by": actor,
        "acknowledged_at": now if first else alert.acknowledged_at,
        "ack_note": note if note is not None else alert.ack_note,
        "ack_expires_at": utc(expires_at) if expires_at is not None else None,
        "updated_at": now,
    })


def resolve(alert: Alert, actor: str, now: datetime) -> Alert:
    """-> resolved; an alert already resolved is returned as it is (the same object)."""
    if alert.state is AlertState.RESOLVED:
        return alert
    now = utc(now)
    return alert.model_copy(update={"state": AlertState.RESOLVED, "resolved_at": now,
                                    "resolved_by": actor, "updated_at": now})


@dataclass(frozen=True)
class AlertQuery:
    """What ``list_alerts`` reads: the not-resolved ``active`` states, and resolved alerts
    (all of them when ``all_resolved``, else those resolved at or after ``resolved_since``)."""

    active: tuple[AlertState, ...]
    all_resolved: bool
    resolved_since: datetime | None

    def wants(self, alert: Alert) -> bool:
        if alert.state is not AlertState.RESOLVED:
            return alert.state in self.active
        if self.all_resolved:
            return True
        return (self.resolved_since is not None and alert.resolved_at is not None
                and alert.resolved_at >= self.resolved_since)


def alert_query(states: Iterable[AlertState | str] | None,
                resolved_since: datetime | None) -> AlertQuery:
    wanted = (None if states is None else {AlertState(s) for s in states})
    if wanted is None:
        active = tuple(s for s in AlertState if s is not AlertState.RESOLVED)
    else:
        active = tuple(sorted(wanted - {AlertState.RESOLVED}, key=lambda s: s.value))
    since = utc(resolved_since) if resolved_since is not None else None
    all_resolved = since is None and wanted is not None and AlertState.RESOLVED in wanted
    return AlertQuery(active, all_resolved, since)


def newest_first(alerts: Iterable[Alert], limit: int) -> list[Alert]:
    """Newest change first, ties by id; an id read twice (an index caught mid-move) counts once,
    its newest version."""
    unique: dict[str, Alert] = {}
    for a in alerts:
        if a.alert_id not in unique or unique[a.alert_id].updated_at < a.updated_at:
            unique[a.alert_id] = a
    ordered = sorted(unique.values(), key=lambda a: a.alert_id)
    ordered.sort(key=lambda a: a.updated_at, reverse=True)  # stable: ties stay by alert_id
    return ordered[:limit]


def alert_prunable(alert: Alert, before: datetime) -> bool:
    """Resolved, and both its resolution and its last change are older than ``before``."""
    before = utc(before)
    return (alert.state is AlertState.RESOLVED and alert.updated_at < before
            and (alert.resolved_at or alert.updated_at) < before)


# -- operator actions (the audit trail) --------------------------------------------------------

#: How many operator actions a listing returns when the caller names no limit.
OPERATOR_ACTIONS_LIMIT = 500


def check_operator_action(entry: OperatorAction) -> None:
    if not entry.action_id or not entry.action_id.strip():
        raise ValueError("an operator action needs an action_id")


def operator_action_order(entry: OperatorAction) -> tuple[datetime, str]:
    """The trail's order (listed newest first): time, then ``action_id`` for the same instant."""
    return entry.at, entry.action_id


def operator_action_in(entry: OperatorAction, since: datetime | None, until: datetime | None,
                       workset_id: str | None) -> bool:
    """In [since, until) and, when ``workset_id`` is given, about that workset."""
    return ((since is None or entry.at >= utc(since)) and (until is None or entry.at < utc(until))
            and (workset_id is None or entry.target == workset_id))


# -- silences ----------------------------------------------------------------------------------

def new_silence(silence_id: str, actor: str, ends_at: datetime, rule: str | None,
                subject: str | None, reason: str, starts_at: datetime | None,
                now: datetime) -> Silence:
    """A silence from ``starts_at`` (default now) to ``ends_at``; it must end after it starts."""
    silence = Silence(silence_id=silence_id, rule=rule, subject=subject, created_by=actor,
                      reason=reason, starts_at=starts_at if starts_at is not None else now,
                      ends_at=ends_at)
    if silence.ends_at <= silence.starts_at:
        raise ValueError("a silence must end after it starts")
    return silence


def silence_active(silence: Silence, at: datetime) -> bool:
    return silence.starts_at <= utc(at) < silence.ends_at


def silence_order(silence: Silence) -> tuple[datetime, str]:
    return silence.starts_at, silence.silence_id


# -- notification outbox -----------------------------------------------------------------------

OUTBOX_STATUSES = ("pending", "delivered", "dead")
OUTBOX_FINAL_STATUSES = ("delivered", "dead")


def outbox_index_at(entry: OutboxEntry, now: datetime) -> datetime:
    """The entry's time in the (status, time) index both backends keep: the next attempt while
    pending; once delivered or given up, the time it got there (never before it was created).
    One index then serves delivery, the newest-first ``since`` view and pruning."""
    if entry.status == "pending":
        return entry.next_attempt_at
    final = entry.delivered_at if entry.status == "delivered" and entry.delivered_at else now
    return max(utc(final), entry.created_at)


def coalesce(entry: OutboxEntry, folded: Iterable[OutboxEntry]) -> OutboxEntry:
    """``entry`` taking over the pending ``folded`` ones: it counts them and what they had
    folded themselves."""
    extra = sum(1 + f.coalesced for f in folded)
    return entry if not extra else entry.model_copy(update={"coalesced": entry.coalesced + extra})


def delivered(entry: OutboxEntry, at: datetime) -> OutboxEntry:
    return entry.model_copy(update={"status": "delivered", "delivered_at": utc(at),
                                    "attempts": entry.attempts + 1, "last_error": None})


def failed(entry: OutboxEntry, error: str, next_attempt_at: datetime | None) -> OutboxEntry:
    """One more failed attempt; without a next attempt the entry is given up (dead)."""
    update: dict[str, Any] = {"attempts": entry.attempts + 1, "last_error": error}
    if next_attempt_at is None:
        update["status"] = "dead"
    else:
        update["next_attempt_at"] = utc(next_attempt_at)
    return entry.model_copy(update=update)


def due_order(entry: OutboxEntry) -> tuple[datetime, str]:
    """Delivery order (and the order of an unfiltered listing): oldest first."""
    return entry.created_at, entry.entry_id


# -- metric history ----------------------------------------------------------------------------

def _hour(at: datetime) -> datetime:
    return at.replace(minute=0, second=0, microsecond=0)


def _day(at: datetime) -> datetime:
    return at.replace(hour=0, minute=0, second=0, microsecond=0)


# minute history is the raw samples (one per series per minute); hour and day are roll-ups.
_BUCKETS: dict[str, Callable[[datetime], datetime] | None] = {
    "minute": None, "hour": _hour, "day": _day,
}


def check_resolution(resolution: str) -> None:
    if resolution not in _BUCKETS:
        raise ValueError(f"unknown resolution {resolution!r} (allowed: minute, hour, day)")


def series_key(dimensions: Mapping[str, str]) -> str:
    """One text per series: the dimensions as canonical JSON (sorted keys, compact)."""
    return json.dumps(dict(dimensions), ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def dimensions_match(dimensions: Mapping[str, str], wanted: Mapping[str, str] | None) -> bool:
    """Filtering by equality on the given keys only."""
    return all(dimensions.get(k) == v for k, v in (wanted or {}).items())


def roll_up(name: str, samples: Iterable[tuple[datetime, Mapping[str, str], float]],
            resolution: str) -> list[MetricSample]:
    """``samples`` (at, dimensions, value) as ``metric_history`` returns them, oldest first:
    as they are for minute resolution, else one mean per (bucket, series) with the bucket start
    as ``at``, so filtering on some dimensions never averages different series together."""
    check_resolution(resolution)
    keyed = sorted(((utc(at), series_key(dims), dict(dims), float(value))
                    for at, dims, value in samples), key=lambda t: (t[0], t[1]))
    bucket_of = _BUCKETS[resolution]
    if bucket_of is None:
        return [MetricSample(name=name, at=at, value=value, dimensions=dims)
                for at, _, dims, value in keyed]
    buckets: dict[tuple[datetime, str], tuple[dict[str, str], float, int]] = {}
    for at, key, dims, value in keyed:
        b = (bucket_of(at), key)
        _, total, count = buckets.get(b, (dims, 0.0, 0))
        buckets[b] = (dims, total + value, count + 1)
    return [MetricSample(name=name, at=at, value=total / count, dimensions=dims)
            for (at, _), (dims, total, count) in sorted(buckets.items())]


def _iso(dt: datetime | None) -> str | None:
    return None if dt is None else isoformat(dt)
