"""``wsmon serve`` (the HTTP API) and ``wsmon web`` (the dashboard in a browser).

Both need the ``api`` extra; nothing here imports it before the command runs. Both refuse to listen
beyond loopback without a token (docs/deployment.md: put a reverse proxy with TLS in front).
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from wsmon.cli.context import CliContext
from wsmon.cli.exits import (
    EXIT_USAGE,
    CommandError,
    command_settings,
    open_command_store,
)

_EXTRA_HINT = "install the api extra: pip install 'wsmon[api]'"


def _need_api_extra(module: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise CommandError(f"this command needs {module}: {_EXTRA_HINT}", EXIT_USAGE)


@click.command("serve")
@click.option("--bind", metavar="HOST:PORT",
              help="Listen here (default: api.bind, 127.0.0.1:8080). Beyond loopback needs a token.")
@click.pass_obj
def serve(obj: CliContext, bind: str | None) -> None:
    """Serve the HTTP API (/api/v1, /api/v1/docs, /api/v1/events/stream, /metrics).

    Reads need a token when bound beyond loopback; writes always need a read-write token
    (WSMON_API_TOKEN or api.token_file). Stops on Ctrl-C or SIGTERM.
    """
    for module in ("fastapi", "uvicorn", "prometheus_client"):
        _need_api_extra(module)
    settings = command_settings(obj)
    from wsmon.api.auth import ApiConfigError
    from wsmon.api.server import ApiServer
    from wsmon.logging import configure_logging

    configure_logging(settings, "headless")
    with open_command_store(obj) as store:
        try:
            server = ApiServer(settings, store, bind=bind)
        except ApiConfigError as exc:
            raise CommandError(str(exc), EXIT_USAGE) from None
        click.echo(f"wsmon API on {server.url}/api/v1 (docs: {server.url}/api/v1/docs)", err=True)
        server.run()


@contextmanager
def api_beside(settings: Any) -> Iterator[None]:
    """``wsmon --headless`` with ``[api] enabled``: the API in a thread, on its own store
    connection, for as long as the engine runs. A configuration it cannot serve (beyond
    loopback without a token, a port in use) stops the start with exit 2."""
    for module in ("fastapi", "uvicorn", "prometheus_client"):
        _need_api_extra(module)
    from wsmon.api.auth import ApiConfigError, check_exposure, load_tokens, parse_bind
    from wsmon.api.server import ApiServer
    from wsmon.engine.store import StoreError
    from wsmon.engine.store.from_settings import open_store_from_settings

    try:  # what must not be served is refused before anything opens
        check_exposure(parse_bind(settings.api.bind)[0], load_tokens(settings))
    except ApiConfigError as exc:
        raise CommandError(f"[api] enabled: {exc}", EXIT_USAGE) from None
    try:
        # create: a first start makes the SQLite file, as the engine beside it would
        store = open_store_from_settings(settings)
    except StoreError:
        yield  # the engine reports the store itself, with its own exit code
        return
    try:
        server = ApiServer(settings, store)
    except ApiConfigError as exc:
        store.close()
        raise CommandError(f"[api] enabled: {exc}", EXIT_USAGE) from None
    server.start()
    try:
        yield
    finally:
        server.stop()
        store.close()


def dashboard_command(obj: CliContext, settings: Any, *, allow_actions: bool) -> str:
    """The command textual-serve starts per browser session: this wsmon, same configuration and
    store, attached (never a second engine per tab), read-only unless actions are allowed.
    Built from an argv list and quoted, so no value is ever read by a shell as syntax."""
    argv = [sys.executable, "-m", "wsmon.cli"]
    if obj.config_path is not None:
        argv += ["--config", str(obj.config_path)]
    argv += ["--store", settings.store_url, "--attach"]
    if not allow_actions:
        argv.append("--read-only")
    return shlex.join(argv)


@click.command("web")
@click.option("--bind", metavar="HOST:PORT",
              help="Listen here (default: api.web_bind, 127.0.0.1:8000). Beyond loopback needs a token.")
@click.option("--public-url", metavar="URL",
              help="The address browsers use (behind a reverse proxy), e.g. https://wsmon.example.org.")
@click.option("--allow-actions", is_flag=True,
              help="Let browser users act (retry, stop, ...); read-only otherwise.")
@click.pass_obj
def web(obj: CliContext, bind: str | None, public_url: str | None, allow_actions: bool) -> None:
    """The dashboard in a browser (textual-serve): one attached dashboard per browser session.

    Beyond loopback a token is needed: open URL/?token=TOKEN once (a cookie keeps it), or send
    Authorization: Bearer TOKEN. With --allow-actions the token must be a read-write one.
    """
    _need_api_extra("textual_serve")
    settings = command_settings(obj)
    from wsmon.api.auth import ApiConfigError, check_exposure, load_tokens, parse_bind
    from wsmon.api.web import DashboardServer

    try:
        host, port = parse_bind(bind or settings.api.web_bind)
        tokens = load_tokens(settings)
        check_exposure(host, tokens, "the dashboard")
    except ApiConfigError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    with open_command_store(obj):
        pass  # a store that cannot be opened is an error now, not in every browser tab
    server = DashboardServer(dashboard_command(obj, settings, allow_actions=allow_actions),
                             host=host, port=port, public_url=public_url, tokens=tokens,
                             need_write=allow_actions)
    click.echo(f"wsmon dashboard on {server.public_url} "
               f"({'actions allowed' if allow_actions else 'read-only'})", err=True)
    server.serve()
