"""Confirmation dialogs for operator actions, and the ``:`` jump prompt.

Each action dialog shows the store's current record (the app re-read it before opening), runs the
store operation in a thread worker when confirmed, and if the record changed meanwhile it stays
open, says what changed and shows the new record, so a second confirm acts on what is there now.
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
from wsmon.screens import ops
from wsmon.core.textsafe import strip_control, truncate
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

TITLES = {"release": "Release lock", "retry": "Retry", "ignore": "Ignore", "unignore": "Un-ignore"}
CONFIRM = {"release": "Release", "retry": "Retry", "ignore": "Ignore", "unignore": "Un-ignore"}


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


def describe_workset(kind: str, ws: Workset, now) -> Text:
    """What the operator needs to decide, for one workset."""
    out = Text()
    out.append(strip_control(ws.workset_id), style="bold")
    out.append(f"  {state_label(ws.state)}  {ws.priority.value}\n")
    if kind == "release" and ws.state.holds_lease:
        held = duration((now - ws.lock_acquired_at).total_seconds()) if ws.lock_acquired_at else "?"
        if ws.lock_expires_at is None:
            expires = "lease expiry unknown"
        elif ws.lock_expires_at >= now:
            expires = f"lease expires {relative(ws.lock_expires_at, now)}"
        else:
            expires = f"lease expired {relative(ws.lock_expires_at, now)}"
        out.append(f"Held by {strip_control(ws.lock_owner or 'nobody')} (fence {ws.fence}) for "
                   f"{held}; {expires}.\n")
    elif kind == "retry":
        max_retries = "-" if ws.max_retries is None else ws.max_retries
        out.append(f"Attempts so far: {ws.attempts} (max retries {max_retries}).")
        if ws.error_code or ws.error_details:
            out.append(f" Last error {strip_control(ws.error_code or '')}: "
                       f"{truncate(strip_control(ws.error_details or ''), 120)}")
        out.append("\n")
    elif kind == "ignore" and ws.state.holds_lease:
        out.append(f"Held by {strip_control(ws.lock_owner or '?')}: it loses the lock.\n")
    return out


MEANING = {
    "release": ("Releasing sends it back to ready and bumps the fence: the holder's next write is "
                "refused, so it stops, and any engine may claim it again. A pipeline already "
                "running on a cluster is not killed."),
    "retry": "Retry sends it back to ready now; an engine claims it on its next pass.",
    "ignore": "Ignored worksets are left alone by every engine until un-ignored.",
    "unignore": "Un-ignoring sends it back to ready; an engine claims it on its next pass.",
}

BULK_SHOWN = 6


class WorksetActionDialog(WsmonDialog):
    BINDINGS = [Binding("y", "confirm", "Confirm", id="dialog-confirm")]

    def __init__(self, kind: str, records: list[Workset]) -> None:
        super().__init__()
        self.kind = kind
        self.records = list(records)
        self.done: list[str] = []
        self.shown_refused: list[tuple[Workset, str]] = []

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(id="dialog-title")
            with VerticalScroll(id="dialog-body"):
                yield Static(id="dialog-text")
            yield Static(id="dialog-warning")
            with Horizontal(id="dialog-buttons"):
                yield Button(CONFIRM[self.kind], id="confirm", variant="warning", **COMPACT)
                yield Button("Cancel", id="cancel", **COMPACT)

    def on_mount(self) -> None:
        refused = [(ws, ops.precheck(self.kind, ws)) for ws in self.records]
        refused = [(ws, why) for ws, why in refused if why]
        if refused:
            self.records = [ws for ws in self.records if ops.precheck(self.kind, ws) is None]
            lines = [f"{truncate(strip_control(ws.workset_id), 40)}: {why}" for ws, why in refused]
            if not self.records:
                self.query_one("#cancel", Button).label = "Close"
                self.shown_refused = refused
            self.set_warning("\n".join(lines[:BULK_SHOWN])
                             + (f"\n… and {len(lines) - BULK_SHOWN} more" if len(lines) > BULK_SHOWN else ""))
        self.render_records()
        self.query_one("#cancel", Button).focus()

    def render_records(self) -> None:
        n = len(self.records)
        title = TITLES[self.kind] + (f": {n} worksets" if n > 1 else "")
        self.query_one("#dialog-title", Label).update(Text(title))
        now = self.app.clock.now()  # type: ignore[attr-defined]
        body = Text()
        if n == 0 and self.shown_refused:
            body.append_text(describe_workset(self.kind, self.shown_refused[0][0], now))
        elif n == 1:
            body.append_text(describe_workset(self.kind, self.records[0], now))
        else:
            for ws in self.records[:BULK_SHOWN]:
                body.append(f"• {truncate(strip_control(ws.workset_id), 40)}  "
                            f"{state_label(ws.state)}")
                if self.kind == "release" and ws.lock_owner:
                    body.append(f"  held by {truncate(strip_control(ws.lock_owner), 20)}")
                if self.kind == "retry":
                    body.append(f"  attempts {ws.attempts}")
                body.append("\n")
            if n > BULK_SHOWN:
                body.append(f"… and {n - BULK_SHOWN} more\n")
        body.append(MEANING[self.kind], style="dim")
        self.query_one("#dialog-text", Static).update(body)
        self.query_one("#confirm", Button).display = n > 0

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
        app: Any = self.app
        batch = ops.run_batch(app.store, self.kind, records, app.actor)
        app.call_from_thread(self._performed, batch)

    def _performed(self, batch: ops.BatchOutcome) -> None:
        self.set_busy(False)
        self.done.extend(o.key for o in batch.done)
        if not batch.conflicts and not batch.errors:
            self.dismiss(self._summary())
            return
        # Act next time on what the store holds now; drop what is done or cannot be done.
        self.records = [o.current for o in batch.conflicts if isinstance(o.current, Workset)]
        lines = []
        for o in batch.conflicts + batch.errors:
            reason = o.conflict or o.error
            lines.append(f"{truncate(strip_control(o.key), 40)}: {strip_control(reason or '')}")
        if batch.done:
            lines.insert(0, f"{len(batch.done)} done.")
        if self.records:
            lines.append("Shown above is the current record; confirm again to act on it.")
        else:
            self.query_one("#cancel", Button).label = "Close"
        self.set_warning("\n".join(lines))
        self.render_records()

    def _summary(self) -> str:
        n = len(self.done)
        what = {"release": "released", "retry": "sent to ready", "ignore": "ignored",
                "unignore": "un-ignored"}[self.kind]
        if n == 1:
            return f"{truncate(strip_control(self.done[0]), 60)} {what}"
        return f"{n} worksets {what}"


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
        app: Any = self.app
        try:
            outcome = ops.set_priority(app.store, self.record, chosen, app.actor)
        except Exception as exc:
            outcome = ops.Outcome(self.record.workset_id, error=str(exc))
        app.call_from_thread(self._performed, outcome)

    def _performed(self, outcome: ops.Outcome) -> None:
        self.query_one(OptionList).disabled = False
        if outcome.done:
            self.dismiss(f"{truncate(strip_control(self.record.workset_id), 60)}: {outcome.done}")
            return
        if isinstance(outcome.current, Workset):
            self.record = outcome.current
            self._render_record()
        self.set_warning(strip_control(outcome.conflict or outcome.error or "")
                         + (" Choose again to act on the current record." if outcome.conflict else ""))
        self.query_one(OptionList).focus()


def describe_alert(alert: Alert, now) -> Text:
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


DURATION_UNITS = {"m": 1, "h": 60, "d": 1440}


def parse_minutes(text: str) -> float | None:
    """'30m', '4h', '2d' or a bare number of minutes; None when empty or not a duration."""
    text = text.strip().lower()
    unit = DURATION_UNITS.get(text[-1:], None) if text else None
    number = text[:-1] if unit else text
    try:
        value = float(number)
    except ValueError:
        return None
    if value <= 0 or value != value or value == float("inf"):
        return None
    return value * (unit or 1)


class AckDialog(WsmonDialog):
    BINDINGS = [Binding("ctrl+y", "confirm", "Confirm", id="dialog-ack-confirm", show=False)]

    def __init__(self, alert: Alert) -> None:
        super().__init__()
        self.alert = alert

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(Text("Acknowledge alert"), id="dialog-title")
            yield Static(id="dialog-text")
            yield Input(placeholder="note (optional), Enter to acknowledge", id="note", **COMPACT)
            yield Input(placeholder="expires after (optional): 30m, 4h, 2d; empty = until resolved",
                        id="expires", **COMPACT)
            yield Static(id="dialog-warning")
            with Horizontal(id="dialog-buttons"):
                yield Button("Acknowledge", id="confirm", variant="primary", **COMPACT)
                yield Button("Cancel", id="cancel", **COMPACT)

    def on_mount(self) -> None:
        self._render_alert()
        self.query_one("#note", Input).focus()

    def _render_alert(self) -> None:
        now = self.app.clock.now()  # type: ignore[attr-defined]
        self.query_one("#dialog-text", Static).update(describe_alert(self.alert, now))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.action_confirm()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "confirm":
            self.action_confirm()
        else:
            self.dismiss(None)

    def action_confirm(self) -> None:
        typed = self.query_one("#expires", Input).value
        minutes = parse_minutes(typed)
        if typed.strip() and minutes is None:
            self.set_warning(f"expires after: {strip_control(typed)!r} is not a duration such as "
                             "30m, 4h or 2d")
            return
        expires_at = None
        if minutes is not None:
            expires_at = self.app.clock.now() + timedelta(minutes=minutes)  # type: ignore[attr-defined]
        self.set_busy(True)
        self._perform(self.query_one("#note", Input).value.strip(), expires_at)

    @work(thread=True, exit_on_error=False, group="dialog")
    def _perform(self, note: str, expires_at: datetime | None) -> None:
        app: Any = self.app
        try:
            outcome = ops.acknowledge(app.store, self.alert, app.actor, note or None, expires_at)
        except Exception as exc:
            outcome = ops.Outcome(self.alert.alert_id, error=str(exc))
        app.call_from_thread(self._performed, outcome)

    def _performed(self, outcome: ops.Outcome) -> None:
        self.set_busy(False)
        if outcome.done:
            self.dismiss(f"alert {truncate(strip_control(self.alert.rule), 40)} acknowledged")
            return
        if isinstance(outcome.current, Alert):
            self.alert = outcome.current
            self._render_alert()
        self.set_warning(strip_control(outcome.conflict or outcome.error or "")
                         + (" Confirm again to act on it as it is now." if outcome.conflict else ""))


SILENCE_CHOICES = [(15, "15 minutes"), (60, "1 hour"), (240, "4 hours"), (1440, "24 hours"),
                   (10080, "7 days")]


class SilenceDialog(WsmonDialog):
    def __init__(self, alert: Alert) -> None:
        super().__init__()
        self.alert = alert

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(Text("Silence alert"), id="dialog-title")
            yield Static(id="dialog-text")
            yield Input(placeholder="reason (optional)", id="reason", **COMPACT)
            yield OptionList(*[Option(label, id=str(minutes)) for minutes, label in SILENCE_CHOICES],
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
        minutes = float(event.option.id or "60")
        self.query_one(OptionList).disabled = True
        self._perform(minutes, self.query_one("#reason", Input).value.strip())

    @work(thread=True, exit_on_error=False, group="dialog")
    def _perform(self, minutes: float, reason: str) -> None:
        app: Any = self.app
        try:
            outcome = ops.silence(app.store, self.alert, app.actor, minutes, reason, app.clock.now())
        except Exception as exc:
            outcome = ops.Outcome(self.alert.alert_id, error=str(exc))
        app.call_from_thread(self._performed, outcome, minutes)

    def _performed(self, outcome: ops.Outcome, minutes: float) -> None:
        self.query_one(OptionList).disabled = False
        if outcome.done:
            label = dict(SILENCE_CHOICES).get(int(minutes), f"{int(minutes)} min")
            self.dismiss(f"{truncate(strip_control(self.alert.rule), 40)} on "
                         f"{truncate(strip_control(self.alert.subject), 40)} silenced for {label}")
            return
        self.set_warning(strip_control(outcome.error or outcome.conflict or ""))


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
