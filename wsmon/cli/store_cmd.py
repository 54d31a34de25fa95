"""``wsmon store init`` and ``wsmon store info``: create or inspect the state store.

Exit codes as every command's (wsmon/cli/exits.py): 2 for a configuration problem, 4 when the
store cannot be opened or reached (or, for ``info``, is not initialised)."""

from __future__ import annotations

import json

import click

from wsmon.cli.context import CliContext
from wsmon.cli.exits import EXIT_CODES_HELP, open_command_store


@click.group()
def store() -> None:
    """Create or inspect the state store."""


@store.command("init", epilog=EXIT_CODES_HELP)
@click.pass_obj
def init(obj: CliContext) -> None:
    """Create the store's tables and indexes (safe to run again)."""
    # open_store(create=True) already creates a SQLite schema; init_schema() is idempotent and
    # is what creates DynamoDB tables, so run it for every backend and print what it did.
    with open_command_store(obj, create=True) as st:
        lines = st.init_schema()
        for line in lines:
            click.echo(line)
        click.echo(f"store ready: {st.url}")


@store.command("info", epilog=EXIT_CODES_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.pass_obj
def info(obj: CliContext, as_json: bool) -> None:
    """Where the store is and how many worksets it holds in each state."""
    # Never create anything here: "info" on a mistyped path must say so, not make a new store.
    with open_command_store(obj, create=False) as st:
        stats = st.queue_stats()
        monitors = st.list_monitors()
        url = st.url
    per_state = {state: sum(by_prio.values()) for state, by_prio in stats.counts.items()}
    if as_json:
        click.echo(json.dumps({"url": url, "total": stats.total(), "states": per_state,
                               "by_state_and_priority": stats.counts,
                               "monitors": len(monitors)}, indent=2, sort_keys=True))
        return
    click.echo(f"store:    {url}")
    click.echo(f"worksets: {stats.total()}")
    for state, count in per_state.items():
        click.echo(f"  {state:<12} {count}")
    click.echo(f"monitors: {len(monitors)}")
