"""Confirmation dialogs for operator actions, and the ``:`` jump prompt.

Every action goes through ``wsmon.operations`` (``app.operations``): the dialog shows the record
the app re-read before opening it and the rule's own words (allowed from, effect on a running
pipeline), runs the operation in a thread worker when confirmed, and shows its outcome. When the
record changed meanwhile it stays open, says what changed and shows the new record, so a second
confirm acts on what is there now; a refusal stays on screen with its reason (and findings).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from wsmon.core.models import Alert, Priority, Workset
from wsmon.core.textsafe import strip_control, truncate
from wsmon.operations import (
    ACTIONS,
    DURATION_EXAMPLES,
    DurationError,
    Outcome,
    Result,
    format_duration,
    parse_duration,
)
from wsmon.widgets.format import duration, relative, state_label

DIALOG_CSS = """
WsmonDialog { align: center middle; }
WsmonDialog > #dialog { width: 76; max-width: 100%; height: auto; max-height: 100%;
    border: round $primary; background: $surface; padding: 0 1; overflow-y: auto; }
WsmonDialog #dialog-title { text-style: bold; width: 100%; }
WsmonDialog #dialog-body { height: auto; max-height: 12; }
WsmonDialog #dialog-warning { display: none; color: $warning; text-style: bold; height: auto; }
WsmonDialog #dialog-warning.shown { display: block; }
WsmonDialog #dialog-buttons { height: auto; align-horizontal: right; margin-top: 1; }
WsmonDialog Button { margin-left: 2; min-width: 10; }
WsmonDialog Input { margin-top: 1; }
WsmonDialog OptionList { height: auto; max-height: 8; margin-top: 1; }
"""
# Compact inputs, lists and buttons (no borders) so every dialog fits 80x24; the dialog scrolls
# (overflow-y) if a long record would still push the buttons off a small terminal.
COMPACT = {"compact": True}
BULK_SHOWN = 6


def outcome_text(outcome: Outcome, width: int = 40) -> str:
    """One outcome for a dialog or a toast: whose, what came of it, and the findings behind it."""
    text = f"{truncate(strip_control(outcome.key), width)}: {strip_control(outcome.verdict())}"
    lines = [text] + [f"  {strip_control(line)}" for line in outcome.finding_lines()[:4]]
    return "\n".join(lines)


class WsmonDialog(ModalScreen[str | None]):
    DEFAULT_CSS = DIALOG_CSS
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="dialog-cancel")]

    def action_cancel(self) -> None:
        self.dismiss(None)

    def set_warning(self, text: str | None) -> None:
        warning = self.query_one("#dialog-warning", Static)
        warning.set_class(bool(text), "shown")
        warning.update(Text(text or ""))

    def set_busy(self, busy: bool) -> None:
        for button in self.query(Button):
            button.disabled = busy

    @property
    def operations(self) -> Any:
        return self.app.operations  # type: ignore[attr-defined]

    def attempt(self, action: str, key: str, call: Any) -> Outcome:
        """Run one operation (in a worker); a store that fails becomes a refusal on screen."""
        from wsmon.screens.shared import describe_error

        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - shown in the dialog, never lost
            return Outcome(action, key, Result.REFUSED, f"store error: {describe_error(exc)}")


def rule_text(kind: str) -> Text:
    """The rule's own words, the same the CLI's --help and docs/operator-guide.md print."""
    rule = ACTIONS[kind]
    return Text(f"Effect on a running pipeline: {rule.running}.\nWritten: {rule.event}.",
                style="dim")


def describe_workset(kind: str, ws: Workset, now: datetime) -> Text:
    """What the operator needs to decide, for one workset."""
    out = Text()
    out.append(strip_control(ws.workset_id), style="bold")
    out.append(f"  {state_label(ws.state)}  {ws.priority.value}\n")
    if ws.state.holds_lease:
        held = duration((now - ws.lock_acquired_at).total_seconds()) if ws.lock_acquired_at else "?"
        if ws.lock_expires_at is None:
            expires = "lease expiry unknown"
        elif ws.lock_expires_at >= now:
            expires = f"lease expires {relative(ws.lock_expires_at, now)}"
        else:
            expires = f"lease expired {relative(ws.lock_expires_at, now)}"
        out.append(f"Held by {strip_control(ws.lock_owner or 'nobody')} (fence {ws.fence}) for "
                   f"{held}; {expires}.\n")
    if kind in ("retry", "rerun", "unignore"):
        max_retries = "-" if ws.max_retries is None else ws.max_retries
        out.append(f"Attempts so far: {ws.attempts} (max retries {max_retries}).")
        if ws.error_code or ws.error_details:
            out.append(f" Last error {strip_control(ws.error_code or '')}: "
                       f"{truncate(strip_control(ws.error_details or ''), 120)}")
        out.append("\nIts S3 files are validated again first; only a valid workset goes to ready.\n")
    return out


def holder_liveness(ws: Workset, app: Any, now: datetime) -> str:
    """Whether the lease holder's engine is alive (its heartbeat), and when it was last heard
    from: what an operator needs to know before releasing its lock."""
    holder = ws.lock_owner
    if not holder:
        return "Nobody holds the lock."
    beat = next((m for m in getattr(app, "monitors", []) if m.monitor_id == holder), None)
    name = strip_control(holder)
    if beat is None:
        return f"Holder {name}: no heartbeat in the store (never heard from, or it said goodbye)."
    ago = relative(beat.last_seen, now)
    where = f"{strip_control(beat.host)} pid {beat.pid}"
    if (now - beat.last_seen).total_seconds() <= app.reader.stale_after:
        return f"Holder {name} on {where}: engine alive, last heard from {ago}."
    return f"Holder {name} on {where}: engine gone, last heard from {ago}."


class WorksetActionDialog(WsmonDialog):
    """retry, rerun, release, ignore, unignore: on one workset or a selection."""

    BINDINGS = [Binding("y", "confirm", "Confirm", id="dialog-confirm")]

    def __init__(self, kind: str, records: list[Workset], refused: list[Outcome] | None = None) -> None:
        super().__init__()
        self.kind = kind
        self.records = list(records)
        self.refused = list(refused or [])
        self.done: list[str] = []

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(id="dialog-title")
            with VerticalScroll(id="dialog-body"):
                yield Static(id="dialog-text")
            yield Static(id="dialog-warning")
            with Horizontal(id="dialog-buttons"):
                yield Button(ACTIONS[self.kind].label, id="confirm", variant="warning", **COMPACT)
                yield Button("Cancel", id="cancel", **COMPACT)

    def on_mount(self) -> None:
        if self.refused:
            lines = [outcome_text(o) for o in self.refused]
            self.set_warning("Left out:\n" + "\n".join(lines[:BULK_SHOWN])
                             + (f"\n… and {len(lines) - BULK_SHOWN} more"
                                if len(lines) > BULK_SHOWN else ""))
        self.render_records()
        self.query_one("#cancel", Button).focus()

    def render_records(self) -> None:
        n = len(self.records)
        title = ACTIONS[self.kind].label + (f": {n} worksets" if n > 1 else "")
        self.query_one("#dialog-title", Label).update(Text(title))
        now = self.app.clock.now()  # type: ignore[attr-defined]
        body = Text()
        if n == 1:
            body.append_text(describe_workset(self.kind, self.records[0], now))
            if self.kind == "release":
                body.append(holder_liveness(self.records[0], self.app, now) + "\n")  # type: ignore[arg-type]
        else:
            for ws in self.records[:BULK_SHOWN]:
                body.append(f"• {truncate(strip_control(ws.workset_id), 40)}  "
                            f"{state_label(ws.state)}")
                if ws.lock_owner:
                    body.append(f"  held by {truncate(strip_control(ws.lock_owner), 20)}")
                if self.kind in ("retry", "rerun"):
                    body.append(f"  attempts {ws.attempts}")
                body.append("\n")
            if n > BULK_SHOWN:
                body.append(f"… and {n - BULK_SHOWN} more\n")
        body.append_text(rule_text(self.kind))
        self.query_one("#dialog-text", Static).update(body)
        self.query_one("#confirm", Button).display = n > 0
        if n == 0:
            self.query_one("#cancel", Button).label = "Close"

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "confirm":
            self.action_confirm()
        else:
            self.dismiss(self._summary() if self.done else None)

    def action_confirm(self) -> None:
        if self.records:
            self.set_busy(True)
            self._perform(list(self.records))

    @work(thread=True, exit_on_error=False, group="dialog")
    def _perform(self, records: list[Workset]) -> None:
        outcomes = [self.attempt(self.kind, r.workset_id,
                                 lambda r=r: self.operations.run(self.kind, r)) for r in records]
        self.app.call_from_thread(self._performed, outcomes)

    def _performed(self, outcomes: list[Outcome]) -> None:
        self.set_busy(False)
        self.done.extend(o.key for o in outcomes if o.done)
        rest = [o for o in outcomes if not o.done]
        if not rest:
            self.dismiss(self._summary())
            return
        # Act next time on what the store holds now; drop what is done or cannot be done.
        self.records = [o.current for o in rest if o.changed and isinstance(o.current, Workset)]
        lines = [outcome_text(o) for o in rest]
        if self.done:
            lines.insert(0, f"{len(self.done)} done.")
        if self.records:
            lines.append("Shown above is the current record; confirm again to act on it.")
        self.set_warning("\n".join(lines))
        self.render_records()

    def _summary(self) -> str:
        n = len(self.done)
        what = {"release": "released", "retry": "sent to ready", "rerun": "sent to ready to run again",
                "ignore": "ignored", "unignore": "un-ignored"}[self.kind]
        if n == 1:
            return f"{truncate(strip_control(self.done[0]), 60)} {what}"
        return f"{n} worksets {what}"


class StopDialog(WsmonDialog):
    """End a running pipeline: the operator chooses where it ends (error or ignored)."""

    def __init__(self, record: Workset) -> None:
        super().__init__()
        self.record = record

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(Text("Stop the running pipeline"), id="dialog-title")
            with VerticalScroll(id="dialog-body"):
                yield Static(id="dialog-text")
            yield Input(placeholder="reason (recorded in the history)", id="reason", **COMPACT)
            yield Static(id="dialog-warning")
            with Horizontal(id="dialog-buttons"):
                yield Button("Stop → error", id="stop-error", variant="error", **COMPACT)
                yield Button("Stop → ignored", id="stop-ignored", variant="warning", **COMPACT)
                yield Button("Cancel", id="cancel", **COMPACT)

    def on_mount(self) -> None:
        self._render_record()
        self.query_one("#reason", Input).focus()

    def _render_record(self) -> None:
        ws = self.record
        now = self.app.clock.now()  # type: ignore[attr-defined]
        ran = format_duration(now - ws.lock_acquired_at) if ws.lock_acquired_at else "?"
        body = Text()
        body.append(strip_control(ws.workset_id), style="bold")
        body.append(f"  {state_label(ws.state)}  {ws.priority.value}\n")
        body.append(f"Cluster: {strip_control(ws.cluster_name or 'not placed yet')}; held by "
                    f"{strip_control(ws.lock_owner or '?')} (fence {ws.fence}); running for {ran}.\n")
        finished = [s.name for s in ws.steps if s.status == "succeeded"]
        current = [s.name for s in ws.steps if s.status == "running"]
        body.append("Lost: this run's progress"
                    + (f" (the running step {', '.join(strip_control(c) for c in current)} is "
                       "interrupted" if current else "")
                    + (f"; finished steps {', '.join(strip_control(f) for f in finished)} are "
                       "redone by a retry" if finished else "")
                    + (")" if current else "") + ".\n")
        body.append("Error: retry it later. Ignored: no engine touches it until un-ignored.\n")
        body.append_text(rule_text("stop"))
        self.query_one("#dialog-text", Static).update(body)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.query_one("#stop-error", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id in ("stop-error", "stop-ignored"):
            self.set_busy(True)
            self._perform("error" if event.button.id == "stop-error" else "ignored",
                          self.query_one("#reason", Input).value.strip())
        else:
            self.dismiss(None)

    @work(thread=True, exit_on_error=False, group="dialog")
    def _perform(self, to: str, reason: str) -> None:
        outcome = self.attempt("stop", self.record.workset_id,
                               lambda: self.operations.stop(self.record, to, reason))
        self.app.call_from_thread(self._performed, outcome)

    def _performed(self, outcome: Outcome) -> None:
        self.set_busy(False)
        if outcome.done:
            self.dismiss(f"{truncate(strip_control(self.record.workset_id), 60)}: "
                         f"{strip_control(outcome.message)}")
            return
        if outcome.changed and isinstance(outcome.current, Workset):
            self.record = outcome.current
            self._render_record()
        self.set_warning(outcome_text(outcome)
                         + (" Choose again to act on the current record." if outcome.changed else ""))


class PriorityDialog(WsmonDialog):
    def __init__(self, record: Workset) -> None:
        super().__init__()
        self.record = record

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(Text("Change priority"), id="dialog-title")
            yield Static(id="dialog-text")
            yield OptionList(*[Option(p.value, id=p.value) for p in Priority], id="priorities",
                             **COMPACT)
            yield Static(id="dialog-warning")
            with Horizontal(id="dialog-buttons"):
                yield Button("Cancel", id="cancel", **COMPACT)

    def on_mount(self) -> None:
        self._render_record()
        options = self.query_one(OptionList)
        options.highlighted = list(Priority).index(self.record.priority)
        options.focus()

    def _render_record(self) -> None:
        body = Text()
        body.append(strip_control(self.record.workset_id), style="bold")
        body.append(f"  {state_label(self.record.state)}\nPriority now: {self.record.priority.value}. "
                    "Choose the new one (Enter):")
        self.query_one("#dialog-text", Static).update(body)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        chosen = event.option.id or ""
        if chosen == self.record.priority.value:
            self.dismiss(None)
            return
        self.query_one(OptionList).disabled = True
        self._perform(chosen)

    @work(thread=True, exit_on_error=False, group="dialog")
    def _perform(self, chosen: str) -> None:
        outcome = self.attempt("priority", self.record.workset_id,
                               lambda: self.operations.set_priority(self.record, chosen))
        self.app.call_from_thread(self._performed, outcome)

    def _performed(self, outcome: Outcome) -> None:
        self.query_one(OptionList).disabled = False
        if outcome.done:
            self.dismiss(f"{truncate(strip_control(self.record.workset_id), 60)}: "
                         f"{strip_control(outcome.message)}")
            return
        if isinstance(outcome.current, Workset):
            self.record = outcome.current
            self._render_record()
        self.set_warning(outcome_text(outcome)
                         + (" Choose again to act on the current record." if outcome.changed else ""))
        self.query_one(OptionList).focus()


def describe_alert(alert: Alert, now: datetime) -> Text:
    out = Text()
    out.append(f"{alert.severity.value} {alert.state.value}", style="bold")
    out.append(f"  {strip_control(alert.rule)}\n")
    out.append(f"subject: {strip_control(alert.subject)}\n")
    out.append(truncate(strip_control(alert.summary), 200))
    since = alert.fired_at or alert.pending_since
    out.append(f"\nsince {relative(since, now)}")
    if alert.acknowledged_by:
        out.append(f"; acknowledged by {strip_control(alert.acknowledged_by)}")
    return out


class AlertDialog(WsmonDialog):
    """Shared by acknowledge and resolve: one alert, a text input, the outcome."""

    def __init__(self, alert: Alert) -> None:
        super().__init__()
        self.alert = alert

    def _render_alert(self) -> None:
        now = self.app.clock.now()  # type: ignore[attr-defined]
        self.query_one("#dialog-text", Static).update(describe_alert(self.alert, now))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "confirm":
            self.action_confirm()
        else:
            self.dismiss(None)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_confirm()

    def action_confirm(self) -> None:  # pragma: no cover - each dialog defines it
        raise NotImplementedError

    def _performed(self, outcome: Outcome) -> None:
        self.set_busy(False)
        if outcome.done:
            self.dismiss(f"alert {truncate(strip_control(self.alert.rule), 40)}: "
                         f"{truncate(strip_control(outcome.message), 80)}")
            return
        if isinstance(outcome.current, Alert):
            self.alert = outcome.current
            self._render_alert()
        self.set_warning(strip_control(outcome.verdict())
                         + (" Confirm again to act on it as it is now." if outcome.changed else ""))


class AckDialog(AlertDialog):
    BINDINGS = [Binding("ctrl+y", "confirm", "Confirm", id="dialog-ack-confirm", show=False)]

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(Text("Acknowledge alert"), id="dialog-title")
            yield Static(id="dialog-text")
            yield Input(placeholder="note (optional), Enter to acknowledge", id="note", **COMPACT)
            yield Input(placeholder=f"expires after (optional): {DURATION_EXAMPLES}; "
                                    "empty = until resolved", id="expires", **COMPACT)
            yield Static(id="dialog-warning")
            with Horizontal(id="dialog-buttons"):
                yield Button("Acknowledge", id="confirm", variant="primary", **COMPACT)
                yield Button("Cancel", id="cancel", **COMPACT)

    def on_mount(self) -> None:
        self._render_alert()
        self.query_one("#note", Input).focus()

    def action_confirm(self) -> None:
        typed = self.query_one("#expires", Input).value
        expires: timedelta | None = None
        if typed.strip():
            try:
                expires = parse_duration(typed)
            except DurationError as exc:
                self.set_warning(f"expires after: {strip_control(str(exc))}")
                return
        self.set_busy(True)
        self._perform(self.query_one("#note", Input).value.strip(), expires)

    @work(thread=True, exit_on_error=False, group="dialog")
    def _perform(self, note: str, expires: timedelta | None) -> None:
        outcome = self.attempt("ack", self.alert.alert_id,
                               lambda: self.operations.acknowledge(self.alert, note, expires))
        self.app.call_from_thread(self._performed, outcome)


class ResolveDialog(AlertDialog):
    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(Text("Resolve alert by hand"), id="dialog-title")
            yield Static(id="dialog-text")
            yield Input(placeholder="reason (required), Enter to resolve", id="reason", **COMPACT)
            yield Static(Text("If its condition still holds, the engine opens a new alert.",
                              style="dim"))
            yield Static(id="dialog-warning")
            with Horizontal(id="dialog-buttons"):
                yield Button("Resolve", id="confirm", variant="primary", **COMPACT)
                yield Button("Cancel", id="cancel", **COMPACT)

    def on_mount(self) -> None:
        self._render_alert()
        self.query_one("#reason", Input).focus()

    def action_confirm(self) -> None:
        reason = self.query_one("#reason", Input).value.strip()
        if not reason:
            self.set_warning("a reason is required to resolve an alert by hand")
            return
        self.set_busy(True)
        self._perform(reason)

    @work(thread=True, exit_on_error=False, group="dialog")
    def _perform(self, reason: str) -> None:
        outcome = self.attempt("resolve", self.alert.alert_id,
                               lambda: self.operations.resolve(self.alert, reason))
        self.app.call_from_thread(self._performed, outcome)


SILENCE_CHOICES = ("15m", "1h", "4h", "24h", "7d")


class SilenceDialog(WsmonDialog):
    def __init__(self, alert: Alert) -> None:
        super().__init__()
        self.alert = alert

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(Text("Silence alert"), id="dialog-title")
            yield Static(id="dialog-text")
            yield Input(placeholder="reason (optional)", id="reason", **COMPACT)
            yield OptionList(*[Option(label, id=label) for label in SILENCE_CHOICES],
                             id="durations", **COMPACT)
            yield Static(id="dialog-warning")
            with Horizontal(id="dialog-buttons"):
                yield Button("Cancel", id="cancel", **COMPACT)

    def on_mount(self) -> None:
        now = self.app.clock.now()  # type: ignore[attr-defined]
        body = describe_alert(self.alert, now)
        body.append("\n\nNo notifications for this rule and subject until the silence ends. "
                    "Pick a duration (Enter):", style="dim")
        self.query_one("#dialog-text", Static).update(body)
        options = self.query_one(OptionList)
        options.highlighted = 1
        options.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.query_one(OptionList).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.query_one(OptionList).disabled = True
        self._perform(parse_duration(event.option.id or "1h"),
                      self.query_one("#reason", Input).value.strip())

    @work(thread=True, exit_on_error=False, group="dialog")
    def _perform(self, length: timedelta, reason: str) -> None:
        outcome = self.attempt("silence", self.alert.alert_id, lambda: self.operations.silence(
            self.alert.rule, self.alert.subject, length, reason))
        self.app.call_from_thread(self._performed, outcome)

    def _performed(self, outcome: Outcome) -> None:
        self.query_one(OptionList).disabled = False
        if outcome.done:
            self.dismiss(f"{truncate(strip_control(self.alert.rule), 40)} on "
                         f"{truncate(strip_control(self.alert.subject), 40)}: "
                         f"{strip_control(outcome.message)}")
            return
        self.set_warning(strip_control(outcome.verdict()))


class JumpDialog(WsmonDialog):
    """``:`` then a screen name (a unique prefix is enough), like k9s."""

    DEFAULT_CSS = DIALOG_CSS + """
    JumpDialog { align: center top; }
    JumpDialog > #dialog { width: 40; margin-top: 3; }
    """

    def __init__(self, names: list[str]) -> None:
        super().__init__()
        self.names = names

    def compose(self) -> ComposeResult:
        from textual.suggester import SuggestFromList

        with Vertical(id="dialog"):
            yield Label(Text("Go to screen"), id="dialog-title")
            yield Input(placeholder=": " + " | ".join(self.names), id="jump",
                        suggester=SuggestFromList(self.names, case_sensitive=False), **COMPACT)
            yield OptionList(*[Option(n, id=n) for n in self.names], id="jump-options", **COMPACT)
            yield Static(id="dialog-warning")

    def on_mount(self) -> None:
        self.query_one("#jump", Input).focus()

    def resolve(self, typed: str) -> str | None:
        typed = typed.strip().lower().lstrip(":")
        if typed in self.names:
            return typed
        matches = [n for n in self.names if n.startswith(typed)] if typed else []
        return matches[0] if len(matches) == 1 else None

    def on_input_submitted(self, event: Input.Submitted) -> None:
        name = self.resolve(event.value)
        if name is None:
            self.set_warning(f"no screen {strip_control(event.value)!r}; one of: "
                             + ", ".join(self.names))
            return
        self.dismiss(name)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)
