"""Small records in ``TABLE-meta`` (keyed ``pk``/``sk``): monitors (``monitor``), key/value
state (``kv#NAMESPACE``), named leases (``lease``), cluster status (``cluster``) and silences
(``silence``). Alerts and the outbox keep their guard items there too (see their modules)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

import structlog

from wsmon.core.clock import Clock, isoformat, parse_iso
from wsmon.core.models import ClusterStatus, MonitorInfo, NamedLease, Silence
from wsmon.engine.store import rules
from wsmon.engine.store.dynamodb.client import DynamoClient, condition_failed
from wsmon.engine.store.dynamodb.codec import Expr, av, item_av, item_py
from wsmon.engine.store.dynamodb.schema import TableNames

log = structlog.get_logger(__name__)


class MetaTable:
    """Reading and writing ``TABLE-meta`` items (mixed into the store)."""

    _db: DynamoClient
    tables: TableNames
    clock: Clock
    max_clock_skew: timedelta
    default_lease_seconds: float

    def _meta_get(self, pk: str, sk: str) -> dict[str, Any] | None:
        out = self._db.call("GetItem", self.tables.meta, TableName=self.tables.meta,
                            Key={"pk": av(pk), "sk": av(sk)}, ConsistentRead=True)
        return item_py(out.get("Item"))

    def _meta_put(self, item: dict[str, Any]) -> None:
        self._db.call("PutItem", self.tables.meta, TableName=self.tables.meta, Item=item_av(item))

    def _meta_query(self, pk: str) -> Iterator[dict[str, Any]]:
        return self._db.query(self.tables.meta, KeyConditionExpression="#pk = :pk",
                              ExpressionAttributeNames={"#pk": "pk"},
                              ExpressionAttributeValues={":pk": av(pk)}, ConsistentRead=True)

    def _meta_delete(self, pk: str, sk: str) -> None:
        self._db.call("DeleteItem", self.tables.meta, TableName=self.tables.meta,
                      Key={"pk": av(pk), "sk": av(sk)})



class MetaRecords(MetaTable):
    # -- monitors ------------------------------------------------------------------------------

    def record_monitor_heartbeat(self, monitor_id: str, host: str, pid: int, version: str,
                                 role: str = "engine", details: dict[str, Any] | None = None,
                                 started_at: datetime | None = None) -> MonitorInfo:
        now = self.clock.now()
        expr = Expr()
        sets = {"host": host, "pid": pid, "version": version, "role": role,
                "last_seen": isoformat(now), "details": rules.monitor_details_json(details)}
        parts = [f"{expr.n(k)} = {expr.v(v)}" for k, v in sets.items()]
        started = expr.n("started_at")
        if started_at is not None:
            parts.append(f"{started} = {expr.v(isoformat(started_at))}")
        else:
            # A heartbeat keeps the first start time of this monitor id.
            parts.append(f"{started} = if_not_exists({started}, {expr.v(isoformat(now))})")
        out = self._db.call("UpdateItem", self.tables.meta, TableName=self.tables.meta,
                            Key={"pk": av("monitor"), "sk": av(monitor_id)},
                            UpdateExpression="SET " + ", ".join(parts), ReturnValues="ALL_NEW",
                            **expr.kwargs())
        return _monitor_from(item_py(out["Attributes"]))  # type: ignore[arg-type]

    def list_monitors(self) -> list[MonitorInfo]:
        return sorted((_monitor_from(i) for i in self._meta_query("monitor")),
                      key=lambda m: m.monitor_id)

    def remove_monitor(self, monitor_id: str) -> None:
        self._meta_delete("monitor", monitor_id)

    # -- named leases --------------------------------------------------------------------------
    # The rule (rules.named_lease_fence) as two conditional updates, no read first: renewal by
    # the holder keeps the fence; a takeover of a released or abandoned lease bumps it.

    def acquire_named_lease(self, name: str, owner_id: str,
                            lease_seconds: float) -> NamedLease | None:
        from botocore.exceptions import ClientError

        now = self.clock.now()
        expires = isoformat(now + rules.lease_duration(self.default_lease_seconds, lease_seconds))
        cutoff = isoformat(rules.claim_cutoff(now, self.max_clock_skew))
        key = {"pk": av("lease"), "sk": av(name)}
        # Renew first: the holder renews every tick, a takeover is the rare case.
        try:
            out = self._db.call(
                "UpdateItem", self.tables.meta, TableName=self.tables.meta, Key=key,
                UpdateExpression="SET #exp = :exp", ConditionExpression="#owner = :owner",
                ExpressionAttributeNames={"#exp": "expires_at", "#owner": "owner_id"},
                ExpressionAttributeValues={":exp": av(expires), ":owner": av(owner_id)},
                ReturnValues="ALL_NEW")
            return _named_from(item_py(out["Attributes"]))  # type: ignore[arg-type]
        except ClientError as exc:
            if not condition_failed(exc):
                raise
        try:
            out = self._db.call(
                "UpdateItem", self.tables.meta, TableName=self.tables.meta, Key=key,
                UpdateExpression="SET #exp = :exp, #owner = :owner, "
                                 "#fence = if_not_exists(#fence, :zero) + :one",
                ConditionExpression="attribute_not_exists(#owner) OR #exp < :cutoff",
                ExpressionAttributeNames={"#exp": "expires_at", "#owner": "owner_id",
                                          "#fence": "fence"},
                ExpressionAttributeValues={":exp": av(expires), ":owner": av(owner_id),
                                           ":cutoff": av(cutoff), ":zero": av(0),
                                           ":one": av(1)},
                ReturnValues="ALL_NEW")
        except ClientError as exc:
            if not condition_failed(exc):
                raise
            return None
        return _named_from(item_py(out["Attributes"]))  # type: ignore[arg-type]

    def release_named_lease(self, lease: NamedLease) -> None:
        from botocore.exceptions import ClientError

        # Keep the item (and its fence, so fences only ever grow); just drop the owner.
        try:
            self._db.call("UpdateItem", self.tables.meta, TableName=self.tables.meta,
                          Key={"pk": av("lease"), "sk": av(lease.name)},
                          UpdateExpression="REMOVE #owner, #exp",
                          ConditionExpression="#owner = :owner AND #fence = :fence",
                          ExpressionAttributeNames={"#owner": "owner_id", "#fence": "fence",
                                                    "#exp": "expires_at"},
                          ExpressionAttributeValues={":owner": av(lease.owner_id),
                                                     ":fence": av(lease.fence)})
        except ClientError as exc:
            if not condition_failed(exc):
                raise
            # Already taken over or released: releasing is idempotent for the old holder.

    def get_named_lease(self, name: str) -> NamedLease | None:
        item = self._meta_get("lease", name)
        if not item or not item.get("owner_id"):
            return None
        return _named_from(item)

    # -- key/value -----------------------------------------------------------------------------
    # Values are stored as JSON text: exact round trips of floats and nested data, no Decimal.

    def kv_get(self, namespace: str, key: str) -> Any | None:
        item = self._meta_get(f"kv#{namespace}", key)
        return None if item is None else json.loads(item["value"])

    def kv_put(self, namespace: str, key: str, value: Any) -> None:
        self._meta_put({"pk": f"kv#{namespace}", "sk": key, "value": json.dumps(value)})

    def kv_put_many(self, namespace: str, items: Mapping[str, Any]) -> None:
        requests = [{"PutRequest": {"Item": item_av({"pk": f"kv#{namespace}", "sk": k,
                                                     "value": json.dumps(v)})}}
                    for k, v in items.items()]
        if requests:
            self._db.batch_write(self.tables.meta, requests)

    def kv_get_all(self, namespace: str) -> dict[str, Any]:
        return {i["sk"]: json.loads(i["value"]) for i in self._meta_query(f"kv#{namespace}")}

    def kv_delete(self, namespace: str, key: str) -> None:
        self._meta_delete(f"kv#{namespace}", key)

    # -- clusters ------------------------------------------------------------------------------

    def put_cluster_status(self, status: ClusterStatus) -> None:
        self._meta_put({"pk": "cluster", "sk": status.name, "doc": status.model_dump_json()})

    def list_cluster_status(self) -> list[ClusterStatus]:
        return sorted((ClusterStatus.model_validate_json(i["doc"])
                       for i in self._meta_query("cluster")), key=lambda c: c.name)

    # -- silences ------------------------------------------------------------------------------

    def silence(self, actor: str, ends_at: datetime, rule: str | None = None,
                subject: str | None = None, reason: str = "",
                starts_at: datetime | None = None) -> Silence:
        s = rules.new_silence(uuid.uuid4().hex, actor, ends_at, rule, subject, reason, starts_at,
                              self.clock.now())
        self._meta_put({"pk": "silence", "sk": s.silence_id, "doc": s.model_dump_json()})
        return s

    def list_silences(self, active_at: datetime | None = None) -> list[Silence]:
        out = [Silence.model_validate_json(i["doc"]) for i in self._meta_query("silence")]
        if active_at is not None:
            out = [s for s in out if rules.silence_active(s, active_at)]
        return sorted(out, key=rules.silence_order)

    def delete_silence(self, silence_id: str, actor: str) -> None:
        log.info("silence_deleted", silence_id=silence_id, actor=actor)
        self._meta_delete("silence", silence_id)


def _monitor_from(item: dict[str, Any]) -> MonitorInfo:
    return MonitorInfo(monitor_id=item["sk"], host=item["host"], pid=int(item["pid"]),
                       version=item["version"], role=item["role"],
                       started_at=parse_iso(item["started_at"]),
                       last_seen=parse_iso(item["last_seen"]),
                       details=json.loads(item.get("details") or "{}"))


def _named_from(item: dict[str, Any]) -> NamedLease:
    return NamedLease(name=item["sk"], owner_id=item["owner_id"], fence=int(item["fence"]),
                      expires_at=parse_iso(item["expires_at"]))
