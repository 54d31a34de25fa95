"""The embedded SQLite store: one file shared by the dashboard and a headless service on one host.

Concurrency model
-----------------
* WAL journal: readers never block the writer and the writer never blocks readers, so a dashboard
  refreshing every second does not slow the engine's claims.
* One connection per thread (``threading.local``), re-opened after a fork; connections run in
  autocommit mode and every write is an explicit ``BEGIN IMMEDIATE`` transaction. IMMEDIATE takes
  the database's single write lock *before* the first read, so a read-check-write inside it cannot
  interleave with another process's write (a DEFERRED transaction could read, lose the race for the
  write lock and fail with SQLITE_BUSY half-way, or worse, decide on a stale snapshot).
* Conditional writes additionally carry their condition in the UPDATE's WHERE clause and check the
  row count, so the guarantee does not rest on the lock alone.
* ``busy_timeout`` makes a writer wait for the lock instead of failing at once; if the lock stays
  taken longer than that the operation raises ``StoreUnavailable``.

Layout
------
Queryable workset attributes (state, priority, lease, timestamps) are columns with indexes; the
rest of the record (metadata, steps, findings, the last few events ...) is one JSON ``body``.
Timestamps are stored as fixed-width ISO strings (``wsmon.core.clock.isoformat``) so they compare and
sort as text. The full event history lives in its own table, keyed by (workset_id, seq).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import structlog

from wsmon.core.clock import Clock, isoformat, parse_iso, utc
from wsmon.core.models import (
    Alert,
    AlertState,
    ClusterStatus,
    Event,
    Lease,
    MetricSample,
    MonitorInfo,
    NamedLease,
    OutboxEntry,
    Page,
    Priority,
    QueueStats,
    Silence,
    Workset,
    WorksetState,
)
from wsmon.engine.store import rules
from wsmon.engine.store.base import (
    ActiveAlertExists,
    AlertChanged,
    CorruptStore,
    StateConflict,
    Store,
    StoreError,
    StoreNotInitialized,
    StoreUnavailable,
    WorksetNotFound,
    check_fields,
)

log = structlog.get_logger(__name__)

#: Bump when the schema changes. Every change so far is additive (``CREATE ... IF NOT EXISTS``
#: in ``_SCHEMA``), so opening an older wsmon file simply runs ``init_schema`` again.
#: 2: ``outbox_folded`` (which dedup ids were coalesced into which entry, for pruning).
SCHEMA_VERSION = 2

#: How long a writer waits for another process's write lock before giving up.
BUSY_TIMEOUT_SECONDS = 30.0

#: ``worksets_changed_since`` hands back a watermark this far behind "now" (readers see WAL
#: snapshots, and the writer's clock is read inside its transaction).
CHANGE_WATERMARK_LAG = rules.CHANGE_WATERMARK_LAG

# SQLite primary result codes we translate (extended codes carry these in their low byte).
_SQLITE_PERM, _SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY = 3, 5, 6, 8
_SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN = 10, 11, 13, 14
_SQLITE_NOTADB = 26

_SCHEMA: list[tuple[str, str, str]] = [
    # (kind, name, DDL)
    ("table", "worksets", """
        CREATE TABLE IF NOT EXISTS worksets (
            workset_id        TEXT PRIMARY KEY,
            bucket            TEXT NOT NULL,
            prefix            TEXT NOT NULL,
            state             TEXT NOT NULL,
            priority          TEXT NOT NULL,
            priority_rank     INTEGER NOT NULL,
            customer_id       TEXT,
            created_at        TEXT NOT NULL,
            updated_at        TEXT NOT NULL,
            state_changed_at  TEXT NOT NULL,
            lock_owner        TEXT,
            lock_acquired_at  TEXT,
            lock_expires_at   TEXT,
            fence             INTEGER NOT NULL DEFAULT 0,
            event_seq         INTEGER NOT NULL DEFAULT 0,
            body              TEXT NOT NULL
        )"""),
    ("index", "worksets_order", """
        CREATE INDEX IF NOT EXISTS worksets_order
            ON worksets (priority_rank, created_at, workset_id)"""),
    ("index", "worksets_state_order", """
        CREATE INDEX IF NOT EXISTS worksets_state_order
            ON worksets (state, priority_rank, created_at, workset_id)"""),
    ("index", "worksets_customer_order", """
        CREATE INDEX IF NOT EXISTS worksets_customer_order
            ON worksets (customer_id, priority_rank, created_at, workset_id)"""),
    ("index", "worksets_updated_at", """
        CREATE INDEX IF NOT EXISTS worksets_updated_at ON worksets (updated_at)"""),
    ("index", "worksets_lock_expiry", """
        CREATE INDEX IF NOT EXISTS worksets_lock_expiry
            ON worksets (lock_expires_at) WHERE lock_expires_at IS NOT NULL"""),
    ("table", "events", """
        CREATE TABLE IF NOT EXISTS events (
            workset_id  TEXT NOT NULL,
            seq         INTEGER NOT NULL,
            at          TEXT NOT NULL,
            actor       TEXT NOT NULL,
            from_state  TEXT,
            to_state    TEXT NOT NULL,
            reason      TEXT NOT NULL,
            PRIMARY KEY (workset_id, seq)
        ) WITHOUT ROWID"""),
    ("table", "monitors", """
        CREATE TABLE IF NOT EXISTS monitors (
            monitor_id  TEXT PRIMARY KEY,
            host        TEXT NOT NULL,
            pid         INTEGER NOT NULL,
            version     TEXT NOT NULL,
            role        TEXT NOT NULL,
            started_at  TEXT NOT NULL,
            last_seen   TEXT NOT NULL,
            details     TEXT NOT NULL
        )"""),
    ("table", "named_leases", """
        CREATE TABLE IF NOT EXISTS named_leases (
            name        TEXT PRIMARY KEY,
            owner_id    TEXT,
            fence       INTEGER NOT NULL,
            expires_at  TEXT
        )"""),
    ("table", "kv", """
        CREATE TABLE IF NOT EXISTS kv (
            namespace  TEXT NOT NULL,
            key        TEXT NOT NULL,
            value      TEXT NOT NULL,
            PRIMARY KEY (namespace, key)
        ) WITHOUT ROWID"""),
    ("table", "clusters", """
        CREATE TABLE IF NOT EXISTS clusters (
            name  TEXT PRIMARY KEY,
            body  TEXT NOT NULL
        )"""),
    ("table", "alerts", """
        CREATE TABLE IF NOT EXISTS alerts (
            alert_id     TEXT PRIMARY KEY,
            rule         TEXT NOT NULL,
            subject      TEXT NOT NULL,
            state        TEXT NOT NULL,
            updated_at   TEXT NOT NULL,
            resolved_at  TEXT,
            body         TEXT NOT NULL
        )"""),
    # At most one not-resolved alert per (rule, subject): the dedup key holds even when two
    # engines evaluate the same rule at once.
    ("index", "alerts_active", """
        CREATE UNIQUE INDEX IF NOT EXISTS alerts_active
            ON alerts (rule, subject) WHERE state != 'resolved'"""),
    ("index", "alerts_resolved_at", """
        CREATE INDEX IF NOT EXISTS alerts_resolved_at
            ON alerts (resolved_at) WHERE resolved_at IS NOT NULL"""),
    ("table", "silences", """
        CREATE TABLE IF NOT EXISTS silences (
            silence_id  TEXT PRIMARY KEY,
            starts_at   TEXT NOT NULL,
            ends_at     TEXT NOT NULL,
            body        TEXT NOT NULL
        )"""),
    # ``next_attempt_at`` is the entry's time in the (status, time) index: the next attempt while
    # pending, and once delivered or given up the time it got there. One index then serves
    # delivery (pending and due), the newest-first ``since`` view and pruning (old and final).
    ("table", "outbox", """
        CREATE TABLE IF NOT EXISTS outbox (
            entry_id         TEXT PRIMARY KEY,
            channel          TEXT NOT NULL,
            dedup_id         TEXT NOT NULL,
            coalesce_key     TEXT NOT NULL,
            status           TEXT NOT NULL,
            created_at       TEXT NOT NULL,
            next_attempt_at  TEXT NOT NULL,
            body             TEXT NOT NULL
        )"""),
    ("index", "outbox_due", """
        CREATE INDEX IF NOT EXISTS outbox_due ON outbox (status, next_attempt_at)"""),
    ("index", "outbox_coalesce", """
        CREATE INDEX IF NOT EXISTS outbox_coalesce ON outbox (channel, coalesce_key, status)"""),
    # Every (channel, dedup_id) ever enqueued, kept even when its entry was folded into a newer
    # one by coalescing: otherwise a re-sent event could slip past dedup after being coalesced.
    ("table", "outbox_dedup", """
        CREATE TABLE IF NOT EXISTS outbox_dedup (
            channel   TEXT NOT NULL,
            dedup_id  TEXT NOT NULL,
            PRIMARY KEY (channel, dedup_id)
        ) WITHOUT ROWID"""),
    # The dedup ids of entries folded into a newer one: ``into_entry_id`` names the entry that
    # took over (a chain of folds is a chain of rows), so pruning that entry can drop them too.
    ("table", "outbox_folded", """
        CREATE TABLE IF NOT EXISTS outbox_folded (
            into_entry_id  TEXT NOT NULL,
            entry_id       TEXT NOT NULL,
            channel        TEXT NOT NULL,
            dedup_id       TEXT NOT NULL,
            PRIMARY KEY (into_entry_id, entry_id)
        ) WITHOUT ROWID"""),
    ("table", "metric_samples", """
        CREATE TABLE IF NOT EXISTS metric_samples (
            name        TEXT NOT NULL,
            at          TEXT NOT NULL,
            dimensions  TEXT NOT NULL,
            value       REAL NOT NULL,
            PRIMARY KEY (name, at, dimensions)
        ) WITHOUT ROWID"""),
    ("index", "metric_samples_at", """
        CREATE INDEX IF NOT EXISTS metric_samples_at ON metric_samples (at)"""),
]

_WORKSET_COLUMNS = (
    "workset_id, bucket, prefix, state, priority, priority_rank, customer_id, created_at, "
    "updated_at, state_changed_at, lock_owner, lock_acquired_at, lock_expires_at, fence, "
    "event_seq, body"
)
# Workset fields that live in columns; everything else is in ``body``.
_COLUMN_FIELDS = frozenset({
    "workset_id", "bucket", "prefix", "state", "priority", "customer_id", "created_at",
    "updated_at", "state_changed_at", "lock_owner", "lock_acquired_at", "lock_expires_at", "fence",
})


def parse_sqlite_url(url: str) -> Path:
    """``sqlite:///PATH`` -> absolute path.

    ``sqlite:///abs/path`` and ``sqlite:////abs/path`` both mean ``/abs/path`` (the second is what
    joining ``sqlite:///`` with an absolute path gives); ``sqlite:///~/x.db`` expands the home
    directory and ``sqlite:///./x.db`` is relative to the working directory. Percent-escapes are
    decoded so paths with spaces can be written either way.
    """
    if not url.lower().startswith("sqlite://"):
        raise StoreError(f"not a SQLite store URL: {url!r} (expected sqlite:///PATH)")
    rest = unquote(url[len("sqlite://"):].split("?", 1)[0])
    if not rest.startswith("/"):
        raise StoreError(f"SQLite store URL {url!r} names a host; expected sqlite:///PATH")
    rest = rest[1:]
    if rest in ("", ":memory:"):
        raise StoreError(
            f"SQLite store URL {url!r} must name a file (an in-memory database cannot be shared "
            "between the engine, the dashboard and the CLI)"
        )
    if rest.startswith("~"):
        path = Path(rest).expanduser()
    elif rest.startswith(("./", "../")):
        path = Path.cwd() / rest
    else:
        path = Path("/" + rest.lstrip("/"))
    return Path(os.path.abspath(path))


def _ts(dt: datetime | None) -> str | None:
    return None if dt is None else isoformat(dt)


def _dt(text: str | None) -> datetime | None:
    return None if text is None else parse_iso(text)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def _cursor_shape(data: dict[str, Any]) -> bool:
    """A keyset cursor: the (priority rank, created_at, workset_id) of the last row handed out."""
    after = data.get("after")
    return (isinstance(after, list) and len(after) == 3 and isinstance(after[0], int)
            and isinstance(after[1], str) and isinstance(after[2], str))


class SqliteStore(Store):
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

    # -- connections and errors ----------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"sqlite://{self.path}"

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
            for kind, name, ddl in _SCHEMA:
                conn.execute(ddl)
                if (kind, name) not in existing:
                    self._created.add((kind, name))
                verb = "created" if (kind, name) in self._created else "found"
                lines.append(f"{verb} {kind} {name}")
            # user_version is written inside the transaction, so a crash mid-way leaves 0 and the
            # next open simply runs this again.
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        lines.append(f"schema version {SCHEMA_VERSION}")
        return lines

    # -- worksets: row <-> model -----------------------------------------------------------------
    def _row_to_workset(self, row: sqlite3.Row) -> Workset:
        try:
            return self._decode_workset(row)
        except ValueError as exc:  # bad JSON or a value the model rejects (edited by hand?)
            raise CorruptStore(
                f"the record of workset {row['workset_id']!r} in {self.path} is damaged: {exc}"
            ) from None

    @staticmethod
    def _decode_workset(row: sqlite3.Row) -> Workset:
        data = json.loads(row["body"])
        data.update(
            workset_id=row["workset_id"], bucket=row["bucket"], prefix=row["prefix"],
            state=row["state"], priority=row["priority"], customer_id=row["customer_id"],
            created_at=parse_iso(row["created_at"]), updated_at=parse_iso(row["updated_at"]),
            state_changed_at=parse_iso(row["state_changed_at"]),
            lock_owner=row["lock_owner"], lock_acquired_at=_dt(row["lock_acquired_at"]),
            lock_expires_at=_dt(row["lock_expires_at"]), fence=row["fence"],
        )
        return Workset.model_validate(data)

    @staticmethod
    def _body(ws: Workset) -> str:
        data = ws.model_dump(mode="json", exclude=set(_COLUMN_FIELDS))
        return _dumps(data)

    def _fetch_row(self, conn: sqlite3.Connection, workset_id: str) -> sqlite3.Row | None:
        return conn.execute(
            f"SELECT {_WORKSET_COLUMNS} FROM worksets WHERE workset_id = ?", (workset_id,)
        ).fetchone()

    def _append_event(self, conn: sqlite3.Connection, ws: Workset, event: Event) -> Workset:
        conn.execute(
            "INSERT INTO events (workset_id, seq, at, actor, from_state, to_state, reason) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (ws.workset_id, event.seq, isoformat(event.at), event.actor,
             event.from_state.value if event.from_state else None, event.to_state.value,
             event.reason),
        )
        return rules.with_event(ws, event)

    def _write_back(self, conn: sqlite3.Connection, row: sqlite3.Row, ws: Workset,
                    event_seq: int, extra_where: str = "", extra_params: tuple[Any, ...] = ()) -> None:
        """Write ``ws`` over ``row``, conditional on the row still being what was read.

        We hold the IMMEDIATE lock, so the condition cannot fail unless the code is wrong; it is
        still in the WHERE clause so that no future refactoring can turn it into a blind write.
        """
        cur = conn.execute(
            "UPDATE worksets SET state = ?, priority = ?, priority_rank = ?, customer_id = ?, "
            "updated_at = ?, state_changed_at = ?, lock_owner = ?, lock_acquired_at = ?, "
            "lock_expires_at = ?, fence = ?, event_seq = ?, body = ? "
            "WHERE workset_id = ? AND fence = ? AND state = ? AND event_seq = ?" + extra_where,
            (ws.state.value, ws.priority.value, ws.priority.rank, ws.customer_id,
             isoformat(ws.updated_at), isoformat(ws.state_changed_at), ws.lock_owner,
             _ts(ws.lock_acquired_at), _ts(ws.lock_expires_at), ws.fence, event_seq,
             self._body(ws),
             row["workset_id"], row["fence"], row["state"], row["event_seq"], *extra_params),
        )
        if cur.rowcount != 1:
            raise StateConflict(ws.workset_id, WorksetState.parse(row["state"]),
                                WorksetState.parse(row["state"]))

    def _commit(self, conn: sqlite3.Connection, row: sqlite3.Row, ws: Workset,
                change: rules.Change, extra_where: str = "",
                extra_params: tuple[Any, ...] = ()) -> Workset:
        """Write what a rule decided: the new record and, with an event, the next history row."""
        new = rules.apply(ws, change)
        seq = row["event_seq"]
        if change.event is not None:
            seq += 1
            new = self._append_event(conn, new, change.event.numbered(ws.workset_id, seq))
        self._write_back(conn, row, new, seq, extra_where, extra_params)
        return new

    # The lease condition of a holder's write, in the WHERE clause as well as checked by the rule.
    _HELD = " AND fence = ? AND lock_owner = ?"

    # -- worksets ----------------------------------------------------------------------------------
    def register_workset(self, workset_id: str, bucket: str, prefix: str,
                         priority: Priority | str = "normal", metadata: dict[str, Any] | None = None,
                         customer_id: str | None = None, *, state: WorksetState | str = "ready",
                         state_at: datetime | None = None, actor: str = "wsmon",
                         reason: str = "registered", **fields: Any) -> bool:
        with self._write() as conn:
            # The clock is read inside the transaction (see CHANGE_WATERMARK_LAG).
            ws, first = rules.new_workset(workset_id, bucket, prefix, priority, metadata,
                                          customer_id, state, state_at, actor, reason, fields,
                                          self._now())
            if conn.execute("SELECT 1 FROM worksets WHERE workset_id = ?",
                            (workset_id,)).fetchone():
                return False
            ws = self._append_event(conn, ws, first.numbered(workset_id, 1))
            # ON CONFLICT DO NOTHING + rowcount keeps "second register changes nothing" true
            # even if the SELECT above were ever removed.
            cur = conn.execute(
                f"INSERT INTO worksets ({_WORKSET_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL, 0, 1, ?) "
                "ON CONFLICT (workset_id) DO NOTHING",
                (workset_id, bucket, prefix, ws.state.value, ws.priority.value, ws.priority.rank,
                 ws.customer_id, isoformat(ws.created_at), isoformat(ws.updated_at),
                 isoformat(ws.state_changed_at), self._body(ws)),
            )
            if cur.rowcount != 1:
                conn.rollback()
                return False
        return True

    def get_workset(self, workset_id: str) -> Workset | None:
        with self._translate():
            row = self._fetch_row(self._conn(), workset_id)
        return self._row_to_workset(row) if row else None

    def list_worksets(self, state: WorksetState | str | None = None,
                      priority: Priority | str | None = None, customer_id: str | None = None,
                      limit: int = 500, cursor: str | None = None) -> Page:
        rules.check_page_limit(limit)
        where: list[str] = []
        params: list[Any] = []
        if state is not None:
            where.append("state = ?")
            params.append(WorksetState.parse(state).value)
        if priority is not None:
            where.append("priority_rank = ?")
            params.append(Priority.parse(priority).rank)
        if customer_id is not None:
            where.append("customer_id = ?")
            params.append(customer_id)
        if cursor:
            # Keyset pagination: stable under concurrent inserts and O(page) at any depth.
            where.append("(priority_rank, created_at, workset_id) > (?, ?, ?)")
            params.extend(rules.decode_cursor(cursor, _cursor_shape)["after"])
        sql = f"SELECT {_WORKSET_COLUMNS} FROM worksets"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY priority_rank, created_at, workset_id LIMIT ?"
        params.append(limit + 1)
        with self._translate():
            rows = self._conn().execute(sql, params).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = None
        if more and rows:
            last = rows[-1]
            next_cursor = rules.encode_cursor(
                {"after": [last["priority_rank"], last["created_at"], last["workset_id"]]})
        return Page(items=[self._row_to_workset(r) for r in rows], next_cursor=next_cursor)

    def worksets_changed_since(self, since: datetime | None) -> tuple[list[Workset], datetime]:
        watermark = rules.change_watermark(self._now())
        with self._translate():
            conn = self._conn()
            if since is None:
                rows = conn.execute(
                    f"SELECT {_WORKSET_COLUMNS} FROM worksets ORDER BY updated_at, workset_id"
                ).fetchall()
            else:
                rows = conn.execute(
                    f"SELECT {_WORKSET_COLUMNS} FROM worksets WHERE updated_at >= ? "
                    "ORDER BY updated_at, workset_id", (isoformat(since),),
                ).fetchall()
        return [self._row_to_workset(r) for r in rows], watermark

    def queue_stats(self) -> QueueStats:
        counts: dict[str, dict[str, int]] = {
            s.value: {p.value: 0 for p in Priority} for s in WorksetState
        }
        by_rank = {p.rank: p.value for p in Priority}
        with self._translate():
            # Grouping by the rank (not the name) lets SQLite count straight off the
            # (state, priority_rank, ...) index without sorting.
            rows = self._conn().execute(
                "SELECT state, priority_rank, COUNT(*) AS n FROM worksets "
                "GROUP BY state, priority_rank"
            ).fetchall()
        for r in rows:
            counts.setdefault(r["state"], {})[by_rank[r["priority_rank"]]] = r["n"]
        return QueueStats(counts=counts)

    def _load_for_write(self, conn: sqlite3.Connection, workset_id: str,
                        lease: Lease | None,
                        expected_state: WorksetState | str | None) -> tuple[sqlite3.Row, Workset]:
        """Read the row inside the write transaction and check the caller's conditions."""
        rules.check_lease_is_for(workset_id, lease)
        row = self._fetch_row(conn, workset_id)
        if row is None:
            raise WorksetNotFound(workset_id)
        ws = self._row_to_workset(row)
        rules.check_conditions(ws, lease, expected_state)
        return row, ws

    def update_state(self, workset_id: str, new_state: WorksetState | str, reason: str,
                     actor: str, lease: Lease | None = None,
                     expected_state: WorksetState | str | None = None, **fields: Any) -> Workset:
        check_fields(fields)
        target = WorksetState.parse(new_state)
        with self._write() as conn:
            row, ws = self._load_for_write(conn, workset_id, lease, expected_state)
            change = rules.transition(ws, target, actor, reason, self._now(), fields)
            return self._commit(conn, row, ws, change)

    def update_fields(self, workset_id: str, *, actor: str = "wsmon", lease: Lease | None = None,
                      expected_state: WorksetState | str | None = None, **fields: Any) -> Workset:
        check_fields(fields)
        with self._write() as conn:
            row, ws = self._load_for_write(conn, workset_id, lease, expected_state)
            return self._commit(conn, row, ws, rules.edit_fields(self._now(), fields))

    def set_priority(self, workset_id: str, priority: Priority | str, actor: str,
                     reason: str = "") -> Workset:
        prio = Priority.parse(priority)
        with self._write() as conn:
            row, ws = self._load_for_write(conn, workset_id, None, None)
            change = rules.reprioritise(ws, prio, actor, reason, self._now())
            return self._commit(conn, row, ws, change)

    # -- leases ----------------------------------------------------------------------------------
    def _lease_seconds(self, lease_seconds: float | None) -> timedelta:
        return rules.lease_duration(self.default_lease_seconds, lease_seconds)

    def acquire_lock(self, workset_id: str, owner_id: str,
                     lease_seconds: float | None = None) -> Lease | None:
        duration = self._lease_seconds(lease_seconds)
        with self._write() as conn:
            row = self._fetch_row(conn, workset_id)
            if row is None:
                return None
            now = self._now()
            ws = self._row_to_workset(row)
            change = rules.claim(ws, owner_id, now, duration, self.max_clock_skew)
            if change is None:
                return None
            # The claim condition itself, in the WHERE clause.
            self._commit(
                conn, row, ws, change,
                " AND ((state = 'ready' AND lock_owner IS NULL) OR "
                "(state IN ('locked', 'in_progress') AND lock_expires_at < ?))",
                (isoformat(rules.claim_cutoff(now, self.max_clock_skew)),),
            )
        return change.lease

    def renew_lock(self, lease: Lease, lease_seconds: float | None = None) -> Lease:
        duration = self._lease_seconds(lease_seconds)
        with self._write() as conn:
            row, ws = self._load_for_write(conn, lease.workset_id, lease, None)
            change = rules.renew(ws, lease, self._now(), duration)
            self._commit(conn, row, ws, change, self._HELD, (lease.fence, lease.owner_id))
        assert change.lease is not None
        return change.lease

    def release_lock(self, lease: Lease, reason: str = "released") -> Workset:
        with self._write() as conn:
            row, ws = self._load_for_write(conn, lease.workset_id, lease, None)
            change = rules.release(ws, lease, reason, self._now())
            return self._commit(conn, row, ws, change, self._HELD, (lease.fence, lease.owner_id))

    def adopt_lock(self, lease: Lease, lease_seconds: float | None = None) -> Lease:
        duration = self._lease_seconds(lease_seconds)
        with self._write() as conn:
            row, ws = self._load_for_write(conn, lease.workset_id, lease, None)
            change = rules.adopt(ws, lease, self._now(), duration)
            self._commit(conn, row, ws, change, self._HELD, (lease.fence, lease.owner_id))
        assert change.lease is not None
        return change.lease

    def force_release(self, workset_id: str, actor: str, reason: str, *,
                      expected_fence: int | None = None) -> Workset:
        with self._write() as conn:
            row, ws = self._load_for_write(conn, workset_id, None, None)
            change = rules.force_release(ws, actor, reason, expected_fence, self._now())
            return self._commit(conn, row, ws, change)

    def expired_leases(self, now: datetime | None = None) -> list[Workset]:
        at = utc(now) if now is not None else self._now()
        with self._translate():
            rows = self._conn().execute(
                f"SELECT {_WORKSET_COLUMNS} FROM worksets "
                "WHERE lock_expires_at IS NOT NULL AND lock_expires_at < ? "
                "AND state IN ('locked', 'in_progress') ORDER BY lock_expires_at, workset_id",
                (isoformat(rules.claim_cutoff(at, self.max_clock_skew)),),
            ).fetchall()
        return [self._row_to_workset(r) for r in rows]

    # -- history ---------------------------------------------------------------------------------
    def events(self, workset_id: str, limit: int | None = None) -> list[Event]:
        rules.check_limit(limit)
        sql = ("SELECT workset_id, seq, at, actor, from_state, to_state, reason FROM events "
               "WHERE workset_id = ? ORDER BY seq")
        params: tuple[Any, ...] = (workset_id,)
        if limit is not None:
            sql += " LIMIT ?"
            params += (limit,)
        with self._translate():
            rows = self._conn().execute(sql, params).fetchall()
        return [
            Event(workset_id=r["workset_id"], seq=r["seq"], at=parse_iso(r["at"]),
                  actor=r["actor"], from_state=r["from_state"], to_state=r["to_state"],
                  reason=r["reason"])
            for r in rows
        ]

    # -- monitors --------------------------------------------------------------------------------
    @staticmethod
    def _row_to_monitor(row: sqlite3.Row) -> MonitorInfo:
        return MonitorInfo(
            monitor_id=row["monitor_id"], host=row["host"], pid=row["pid"],
            version=row["version"], role=row["role"], started_at=parse_iso(row["started_at"]),
            last_seen=parse_iso(row["last_seen"]), details=json.loads(row["details"]),
        )

    def record_monitor_heartbeat(self, monitor_id: str, host: str, pid: int, version: str,
                                 role: str = "engine", details: dict[str, Any] | None = None,
                                 started_at: datetime | None = None) -> MonitorInfo:
        with self._write() as conn:
            now = self._now()
            started = _ts(started_at) or isoformat(now)
            # A heartbeat without started_at keeps the first one we saw for this monitor.
            conn.execute(
                "INSERT INTO monitors (monitor_id, host, pid, version, role, started_at, "
                "last_seen, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (monitor_id) DO UPDATE SET host = excluded.host, pid = excluded.pid, "
                "version = excluded.version, role = excluded.role, "
                "started_at = CASE WHEN ? THEN excluded.started_at ELSE monitors.started_at END, "
                "last_seen = excluded.last_seen, details = excluded.details",
                (monitor_id, host, pid, version, role, started, isoformat(now),
                 rules.monitor_details_json(details), started_at is not None),
            )
            row = conn.execute("SELECT * FROM monitors WHERE monitor_id = ?",
                               (monitor_id,)).fetchone()
        return self._row_to_monitor(row)

    def list_monitors(self) -> list[MonitorInfo]:
        with self._translate():
            rows = self._conn().execute("SELECT * FROM monitors ORDER BY monitor_id").fetchall()
        return [self._row_to_monitor(r) for r in rows]

    def remove_monitor(self, monitor_id: str) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM monitors WHERE monitor_id = ?", (monitor_id,))

    # -- named leases ----------------------------------------------------------------------------
    def acquire_named_lease(self, name: str, owner_id: str,
                            lease_seconds: float) -> NamedLease | None:
        duration = self._lease_seconds(lease_seconds)
        with self._write() as conn:
            now = self._now()
            expires = isoformat(now + duration)
            row = conn.execute("SELECT owner_id, fence, expires_at FROM named_leases "
                               "WHERE name = ?", (name,)).fetchone()
            fence = rules.named_lease_fence(
                row["owner_id"] if row else None, row["fence"] if row else None,
                _dt(row["expires_at"]) if row else None, owner_id, now, self.max_clock_skew)
            if fence is None:
                return None
            if row is None:
                conn.execute("INSERT INTO named_leases (name, owner_id, fence, expires_at) "
                             "VALUES (?, ?, ?, ?)", (name, owner_id, fence, expires))
            else:
                cur = conn.execute(
                    "UPDATE named_leases SET owner_id = ?, fence = ?, expires_at = ? "
                    "WHERE name = ? AND fence = ? AND owner_id IS ?",
                    (owner_id, fence, expires, name, row["fence"], row["owner_id"]),
                )
                if cur.rowcount != 1:
                    return None
        return NamedLease(name=name, owner_id=owner_id, fence=fence, expires_at=parse_iso(expires))

    def release_named_lease(self, lease: NamedLease) -> None:
        # Keep the row (owner cleared) so the next holder's fence is still higher than this one.
        # Releasing a lease that someone else has since taken changes nothing.
        with self._write() as conn:
            conn.execute(
                "UPDATE named_leases SET owner_id = NULL, expires_at = NULL "
                "WHERE name = ? AND owner_id = ? AND fence = ?",
                (lease.name, lease.owner_id, lease.fence),
            )

    def get_named_lease(self, name: str) -> NamedLease | None:
        with self._translate():
            row = self._conn().execute(
                "SELECT owner_id, fence, expires_at FROM named_leases WHERE name = ?", (name,)
            ).fetchone()
        if row is None or row["owner_id"] is None:
            return None
        return NamedLease(name=name, owner_id=row["owner_id"], fence=row["fence"],
                          expires_at=parse_iso(row["expires_at"]))

    # -- key/value -------------------------------------------------------------------------------
    def kv_get(self, namespace: str, key: str) -> Any | None:
        with self._translate():
            row = self._conn().execute("SELECT value FROM kv WHERE namespace = ? AND key = ?",
                                       (namespace, key)).fetchone()
        return None if row is None else json.loads(row["value"])

    def kv_put(self, namespace: str, key: str, value: Any) -> None:
        self.kv_put_many(namespace, {key: value})

    def kv_put_many(self, namespace: str, items: Mapping[str, Any]) -> None:
        encoded = [(namespace, k, _dumps(v)) for k, v in items.items()]  # fail before writing
        if not encoded:
            return
        with self._write() as conn:
            conn.executemany(
                "INSERT INTO kv (namespace, key, value) VALUES (?, ?, ?) "
                "ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value", encoded,
            )

    def kv_get_all(self, namespace: str) -> dict[str, Any]:
        with self._translate():
            rows = self._conn().execute("SELECT key, value FROM kv WHERE namespace = ?",
                                        (namespace,)).fetchall()
        return {r["key"]: json.loads(r["value"]) for r in rows}

    def kv_delete(self, namespace: str, key: str) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM kv WHERE namespace = ? AND key = ?", (namespace, key))

    # -- clusters --------------------------------------------------------------------------------
    def put_cluster_status(self, status: ClusterStatus) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO clusters (name, body) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET body = excluded.body",
                (status.name, _dumps(status.model_dump(mode="json"))),
            )

    def list_cluster_status(self) -> list[ClusterStatus]:
        with self._translate():
            rows = self._conn().execute("SELECT body FROM clusters ORDER BY name").fetchall()
        return [ClusterStatus.model_validate(json.loads(r["body"])) for r in rows]

    # -- alerts ----------------------------------------------------------------------------------
    @staticmethod
    def _alert_params(alert: Alert) -> tuple[Any, ...]:
        return (alert.rule, alert.subject, alert.state.value, isoformat(alert.updated_at),
                _ts(alert.resolved_at), _dumps(alert.model_dump(mode="json")))

    def put_alert(self, alert: Alert, expected_updated_at: datetime | None = None) -> Alert:
        try:
            with self._write() as conn:
                if expected_updated_at is None:
                    conn.execute(
                        "INSERT INTO alerts (alert_id, rule, subject, state, updated_at, "
                        "resolved_at, body) VALUES (?, ?, ?, ?, ?, ?, ?) "
                        "ON CONFLICT (alert_id) DO UPDATE SET rule = excluded.rule, "
                        "subject = excluded.subject, state = excluded.state, "
                        "updated_at = excluded.updated_at, resolved_at = excluded.resolved_at, "
                        "body = excluded.body",
                        (alert.alert_id, *self._alert_params(alert)),
                    )
                else:
                    cur = conn.execute(
                        "UPDATE alerts SET rule = ?, subject = ?, state = ?, updated_at = ?, "
                        "resolved_at = ?, body = ? WHERE alert_id = ? AND updated_at = ?",
                        (*self._alert_params(alert), alert.alert_id,
                         isoformat(expected_updated_at)),
                    )
                    if cur.rowcount != 1:
                        raise AlertChanged(alert.alert_id)
        except StoreError as exc:
            if isinstance(exc.__cause__, sqlite3.IntegrityError):  # the alerts_active index
                raise ActiveAlertExists(alert.rule, alert.subject) from None
            raise
        return alert

    def get_alert(self, alert_id: str) -> Alert | None:
        with self._translate():
            row = self._conn().execute("SELECT body FROM alerts WHERE alert_id = ?",
                                       (alert_id,)).fetchone()
        return None if row is None else Alert.model_validate(json.loads(row["body"]))

    def find_active_alert(self, rule: str, subject: str) -> Alert | None:
        with self._translate():
            row = self._conn().execute(
                "SELECT body FROM alerts WHERE rule = ? AND subject = ? AND state != 'resolved' "
                "ORDER BY updated_at DESC LIMIT 1", (rule, subject),
            ).fetchone()
        return None if row is None else Alert.model_validate(json.loads(row["body"]))

    def list_alerts(self, states: Iterable[AlertState | str] | None = None,
                    resolved_since: datetime | None = None, limit: int = 500) -> list[Alert]:
        rules.check_limit(limit)
        query = rules.alert_query(states, resolved_since)
        clauses: list[str] = []
        params: list[Any] = []
        if query.active:
            clauses.append(f"state IN ({', '.join('?' * len(query.active))})")
            params.extend(s.value for s in query.active)
        if query.resolved_since is not None:
            clauses.append("(state = 'resolved' AND resolved_at >= ?)")
            params.append(isoformat(query.resolved_since))
        elif query.all_resolved:
            clauses.append("state = 'resolved'")
        if not clauses:
            return []
        sql = (f"SELECT body FROM alerts WHERE {' OR '.join(clauses)} "
               "ORDER BY updated_at DESC, alert_id LIMIT ?")
        params.append(limit)
        with self._translate():
            rows = self._conn().execute(sql, params).fetchall()
        return [Alert.model_validate(json.loads(r["body"])) for r in rows]

    def silence(self, actor: str, ends_at: datetime, rule: str | None = None,
                subject: str | None = None, reason: str = "",
                starts_at: datetime | None = None) -> Silence:
        silence = rules.new_silence(uuid.uuid4().hex, actor, ends_at, rule, subject, reason,
                                    starts_at, self._now())
        with self._write() as conn:
            conn.execute(
                "INSERT INTO silences (silence_id, starts_at, ends_at, body) VALUES (?, ?, ?, ?)",
                (silence.silence_id, isoformat(silence.starts_at), isoformat(silence.ends_at),
                 _dumps(silence.model_dump(mode="json"))),
            )
        return silence

    def list_silences(self, active_at: datetime | None = None) -> list[Silence]:
        sql = "SELECT body FROM silences"
        params: tuple[Any, ...] = ()
        if active_at is not None:
            sql += " WHERE starts_at <= ? AND ends_at > ?"  # rules.silence_active, in SQL
            params = (isoformat(active_at), isoformat(active_at))
        sql += " ORDER BY starts_at, silence_id"  # rules.silence_order
        with self._translate():
            rows = self._conn().execute(sql, params).fetchall()
        return [Silence.model_validate(json.loads(r["body"])) for r in rows]

    def delete_silence(self, silence_id: str, actor: str) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM silences WHERE silence_id = ?", (silence_id,))
        log.info("silence_deleted", silence_id=silence_id, actor=actor)

    # -- outbox ----------------------------------------------------------------------------------
    @staticmethod
    def _outbox_row(entry: OutboxEntry) -> tuple[Any, ...]:
        return (entry.entry_id, entry.channel, entry.dedup_id, entry.coalesce_key, entry.status,
                isoformat(entry.created_at), isoformat(entry.next_attempt_at),
                _dumps(entry.model_dump(mode="json")))

    @staticmethod
    def _outbox_index_at(entry: OutboxEntry, now: datetime) -> str:
        """The entry's time in the (status, time) index (see the ``outbox`` table)."""
        return isoformat(rules.outbox_index_at(entry, now))

    def enqueue_notification(self, entry: OutboxEntry) -> bool:
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM outbox WHERE entry_id = ?",
                            (entry.entry_id,)).fetchone():
                return False  # the same entry is already in the outbox
            cur = conn.execute(
                "INSERT INTO outbox_dedup (channel, dedup_id) VALUES (?, ?) "
                "ON CONFLICT DO NOTHING", (entry.channel, entry.dedup_id),
            )
            if cur.rowcount != 1:
                return False
            folded = conn.execute(
                "SELECT entry_id, dedup_id, body FROM outbox WHERE channel = ? AND "
                "coalesce_key = ? AND status = 'pending'", (entry.channel, entry.coalesce_key),
            ).fetchall()
            for row in folded:
                conn.execute("DELETE FROM outbox WHERE entry_id = ? AND status = 'pending'",
                             (row["entry_id"],))
                conn.execute(
                    "INSERT OR IGNORE INTO outbox_folded (into_entry_id, entry_id, channel, "
                    "dedup_id) VALUES (?, ?, ?, ?)",
                    (entry.entry_id, row["entry_id"], entry.channel, row["dedup_id"]),
                )
            new = rules.coalesce(entry, (OutboxEntry.model_validate(json.loads(row["body"]))
                                         for row in folded))
            conn.execute(
                "INSERT INTO outbox (entry_id, channel, dedup_id, coalesce_key, status, "
                "created_at, next_attempt_at, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                self._outbox_row(new),
            )
        return True

    def due_notifications(self, now: datetime, limit: int = 100,
                          channel: str | None = None) -> list[OutboxEntry]:
        rules.check_limit(limit)
        sql = "SELECT body FROM outbox WHERE status = 'pending' AND next_attempt_at <= ?"
        params: list[Any] = [isoformat(now)]
        if channel is not None:
            sql += " AND channel = ?"
            params.append(channel)
        sql += " ORDER BY created_at, entry_id LIMIT ?"  # rules.due_order
        params.append(limit)
        with self._translate():
            rows = self._conn().execute(sql, params).fetchall()
        return [OutboxEntry.model_validate(json.loads(r["body"])) for r in rows]

    def _change_entry(self, entry_id: str, change: Any) -> None:
        with self._write() as conn:
            row = conn.execute("SELECT body FROM outbox WHERE entry_id = ?",
                               (entry_id,)).fetchone()
            if row is None:
                # Folded into a newer entry while it was being delivered: nothing to record.
                log.info("outbox_entry_gone", entry_id=entry_id)
                return
            new = change(OutboxEntry.model_validate(json.loads(row["body"])))
            conn.execute(
                "UPDATE outbox SET status = ?, next_attempt_at = ?, body = ? WHERE entry_id = ?",
                (new.status, self._outbox_index_at(new, self._now()),
                 _dumps(new.model_dump(mode="json")), entry_id),
            )

    def mark_notification_delivered(self, entry_id: str, at: datetime) -> None:
        self._change_entry(entry_id, lambda e: rules.delivered(e, at))

    def mark_notification_failed(self, entry_id: str, error: str,
                                 next_attempt_at: datetime | None) -> None:
        self._change_entry(entry_id, lambda e: rules.failed(e, error, next_attempt_at))

    def list_notifications(self, status: str | None = None, limit: int = 500,
                           since: datetime | None = None) -> list[OutboxEntry]:
        rules.check_limit(limit)
        clauses: list[str] = []
        params: list[Any] = []
        if status is not None:
            clauses.append("status = ?")
            params.append(status)
        if since is not None:
            clauses.append("next_attempt_at >= ?")
            params.append(isoformat(since))
        sql = "SELECT body FROM outbox"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += (" ORDER BY next_attempt_at DESC, entry_id" if since is not None
                else " ORDER BY created_at, entry_id")
        sql += " LIMIT ?"
        params.append(limit)
        with self._translate():
            rows = self._conn().execute(sql, params).fetchall()
        return [OutboxEntry.model_validate(json.loads(r["body"])) for r in rows]

    #: Entries pruned per write transaction, so a large first prune never holds the write lock
    #: for long (claims from the engine and the dashboard wait on it).
    _PRUNE_BATCH = 500

    def prune_notifications(self, before: datetime) -> int:
        cutoff = isoformat(before)
        removed = 0
        while True:
            with self._write() as conn:
                doomed = conn.execute(
                    "SELECT entry_id, channel, dedup_id, coalesce_key FROM outbox "
                    "WHERE status IN ('delivered', 'dead') AND next_attempt_at < ? LIMIT ?",
                    (cutoff, self._PRUNE_BATCH),
                ).fetchall()
                for row in doomed:
                    self._prune_entry(conn, row)
            removed += len(doomed)
            if len(doomed) < self._PRUNE_BATCH:
                return removed

    @staticmethod
    def _prune_entry(conn: sqlite3.Connection, row: sqlite3.Row) -> None:
        dedup = [(row["channel"], row["dedup_id"])]
        owners = [row["entry_id"]]
        while owners:  # the entries folded into this one, and into those, ...
            owner = owners.pop()
            folded = conn.execute(
                "SELECT entry_id, channel, dedup_id FROM outbox_folded WHERE into_entry_id = ?",
                (owner,),
            ).fetchall()
            conn.execute("DELETE FROM outbox_folded WHERE into_entry_id = ?", (owner,))
            dedup += [(f["channel"], f["dedup_id"]) for f in folded]
            owners += [f["entry_id"] for f in folded]
        conn.executemany("DELETE FROM outbox_dedup WHERE channel = ? AND dedup_id = ?", dedup)
        conn.execute("DELETE FROM outbox WHERE entry_id = ?", (row["entry_id"],))

    def prune_alerts(self, before: datetime) -> int:
        with self._write() as conn:  # rules.alert_prunable, as a WHERE clause
            cur = conn.execute(
                "DELETE FROM alerts WHERE state = 'resolved' AND updated_at < ? "
                "AND COALESCE(resolved_at, updated_at) < ?", (isoformat(before),) * 2,
            )
            return cur.rowcount

    # -- metric history --------------------------------------------------------------------------
    def record_metric_samples(self, samples: Iterable[MetricSample]) -> None:
        rows = [(s.name, isoformat(s.at), rules.series_key(s.dimensions), float(s.value))
                for s in samples]
        if not rows:
            return
        with self._write() as conn:
            # The same series at the same instant is one sample: a re-sent batch replaces it.
            conn.executemany(
                "INSERT INTO metric_samples (name, at, dimensions, value) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (name, at, dimensions) DO UPDATE SET value = excluded.value", rows,
            )

    def metric_history(self, name: str, since: datetime, until: datetime | None = None,
                       resolution: str = "minute",
                       dimensions: Mapping[str, str] | None = None) -> list[MetricSample]:
        rules.check_resolution(resolution)
        sql = "SELECT at, dimensions, value FROM metric_samples WHERE name = ? AND at >= ?"
        params: list[Any] = [name, isoformat(since)]
        if until is not None:
            sql += " AND at < ?"
            params.append(isoformat(until))
        with self._translate():
            rows = self._conn().execute(sql, params).fetchall()
        selected = []
        for r in rows:
            dims = json.loads(r["dimensions"])
            if rules.dimensions_match(dims, dimensions):
                selected.append((parse_iso(r["at"]), dims, r["value"]))
        return rules.roll_up(name, selected, resolution)

    def prune_metric_history(self, before: datetime) -> int:
        with self._write() as conn:
            cur = conn.execute("DELETE FROM metric_samples WHERE at < ?", (isoformat(before),))
            return cur.rowcount


__all__ = ["SCHEMA_VERSION", "SqliteStore", "parse_sqlite_url"]
