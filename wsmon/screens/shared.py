"""What the screens and the app both need, kept here so no screen imports the app module.

``MUTATING_ACTIONS``: the actions that change the store, hidden and refused in read-only mode.
``describe_error``: one line that tells the operator what went wrong reading or writing the store.
"""

from __future__ import annotations

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
