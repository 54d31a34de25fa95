"""Worksets: registering, reading, the queue listing, state changes and the history."""

from __future__ import annotations

from datetime import datetime
from collections.abc import Iterable
from typing import Any

from wsmon.core.clock import isoformat, parse_iso
from wsmon.core.models import (
    Event,
    Lease,
    Page,
    Priority,
    QueueStats,
    Workset,
    WorksetState,
)
from wsmon.engine.store import rules
from wsmon.engine.store.base import (
    check_fields,
)
from wsmon.engine.store.sqlite.schema import WORKSET_COLUMNS
from wsmon.engine.store.sqlite.writes import WorksetRows

#: ``worksets_changed_since`` hands back a watermark this far behind "now" (readers see WAL
#: snapshots, and the writer's clock is read inside its transaction).
CHANGE_WATERMARK_LAG = rules.CHANGE_WATERMARK_LAG


def _cursor_shape(data: dict[str, Any]) -> bool:
    """A keyset cursor: the (priority rank, created_at, workset_id) of the last row handed out."""
    after = data.get("after")
    return (isinstance(after, list) and len(after) == 3 and isinstance(after[0], int)
            and isinstance(after[1], str) and isinstance(after[2], str))


class Worksets(WorksetRows):
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
                f"INSERT INTO worksets ({WORKSET_COLUMNS}) "
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
        sql = f"SELECT {WORKSET_COLUMNS} FROM worksets"
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
                    f"SELECT {WORKSET_COLUMNS} FROM worksets ORDER BY updated_at, workset_id"
                ).fetchall()
            else:
                rows = conn.execute(
                    f"SELECT {WORKSET_COLUMNS} FROM worksets WHERE updated_at >= ? "
                    "ORDER BY updated_at, workset_id", (isoformat(since),),
                ).fetchall()
        return [self._row_to_workset(r) for r in rows], watermark

    def queue_stats(self, states: Iterable[WorksetState] | None = None) -> QueueStats:
        counts: dict[str, dict[str, int]] = {
            s.value: {p.value: 0 for p in Priority} for s in WorksetState
        }
        by_rank = {p.rank: p.value for p in Priority}
        wanted = None if states is None else sorted({WorksetState.parse(s).value for s in states})
        where = "" if wanted is None else f"WHERE state IN ({', '.join('?' * len(wanted))}) "
        with self._translate():
            # Grouping by the rank (not the name) lets SQLite count straight off the
            # (state, priority_rank, ...) index without sorting.
            rows = self._conn().execute(
                "SELECT state, priority_rank, COUNT(*) AS n FROM worksets "
                f"{where}GROUP BY state, priority_rank", wanted or ()
            ).fetchall()
        for r in rows:
            counts.setdefault(r["state"], {})[by_rank[r["priority_rank"]]] = r["n"]
        return QueueStats(counts=counts)

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
