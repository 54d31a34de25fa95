"""``SqliteStore``: the path, the options, one mixin per concern."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

from wsmon.core.clock import Clock
from wsmon.engine.store.base import (
    Store,
    StoreError,
)
from wsmon.engine.store.sqlite.alerts import Alerts
from wsmon.engine.store.sqlite.audit import OperatorActions
from wsmon.engine.store.sqlite.database import BUSY_TIMEOUT_SECONDS
from wsmon.engine.store.sqlite.leases import Leases
from wsmon.engine.store.sqlite.meta import MetaRecords
from wsmon.engine.store.sqlite.metrics import MetricsHistory
from wsmon.engine.store.sqlite.outbox import Outbox
from wsmon.engine.store.sqlite.url import parse_sqlite_url
from wsmon.engine.store.sqlite.worksets import Worksets


class SqliteStore(Worksets, Leases, MetaRecords, Alerts, Outbox, MetricsHistory, OperatorActions,
                  Store):
    """The state store in one SQLite file (see the module docstring for the concurrency model)."""

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True,
                 clock: Clock | None = None, max_clock_skew: float = 30.0,
                 default_lease_seconds: float = 300.0,
                 busy_timeout: float = BUSY_TIMEOUT_SECONDS) -> None:
        super().__init__(clock=clock, max_clock_skew=max_clock_skew,
                         default_lease_seconds=default_lease_seconds)
        self.path = Path(os.path.abspath(path))
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self._conns_lock = threading.Lock()
        self._conns: list[sqlite3.Connection] = []
        self._generation = 0  # bumped by close() so threads drop their closed connections
        # Schema objects this instance created, so `wsmon store init` right after an open that
        # created the file still reports "created" rather than "found".
        self._created: set[tuple[str, str]] = set()
        self._check_or_create(create)

    @classmethod
    def from_url(cls, url: str, *, create: bool = True, clock: Clock | None = None,
                 max_clock_skew: float = 30.0, default_lease_seconds: float = 300.0,
                 **options: Any) -> SqliteStore:
        busy_timeout = float(options.pop("busy_timeout", BUSY_TIMEOUT_SECONDS))
        if options:
            raise StoreError(f"unknown SQLite store option(s): {', '.join(sorted(options))}")
        return cls(parse_sqlite_url(url), create=create, clock=clock,
                   max_clock_skew=max_clock_skew, default_lease_seconds=default_lease_seconds,
                   busy_timeout=busy_timeout)

    @property
    def url(self) -> str:
        return f"sqlite://{self.path}"
