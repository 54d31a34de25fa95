"""Pick the mode the root command asked for and import only what that mode needs."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wsmon.cli.context import CliContext


def launch(obj: CliContext, *, headless: bool, once: bool, timeout: float | None, demo: bool,
           demo_store: str, engine_mode: str) -> int:
    """Returns the process exit code."""
    if demo:
        from wsmon.demo.run import run_demo

        return run_demo(obj, headless=headless, store_kind=demo_store, timeout=timeout)
    from wsmon.cli.exits import command_settings

    settings = command_settings(obj)  # a broken config exits 2, as for every subcommand
    if headless:
        from wsmon.engine.process import run_headless, run_once

        if once or not settings.continuous:  # continuous = false: the Daylily monitor's one-scan mode
            return run_once(settings, timeout=timeout)
        return run_headless(settings)
    from wsmon.app import run_dashboard

    return run_dashboard(settings, engine_mode=engine_mode)
