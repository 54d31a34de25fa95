"""Small records: monitors, named leases, key/value state, cluster status, silences."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import structlog

from wsmon.core.clock import isoformat, parse_iso
from wsmon.core.models import (
    ClusterStatus,
    MonitorInfo,
    NamedLease,
    Silence,
)
from wsmon.engine.store import rules
from wsmon.engine.store.sqlite.database import Database
from wsmon.engine.store.sqlite.schema import dt, dumps, ts

log = structlog.get_logger(__name__)


class MetaRecords(Database):
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
            started = ts(started_at) or isoformat(now)
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
                dt(row["expires_at"]) if row else None, owner_id, now, self.max_clock_skew)
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
        encoded = [(namespace, k, dumps(v)) for k, v in items.items()]  # fail before writing
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
                (status.name, dumps(status.model_dump(mode="json"))),
            )

    def list_cluster_status(self) -> list[ClusterStatus]:
        with self._translate():
            rows = self._conn().execute("SELECT body FROM clusters ORDER BY name").fetchall()
        return [ClusterStatus.model_validate(json.loads(r["body"])) for r in rows]

    # -- silences ---------------------------------------------------------------------------------
    def silence(self, actor: str, ends_at: datetime, rule: str | None = None,
                subject: str | None = None, reason: str = "",
                starts_at: datetime | None = None) -> Silence:
        silence = rules.new_silence(uuid.uuid4().hex, actor, ends_at, rule, subject, reason,
                                    starts_at, self._now())
        with self._write() as conn:
            conn.execute(
                "INSERT INTO silences (silence_id, starts_at, ends_at, body) VALUES (?, ?, ?, ?)",
                (silence.silence_id, isoformat(silence.starts_at), isoformat(silence.ends_at),
                 dumps(silence.model_dump(mode="json"))),
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
