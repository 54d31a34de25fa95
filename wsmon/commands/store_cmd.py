"""``wsmon store init`` and ``wsmon store info``: create or inspect the state store."""

from __future__ import annotations

import json

import click

from wsmon.cli import CliContext


@click.group()
def store() -> None:
    """Create or inspect the state store."""


@store.command("init")
@click.pass_obj
def init(obj: CliContext) -> None:
    """Create the store's tables and indexes (safe to run again)."""
    from wsmon.engine.store import StoreError

    # open_store(create=True) already creates a SQLite schema; init_schema() is idempotent and
    # is what creates DynamoDB tables, so run it for every backend and print what it did.
    st = obj.open_store(create=True)
    try:
        lines = st.init_schema()
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    for line in lines:
        click.echo(line)
    click.echo(f"store ready: {st.url}")


@store.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.pass_obj
def info(obj: CliContext, as_json: bool) -> None:
    """Where the store is and how many worksets it holds in each state."""
    from wsmon.engine.store import StoreError

    # Never create anything here: "info" on a mistyped path must say so, not make a new store.
    st = obj.open_store(create=False)
    try:
        stats = st.queue_stats()
        monitors = st.list_monitors()
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    per_state = {state: sum(by_prio.values()) for state, by_prio in stats.counts.items()}
    if as_json:
        click.echo(json.dumps({"url": st.url, "total": stats.total(), "states": per_state,
                               "by_state_and_priority": stats.counts,
                               "monitors": len(monitors)}, indent=2, sort_keys=True))
        return
    click.echo(f"store:    {st.url}")
    click.echo(f"worksets: {stats.total()}")
    for state, count in per_state.items():
        click.echo(f"  {state:<12} {count}")
    click.echo(f"monitors: {len(monitors)}")
