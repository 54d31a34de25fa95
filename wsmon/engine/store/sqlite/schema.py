"""The tables and indexes of the SQLite file, and how values are stored in its columns.

Queryable workset attributes (state, priority, lease, timestamps) are columns with indexes; the
rest of the record is one JSON ``body``. Timestamps are fixed-width ISO text
(``wsmon.core.clock.isoformat``) so they compare and sort as text.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from typing import Any

from wsmon.core.clock import isoformat, parse_iso
from wsmon.core.models import OperatorAction

#: Bump when the schema changes. Every change so far is additive (``CREATE ... IF NOT EXISTS``
#: in ``SCHEMA``), so opening an older wsmon file simply runs ``init_schema`` again.
#: 2: ``outbox_folded`` (which dedup ids were coalesced into which entry, for pruning).
#: 3: ``operator_actions`` (the audit trail; ``upgrade`` moves the entries an older wsmon kept in
#:    the ``kv`` namespace ``operator-actions`` into it).
SCHEMA_VERSION = 3

SCHEMA: list[tuple[str, str, str]] = [
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
    # The audit trail: listed newest first by time (``at``, then ``action_id`` for the same
    # instant), pruned by time, and per workset for its own history.
    ("table", "operator_actions", """
        CREATE TABLE IF NOT EXISTS operator_actions (
            action_id  TEXT PRIMARY KEY,
            at         TEXT NOT NULL,
            target     TEXT NOT NULL,
            body       TEXT NOT NULL
        )"""),
    ("index", "operator_actions_at", """
        CREATE INDEX IF NOT EXISTS operator_actions_at ON operator_actions (at, action_id)"""),
    ("index", "operator_actions_target", """
        CREATE INDEX IF NOT EXISTS operator_actions_target
            ON operator_actions (target, at, action_id)"""),
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

#: The ``kv`` namespace where wsmon before schema 3 kept the audit trail.
LEGACY_OPERATOR_ACTIONS_NAMESPACE = "operator-actions"


def upgrade(conn: sqlite3.Connection) -> list[str]:
    """Data moves for a file written by an older wsmon (the tables already exist: ``SCHEMA``
    ran first, in the same transaction); each finds nothing to do once done. A human line per
    move. Schema 3: the audit trail leaves the key/value namespace."""
    moved = 0
    for row in conn.execute("SELECT key, value FROM kv WHERE namespace = ?",
                            (LEGACY_OPERATOR_ACTIONS_NAMESPACE,)).fetchall():
        try:
            entry = OperatorAction.model_validate({**json.loads(row["value"]),
                                                   "action_id": row["key"]})
        except (ValueError, TypeError):  # not an entry an older wsmon wrote: leave it
            continue
        conn.execute("INSERT OR REPLACE INTO operator_actions VALUES (?, ?, ?, ?)",
                     operator_action_row(entry))
        conn.execute("DELETE FROM kv WHERE namespace = ? AND key = ?",
                     (LEGACY_OPERATOR_ACTIONS_NAMESPACE, row["key"]))
        moved += 1
    return [f"moved {moved} operator action(s) into table operator_actions"] if moved else []


def operator_action_row(entry: OperatorAction) -> tuple[str, str, str, str]:
    return (entry.action_id, isoformat(entry.at), entry.target,
            dumps(entry.model_dump(mode="json")))


WORKSET_COLUMNS = (
    "workset_id, bucket, prefix, state, priority, priority_rank, customer_id, created_at, "
    "updated_at, state_changed_at, lock_owner, lock_acquired_at, lock_expires_at, fence, "
    "event_seq, body"
)
# Workset fields that live in columns; everything else is in ``body``.
COLUMN_FIELDS = frozenset({
    "workset_id", "bucket", "prefix", "state", "priority", "customer_id", "created_at",
    "updated_at", "state_changed_at", "lock_owner", "lock_acquired_at", "lock_expires_at", "fence",
})


def ts(at: datetime | None) -> str | None:
    """A time as stored: fixed-width ISO text (None stays NULL)."""
    return None if at is None else isoformat(at)


def dt(text: str | None) -> datetime | None:
    return None if text is None else parse_iso(text)


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
