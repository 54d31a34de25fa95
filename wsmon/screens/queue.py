"""The queue: one row per workset, filtered, sorted and acted on from the keyboard (home screen)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Input, Static

from wsmon.core.models import Priority, WorksetState
from wsmon.screens.base import WsmonScreen
from wsmon.screens.shared import WORKSET_ACTION_BINDINGS
from wsmon.screens.snapshot import GONE_FROM_S3, QUEUE_COLUMNS, SORTABLE, QueueRow, Snapshot
from wsmon.core.textsafe import strip_control
from wsmon.widgets.difftable import ColumnLayout, DiffTable
from wsmon.widgets.format import (
    PRIORITY_SHORT_WORDS,
    STATE_KEYS,
    STATE_ROLES,
    STATE_SYMBOLS,
    progress_cell,
    state_label,
)
from wsmon.widgets.styles import role_markup

SELECTED_MARK = "●"


@dataclass(frozen=True, slots=True)
class _Looks:
    mark: str  # a selected row's first cell
    states: dict[WorksetState, str]
    priorities: dict[str, str]
    gone: str  # the gone-from-S3 marker
    compact: bool
COLUMN_LABELS = {spec.key: spec.label for spec in QUEUE_COLUMNS}


class QueueScreen(WsmonScreen):
    SCREEN_NAME = "queue"
    BINDINGS = [
        Binding("enter", "open", "Detail", id="open", tooltip="Everything about this workset"),
        Binding("slash", "filter", "Filter", id="filter", tooltip="Filter across all columns"),
        Binding("escape", "clear_filter", "Clear filter", id="clear-filter", show=False),
        Binding("space", "toggle_select", "Select", id="select", show=False,
                tooltip="Mark for bulk actions (then l or r act on all marked)"),
        *WORKSET_ACTION_BINDINGS,
        Binding("s", "sort_next", "Sort", id="sort", show=False,
                tooltip="Sort by the next column (or click a header)"),
        Binding("S", "sort_reverse", "Reverse", id="sort-reverse", show=False,
                tooltip="Reverse the sort direction"),
        Binding("0", "state_filter(0)", "All states", id="state-all", show=False),
        *[Binding(str(i + 1), f"state_filter({i + 1})", f"Only {state.value}",
                  id=f"state-{state.value}", show=False) for i, state in enumerate(STATE_KEYS)],
        Binding("ctrl+x", "clear_selection", "Unselect all", id="clear-selection", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.filter_text = ""
        self.state_filter: WorksetState | None = None
        self.sort_column = "priority"
        self.sort_reverse = False
        self.selected: set[str] = set()
        self._sort_cache: dict[str, Any] = {}
        self.compact = False  # narrow terminal: shorter state and priority words
        self._bar_shown: Text | None = None

    def compose(self) -> ComposeResult:
        yield from self.compose_header()
        yield Input(placeholder="filter: text in any column (Enter keeps, Esc clears)",
                    id="filter-input")
        yield Static(id="filter-bar")
        table = DiffTable(id="queue-table")
        yield table
        yield from self.compose_footer()

    @property
    def table(self) -> DiffTable:
        return self.query_one("#queue-table", DiffTable)

    def on_mount(self) -> None:
        self.table.set_columns(QUEUE_COLUMNS)
        self.compact = bool(self.table.column_layout and self.table.column_layout.compact)
        self.table.fitted_callback = self._columns_fitted
        app = self.wsmon
        app.snapshot_signal.subscribe(self, self._on_snapshot, immediate=True)
        app.action_done_signal.subscribe(self, self._on_action_done, immediate=True)
        app.theme_changed_signal.subscribe(self, lambda _: self._reconcile(restyle=True))
        self._reconcile()
        self.table.focus()

    def on_screen_resume(self) -> None:
        self._reconcile()

    def _columns_fitted(self, layout: ColumnLayout) -> None:
        if layout.compact != self.compact:
            self.compact = layout.compact
            self._reconcile(restyle=True)

    # -- rows ------------------------------------------------------------------------------
    def _matches(self, row: QueueRow) -> bool:
        if self.state_filter is not None and row.state != self.state_filter:
            return False
        return not self.filter_text or self.filter_text in row.search

    def _plain(self, row: QueueRow) -> tuple[Any, ...]:
        return (row.key in self.selected, *row.cells)

    def _looks(self) -> _Looks:
        """The styled pieces for the current theme and width, once per batch of rows."""
        app, compact = self.wsmon, self.compact
        states = {state: role_markup(app, STATE_ROLES[state], state_label(state, compact),
                                     bold=state in (WorksetState.FAILED, WorksetState.ERROR))
                  for state in WorksetState}
        priorities = {}
        for priority in Priority:
            word = PRIORITY_SHORT_WORDS.get(priority.value, priority.value) if compact \
                else priority.value
            priorities[priority.value] = (role_markup(app, "warning", word, bold=True)
                                          if priority == Priority.URGENT else word)
        return _Looks(role_markup(app, "accent", SELECTED_MARK, bold=True), states, priorities,
                      role_markup(app, "warning", GONE_FROM_S3, bold=True), compact)

    def _cells(self, row: QueueRow, looks: _Looks) -> list[str]:
        """Markup strings: the reader escaped every untrusted value; DataTable parses a str
        cell only when it is drawn, so 10,000 rows cost nothing until scrolled into view."""
        cells = [looks.mark if row.key in self.selected else "", *row.markup]
        cells[2] = looks.states[row.state]
        cells[3] = looks.priorities.get(row.priority, cells[3])
        if row.s3_missing:
            cells[9] = f"{looks.gone} · {cells[9]}" if cells[9] else looks.gone
        if looks.compact:
            cells[10] = progress_cell(row.percent, compact=True)
        return cells

    @staticmethod
    def _sort_key(key: str, row: QueueRow | None, index: int) -> tuple[Any, ...]:
        if row is None:
            return (1, "", 0, 0.0, key)
        values = row.sort_values
        # ties fall back to the store's own queue order (priority, then oldest first)
        return (0, values[index], values[2], -values[5], key)

    def _order(self):
        """Sort keys by row key, kept per row as rows change (_sort_cache): a re-sort of 10,000
        rows looks each one up instead of building it again."""
        cached, rows = self._sort_cache, self.wsmon.rows
        index = SORTABLE.index(self.sort_column)

        def key_of(key: str) -> Any:
            found = cached.get(key)
            return found if found is not None else self._sort_key(key, rows.get(key), index)

        return key_of

    def _apply(self, upserts: dict[str, QueueRow], removals: list[str], reorder: bool) -> None:
        table = self.table
        plain = {k: self._plain(r) for k, r in upserts.items()}
        looks = self._looks()
        cells = {k: self._cells(r, looks) for k, r in upserts.items()
                 if table._plain.get(k) != plain[k]}
        plain = {k: plain[k] for k in cells}
        for key in removals:
            self._sort_cache.pop(key, None)
        table.apply_diff(cells, removals, plain, order=self._order(),
                         reverse=self.sort_reverse, reorder=reorder)
        self._update_bar()

    def _on_snapshot(self, snap: Snapshot) -> None:
        table = self.table
        shown = table._plain
        upserts: dict[str, QueueRow] = {}
        removals = [k for k in snap.removed if k in shown]
        reorder = False
        index = SORTABLE.index(self.sort_column)
        for key, row in snap.changed.items():
            if self._matches(row):
                upserts[key] = row
                value = self._sort_key(key, row, index)
                if key in shown and self._sort_cache.get(key) != value:
                    reorder = True
                self._sort_cache[key] = value
            elif key in shown:
                removals.append(key)
        if upserts or removals:
            self._apply(upserts, removals, reorder)
        else:
            self._update_bar()

    def _reconcile(self, *, restyle: bool = False, reorder: bool = False) -> None:
        """Bring the table in line with every row the app holds (filter, sort or theme changed)."""
        table = self.table
        rows = self.wsmon.rows
        wanted = {k: r for k, r in rows.items() if self._matches(r)}
        removals = [k for k in table._plain if k not in wanted]
        index = SORTABLE.index(self.sort_column)
        self._sort_cache = {k: self._sort_key(k, r, index) for k, r in wanted.items()}
        if restyle:
            for key in list(table._plain):
                table._plain[key] = (None,) * len(QUEUE_COLUMNS)
        self._apply(wanted, removals, reorder=True if (reorder or restyle) else bool(removals))

    def _update_bar(self) -> None:
        bar = Text(no_wrap=True, overflow="ellipsis")
        shown, total = self.table.row_count, len(self.wsmon.rows)
        bar.append(f"{shown} of {total} worksets")
        if self.state_filter is not None:
            bar.append(f" │ state {STATE_SYMBOLS[self.state_filter]} {self.state_filter.value}",
                       style="bold")
        if self.filter_text:
            bar.append(" │ filter ")
            bar.append(repr(self.filter_text), style="bold")
        arrow = "↓" if self.sort_reverse else "↑"
        bar.append(f" │ sort {COLUMN_LABELS[self.sort_column]} {arrow}")
        if self.selected:
            hidden = len(self.selected - set(self.table._plain))
            bar.append(f" │ {len(self.selected)} selected", style="bold")
            if hidden:
                bar.append(f" ({hidden} hidden by the filter)")
        if bar != self._bar_shown:
            self._bar_shown = bar
            self.query_one("#filter-bar", Static).update(bar, layout=False)  # one line, fixed

    # -- filtering and sorting ------------------------------------------------------------
    def action_filter(self) -> None:
        box = self.query_one("#filter-input", Input)
        box.add_class("active")
        box.value = self.filter_text
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter-input":
            self.filter_text = strip_control(event.value).lower().strip()
            self._reconcile()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter-input":
            if not self.filter_text:
                event.input.remove_class("active")
            self.table.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter-input", Input)
        if not (self.filter_text or box.has_class("active") or self.state_filter):
            return
        box.value = ""
        box.remove_class("active")
        self.filter_text = ""
        self.state_filter = None
        self.table.focus()
        self._reconcile()

    def on_key(self, event) -> None:
        box = self.query_one("#filter-input", Input)
        if event.key == "escape" and box.has_focus:
            event.stop()
            self.action_clear_filter()

    def action_state_filter(self, number: int) -> None:
        state = STATE_KEYS[number - 1] if 1 <= number <= len(STATE_KEYS) else None
        self.state_filter = None if state == self.state_filter else state
        self._reconcile()

    def action_sort_next(self) -> None:
        index = (SORTABLE.index(self.sort_column) + 1) % len(SORTABLE)
        self._sort_by(SORTABLE[index], reverse=False)

    def action_sort_reverse(self) -> None:
        self._sort_by(self.sort_column, reverse=not self.sort_reverse)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        column = event.column_key.value
        if column not in SORTABLE:
            return
        reverse = not self.sort_reverse if column == self.sort_column else False
        self._sort_by(column, reverse=reverse)

    def _sort_by(self, column: str, *, reverse: bool) -> None:
        self.sort_column, self.sort_reverse = column, reverse
        self._reconcile(reorder=True)

    # -- selection and actions ------------------------------------------------------------
    def cursor_key(self) -> str | None:
        return self.table.cursor_key()

    def target_keys(self) -> list[str]:
        if self.selected:
            order = {k: i for i, k in enumerate(self.table.ordered_keys())}
            return sorted(self.selected, key=lambda k: (order.get(k, len(order)), k))
        key = self.cursor_key()
        return [key] if key is not None else []

    def action_toggle_select(self) -> None:
        key = self.cursor_key()
        if key is None:
            return
        if key in self.selected:
            self.selected.discard(key)
        else:
            self.selected.add(key)
        row = self.wsmon.rows.get(key)
        if row is not None:
            self._apply({key: row}, [], reorder=False)
        table = self.table
        if table.cursor_row < table.row_count - 1:
            table.move_cursor(row=table.cursor_row + 1)

    def action_clear_selection(self) -> None:
        self._clear_selection()

    def _clear_selection(self) -> None:
        keys, self.selected = self.selected, set()
        rows = self.wsmon.rows
        self._apply({k: rows[k] for k in keys if k in rows and k in self.table._plain}, [],
                    reorder=False)

    def _on_action_done(self, _: str) -> None:
        if self.selected:
            self._clear_selection()

    def action_open(self) -> None:
        key = self.cursor_key()
        if key is not None:
            from wsmon.screens.detail import DetailScreen

            self.app.push_screen(DetailScreen(key))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open()

    def action_release(self) -> None:
        self.wsmon.request_workset_action("release", self.target_keys())

    def action_retry(self) -> None:
        self.wsmon.request_workset_action("retry", self.target_keys())

    def action_rerun(self) -> None:
        self.wsmon.request_workset_action("rerun", self.target_keys())

    def action_stop(self) -> None:
        key = self.cursor_key()
        if key is not None:
            self.wsmon.request_workset_action("stop", [key])

    def action_toggle_ignore(self) -> None:
        keys = self.target_keys()
        rows = self.wsmon.rows
        all_ignored = keys and all(
            rows.get(k) is not None and rows[k].state == WorksetState.IGNORED for k in keys)
        self.wsmon.request_workset_action("unignore" if all_ignored else "ignore", keys)

    def action_priority(self) -> None:
        key = self.cursor_key()
        if key is not None:
            self.wsmon.request_workset_action("priority", [key])
