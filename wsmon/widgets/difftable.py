"""A DataTable that takes diffs: update cells in place, add and remove only the rows that changed.

Thousands of rows refresh every couple of seconds, so the table is never cleared: the cursor and
the scroll position stay on the same row key, and only the cells whose text changed are touched.
Columns have fixed widths so adding rows never measures their text.

Implementation note: bulk removal and ordering by row key replace DataTable's O(n)-per-row
``remove_row`` and column-value ``sort``; they use DataTable internals (``_data``,
``_row_locations``), which is why textual is pinned below 9 in pyproject.toml.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich.padding import Padding
from rich.text import Text
from textual._two_way_dict import TwoWayDict
from textual.geometry import Region
from textual.widgets import DataTable
from textual.widgets._data_table import CellKey, Row, RowKey

from wsmon.core.textsafe import middle_cut


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """A column that adapts to the terminal: ``width`` when there is room for every column at
    that width, else ``narrow`` (and the ``short`` header); spare width goes to columns with
    ``grow`` (by weight, up to ``max``). Text wider than its column ends in an ellipsis."""

    key: str
    label: str
    width: int
    narrow: int | None = None
    short: str | None = None
    grow: int = 0
    max: int | None = None
    gap: int = 1  # blank cells left of the column
    cut: str = "end"  # where text too wide is cut: "end" or "middle" (ids differ at both ends)


@dataclass(frozen=True, slots=True)
class ColumnLayout:
    compact: bool
    widths: tuple[int, ...]
    labels: tuple[str, ...]


def fit_columns(specs: Sequence[ColumnSpec], available: int) -> ColumnLayout:
    """Widths for ``available`` cells: the roomy layout if it fits, else the compact one, then
    spare cells shared by ``grow`` weight. Pure, so the layout is tested without a terminal."""
    gaps = sum(s.gap for s in specs)
    compact = available < gaps + sum(s.width for s in specs)
    widths = [(s.narrow or s.width) if compact else s.width for s in specs]
    spare = available - gaps - sum(widths)
    growing = [i for i, s in enumerate(specs) if s.grow]
    while spare > 0 and growing:
        total = sum(specs[i].grow for i in growing)
        shares = {i: spare * specs[i].grow // total for i in growing}
        if not any(shares.values()):
            shares[max(growing, key=lambda i: specs[i].grow)] = spare
        for i in list(growing):
            cap = specs[i].max
            give = shares[i] if cap is None else min(shares[i], cap - widths[i])
            widths[i] += give
            spare -= give
            if cap is not None and widths[i] >= cap:
                growing.remove(i)
    labels = tuple((s.short or s.label) if compact else s.label for s in specs)
    return ColumnLayout(compact, tuple(widths), labels)


class DiffTable(DataTable):
    DEFAULT_CSS = """
    DiffTable { height: 1fr; }
    """
    # class-level defaults: DataTable.__init__ already reads ordered_rows via its watchers
    _structure_version = 0
    _ordered_cache: tuple[tuple[int, int], list[Row]] | None = None
    _offsets_cache: tuple[tuple[int, int], list[tuple[RowKey, int]]] | None = None

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("cursor_type", "row")
        kwargs.setdefault("zebra_stripes", False)
        # gaps between columns come from ColumnSpec.gap (one cell instead of two), so that
        # every queue column fits 80 columns
        kwargs.setdefault("cell_padding", 0)
        super().__init__(**kwargs)
        self._plain: dict[str, tuple[Any, ...]] = {}
        self._column_keys: list[str] = []
        self._specs: list[ColumnSpec] = []
        self.column_layout: ColumnLayout | None = None
        # called on the UI thread when the layout changes (a screen re-renders compact cells)
        self.fitted_callback: Callable[[ColumnLayout], None] | None = None
        # Row order/offset caches keyed by structure (rows added, removed or reordered) rather
        # than by DataTable's _update_count, which every cell update bumps: recomputing them is
        # O(rows) and a refresh that changes 100 cells of 10,000 rows must not pay that.

    def set_columns(self, columns: Sequence[ColumnSpec]) -> None:
        self._specs = list(columns)
        for spec in self._specs:
            self.add_column(spec.label, key=spec.key, width=spec.width + spec.gap)
        self._column_keys = [spec.key for spec in self._specs]
        if self.size.width:
            self.fit_width(self.size.width)

    def on_resize(self) -> None:
        self.fit_width(self.size.width)

    def fit_width(self, width: int) -> None:
        """Lay the columns out for ``width`` cells (one kept for the vertical scrollbar, so the
        layout does not flip when rows start to overflow)."""
        if not self._specs or width <= 0:
            return
        layout = fit_columns(self._specs, width - 1)
        if layout == self.column_layout:
            return
        self.column_layout = layout
        for spec, column, width_, label in zip(self._specs, self.ordered_columns,
                                                layout.widths, layout.labels):
            column.width = width_ + spec.gap
            column.label = Text(label)
        self._clear_caches()
        self._require_update_dimensions = True
        self._update_count += 1
        self.refresh(layout=True)
        if self.fitted_callback is not None:
            self.fitted_callback(layout)

    def width_of(self, key: str) -> int | None:
        if self.column_layout is None:
            return None
        return self.column_layout.widths[self._column_keys.index(key)]

    def _compute_row_renderables(self, row_index: int):
        renderables = super()._compute_row_renderables(row_index)
        if not self._specs:
            return renderables
        # Copies: DataTable hands out stored Text objects (Text cells, header labels, a shared
        # empty cell). Padding the text itself draws cheaper than a Padding renderable per cell.
        cells = []
        widths = self.column_layout.widths if self.column_layout else ()
        for i, (spec, cell) in enumerate(zip(self._specs, renderables.cells)):
            if isinstance(cell, Text):
                width = widths[i] if i < len(widths) else spec.width
                if spec.cut == "middle" and cell.cell_len > width and row_index >= 0:
                    head, tail = middle_cut(len(cell), width)
                    cell = Text.assemble(cell[:head], "…", cell[len(cell) - tail:] if tail else "")
                else:
                    cell = cell.copy()
                cell.overflow = "ellipsis"
                cell.no_wrap = True
                if spec.gap:
                    cell.pad_left(spec.gap)
            elif spec.gap:
                cell = Padding(cell, (0, 0, 0, spec.gap))
            cells.append(cell)
        return type(renderables)(renderables.label, cells)

    # -- reading -------------------------------------------------------------------------------
    @property
    def keys(self) -> set[str]:
        return set(self._plain)

    def cursor_key(self) -> str | None:
        if not self.row_count:
            return None
        try:
            row_key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        except Exception:
            return None
        return row_key.value

    def ordered_keys(self) -> list[str]:
        locations = self._row_locations
        return [k.value for k in sorted(self._data, key=lambda rk: locations.get(rk))]

    # -- writing -------------------------------------------------------------------------------
    def apply_diff(self, upserts: Mapping[str, Sequence[Any]], removals: Iterable[str],
                   plain: Mapping[str, tuple[Any, ...]],
                   order: Callable[[str], Any] | None = None, reverse: bool = False,
                   reorder: bool = False) -> tuple[int, int, int]:
        """Apply changes; returns (updated, added, removed) row counts.

        ``upserts``: key -> renderable cells (one per column); ``plain``: key -> a comparable
        form of the same cells, to skip cells whose text did not change. ``order``: sort key by
        row key, applied when rows were added or ``reorder`` is set.
        """
        cursor_key = self.cursor_key()
        cursor_offset = self.cursor_row - int(self.scroll_y) if cursor_key is not None else 0
        updated = added = removed = 0
        with self.app.batch_update():
            gone = [k for k in removals if k in self._plain]
            if gone:
                self._remove_rows(gone)
                removed = len(gone)
            # Direct writes instead of add_row/update_cell: those refresh, re-sort columns and
            # re-check the cursor once per call, which dominates with thousands of rows.
            columns = list(self.ordered_columns)
            column_keys = [c.key for c in columns]
            data, locations, rows = self._data, self._row_locations, self.rows
            was_empty = not data
            touched: set[RowKey] = set()
            for key, cells in upserts.items():
                new_plain = plain[key]
                old_plain = self._plain.get(key)
                if old_plain is None:
                    row_key = RowKey(key)
                    locations[row_key] = len(data)
                    data[row_key] = dict(zip(column_keys, cells))
                    rows[row_key] = Row(row_key, 1, None, False)
                    added += 1
                elif old_plain != new_plain:
                    row_key = RowKey(key)
                    row_data = data[row_key]
                    for i, column_key in enumerate(column_keys):
                        if old_plain[i] != new_plain[i]:
                            row_data[column_key] = cells[i]
                    touched.add(row_key)
                    updated += 1
                else:
                    continue
                self._plain[key] = new_plain
            if added:
                self._structure_changed()
                self._require_update_dimensions = True
                self.cursor_coordinate = self.cursor_coordinate
                if was_empty and self.show_cursor and self.cursor_type != "none":
                    self._highlight_cursor()
            if added:
                self._update_count += 1
                self.check_idle()
                self.refresh()
            elif updated:
                # Only cells changed: forget just those rows' renders instead of bumping
                # _update_count, which would re-render every visible cell of the table, and
                # repaint only the lines of those rows that are on screen (most of a refresh's
                # changes are scrolled out of view and cost nothing until scrolled to). Rows
                # removed or reordered: _remove_rows / order_rows repaint the whole window.
                self._forget_rendered(touched)
                if not (removed or (reorder and order is not None)):
                    self._repaint_rows(touched)
            if order is not None and (added or reorder):
                self.order_rows(order, reverse)
            if cursor_key is not None and (added or removed or reorder):
                self._restore_cursor(cursor_key, cursor_offset)
        return updated, added, removed

    def _forget_rendered(self, row_keys: set[RowKey]) -> None:
        for cache in (self._cell_render_cache, self._row_render_cache):
            for cache_key in [k for k in cache.keys() if k[0] in row_keys]:
                cache.discard(cache_key)
        indices = {self._row_locations.get(k) for k in row_keys}
        for cache_key in [k for k in self._row_renderable_cache.keys() if k[1] in indices]:
            self._row_renderable_cache.discard(cache_key)
        self._line_cache.clear()

    def _repaint_rows(self, row_keys: set[RowKey]) -> None:
        # rows are one line each (apply_diff adds them so), below the header
        header = self.header_height if self.show_header else 0
        first = int(self.scroll_y)
        last = first + self.size.height - header
        width = max(self.size.width, self.virtual_size.width)
        locations = self._row_locations
        for row_key in row_keys:
            index = locations.get(row_key)
            if index is not None and first <= index < last:
                self._refresh_region(Region(0, header + index, width, 1))

    def order_rows(self, order: Callable[[str], Any], reverse: bool = False) -> None:
        ordered = sorted(self._data, key=lambda rk: order(rk.value), reverse=reverse)
        self._row_locations = TwoWayDict({rk: i for i, rk in enumerate(ordered)})
        self._forget_positions()

    def _forget_positions(self) -> None:
        """Rows moved: forget what is cached by row index or screen line, and repaint. Each
        cell's own render stays (DataTable keys it by row key, with cursor and hover), so a
        re-sort redraws the window from cached cells instead of parsing every cell again,
        which bumping _update_count would make it do."""
        self._row_renderable_cache.clear()
        self._row_render_cache.clear()
        self._line_cache.clear()
        self._structure_changed()
        self.refresh()

    def _remove_rows(self, keys: list[str]) -> None:
        for key in keys:
            row_key = RowKey(key)
            for column_key in self._data.get(row_key, {}):
                self._updated_cells.discard(CellKey(row_key, column_key))
            self.rows.pop(row_key, None)
            self._data.pop(row_key, None)
            self._plain.pop(key, None)
        locations = self._row_locations
        remaining = sorted(self._data, key=lambda rk: locations.get(rk))
        self._row_locations = TwoWayDict({rk: i for i, rk in enumerate(remaining)})
        self._structure_changed()
        self._require_update_dimensions = True
        self.cursor_coordinate = self.cursor_coordinate
        self._update_count += 1
        self.refresh(layout=True)

    def _restore_cursor(self, key: str, offset: int) -> None:
        index = self._row_locations.get(RowKey(key))
        if index is None:
            return
        self.move_cursor(row=index, scroll=False)
        target = max(0, index - offset)
        self.call_after_refresh(self.scroll_to, y=target, animate=False, immediate=True)

    def move_to_key(self, key: str) -> bool:
        index = self._row_locations.get(RowKey(key))
        if index is None:
            return False
        self.move_cursor(row=index)
        return True

    def _structure_changed(self) -> None:
        self._structure_version += 1

    @property
    def ordered_rows(self) -> list[Row]:
        key = (len(self.rows), self._structure_version)
        cached = self._ordered_cache
        if cached is None or cached[0] != key:
            get_key, rows = self._row_locations.get_key, self.rows
            cached = (key, [rows[get_key(i)] for i in range(len(rows))])
            self._ordered_cache = cached
        return cached[1]

    @property
    def _y_offsets(self) -> list[tuple[RowKey, int]]:
        key = (len(self.rows), self._structure_version)
        cached = self._offsets_cache
        if cached is None or cached[0] != key:
            offsets: list[tuple[RowKey, int]] = []
            for row in self.ordered_rows:
                if row.height == 1:
                    offsets.append((row.key, 0))
                else:
                    offsets.extend((row.key, y) for y in range(row.height))
            cached = (key, offsets)
            self._offsets_cache = cached
        return cached[1]

    # Rows are one line each (apply_diff adds them so): a line's row is the row at that place,
    # found without the list of every row's lines that DataTable rebuilds after each re-sort.
    _tall_rows = False

    @property
    def _total_row_height(self) -> int:
        return super()._total_row_height if self._tall_rows else len(self.rows)

    def _get_offsets(self, y: int) -> tuple[RowKey, int]:
        if self._tall_rows:
            return super()._get_offsets(y)
        if self.show_header:
            if y < self.header_height:
                return self._header_row_key, y
            y -= self.header_height
        if not 0 <= y < len(self.rows):
            raise LookupError(f"Y coord {y!r} is past the last row")
        return self._row_locations.get_key(y), 0

    def add_row(self, *args: Any, **kwargs: Any) -> RowKey:
        if kwargs.get("height", 1) != 1:
            self._tall_rows = True
        self._structure_changed()
        return super().add_row(*args, **kwargs)

    def remove_row(self, row_key: RowKey | str) -> None:
        self._structure_changed()
        super().remove_row(row_key)

    def clear(self, columns: bool = False) -> DiffTable:
        self._structure_changed()
        self._plain.clear()
        super().clear(columns)
        return self

    def sort(self, *args: Any, **kwargs: Any) -> DiffTable:
        self._structure_changed()
        super().sort(*args, **kwargs)
        return self

    def _update_dimensions(self, new_rows: Iterable[RowKey]) -> None:
        # Fixed-width, one-line rows: nothing about a new row changes the table's dimensions,
        # so skip measuring every cell of every new row (the slow part of adding 10,000 rows).
        if self.columns and not any(c.auto_width for c in self.columns.values()):
            new_rows = ()
        super()._update_dimensions(new_rows)


def text_cell(value: str, style: str = "") -> Text:
    """A cell that is never parsed as markup (values are already stripped of control characters)."""
    return Text(value, style=style, no_wrap=True, overflow="ellipsis")
