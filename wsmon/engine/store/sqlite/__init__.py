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

One module per concern, as for DynamoDB: ``url.py`` (``sqlite:///PATH``), ``schema.py`` (tables,
indexes, column encoding), ``database.py`` (connections, the write transaction, error mapping,
``init_schema``), ``writes.py`` (the workset row and the one write path), ``worksets.py``,
``leases.py``, ``meta.py`` (monitors, named leases, key/value, clusters, silences), ``alerts.py``,
``outbox.py``, ``metrics.py``, ``store.py`` (``SqliteStore``). What an operation may do is decided
by ``wsmon.engine.store.rules``; these modules read, write under a condition and map errors.
"""

from wsmon.engine.store.sqlite.database import BUSY_TIMEOUT_SECONDS
from wsmon.engine.store.sqlite.schema import SCHEMA_VERSION
from wsmon.engine.store.sqlite.store import SqliteStore
from wsmon.engine.store.sqlite.url import parse_sqlite_url
from wsmon.engine.store.sqlite.worksets import CHANGE_WATERMARK_LAG

__all__ = ["BUSY_TIMEOUT_SECONDS", "CHANGE_WATERMARK_LAG", "SCHEMA_VERSION", "SqliteStore",
           "parse_sqlite_url"]
