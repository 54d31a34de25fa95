"""The ``wsmon`` command.

``wsmon`` opens the dashboard, ``wsmon --headless`` runs the engine as a service, ``wsmon --demo``
runs the whole system against an embedded AWS endpoint. Subcommands are the scriptable companion.

Subcommand modules are imported only when that subcommand runs, so ``wsmon --help`` and
``wsmon --headless`` never import Textual (tests/test_import_hygiene.py).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import click

from wsmon import __version__
from wsmon.cli.context import CliContext

# name -> "module:attribute"; help text is kept here so --help never imports the module.
LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "store": ("wsmon.cli.store_cmd:store", "Create or inspect the state store (store init)."),
    "config": ("wsmon.cli.config_cmd:config", "Show or check the effective configuration."),
    "scan": ("wsmon.cli.discovery_cmd:scan", "One S3 discovery pass: what it found and changed."),
    "s3-events": ("wsmon.cli.s3_events_cmd:s3_events", "S3 event notifications: s3-events setup, s3-events status."),
    "validate": ("wsmon.cli.discovery_cmd:validate", "Validate a workset folder (S3 or local)."),
    "iam-policy": ("wsmon.cli.engine_cmd:iam_policy", "Print the least-privilege IAM policy."),
    "notify": ("wsmon.cli.notify_cmd:notify", "Notification channels: notify test, notify status."),
    "list": ("wsmon.cli.ops_cmd:list_cmd", "List worksets."),
    "show": ("wsmon.cli.ops_cmd:show", "Show one workset."),
    "events": ("wsmon.cli.ops_cmd:events", "A workset's state history, or --actions: every operator action."),
    "release": ("wsmon.cli.ops_cmd:release", "Take back the lock of a holder that is gone."),
    "stop": ("wsmon.cli.ops_cmd:stop", "End a running pipeline (to ignored or error)."),
    "retry": ("wsmon.cli.ops_cmd:retry", "Send a workset back to ready."),
    "ignore": ("wsmon.cli.ops_cmd:ignore", "Ignore a workset (or --undo)."),
    "priority": ("wsmon.cli.ops_cmd:priority", "Change a workset's priority."),
    "alerts": ("wsmon.cli.ops_cmd:alerts", "List alerts."),
    "ack": ("wsmon.cli.ops_cmd:ack", "Acknowledge an alert."),
    "silence": ("wsmon.cli.ops_cmd:silence", "Silence alerts for a while."),
    "unsilence": ("wsmon.cli.ops_cmd:unsilence", "End a silence now."),
    "resolve": ("wsmon.cli.ops_cmd:resolve", "Resolve an alert by hand, with a reason."),
    "monitors": ("wsmon.cli.ops_cmd:monitors", "Engines and dashboards seen by the store."),
    "health": ("wsmon.cli.health_cmd:health", "Is wsmon healthy? One line, Nagios exit code (0/1/2)."),
    "systemd-unit": ("wsmon.cli.systemd_cmd:systemd_unit", "Print the systemd unit (Type=notify, watchdog, hardening)."),
    "cloudwatch": ("wsmon.cli.cloudwatch_cmd:cloudwatch", "CloudWatch alarms and dashboard: cloudwatch install, cloudwatch uninstall."),
    "usage": ("wsmon.cli.usage_cmd:usage", "vCPU-hours and cost per customer, cluster or priority."),
    "completion": ("wsmon.cli.ops_cmd:completion", "Print the shell completion script (bash, zsh, fish)."),
    "serve": ("wsmon.cli.serve_cmd:serve", "Serve the HTTP API: REST, event stream, /metrics."),
    "web": ("wsmon.cli.serve_cmd:web", "The dashboard in a browser (read-only unless --allow-actions)."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(LAZY_COMMANDS))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in LAZY_COMMANDS:
            target, _ = LAZY_COMMANDS[name]
            module_name, attr = target.split(":")
            from wsmon.cli.global_options import add_global_options

            return add_global_options(getattr(importlib.import_module(module_name), attr), self)
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context) -> object:
        from wsmon.core.aws import NoRegion

        try:
            return super().invoke(ctx)
        except NoRegion as exc:  # wherever an AWS client was needed: a configuration error
            from wsmon.cli.exits import EXIT_USAGE, CommandError

            raise CommandError(str(exc), EXIT_USAGE) from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, LAZY_COMMANDS[name][1]) for name in sorted(LAZY_COMMANDS)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="wsmon")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML config file (default: $XDG_CONFIG_HOME/wsmon/config.toml).")
@click.option("--daylily-yaml", "daylily_yaml", type=click.Path(dir_okay=False, path_type=Path),
              help="Read settings from an earlier Daylily monitor YAML config.")
@click.option("--store", "store_url", metavar="URL",
              help="State store: sqlite:///PATH or dynamodb://TABLE?region=R[&endpoint_url=U].")
@click.option("--headless", is_flag=True, help="Run the engine as a service (no dashboard); JSON logs on stdout.")
@click.option("--once", is_flag=True, help="With --headless: one full cycle, then exit.")
@click.option("--timeout", type=float, metavar="SECONDS", help="With --once: give up waiting after this long. With --demo --headless: stop after this long.")
@click.option("--demo", is_flag=True, help="Run everything against an embedded AWS endpoint with seeded worksets.")
@click.option("--demo-store", type=click.Choice(["dynamodb", "sqlite"]), default="dynamodb", show_default=True,
              help="With --demo: which store backend to use.")
@click.option("--read-only", is_flag=True, default=None, help="Dashboard: hide every action that changes state.")
@click.option("--theme", metavar="NAME", help="Dashboard theme (wsmon-dark, wsmon-light, wsmon-high-contrast, wsmon-ansi).")
@click.option("--attach", "engine_mode", flag_value="attach", help="Dashboard only: never run an engine in this process.")
@click.option("--engine", "engine_mode", flag_value="engine", help="Always run an engine in this process.")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, daylily_yaml: Path | None, store_url: str | None, headless: bool, once: bool,
        timeout: float | None, demo: bool, demo_store: str, read_only: bool | None, theme: str | None,
        engine_mode: str | None) -> None:
    """wsmon: watch, schedule and run Daylily genomics worksets on AWS.

    With no command, opens the dashboard.
    """
    from wsmon.cli.global_options import apply_global_option

    obj = ctx.ensure_object(CliContext)
    for name, value in (("config_path", config_path), ("daylily_yaml", daylily_yaml), ("store_url", store_url)):
        apply_global_option(obj, name, value)  # the same options after the subcommand: global_options.py
    obj.set_override("ui.read_only", read_only)
    obj.set_override("ui.theme", theme)
    if ctx.invoked_subcommand is not None:
        return
    if once and not headless:
        raise click.UsageError("--once goes with --headless")
    from wsmon.cli.launch import launch  # imports only what the chosen mode needs

    code = launch(obj, headless=headless, once=once, timeout=timeout, demo=demo,
                  demo_store=demo_store, engine_mode=engine_mode or "auto")
    ctx.exit(code or 0)


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="wsmon")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
