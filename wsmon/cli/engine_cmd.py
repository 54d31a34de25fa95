"""``wsmon iam-policy``: the least-privilege IAM policy for what this configuration touches."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import click

if TYPE_CHECKING:
    from wsmon.cli.context import CliContext
    from wsmon.config.settings import Settings

# What the engine's store calls (wsmon/engine/store/dynamodb/); TransactWriteItems is
# authorised per item by these same actions plus ConditionCheckItem.
DYNAMODB_RUNTIME_ACTIONS = [
    "dynamodb:BatchWriteItem", "dynamodb:ConditionCheckItem", "dynamodb:DeleteItem",
    "dynamodb:DescribeTable", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query",
    "dynamodb:UpdateItem",
]
DYNAMODB_INIT_ACTIONS = ["dynamodb:CreateTable", "dynamodb:DescribeTable"]


def _prefix(prefix: str | None) -> str:
    value = (prefix or "").lstrip("/")
    return value if not value or value.endswith("/") else value + "/"


def _s3_statements(settings: Settings) -> list[dict[str, Any]]:
    disc = settings.discovery
    by_bucket: dict[str, set[str]] = {}
    for source in disc.sources:
        prefixes = by_bucket.setdefault(source.bucket, set())
        prefixes.add(_prefix(source.prefix))
        for extra in (disc.sentinel_index_prefix, disc.archive_prefix):
            if extra:
                prefixes.add(_prefix(extra))
    statements: list[dict[str, Any]] = []
    for n, (bucket, prefixes) in enumerate(sorted(by_bucket.items())):
        ordered = sorted(prefixes)
        statements.append({
            "Sid": f"ListWorksetFolders{n}",
            "Effect": "Allow",
            "Action": ["s3:ListBucket"],
            "Resource": f"arn:aws:s3:::{bucket}",
            "Condition": {"StringLike": {"s3:prefix": [p + "*" if p else "*" for p in ordered]}},
        })
        statements.append({
            "Sid": f"ReadWriteWorksetFiles{n}",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
            "Resource": [f"arn:aws:s3:::{bucket}/{p}*" for p in ordered],
        })
    if disc.allowed_buckets:
        statements.append({
            "Sid": "CheckFastqObjects",
            "Effect": "Allow",
            "Action": ["s3:GetObject"],  # HEAD Object is authorised by GetObject
            "Resource": [f"arn:aws:s3:::{b}/*" for b in sorted(set(disc.allowed_buckets))],
        })
    return statements


def _dynamodb_statements(settings: Settings, account: str, with_init: bool) -> list[dict[str, Any]]:
    url = settings.store_url
    parts = urlsplit(url)
    if parts.scheme.lower() != "dynamodb" or not parts.netloc:
        return []
    from wsmon.config.aws_region import store_region
    from wsmon.core.aws import NoRegion
    from wsmon.engine.store.dynamodb.schema import TABLE_SUFFIXES

    try:  # the region the store really opens in; a policy for any region when none is set yet
        region = store_region(settings).name  # type: ignore[union-attr]
    except NoRegion:
        region = "*"
    tables = [f"{parts.netloc}{suffix}" for suffix in TABLE_SUFFIXES]
    resources = []
    for table in tables:
        arn = f"arn:aws:dynamodb:{region}:{account}:table/{table}"
        resources += [arn, f"{arn}/index/*"]
    statements = [{"Sid": "StateStore", "Effect": "Allow", "Action": DYNAMODB_RUNTIME_ACTIONS,
                   "Resource": resources}]
    if with_init:
        statements.append({"Sid": "StateStoreInit", "Effect": "Allow", "Action": DYNAMODB_INIT_ACTIONS,
                           "Resource": [r for r in resources if "/index/" not in r]})
    return statements


def _events_statements(settings: Settings) -> list[dict[str, Any]]:
    from wsmon.engine.s3.event_setup import engine_statements, queue_arn_from_url
    from wsmon.engine.s3.events import effective_queue

    disc = settings.discovery
    return engine_statements([queue_arn_from_url(q) for s in disc.sources
                              if (q := effective_queue(disc, s))])


def build_policy(settings: Settings, *, account: str = "*", with_init: bool = False) -> dict[str, Any]:
    statements = _s3_statements(settings) + _dynamodb_statements(settings, account, with_init)
    statements += _events_statements(settings)
    topic = getattr(settings.notify, "sns_topic_arn", None)
    if topic:
        statements.append({"Sid": "PublishNotifications", "Effect": "Allow",
                           "Action": ["sns:Publish"], "Resource": topic})
    if settings.metrics.sink == "cloudwatch":
        statements.append({
            "Sid": "PublishMetrics", "Effect": "Allow", "Action": ["cloudwatch:PutMetricData"],
            # PutMetricData has no resource-level permissions; the namespace condition narrows it
            "Resource": "*",
            "Condition": {"StringEquals": {"cloudwatch:namespace": settings.metrics.namespace}},
        })
    return {"Version": "2012-10-17", "Statement": statements}


@click.command("iam-policy")
@click.option("--account", default="*", show_default=True, metavar="ID",
              help="AWS account id for the DynamoDB table ARNs.")
@click.option("--with-init", is_flag=True,
              help="Also allow creating the store tables (what `wsmon store init` needs).")
@click.option("--with-cloudwatch-setup", is_flag=True,
              help="Also allow `wsmon cloudwatch install/uninstall` (this group's alarms and dashboard).")
@click.pass_obj
def iam_policy(obj: CliContext, account: str, with_init: bool, with_cloudwatch_setup: bool) -> None:
    """Print the least-privilege IAM policy for the configured sources, store, topic and metrics.

    Attach it to the role the engine runs as. The export step's own tool (e.g.
    daylily-export-fsx-to-s3) runs with its own credentials and is not covered.
    """
    from wsmon.cli.exits import EXIT_USAGE, CommandError, command_settings

    settings = command_settings(obj)
    policy = build_policy(settings, account=account, with_init=with_init)
    if with_cloudwatch_setup:
        from wsmon.engine.cloudwatch_setup import setup_statements

        policy["Statement"] += setup_statements(settings, account=account,
                                                region=settings.aws.region or "*")
    if not policy["Statement"]:
        raise CommandError(
            "nothing to grant: no discovery sources, no DynamoDB store, no SNS topic and no "
            "CloudWatch metrics are configured", EXIT_USAGE)
    click.echo(json.dumps(policy, indent=2))
