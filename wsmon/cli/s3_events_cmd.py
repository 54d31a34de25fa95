"""``wsmon s3-events``: set up S3 event notifications for a source, and see how they are doing.

``setup`` creates the queue and its dead-letter queue, the queue policy and the bucket's
notification rule (merged with the bucket's existing configuration; wsmon/engine/s3/event_setup.py)
and prints the ``events_queue`` setting and the IAM statements the engine needs. ``status`` shows
each configured queue's depth, its dead-letter queue's depth, the mode and the last event time.
"""

from __future__ import annotations

import json
from typing import Any

import click

from wsmon.cli.context import CliContext
from wsmon.cli.exits import (
    EXIT_CODES_HELP,
    EXIT_REFUSED,
    EXIT_SOURCE,
    EXIT_USAGE,
    CommandError,
    command_settings,
    open_command_store,
)
from wsmon.core.textsafe import strip_control


def _client(settings: Any, service: str) -> Any:
    from wsmon.core import aws

    return aws.client(service, profile=settings.aws.profile, region=settings.aws.region,
                      endpoint_url=settings.aws.endpoint_url, max_attempts=settings.aws.max_attempts)


def _aws_failure(exc: Exception) -> CommandError:
    from wsmon.core.aws import describe_client_error

    return CommandError(f"AWS refused: {strip_control(describe_client_error(exc))}", EXIT_SOURCE)


@click.group("s3-events")
def s3_events() -> None:
    """S3 event notifications through SQS (event-driven discovery)."""


@s3_events.command("setup", epilog=EXIT_CODES_HELP)
@click.option("--bucket", required=True, help="The source's bucket.")
@click.option("--prefix", required=True, help="The source's prefix (the workset folders' parent).")
@click.option("--queue-name", default=None, metavar="NAME",
              help="SQS queue name (default: wsmon-<bucket>-events); the DLQ is NAME-dlq.")
@click.option("--dry-run", is_flag=True, help="Print the plan and change nothing.")
@click.pass_obj
def setup(obj: CliContext, bucket: str, prefix: str, queue_name: str | None, dry_run: bool) -> None:
    """Create the queue, DLQ and queue policy, and add the bucket notification rule."""
    from botocore.exceptions import ClientError

    from wsmon.engine.s3.event_setup import SetupConflict, apply_setup, engine_statements, plan_setup

    settings = command_settings(obj)
    name = queue_name or f"wsmon-{bucket}-events"[:80]
    s3, sqs = _client(settings, "s3"), _client(settings, "sqs")
    try:
        account = _client(settings, "sts").get_caller_identity()["Account"]
        # the policy trusts the bucket only as long as this account owns it: check it does now
        s3.head_bucket(Bucket=bucket, ExpectedBucketOwner=account)
        plan = plan_setup(s3, bucket, prefix, name, region=sqs.meta.region_name, account=account)
    except ClientError as exc:
        raise _aws_failure(exc) from None
    kept = plan.kept()
    click.echo(f"bucket s3://{strip_control(bucket)}/{strip_control(plan.prefix)} "
               f"(account {account})")
    click.echo(f"  queue {plan.queue_name} with dead-letter queue {plan.dlq_name} "
               f"(after 5 receives); only this bucket may send")
    click.echo(f"  notification rule {plan.rule_id}: s3:ObjectCreated:*, s3:ObjectRemoved:* under "
               f"{strip_control(plan.prefix)!r}" + (" (already there: rewritten the same)"
                                                    if plan.already_there else ""))
    click.echo("  kept as they are: " + ", ".join(f"{n} {k}" for k, n in kept.items()))
    if plan.conflicts:
        for conflict in plan.conflicts:
            click.echo(f"  conflict: {strip_control(conflict)}", err=True)
        raise CommandError("an existing notification rule overlaps this prefix; it is not "
                           "replaced. Narrow or remove it, or give the source another prefix, "
                           "then run setup again", EXIT_REFUSED)
    url = None
    if dry_run:
        click.echo("dry run: nothing was changed")
    else:
        try:
            url = apply_setup(plan, s3, sqs)
        except (ClientError, SetupConflict) as exc:
            raise (_aws_failure(exc) if isinstance(exc, ClientError)
                   else CommandError(str(exc), EXIT_REFUSED)) from None
        click.echo("done")
    shown = url or f"https://sqs.{plan.region}.amazonaws.com/{account}/{plan.queue_name}"
    click.echo("\nConfiguration (wsmon.toml):\n\n[[discovery.sources]]\n"
               f"bucket = {json.dumps(bucket)}\nprefix = {json.dumps(plan.prefix)}\n"
               f"events_queue = {json.dumps(shown)}\n")
    click.echo("IAM statements the engine needs (also in `wsmon iam-policy`):")
    click.echo(json.dumps(engine_statements([plan.queue_arn]), indent=2))


@s3_events.command("status", epilog=EXIT_CODES_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_obj
def status(obj: CliContext, as_json: bool) -> None:
    """Each configured queue: depth, dead-letter depth, mode and last event time."""
    from botocore.exceptions import BotoCoreError, ClientError

    from wsmon.engine.s3.events import KV_EVENTS, effective_queue

    settings = command_settings(obj)
    disc = settings.discovery
    queues = sorted({q for s in disc.sources if (q := effective_queue(disc, s))})
    if not queues:
        raise CommandError("no events_queue is configured (see `wsmon s3-events setup`)",
                           EXIT_USAGE)
    sqs = _client(settings, "sqs")
    with open_command_store(obj) as store:
        published = store.kv_get_all(KV_EVENTS) or {}
    rows = []
    for url in queues:
        row: dict[str, Any] = {"queue": url, "depth": None, "in_flight": None, "dlq_depth": None,
                               "mode": (published.get(url) or {}).get("mode") or "not consumed yet",
                               "last_event_at": (published.get(url) or {}).get("last_event_at"),
                               "error": (published.get(url) or {}).get("error") or None}
        try:
            attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
            row["depth"] = int(attrs.get("ApproximateNumberOfMessages", 0))
            row["in_flight"] = int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0))
            redrive = json.loads(attrs.get("RedrivePolicy") or "{}")
            dlq_arn = str(redrive.get("deadLetterTargetArn") or "")
            if dlq_arn:
                _, _, _, _, account, dlq_name = dlq_arn.split(":", 5)
                dlq_url = sqs.get_queue_url(QueueName=dlq_name,
                                            QueueOwnerAWSAccountId=account)["QueueUrl"]
                dlq = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=[
                    "ApproximateNumberOfMessages"])["Attributes"]
                row["dlq_depth"] = int(dlq.get("ApproximateNumberOfMessages", 0))
        except (ClientError, BotoCoreError, ValueError) as exc:
            row["error"] = strip_control(str(exc))[:300]
        rows.append(row)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        dlq = "no DLQ" if row["dlq_depth"] is None else f"DLQ {row['dlq_depth']}"
        depth = "?" if row["depth"] is None else f"{row['depth']} waiting, {row['in_flight']} in flight"
        click.echo(f"{strip_control(row['queue'])}: {depth}, {dlq}; mode {row['mode']}; last event "
                   f"{row['last_event_at'] or 'none seen'}"
                   + (f"; error: {strip_control(row['error'])}" if row["error"] else ""))
    if any(r["error"] for r in rows):
        raise SystemExit(EXIT_SOURCE)
