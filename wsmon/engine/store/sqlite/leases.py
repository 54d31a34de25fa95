"""Leases on worksets: the claim, heartbeat, release, adoption after a restart, the operator's
force release, and the sweep's view of expired leases."""

from __future__ import annotations

from datetime import datetime

from wsmon.core.clock import isoformat, utc
from wsmon.core.models import (
    Lease,
    Workset,
)
from wsmon.engine.store import rules
from wsmon.engine.store.sqlite.schema import WORKSET_COLUMNS
from wsmon.engine.store.sqlite.writes import WorksetRows


class Leases(WorksetRows):
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
                f"SELECT {WORKSET_COLUMNS} FROM worksets "
                "WHERE lock_expires_at IS NOT NULL AND lock_expires_at < ? "
                "AND state IN ('locked', 'in_progress') ORDER BY lock_expires_at, workset_id",
                (isoformat(rules.claim_cutoff(at, self.max_clock_skew)),),
            ).fetchall()
        return [self._row_to_workset(r) for r in rows]
