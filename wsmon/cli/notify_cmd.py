"""``wsmon notify``: check the notification channels.

``wsmon notify test`` sends a test message straight through each configured channel (not via
the outbox, so the answer is immediate) and prints one line per channel. Linear is checked (API key
and team) rather than sent to, so a test never opens an issue. Exit code 1 when any channel failed,
2 for a configuration problem (none configured, unknown channel, unreadable secret file) and 4 when
the store cannot be opened or reached (``notify status``), as every command (wsmon/cli/exits.py).
"""

from __future__ import annotations

import json

import click

from wsmon.cli.context import CliContext
from wsmon.core.identity import operator_actor as actor
from wsmon.cli.exits import (
    EXIT_CODES_HELP,
    EXIT_REFUSED,
    EXIT_USAGE,
    CommandError,
    command_settings,
    open_command_store,
)
from wsmon.core.textsafe import strip_control


@click.group()
def notify() -> None:
    """Notification channels (SNS, Linear, Slack webhook)."""


@notify.command("test", epilog=EXIT_CODES_HELP)
@click.option("--channel", "channel", metavar="NAME", help="Only this channel (sns, linear, slack).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.pass_obj
def test(obj: CliContext, channel: str | None, as_json: bool) -> None:
    """Send a test message through each configured channel and report the result per channel."""
    from wsmon.config.settings import ConfigError
    from wsmon.engine.notify import build_channels, test_channels

    settings = command_settings(obj)
    try:
        channels = build_channels(settings, None)
    except ConfigError as exc:
        raise CommandError("configuration problems:\n  " + "\n  ".join(exc.problems),
                           EXIT_USAGE) from None
    if not channels:
        raise CommandError(
            "no notification channel is configured: set notify.sns_topic_arn, notify.linear_team_id "
            "with WSMON_LINEAR_API_KEY (or notify.linear_api_key_file), or WSMON_SLACK_WEBHOOK_URL "
            "(or notify.slack_webhook_url_file)", EXIT_USAGE)
    if channel is not None and channel not in channels:
        raise CommandError(
            f"channel {strip_control(channel)!r} is not configured; configured: {', '.join(sorted(channels))}",
            EXIT_USAGE)
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
        raise click.exceptions.Exit(EXIT_REFUSED)


@notify.command("status", epilog=EXIT_CODES_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@click.pass_obj
def status(obj: CliContext, as_json: bool) -> None:
    """Outbox entries per channel and status, and each channel's last delivery outcome."""
    from wsmon.engine.notify import HEALTH_NAMESPACE, outbox_summary

    with open_command_store(obj) as store:
        counts = outbox_summary(store)
        health = store.kv_get_all(HEALTH_NAMESPACE) or {}
    names = sorted(set(counts) | set(health))
    if as_json:
        click.echo(json.dumps({n: {"outbox": counts.get(n, {}), "health": health.get(n)} for n in names},
                              indent=2, default=str))
        return
    if not names:
        click.echo("no notifications yet")
        return
    for name in names:
        c = counts.get(name, {})
        h = health.get(name) or {}
        outbox = ", ".join(f"{k} {c[k]}" for k in ("pending", "delivered", "dead") if c.get(k)) or "empty"
        if not h:
            state = "no delivery attempted"
        elif h.get("ok"):
            state = f"ok (last success {h.get('last_success_at', '?')})"
        else:
            state = (f"FAILING x{h.get('consecutive_failures', '?')} since {h.get('last_failure_at', '?')}: "
                     f"{strip_control(h.get('last_error') or '?')}")
        click.echo(f"{name}: outbox {outbox}; {state}")
