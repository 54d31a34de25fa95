"""``wsmon scan`` and ``wsmon validate``: discovery by hand.

``scan`` runs one discovery pass (the same ``S3Source.poll`` the engine schedules) and prints
what it found and changed; it never claims a workset (exit 5 when a source could not be listed).
``validate`` runs every check on one workset folder, in S3 or on disk, so operators can check
before uploading; exit 0 only when valid. Text output passes untrusted values (folder names, YAML values) through ``strip_control``.
"""

from __future__ import annotations

import json
from pathlib import Path
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


def _s3_client(settings: Any) -> Any:
    from wsmon.core import aws

    disc = settings.discovery
    return aws.client("s3", profile=settings.aws.profile, region=settings.aws.region,
                      endpoint_url=settings.aws.endpoint_url, max_attempts=settings.aws.max_attempts,
                      max_pool_connections=max(10, disc.list_workers + disc.head_workers))


def _safe(value: object) -> str:
    return strip_control(value)


@click.command("scan", epilog=EXIT_CODES_HELP + "\n5 an S3 discovery source could not be listed.")
@click.option("--json", "as_json", is_flag=True, help="Print the poll report as JSON.")
@click.pass_obj
def scan(obj: CliContext, as_json: bool) -> None:
    """One S3 discovery pass: register new worksets, import sentinel states, report changes."""
    from wsmon.core.aws import NoRegion
    from wsmon.engine.s3 import S3Source
    from wsmon.engine.store import StoreError

    settings = command_settings(obj)
    if not settings.discovery.sources:
        raise CommandError("no discovery sources configured: set [[discovery.sources]] "
                           "bucket/prefix in the config file", EXIT_USAGE)
    from wsmon.logging import configure_logging

    configure_logging(settings, "cli")  # log lines go to stderr, the report to stdout
    with open_command_store(obj, create=True) as store:
        try:
            source = S3Source(settings, store, s3_client=_s3_client(settings),
                              monitor_id=settings.effective_monitor_id)
            report = source.poll()
        except (StoreError, NoRegion):
            raise  # the store's own exit code (4 unreachable, 1 refused); no region: 2
        except Exception as exc:  # botocore config/credential problems: a message, not a traceback
            from wsmon.core.aws import describe_client_error

            aws_side = type(exc).__module__.startswith(("botocore", "boto3"))
            raise CommandError(f"scan failed: {_safe(describe_client_error(exc))}",
                               EXIT_SOURCE if aws_side else EXIT_REFUSED) from None
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        _print_report(report)
    if any(src.get("error") for src in report.sources):
        raise click.exceptions.Exit(EXIT_SOURCE)


def _print_report(report: Any) -> None:
    for src in report.sources:
        line = f"s3://{_safe(src['bucket'])}/{_safe(src['prefix'])}: {src['folders']} folder(s)"
        if src.get("error"):
            line += f"  ERROR {_safe(src['error'])}"
        click.echo(line)
    click.echo(f"listed {report.folders_listed} of {report.folders_seen} folder(s); "
               f"{report.request_total} S3 request(s) "
               + ", ".join(f"{op} {n}" for op, n in sorted(report.requests.items())))
    for name in report.registered:
        click.echo(f"  registered  {_safe(name)} (ready)")
    for item in report.imported:
        click.echo(f"  imported    {_safe(item['workset_id'])} ({item['state']})")
    for item in report.invalid:
        click.echo(f"  invalid     {_safe(item['workset_id'])}: {item['code']}: {_safe(item['message'])}")
    for item in report.changes:
        click.echo(f"  changed     {_safe(item['workset_id'])}: {item['from']} -> {item['to']} "
                   f"({_safe(item['reason'])})")
    for name in report.missing:
        click.echo(f"  vanished    {_safe(name)} (marked s3_missing)")
    for name in report.reappeared:
        click.echo(f"  reappeared  {_safe(name)}")
    for item in report.waiting:
        click.echo(f"  waiting     {_safe(item['workset_id'])}: {_safe(item['why'])}")
    for item in report.errors:
        who = item.get("workset_id") or item.get("source") or "?"
        click.echo(f"  error       {_safe(who)}: {item['code']}: {_safe(item['message'])}")
    for text in report.warnings:
        click.echo(f"  warning     {_safe(text)}")
    if report.sentinel_writes or report.index_writes:
        click.echo(f"wrote {report.sentinel_writes} sentinel change(s), "
                   f"{len(report.index_writes)} index file(s)")
    if not report.changed:
        click.echo("no changes")


