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

    def compose_footer(self) -> ComposeResult:
        yield Footer(compact=True, show_command_palette=True)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        from wsmon.app import MUTATING_ACTIONS

        if self.wsmon.read_only and action in MUTATING_ACTIONS:
            return False
        return True
