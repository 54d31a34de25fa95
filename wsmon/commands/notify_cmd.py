"""``wsmon notify``: check the notification channels.

``wsmon notify test`` sends a test message straight through each configured channel (not via
the outbox, so the answer is immediate) and prints one line per channel. Linear is checked (API key
and team) rather than sent to, so a test never opens an issue. Exit code 1 when any channel failed.
"""

from __future__ import annotations

import json

import click

from wsmon.cli import CliContext, actor
from wsmon.textsafe import strip_control


@click.group()
def notify() -> None:
    """Notification channels (SNS, Linear, Slack webhook)."""


@notify.command("test")
@click.option("--channel", "channel", metavar="NAME", help="Only this channel (sns, linear, slack).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.pass_obj
def test(obj: CliContext, channel: str | None, as_json: bool) -> None:
    """Send a test message through each configured channel and report the result per channel."""
    from wsmon.config import ConfigError
    from wsmon.engine.notify import build_channels, test_channels

    settings = obj.settings()
    try:
        channels = build_channels(settings, None)
    except ConfigError as exc:
        raise click.ClickException("configuration problems:\n  " + "\n  ".join(exc.problems)) from None
    if not channels:
        raise click.ClickException(
            "no notification channel is configured: set notify.sns_topic_arn, notify.linear_team_id "
            "with WSMON_LINEAR_API_KEY (or notify.linear_api_key_file), or WSMON_SLACK_WEBHOOK_URL "
            "(or notify.slack_webhook_url_file)")
    if channel is not None and channel not in channels:
        raise click.ClickException(
            f"channel {strip_control(channel)!r} is not configured; configured: {', '.join(sorted(channels))}")
    try:
        results = test_channels(channels, channel, actor=actor())
    finally:
        for ch in channels.values():
            ch.close()
    if as_json:
        click.echo(json.dumps([{"channel": r.channel, "ok": r.ok, "detail": r.detail} for r in results],
                              indent=2))
    else:
        width = max(len(r.channel) for r in results)
        for r in results:
            status = "ok" if r.ok else "FAILED"
            click.echo(f"{r.channel:<{width}}  {status:<6}  {strip_control(r.detail)}")
    failed = [r.channel for r in results if not r.ok]
    if failed:
        raise click.exceptions.Exit(1)
