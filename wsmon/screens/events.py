"""``:events``: the operator actions across every workset and alert, newest first (the audit
trail ``wsmon events --actions`` prints), refused ones included."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Static

from wsmon.core.models import OperatorAction
from wsmon.core.textsafe import strip_control
from wsmon.screens.base import WsmonScreen
from wsmon.screens.snapshot import Snapshot

SHOWN = 500
OUTCOME_STYLE = {"done": "", "refused": "bold", "changed": "italic", "not_found": "dim"}


class EventsScreen(WsmonScreen):
    SCREEN_NAME = "events"
    BINDINGS = [Binding("escape", "back", "Back", id="events-back")]
    DEFAULT_CSS = """
    EventsScreen #events-table { height: 1fr; }
    EventsScreen #events-detail { height: auto; max-height: 6; padding: 0 1; background: $surface; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.entries: list[OperatorAction] = []

    def compose(self) -> ComposeResult:
        yield from self.compose_header()
        yield DataTable(id="events-table", cursor_type="row", zebra_stripes=True)
        yield Static(id="events-detail")
        yield from self.compose_footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("at", "actor", "action", "target", "outcome", "reason / detail")
        # snapshots stop while paused, so this screen freezes with the others
        self.wsmon.snapshot_signal.subscribe(self, self._on_snapshot)
        self.load()
        table.focus()

    def _on_snapshot(self, _: Snapshot) -> None:
        self.load()

    @work(thread=True, exit_on_error=False, group="events-load", exclusive=True)
    def load(self) -> None:
        try:
            entries = self.wsmon.store.list_operator_actions(limit=SHOWN)
        except Exception as exc:  # noqa: BLE001 - shown on the screen; the store banner says more
            from wsmon.screens.shared import describe_error

            self.app.call_from_thread(self._show_error, describe_error(exc))
            return
        self.app.call_from_thread(self._show, entries)

    def _show_error(self, error: str) -> None:
        self.query_one("#events-detail", Static).update(Text(f"cannot read the audit trail: {error}"))

    def _show(self, entries: list[OperatorAction]) -> None:
        self.entries = entries
        table = self.query_one(DataTable)
        row = table.cursor_row
        table.clear()
        for e in entries:
            table.add_row(Text(e.at.strftime("%m-%d %H:%M:%S")), Text(strip_control(e.actor)),
                          Text(strip_control(e.action)), Text(strip_control(e.target)),
                          Text(strip_control(e.outcome), style=OUTCOME_STYLE.get(e.outcome, "")),
                          Text(strip_control("; ".join(x for x in (e.reason, e.detail) if x))))
        if entries:
            table.move_cursor(row=min(row, len(entries) - 1))
        self._describe(table.cursor_row)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._describe(event.cursor_row)

    def _describe(self, row: int) -> None:
        detail = self.query_one("#events-detail", Static)
        if not self.entries:
            detail.update(Text("no operator actions recorded yet"))
            return
        e = self.entries[max(0, min(row, len(self.entries) - 1))]
        text = Text(f"{e.at:%Y-%m-%d %H:%M:%S} {strip_control(e.actor)} {strip_control(e.action)} "
                    f"{strip_control(e.target)}: {strip_control(e.outcome)}", style="bold")
        if e.reason:
            text.append(f"\nreason: {strip_control(e.reason)}", style="")
        if e.detail:
            text.append(f"\n{strip_control(e.detail)}", style="")
        detail.update(text)

    def action_back(self) -> None:
        self.dismiss()
