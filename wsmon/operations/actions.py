"""``Operations``: every operator action, for every front end (dashboard, CLI, HTTP API).

Each workset or alert action takes the record the operator saw, re-reads it, refuses when it is
no longer that record (``changed``), checks ``rules.precondition`` on it, makes one conditional
write, and writes an audit entry whatever came of it. No Textual, no click.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from wsmon.core.models import Alert, Lease, Priority, Workset, WorksetState
from wsmon.engine.store.base import (
    AlertNotFound,
    IllegalTransition,
    LeaseLost,
    StateConflict,
    Store,
    StoreError,
    WorksetNotFound,
)
from wsmon.operations import audit
from wsmon.operations.durations import format_duration
from wsmon.operations.outcome import Outcome, Result
from wsmon.operations.rules import precondition
from wsmon.operations.validation import Validator, validation_fields

S = WorksetState
STOP_TARGETS = (S.IGNORED, S.ERROR)


def changed_since_shown(shown: Workset, current: Workset) -> str | None:
    """How ``current`` differs from the record the operator decided on, or None."""
    if current.state != shown.state:
        return f"it is now {current.state.value} (was {shown.state.value})"
    if current.state.holds_lease and (current.lock_owner != shown.lock_owner
                                      or current.fence != shown.fence):
        return f"its lease changed hands (now {current.lock_owner}, fence {current.fence})"
    return None


class Operations:
    """The operator actions on one store, recorded as ``actor``.

    ``validator`` re-reads a workset's S3 folder (``validation.s3_validator``); without one, the
    actions that send work back to ready are refused rather than skip validation.
    """

    def __init__(self, store: Store, actor: str, *, validator: Validator | None = None,
                 engine_stale_after: timedelta | None = None) -> None:
        self.store = store
        self.actor = actor
        self.validator = validator
        # when a holder's engine counts as gone (engine.health.engine_stale_after); None: judge
        # a holder by its lease alone
        self.engine_stale_after = engine_stale_after

    def holder_alive(self, record: Workset | Alert) -> bool:
        """Whether the engine holding ``record``'s lease is still heard from. Unknowable without
        ``engine_stale_after``, so then presumed alive (the lease alone decides)."""
        if self.engine_stale_after is None or not isinstance(record, Workset) or not record.lock_owner:
            return True
        now = self.now()
        for monitor in self.store.list_monitors():
            if monitor.monitor_id == record.lock_owner:
                return now - monitor.last_seen <= self.engine_stale_after
        return False  # never heard from, or pruned as long gone

    def now(self):
        return self.store.clock.now()

    # -- shared steps -----------------------------------------------------------------------
    def _finish(self, outcome: Outcome, reason: str) -> Outcome:
        audit.record(self.store, outcome, self.actor, reason, self.now())
        return outcome

    def _reread(self, action: str, shown: Workset, reason: str) -> tuple[Workset | None, Outcome | None]:
        current = self.store.get_workset(shown.workset_id)
        if current is None:
            return None, self._finish(Outcome(action, shown.workset_id, Result.NOT_FOUND,
                                              "it is no longer in the store"), reason)
        why = changed_since_shown(shown, current)
        if why:
            return current, self._finish(Outcome(action, shown.workset_id, Result.CHANGED, why,
                                                 current), reason)
        refusal = precondition(action, current, self.now(), self.holder_alive(current))
        if refusal:
            return current, self._finish(Outcome(action, shown.workset_id, Result.REFUSED, refusal,
                                                 current), reason)
        return current, None

    def _changed_after_all(self, action: str, shown: Workset, reason: str) -> Outcome:
        """The conditional write failed: the record moved between the re-read and the write."""
        now = self.store.get_workset(shown.workset_id)
        why = (changed_since_shown(shown, now) if now else "it is no longer in the store") \
            or "it changed meanwhile"
        return self._finish(Outcome(action, shown.workset_id, Result.CHANGED, why, now), reason)

    def check(self, action: str, record: Workset | Alert) -> str | None:
        """Why ``action`` cannot apply to ``record`` as shown (dialogs say so up front)."""
        return precondition(action, record, self.now(), self.holder_alive(record))

    # -- worksets ---------------------------------------------------------------------------
    def retry(self, shown: Workset, reason: str = "") -> Outcome:
        """error/failed/retrying/ignored -> ready, only if the S3 files validate now."""
        why = reason or f"operator retry after {shown.attempts} attempt(s)"
        return self._back_to_ready("retry", shown, why, done="sent to ready")

    def rerun(self, shown: Workset, reason: str = "") -> Outcome:
        """complete -> ready: run finished work again, only if the S3 files validate now."""
        return self._back_to_ready("rerun", shown, reason or "operator re-run of finished work",
                                   done="sent to ready to run again")

    def unignore(self, shown: Workset, reason: str = "") -> Outcome:
        return self._back_to_ready("unignore", shown, reason or "un-ignored by operator",
                                   done="un-ignored, sent to ready")

    def _back_to_ready(self, action: str, shown: Workset, reason: str, done: str) -> Outcome:
        current, refused = self._reread(action, shown, reason)
        if refused:
            return refused
        assert current is not None
        if self.validator is None:
            return self._finish(Outcome(action, shown.workset_id, Result.REFUSED,
                                        "cannot re-validate its S3 files here (no S3 access "
                                        "configured), and only a valid workset may run", current),
                                reason)
        try:
            report = self.validator(current)
        except Exception as exc:  # noqa: BLE001 - any failure to read S3: not known to be valid
            return self._finish(Outcome(action, shown.workset_id, Result.REFUSED,
                                        f"cannot re-validate its S3 files: {exc}", current), reason)
        fields = validation_fields(current, report)
        if not report.valid:
            first = report.first_error
            assert first is not None
            try:
                updated = self.store.update_fields(shown.workset_id, actor=self.actor,
                                                   expected_state=current.state, **fields)
            except (StateConflict, WorksetNotFound):
                return self._changed_after_all(action, shown, reason)
            errors = len(report.errors)
            return self._finish(Outcome(
                action, shown.workset_id, Result.REFUSED,
                f"its S3 files are still invalid ({errors} error(s), first {first.code}: "
                f"{first.message}); it stays {current.state.value}", updated,
                tuple(report.findings_dicts())), reason)
        try:
            updated = self.store.update_state(shown.workset_id, S.READY, reason=reason,
                                              actor=self.actor, expected_state=current.state,
                                              retry_after=None, **fields)
        except (StateConflict, WorksetNotFound):
            return self._changed_after_all(action, shown, reason)
        except IllegalTransition as exc:
            return self._finish(Outcome(action, shown.workset_id, Result.REFUSED, str(exc),
                                        current), reason)
        return self._finish(Outcome(action, shown.workset_id, Result.DONE, done, updated,
                                    tuple(report.findings_dicts())), reason)

    def ignore(self, shown: Workset, reason: str = "") -> Outcome:
        reason = reason or "ignored by operator"
        current, refused = self._reread("ignore", shown, reason)
        if refused:
            return refused
        assert current is not None
        try:
            updated = self.store.update_state(shown.workset_id, S.IGNORED, reason=reason,
                                              actor=self.actor, expected_state=current.state)
        except (StateConflict, WorksetNotFound):
            return self._changed_after_all("ignore", shown, reason)
        return self._finish(Outcome("ignore", shown.workset_id, Result.DONE, "ignored", updated),
                            reason)

    def stop(self, shown: Workset, to: WorksetState | str, reason: str = "") -> Outcome:
        """End a running pipeline on purpose: one write, fenced on the lease the operator saw,
        straight to ``ignored`` or ``error`` (neither is claimable, so no engine can take it in
        between). The holder's next heartbeat finds its lease gone and ends the tmux session."""
        target = WorksetState.parse(to)
        why = reason or "stopped by operator"
        if target not in STOP_TARGETS:
            return self._finish(Outcome("stop", shown.workset_id, Result.REFUSED,
                                        f"stop ends in ignored or error, not {target.value}",
                                        shown), why)
        current, refused = self._reread("stop", shown, why)
        if refused:
            return refused
        assert current is not None and current.lock_owner is not None
        ran = (format_duration(self.now() - current.lock_acquired_at)
               if current.lock_acquired_at else "?")
        recorded = (f"stopped by {self.actor}: {why} (was held by {current.lock_owner}, "
                    f"fence {current.fence}, ran {ran})")
        lease = Lease(workset_id=current.workset_id, owner_id=current.lock_owner,
                      fence=current.fence,
                      expires_at=current.lock_expires_at or self.now())
        fields: dict[str, Any] = {"retry_after": None}
        if target is S.ERROR:
            # no diagnostics code: nothing failed, an operator decided (the details say who, why)
            fields.update(error_code=None, error_details=f"stopped by {self.actor}: {why}")
        try:
            updated = self.store.update_state(shown.workset_id, target, reason=recorded,
                                              actor=self.actor, lease=lease,
                                              expected_state=current.state, **fields)
        except (StateConflict, LeaseLost, WorksetNotFound):
            return self._changed_after_all("stop", shown, why)
        return self._finish(Outcome("stop", shown.workset_id, Result.DONE,
                                    f"stopped after {ran}, now {target.value}; "
                                    f"{current.lock_owner} ends its tmux session", updated), why)

    def release(self, shown: Workset, reason: str = "") -> Outcome:
        """Take the lock back from a holder that is gone: back to ready, fence bumped."""
        why = reason or "operator release"
        current, refused = self._reread("release", shown, why)
        if refused:
            return refused
        assert current is not None
        try:
            # the fence shown: if the lease changed hands since, release nothing
            updated = self.store.force_release(shown.workset_id, actor=self.actor, reason=why,
                                               expected_fence=shown.fence)
        except (StateConflict, WorksetNotFound):
            return self._changed_after_all("release", shown, why)
        except IllegalTransition as exc:
            return self._finish(Outcome("release", shown.workset_id, Result.REFUSED, str(exc),
                                        current), why)
        return self._finish(Outcome("release", shown.workset_id, Result.DONE,
                                    f"released (was held by {current.lock_owner}); now ready, "
                                    f"fence {updated.fence}", updated), why)

    def set_priority(self, shown: Workset, level: Priority | str, reason: str = "") -> Outcome:
        new = Priority.parse(level)
        why = reason or f"priority {shown.priority.value} -> {new.value}"
        current, refused = self._reread("priority", shown, why)
        if refused:
            return refused
        assert current is not None
        if current.priority != shown.priority:
            return self._finish(Outcome("priority", shown.workset_id, Result.CHANGED,
                                        f"priority is now {current.priority.value} "
                                        f"(was {shown.priority.value})", current), why)
        if current.priority == new:
            return self._finish(Outcome("priority", shown.workset_id, Result.REFUSED,
                                        f"it is already {new.value}", current), why)
        updated = self.store.set_priority(shown.workset_id, new, actor=self.actor, reason=why)
        return self._finish(Outcome("priority", shown.workset_id, Result.DONE,
                                    f"priority {shown.priority.value} -> {new.value}", updated), why)

    def run(self, action: str, shown: Workset, **options: Any) -> Outcome:
        """Dispatch by action name (the dashboard's bulk dialog and the HTTP API)."""
        handlers = {"retry": self.retry, "rerun": self.rerun, "unignore": self.unignore,
                    "ignore": self.ignore, "stop": self.stop, "release": self.release,
                    "priority": self.set_priority}
        return handlers[action](shown, **options)

    def run_batch(self, action: str, shown: Sequence[Workset], **options: Any) -> list[Outcome]:
        outcomes = []
        for ws in shown:
            try:
                outcomes.append(self.run(action, ws, **options))
            except StoreError as exc:
                outcomes.append(self._finish(Outcome(action, ws.workset_id, Result.REFUSED,
                                                     str(exc)), options.get("reason", "")))
        return outcomes

    # -- alerts -----------------------------------------------------------------------------
    def _reread_alert(self, action: str, shown: Alert, reason: str) -> tuple[Alert | None, Outcome | None]:
        current = self.store.get_alert(shown.alert_id)
        if current is None:
            return None, self._finish(Outcome(action, shown.alert_id, Result.NOT_FOUND,
                                              "the alert is no longer in the store"), reason)
        if current.state != shown.state:
            return current, self._finish(Outcome(
                action, shown.alert_id, Result.CHANGED,
                f"the alert is now {current.state.value} (was {shown.state.value})", current), reason)
        refusal = precondition(action, current, self.now())
        if refusal:
            return current, self._finish(Outcome(action, shown.alert_id, Result.REFUSED, refusal,
                                                 current), reason)
        return current, None

    def acknowledge(self, shown: Alert, note: str = "",
                    expires_after: timedelta | None = None) -> Outcome:
        _current, refused = self._reread_alert("ack", shown, note)
        if refused:
            return refused
        expires_at = self.now() + expires_after if expires_after else None
        try:
            updated = self.store.ack_alert(shown.alert_id, self.actor, note=note or None,
                                           expires_at=expires_at)
        except AlertNotFound:
            return self._finish(Outcome("ack", shown.alert_id, Result.NOT_FOUND,
                                        "the alert is no longer in the store"), note)
        until = f" for {format_duration(expires_after)}" if expires_after else ""
        return self._finish(Outcome("ack", shown.alert_id, Result.DONE,
                                    f"acknowledged{until} ({updated.rule}: {updated.subject})",
                                    updated), note)

    def resolve(self, shown: Alert, reason: str) -> Outcome:
        """Close an alert by hand; if its condition still holds the engine opens a new one."""
        if not reason.strip():
            return self._finish(Outcome("resolve", shown.alert_id, Result.REFUSED,
                                        "a reason is required to resolve an alert by hand",
                                        shown), reason)
        _current, refused = self._reread_alert("resolve", shown, reason)
        if refused:
            return refused
        try:
            updated = self.store.resolve_alert(shown.alert_id, self.actor, reason=reason)
        except AlertNotFound:
            return self._finish(Outcome("resolve", shown.alert_id, Result.NOT_FOUND,
                                        "the alert is no longer in the store"), reason)
        return self._finish(Outcome("resolve", shown.alert_id, Result.DONE,
                                    f"resolved ({updated.rule}: {updated.subject})", updated),
                            reason)

    def silence(self, rule: str | None, subject: str | None, duration: timedelta,
                reason: str = "") -> Outcome:
        scope = f"rule {rule or '*'}, subject {subject or '*'}"
        if duration.total_seconds() <= 0:
            return self._finish(Outcome("silence", scope, Result.REFUSED,
                                        "the duration must be positive"), reason)
        created = self.store.silence(self.actor, ends_at=self.now() + duration, rule=rule,
                                     subject=subject, reason=reason)
        return self._finish(Outcome("silence", scope, Result.DONE,
                                    f"silenced for {format_duration(duration)} "
                                    f"(id {created.silence_id})", created), reason)

    def unsilence(self, silence_id: str, reason: str = "") -> Outcome:
        known = {s.silence_id: s for s in self.store.list_silences()}
        if silence_id not in known:
            return self._finish(Outcome("unsilence", silence_id, Result.NOT_FOUND,
                                        "no such silence"), reason)
        self.store.delete_silence(silence_id, self.actor)
        return self._finish(Outcome("unsilence", silence_id, Result.DONE, "silence ended",
                                    known[silence_id]), reason)
