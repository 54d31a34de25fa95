"""Alerts: firing, acknowledged and recently resolved, by severity; acknowledge or silence."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Static

from wsmon.core.models import Alert, AlertState
from wsmon.screens.base import WsmonScreen
from wsmon.screens.snapshot import Snapshot
from wsmon.core.textsafe import strip_control, truncate
from wsmon.widgets.difftable import ColumnLayout, ColumnSpec, DiffTable, text_cell
from wsmon.widgets.format import (
    ALERT_STATE_ORDER,
    SEVERITY_ROLES,
    SEVERITY_SYMBOLS,
    age_since,
    relative,
)
from wsmon.widgets.styles import role_style

ALERT_COLUMNS = [
    ColumnSpec("severity", "severity", 10, narrow=6, short="sev"),
    ColumnSpec("state", "state", 12, narrow=8),
    ColumnSpec("age", "age", 4, narrow=3),
    ColumnSpec("subject", "subject", 24, narrow=14, grow=1, max=40),
    ColumnSpec("rule", "rule", 20, narrow=12, grow=1, max=30),
    ColumnSpec("summary", "summary", 40, narrow=20, grow=3),
]
SEVERITY_SHORT = {"critical": "crit", "warning": "warn", "info": "info"}
ALERT_STATE_SHORT = {"acknowledged": "acked"}
SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


def alert_plain(alert: Alert, now, compact: bool = False) -> tuple[str, ...]:
    since = alert.resolved_at if alert.state == AlertState.RESOLVED else (
        alert.fired_at or alert.pending_since)
    severity, state = alert.severity.value, alert.state.value
    if compact:
        severity, state = SEVERITY_SHORT.get(severity, severity), ALERT_STATE_SHORT.get(state, state)
    return (f"{SEVERITY_SYMBOLS[alert.severity]} {severity}", state,
            age_since(since, now), strip_control(alert.subject), strip_control(alert.rule),
            strip_control(alert.summary))


class AlertsScreen(WsmonScreen):
    SCREEN_NAME = "alerts"
    BINDINGS = [
        Binding("a", "ack", "Acknowledge", id="ack", tooltip="Acknowledge with an optional note"),
        Binding("s", "silence", "Silence", id="silence", tooltip="Silence rule+subject for a while"),
        Binding("x", "resolve", "Resolve", id="resolve",
                tooltip="Resolve by hand, with a reason (fires again: a new alert)"),
        Binding("u", "unsilence", "Unsilence", id="unsilence", show=False,
                tooltip="End the silences that cover this alert now"),
    ]
    DEFAULT_CSS = """
    AlertsScreen #alert-text { height: auto; max-height: 8; padding: 0 1; background: $surface; }
    """

    def compose(self) -> ComposeResult:
        yield from self.compose_header()
        yield DiffTable(id="alerts-table")
        yield Static(id="alert-text")
        yield from self.compose_footer()

    @property
    def table(self) -> DiffTable:
        return self.query_one("#alerts-table", DiffTable)

    def on_mount(self) -> None:
        self.wire_table(self.table, ALERT_COLUMNS)

    def on_screen_resume(self) -> None:
        self.rebuild()

    def _on_snapshot(self, _: Snapshot) -> None:
        self.rebuild()

    def _columns_fitted(self, _: ColumnLayout) -> None:
        self.rebuild(restyle=True)

    def _alerts(self) -> dict[str, Alert]:
        return {a.alert_id: a for a in self.wsmon.alerts}

    def rebuild(self, restyle: bool = False) -> None:
        app = self.wsmon
        now = app.clock.now()
        alerts = self._alerts()
        table = self.table
        if restyle:
            for key in list(table._plain):
                table._plain[key] = (None,) * len(ALERT_COLUMNS)
        upserts: dict[str, list[Any]] = {}
        plain: dict[str, tuple[Any, ...]] = {}
        compact = bool(table.column_layout and table.column_layout.compact)
        for key, alert in alerts.items():
            p = alert_plain(alert, now, compact)
            if table._plain.get(key) == p:
                continue
            sev_style = role_style(app, SEVERITY_ROLES[alert.severity],
                                   bold=alert.state == AlertState.FIRING)
            dim = alert.state == AlertState.RESOLVED
            upserts[key] = [text_cell(p[0], sev_style), text_cell(p[1], "dim" if dim else ""),
                            *[text_cell(v, "dim" if dim else "") for v in p[2:]]]
            plain[key] = p
        removals = [k for k in table._plain if k not in alerts]

        def order(key: str) -> Any:
            a = alerts.get(key)
            if a is None:
                return (9, 9, 0.0, key)
            when = a.resolved_at or a.fired_at or a.pending_since
            return (ALERT_STATE_ORDER[a.state], SEVERITY_ORDER[a.severity.value],
                    -when.timestamp(), key)

        table.apply_diff(upserts, removals, plain, order=order, reorder=bool(upserts))
        self._show_selected()

    def selected_alert(self) -> Alert | None:
        key = self.table.cursor_key()
        if key is None:
            return None
        return self._alerts().get(key)

    def on_data_table_row_highlighted(self, _: Any) -> None:
        self._show_selected()

    def _show_selected(self) -> None:
        alert = self.selected_alert()
        text = Text()
        if alert is None:
            text.append("no alerts", style="dim")
        else:
            now = self.wsmon.clock.now()
            text.append(f"{strip_control(alert.rule)}", style="bold")
            text.append(f" on {strip_control(alert.subject)}: ")
            text.append(truncate(strip_control(alert.description or alert.summary), 400))
            if alert.value is not None:
                text.append(f" (value {alert.value:g})")
            if alert.acknowledged_by:
                text.append(f"\nacknowledged by {strip_control(alert.acknowledged_by)} "
                            f"{relative(alert.acknowledged_at, now)}")
                if alert.ack_expires_at:
                    text.append(f", expires {relative(alert.ack_expires_at, now)}")
                if alert.ack_note:
                    text.append(f": {truncate(strip_control(alert.ack_note), 200)}")
            if alert.resolved_at:
                text.append(f"\nresolved {relative(alert.resolved_at, now)}")
            silenced = [s for s in self.wsmon.silences if s.matches(alert, now)]
            if silenced:
                text.append(f"\nsilenced until {silenced[0].ends_at.strftime('%Y-%m-%d %H:%M')} "
                            f"by {strip_control(silenced[0].created_by)}")
        self.query_one("#alert-text", Static).update(text)

    def action_ack(self) -> None:
        alert = self.selected_alert()
        if alert is not None:
            self.wsmon.request_alert_action("ack", alert.alert_id)

    def action_silence(self) -> None:
        alert = self.selected_alert()
        if alert is not None:
            self.wsmon.request_alert_action("silence", alert.alert_id)

    def action_unsilence(self) -> None:
        alert = self.selected_alert()
        if alert is not None:
            self.wsmon.request_alert_action("unsilence", alert.alert_id)

    def action_resolve(self) -> None:
        alert = self.selected_alert()
        if alert is not None:
            self.wsmon.request_alert_action("resolve", alert.alert_id)
