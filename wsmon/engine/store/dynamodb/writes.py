"""The one write path for workset items: rule -> plan -> one conditional write.

Every workset write is conditional on the item's ``version`` (bumped by every write) and, for a
lease holder, on its ``fence`` and owner; a claim is also conditional on the claim rule itself.
A write with an event is one ``TransactWriteItems`` (the conditional Update of the workset plus
the Put of its event); the returned record is computed locally and exactly, because the
condition pinned the version it was computed from.

The workset item: every ``Workset`` field as an attribute (fields at their model default are
simply absent), plus ``queue_order``, ``version``, ``event_seq`` and ``recent_events``: a fixed
ring, a map from ``seq % RECENT_EVENTS_KEPT`` to the event as compact JSON, so the item's size
never grows with its history.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any

from wsmon.core import aws
from wsmon.core.clock import Clock, isoformat, parse_iso
from wsmon.core.models import RECENT_EVENTS_KEPT, Event, Lease, Priority, Workset
from wsmon.engine.store import rules
from wsmon.engine.store.dynamodb.cache import ItemCache
from wsmon.engine.store.dynamodb.client import (
    MAX_WRITE_ATTEMPTS,
    DynamoClient,
    backoff,
    cancellation,
)
from wsmon.engine.store.dynamodb.codec import Expr, av, item_av, item_py, normalised
from wsmon.engine.store.dynamodb.schema import TableNames
from wsmon.engine.store.errors import StoreError, StoreUnavailable, WorksetNotFound

# GSI sort keys are limited to 1024 bytes; a pathological workset id only loses exact tie order.
_MAX_RANGE_KEY_BYTES = 1024

_WORKSET_FIELDS = frozenset(Workset.model_fields) - {"recent_events"}

Condition = Callable[[Expr], str]


def queue_order(priority: Priority, created_at: str, workset_id: str) -> str:
    """The ``state-priority-index`` range key: dispatch order as text."""
    key = f"{priority.rank}#{created_at}#{workset_id}"
    encoded = key.encode()
    if len(encoded) > _MAX_RANGE_KEY_BYTES:
        key = encoded[:_MAX_RANGE_KEY_BYTES].decode(errors="ignore")
    return key


def event_item(event: Event) -> dict[str, Any]:
    return {"workset_id": event.workset_id, "seq": event.seq, "at": isoformat(event.at),
            "actor": event.actor, "from_state": event.from_state.value if event.from_state else None,
            "to_state": event.to_state.value, "reason": event.reason or ""}


def ring_entry(event: Mapping[str, Any]) -> str:
    # Compact JSON text, not a map: one attribute per inline event keeps the item small.
    return json.dumps({k: v for k, v in event.items() if k != "workset_id"},
                      ensure_ascii=False, separators=(",", ":"))


def event_from(item: Mapping[str, Any], workset_id: str) -> Event:
    return Event(workset_id=workset_id, seq=int(item["seq"]), at=parse_iso(item["at"]),
                 actor=item.get("actor") or "", from_state=item.get("from_state"),
                 to_state=item["to_state"], reason=item.get("reason") or "")


def workset_from(item: Mapping[str, Any]) -> Workset:
    # A deep copy: the item may be the cached one, and callers may mutate what they get.
    data = {k: copy.deepcopy(v) for k, v in item.items() if k in _WORKSET_FIELDS and v is not None}
    ring = item.get("recent_events") or {}
    events = sorted((event_from(json.loads(e), item["workset_id"]) for e in ring.values()),
                    key=lambda e: e.seq)
    data["recent_events"] = events
    return Workset(**data)


def new_item(ws: Workset, first: Event, fields: Iterable[str]) -> dict[str, Any]:
    """The item a registration puts: the record's own attributes, the caller's fields, and the
    first event in the ring."""
    created = isoformat(ws.created_at)
    item: dict[str, Any] = {
        "workset_id": ws.workset_id, "bucket": ws.bucket, "prefix": ws.prefix,
        "state": ws.state.value, "priority": ws.priority.value, "customer_id": ws.customer_id,
        "metadata": ws.metadata, "created_at": created, "updated_at": isoformat(ws.updated_at),
        "state_changed_at": isoformat(ws.state_changed_at),
        "queue_order": queue_order(ws.priority, created, ws.workset_id), "fence": 0,
        "version": 1, "event_seq": first.seq,
    }  # fields at their model default (attempts 0, no steps...) are simply absent
    for k in fields:
        item[k] = getattr(ws, k)
    item["recent_events"] = {str(first.seq % RECENT_EVENTS_KEPT): ring_entry(event_item(first))}
    return {k: v for k, v in item.items() if v is not None}


class Plan:
    """The attributes one write sets and removes, its event item, and any extra condition."""

    __slots__ = ("condition", "event", "removes", "sets")

    def __init__(self, sets: dict[str, Any], removes: list[str], event: dict[str, Any] | None,
                 condition: Condition | None = None) -> None:
        self.sets = sets
        self.removes = removes
        self.event = event
        self.condition = condition


def plan_of(ws: Workset, item: Mapping[str, Any], change: rules.Change,
            condition: Condition | None = None) -> Plan:
    """A rule's ``Change`` as item attributes (validated through the model first)."""
    new = rules.apply(ws, change)
    sets: dict[str, Any] = {}
    removes: list[str] = []
    for k in change.fields:
        value = getattr(new, k)
        if value is None:
            removes.append(k)
        else:
            sets[k] = value
    if "priority" in change.fields:
        sets["queue_order"] = queue_order(new.priority, item["created_at"], ws.workset_id)
    event = None
    if change.event is not None:
        seq = int(item.get("event_seq", 0)) + 1
        event = event_item(change.event.numbered(ws.workset_id, seq))
    return Plan(sets, removes, event, condition)


