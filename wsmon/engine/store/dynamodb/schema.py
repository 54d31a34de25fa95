"""The tables and their global secondary indexes; ``init_schema`` creates what is missing.

``TABLE``            one item per workset, key ``workset_id``. GSIs, all partitioned by ``state``
                     so no index has a single hot partition: ``state-priority-index`` (range
                     ``queue_order`` = "rank#created_at#workset_id", projection ALL: a Query
                     returns the queue in dispatch order), ``created-at-index`` (range
                     ``created_at``, projecting only ``priority``: ``queue_stats`` reads it) and
                     ``updated-at-index`` (range ``updated_at``, projection ALL: the dashboard's
                     ``worksets_changed_since``).
``TABLE-events``     the full history: key ``workset_id`` + ``seq`` (a Number).
``TABLE-meta``       small records keyed ``pk``/``sk`` (see meta.py, alerts.py, outbox.py, audit.py).
``TABLE-alerts``     key ``alert_id``; GSI ``state-updated-index`` (state, updated_at).
``TABLE-outbox``     key ``entry_id``; GSI ``status-due-index`` (status, next_attempt_at).
``TABLE-metrics``    key ``name`` + ``sk`` = "at#hash(dimensions)".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from wsmon.engine.store.dynamodb.client import DynamoClient
from wsmon.engine.store.errors import StoreError, StoreNotInitialized, StoreUnavailable

STATE_PRIORITY_INDEX = "state-priority-index"
CREATED_AT_INDEX = "created-at-index"
UPDATED_AT_INDEX = "updated-at-index"
ALERT_STATE_INDEX = "state-updated-index"
OUTBOX_DUE_INDEX = "status-due-index"

TABLE_SUFFIXES = ("", "-events", "-meta", "-alerts", "-outbox", "-metrics")


@dataclass(frozen=True)
class TableNames:
    """The six tables of one store, named after the worksets table of the store URL."""

    worksets: str
    events: str
    meta: str
    alerts: str
    outbox: str
    metrics: str

    @classmethod
    def of(cls, table: str) -> TableNames:
        if not re.fullmatch(r"[A-Za-z0-9_.\-]{3,240}", table or ""):
            raise StoreError(
                f"invalid DynamoDB table name {table!r}: 3-240 characters of letters, digits, "
                "'_', '-' and '.'"
            )
        return cls(*(f"{table}{suffix}" for suffix in TABLE_SUFFIXES))


def table_specs(tables: TableNames) -> list[dict[str, Any]]:
    def attrs(*names: tuple[str, str]) -> list[dict[str, str]]:
        return [{"AttributeName": n, "AttributeType": t} for n, t in names]

    def key(hash_: str, range_: str | None = None) -> list[dict[str, str]]:
        out = [{"AttributeName": hash_, "KeyType": "HASH"}]
        if range_:
            out.append({"AttributeName": range_, "KeyType": "RANGE"})
        return out

    def gsi(name: str, hash_: str, range_: str, include: list[str] | None = None
            ) -> dict[str, Any]:
        projection: dict[str, Any] = {"ProjectionType": "ALL"}
        if include:
            projection = {"ProjectionType": "INCLUDE", "NonKeyAttributes": include}
        return {"IndexName": name, "KeySchema": key(hash_, range_), "Projection": projection}

    return [
        {"TableName": tables.worksets,
         "AttributeDefinitions": attrs(("workset_id", "S"), ("state", "S"),
                                       ("queue_order", "S"), ("created_at", "S"),
                                       ("updated_at", "S")),
         "KeySchema": key("workset_id"),
         "GlobalSecondaryIndexes": [
             gsi(STATE_PRIORITY_INDEX, "state", "queue_order"),
             gsi(CREATED_AT_INDEX, "state", "created_at", include=["priority"]),
             gsi(UPDATED_AT_INDEX, "state", "updated_at"),
         ]},
        {"TableName": tables.events,
         "AttributeDefinitions": attrs(("workset_id", "S"), ("seq", "N")),
         "KeySchema": key("workset_id", "seq")},
        {"TableName": tables.meta,
         "AttributeDefinitions": attrs(("pk", "S"), ("sk", "S")),
         "KeySchema": key("pk", "sk")},
        {"TableName": tables.alerts,
         "AttributeDefinitions": attrs(("alert_id", "S"), ("state", "S"), ("updated_at", "S")),
         "KeySchema": key("alert_id"),
         "GlobalSecondaryIndexes": [gsi(ALERT_STATE_INDEX, "state", "updated_at")]},
        {"TableName": tables.outbox,
         "AttributeDefinitions": attrs(("entry_id", "S"), ("status", "S"),
                                       ("next_attempt_at", "S")),
         "KeySchema": key("entry_id"),
         "GlobalSecondaryIndexes": [gsi(OUTBOX_DUE_INDEX, "status", "next_attempt_at")]},
        {"TableName": tables.metrics,
         "AttributeDefinitions": attrs(("name", "S"), ("sk", "S")),
         "KeySchema": key("name", "sk")},
    ]


def init_schema(db: DynamoClient, tables: TableNames) -> list[str]:
    """Create every missing table (on-demand billing) and wait until all are ACTIVE; an
    existing table must carry our indexes. A human line per table."""
    from botocore.exceptions import ClientError

    lines: list[str] = []
    to_wait: list[str] = []
    for spec in table_specs(tables):
        name = spec["TableName"]
        try:
            db.call("CreateTable", name, BillingMode="PAY_PER_REQUEST",
                    passthrough=frozenset({"ResourceInUseException"}), **spec)
            to_wait.append(name)
            lines.append(f"created table {name}")
        except ClientError:  # ResourceInUseException: it exists (maybe still CREATING)
            _check_indexes(db, spec)
            to_wait.append(name)  # it may still be CREATING: "exists" must mean usable
            lines.append(f"exists table {name}")
    waiter = db.raw.get_waiter("table_exists")
    for name in to_wait:
        # CreateTable returns while the table is CREATING; usable only once ACTIVE.
        try:
            waiter.wait(TableName=name, WaiterConfig={"Delay": 2, "MaxAttempts": 150})
        except Exception as exc:
            raise StoreUnavailable(f"table {name} did not become ACTIVE: {exc}") from exc
    return lines


def _check_indexes(db: DynamoClient, spec: dict[str, Any]) -> None:
    """An existing table must have our indexes (an older Daylily table may not)."""
    wanted = {g["IndexName"]: g["KeySchema"] for g in spec.get("GlobalSecondaryIndexes", [])}
    if not wanted:
        return
    desc = db.call("DescribeTable", spec["TableName"], TableName=spec["TableName"])["Table"]
    have = {g["IndexName"]: g["KeySchema"] for g in desc.get("GlobalSecondaryIndexes", [])}
    wrong = [name for name, schema in wanted.items() if have.get(name) != schema]
    if wrong:
        raise StoreNotInitialized(
            f"table {spec['TableName']} exists but its index(es) {', '.join(wrong)} are "
            "missing or keyed differently (an older Daylily table?): use a new table name "
            "in the store URL and run `wsmon store init`"
        )
