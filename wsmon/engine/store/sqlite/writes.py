"""The workset row and the one write path: read inside ``BEGIN IMMEDIATE``, ask the rule, write
the new record with its condition in the ``WHERE`` clause."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from wsmon.core.clock import isoformat, parse_iso
from wsmon.core.models import (
    Event,
    Lease,
    Workset,
    WorksetState,
)
from wsmon.engine.store import rules
from wsmon.engine.store.base import (
    CorruptStore,
    StateConflict,
    WorksetNotFound,
)
from wsmon.engine.store.sqlite.database import Database
from wsmon.engine.store.sqlite.schema import COLUMN_FIELDS, WORKSET_COLUMNS, dt, dumps, ts


class WorksetRows(Database):
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
            lock_owner=row["lock_owner"], lock_acquired_at=dt(row["lock_acquired_at"]),
            lock_expires_at=dt(row["lock_expires_at"]), fence=row["fence"],
        )
        return Workset.model_validate(data)

    @staticmethod
    def _body(ws: Workset) -> str:
        data = ws.model_dump(mode="json", exclude=set(COLUMN_FIELDS))
        return dumps(data)

    def _fetch_row(self, conn: sqlite3.Connection, workset_id: str) -> sqlite3.Row | None:
        return conn.execute(
            f"SELECT {WORKSET_COLUMNS} FROM worksets WHERE workset_id = ?", (workset_id,)
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
             ts(ws.lock_acquired_at), ts(ws.lock_expires_at), ws.fence, event_seq,
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
