"""``wsmon usage``: worksets run, vCPU-hours, estimated and actual cost, failures and retries,
per customer, cluster or priority, over a period (default: this month so far).

Actual figures are what the engine measured with sacct (``Workset.actual``); a workset run
without them counts under "unmeasured". The aggregation is wsmon/engine/progress/usage.py, the
same the clusters screen shows.
"""

from __future__ import annotations

import csv
import json
import sys
from datetime import datetime, timedelta, timezone

import click

from wsmon.cli.context import CliContext
from wsmon.cli.exits import EXIT_CODES_HELP, EXIT_USAGE, CommandError, open_command_store
from wsmon.core.textsafe import strip_control, truncate
from wsmon.engine.progress.usage import GROUPINGS, month_start, summarize

COLUMNS = ("group", "worksets", "vcpu_hours", "estimated_cost_usd", "actual_cost_usd", "failures",
           "retries", "unmeasured")
HEADERS = ("GROUP", "WORKSETS", "VCPU-H", "EST $", "ACTUAL $", "FAILED", "RETRIES", "UNMEASURED")


def _date(value: str | None, option: str) -> datetime | None:
    """YYYY-MM-DD (midnight UTC) or an ISO 8601 time; a clear usage error otherwise."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise CommandError(f"{option} {strip_control(value)!r} is not a date (YYYY-MM-DD) or "
                           "ISO 8601 time", EXIT_USAGE) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


@click.command(epilog=EXIT_CODES_HELP)
@click.option("--since", help="From this date (YYYY-MM-DD, UTC) or time; default: the 1st of this month.")
@click.option("--until", help="Before this date or time (exclusive); default: now. A bare date means "
                              "its midnight, so --until 2026-12-01 ends with November.")
@click.option("--by", "by", type=click.Choice(GROUPINGS), default="customer", show_default=True,
              help="Group by customer_id, cluster or priority.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV (a header line, then one line per group).")
@click.pass_obj
def usage(obj: CliContext, since: str | None, until: str | None, by: str, as_json: bool,
          as_csv: bool) -> None:
    """What worksets used and cost, per group, over a period."""
    if as_json and as_csv:
        raise CommandError("choose one of --json and --csv", EXIT_USAGE)
    with open_command_store(obj) as store:
        now = store.clock.now()
        start = _date(since, "--since") or month_start(now)
        end = _date(until, "--until") or now + timedelta(microseconds=1)
        if end <= start:
            raise CommandError("--until must be after --since", EXIT_USAGE)
        rows = summarize(store.iter_worksets(), start, end, by)
    if as_json:
        click.echo(json.dumps({"since": start.isoformat(), "until": end.isoformat(), "by": by,
                               "groups": [r.as_dict() for r in rows[:-1]],
                               "total": rows[-1].as_dict()}, indent=2))
        return
    if as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(COLUMNS)
        for row in rows:
            data = row.as_dict()
            writer.writerow([strip_control(data[c]) if c == "group" else data[c] for c in COLUMNS])
        return
    click.echo(f"usage by {by}, {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC")
    table = [HEADERS] + [(
        truncate(strip_control(r.group), 40), str(r.worksets), f"{r.vcpu_hours:,.1f}",
        f"{r.estimated_cost_usd:,.2f}", f"{r.actual_cost_usd:,.2f}", str(r.failures),
        str(r.retries), str(r.unmeasured)) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADERS))]
    for i, line in enumerate(table):
        if i == len(table) - 1:
            click.echo("  ".join("-" * w for w in widths))
        cells = [line[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(line[1:], widths[1:])]
        click.echo("  ".join(cells).rstrip())
