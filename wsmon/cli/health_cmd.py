"""``wsmon health [--json]``: one line (or one JSON document) and a Nagios exit code, for scripts
and monitoring agents: 0 healthy, 1 degraded, 2 critical (the judgement: wsmon/engine/health.py).

Unlike the other commands, a store that cannot be opened is not exit 4 here but part of the
answer (critical): a monitoring agent asks one question and reads one code.
"""

from __future__ import annotations

import json
from typing import Any

import click

from wsmon.cli.context import CliContext
from wsmon.cli.exits import command_settings

HEALTH_EPILOG = ("\b\nExit codes (Nagios): 0 healthy; 1 degraded (a stale engine beside live ones, a job "
                 "skipping runs, a warning alert firing);\n2 critical (no engine alive, store "
                 "unreachable, an S3 source not listable, a critical alert firing).")


def run_health(obj: CliContext, as_json: bool) -> int:
    from wsmon.core.clock import SystemClock
    from wsmon.engine.health import check_health
    from wsmon.engine.store.from_settings import open_store_from_settings

    settings = command_settings(obj)
    clock = SystemClock()

    def s3_client() -> Any:
        from wsmon.core.aws import client

        aws = settings.aws
        return client("s3", profile=aws.profile, region=aws.region, endpoint_url=aws.endpoint_url,
                      max_attempts=2, connect_timeout=3.0, read_timeout=10.0)

    report = check_health(settings, lambda: open_store_from_settings(settings, create=False),
                          now=clock.now, s3_client=s3_client)
    click.echo(json.dumps(report.to_json(), indent=2) if as_json else report.line())
    return report.level


@click.command(epilog=HEALTH_EPILOG)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_obj
def health(obj: CliContext, as_json: bool) -> None:
    """Is wsmon healthy? Engines alive and stale, store, S3 sources, job lag, alerts firing."""
    raise SystemExit(run_health(obj, as_json))
