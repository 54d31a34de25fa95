"""What the screens and the app both need, kept here so no screen imports the app module.

``MUTATING_ACTIONS``: the actions that change the store, hidden and refused in read-only mode.
``describe_error``: one line that tells the operator what went wrong reading or writing the store.
``WORKSET_ACTION_BINDINGS``: the workset action keys, the same on the queue and on detail.
"""

from __future__ import annotations

from textual.binding import Binding

from wsmon.core.textsafe import strip_control, truncate
from wsmon.engine.store.base import StoreError

# Actions that change the store; in read-only mode each is refused with a toast naming it.
MUTATING_ACTIONS = frozenset({"release", "retry", "rerun", "stop", "ignore", "unignore",
                              "toggle_ignore", "priority", "ack", "resolve", "silence", "unsilence",
                              "toggle_select", "select_all", "clear_selection"})


def describe_error(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if not isinstance(exc, StoreError):
        text = f"{type(exc).__name__}: {text}"
    return truncate(strip_control(text), 300)


# The workset actions, bound alike on the queue (row or marked rows) and on detail (this workset).
WORKSET_ACTION_BINDINGS = [
    Binding("l", "release", "Release", id="release",
            tooltip="Take back the lock of a holder that is gone (live holder: use Stop)"),
    Binding("r", "retry", "Retry", id="retry",
            tooltip="Re-validate, then send back to ready (error, failed, retrying, ignored)"),
    Binding("R", "rerun", "Re-run", id="rerun", show=False,
            tooltip="Re-validate, then run finished (complete) work again"),
    Binding("x", "stop", "Stop", id="stop",
            tooltip="End the running pipeline, to error or ignored"),
    Binding("i", "toggle_ignore", "Ignore", id="ignore", tooltip="Ignore or un-ignore"),
    Binding("P", "priority", "Prio", id="priority", tooltip="Change priority"),
]
