"""The store's errors. Every message is meant for an operator; ``StoreError`` is the base class
callers catch (the CLI turns it into an exit code, the dashboard into a notice)."""

from __future__ import annotations

from wsmon.core.models import WorksetState


class StoreError(Exception):
    """Base class; the message is meant for an operator."""


class StoreUnavailable(StoreError):
    """The backend cannot be reached, or refused us (the message says what to do)."""


class StoreNotInitialized(StoreError):
    """Tables/schema missing: run ``wsmon store init``."""


class CorruptStore(StoreError):
    """The SQLite file is not a database or is damaged."""


class InvalidCursor(StoreError, ValueError):
    """A page cursor that no listing of this store handed out (also a ValueError: bad input)."""

    def __init__(self, cursor: str) -> None:
        super().__init__(
            f"invalid page cursor {cursor[:40]!r}: it comes from a previous page of the same "
            "listing; start again without a cursor"
        )


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


class AlertChanged(StoreError):
    """A conditional ``put_alert`` found another ``updated_at`` (or no alert): someone else
    wrote it since the caller read it. Nothing was changed; read it again and retry."""

    def __init__(self, alert_id: str) -> None:
        super().__init__(f"alert {alert_id!r} changed meanwhile (or is gone); read it again and retry")
        self.alert_id = alert_id


class ActiveAlertExists(StoreError):
    """Another not-resolved alert already holds the (rule, subject) dedup key."""

    def __init__(self, rule: str, subject: str) -> None:
        super().__init__(
            f"an active alert for rule {rule!r} and subject {subject!r} already exists; "
            "update that one instead"
        )
        self.rule = rule
        self.subject = subject


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


__all__ = [
    "ActiveAlertExists", "AlertChanged", "AlertNotFound", "CorruptStore", "IllegalTransition",
    "InvalidCursor", "LeaseLost", "LockChanged", "StateConflict", "StoreError",
    "StoreNotInitialized", "StoreUnavailable", "WorksetNotFound",
]