@click.command("validate")
@click.argument("target")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.option("--check-s3", is_flag=True,
              help="Local folder: also check that s3:// FASTQ URIs exist (HEAD each).")
@click.pass_obj
def validate(obj: CliContext, target: str, as_json: bool, check_s3: bool) -> None:
    """Validate a workset folder: s3://BUCKET/PREFIX/WORKSET/ or ./local/folder.

    Runs every check and prints each finding with its code and remediation; exits 0 only when
    the workset is valid (warnings allowed), 1 when it is not.
    """
    settings = obj.settings()
    if target.startswith("s3://"):
        from wsmon.engine.s3 import parse_s3_uri, validate_s3_folder

        try:
            bucket, prefix = parse_s3_uri(target)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        if not prefix.strip("/"):
            raise click.UsageError("name the workset folder: s3://BUCKET/PREFIX/WORKSET/")
        try:
            report = validate_s3_folder(_s3_client(settings), bucket, prefix, settings)
        except Exception as exc:
            from wsmon.core.aws import describe_client_error

            raise click.ClickException(f"cannot validate {_safe(target)}: "
                                       f"{_safe(describe_client_error(exc))}") from None
    else:
        from wsmon.engine.worksetfiles import s3_exists_checker, validate_local_folder

        path = Path(target)
        if not path.is_dir():
            raise click.ClickException(f"{_safe(target)} is not a directory (or use s3://...)")
        exists = s3_exists_checker(_s3_client(settings), settings.discovery.head_workers) \
            if check_s3 else None
        report = validate_local_folder(path, settings, exists=exists)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        _print_validation(report)
    if not report.valid:
        raise click.exceptions.Exit(1)


def _print_validation(report: Any) -> None:
    click.echo(f"{_safe(report.target)}  (workset {_safe(report.workset_id)})")
    if report.work:
        click.echo(f"  run suffix: {_safe(' '.join(report.work.get('run_suffix') or []))}")
        if report.work.get("clone_args"):
            click.echo(f"  clone args: {_safe(' '.join(report.work['clone_args']))}")
        if report.work.get("export_uri"):
            click.echo(f"  export to:  {_safe(report.work['export_uri'])}")
    if report.info:
        click.echo(f"  priority:   {_safe(report.info.get('priority'))}"
                   + (f", customer {_safe(report.info['customer_id'])}"
                      if report.info.get("customer_id") else ""))
    if report.estimate:
        e = report.estimate
        click.echo(f"  estimate:   {e['samples']} sample(s), {e['vcpu_hours']} vCPU-h, "
                   f"{e['vcpus']} vCPUs, {e['memory_gb']} GB memory, {e['storage_gb']} GB storage, "
                   f"${e['cost_usd']}, ~{e['duration_hours']} h")
    for f in report.findings:
        click.echo(f"  {f.severity.upper():7} {f.code}  {_safe(f.message)}")
        if f.remediation and f.severity != "info":
            click.echo(f"          fix: {_safe(f.remediation)}")
    errors = len(report.errors)
    warnings = sum(1 for f in report.findings if f.severity == "warning")
    verdict = "VALID" if report.valid else "INVALID"
    click.echo(f"{verdict}: {errors} error(s), {warnings} warning(s)")
