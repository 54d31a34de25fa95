"""The notification outbox in ``TABLE-outbox`` (GSI ``status-due-index``).

The item's ``next_attempt_at`` attribute is its time in that index (``rules.outbox_index_at``):
the next attempt while pending, and once delivered or given up the time it got there (the
document keeps the model's own fields). So the same index, with no new GSI and nothing to
migrate on existing tables, answers "due now", "recent, newest first" (``since``) and "final and
old" (pruning). Items written before this rule keep their last scheduled attempt there, which is
at most a backoff interval earlier: they are pruned that much sooner.

Dedup and coalescing use guard items in ``TABLE-meta``, keyed by channel + dedup_id
(``outbox-dedup#CHANNEL``) and channel + coalesce_key (``outbox-coalesce#CHANNEL``), written in
the same transaction as the entry; the dedup ids of entries coalesced into a newer one live
under ``outbox-folded#ENTRY_ID``, so pruning that entry finds them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog

from wsmon.core import aws
from wsmon.core.clock import isoformat
from wsmon.core.models import OutboxEntry
from wsmon.engine.store import rules
from wsmon.engine.store.dynamodb.client import (
    MAX_WRITE_ATTEMPTS,
    cancellation,
    condition_failed,
)
from wsmon.engine.store.dynamodb.codec import Expr, av, item_av, item_py
from wsmon.engine.store.dynamodb.meta import MetaTable
from wsmon.engine.store.dynamodb.schema import OUTBOX_DUE_INDEX
from wsmon.engine.store.errors import StoreError, StoreUnavailable

log = structlog.get_logger(__name__)


def _outbox_item(entry: OutboxEntry, index_at: datetime | None = None) -> dict[str, Any]:
    return {"entry_id": entry.entry_id, "status": entry.status,
            "next_attempt_at": isoformat(index_at or entry.next_attempt_at),
            "created_at": isoformat(entry.created_at), "channel": entry.channel,
            "doc": entry.model_dump_json()}


class Outbox(MetaTable):
    def _get_entry(self, entry_id: str) -> OutboxEntry | None:
        out = self._db.call("GetItem", self.tables.outbox, TableName=self.tables.outbox,
                            Key={"entry_id": av(entry_id)}, ConsistentRead=True)
        item = item_py(out.get("Item"))
        return None if item is None else OutboxEntry.model_validate_json(item["doc"])

    def enqueue_notification(self, entry: OutboxEntry) -> bool:
        from botocore.exceptions import ClientError

        dedup_key = {"pk": av(f"outbox-dedup#{entry.channel}"), "sk": av(entry.dedup_id)}
        coalesce_key = {"pk": av(f"outbox-coalesce#{entry.channel}"),
                        "sk": av(entry.coalesce_key)}
        for _ in range(MAX_WRITE_ATTEMPTS):
            guard = self._meta_get(f"outbox-coalesce#{entry.channel}", entry.coalesce_key)
            folded: OutboxEntry | None = None
            if guard:
                old = self._get_entry(guard["entry_id"])
                if old is not None and old.status == "pending":
                    folded = old
            new = entry
            items: list[dict[str, Any]] = [
                {"Put": {"TableName": self.tables.meta,
                         "Item": {**dedup_key, "entry_id": av(entry.entry_id)},
                         "ConditionExpression": "attribute_not_exists(#pk)",
                         "ExpressionAttributeNames": {"#pk": "pk"}}},
            ]
            if folded is not None:
                new = rules.coalesce(entry, [folded])
                items.append({"Delete": {
                    "TableName": self.tables.outbox, "Key": {"entry_id": av(folded.entry_id)},
                    "ConditionExpression": "#s = :p",
                    "ExpressionAttributeNames": {"#s": "status"},
                    "ExpressionAttributeValues": {":p": av("pending")}}})
                # The folded entry's dedup id now lives as long as this entry (see pruning).
                items.append({"Put": {"TableName": self.tables.meta, "Item": item_av({
                    "pk": f"outbox-folded#{entry.entry_id}", "sk": folded.entry_id,
                    "channel": folded.channel, "dedup_id": folded.dedup_id})}})
            guard_cond: dict[str, Any]
            if guard:
                guard_cond = {"ConditionExpression": "#e = :e",
                              "ExpressionAttributeNames": {"#e": "entry_id"},
                              "ExpressionAttributeValues": {":e": av(guard["entry_id"])}}
            else:
                guard_cond = {"ConditionExpression": "attribute_not_exists(#pk)",
                              "ExpressionAttributeNames": {"#pk": "pk"}}
            items.append({"Put": {"TableName": self.tables.meta,
                                  "Item": {**coalesce_key, "entry_id": av(new.entry_id)},
                                  **guard_cond}})
            items.append({"Put": {"TableName": self.tables.outbox,
                                  "Item": item_av(_outbox_item(new)),
                                  "ConditionExpression": "attribute_not_exists(#id)",
                                  "ExpressionAttributeNames": {"#id": "entry_id"}}})
            try:
                self._db.call("TransactWriteItems", self.tables.outbox, TransactItems=items)
                return True
            except ClientError as exc:
                reasons = cancellation(exc)
                if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
                    return False  # (channel, dedup_id) already enqueued
                if reasons and reasons[-1].get("Code") == "ConditionalCheckFailed":
                    return False  # the same entry_id is already in the outbox
                if not any(r.get("Code") in ("ConditionalCheckFailed", "TransactionConflict")
                           for r in reasons):
                    raise StoreError(f"enqueueing notification failed: "
                                     f"{aws.describe_client_error(exc)}") from exc
                # The pending entry we folded was delivered or replaced meanwhile: look again.
        raise StoreUnavailable("the notification outbox kept changing under us; try again")

    def due_notifications(self, now: datetime, limit: int = 100,
                          channel: str | None = None) -> list[OutboxEntry]:
        rules.check_limit(limit)
        expr = Expr()
        kwargs: dict[str, Any] = {
            "IndexName": OUTBOX_DUE_INDEX,
            "KeyConditionExpression": f"{expr.n('status')} = {expr.v('pending')} AND "
                                      f"{expr.n('next_attempt_at')} <= {expr.v(isoformat(now))}"}
        if channel is not None:
            kwargs["FilterExpression"] = f"{expr.n('channel')} = {expr.v(channel)}"
        out = [OutboxEntry.model_validate_json(item["doc"])
               for item in self._db.query(self.tables.outbox, **kwargs, **expr.kwargs())]
        out.sort(key=rules.due_order)
        return out[:limit]

    def _update_entry(self, entry_id: str, change: Callable[[OutboxEntry], OutboxEntry],
                      as_read: OutboxEntry | None = None) -> None:
        """Read, change, write back on condition the entry is still as read. ``as_read`` (the
        caller's copy) stands in for the first read: if it is stale the condition fails and
        the next round reads the entry."""
        from botocore.exceptions import ClientError

        for attempt in range(MAX_WRITE_ATTEMPTS):
            entry = as_read if attempt == 0 and as_read is not None else self._get_entry(entry_id)
            if entry is None:
                # Folded into a newer entry while it was being delivered: nothing to record.
                log.info("outbox_entry_gone", entry_id=entry_id)
                return
            new = change(entry)
            try:
                self._db.call("PutItem", self.tables.outbox, TableName=self.tables.outbox,
                              Item=item_av(_outbox_item(
                                  new, rules.outbox_index_at(new, self.clock.now()))),
                              ConditionExpression="#d = :d",
                              ExpressionAttributeNames={"#d": "doc"},
                              ExpressionAttributeValues={":d": av(entry.model_dump_json())})
                return
            except ClientError as exc:
                if not condition_failed(exc):
                    raise
        raise StoreUnavailable(f"notification {entry_id} kept changing under us; try again")

    def mark_notification_delivered(self, entry_id: str, at: datetime, *,
                                    as_read: OutboxEntry | None = None) -> None:
        self._update_entry(entry_id, lambda e: rules.delivered(e, at), as_read)

    def mark_notification_failed(self, entry_id: str, error: str, next_attempt_at: datetime | None,
                                 ) -> None:
        self._update_entry(entry_id, lambda e: rules.failed(e, error, next_attempt_at))

    def list_notifications(self, status: str | None = None, limit: int = 500,
                           since: datetime | None = None) -> list[OutboxEntry]:
        rules.check_limit(limit)
        statuses = [status] if status is not None else list(rules.OUTBOX_STATUSES)
        if since is not None:
            return self._recent_notifications(statuses, limit, isoformat(since))
        out: list[OutboxEntry] = []
        for st in statuses:
            for item in self._db.query(self.tables.outbox, IndexName=OUTBOX_DUE_INDEX,
                                       KeyConditionExpression="#s = :s",
                                       ExpressionAttributeNames={"#s": "status"},
                                       ExpressionAttributeValues={":s": av(st)}):
                out.append(OutboxEntry.model_validate_json(item["doc"]))
        out.sort(key=rules.due_order)
        return out[:limit]

    def _recent_notifications(self, statuses: list[str], limit: int,
                              since: str) -> list[OutboxEntry]:
        """Newest first: a descending range Query per status, each stopping after ``limit``."""
        if limit <= 0:
            return []
        found: dict[str, tuple[str, OutboxEntry]] = {}
        for st in statuses:
            for n, item in enumerate(self._db.query(
                    self.tables.outbox, IndexName=OUTBOX_DUE_INDEX, ScanIndexForward=False,
                    Limit=min(limit, 1000),
                    KeyConditionExpression="#s = :s AND #t >= :t",
                    ExpressionAttributeNames={"#s": "status", "#t": "next_attempt_at"},
                    ExpressionAttributeValues={":s": av(st), ":t": av(since)})):
                if n >= limit:
                    break
                entry = OutboxEntry.model_validate_json(item["doc"])
                # The index may briefly hold an entry under its old status too: the final wins.
                seen = found.get(entry.entry_id)
                if seen is None or seen[1].status == "pending":
                    found[entry.entry_id] = (item["next_attempt_at"], entry)
        ordered = sorted(found.values(), key=lambda t: t[1].entry_id)
        ordered.sort(key=lambda t: t[0], reverse=True)  # stable: ties by entry_id
        return [entry for _, entry in ordered[:limit]]

    def prune_notifications(self, before: datetime) -> int:
        """Hourly: a range Query per final status on ``status-due-index``; then, per entry, its
        dedup guards (its own and those of entries folded into it) in batches, its coalescing
        guard if it still points at it, and the entry itself last, so a prune interrupted half
        way finds the entry again next time instead of leaving guards nobody can find."""
        cutoff = isoformat(before)
        removed = 0
        for st in rules.OUTBOX_FINAL_STATUSES:
            old = list(self._db.query(
                self.tables.outbox, IndexName=OUTBOX_DUE_INDEX,
                KeyConditionExpression="#s = :s AND #t < :c",
                ExpressionAttributeNames={"#s": "status", "#t": "next_attempt_at"},
                ExpressionAttributeValues={":s": av(st), ":c": av(cutoff)}))
            for item in old:
                removed += self._prune_entry(OutboxEntry.model_validate_json(item["doc"]), st,
                                             cutoff)
        return removed

    def _prune_entry(self, entry: OutboxEntry, status: str, cutoff: str) -> int:
        from botocore.exceptions import ClientError

        keys: dict[tuple[str, str], None] = {(f"outbox-dedup#{entry.channel}", entry.dedup_id): None}
        owners = [entry.entry_id]
        while owners:  # the entries folded into this one, and into those, ...
            pk = f"outbox-folded#{owners.pop()}"
            for rec in self._meta_query(pk):
                keys[(pk, rec["sk"])] = None
                keys[(f"outbox-dedup#{rec['channel']}", rec["dedup_id"])] = None
                owners.append(rec["sk"])
        self._db.batch_write(self.tables.meta, [
            {"DeleteRequest": {"Key": {"pk": av(pk), "sk": av(sk)}}} for pk, sk in keys])
        conditional = [
            (self.tables.meta, {"pk": av(f"outbox-coalesce#{entry.channel}"),
                                "sk": av(entry.coalesce_key)},
             "#e = :e", {"#e": "entry_id"}, {":e": av(entry.entry_id)}),
            (self.tables.outbox, {"entry_id": av(entry.entry_id)},
             "#s = :s AND #t < :c", {"#s": "status", "#t": "next_attempt_at"},
             {":s": av(status), ":c": av(cutoff)}),
        ]
        deleted = False
        for table, key, condition, names, values in conditional:
            try:
                self._db.call("DeleteItem", table, TableName=table, Key=key,
                              ConditionExpression=condition, ExpressionAttributeNames=names,
                              ExpressionAttributeValues=values)
                deleted = table == self.tables.outbox
            except ClientError as exc:  # a newer entry owns the guard / the entry changed
                if not condition_failed(exc):
                    raise
        return int(deleted)
