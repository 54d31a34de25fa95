"""Which operator action is allowed from where, and what it does: the one rule set.

``ACTIONS`` is the table docs/operator-guide.md and docs/cli.md print (a docs test keeps them in
step); ``precondition`` is the check every front end's action goes through (via
``Operations``), so the dashboard, the CLI and the HTTP API refuse exactly the same things.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from wsmon.core.models import Alert, AlertState, Workset, WorksetState
from wsmon.operations.durations import DURATION_EXAMPLES, format_duration

S = WorksetState
A = AlertState


@dataclass(frozen=True)
class ActionRule:
    name: str
    label: str  # what the dashboard's dialog and toast call it
    states: frozenset[WorksetState] | frozenset[AlertState] | None  # None: not state-bound
    states_text: str  # "allowed from", for people
    running: str  # its effect on a running pipeline
    confirmation: str
    event: str  # what is written

    @property
    def confirms(self) -> bool:
        return self.confirmation.startswith("yes")


RUNNING = frozenset({S.LOCKED, S.IN_PROGRESS})
RETRY_FROM = frozenset({S.ERROR, S.FAILED, S.RETRYING, S.IGNORED})
ALL_STATES = frozenset(S)
OPEN_ALERT = frozenset({A.PENDING, A.FIRING, A.ACKNOWLEDGED})
CONFIRM = "yes: dialog; CLI asks on a terminal, `--yes` otherwise"
AUDIT = "audit entry (`wsmon events --actions`)"

ACTIONS: dict[str, ActionRule] = {rule.name: rule for rule in (
    ActionRule("retry", "Retry", RETRY_FROM, "error, failed, retrying, ignored",
               "none: refused while running (use stop)", CONFIRM,
               f"re-validates the S3 files first; valid: `-> ready` event; still invalid: stays, "
               f"findings replaced; {AUDIT}"),
    ActionRule("rerun", "Re-run", frozenset({S.COMPLETE}), "complete",
               "none: only finished work", CONFIRM,
               f"re-validates the S3 files first; valid: `complete -> ready` event; {AUDIT}"),
    ActionRule("stop", "Stop", RUNNING, "locked, in_progress",
               "ends it: the holding engine sends Ctrl-C, then kills its tmux session", CONFIRM,
               f"one fenced `-> ignored` or `-> error` event (operator's choice, reason, run "
               f"time); {AUDIT}"),
    ActionRule("release", "Release lock", RUNNING,
               "locked, in_progress, once the holder is gone (its engine's heartbeat is stale "
               "or its lease has expired)",
               "refused while the holder is alive: its lease live and its engine heard from "
               "(use stop); a holder that comes back "
               "is fenced out and ends its tmux session", CONFIRM,
               f"`-> ready` event, fence bumped; {AUDIT}"),
    ActionRule("ignore", "Ignore", frozenset({S.READY, S.ERROR, S.FAILED, S.RETRYING, S.COMPLETE}),
               "ready, error, failed, retrying, complete",
               "none: refused while running (use stop, choose ignored)", CONFIRM,
               f"`-> ignored` event; {AUDIT}"),
    ActionRule("unignore", "Un-ignore", frozenset({S.IGNORED}), "ignored",
               "none", CONFIRM,
               f"re-validates the S3 files first; valid: `ignored -> ready` event; {AUDIT}"),
    ActionRule("priority", "Change priority", ALL_STATES, "any state",
               "none: takes effect at the next claim", "no: choosing the level is the decision",
               f"priority event; {AUDIT}"),
    ActionRule("ack", "Acknowledge", OPEN_ALERT, "pending, firing, acknowledged alert",
               "none", "no: the dialog's note/expiry is the decision",
               f"alert acknowledged (optional expiry: {DURATION_EXAMPLES}); {AUDIT}"),
    ActionRule("resolve", "Resolve", OPEN_ALERT, "pending, firing, acknowledged alert",
               "none; if it fires again a new alert opens", "no: a reason is required",
               f"alert resolved by the operator; {AUDIT}"),
    ActionRule("silence", "Silence", None, "any rule and subject",
               "none", "no: choosing the duration is the decision",
               f"silence until the duration ends; {AUDIT}"),
    ActionRule("unsilence", "Unsilence", None, "an existing silence",
               "none", "no", f"silence deleted; {AUDIT}"),
)}

WORKSET_ACTIONS = ("retry", "rerun", "stop", "release", "ignore", "unignore", "priority")
ALERT_ACTIONS = ("ack", "resolve")


def lease_is_live(ws: Workset, now: datetime) -> bool:
    """The holder renewed its lease recently enough that it is presumably alive and working."""
    return ws.state in RUNNING and ws.lock_expires_at is not None and ws.lock_expires_at >= now


def precondition(action: str, record: Workset | Alert, now: datetime,
                 holder_alive: bool = True) -> str | None:
    """Why ``action`` cannot apply to ``record`` as it is now, or None. The one check.

    ``holder_alive``: whether the lease holder's engine is still heard from (its heartbeat in
    the store). A holder whose engine is gone cannot renew, so release is allowed for it even
    before its lease runs out: that is exactly the stuck lock release is for."""
    rule = ACTIONS[action]
    if isinstance(record, Alert):
        if rule.states is not None and record.state not in rule.states:
            return f"the alert is {record.state.value}: nothing to {rule.label.lower()}"
        return None
    state = record.state
    if rule.states is not None and state not in rule.states:
        if state in RUNNING:
            holder = record.lock_owner or "an engine"
            return f"it is {state.value} (held by {holder}): use stop to end the run"
        if action == "retry" and state is S.COMPLETE:
            return "it is complete: use re-run to run finished work again"
        if action == "rerun":
            return f"it is {state.value}, not complete: use retry"
        if action == "stop":
            return f"it is {state.value}: no pipeline is running"
        if action == "release":
            return f"it is {state.value}: no lock to release"
        if action in ("retry", "unignore") and state is S.READY:
            return "it is already ready"
        if action == "ignore" and state is S.IGNORED:
            return "it is already ignored"
        return f"it is {state.value}: {rule.label.lower()} is allowed from {rule.states_text}"
    if action == "release" and holder_alive and lease_is_live(record, now):
        assert record.lock_expires_at is not None
        left = format_duration(record.lock_expires_at - now)
        return (f"its holder {record.lock_owner} is alive (lease renewed, expires in {left}): "
                "release is for a holder that is gone; use stop to end the run")
    return None


TABLE_START = "<!-- operator-actions table: generated from wsmon/operations/rules.py -->"
TABLE_END = "<!-- /operator-actions table -->"


def markdown_table() -> str:
    """The rule table as docs/operator-guide.md and docs/cli.md print it (a docs test compares)."""
    lines = [TABLE_START,
             "| action | allowed from | effect on a running pipeline | confirmation | written |",
             "| --- | --- | --- | --- | --- |"]
    for rule in ACTIONS.values():
        cells = (f"**{rule.label}** (`{rule.name}`)", rule.states_text, rule.running,
                 rule.confirmation, rule.event)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines.append(TABLE_END)
    return "\n".join(lines)
