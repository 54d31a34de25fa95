"""``?``: every key of the screen underneath, with the binding id to rebind it in [keymap]."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape", "close", "Close", id="help-close"),
        Binding("question_mark", "close", "Close", id="help-close-again", show=False),
        Binding("q", "close", "Close", id="help-close-q", show=False),
    ]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > #help { width: 90; max-width: 100%; height: auto; max-height: 100%;
        border: round $primary; background: $surface; padding: 0 1; }
    """

    def __init__(self, target: Screen) -> None:
        super().__init__()
        self.target = target
        self.rows = self._collect(target)

    def _collect(self, target: Screen) -> list[tuple[str, str, str]]:
        """(keys, what it does, binding id) per action, in binding order."""
        grouped: dict[tuple[str, str], list[Any]] = {}
        for active in target.active_bindings.values():
            binding = active.binding
            if binding.system:
                continue
            ident = (binding.action, binding.id or "")
            description = binding.tooltip or binding.description or binding.action
            entry = grouped.setdefault(ident, [[], description])
            entry[0].append(self.app.get_key_display(binding))
        rows = [(", ".join(keys), description, ident[1])
                for ident, (keys, description) in grouped.items()]
        # wsmon's own keys (they have ids) first, then the widgets' navigation keys
        return [r for r in rows if r[2]] + [r for r in rows if not r[2]]

    def compose(self) -> ComposeResult:
        table = Table(box=None, show_edge=False, pad_edge=False, expand=True)
        table.add_column("key", style="bold", no_wrap=True)
        table.add_column("does")
        table.add_column("binding id", style="dim", no_wrap=True)
        for key, description, ident in self.rows:
            table.add_row(Text(key), Text(description), Text(ident))
        title = getattr(self.target, "SCREEN_NAME", "") or type(self.target).__name__
        with VerticalScroll(id="help"):
            yield Static(Text(f"Keys on {title} (rebind in config: [keymap] id = \"key\")",
                              style="bold"))
            yield Static(table)

    def action_close(self) -> None:
        self.dismiss(None)
