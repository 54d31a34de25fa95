"""The notification outbox: dedup, coalescing, delivery, the newest-first view, pruning."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from typing import Any

import structlog

from wsmon.core.clock import isoformat
from wsmon.core.models import (
    OutboxEntry,
)
from wsmon.engine.store import rules
from wsmon.engine.store.sqlite.database import Database
from wsmon.engine.store.sqlite.schema import dumps

log = structlog.get_logger(__name__)


class Outbox(Database):
    @staticmethod
    def _outbox_row(entry: OutboxEntry) -> tuple[Any, ...]:
        return (entry.entry_id, entry.channel, entry.dedup_id, entry.coalesce_key, entry.status,
                isoformat(entry.created_at), isoformat(entry.next_attempt_at),
                dumps(entry.model_dump(mode="json")))

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
                 dumps(new.model_dump(mode="json")), entry_id),
            )

    def mark_notification_delivered(self, entry_id: str, at: datetime, *,
                                    as_read: OutboxEntry | None = None) -> None:
        # the read inside the write transaction is local and cheap: as_read is not needed
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
