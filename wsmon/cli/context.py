"""What every subcommand receives from the root command: the settings and the store, loaded on first use.

It lives apart from the click root (main.py) so a command group depends on this small object, not on
the entry point that lists every command.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from wsmon.config.settings import Settings
    from wsmon.engine.store import Store


@dataclass
class CliContext:
    """What every subcommand needs: settings and the store, loaded on first use."""

    config_path: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    _settings: Settings | None = None
    _store: Store | None = None

    def settings(self) -> Settings:
        if self._settings is None:
            from wsmon.config import ConfigError, load_settings

            try:
                self._settings = load_settings(self.config_path, self.overrides)
            except ConfigError as exc:
                raise click.ClickException("configuration problems:\n  " + "\n  ".join(exc.problems)) from None
        return self._settings

    def open_store(self, *, create: bool = True) -> Store:
        if self._store is None:
            from wsmon.engine.store import StoreError
            from wsmon.engine.store.from_settings import open_store_from_settings

            try:
                self._store = open_store_from_settings(self.settings(), create=create)
            except StoreError as exc:
                raise click.ClickException(str(exc)) from None
        return self._store

    def set_override(self, dotted: str, value: Any) -> None:
        """``store.url`` = value as if the configuration said so (command-line flags); None leaves it."""
        if value is None:
            return
        node = self.overrides
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
