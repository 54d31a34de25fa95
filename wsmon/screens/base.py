"""What every dashboard screen shares: header, store banner, footer, read-only gating."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer

from wsmon.widgets.header import StatusHeader, StoreBanner

if TYPE_CHECKING:
    from wsmon.app import WsmonApp


class WsmonScreen(Screen):
    SCREEN_NAME = "wsmon"

    @property
    def wsmon(self) -> WsmonApp:
        return self.app  # type: ignore[return-value]

    def compose_header(self) -> ComposeResult:
        yield StatusHeader(self.SCREEN_NAME)
        yield StoreBanner()

    def wire_table(self, table, columns) -> None:
        """For a screen built around one table that it rebuilds from each snapshot: its columns,
        the refresh stream and theme changes. The screen provides ``_columns_fitted``,
        ``_on_snapshot`` and ``rebuild(restyle=False)``."""
        table.set_columns(columns)
        table.fitted_callback = self._columns_fitted
        self.wsmon.snapshot_signal.subscribe(self, self._on_snapshot, immediate=True)
        self.wsmon.theme_changed_signal.subscribe(self, lambda _: self.rebuild(restyle=True))
        self.rebuild()
        table.focus()

    def compose_footer(self) -> ComposeResult:
        yield Footer(compact=True, show_command_palette=True)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Read-only keeps every key: pressing a store-changing one says why it is refused
        # (WsmonApp.run_action), instead of a dead key that looks like a hung screen.
        return True
