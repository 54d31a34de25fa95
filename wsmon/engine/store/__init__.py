"""State store backends, opened by URL.

``sqlite:///PATH`` (embedded default) or ``dynamodb://TABLE?region=REGION[&endpoint_url=URL]``.
Backends are imported lazily so opening SQLite never imports boto3.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from wsmon.core.store_url import SUPPORTED_SCHEMES, URL_FORMS  # the forms `config check` knows too
from wsmon.engine.store.base import (
    ActiveAlertExists,
    AlertChanged,
    AlertNotFound,
    CorruptStore,
    IllegalTransition,
    InvalidCursor,
    LeaseLost,
    LockChanged,
    StateConflict,
    Store,
    StoreError,
    StoreNotInitialized,
    StoreUnavailable,
    WorksetNotFound,
    check_transition,
)

if TYPE_CHECKING:
    from wsmon.core.clock import Clock

__all__ = [
    "ActiveAlertExists", "AlertChanged", "AlertNotFound", "CorruptStore", "IllegalTransition",
    "InvalidCursor", "LeaseLost", "LockChanged", "StateConflict", "Store",
    "StoreError", "StoreNotInitialized", "StoreUnavailable", "WorksetNotFound", "check_transition",
    "open_store", "SUPPORTED_SCHEMES",
]



def open_store(url: str, *, clock: Clock | None = None, max_clock_skew: float = 30.0,
               default_lease_seconds: float = 300.0, aws_profile: str | None = None,
               create: bool = True, **options: Any) -> Store:
    """Open the store at ``url``. An unknown scheme is a ``StoreError`` listing the known ones.

    ``create``: for SQLite, create the file and schema if missing (DynamoDB tables are only ever
    created by ``wsmon store init``).
    """
    scheme = urlsplit(url).scheme.lower()
    common: dict[str, Any] = {"clock": clock, "max_clock_skew": max_clock_skew,
                              "default_lease_seconds": default_lease_seconds}
    if scheme == "sqlite":
        from wsmon.engine.store.sqlite import SqliteStore

        return SqliteStore.from_url(url, create=create, **common, **options)
    if scheme == "dynamodb":
        from wsmon.engine.store.dynamodb import DynamoDBStore

        return DynamoDBStore.from_url(url, aws_profile=aws_profile, **common, **options)
    shown = url.split("?", 1)[0]
    raise StoreError(f"unknown store URL {shown!r}: expected one of {URL_FORMS}")
