"""The exit codes every subcommand shares, and the store/config error handling that yields them.

Exit codes are part of the interface and documented in docs/cli.md:
0 ok, 1 refused or failed, 2 usage or configuration, 3 not found, 4 store cannot be opened or
reached (or is not initialised), 5 an S3 discovery source could not be listed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import click

from wsmon.core.textsafe import strip_control

if TYPE_CHECKING:
    from wsmon.cli.context import CliContext
    from wsmon.config.settings import Settings
    from wsmon.engine.store import Store

from wsmon.core.exit_codes import (  # noqa: F401  (the commands import the codes from here)
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_SOURCE,
    EXIT_STORE,
    EXIT_USAGE,
)

EXIT_CODES_HELP = (
    "\b\nExit codes: 0 ok; 1 refused or failed (illegal transition, changed meanwhile, aborted);\n"
    "2 usage or configuration error; 3 workset or alert not found;\n"
    "4 store cannot be opened or reached (or is not initialised)."
)


class CommandError(click.ClickException):
    """A failure worded for the operator, with one of the documented exit codes."""

    def __init__(self, message: str, exit_code: int = EXIT_REFUSED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _safe(value: object) -> str:
    return strip_control("" if value is None else value)


def _from_library(exc: BaseException, *prefixes: str) -> bool:
    return any(type(exc).__module__.startswith(p) for p in prefixes)


def command_settings(obj: CliContext) -> Settings:
    """The configuration, or exit 2 naming its problems."""
    try:
        return obj.settings()
    except CommandError:
        raise
    except click.ClickException as exc:
        raise CommandError(exc.message, EXIT_USAGE) from None


@contextmanager
def open_command_store(obj: CliContext, *, create: bool = False) -> Iterator[Store]:
    """The configured store, with every store failure turned into a message and an exit code.

    ``create``: only ``store init`` creates; elsewhere reading an empty, freshly created SQLite
    file would only hide a typo."""
    from wsmon.engine.store import (
        AlertNotFound,
        CorruptStore,
        StoreError,
        StoreNotInitialized,
        StoreUnavailable,
        WorksetNotFound,
    )

    from wsmon.core.aws import NoRegion

    command_settings(obj)
    try:
        store = obj.open_store(create=create)
    except NoRegion as exc:  # a DynamoDB store and no region anywhere: configuration, not the store
        raise CommandError(str(exc), EXIT_USAGE) from None
    except click.ClickException as exc:
        raise CommandError(exc.message, EXIT_STORE) from None
    except Exception as exc:  # a backend that leaked a library error must still not trace back
        raise CommandError(f"cannot open the store: {_safe(exc)}", EXIT_STORE) from None
    try:
        yield store
    except (WorksetNotFound, AlertNotFound) as exc:
        raise CommandError(_safe(exc), EXIT_NOT_FOUND) from None
    except (StoreUnavailable, StoreNotInitialized, CorruptStore) as exc:
        raise CommandError(_safe(exc), EXIT_STORE) from None
    except StoreError as exc:  # IllegalTransition, StateConflict, LeaseLost, and the rest
        raise CommandError(_safe(exc), EXIT_REFUSED) from None
    except Exception as exc:
        if _from_library(exc, "botocore", "boto3", "urllib3", "sqlite3"):
            raise CommandError(f"store unreachable: {_safe(exc)}", EXIT_STORE) from None
        raise
    finally:
        try:
            store.close()
        except Exception:  # closing a broken connection must not mask the real outcome
            pass
