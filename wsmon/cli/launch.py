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
    from wsmon.cli.exits import EXIT_USAGE, CommandError, command_settings
    from wsmon.config.aws_region import profile_problem, region_problem

    settings = command_settings(obj)  # a broken config exits 2, as for every subcommand
    problem = profile_problem(settings) or region_problem(settings)
    if problem:  # refuse before anything starts: never guess a region or a profile
        raise CommandError(problem, EXIT_USAGE)
    if headless:
        from wsmon.engine.process import run_headless, run_once

        if once or not settings.continuous:  # continuous = false: the Daylily monitor's one-scan mode
            return run_once(settings, timeout=timeout)
        if settings.api.enabled:  # [api] enabled: the HTTP API beside the engine, in this process
            from wsmon.cli.serve_cmd import api_beside

            with api_beside(settings):
                return run_headless(settings)
        return run_headless(settings)
    from wsmon.app import run_dashboard

    return run_dashboard(settings, engine_mode=engine_mode)
