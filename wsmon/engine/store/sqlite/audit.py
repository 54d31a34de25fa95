"""The audit trail of operator actions: one row per action, listed and pruned by time."""

from __future__ import annotations

import json
from datetime import datetime

from wsmon.core.clock import isoformat
from wsmon.core.models import OperatorAction
from wsmon.engine.store import rules
from wsmon.engine.store.sqlite.database import Database
from wsmon.engine.store.sqlite.schema import operator_action_row


class OperatorActions(Database):
    def record_operator_action(self, entry: OperatorAction) -> None:
        rules.check_operator_action(entry)
        with self._write() as conn:
            conn.execute("INSERT OR REPLACE INTO operator_actions VALUES (?, ?, ?, ?)",
                         operator_action_row(entry))

    def list_operator_actions(self, since: datetime | None = None, until: datetime | None = None,
                              limit: int = rules.OPERATOR_ACTIONS_LIMIT,
                              workset_id: str | None = None) -> list[OperatorAction]:
        rules.check_limit(limit)
        if limit == 0:
            return []
        # rules.operator_action_in and rules.operator_action_order, as SQL over an index
        clauses, params = [], []
        if workset_id is not None:
            clauses.append("target = ?")
            params.append(workset_id)
        if since is not None:
            clauses.append("at >= ?")
            params.append(isoformat(since))
        if until is not None:
            clauses.append("at < ?")
            params.append(isoformat(until))
        where = f"WHERE {' AND '.join(clauses)} " if clauses else ""
        with self._translate():
            rows = self._conn().execute(
                f"SELECT body FROM operator_actions {where}ORDER BY at DESC, action_id DESC "
                "LIMIT ?", (*params, limit)).fetchall()
        return [OperatorAction.model_validate(json.loads(r["body"])) for r in rows]

    def prune_operator_actions(self, before: datetime) -> int:
        with self._write() as conn:
            return conn.execute("DELETE FROM operator_actions WHERE at < ?",
                                (isoformat(before),)).rowcount
