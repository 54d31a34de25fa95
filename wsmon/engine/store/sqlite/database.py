"""The SQLite file: connections, the write transaction, error mapping and the schema."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import structlog

from wsmon.core.clock import Clock, utc
from wsmon.engine.store import rules
from wsmon.engine.store.base import (
    CorruptStore,
    StoreError,
    StoreNotInitialized,
    StoreUnavailable,
)
from wsmon.engine.store.sqlite.schema import SCHEMA, SCHEMA_VERSION, upgrade

log = structlog.get_logger(__name__)


#: How long a writer waits for another process's write lock before giving up.
BUSY_TIMEOUT_SECONDS = 30.0


# SQLite primary result codes we translate (extended codes carry these in their low byte).
_SQLITE_PERM, _SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY = 3, 5, 6, 8
_SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN = 10, 11, 13, 14
_SQLITE_NOTADB = 26


class Database:
    """The file: per-thread connections, the write transaction, error mapping, the schema
    (mixed into the store; see the package docstring for the concurrency model)."""

    path: Path
    busy_timeout: float
    clock: Clock
    max_clock_skew: timedelta
    default_lease_seconds: float
    _local: threading.local
    _conns_lock: threading.Lock
    _conns: list[sqlite3.Connection]
    _generation: int
    _created: set[tuple[str, str]]

    def _check_or_create(self, create: bool) -> None:
        if not self.path.exists():
            if not create:
                raise StoreNotInitialized(
                    f"no state store at {self.path}; run `wsmon store init`"
                )
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreUnavailable(
                    f"cannot create the directory for the state store {self.path}: {exc.strerror}"
                ) from None
        elif self.path.is_dir():
            raise StoreUnavailable(f"the state store path {self.path} is a directory, not a file")
        version = self._schema_version()
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the state store {self.path} has schema version {version}, newer than this wsmon "
                f"understands ({SCHEMA_VERSION}); upgrade wsmon"
            )
        if version < SCHEMA_VERSION:
            if not create and version == 0:
                raise StoreNotInitialized(
                    f"the state store {self.path} has no wsmon schema; run `wsmon store init`"
                )
            self.init_schema()

    def _schema_version(self) -> int:
        with self._translate():
            # Reading the header is what detects "file is not a database".
            return int(self._conn().execute("PRAGMA user_version").fetchone()[0])

    def _conn(self) -> sqlite3.Connection:
        local = self._local
        conn = getattr(local, "conn", None)
        if conn is not None and local.pid == os.getpid() and local.generation == self._generation:
            return conn
        # A connection must never cross a fork (SQLite's locks are per process), and a closed
        # store hands out fresh connections rather than dead ones.
        with self._translate():
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout, isolation_level=None,
                check_same_thread=False,  # only its own thread uses it; close() may run elsewhere
            )
            try:
                conn.row_factory = sqlite3.Row
                conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
                # WAL persists in the file; asking again is free and repairs a file that another
                # tool switched back to a rollback journal.
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    log.warning("sqlite_not_wal", path=str(self.path), journal_mode=mode)
                # NORMAL is crash-safe in WAL mode (a power cut may lose the last commits, never
                # corrupt the file) and avoids an fsync per claim.
                conn.execute("PRAGMA synchronous = NORMAL")
            except BaseException:
                conn.close()
                raise
        with self._conns_lock:
            self._conns.append(conn)
        local.conn, local.pid, local.generation = conn, os.getpid(), self._generation
        return conn

    def close(self) -> None:
        with self._conns_lock:
            conns, self._conns = self._conns, []
            self._generation += 1
        for conn in conns:
            try:
                conn.close()
            except sqlite3.Error:  # already broken; nothing left to release
                pass

    @contextmanager
    def _translate(self) -> Iterator[None]:
        """Turn sqlite3 errors into store errors an operator can act on."""
        try:
            yield
        except sqlite3.Error as exc:
            raise self._store_error(exc) from exc

    def _store_error(self, exc: sqlite3.Error) -> StoreError:
        code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
        text = str(exc)
        if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB) or "not a database" in text or "malformed" in text:
            return CorruptStore(
                f"the state store {self.path} is not a SQLite database or is damaged ({text}); "
                "move it aside and run `wsmon store init`, or restore it from a backup"
            )
        if "no such table" in text:
            return StoreNotInitialized(
                f"the state store {self.path} is missing tables ({text}); run `wsmon store init`"
            )
        if code in (_SQLITE_BUSY, _SQLITE_LOCKED) or "locked" in text:
            return StoreUnavailable(
                f"the state store {self.path} stayed locked by another process for more than "
                f"{self.busy_timeout:g}s ({text})"
            )
        if code in (_SQLITE_CANTOPEN, _SQLITE_PERM, _SQLITE_READONLY):
            return StoreUnavailable(
                f"cannot open the state store {self.path} for writing ({text}); check that the "
                "file and its directory exist and are writable by this user"
            )
        if code in (_SQLITE_IOERR, _SQLITE_FULL):
            return StoreUnavailable(f"I/O error on the state store {self.path} ({text})")
        return StoreError(f"SQLite error on the state store {self.path}: {text}")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A ``BEGIN IMMEDIATE`` transaction: committed on success, rolled back on any error."""
        conn = self._conn()
        with self._translate():
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.rollback()
                raise
            if conn.in_transaction:  # a body may have rolled back deliberately
                conn.execute("COMMIT")

    def _now(self) -> datetime:
        return utc(self.clock.now())

    # -- schema ----------------------------------------------------------------------------------
    def init_schema(self) -> list[str]:
        lines = [f"SQLite state store at {self.path}"]
        with self._translate():
            conn = self._conn()
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            lines.append(f"journal mode {mode}")
        with self._write() as conn:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"the state store {self.path} has schema version {version}, newer than this "
                    f"wsmon understands ({SCHEMA_VERSION}); upgrade wsmon"
                )
            existing = {
                (r["type"], r["name"])
                for r in conn.execute("SELECT type, name FROM sqlite_master")
            }
            for kind, name, ddl in SCHEMA:
                conn.execute(ddl)
                if (kind, name) not in existing:
                    self._created.add((kind, name))
                verb = "created" if (kind, name) in self._created else "found"
                lines.append(f"{verb} {kind} {name}")
            lines.extend(upgrade(conn))
            # user_version is written inside the transaction, so a crash mid-way leaves 0 and the
            # next open simply runs this again.
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        lines.append(f"schema version {SCHEMA_VERSION}")
        return lines

    def _lease_seconds(self, lease_seconds: float | None) -> timedelta:
        return rules.lease_duration(self.default_lease_seconds, lease_seconds)
