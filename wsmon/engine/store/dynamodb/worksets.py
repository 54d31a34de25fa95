"""Worksets: registering, reading, the queue listing, state changes and the history."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from wsmon.core import aws
from wsmon.core.clock import isoformat
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
from wsmon.engine.store.dynamodb.client import cancellation
from wsmon.engine.store.dynamodb.codec import Expr, av, item_av, item_py, normalised
from wsmon.engine.store.dynamodb.schema import (
    CREATED_AT_INDEX,
    STATE_PRIORITY_INDEX,
    UPDATED_AT_INDEX,
)
from wsmon.engine.store.dynamodb.writes import (
    Plan,
    WorksetWrites,
    event_from,
    event_item,
    fence_condition,
    new_item,
    plan_of,
    workset_from,
)
from wsmon.engine.store.errors import InvalidCursor, StoreError


def _cursor_shape(data: dict[str, Any]) -> bool:
    """Per state partition, the last item handed out (``pos``) and the partitions done."""
    return isinstance(data.get("pos"), dict) and isinstance(data.get("done"), list)


class Worksets(WorksetWrites):
    def register_workset(self, workset_id: str, bucket: str, prefix: str,
                         priority: Priority | str = "normal", metadata: dict[str, Any] | None = None,
                         customer_id: str | None = None, *, state: WorksetState | str = "ready",
                         state_at: datetime | None = None, actor: str = "wsmon",
                         reason: str = "registered", **fields: Any) -> bool:
        from botocore.exceptions import ClientError

        ws, first_event = rules.new_workset(workset_id, bucket, prefix, priority, metadata,
                                            customer_id, state, state_at, actor, reason, fields,
                                            self.clock.now())
        first = first_event.numbered(workset_id, 1)
        item = new_item(ws, first, fields)
        try:
            self._db.call("TransactWriteItems", self.tables.worksets, TransactItems=[
                {"Put": {"TableName": self.tables.worksets, "Item": item_av(item),
                         "ConditionExpression": "attribute_not_exists(#id)",
                         "ExpressionAttributeNames": {"#id": "workset_id"},
                         "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}},
                {"Put": {"TableName": self.tables.events, "Item": item_av(event_item(first)),
                         "ConditionExpression": "attribute_not_exists(#seq)",
                         "ExpressionAttributeNames": {"#seq": "seq"}}},
            ])
        except ClientError as exc:
            reasons = cancellation(exc)
            if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
                if reasons[0].get("Item"):
                    self._cache.remember(item_py(reasons[0]["Item"]))
                return False
            if any(r.get("Code") == "TransactionConflict" for r in reasons):
                # Someone registers the same id at this very moment: theirs wins or ours.
                if self._read(workset_id) is not None:
                    return False
                return self.register_workset(workset_id, bucket, prefix, priority, metadata,
                                             customer_id, state=state, state_at=state_at,
                                             actor=actor, reason=reason, **fields)
            raise StoreError(f"registering workset {workset_id!r} failed: "
                             f"{aws.describe_client_error(exc)}") from exc
        self._cache.remember(normalised(item))
        return True

    def get_workset(self, workset_id: str) -> Workset | None:
        item = self._read(workset_id)
        return None if item is None else workset_from(item)

    def list_worksets(self, state: WorksetState | str | None = None,
                      priority: Priority | str | None = None, customer_id: str | None = None,
                      limit: int = 500, cursor: str | None = None) -> Page:
        """Queries ``state-priority-index`` per state and merges the sorted streams, so the
        page is in global (priority rank, created_at, workset_id) order without a Scan. The
        cursor records, per state partition, the last item handed out and whether it is done."""
        rules.check_page_limit(limit)
        states = [WorksetState.parse(state)] if state is not None else list(WorksetState)
        prio = Priority.parse(priority) if priority is not None else None
        pos: dict[str, Any] = {}
        done: set[str] = set()
        if cursor:
            data = rules.decode_cursor(cursor, _cursor_shape)
            pos = data["pos"]
            done = set(data["done"])
        streams: dict[str, tuple[list[dict[str, Any]], bool]] = {}
        for st in states:
            if st.value in done:
                continue
            streams[st.value] = self._fetch_queue(st, prio, customer_id, pos.get(st.value), limit)
        merged = sorted(
            ((it["queue_order"], it["workset_id"], s, it) for s, (items, _) in streams.items()
             for it in items),
            key=lambda t: (t[0], t[1]),
        )[:limit]
        taken: dict[str, int] = {}
        last: dict[str, dict[str, Any]] = {}
        for _, _, s, it in merged:
            taken[s] = taken.get(s, 0) + 1
            last[s] = it
        new_pos = dict(pos)
        new_done = set(done)
        for s, (items, exhausted) in streams.items():
            if s in last:
                it = last[s]
                new_pos[s] = {"workset_id": it["workset_id"], "state": s,
                              "queue_order": it["queue_order"]}
            if exhausted and taken.get(s, 0) == len(items):
                new_done.add(s)
        for _, _, _, it in merged:
            self._cache.remember(it)
        all_done = all(st.value in new_done for st in states)
        next_cursor = None if all_done else rules.encode_cursor(
            {"pos": new_pos, "done": sorted(new_done)})
        return Page(items=[workset_from(it) for _, _, _, it in merged], next_cursor=next_cursor)

    def _fetch_queue(self, state: WorksetState, prio: Priority | None, customer_id: str | None,
                     start: dict[str, Any] | None, want: int) -> tuple[list[dict[str, Any]], bool]:
        """Up to ``want`` matching items of one state partition after ``start``; and whether
        the partition has nothing after them."""
        expr = Expr()
        key_cond = f"{expr.n('state')} = {expr.v(state.value)}"
        if prio is not None:
            key_cond += f" AND begins_with({expr.n('queue_order')}, {expr.v(f'{prio.rank}#')})"
        kwargs: dict[str, Any] = {"IndexName": STATE_PRIORITY_INDEX,
                                  "KeyConditionExpression": key_cond,
                                  "Limit": max(want, 25)}
        if customer_id is not None:
            kwargs["FilterExpression"] = f"{expr.n('customer_id')} = {expr.v(customer_id)}"
        kwargs.update(expr.kwargs())
        if start:
            try:
                kwargs["ExclusiveStartKey"] = {k: av(v) for k, v in start.items()}
            except (AttributeError, TypeError):
                raise InvalidCursor(str(start)) from None
        items: list[dict[str, Any]] = []
        while True:
            out = self._db.call("Query", self.tables.worksets, TableName=self.tables.worksets,
                                **kwargs)
            items.extend(item_py(i) for i in out.get("Items", []))  # type: ignore[misc]
            lek = out.get("LastEvaluatedKey")
            if len(items) >= want:
                # More may follow even when this page ended exactly here.
                return items[:want], (not lek and len(items) == want)
            if not lek:
                return items, True
            kwargs["ExclusiveStartKey"] = lek

    def worksets_changed_since(self, since: datetime | None) -> tuple[list[Workset], datetime]:
        watermark = rules.change_watermark(self.clock.now())
        since_iso = isoformat(since) if since is not None else None

        def one(st: WorksetState) -> list[dict[str, Any]]:
            expr = Expr()
            cond = f"{expr.n('state')} = {expr.v(st.value)}"
            if since_iso is not None:
                cond += f" AND {expr.n('updated_at')} >= {expr.v(since_iso)}"
            return list(self._db.query(self.tables.worksets, IndexName=UPDATED_AT_INDEX,
                                       KeyConditionExpression=cond, **expr.kwargs()))

        found: dict[str, dict[str, Any]] = {}
        for items in self._db.parallel(one, list(WorksetState)):
            for it in items:
                # A workset moving between states can sit in two partitions for a moment.
                prev = found.get(it["workset_id"])
                if prev is None or int(prev.get("version", 0)) < int(it.get("version", 0)):
                    found[it["workset_id"]] = it
        for it in found.values():
            self._cache.remember(it)
        items = sorted(found.values(), key=lambda i: (i["updated_at"], i["workset_id"]))
        return [workset_from(i) for i in items], watermark

    def queue_stats(self, states: Iterable[WorksetState] | None = None) -> QueueStats:
        """One Query per state (per state asked for) on ``created-at-index``, which projects only the keys and
        ``priority``: reading a 10,000-workset queue moves ~1 MB of index entries (not the full
        items a COUNT on an ALL-projected index would read and bill), and no Scan, no hot
        counter item that every claim would have to update."""

        def one(st: WorksetState) -> Counter[str]:
            found: Counter[str] = Counter()
            for item in self._db.query(self.tables.worksets, IndexName=CREATED_AT_INDEX,
                                       KeyConditionExpression="#s = :s",
                                       ProjectionExpression="#p",
                                       ExpressionAttributeNames={"#s": "state", "#p": "priority"},
                                       ExpressionAttributeValues={":s": av(st.value)}):
                found[item.get("priority") or Priority.NORMAL.value] += 1
            return found

        counts = {s.value: {p.value: 0 for p in Priority} for s in WorksetState}
        wanted = (list(WorksetState) if states is None
                  else sorted({WorksetState.parse(s) for s in states}, key=list(WorksetState).index))
        for st, found in zip(wanted, self._db.parallel(one, wanted), strict=True):
            for prio, n in found.items():
                counts[st.value][prio] = counts[st.value].get(prio, 0) + n
        return QueueStats(counts=counts)

    # -- state changes (the rules decide, the version pin and fence condition guard) -----------

    def update_state(self, workset_id: str, new_state: WorksetState | str, reason: str,
                     actor: str, lease: Lease | None = None,
                     expected_state: WorksetState | str | None = None, **fields: Any) -> Workset:
        rules.check_lease_is_for(workset_id, lease)
        rules.check_fields(fields)
        target = WorksetState.parse(new_state)

        def plan(ws: Workset, item: dict[str, Any]) -> Plan:
            rules.check_conditions(ws, lease, expected_state)
            change = rules.transition(ws, target, actor, reason, self.clock.now(), fields)
            return plan_of(ws, item, change, fence_condition(lease) if lease else None)

        item = self._mutate(workset_id, plan)
        assert item is not None
        return workset_from(item)

    def update_fields(self, workset_id: str, *, actor: str = "wsmon", lease: Lease | None = None,
                      expected_state: WorksetState | str | None = None, **fields: Any) -> Workset:
        rules.check_lease_is_for(workset_id, lease)
        rules.check_fields(fields)

        def plan(ws: Workset, item: dict[str, Any]) -> Plan:
            rules.check_conditions(ws, lease, expected_state)
            change = rules.edit_fields(self.clock.now(), fields)
            return plan_of(ws, item, change, fence_condition(lease) if lease else None)

        item = self._mutate(workset_id, plan)
        assert item is not None
        return workset_from(item)

    def set_priority(self, workset_id: str, priority: Priority | str, actor: str,
                     reason: str = "") -> Workset:
        prio = Priority.parse(priority)

        def plan(ws: Workset, item: dict[str, Any]) -> Plan:
            return plan_of(ws, item, rules.reprioritise(ws, prio, actor, reason, self.clock.now()))

        item = self._mutate(workset_id, plan)
        assert item is not None
        return workset_from(item)

    # -- history ---------------------------------------------------------------------------

    def events(self, workset_id: str, limit: int | None = None) -> list[Event]:
        rules.check_limit(limit)
        if limit == 0:
            return []
        kwargs: dict[str, Any] = {"KeyConditionExpression": "#w = :w",
                                  "ExpressionAttributeNames": {"#w": "workset_id"},
                                  "ExpressionAttributeValues": {":w": av(workset_id)},
                                  "ConsistentRead": True}
        if limit is not None:
            kwargs["Limit"] = min(limit, 1000)
        out: list[Event] = []
        for item in self._db.query(self.tables.events, **kwargs):
            out.append(event_from(item, workset_id))
            if limit is not None and len(out) >= limit:
                break
        return out
