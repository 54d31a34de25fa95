"""The audit trail of operator actions, in ``TABLE-meta``.

Each action is two items with the same sort key ``sk`` = "at#action_id" (fixed-width ISO time,
so the key sorts by time): one under ``pk`` = ``opaction`` (the whole trail: a time range is one
Query, newest first, stopping at the limit) and one under ``pk`` = ``opaction#TARGET`` (one
workset's own actions, the same way). Both go in one ``TransactWriteItems``; prune is a range
Query on the trail and batched deletes of both. Operator actions come at human rate, so one
partition for the trail is far below DynamoDB's per-partition limits. No Scan.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from wsmon.core.clock import isoformat
from wsmon.core.models import OperatorAction
from wsmon.engine.store import rules
from wsmon.engine.store.dynamodb.codec import av, item_av, item_py
from wsmon.engine.store.dynamodb.meta import MetaTable

TRAIL_PK = "opaction"
#: The ``kv`` namespace where an older wsmon kept the trail; ``init_schema`` moves it.
LEGACY_NAMESPACE = "operator-actions"


def _target_pk(target: str) -> str:
    return f"{TRAIL_PK}#{target}"


def _sk(entry: OperatorAction) -> str:
    return f"{isoformat(entry.at)}#{entry.action_id}"


class OperatorActions(MetaTable):
    def record_operator_action(self, entry: OperatorAction) -> None:
        rules.check_operator_action(entry)
        doc = entry.model_dump_json()
        sk = _sk(entry)
        puts = [{"Put": {"TableName": self.tables.meta,
                         "Item": item_av({"pk": pk, "sk": sk, "target": entry.target, "doc": doc})}}
                for pk in (TRAIL_PK, _target_pk(entry.target))]
        self._db.call("TransactWriteItems", self.tables.meta, TransactItems=puts)

    def list_operator_actions(self, since: datetime | None = None, until: datetime | None = None,
                              limit: int = rules.OPERATOR_ACTIONS_LIMIT,
                              workset_id: str | None = None) -> list[OperatorAction]:
        rules.check_limit(limit)
        if limit == 0:
            return []
        pk = TRAIL_PK if workset_id is None else _target_pk(workset_id)
        found: list[OperatorAction] = []
        for item in self._trail_query(pk, since, until, newest_first=True, page=min(limit, 500)):
            found.append(OperatorAction.model_validate_json(item["doc"]))
            if len(found) >= limit:
                break
        return found

    def prune_operator_actions(self, before: datetime) -> int:
        old = list(self._trail_query(TRAIL_PK, None, before, newest_first=False, page=500,
                                     keys_only=True))
        deletes = [{"DeleteRequest": {"Key": {"pk": av(pk), "sk": av(item["sk"])}}}
                   for item in old for pk in (TRAIL_PK, _target_pk(item.get("target", "")))]
        if deletes:
            self._db.batch_write(self.tables.meta, deletes)
        return len(old)

    def _trail_query(self, pk: str, since: datetime | None, until: datetime | None, *,
                     newest_first: bool, page: int, keys_only: bool = False,
                     ) -> Iterator[dict[str, Any]]:
        """Items of ``pk`` with time in [since, until), page by page (the caller stops early).
        A sort key "at#id" is >= "since" exactly when at >= since, and < "until" exactly when
        at < until, because the time is fixed-width."""
        names = {"#pk": "pk"}
        values: dict[str, Any] = {":pk": av(pk)}
        cond = "#pk = :pk"
        if since is not None or until is not None or keys_only:
            names["#sk"] = "sk"  # DynamoDB refuses a name the request does not use
        if since is not None and until is not None:
            cond += " AND #sk BETWEEN :lo AND :hi"
            # BETWEEN is inclusive; "until" itself sorts before every "until#id", so it is out
            values.update({":lo": av(isoformat(since)), ":hi": av(isoformat(until))})
        elif since is not None:
            cond += " AND #sk >= :lo"
            values[":lo"] = av(isoformat(since))
        elif until is not None:
            cond += " AND #sk < :hi"
            values[":hi"] = av(isoformat(until))
        kwargs: dict[str, Any] = {
            "TableName": self.tables.meta, "KeyConditionExpression": cond,
            "ExpressionAttributeNames": names, "ExpressionAttributeValues": values,
            "ScanIndexForward": not newest_first, "Limit": page, "ConsistentRead": True}
        if keys_only:  # what prune needs to delete both items
            names["#t"] = "target"
            kwargs["ProjectionExpression"] = "#pk, #sk, #t"
        while True:
            out = self._db.call("Query", self.tables.meta, **kwargs)
            for raw in out.get("Items", []):
                yield item_py(raw)  # type: ignore[misc]
            lek = out.get("LastEvaluatedKey")
            if not lek:
                return
            kwargs["ExclusiveStartKey"] = lek

    def _move_legacy_operator_actions(self) -> list[str]:
        """Entries an older wsmon kept in the key/value namespace move into the trail."""
        legacy: dict[str, Any] = self.kv_get_all(LEGACY_NAMESPACE)  # type: ignore[attr-defined]
        moved = 0
        for key, value in legacy.items():
            try:
                entry = OperatorAction.model_validate({**value, "action_id": key})
            except (ValueError, TypeError):  # not an entry an older wsmon wrote: leave it
                continue
            self.record_operator_action(entry)
            self.kv_delete(LEGACY_NAMESPACE, key)  # type: ignore[attr-defined]
            moved += 1
        return [f"moved {moved} operator action(s) into the audit trail"] if moved else []
