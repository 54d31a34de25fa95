"""Alerts; at most one not-resolved alert per (rule, subject) is a partial unique index.
Acknowledge and resolve are the shared read-rule-conditional write loop of ``Store``."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from wsmon.core.clock import isoformat
from wsmon.core.models import (
    Alert,
    AlertState,
)
from wsmon.engine.store import rules
from wsmon.engine.store.base import (
    ActiveAlertExists,
    AlertChanged,
    StoreError,
)
from wsmon.engine.store.sqlite.database import Database
from wsmon.engine.store.sqlite.schema import dumps, ts


class Alerts(Database):
    @staticmethod
    def _alert_params(alert: Alert) -> tuple[Any, ...]:
        return (alert.rule, alert.subject, alert.state.value, isoformat(alert.updated_at),
                ts(alert.resolved_at), dumps(alert.model_dump(mode="json")))

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

    def prune_alerts(self, before: datetime) -> int:
        with self._write() as conn:  # rules.alert_prunable, as a WHERE clause
            cur = conn.execute(
                "DELETE FROM alerts WHERE state = 'resolved' AND updated_at < ? "
                "AND COALESCE(resolved_at, updated_at) < ?", (isoformat(before),) * 2,
            )
            return cur.rowcount