def fence_condition(lease: Lease) -> Condition:
    """The still-held rule as a condition: the lease's fence and owner."""
    def cond(expr: Expr) -> str:
        return (f"{expr.n('fence')} = {expr.v(lease.fence)} AND "
                f"{expr.n('lock_owner')} = {expr.v(lease.owner_id)}")
    return cond


class Stale(Exception):
    """A conditional write found the item changed; carries the current item (None: gone)."""

    def __init__(self, item: dict[str, Any] | None, conflict: bool = False) -> None:
        super().__init__("stale")
        self.item = item
        self.conflict = conflict


class WorksetWrites:
    """Reading and writing workset items (mixed into the store)."""

    _db: DynamoClient
    tables: TableNames
    _cache: ItemCache
    clock: Clock
    max_clock_skew: timedelta
    default_lease_seconds: float

    def _read(self, workset_id: str) -> dict[str, Any] | None:
        out = self._db.call("GetItem", self.tables.worksets, TableName=self.tables.worksets,
                            Key={"workset_id": av(workset_id)}, ConsistentRead=True)
        item = item_py(out.get("Item"))
        if item is None:
            self._cache.forget(workset_id)
        else:
            self._cache.remember(item)
        return item

    def _current(self, workset_id: str) -> tuple[dict[str, Any] | None, bool]:
        """(item, fresh): the cached item when there is one, else a consistent read."""
        item = self._cache.get(workset_id)
        if item is not None:
            return item, False
        return self._read(workset_id), True

    def _refresh(self, workset_id: str, old_item_av: dict[str, Any] | None) -> dict[str, Any] | None:
        if old_item_av:
            item = item_py(old_item_av)
            self._cache.remember(item)
            return item
        return self._read(workset_id)

    def _write_workset(self, item: dict[str, Any], plan: Plan) -> dict[str, Any]:
        """One conditional write of ``item`` (as this instance knows it) to ``item + plan``.

        Conditional on the known ``version`` (and whatever ``plan.condition`` adds). With an
        event: one TransactWriteItems (the Update plus the Put of the event). Returns the new
        item, computed locally: the condition guarantees the base was current. Raises ``Stale``
        carrying the current item (or None if it vanished) when the condition fails.
        """
        from botocore.exceptions import ClientError

        wid = item["workset_id"]
        version = int(item.get("version", 0))
        event = plan.event
        expr = Expr()
        sets = dict(plan.sets)
        sets["version"] = version + 1
        set_parts = [f"{expr.n(k)} = {expr.v(v)}" for k, v in sets.items()]
        if event is not None:
            slot = str(event["seq"] % RECENT_EVENTS_KEPT)
            set_parts.append(f"{expr.path('recent_events', slot)} = {expr.v(ring_entry(event))}")
            set_parts.append(f"{expr.n('event_seq')} = {expr.v(event['seq'])}")
        removes = [r for r in plan.removes if r not in sets]
        update = "SET " + ", ".join(set_parts)
        if removes:
            update += " REMOVE " + ", ".join(expr.n(r) for r in removes)
        condition = f"{expr.n('version')} = {expr.v(version)}"
        if plan.condition is not None:
            condition = f"{condition} AND ({plan.condition(expr)})"
        update_req = {"TableName": self.tables.worksets, "Key": {"workset_id": av(wid)},
                      "UpdateExpression": update, "ConditionExpression": condition,
                      "ReturnValuesOnConditionCheckFailure": "ALL_OLD", **expr.kwargs()}
        try:
            if event is None:
                self._db.call("UpdateItem", self.tables.worksets, **update_req)
            else:
                put = {"TableName": self.tables.events, "Item": item_av(event),
                       "ConditionExpression": "attribute_not_exists(#seq)",
                       "ExpressionAttributeNames": {"#seq": "seq"}}
                self._db.call("TransactWriteItems", self.tables.worksets,
                              TransactItems=[{"Update": update_req}, {"Put": put}])
        except ClientError as exc:
            code = aws.error_code(exc)
            if code == "ConditionalCheckFailedException":
                old = (getattr(exc, "response", None) or {}).get("Item")
                raise Stale(self._refresh(wid, old)) from None
            reasons = cancellation(exc)
            first = reasons[0] if reasons else {}
            if first.get("Code") == "ConditionalCheckFailed":
                raise Stale(self._refresh(wid, first.get("Item"))) from None
            if any(r.get("Code") == "TransactionConflict" for r in reasons):
                # Another transaction touched the item at the same moment: re-read, retry.
                raise Stale(self._read(wid), conflict=True) from None
            if len(reasons) > 1 and reasons[1].get("Code") == "ConditionalCheckFailed":
                # The event seq is taken although the workset's version matched: someone wrote
                # the events table outside the store. Never overwrite history.
                raise StoreError(
                    f"event {event and event['seq']} of workset {wid!r} already exists in table "
                    f"{self.tables.events}; the history was written outside wsmon"
                ) from None
            raise StoreError(f"DynamoDB write of workset {wid!r} failed: "
                             f"{aws.describe_client_error(exc)}") from exc
        new = dict(item)
        for k, v in sets.items():
            new[k] = normalised(v)
        for r in removes:
            new.pop(r, None)
        if event is not None:
            ring = dict(new.get("recent_events") or {})
            ring[str(event["seq"] % RECENT_EVENTS_KEPT)] = ring_entry(event)
            new["recent_events"] = ring
            new["event_seq"] = event["seq"]
        self._cache.remember(new)
        return new

    def _mutate(self, workset_id: str, plan: Callable[[Workset, dict[str, Any]], Plan | None]
                ) -> dict[str, Any] | None:
        """Ask ``plan`` (a rule) for the write against the item as known, and write it; on a
        stale base, plan again on the current item.

        ``plan(record, item)`` returns the write, or None for "nothing to do". A refusal (an
        exception, or None) decided on a cached item is never final: the item is read again
        and the rule asked again, so a stale "taken" never turns away a free workset and a
        stale state never refuses a legal transition.
        """
        item, fresh = self._current(workset_id)
        for attempt in range(MAX_WRITE_ATTEMPTS):
            if item is None:
                raise WorksetNotFound(workset_id)
            try:
                change = plan(workset_from(item), item)
            except (StoreError, ValueError):
                if fresh:
                    raise
                item, fresh = self._read(workset_id), True
                continue
            if change is None:
                if fresh:
                    return None
                item, fresh = self._read(workset_id), True
                continue
            try:
                return self._write_workset(item, change)
            except Stale as stale:
                if stale.conflict:
                    backoff(attempt)
                item, fresh = stale.item, True
        raise StoreUnavailable(
            f"workset {workset_id!r} kept changing under us ({MAX_WRITE_ATTEMPTS} attempts); "
            "try again"
        )
