"""Operator actions as store operations, each checked against the record the operator saw.

No Textual here: the dialogs call these from a worker thread. Every function re-reads the store's
current record first and refuses (``Outcome.conflict``) when it no longer matches what the dialog
showed, so an action never lands on a stale row; the dialog then shows the current record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from wsmon.engine.store.base import (
    AlertNotFound,
    IllegalTransition,
    StateConflict,
    Store,
    StoreError,
    WorksetNotFound,
)
from wsmon.core.models import Alert, AlertState, Priority, Workset, WorksetState

S = WorksetState

RETRYABLE = frozenset({S.ERROR, S.FAILED, S.RETRYING, S.IGNORED, S.COMPLETE})


@dataclass
class Outcome:
    """What happened to one item. Exactly one of done/conflict/error is set."""

    key: str
    done: str | None = None
    conflict: str | None = None
    error: str | None = None
    current: Workset | Alert | None = None


@dataclass
class BatchOutcome:
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def done(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.done]

    @property
    def conflicts(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.conflict]

    @property
    def errors(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.error]


def _changed(shown: Workset, current: Workset | None) -> str | None:
    """Why ``current`` is not the record the operator decided on, or None."""
    if current is None:
        return "it is no longer in the store"
    if current.state != shown.state:
        return f"it is now {current.state.value} (was {shown.state.value})"
    if current.state.holds_lease and (current.lock_owner != shown.lock_owner
                                      or current.fence != shown.fence):
        return f"its lease changed hands (now {current.lock_owner}, fence {current.fence})"
    return None


def _guarded(store: Store, shown: Workset) -> tuple[Workset | None, Outcome | None]:
    current = store.get_workset(shown.workset_id)
    why = _changed(shown, current)
    if why:
        return current, Outcome(shown.workset_id, conflict=f"changed meanwhile: {why}",
                                current=current)
    return current, None


def _changed_after_all(store: Store, shown: Workset) -> Outcome:
    """The write was refused because the record moved after the re-read: say how."""
    now = store.get_workset(shown.workset_id)
    return Outcome(shown.workset_id, conflict=f"changed meanwhile: {_changed(shown, now)}",
                   current=now)


def _transition(store: Store, shown: Workset, to: WorksetState, reason: str, actor: str,
                done: str) -> Outcome:
    current, conflict = _guarded(store, shown)
    if conflict:
        return conflict
    try:
        updated = store.update_state(shown.workset_id, to, reason=reason, actor=actor,
                                     expected_state=shown.state)
    except StateConflict:
        return _changed_after_all(store, shown)
    except IllegalTransition as exc:
        return Outcome(shown.workset_id, error=str(exc), current=current)
    except (WorksetNotFound, StoreError) as exc:
        return Outcome(shown.workset_id, error=str(exc), current=current)
    return Outcome(shown.workset_id, done=done, current=updated)


def release(store: Store, shown: Workset, actor: str) -> Outcome:
    current, conflict = _guarded(store, shown)
    if conflict:
        return conflict
    assert current is not None
    if not current.state.holds_lease:
        return Outcome(shown.workset_id, error=f"it is {current.state.value}: no lock to release",
                       current=current)
    try:
        # The store adds who held it and at which fence; expected_fence closes the gap between
        # the re-read above and this write, so a lease that changed hands is never released.
        updated = store.force_release(shown.workset_id, actor=actor,
                                      reason="operator release from the dashboard",
                                      expected_fence=shown.fence)
    except StateConflict:
        return _changed_after_all(store, shown)
    except StoreError as exc:
        return Outcome(shown.workset_id, error=str(exc), current=current)
    return Outcome(shown.workset_id, done="released", current=updated)


def retry(store: Store, shown: Workset, actor: str) -> Outcome:
    if shown.state not in RETRYABLE:
        what = "release its lock instead" if shown.state.holds_lease else "nothing to retry"
        return Outcome(shown.workset_id, error=f"it is {shown.state.value}: {what}", current=shown)
    return _transition(store, shown, S.READY,
                       f"operator retry after {shown.attempts} attempt(s)", actor, "sent to ready")


def ignore(store: Store, shown: Workset, actor: str) -> Outcome:
    if shown.state == S.IGNORED:
        return Outcome(shown.workset_id, error="it is already ignored", current=shown)
    return _transition(store, shown, S.IGNORED, "ignored by operator", actor, "ignored")


def unignore(store: Store, shown: Workset, actor: str) -> Outcome:
    if shown.state != S.IGNORED:
        return Outcome(shown.workset_id, error=f"it is {shown.state.value}, not ignored",
                       current=shown)
    return _transition(store, shown, S.READY, "un-ignored by operator", actor, "sent to ready")


def set_priority(store: Store, shown: Workset, priority: Priority | str, actor: str) -> Outcome:
    new = Priority.parse(priority)
    current = store.get_workset(shown.workset_id)
    if current is None:
        return Outcome(shown.workset_id, conflict="changed meanwhile: it is no longer in the store")
    if current.priority != shown.priority:
        return Outcome(shown.workset_id, current=current, conflict=(
            f"changed meanwhile: priority is now {current.priority.value} "
            f"(was {shown.priority.value})"))
    try:
        updated = store.set_priority(shown.workset_id, new, actor=actor,
                                     reason=f"priority {shown.priority.value} -> {new.value}")
    except StoreError as exc:
        return Outcome(shown.workset_id, error=str(exc), current=current)
    return Outcome(shown.workset_id, done=f"priority {new.value}", current=updated)


def precheck(kind: str, ws: Workset) -> str | None:
    """Why ``kind`` cannot apply to ``ws`` as it is, or None (the dialog says so up front)."""
    if kind == "release" and not ws.state.holds_lease:
        return f"it is {ws.state.value}: no lock to release"
    if kind == "retry" and ws.state not in RETRYABLE:
        return (f"it is {ws.state.value}: "
                + ("release its lock instead" if ws.state.holds_lease else "nothing to retry"))
    if kind == "ignore" and ws.state == S.IGNORED:
        return "it is already ignored"
    if kind == "unignore" and ws.state != S.IGNORED:
        return f"it is {ws.state.value}, not ignored"
    return None


WORKSET_ACTIONS = {"release": release, "retry": retry, "ignore": ignore, "unignore": unignore}


def run_batch(store: Store, kind: str, shown: list[Workset], actor: str) -> BatchOutcome:
    func = WORKSET_ACTIONS[kind]
    batch = BatchOutcome()
    for ws in shown:
        try:
            batch.outcomes.append(func(store, ws, actor))
        except StoreError as exc:
            batch.outcomes.append(Outcome(ws.workset_id, error=str(exc)))
    return batch


def _alert_guard(store: Store, shown: Alert) -> tuple[Alert | None, Outcome | None]:
    current = store.get_alert(shown.alert_id)
    if current is None:
        return None, Outcome(shown.alert_id, conflict="changed meanwhile: it is no longer in the store")
    if current.state != shown.state:
        return current, Outcome(shown.alert_id, current=current, conflict=(
            f"changed meanwhile: it is now {current.state.value} (was {shown.state.value})"))
    return current, None


def acknowledge(store: Store, shown: Alert, actor: str, note: str | None,
                expires_at: datetime | None = None) -> Outcome:
    current, conflict = _alert_guard(store, shown)
    if conflict:
        return conflict
    if shown.state == AlertState.RESOLVED:
        return Outcome(shown.alert_id, error="it is resolved: nothing to acknowledge", current=current)
    try:
        updated = store.ack_alert(shown.alert_id, actor, note=note or None, expires_at=expires_at)
    except (AlertNotFound, StoreError) as exc:
        return Outcome(shown.alert_id, error=str(exc), current=current)
    return Outcome(shown.alert_id, done="acknowledged", current=updated)


def silence(store: Store, shown: Alert, actor: str, minutes: float, reason: str,
            now: datetime) -> Outcome:
    try:
        store.silence(actor, ends_at=now + timedelta(minutes=minutes), rule=shown.rule,
                      subject=shown.subject, reason=reason)
    except StoreError as exc:
        return Outcome(shown.alert_id, error=str(exc), current=shown)
    return Outcome(shown.alert_id, done=f"silenced for {int(minutes)} min", current=shown)
