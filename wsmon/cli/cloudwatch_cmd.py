"""``wsmon cloudwatch install [--dry-run] [--sns-topic ARN]`` and ``wsmon cloudwatch uninstall``:
the alarms and dashboard of wsmon/engine/cloudwatch_setup.py, one line per alarm or dashboard
saying what was (or, with --dry-run, would be) done."""

from __future__ import annotations

from typing import Any

import click

from wsmon.cli.context import CliContext
from wsmon.cli.exits import EXIT_USAGE, CommandError, command_settings


def _client(settings: Any) -> Any:
    from wsmon.core.aws import client

    aws = settings.aws
    return client("cloudwatch", profile=aws.profile, region=aws.region,
                  endpoint_url=aws.endpoint_url, max_attempts=aws.max_attempts)


def _plan(obj: CliContext, monitor_ids: tuple[str, ...], sns_topic: str | None,
          group: str | None) -> tuple[Any, Any]:
    from wsmon.engine.cloudwatch_setup import plan

    settings = command_settings(obj)
    return settings, plan(settings, monitor_ids=list(monitor_ids) or [settings.effective_monitor_id],
                          sns_topic=sns_topic, group=group)


def _run(step: Any) -> Any:
    from botocore.exceptions import BotoCoreError, ClientError

    from wsmon.core.aws import describe_client_error

    try:
        return step()
    except (BotoCoreError, ClientError) as exc:
        raise CommandError(f"CloudWatch: {describe_client_error(exc)}", 1) from None


@click.group()
def cloudwatch() -> None:
    """CloudWatch alarms and dashboard that watch wsmon from outside the engine."""


_group_option = click.option("--group", metavar="NAME",
                             help="Monitor group (default: the store's table or file name).")
_monitor_option = click.option("--monitor-id", "monitor_ids", multiple=True, metavar="ID",
                               help="Engine(s) to alarm on (repeat; default: this configuration's monitor id).")


@cloudwatch.command("install")
@click.option("--dry-run", is_flag=True, help="Say what would change; change nothing.")
@click.option("--sns-topic", metavar="ARN", help="Alarm and OK action (default: notify.sns_topic_arn).")
@_monitor_option
@_group_option
@click.pass_obj
def install_cmd(obj: CliContext, dry_run: bool, sns_topic: str | None,
                monitor_ids: tuple[str, ...], group: str | None) -> None:
    """Create or update the alarms and the wsmon-<group> dashboard (idempotent)."""
    from wsmon.engine.cloudwatch_setup import describe, install

    settings = command_settings(obj)
    topic = sns_topic or settings.notify.sns_topic_arn
    if topic is not None and not topic.startswith("arn:"):
        raise CommandError(f"--sns-topic: not an ARN: {topic!r}", EXIT_USAGE)
    _, desired = _plan(obj, monitor_ids, topic, group)
    changes = _run(lambda: install(_client(settings), desired, dry_run=dry_run))
    for line in describe(changes):
        click.echo(f"would {line}" if dry_run else line)
    if topic is None:
        click.echo("note: no SNS topic (--sns-topic or notify.sns_topic_arn): the alarms notify nobody",
                   err=True)


@cloudwatch.command("uninstall")
@click.option("--dry-run", is_flag=True, help="Say what would be deleted; delete nothing.")
@_monitor_option
@_group_option
@click.pass_obj
def uninstall_cmd(obj: CliContext, dry_run: bool, monitor_ids: tuple[str, ...],
                  group: str | None) -> None:
    """Delete exactly what install created (alarms and dashboard carrying its mark)."""
    from wsmon.engine.cloudwatch_setup import describe, uninstall

    settings, desired = _plan(obj, monitor_ids, None, group)
    changes = _run(lambda: uninstall(_client(settings), desired, dry_run=dry_run))
    for line in describe(changes) or ["nothing of wsmon's found"]:
        click.echo(f"would {line}" if dry_run else line)
