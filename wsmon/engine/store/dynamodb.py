"""DynamoDB state store: ``dynamodb://TABLE?region=REGION[&endpoint_url=URL][&profile=NAME]``.

Tables (all created by ``init_schema`` / ``wsmon store init``: idempotent, on-demand billing,
waiting until ACTIVE):

``TABLE``            one item per workset, key ``workset_id`` (the seed's table). GSIs, all
                     partitioned by ``state`` so no index has a single hot partition:
                     ``state-priority-index`` (range ``queue_order`` = "rank#created_at#workset_id",
                     projection ALL: a Query returns the queue in dispatch order),
                     ``created-at-index`` (range ``created_at`` as in the seed, projecting only
                     ``priority``: ``queue_stats`` reads it) and ``updated-at-index`` (range
                     ``updated_at``, projection ALL: the dashboard's ``worksets_changed_since``).
``TABLE-events``     the full history: key ``workset_id`` + ``seq`` (a Number, so it sorts as a
                     number without zero-padding). The workset item keeps only the last
                     ``RECENT_EVENTS_KEPT`` events, in a fixed ring (``recent_events``: a map from
                     ``seq % RECENT_EVENTS_KEPT`` to the event as compact JSON), so its size never
                     grows with its history.
``TABLE-meta``       small records keyed ``pk``/``sk``: monitors (``monitor``), key/value state
                     (``kv#NAMESPACE``), named leases (``lease``), cluster status (``cluster``),
                     silences (``silence``), the one active alert per (rule, subject)
                     (``alert-active``), outbox dedup/coalesce guards, the dedup ids of entries
                     coalesced into a newer one (``outbox-folded#ENTRY_ID``, so pruning that
                     entry finds them) and the metric-name registry.
``TABLE-alerts``     key ``alert_id``; GSI ``state-updated-index`` (state, updated_at).
``TABLE-outbox``     key ``entry_id``; GSI ``status-due-index`` (status, next_attempt_at). The
                     item's ``next_attempt_at`` attribute is its time in that index: the next
                     attempt while pending, and once delivered or given up the time it got there
                     (the document keeps the model's own fields). So the same index, with no
                     new GSI and nothing to migrate on existing tables, answers "due now",
                     "recent, newest first" (``since``) and "final and old" (pruning). Items
                     written before this rule keep their last scheduled attempt there, which is
                     at most a backoff interval earlier: they are pruned that much sooner.
``TABLE-metrics``    key ``name`` + ``sk`` = "at#hash(dimensions)": a chart is one Query on a time
                     range, and the same series at the same instant is one sample.

Concurrency. Every workset write is conditional on the item's ``version`` (bumped by every
write) and, for a lease holder, on its ``fence`` and owner; a claim is also conditional on the
claim rule itself ("ready and unowned, or lease expired more than ``max_clock_skew`` ago"). A
transition's event must be written under the next ``seq``, which cannot be known without knowing
the item, so the store keeps the last version it saw of each item (a bounded LRU fed by every
read and write). With that, a claim or a transition is exactly one ``TransactWriteItems`` request
(the conditional Update of the workset plus the Put of its event, atomically) and the returned
record is computed locally and exactly, because the condition pinned the version it was
computed from. A stale cache entry costs a failed write, whose ``ALL_OLD`` item refreshes the
cache, and a retry; a record this instance never read costs one GetItem first. That is the
failure path, never the correctness: nothing is written unless the condition holds.

No Scan anywhere. Every path that runs per poll or per screen refresh (``list_worksets``,
``queue_stats``, ``expired_leases``, ``worksets_changed_since``, ``list_alerts``,
``due_notifications``, ``list_notifications``, ``metric_history``, ``list_monitors``,
``events``) is a Query or a GetItem. The only paths that read many items at once are the hourly
prunes: ``prune_metric_history`` (a Query per registered metric name, then batched deletes),
``prune_notifications`` (a range Query per final status on ``status-due-index``) and
``prune_alerts`` (a range Query on ``state-updated-index``).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import math
import random
import re
import threading
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any
from urllib.parse import parse_qs, urlsplit

import structlog
from pydantic import BaseModel

from wsmon.core import aws
from wsmon.core.clock import Clock, isoformat, parse_iso, utc
from wsmon.engine.store.base import (
    AlertNotFound,
    LeaseLost,
    LockChanged,
    StateConflict,
    Store,
    StoreError,
    StoreNotInitialized,
    StoreUnavailable,
    WorksetNotFound,
    TRANSITIONS,
    check_fields,
    check_transition,
    force_release_reason,
)
from wsmon.core.models import (
    RECENT_EVENTS_KEPT,
    Alert,
    AlertState,
    ClusterStatus,
    Event,
    Lease,
    MetricSample,
    MonitorInfo,
    NamedLease,
    OutboxEntry,
    Page,
    Priority,
    QueueStats,
    Silence,
    Workset,
    WorksetState,
)

log = structlog.get_logger(__name__)

S = WorksetState
LEASE_STATES = (S.LOCKED, S.IN_PROGRESS)

STATE_PRIORITY_INDEX = "state-priority-index"
CREATED_AT_INDEX = "created-at-index"
UPDATED_AT_INDEX = "updated-at-index"
ALERT_STATE_INDEX = "state-updated-index"
OUTBOX_DUE_INDEX = "status-due-index"

TABLE_SUFFIXES = ("", "-events", "-meta", "-alerts", "-outbox", "-metrics")

# GSI sort keys are limited to 1024 bytes; a pathological workset id only loses exact tie order.
_MAX_RANGE_KEY_BYTES = 1024
# How many versions of worksets this store instance remembers (about 2 KB each).
_CACHE_MAX_ITEMS = 20_000
# Conditional-write retries after a stale cache or a transaction conflict.
_MAX_WRITE_ATTEMPTS = 6
# The changed-since watermark trails "now" so a write whose GSI copy lands late (GSIs are
# eventually consistent, usually well under a second) or whose writer's clock lags is not skipped.
_WATERMARK_LAG = timedelta(seconds=2)

_REFUSED_CODES = frozenset({"AccessDenied", "AccessDeniedException", "UnrecognizedClientException",
                            "InvalidSignatureException", "ExpiredTokenException",
                            "MissingAuthenticationTokenException"})
_THROTTLE_CODES = frozenset({"ProvisionedThroughputExceededException", "ThrottlingException",
                             "RequestLimitExceeded", "InternalServerError",
                             "ServiceUnavailable"})

# --------------------------------------------------------------------------------------------
# (de)serialisation
# --------------------------------------------------------------------------------------------

_serializer = None
_deserializer = None


def _codecs():
    # boto3.dynamodb.types imports boto3; done lazily so importing this module stays cheap.
    global _serializer, _deserializer
    if _serializer is None:
        from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

        _serializer, _deserializer = TypeSerializer(), TypeDeserializer()
    return _serializer, _deserializer


def _to_ddb(value: Any) -> Any:
    """Python value -> what TypeSerializer accepts (DynamoDB has no float: numbers are Decimal)."""
    if value is None or isinstance(value, (str, bool, Decimal)):
        return value
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)  # DynamoDB numbers cannot hold NaN/inf; keep it readable
        return Decimal(repr(value))
    if isinstance(value, datetime):
        return isoformat(value)
    if isinstance(value, BaseModel):
        return _to_ddb(value.model_dump())
    if isinstance(value, Mapping):
        return {str(k): _to_ddb(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_ddb(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return [_to_ddb(v) for v in sorted(value, key=str)]
    raise TypeError(f"cannot store a {type(value).__name__} in DynamoDB")


def _from_ddb(value: Any) -> Any:
    """Deserialised DynamoDB value -> plain Python (Decimal back to int or float)."""
    if isinstance(value, Decimal):
        if value == value.to_integral_value() and value.as_tuple().exponent >= 0:
            return int(value)
        return float(value)
    if isinstance(value, dict):
        return {k: _from_ddb(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_from_ddb(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return [_from_ddb(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return value


def _av(value: Any) -> dict[str, Any]:
    return _codecs()[0].serialize(_to_ddb(value))


def _item_av(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _av(v) for k, v in item.items() if v is not None}


def _item_py(item: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if item is None:
        return None
    deser = _codecs()[1]
    return {k: _from_ddb(deser.deserialize(v)) for k, v in item.items()}


def _normalised(value: Any) -> Any:
    """The value exactly as a later read would return it (keeps the local cache exact)."""
    return _from_ddb(_to_ddb(value))


class _Expr:
    """Collects ExpressionAttributeNames/Values: every name goes through ``#n`` placeholders,
    so reserved words (state, status, name, value, owner...) never break an expression."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self._name_keys: dict[str, str] = {}
        self.values: dict[str, Any] = {}

    def n(self, attr: str) -> str:
        key = self._name_keys.get(attr)
        if key is None:
            key = f"#n{len(self._name_keys)}"
            self._name_keys[attr] = key
            self.names[key] = attr
        return key

    def path(self, *parts: str) -> str:
        return ".".join(self.n(p) for p in parts)

    def v(self, value: Any) -> str:
        key = f":v{len(self.values)}"
        self.values[key] = _av(value)
        return key

    def kwargs(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.names:
            out["ExpressionAttributeNames"] = dict(self.names)
        if self.values:
            out["ExpressionAttributeValues"] = dict(self.values)
        return out


def _encode_cursor(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> dict[str, Any]:
    try:
        pad = "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(cursor + pad))
        if not isinstance(data, dict) or data.get("v") != 1:
            raise ValueError
        return data
    except Exception:
        raise ValueError("invalid page cursor (it comes from a previous page of the same query)") from None


def _queue_order(priority: Priority, created_at: str, workset_id: str) -> str:
    key = f"{priority.rank}#{created_at}#{workset_id}"
    encoded = key.encode()
    if len(encoded) > _MAX_RANGE_KEY_BYTES:
        key = encoded[:_MAX_RANGE_KEY_BYTES].decode(errors="ignore")
    return key


def _iso(dt: datetime | None) -> str | None:
    return None if dt is None else isoformat(dt)


def _dt(text: str | None) -> datetime | None:
    return None if text in (None, "") else parse_iso(text)


_WORKSET_FIELDS = frozenset(Workset.model_fields) - {"recent_events"}


def _ring_entry(event: Mapping[str, Any]) -> str:
    # Compact JSON text, not a map: one attribute per inline event keeps the item small.
    return json.dumps({k: v for k, v in event.items() if k != "workset_id"},
                      ensure_ascii=False, separators=(",", ":"))


def _event_from(item: Mapping[str, Any], workset_id: str) -> Event:
    return Event(workset_id=workset_id, seq=int(item["seq"]), at=parse_iso(item["at"]),
                 actor=item.get("actor") or "", from_state=item.get("from_state"),
                 to_state=item["to_state"], reason=item.get("reason") or "")


def _workset_from(item: Mapping[str, Any]) -> Workset:
    # A deep copy: the item may be the cached one, and callers may mutate what they get.
    data = {k: copy.deepcopy(v) for k, v in item.items() if k in _WORKSET_FIELDS and v is not None}
    ring = item.get("recent_events") or {}
    events = sorted((_event_from(json.loads(e), item["workset_id"]) for e in ring.values()),
                    key=lambda e: e.seq)
    data["recent_events"] = events
    return Workset(**data)


# --------------------------------------------------------------------------------------------
# the store
# --------------------------------------------------------------------------------------------


class DynamoDBStore(Store):
    """The state store on DynamoDB (see the module docstring for the table design)."""

    def __init__(self, table: str, *, region: str | None, endpoint_url: str | None = None,
                 aws_profile: str | None = None, clock: Clock | None = None,
                 max_clock_skew: float = 30.0, default_lease_seconds: float = 300.0,
                 max_attempts: int | None = None, client: Any = None) -> None:
        super().__init__(clock=clock, max_clock_skew=max_clock_skew,
                         default_lease_seconds=default_lease_seconds)
        if not re.fullmatch(r"[A-Za-z0-9_.\-]{3,240}", table or ""):
            raise StoreError(
                f"invalid DynamoDB table name {table!r}: 3-240 characters of letters, digits, "
                "'_', '-' and '.'"
            )
        self.table = table
        self.events_table = f"{table}-events"
        self.meta_table = f"{table}-meta"
        self.alerts_table = f"{table}-alerts"
        self.outbox_table = f"{table}-outbox"
        self.metrics_table = f"{table}-metrics"
        self.region = region
        self.endpoint_url = endpoint_url
        if client is None:
            extra = {} if max_attempts is None else {"max_attempts": max_attempts}
            client = aws.client("dynamodb", profile=aws_profile, region=region,
                                endpoint_url=endpoint_url, **extra)
        self._client = client
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._known_metric_names: set[str] = set()

    @classmethod
    def from_url(cls, url: str, *, aws_profile: str | None = None, clock: Clock | None = None,
                 max_clock_skew: float = 30.0, default_lease_seconds: float = 300.0,
                 **options: Any) -> DynamoDBStore:
        parts = urlsplit(url)
        if parts.scheme.lower() != "dynamodb" or not parts.netloc:
            raise StoreError(
                f"bad DynamoDB store URL {url.split('?', 1)[0]!r}: expected "
                "dynamodb://TABLE?region=REGION[&endpoint_url=URL]"
            )
        query = parse_qs(parts.query)
        unknown = set(query) - {"region", "endpoint_url", "profile"}
        if unknown:
            raise StoreError(f"unknown DynamoDB store URL option(s) {sorted(unknown)}: "
                             "allowed are region, endpoint_url, profile")
        region = (query.get("region") or [None])[0]
        endpoint = (query.get("endpoint_url") or [None])[0]
        profile = aws_profile or (query.get("profile") or [None])[0]
        return cls(parts.netloc, region=region, endpoint_url=endpoint, aws_profile=profile,
                   clock=clock, max_clock_skew=max_clock_skew,
                   default_lease_seconds=default_lease_seconds, **options)

    @property
    def url(self) -> str:
        out = f"dynamodb://{self.table}"
        params = []
        if self.region:
            params.append(f"region={self.region}")
        if self.endpoint_url:
            params.append(f"endpoint_url={self._safe_endpoint()}")
        return out + ("?" + "&".join(params) if params else "")

    def _safe_endpoint(self) -> str:
        # An endpoint URL may carry credentials (user:pass@host) or a signed query: never shown.
        if not self.endpoint_url:
            return ""
        p = urlsplit(self.endpoint_url)
        host = p.hostname or ""
        if p.port:
            host = f"{host}:{p.port}"
        return f"{p.scheme}://{host}{p.path}" if p.scheme else host

    @property
    def client(self) -> Any:
        """The low-level boto3 client (the benchmark counts its requests)."""
        return self._client

    def close(self) -> None:
        close = getattr(self._client, "close", None)
        if close:
            close()

    # ---------------------------------------------------------------------------------------
    # calling DynamoDB: every request goes through _call so errors read the same everywhere
    # ---------------------------------------------------------------------------------------

    def _call(self, operation: str, table: str, *, passthrough: frozenset[str] = frozenset(),
              **kwargs: Any) -> dict[str, Any]:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectionClosedError,
            ConnectTimeoutError,
            EndpointConnectionError,
            NoCredentialsError,
            NoRegionError,
            PartialCredentialsError,
            ReadTimeoutError,
        )

        method = getattr(self._client, _snake(operation))
        try:
            return method(**kwargs)
        except ClientError as exc:
            if aws.error_code(exc) in passthrough:
                raise
            if operation == "TransactWriteItems":
                return self._raise_mapped_transaction_error(exc, kwargs["TransactItems"])
            mapped = self._map_client_error(exc, operation, table)
            if mapped is exc:
                raise
            raise mapped from exc
        except (EndpointConnectionError, ConnectTimeoutError, ConnectionClosedError,
                ReadTimeoutError) as exc:
            where = self._safe_endpoint() or f"the {self.region or 'default'} region endpoint"
            raise StoreUnavailable(
                f"cannot reach DynamoDB at {where} ({type(exc).__name__}); check the network "
                "and the store URL's endpoint_url/region"
            ) from exc
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise StoreUnavailable(
                f"no usable AWS credentials for DynamoDB ({exc}); set a profile (aws.profile) "
                "or the AWS_* environment variables"
            ) from exc
        except NoRegionError as exc:
            raise StoreUnavailable(
                "no AWS region for DynamoDB: add ?region=REGION to the store URL"
            ) from exc
        except BotoCoreError as exc:
            raise StoreUnavailable(f"DynamoDB {operation} on table {table} failed: {exc}") from exc

    def _map_client_error(self, exc: Exception, operation: str, table: str) -> Exception:
        code = aws.error_code(exc) or ""
        message = ((getattr(exc, "response", None) or {}).get("Error") or {}).get("Message") or ""
        if code in ("ConditionalCheckFailedException", "TransactionCanceledException"):
            return exc  # callers decide what a failed condition means
        if code == "ResourceNotFoundException":
            missing = self._missing_table_name(message, table)
            return StoreNotInitialized(f"table {missing} not found: run `wsmon store init`")
        if code in _REFUSED_CODES:
            action = "/".join(f"dynamodb:{op}" for op in operation.split("/"))
            # AWS's message names the exact action that was refused; prefer it when present.
            found = re.search(r"perform:?\s+(dynamodb:[A-Za-z]+)", message)
            if found:
                action = found.group(1)
            return StoreUnavailable(
                f"{action} on table {table} was refused ({code}): grant it, see `wsmon iam-policy`"
            )
        if code in _THROTTLE_CODES:
            return StoreUnavailable(
                f"DynamoDB is throttling or failing {operation} on table {table} ({code}) even "
                "after retries; try again shortly"
            )
        return StoreError(f"DynamoDB {operation} on table {table} failed: "
                          f"{aws.describe_client_error(exc)}")

    def _raise_mapped_transaction_error(self, exc: Exception, items: list[dict[str, Any]]) -> Any:
        # IAM authorises a transaction per item (PutItem, UpdateItem... on each table), so a
        # refusal names those actions and tables, not "TransactWriteItems".
        actions: list[str] = []
        tables: list[str] = []
        for entry in items:
            kind, op = next(iter(entry.items()))
            action = "ConditionCheckItem" if kind == "ConditionCheck" else f"{kind}Item"
            if action not in actions:
                actions.append(action)
            if op["TableName"] not in tables:
                tables.append(op["TableName"])
        mapped = self._map_client_error(exc, "/".join(actions), ", ".join(tables))
        if mapped is exc:
            raise exc
        raise mapped from exc

    def _missing_table_name(self, message: str, table: str) -> str:
        found = re.search(r"Table: (\S+) not found", message)
        return found.group(1) if found else table

    @staticmethod
    def _cancellation(exc: Exception) -> list[dict[str, Any]]:
        return list((getattr(exc, "response", None) or {}).get("CancellationReasons") or [])

    def _query(self, table: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """All items of a Query, following LastEvaluatedKey."""
        while True:
            out = self._call("Query", table, TableName=table, **kwargs)
            for item in out.get("Items", []):
                yield _item_py(item)  # type: ignore[misc]
            lek = out.get("LastEvaluatedKey")
            if not lek:
                return
            kwargs["ExclusiveStartKey"] = lek

    def _count(self, table: str, **kwargs: Any) -> int:
        total = 0
        while True:
            out = self._call("Query", table, TableName=table, Select="COUNT", **kwargs)
            total += int(out.get("Count", 0))
            lek = out.get("LastEvaluatedKey")
            if not lek:
                return total
            kwargs["ExclusiveStartKey"] = lek

    def _batch_write(self, table: str, requests: list[dict[str, Any]]) -> None:
        """BatchWriteItem in chunks of 25, resending what DynamoDB left unprocessed."""
        for start in range(0, len(requests), 25):
            pending = {table: requests[start:start + 25]}
            for attempt in range(10):
                out = self._call("BatchWriteItem", table, RequestItems=pending)
                pending = out.get("UnprocessedItems") or {}
                if not pending:
                    break
                _backoff(attempt)
            else:
                raise StoreUnavailable(f"DynamoDB kept throttling batch writes to table {table}")

    # ---------------------------------------------------------------------------------------
    # schema
    # ---------------------------------------------------------------------------------------

    def _table_specs(self) -> list[dict[str, Any]]:
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
            {"TableName": self.table,
             "AttributeDefinitions": attrs(("workset_id", "S"), ("state", "S"),
                                           ("queue_order", "S"), ("created_at", "S"),
                                           ("updated_at", "S")),
             "KeySchema": key("workset_id"),
             "GlobalSecondaryIndexes": [
                 gsi(STATE_PRIORITY_INDEX, "state", "queue_order"),
                 gsi(CREATED_AT_INDEX, "state", "created_at", include=["priority"]),
                 gsi(UPDATED_AT_INDEX, "state", "updated_at"),
             ]},
            {"TableName": self.events_table,
             "AttributeDefinitions": attrs(("workset_id", "S"), ("seq", "N")),
             "KeySchema": key("workset_id", "seq")},
            {"TableName": self.meta_table,
             "AttributeDefinitions": attrs(("pk", "S"), ("sk", "S")),
             "KeySchema": key("pk", "sk")},
            {"TableName": self.alerts_table,
             "AttributeDefinitions": attrs(("alert_id", "S"), ("state", "S"), ("updated_at", "S")),
             "KeySchema": key("alert_id"),
             "GlobalSecondaryIndexes": [gsi(ALERT_STATE_INDEX, "state", "updated_at")]},
            {"TableName": self.outbox_table,
             "AttributeDefinitions": attrs(("entry_id", "S"), ("status", "S"),
                                           ("next_attempt_at", "S")),
             "KeySchema": key("entry_id"),
             "GlobalSecondaryIndexes": [gsi(OUTBOX_DUE_INDEX, "status", "next_attempt_at")]},
            {"TableName": self.metrics_table,
             "AttributeDefinitions": attrs(("name", "S"), ("sk", "S")),
             "KeySchema": key("name", "sk")},
        ]

    def init_schema(self) -> list[str]:
        from botocore.exceptions import ClientError

        lines: list[str] = []
        to_wait: list[str] = []
        for spec in self._table_specs():
            name = spec["TableName"]
            try:
                self._call("CreateTable", name, BillingMode="PAY_PER_REQUEST",
                           passthrough=frozenset({"ResourceInUseException"}), **spec)
                to_wait.append(name)
                lines.append(f"created table {name}")
            except ClientError:  # ResourceInUseException: it exists (maybe still CREATING)
                self._check_indexes(spec)
                to_wait.append(name)  # it may still be CREATING: "exists" must mean usable
                lines.append(f"exists table {name}")
        waiter = self._client.get_waiter("table_exists")
        for name in to_wait:
            # CreateTable returns while the table is CREATING; usable only once ACTIVE.
            try:
                waiter.wait(TableName=name, WaiterConfig={"Delay": 2, "MaxAttempts": 150})
            except Exception as exc:
                raise StoreUnavailable(f"table {name} did not become ACTIVE: {exc}") from exc
        return lines

    def _check_indexes(self, spec: dict[str, Any]) -> None:
        """An existing table must have our indexes (an older Daylily table may not)."""
        wanted = {g["IndexName"]: g["KeySchema"] for g in spec.get("GlobalSecondaryIndexes", [])}
        if not wanted:
            return
        desc = self._call("DescribeTable", spec["TableName"], TableName=spec["TableName"])["Table"]
        have = {g["IndexName"]: g["KeySchema"] for g in desc.get("GlobalSecondaryIndexes", [])}
        wrong = [name for name, schema in wanted.items() if have.get(name) != schema]
        if wrong:
            raise StoreNotInitialized(
                f"table {spec['TableName']} exists but its index(es) {', '.join(wrong)} are "
                "missing or keyed differently (an older Daylily table?): use a new table name "
                "in the store URL and run `wsmon store init`"
            )

    # ---------------------------------------------------------------------------------------
    # the version cache
    # ---------------------------------------------------------------------------------------

    def _remember(self, item: dict[str, Any] | None) -> None:
        if not item or "workset_id" not in item:
            return
        wid = item["workset_id"]
        with self._cache_lock:
            old = self._cache.get(wid)
            # A GSI read may lag behind what this instance already wrote: keep the newer.
            if old is not None and int(old.get("version", 0)) > int(item.get("version", 0)):
                self._cache.move_to_end(wid)
                return
            self._cache[wid] = item
            self._cache.move_to_end(wid)
            while len(self._cache) > _CACHE_MAX_ITEMS:
                self._cache.popitem(last=False)

    def _forget(self, workset_id: str) -> None:
        with self._cache_lock:
            self._cache.pop(workset_id, None)

    def _cached(self, workset_id: str) -> dict[str, Any] | None:
        with self._cache_lock:
            item = self._cache.get(workset_id)
            if item is not None:
                self._cache.move_to_end(workset_id)
            return item

    def _read(self, workset_id: str) -> dict[str, Any] | None:
        out = self._call("GetItem", self.table, TableName=self.table,
                         Key={"workset_id": _av(workset_id)}, ConsistentRead=True)
        item = _item_py(out.get("Item"))
        if item is None:
            self._forget(workset_id)
        else:
            self._remember(item)
        return item

    def _current(self, workset_id: str) -> tuple[dict[str, Any] | None, bool]:
        """(item, fresh): the cached item when there is one, else a consistent read."""
        item = self._cached(workset_id)
        if item is not None:
            return item, False
        return self._read(workset_id), True

    # ---------------------------------------------------------------------------------------
    # the one write path for worksets
    # ---------------------------------------------------------------------------------------

    def _write_workset(self, item: dict[str, Any], sets: dict[str, Any], removes: Iterable[str],
                       event: dict[str, Any] | None, extra_condition: Callable[[_Expr], str] | None
                       = None) -> dict[str, Any]:
        """One conditional write of ``item`` (as this instance knows it) to ``item + change``.

        Conditional on the known ``version`` (and whatever ``extra_condition`` adds). With an
        event: one TransactWriteItems (the Update plus the Put of the event). Returns the new
        item, computed locally: the condition guarantees the base was current. Raises
        ``_Stale`` carrying the current item (or None if it vanished) when the condition fails.
        """
        from botocore.exceptions import ClientError

        wid = item["workset_id"]
        version = int(item.get("version", 0))
        expr = _Expr()
        sets = dict(sets)
        sets["version"] = version + 1
        set_parts = [f"{expr.n(k)} = {expr.v(v)}" for k, v in sets.items()]
        if event is not None:
            slot = str(event["seq"] % RECENT_EVENTS_KEPT)
            set_parts.append(f"{expr.path('recent_events', slot)} = {expr.v(_ring_entry(event))}")
            set_parts.append(f"{expr.n('event_seq')} = {expr.v(event['seq'])}")
        removes = [r for r in removes if r not in sets]
        update = "SET " + ", ".join(set_parts)
        if removes:
            update += " REMOVE " + ", ".join(expr.n(r) for r in removes)
        condition = f"{expr.n('version')} = {expr.v(version)}"
        if extra_condition is not None:
            condition = f"{condition} AND ({extra_condition(expr)})"
        update_req = {"TableName": self.table, "Key": {"workset_id": _av(wid)},
                      "UpdateExpression": update, "ConditionExpression": condition,
                      "ReturnValuesOnConditionCheckFailure": "ALL_OLD", **expr.kwargs()}
        try:
            if event is None:
                self._call("UpdateItem", self.table, **update_req)
            else:
                put = {"TableName": self.events_table, "Item": _item_av(event),
                       "ConditionExpression": "attribute_not_exists(#seq)",
                       "ExpressionAttributeNames": {"#seq": "seq"}}
                self._call("TransactWriteItems", self.table,
                           TransactItems=[{"Update": update_req}, {"Put": put}])
        except ClientError as exc:
            code = aws.error_code(exc)
            if code == "ConditionalCheckFailedException":
                old = (getattr(exc, "response", None) or {}).get("Item")
                raise _Stale(self._refresh(wid, old)) from None
            reasons = self._cancellation(exc)
            first = reasons[0] if reasons else {}
            if first.get("Code") == "ConditionalCheckFailed":
                raise _Stale(self._refresh(wid, first.get("Item"))) from None
            if any(r.get("Code") == "TransactionConflict" for r in reasons):
                # Another transaction touched the item at the same moment: re-read, retry.
                raise _Stale(self._read(wid), conflict=True) from None
            if len(reasons) > 1 and reasons[1].get("Code") == "ConditionalCheckFailed":
                # The event seq is taken although the workset's version matched: someone wrote
                # the events table outside the store. Never overwrite history.
                raise StoreError(
                    f"event {event and event['seq']} of workset {wid!r} already exists in table "
                    f"{self.events_table}; the history was written outside wsmon"
                ) from None
            raise StoreError(f"DynamoDB write of workset {wid!r} failed: "
                             f"{aws.describe_client_error(exc)}") from exc
        new = dict(item)
        for k, v in sets.items():
            new[k] = _normalised(v)
        for r in removes:
            new.pop(r, None)
        if event is not None:
            ring = dict(new.get("recent_events") or {})
            ring[str(event["seq"] % RECENT_EVENTS_KEPT)] = _ring_entry(event)
            new["recent_events"] = ring
            new["event_seq"] = event["seq"]
        self._remember(new)
        return new

    def _refresh(self, workset_id: str, old_item_av: dict[str, Any] | None) -> dict[str, Any] | None:
        if old_item_av:
            item = _item_py(old_item_av)
            self._remember(item)
            return item
        return self._read(workset_id)

    def _event(self, item: dict[str, Any], at: datetime, actor: str,
               from_state: WorksetState | None, to_state: WorksetState, reason: str) -> dict[str, Any]:
        return {"workset_id": item["workset_id"], "seq": int(item.get("event_seq", 0)) + 1,
                "at": isoformat(at), "actor": actor,
                "from_state": from_state.value if from_state else None,
                "to_state": to_state.value, "reason": reason or ""}

    def _mutate(self, workset_id: str, plan: Callable[[dict[str, Any], bool], _Plan | None]
                ) -> dict[str, Any] | None:
        """Run ``plan`` against the item as known, write it; on a stale base re-plan on the
        current item. ``plan(item, fresh)`` returns the change, or None for "nothing to do"
        (it may raise; when ``fresh`` is False it should ask for a fresh read by raising
        ``_NeedFresh`` before deciding something irreversible, like an error)."""
        item, fresh = self._current(workset_id)
        for attempt in range(_MAX_WRITE_ATTEMPTS):
            if item is None:
                raise WorksetNotFound(workset_id)
            try:
                change = plan(item, fresh)
            except _NeedFresh:
                item, fresh = self._read(workset_id), True
                continue
            if change is None:
                return None
            try:
                return self._write_workset(item, change.sets, change.removes, change.event,
                                           change.condition)
            except _Stale as stale:
                if stale.conflict:
                    _backoff(attempt)
                item, fresh = stale.item, True
        raise StoreUnavailable(
            f"workset {workset_id!r} kept changing under us ({_MAX_WRITE_ATTEMPTS} attempts); "
            "try again"
        )

    # ---------------------------------------------------------------------------------------
    # worksets
    # ---------------------------------------------------------------------------------------

    def register_workset(self, workset_id: str, bucket: str, prefix: str,
                         priority: Priority | str = "normal", metadata: dict[str, Any] | None = None,
                         customer_id: str | None = None, *, state: WorksetState | str = "ready",
                         state_at: datetime | None = None, actor: str = "wsmon",
                         reason: str = "registered", **fields: Any) -> bool:
        from botocore.exceptions import ClientError

        if not isinstance(workset_id, str) or workset_id == "":
            raise ValueError("workset_id must be a non-empty string")
        check_fields(fields)
        prio = Priority.parse(priority)
        st = WorksetState.parse(state)
        if st.holds_lease:
            raise StoreError(
                f"cannot register workset {workset_id!r} as {st.value}: a workset only "
                "becomes locked or in_progress through a claim"
            )
        now = self.clock.now()
        created = isoformat(now)
        changed = isoformat(state_at) if state_at is not None else created
        item: dict[str, Any] = {
            "workset_id": workset_id, "bucket": bucket, "prefix": prefix, "state": st.value,
            "priority": prio.value, "customer_id": customer_id, "metadata": metadata or {},
            "created_at": created, "updated_at": created, "state_changed_at": changed,
            "queue_order": _queue_order(prio, created, workset_id), "fence": 0, "version": 1,
            "event_seq": 1,
        }  # fields at their model default (attempts 0, no steps...) are simply absent
        for k, v in fields.items():
            item[k] = v
        if customer_id is not None:  # the explicit argument wins over fields
            item["customer_id"] = customer_id
        event = {"workset_id": workset_id, "seq": 1, "at": changed, "actor": actor,
                 "from_state": None, "to_state": st.value, "reason": reason or ""}
        item["recent_events"] = {str(1 % RECENT_EVENTS_KEPT): _ring_entry(event)}
        item = {k: v for k, v in item.items() if v is not None}
        try:
            self._call("TransactWriteItems", self.table, TransactItems=[
                {"Put": {"TableName": self.table, "Item": _item_av(item),
                         "ConditionExpression": "attribute_not_exists(#id)",
                         "ExpressionAttributeNames": {"#id": "workset_id"},
                         "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}},
                {"Put": {"TableName": self.events_table, "Item": _item_av(event),
                         "ConditionExpression": "attribute_not_exists(#seq)",
                         "ExpressionAttributeNames": {"#seq": "seq"}}},
            ])
        except ClientError as exc:
            reasons = self._cancellation(exc)
            if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
                if reasons[0].get("Item"):
                    self._remember(_item_py(reasons[0]["Item"]))
                return False
            if any(r.get("Code") == "TransactionConflict" for r in reasons):
                # Someone registers the same id at this very moment: theirs wins or ours.
                existing = self._read(workset_id)
                if existing is not None:
                    return False
                return self.register_workset(workset_id, bucket, prefix, prio, metadata,
                                             customer_id, state=st, state_at=state_at,
                                             actor=actor, reason=reason, **fields)
            raise StoreError(f"registering workset {workset_id!r} failed: "
                             f"{aws.describe_client_error(exc)}") from exc
        self._remember(_normalised(item))
        return True

    def get_workset(self, workset_id: str) -> Workset | None:
        item = self._read(workset_id)
        return None if item is None else _workset_from(item)

    def _require(self, workset_id: str) -> dict[str, Any]:
        item = self._read(workset_id)
        if item is None:
            raise WorksetNotFound(workset_id)
        return item

    def list_worksets(self, state: WorksetState | str | None = None,
                      priority: Priority | str | None = None, customer_id: str | None = None,
                      limit: int = 500, cursor: str | None = None) -> Page:
        """Queries ``state-priority-index`` per state and merges the sorted streams, so the
        page is in global (priority rank, created_at, workset_id) order without a Scan. The
        cursor records, per state partition, the last item handed out and whether it is done."""
        if limit <= 0:
            raise ValueError("limit must be positive")
        states = [WorksetState.parse(state)] if state is not None else list(WorksetState)
        prio = Priority.parse(priority) if priority is not None else None
        pos: dict[str, Any] = {}
        done: set[str] = set()
        if cursor:
            data = _decode_cursor(cursor)
            pos = data.get("pos") or {}
            done = set(data.get("done") or [])
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
            self._remember(it)
        all_done = all(st.value in new_done for st in states)
        next_cursor = None if all_done else _encode_cursor(
            {"v": 1, "pos": new_pos, "done": sorted(new_done)})
        return Page(items=[_workset_from(it) for _, _, _, it in merged], next_cursor=next_cursor)

    def _fetch_queue(self, state: WorksetState, prio: Priority | None, customer_id: str | None,
                     start: dict[str, Any] | None, want: int) -> tuple[list[dict[str, Any]], bool]:
        """Up to ``want`` matching items of one state partition after ``start``; and whether
        the partition has nothing after them."""
        expr = _Expr()
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
            kwargs["ExclusiveStartKey"] = {k: _av(v) for k, v in start.items()}
        items: list[dict[str, Any]] = []
        while True:
            out = self._call("Query", self.table, TableName=self.table, **kwargs)
            items.extend(_item_py(i) for i in out.get("Items", []))  # type: ignore[misc]
            lek = out.get("LastEvaluatedKey")
            if len(items) >= want:
                # More may follow even when this page ended exactly here.
                return items[:want], (not lek and len(items) == want)
            if not lek:
                return items, True
            kwargs["ExclusiveStartKey"] = lek

    def worksets_changed_since(self, since: datetime | None) -> tuple[list[Workset], datetime]:
        watermark = self.clock.now() - _WATERMARK_LAG
        since_iso = isoformat(since) if since is not None else None

        def one(st: WorksetState) -> list[dict[str, Any]]:
            expr = _Expr()
            cond = f"{expr.n('state')} = {expr.v(st.value)}"
            if since_iso is not None:
                cond += f" AND {expr.n('updated_at')} >= {expr.v(since_iso)}"
            return list(self._query(self.table, IndexName=UPDATED_AT_INDEX,
                                    KeyConditionExpression=cond, **expr.kwargs()))

        found: dict[str, dict[str, Any]] = {}
        for items in self._parallel(one, list(WorksetState)):
            for it in items:
                # A workset moving between states can sit in two partitions for a moment.
                prev = found.get(it["workset_id"])
                if prev is None or int(prev.get("version", 0)) < int(it.get("version", 0)):
                    found[it["workset_id"]] = it
        for it in found.values():
            self._remember(it)
        items = sorted(found.values(), key=lambda i: (i["updated_at"], i["workset_id"]))
        return [_workset_from(i) for i in items], watermark

    def _parallel(self, fn: Callable[[Any], Any], args: list[Any]) -> list[Any]:
        # The low-level client is thread-safe; a few concurrent Queries keep refreshes snappy.
        with ThreadPoolExecutor(max_workers=min(8, len(args) or 1)) as pool:
            return list(pool.map(fn, args))

    def queue_stats(self) -> QueueStats:
        """One Query per state on ``created-at-index``, which projects only the keys and
        ``priority``: reading a 10,000-workset queue moves ~1 MB of index entries (not the full
        items a COUNT on an ALL-projected index would read and bill), and no Scan, no hot
        counter item that every claim would have to update."""

        def one(st: WorksetState) -> Counter[str]:
            found: Counter[str] = Counter()
            for item in self._query(self.table, IndexName=CREATED_AT_INDEX,
                                    KeyConditionExpression="#s = :s",
                                    ProjectionExpression="#p",
                                    ExpressionAttributeNames={"#s": "state", "#p": "priority"},
                                    ExpressionAttributeValues={":s": _av(st.value)}):
                found[item.get("priority") or Priority.NORMAL.value] += 1
            return found

        counts = {s.value: {p.value: 0 for p in Priority} for s in WorksetState}
        for st, found in zip(WorksetState, self._parallel(one, list(WorksetState))):
            for prio, n in found.items():
                counts[st.value][prio] = counts[st.value].get(prio, 0) + n
        return QueueStats(counts=counts)

    # ---------------------------------------------------------------------------------------
    # transitions
    # ---------------------------------------------------------------------------------------

    def _lease_held(self, item: dict[str, Any], lease: Lease) -> bool:
        return (int(item.get("fence", 0)) == lease.fence
                and item.get("lock_owner") == lease.owner_id
                and item.get("state") in (S.LOCKED.value, S.IN_PROGRESS.value))

    def _lease_lost(self, item: dict[str, Any], lease: Lease) -> LeaseLost:
        return LeaseLost(lease.workset_id, lease.fence, int(item.get("fence", 0)))

    def _fence_condition(self, lease: Lease) -> Callable[[_Expr], str]:
        def cond(expr: _Expr) -> str:
            return (f"{expr.n('fence')} = {expr.v(lease.fence)} AND "
                    f"{expr.n('lock_owner')} = {expr.v(lease.owner_id)}")
        return cond

    def _check_conditions(self, item: dict[str, Any], fresh: bool, workset_id: str,
                          lease: Lease | None, expected: WorksetState | None) -> WorksetState:
        """The caller's conditions on the record it is about to change (lease still held, state
        as expected); returns the current state. A refusal on a cached item asks for a fresh read."""
        current = WorksetState.parse(item["state"])
        if lease is not None and not self._lease_held(item, lease):
            _need_fresh(fresh)
            raise self._lease_lost(item, lease)
        if expected is not None and current != expected:
            _need_fresh(fresh)
            raise StateConflict(workset_id, expected, current)
        return current

    def update_state(self, workset_id: str, new_state: WorksetState | str, reason: str,
                     actor: str, lease: Lease | None = None,
                     expected_state: WorksetState | str | None = None, **fields: Any) -> Workset:
        new = WorksetState.parse(new_state)
        expected = _expected_for(workset_id, lease, expected_state)
        check_fields(fields)

        def plan(item: dict[str, Any], fresh: bool) -> _Plan:
            current = self._check_conditions(item, fresh, workset_id, lease, expected)
            if new not in TRANSITIONS[current]:
                _need_fresh(fresh)
                check_transition(current, new)
            if new is S.LOCKED:
                raise StoreError(
                    f"workset {workset_id!r} can only become locked through a claim (acquire_lock)"
                )
            now = self.clock.now()
            sets: dict[str, Any] = {"state": new.value, "updated_at": now,
                                    "state_changed_at": now, **fields}
            removes: list[str] = []
            if not new.holds_lease:
                # The holder's later writes fail on the owner/state part of the lease check.
                removes += ["lock_owner", "lock_acquired_at", "lock_expires_at"]
            removes += [k for k, v in fields.items() if v is None]
            sets = {k: v for k, v in sets.items() if v is not None}
            event = self._event(item, now, actor, current, new, reason)
            return _Plan(sets, removes, event,
                         self._fence_condition(lease) if lease is not None else None)

        item = self._mutate(workset_id, plan)
        assert item is not None
        return _workset_from(item)

    def update_fields(self, workset_id: str, *, actor: str = "wsmon", lease: Lease | None = None,
                      expected_state: WorksetState | str | None = None, **fields: Any) -> Workset:
        expected = _expected_for(workset_id, lease, expected_state)
        check_fields(fields)

        def plan(item: dict[str, Any], fresh: bool) -> _Plan:
            self._check_conditions(item, fresh, workset_id, lease, expected)
            sets = {k: v for k, v in fields.items() if v is not None}
            sets["updated_at"] = self.clock.now()
            removes = [k for k, v in fields.items() if v is None]
            return _Plan(sets, removes, None,
                         self._fence_condition(lease) if lease is not None else None)

        item = self._mutate(workset_id, plan)
        assert item is not None
        return _workset_from(item)

    def set_priority(self, workset_id: str, priority: Priority | str, actor: str,
                     reason: str = "") -> Workset:
        prio = Priority.parse(priority)

        def plan(item: dict[str, Any], fresh: bool) -> _Plan:
            current = WorksetState.parse(item["state"])
            now = self.clock.now()
            old = item.get("priority", "normal")
            sets = {"priority": prio.value, "updated_at": now,
                    "queue_order": _queue_order(prio, item["created_at"], workset_id)}
            why = reason or f"priority {old} -> {prio.value}"
            return _Plan(sets, [], self._event(item, now, actor, current, current, why))

        item = self._mutate(workset_id, plan)
        assert item is not None
        return _workset_from(item)

    # ---------------------------------------------------------------------------------------
    # leases
    # ---------------------------------------------------------------------------------------

    def _lease_seconds(self, lease_seconds: float | None) -> float:
        seconds = self.default_lease_seconds if lease_seconds is None else lease_seconds
        if seconds <= 0:
            raise ValueError(f"lease_seconds must be positive, not {seconds}")
        return seconds

    def _claimable(self, item: dict[str, Any], now: datetime) -> bool:
        state = item.get("state")
        if state == S.READY.value and not item.get("lock_owner"):
            return True
        if state in (S.LOCKED.value, S.IN_PROGRESS.value):
            expires = _dt(item.get("lock_expires_at"))
            return expires is not None and expires < now - self.max_clock_skew
        return False

    def acquire_lock(self, workset_id: str, owner_id: str,
                     lease_seconds: float | None = None) -> Lease | None:
        seconds = self._lease_seconds(lease_seconds)
        result: dict[str, Any] = {}

        def plan(item: dict[str, Any], fresh: bool) -> _Plan | None:
            now = self.clock.now()
            if not self._claimable(item, now):
                _need_fresh(fresh)  # a stale "taken" must not turn away a free workset
                return None
            current = WorksetState.parse(item["state"])
            fence = int(item.get("fence", 0)) + 1
            expires = now + timedelta(seconds=seconds)
            result.update(fence=fence, expires=expires)
            # Taking over an expired lease keeps the state: a running workset is not rewound.
            target = current if current.holds_lease else S.LOCKED
            sets = {"state": target.value, "lock_owner": owner_id, "lock_acquired_at": now,
                    "lock_expires_at": expires, "fence": fence, "updated_at": now}
            reason = "claimed"
            if current.holds_lease:
                reason = (f"claimed: lease of {item.get('lock_owner')} expired at "
                          f"{item.get('lock_expires_at')}")
            else:
                sets["state_changed_at"] = now
            cutoff = isoformat(now - self.max_clock_skew)

            def claim_condition(expr: _Expr) -> str:
                # The claim rule itself, independent of the version pin: free, or expired by
                # more than the allowed clock skew.
                st, owner, exp = expr.n("state"), expr.n("lock_owner"), expr.n("lock_expires_at")
                return (f"({st} = {expr.v(S.READY.value)} AND attribute_not_exists({owner})) OR "
                        f"({st} IN ({expr.v(S.LOCKED.value)}, {expr.v(S.IN_PROGRESS.value)}) "
                        f"AND {exp} < {expr.v(cutoff)})")

            return _Plan(sets, [], self._event(item, now, owner_id, current, target, reason),
                         claim_condition)

        try:
            item = self._mutate(workset_id, plan)
        except WorksetNotFound:
            return None
        if item is None:
            return None
        return Lease(workset_id=workset_id, owner_id=owner_id, fence=result["fence"],
                     expires_at=result["expires"])

    def _lease_update(self, lease: Lease, sets: dict[str, Any], *, require_held: bool = True
                      ) -> dict[str, Any]:
        """An UpdateItem conditional on the lease (fence, owner, a lease state); no event."""
        from botocore.exceptions import ClientError

        expr = _Expr()
        sets = dict(sets)
        parts = [f"{expr.n(k)} = {expr.v(v)}" for k, v in sets.items()]
        parts.append(f"{expr.n('version')} = {expr.n('version')} + {expr.v(1)}")
        cond = (f"{expr.n('fence')} = {expr.v(lease.fence)} AND "
                f"{expr.n('lock_owner')} = {expr.v(lease.owner_id)} AND "
                f"{expr.n('state')} IN ({expr.v(S.LOCKED.value)}, {expr.v(S.IN_PROGRESS.value)})")
        try:
            out = self._call("UpdateItem", self.table, TableName=self.table,
                             Key={"workset_id": _av(lease.workset_id)},
                             UpdateExpression="SET " + ", ".join(parts), ConditionExpression=cond,
                             ReturnValues="ALL_NEW",
                             ReturnValuesOnConditionCheckFailure="ALL_OLD", **expr.kwargs())
        except ClientError as exc:
            if aws.error_code(exc) != "ConditionalCheckFailedException":
                raise
            old = (getattr(exc, "response", None) or {}).get("Item")
            item = self._refresh(lease.workset_id, old)
            if item is None:
                raise WorksetNotFound(lease.workset_id) from None
            raise self._lease_lost(item, lease) from None
        item = _item_py(out["Attributes"])
        self._remember(item)
        return item  # type: ignore[return-value]

    def renew_lock(self, lease: Lease, lease_seconds: float | None = None) -> Lease:
        seconds = self._lease_seconds(lease_seconds)
        now = self.clock.now()
        expires = now + timedelta(seconds=seconds)
        self._lease_update(lease, {"lock_expires_at": expires, "updated_at": now})
        return Lease(workset_id=lease.workset_id, owner_id=lease.owner_id, fence=lease.fence,
                     expires_at=expires)

    def adopt_lock(self, lease: Lease, lease_seconds: float | None = None) -> Lease:
        seconds = self._lease_seconds(lease_seconds)
        result: dict[str, Any] = {}

        def plan(item: dict[str, Any], fresh: bool) -> _Plan:
            # Live or expired makes no difference: if nobody else claimed it, fence and owner
            # are unchanged and this owner may carry on, under a new fence that fences out any
            # older process of the same owner that still thinks it holds it.
            if not self._lease_held(item, lease):
                _need_fresh(fresh)
                raise self._lease_lost(item, lease)
            current = WorksetState.parse(item["state"])
            now = self.clock.now()
            expires = now + timedelta(seconds=seconds)
            fence = lease.fence + 1
            result.update(fence=fence, expires=expires)
            sets = {"fence": fence, "lock_expires_at": expires, "updated_at": now}
            why = f"lease adopted after restart (fence {lease.fence} -> {fence})"
            return _Plan(sets, [], self._event(item, now, lease.owner_id, current, current, why),
                         self._fence_condition(lease))

        self._mutate(lease.workset_id, plan)
        return Lease(workset_id=lease.workset_id, owner_id=lease.owner_id, fence=result["fence"],
                     expires_at=result["expires"])

    def release_lock(self, lease: Lease, reason: str = "released") -> Workset:
        return self.update_state(lease.workset_id, S.READY, reason, lease.owner_id, lease=lease)

    def force_release(self, workset_id: str, actor: str, reason: str, *,
                      expected_fence: int | None = None) -> Workset:
        def plan(item: dict[str, Any], fresh: bool) -> _Plan:
            current = WorksetState.parse(item["state"])
            fence = int(item.get("fence", 0))
            if expected_fence is not None and fence != expected_fence:
                _need_fresh(fresh)
                raise LockChanged(workset_id, expected_fence, current, item.get("lock_owner"),
                                  fence)
            if S.READY not in TRANSITIONS[current]:
                _need_fresh(fresh)
                check_transition(current, S.READY)
            now = self.clock.now()
            sets = {"state": S.READY.value, "fence": fence + 1,
                    "updated_at": now, "state_changed_at": now}
            removes = ["lock_owner", "lock_acquired_at", "lock_expires_at"]
            why = force_release_reason(actor, reason, item.get("lock_owner"), fence)
            return _Plan(sets, removes, self._event(item, now, actor, current, S.READY, why))

        item = self._mutate(workset_id, plan)
        assert item is not None
        return _workset_from(item)

    def expired_leases(self, now: datetime | None = None) -> list[Workset]:
        """Two Queries (locked, in_progress) on the state index with a filter on the expiry:
        only lease-holding worksets are read, a number bounded by cluster capacity."""
        cutoff = isoformat((now or self.clock.now()) - self.max_clock_skew)
        out: list[dict[str, Any]] = []
        for st in LEASE_STATES:
            expr = _Expr()
            kwargs = {"IndexName": STATE_PRIORITY_INDEX,
                      "KeyConditionExpression": f"{expr.n('state')} = {expr.v(st.value)}",
                      "FilterExpression": f"{expr.n('lock_expires_at')} < {expr.v(cutoff)}"}
            out.extend(self._query(self.table, **kwargs, **expr.kwargs()))
        for it in out:
            self._remember(it)
        out.sort(key=lambda i: (i.get("lock_expires_at") or "", i["workset_id"]))
        return [_workset_from(i) for i in out]

    # ---------------------------------------------------------------------------------------
    # history
    # ---------------------------------------------------------------------------------------

    def events(self, workset_id: str, limit: int | None = None) -> list[Event]:
        kwargs: dict[str, Any] = {"KeyConditionExpression": "#w = :w",
                                  "ExpressionAttributeNames": {"#w": "workset_id"},
                                  "ExpressionAttributeValues": {":w": _av(workset_id)},
                                  "ConsistentRead": True}
        if limit is not None:
            kwargs["Limit"] = max(1, min(limit, 1000))
        out: list[Event] = []
        for item in self._query(self.events_table, **kwargs):
            out.append(_event_from(item, workset_id))
            if limit is not None and len(out) >= limit:
                break
        return out

    # ---------------------------------------------------------------------------------------
    # meta table helpers
    # ---------------------------------------------------------------------------------------

    def _meta_get(self, pk: str, sk: str) -> dict[str, Any] | None:
        out = self._call("GetItem", self.meta_table, TableName=self.meta_table,
                         Key={"pk": _av(pk), "sk": _av(sk)}, ConsistentRead=True)
        return _item_py(out.get("Item"))

    def _meta_put(self, item: dict[str, Any]) -> None:
        self._call("PutItem", self.meta_table, TableName=self.meta_table, Item=_item_av(item))

    def _meta_query(self, pk: str) -> Iterator[dict[str, Any]]:
        return self._query(self.meta_table, KeyConditionExpression="#pk = :pk",
                           ExpressionAttributeNames={"#pk": "pk"},
                           ExpressionAttributeValues={":pk": _av(pk)}, ConsistentRead=True)

    def _meta_delete(self, pk: str, sk: str) -> None:
        self._call("DeleteItem", self.meta_table, TableName=self.meta_table,
                   Key={"pk": _av(pk), "sk": _av(sk)})

    # -- monitors ---------------------------------------------------------------------------

    def record_monitor_heartbeat(self, monitor_id: str, host: str, pid: int, version: str,
                                 role: str = "engine", details: dict[str, Any] | None = None,
                                 started_at: datetime | None = None) -> MonitorInfo:
        now = self.clock.now()
        expr = _Expr()
        sets = {"host": host, "pid": pid, "version": version, "role": role,
                "last_seen": isoformat(now), "details": json.dumps(details or {}, default=str)}
        parts = [f"{expr.n(k)} = {expr.v(v)}" for k, v in sets.items()]
        started = expr.n("started_at")
        if started_at is not None:
            parts.append(f"{started} = {expr.v(isoformat(started_at))}")
        else:
            # A heartbeat keeps the first start time of this monitor id.
            parts.append(f"{started} = if_not_exists({started}, {expr.v(isoformat(now))})")
        out = self._call("UpdateItem", self.meta_table, TableName=self.meta_table,
                         Key={"pk": _av("monitor"), "sk": _av(monitor_id)},
                         UpdateExpression="SET " + ", ".join(parts), ReturnValues="ALL_NEW",
                         **expr.kwargs())
        return self._monitor_from(_item_py(out["Attributes"]))  # type: ignore[arg-type]

    @staticmethod
    def _monitor_from(item: dict[str, Any]) -> MonitorInfo:
        return MonitorInfo(monitor_id=item["sk"], host=item["host"], pid=int(item["pid"]),
                           version=item["version"], role=item["role"],
                           started_at=parse_iso(item["started_at"]),
                           last_seen=parse_iso(item["last_seen"]),
                           details=json.loads(item.get("details") or "{}"))

    def list_monitors(self) -> list[MonitorInfo]:
        return sorted((self._monitor_from(i) for i in self._meta_query("monitor")),
                      key=lambda m: m.monitor_id)

    def remove_monitor(self, monitor_id: str) -> None:
        self._meta_delete("monitor", monitor_id)

    # -- named leases -----------------------------------------------------------------------

    def _named_from(self, item: dict[str, Any]) -> NamedLease:
        return NamedLease(name=item["sk"], owner_id=item["owner_id"], fence=int(item["fence"]),
                          expires_at=parse_iso(item["expires_at"]))

    def acquire_named_lease(self, name: str, owner_id: str,
                            lease_seconds: float) -> NamedLease | None:
        from botocore.exceptions import ClientError

        now = self.clock.now()
        expires = isoformat(now + timedelta(seconds=self._lease_seconds(lease_seconds)))
        cutoff = isoformat(now - self.max_clock_skew)
        key = {"pk": _av("lease"), "sk": _av(name)}
        # Renew first: the holder renews every tick, a takeover is the rare case.
        try:
            out = self._call(
                "UpdateItem", self.meta_table, TableName=self.meta_table, Key=key,
                UpdateExpression="SET #exp = :exp", ConditionExpression="#owner = :owner",
                ExpressionAttributeNames={"#exp": "expires_at", "#owner": "owner_id"},
                ExpressionAttributeValues={":exp": _av(expires), ":owner": _av(owner_id)},
                ReturnValues="ALL_NEW")
            return self._named_from(_item_py(out["Attributes"]))  # type: ignore[arg-type]
        except ClientError as exc:
            if aws.error_code(exc) != "ConditionalCheckFailedException":
                raise
        try:
            out = self._call(
                "UpdateItem", self.meta_table, TableName=self.meta_table, Key=key,
                UpdateExpression="SET #exp = :exp, #owner = :owner, "
                                 "#fence = if_not_exists(#fence, :zero) + :one",
                ConditionExpression="attribute_not_exists(#owner) OR #exp < :cutoff",
                ExpressionAttributeNames={"#exp": "expires_at", "#owner": "owner_id",
                                          "#fence": "fence"},
                ExpressionAttributeValues={":exp": _av(expires), ":owner": _av(owner_id),
                                           ":cutoff": _av(cutoff), ":zero": _av(0),
                                           ":one": _av(1)},
                ReturnValues="ALL_NEW")
        except ClientError as exc:
            if aws.error_code(exc) != "ConditionalCheckFailedException":
                raise
            return None
        return self._named_from(_item_py(out["Attributes"]))  # type: ignore[arg-type]

    def release_named_lease(self, lease: NamedLease) -> None:
        from botocore.exceptions import ClientError

        # Keep the item (and its fence, so fences only ever grow); just drop the owner.
        try:
            self._call("UpdateItem", self.meta_table, TableName=self.meta_table,
                       Key={"pk": _av("lease"), "sk": _av(lease.name)},
                       UpdateExpression="REMOVE #owner, #exp",
                       ConditionExpression="#owner = :owner AND #fence = :fence",
                       ExpressionAttributeNames={"#owner": "owner_id", "#fence": "fence",
                                                 "#exp": "expires_at"},
                       ExpressionAttributeValues={":owner": _av(lease.owner_id),
                                                  ":fence": _av(lease.fence)})
        except ClientError as exc:
            if aws.error_code(exc) != "ConditionalCheckFailedException":
                raise
            # Already taken over or released: releasing is idempotent for the old holder.

    def get_named_lease(self, name: str) -> NamedLease | None:
        item = self._meta_get("lease", name)
        if not item or not item.get("owner_id"):
            return None
        return self._named_from(item)

    # -- key/value ------------------------------------------------------------------------
    # Values are stored as JSON text: exact round trips of floats and nested data, no Decimal.

    def kv_get(self, namespace: str, key: str) -> Any | None:
        item = self._meta_get(f"kv#{namespace}", key)
        return None if item is None else json.loads(item["value"])

    def kv_put(self, namespace: str, key: str, value: Any) -> None:
        self._meta_put({"pk": f"kv#{namespace}", "sk": key, "value": json.dumps(value)})

    def kv_put_many(self, namespace: str, items: Mapping[str, Any]) -> None:
        requests = [{"PutRequest": {"Item": _item_av({"pk": f"kv#{namespace}", "sk": k,
                                                      "value": json.dumps(v)})}}
                    for k, v in items.items()]
        if requests:
            self._batch_write(self.meta_table, requests)

    def kv_get_all(self, namespace: str) -> dict[str, Any]:
        return {i["sk"]: json.loads(i["value"]) for i in self._meta_query(f"kv#{namespace}")}

    def kv_delete(self, namespace: str, key: str) -> None:
        self._meta_delete(f"kv#{namespace}", key)

    # -- clusters -------------------------------------------------------------------------

    def put_cluster_status(self, status: ClusterStatus) -> None:
        self._meta_put({"pk": "cluster", "sk": status.name, "doc": status.model_dump_json()})

    def list_cluster_status(self) -> list[ClusterStatus]:
        return sorted((ClusterStatus.model_validate_json(i["doc"])
                       for i in self._meta_query("cluster")), key=lambda c: c.name)

    # ---------------------------------------------------------------------------------------
    # alerts
    # ---------------------------------------------------------------------------------------

    @staticmethod
    def _dedup_sk(rule: str, subject: str) -> str:
        return json.dumps([rule, subject], ensure_ascii=False)

    def put_alert(self, alert: Alert, expected_updated_at: datetime | None = None) -> Alert:
        """The alert plus its (rule, subject) guard in one transaction. The guard in the meta
        table is read with a consistent GetItem by ``find_active_alert``, so dedup never
        depends on an eventually consistent index."""
        from botocore.exceptions import ClientError

        item = {"alert_id": alert.alert_id, "state": alert.state.value,
                "updated_at": isoformat(alert.updated_at), "doc": alert.model_dump_json()}
        put: dict[str, Any] = {"TableName": self.alerts_table, "Item": _item_av(item)}
        if expected_updated_at is not None:
            put["ConditionExpression"] = "#u = :u"
            put["ExpressionAttributeNames"] = {"#u": "updated_at"}
            put["ExpressionAttributeValues"] = {":u": _av(isoformat(expected_updated_at))}
        guard_key = {"pk": _av("alert-active"), "sk": _av(self._dedup_sk(alert.rule, alert.subject))}
        if alert.state == AlertState.RESOLVED:
            guard: dict[str, Any] = {"Delete": {
                "TableName": self.meta_table, "Key": guard_key,
                # only if it still points at this alert (a newer one may have taken over)
                "ConditionExpression": "attribute_not_exists(#a) OR #a = :a",
                "ExpressionAttributeNames": {"#a": "alert_id"},
                "ExpressionAttributeValues": {":a": _av(alert.alert_id)}}}
        else:
            # At most one not-resolved alert per (rule, subject): the dedup key.
            guard = {"Put": {"TableName": self.meta_table,
                             "Item": {**guard_key, "alert_id": _av(alert.alert_id)},
                             "ConditionExpression": "attribute_not_exists(#a) OR #a = :a",
                             "ExpressionAttributeNames": {"#a": "alert_id"},
                             "ExpressionAttributeValues": {":a": _av(alert.alert_id)}}}
        try:
            self._call("TransactWriteItems", self.alerts_table,
                       TransactItems=[{"Put": put}, guard])
        except ClientError as exc:
            reasons = self._cancellation(exc)
            if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
                raise StoreError(
                    f"alert {alert.alert_id!r} changed meanwhile (or is gone); "
                    "read it again and retry"
                ) from None
            if len(reasons) > 1 and reasons[1].get("Code") == "ConditionalCheckFailed":
                if alert.state != AlertState.RESOLVED:
                    raise StoreError(
                        f"an active alert for rule {alert.rule!r} and subject {alert.subject!r} "
                        "already exists; update that one instead"
                    ) from None
                # Resolving an alert whose guard points at another alert: just the alert.
                self._call("PutItem", self.alerts_table, **put)
                return alert
            raise StoreError(f"storing alert {alert.alert_id} failed: "
                             f"{aws.describe_client_error(exc)}") from exc
        return alert

    def get_alert(self, alert_id: str) -> Alert | None:
        out = self._call("GetItem", self.alerts_table, TableName=self.alerts_table,
                         Key={"alert_id": _av(alert_id)}, ConsistentRead=True)
        item = _item_py(out.get("Item"))
        return None if item is None else Alert.model_validate_json(item["doc"])

    def find_active_alert(self, rule: str, subject: str) -> Alert | None:
        guard = self._meta_get("alert-active", self._dedup_sk(rule, subject))
        if not guard:
            return None
        alert = self.get_alert(guard["alert_id"])
        if alert is None or alert.state == AlertState.RESOLVED:
            return None
        return alert

    def list_alerts(self, states: Iterable[AlertState | str] | None = None,
                    resolved_since: datetime | None = None, limit: int = 500) -> list[Alert]:
        requested = ({AlertState(s) for s in states} if states is not None
                     else {s for s in AlertState if s != AlertState.RESOLVED})
        all_resolved = AlertState.RESOLVED in requested and resolved_since is None
        found: list[Alert] = []
        query_states = sorted(requested - {AlertState.RESOLVED}, key=lambda a: a.value)
        if all_resolved:
            query_states.append(AlertState.RESOLVED)
        for st in query_states:
            for item in self._query(self.alerts_table, IndexName=ALERT_STATE_INDEX,
                                    KeyConditionExpression="#s = :s",
                                    ExpressionAttributeNames={"#s": "state"},
                                    ExpressionAttributeValues={":s": _av(st.value)}):
                found.append(Alert.model_validate_json(item["doc"]))
        if resolved_since is not None:
            since = isoformat(resolved_since)
            # updated_at >= resolved_at, so the range key narrows the read to recent ones.
            for item in self._query(self.alerts_table, IndexName=ALERT_STATE_INDEX,
                                    KeyConditionExpression="#s = :s AND #u >= :u",
                                    ExpressionAttributeNames={"#s": "state", "#u": "updated_at"},
                                    ExpressionAttributeValues={":s": _av("resolved"),
                                                               ":u": _av(since)}):
                alert = Alert.model_validate_json(item["doc"])
                if alert.resolved_at is None or alert.resolved_at >= utc(resolved_since):
                    found.append(alert)
        # GSIs can briefly hold a moved item twice: keep the newest per id.
        unique: dict[str, Alert] = {}
        for a in found:
            if a.alert_id not in unique or unique[a.alert_id].updated_at < a.updated_at:
                unique[a.alert_id] = a
        ordered = sorted(unique.values(), key=lambda a: a.alert_id)
        ordered.sort(key=lambda a: a.updated_at, reverse=True)  # stable: ties by alert_id
        return ordered[:limit]

    def _modify_alert(self, alert_id: str, change: Callable[[Alert], Alert]) -> Alert:
        for _ in range(_MAX_WRITE_ATTEMPTS):
            alert = self.get_alert(alert_id)
            if alert is None:
                raise AlertNotFound(alert_id)
            new = change(alert)
            if new is alert:
                return alert
            try:
                return self.put_alert(new, expected_updated_at=alert.updated_at)
            except StoreError as exc:
                if "changed meanwhile" not in str(exc):
                    raise
        raise StoreUnavailable(f"alert {alert_id} kept changing under us; try again")

    def ack_alert(self, alert_id: str, actor: str, note: str | None = None,
                  expires_at: datetime | None = None) -> Alert:
        now = self.clock.now()

        def change(alert: Alert) -> Alert:
            if alert.state == AlertState.RESOLVED:
                raise StoreError(f"alert {alert_id!r} is already resolved; nothing to acknowledge")
            first = alert.state != AlertState.ACKNOWLEDGED
            return alert.model_copy(update={
                "state": AlertState.ACKNOWLEDGED, "acknowledged_by": actor,
                "acknowledged_at": now if first else alert.acknowledged_at,
                "ack_note": note if note is not None else alert.ack_note,
                "ack_expires_at": expires_at, "updated_at": now})

        return self._modify_alert(alert_id, change)

    def resolve_alert(self, alert_id: str, actor: str, reason: str = "") -> Alert:
        now = self.clock.now()

        def change(alert: Alert) -> Alert:
            if alert.state == AlertState.RESOLVED:
                return alert
            log.info("alert_resolved", alert_id=alert_id, actor=actor, reason=reason)
            return alert.model_copy(update={"state": AlertState.RESOLVED, "resolved_at": now,
                                            "resolved_by": actor, "updated_at": now})

        return self._modify_alert(alert_id, change)

    # -- silences -------------------------------------------------------------------------

    def silence(self, actor: str, ends_at: datetime, rule: str | None = None,
                subject: str | None = None, reason: str = "",
                starts_at: datetime | None = None) -> Silence:
        s = Silence(silence_id=uuid.uuid4().hex, rule=rule, subject=subject, created_by=actor,
                    reason=reason, starts_at=starts_at or self.clock.now(), ends_at=ends_at)
        if s.ends_at <= s.starts_at:
            raise ValueError("a silence must end after it starts")
        self._meta_put({"pk": "silence", "sk": s.silence_id, "doc": s.model_dump_json()})
        return s

    def list_silences(self, active_at: datetime | None = None) -> list[Silence]:
        out = [Silence.model_validate_json(i["doc"]) for i in self._meta_query("silence")]
        if active_at is not None:
            at = utc(active_at)
            out = [s for s in out if s.starts_at <= at < s.ends_at]
        return sorted(out, key=lambda s: (s.starts_at, s.silence_id))

    def delete_silence(self, silence_id: str, actor: str) -> None:
        log.info("silence_deleted", silence_id=silence_id, actor=actor)
        self._meta_delete("silence", silence_id)

    # ---------------------------------------------------------------------------------------
    # notification outbox
    # ---------------------------------------------------------------------------------------

    def _outbox_item(self, entry: OutboxEntry, index_at: str | None = None) -> dict[str, Any]:
        return {"entry_id": entry.entry_id, "status": entry.status,
                "next_attempt_at": index_at or isoformat(entry.next_attempt_at),
                "created_at": isoformat(entry.created_at), "channel": entry.channel,
                "doc": entry.model_dump_json()}

    def _get_entry(self, entry_id: str) -> OutboxEntry | None:
        out = self._call("GetItem", self.outbox_table, TableName=self.outbox_table,
                         Key={"entry_id": _av(entry_id)}, ConsistentRead=True)
        item = _item_py(out.get("Item"))
        return None if item is None else OutboxEntry.model_validate_json(item["doc"])

    def enqueue_notification(self, entry: OutboxEntry) -> bool:
        """Dedup and coalescing use guard items in the meta table (keyed by channel +
        dedup_id, channel + coalesce_key), written in the same transaction as the entry."""
        from botocore.exceptions import ClientError

        dedup_key = {"pk": _av(f"outbox-dedup#{entry.channel}"), "sk": _av(entry.dedup_id)}
        coalesce_key = {"pk": _av(f"outbox-coalesce#{entry.channel}"),
                        "sk": _av(entry.coalesce_key)}
        for _ in range(_MAX_WRITE_ATTEMPTS):
            guard = self._meta_get(f"outbox-coalesce#{entry.channel}", entry.coalesce_key)
            folded: OutboxEntry | None = None
            if guard:
                old = self._get_entry(guard["entry_id"])
                if old is not None and old.status == "pending":
                    folded = old
            new = entry
            items: list[dict[str, Any]] = [
                {"Put": {"TableName": self.meta_table,
                         "Item": {**dedup_key, "entry_id": _av(entry.entry_id)},
                         "ConditionExpression": "attribute_not_exists(#pk)",
                         "ExpressionAttributeNames": {"#pk": "pk"}}},
            ]
            if folded is not None:
                new = entry.model_copy(update={"coalesced": folded.coalesced + 1 + entry.coalesced})
                items.append({"Delete": {
                    "TableName": self.outbox_table, "Key": {"entry_id": _av(folded.entry_id)},
                    "ConditionExpression": "#s = :p",
                    "ExpressionAttributeNames": {"#s": "status"},
                    "ExpressionAttributeValues": {":p": _av("pending")}}})
                # The folded entry's dedup id now lives as long as this entry (see pruning).
                items.append({"Put": {"TableName": self.meta_table, "Item": _item_av({
                    "pk": f"outbox-folded#{entry.entry_id}", "sk": folded.entry_id,
                    "channel": folded.channel, "dedup_id": folded.dedup_id})}})
            guard_cond: dict[str, Any]
            if guard:
                guard_cond = {"ConditionExpression": "#e = :e",
                              "ExpressionAttributeNames": {"#e": "entry_id"},
                              "ExpressionAttributeValues": {":e": _av(guard["entry_id"])}}
            else:
                guard_cond = {"ConditionExpression": "attribute_not_exists(#pk)",
                              "ExpressionAttributeNames": {"#pk": "pk"}}
            items.append({"Put": {"TableName": self.meta_table,
                                  "Item": {**coalesce_key, "entry_id": _av(new.entry_id)},
                                  **guard_cond}})
            items.append({"Put": {"TableName": self.outbox_table,
                                  "Item": _item_av(self._outbox_item(new)),
                                  "ConditionExpression": "attribute_not_exists(#id)",
                                  "ExpressionAttributeNames": {"#id": "entry_id"}}})
            try:
                self._call("TransactWriteItems", self.outbox_table, TransactItems=items)
                return True
            except ClientError as exc:
                reasons = self._cancellation(exc)
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
        expr = _Expr()
        kwargs: dict[str, Any] = {
            "IndexName": OUTBOX_DUE_INDEX,
            "KeyConditionExpression": f"{expr.n('status')} = {expr.v('pending')} AND "
                                      f"{expr.n('next_attempt_at')} <= {expr.v(isoformat(now))}"}
        if channel is not None:
            kwargs["FilterExpression"] = f"{expr.n('channel')} = {expr.v(channel)}"
        out: list[OutboxEntry] = []
        for item in self._query(self.outbox_table, **kwargs, **expr.kwargs()):
            out.append(OutboxEntry.model_validate_json(item["doc"]))
        out.sort(key=lambda e: (e.created_at, e.entry_id))
        return out[:limit]

    def _update_entry(self, entry_id: str, change: Callable[[OutboxEntry], OutboxEntry]) -> None:
        from botocore.exceptions import ClientError

        for _ in range(_MAX_WRITE_ATTEMPTS):
            entry = self._get_entry(entry_id)
            if entry is None:
                # Folded into a newer entry while it was being delivered: nothing to record.
                log.info("outbox_entry_gone", entry_id=entry_id)
                return
            new = change(entry)
            try:
                self._call("PutItem", self.outbox_table, TableName=self.outbox_table,
                           Item=_item_av(self._outbox_item(
                               new, _outbox_index_at(new, self.clock.now()))),
                           ConditionExpression="#d = :d",
                           ExpressionAttributeNames={"#d": "doc"},
                           ExpressionAttributeValues={":d": _av(entry.model_dump_json())})
                return
            except ClientError as exc:
                if aws.error_code(exc) != "ConditionalCheckFailedException":
                    raise
        raise StoreUnavailable(f"notification {entry_id} kept changing under us; try again")

    def mark_notification_delivered(self, entry_id: str, at: datetime) -> None:
        self._update_entry(entry_id, lambda e: e.model_copy(update={
            "status": "delivered", "delivered_at": at, "attempts": e.attempts + 1,
            "last_error": None}))

    def mark_notification_failed(self, entry_id: str, error: str, next_attempt_at: datetime | None,
                                 ) -> None:
        def change(e: OutboxEntry) -> OutboxEntry:
            update: dict[str, Any] = {"attempts": e.attempts + 1, "last_error": error}
            if next_attempt_at is None:
                update["status"] = "dead"
            else:
                update["next_attempt_at"] = next_attempt_at
            return e.model_copy(update=update)

        self._update_entry(entry_id, change)

    def list_notifications(self, status: str | None = None, limit: int = 500,
                           since: datetime | None = None) -> list[OutboxEntry]:
        statuses = [status] if status is not None else ["pending", "delivered", "dead"]
        if since is not None:
            return self._recent_notifications(statuses, limit, isoformat(since))
        out: list[OutboxEntry] = []
        for st in statuses:
            for item in self._query(self.outbox_table, IndexName=OUTBOX_DUE_INDEX,
                                    KeyConditionExpression="#s = :s",
                                    ExpressionAttributeNames={"#s": "status"},
                                    ExpressionAttributeValues={":s": _av(st)}):
                out.append(OutboxEntry.model_validate_json(item["doc"]))
        out.sort(key=lambda e: (e.created_at, e.entry_id))
        return out[:limit]

    def _recent_notifications(self, statuses: list[str], limit: int,
                              since: str) -> list[OutboxEntry]:
        """Newest first: a descending range Query per status, each stopping after ``limit``."""
        if limit <= 0:
            return []
        found: dict[str, tuple[str, OutboxEntry]] = {}
        for st in statuses:
            for n, item in enumerate(self._query(
                    self.outbox_table, IndexName=OUTBOX_DUE_INDEX, ScanIndexForward=False,
                    Limit=min(limit, 1000),
                    KeyConditionExpression="#s = :s AND #t >= :t",
                    ExpressionAttributeNames={"#s": "status", "#t": "next_attempt_at"},
                    ExpressionAttributeValues={":s": _av(st), ":t": _av(since)})):
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
        for st in ("delivered", "dead"):
            old = list(self._query(
                self.outbox_table, IndexName=OUTBOX_DUE_INDEX,
                KeyConditionExpression="#s = :s AND #t < :c",
                ExpressionAttributeNames={"#s": "status", "#t": "next_attempt_at"},
                ExpressionAttributeValues={":s": _av(st), ":c": _av(cutoff)}))
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
        self._batch_write(self.meta_table, [
            {"DeleteRequest": {"Key": {"pk": _av(pk), "sk": _av(sk)}}} for pk, sk in keys])
        conditional = [
            (self.meta_table, {"pk": _av(f"outbox-coalesce#{entry.channel}"),
                               "sk": _av(entry.coalesce_key)},
             "#e = :e", {"#e": "entry_id"}, {":e": _av(entry.entry_id)}),
            (self.outbox_table, {"entry_id": _av(entry.entry_id)},
             "#s = :s AND #t < :c", {"#s": "status", "#t": "next_attempt_at"},
             {":s": _av(status), ":c": _av(cutoff)}),
        ]
        deleted = False
        for table, key, condition, names, values in conditional:
            try:
                self._call("DeleteItem", table, TableName=table, Key=key,
                           ConditionExpression=condition, ExpressionAttributeNames=names,
                           ExpressionAttributeValues=values)
                deleted = table == self.outbox_table
            except ClientError as exc:  # a newer entry owns the guard / the entry changed
                if aws.error_code(exc) != "ConditionalCheckFailedException":
                    raise
        return int(deleted)

    def prune_alerts(self, before: datetime) -> int:
        """Hourly: one range Query on ``state-updated-index`` (a resolved alert's ``updated_at``
        is at or after its ``resolved_at``), then a conditional delete per alert."""
        from botocore.exceptions import ClientError

        removed = 0
        cutoff = isoformat(before)
        old = list(self._query(
            self.alerts_table, IndexName=ALERT_STATE_INDEX,
            KeyConditionExpression="#s = :s AND #u < :c",
            ExpressionAttributeNames={"#s": "state", "#u": "updated_at"},
            ExpressionAttributeValues={":s": _av(AlertState.RESOLVED.value), ":c": _av(cutoff)}))
        for item in old:
            alert = Alert.model_validate_json(item["doc"])
            if alert.state != AlertState.RESOLVED or (alert.resolved_at or alert.updated_at) >= utc(before):
                continue
            try:
                self._call("DeleteItem", self.alerts_table, TableName=self.alerts_table,
                           Key={"alert_id": _av(alert.alert_id)},
                           ConditionExpression="#s = :s AND #u = :u",
                           ExpressionAttributeNames={"#s": "state", "#u": "updated_at"},
                           ExpressionAttributeValues={":s": _av(AlertState.RESOLVED.value),
                                                      ":u": _av(isoformat(alert.updated_at))})
                removed += 1
            except ClientError as exc:  # changed since the read (re-opened by hand?): keep it
                if aws.error_code(exc) != "ConditionalCheckFailedException":
                    raise
        return removed

    # ---------------------------------------------------------------------------------------
    # metrics history
    # ---------------------------------------------------------------------------------------

    def record_metric_samples(self, samples: Iterable[MetricSample]) -> None:
        """The sort key is "at#series", so the same series at the same instant is one sample
        (a re-sent batch replaces it) and a chart is one Query on a time range."""
        latest: dict[tuple[str, str], dict[str, Any]] = {}
        for s in samples:
            at = isoformat(s.at)
            dims = _dims_json(s.dimensions)
            sk = f"{at}#{hashlib.sha256(dims.encode()).hexdigest()[:24]}"
            # BatchWriteItem refuses two writes to one key in a request: the last one wins.
            latest[(s.name, sk)] = {"name": s.name, "sk": sk, "at": at,
                                    "value": json.dumps(float(s.value)), "dims": dims}
        if not latest:
            return
        self._batch_write(self.metrics_table,
                          [{"PutRequest": {"Item": _item_av(i)}} for i in latest.values()])
        # The registry lets prune find every series without a Scan.
        new_names = {name for name, _ in latest} - self._known_metric_names
        if new_names:
            self._batch_write(self.meta_table, [
                {"PutRequest": {"Item": _item_av({"pk": "metric-name", "sk": n})}}
                for n in sorted(new_names)])
            self._known_metric_names |= new_names

    def metric_history(self, name: str, since: datetime, until: datetime | None = None,
                       resolution: str = "minute",
                       dimensions: Mapping[str, str] | None = None) -> list[MetricSample]:
        if resolution not in _BUCKETS:
            raise ValueError(f"unknown resolution {resolution!r} (allowed: minute, hour, day)")
        lo = isoformat(since)
        hi = isoformat(until) if until is not None else "9999"
        wanted = dict(dimensions or {})
        selected: list[tuple[str, str, dict[str, str], float]] = []
        for item in self._query(self.metrics_table,
                                KeyConditionExpression="#n = :n AND #sk BETWEEN :lo AND :hi",
                                ExpressionAttributeNames={"#n": "name", "#sk": "sk"},
                                ExpressionAttributeValues={":n": _av(name), ":lo": _av(lo),
                                                           ":hi": _av(hi)}):
            if until is not None and item["at"] >= hi:
                continue  # [since, until): BETWEEN is inclusive
            dims = json.loads(item.get("dims") or "{}")
            if all(dims.get(k) == v for k, v in wanted.items()):
                selected.append((item["at"], item["dims"], dims, float(json.loads(item["value"]))))
        selected.sort(key=lambda t: (t[0], t[1]))
        bucket_of = _BUCKETS[resolution]
        if bucket_of is None:
            return [MetricSample(name=name, at=parse_iso(at), value=value, dimensions=dims)
                    for at, _, dims, value in selected]
        # One mean per (bucket, series), so filtering on some dimensions never averages
        # different series together.
        buckets: dict[tuple[datetime, str], tuple[dict[str, str], float, int]] = {}
        for at, key, dims, value in selected:
            b = (bucket_of(parse_iso(at)), key)
            _, total, count = buckets.get(b, (dims, 0.0, 0))
            buckets[b] = (dims, total + value, count + 1)
        return [MetricSample(name=name, at=b, value=total / count, dimensions=dims)
                for (b, _), (dims, total, count) in sorted(buckets.items())]

    def prune_metric_history(self, before: datetime) -> int:
        """Rare admin path: one Query per registered metric name, then batched deletes."""
        cutoff = isoformat(before)
        removed = 0
        for reg in list(self._meta_query("metric-name")):
            keys = [{"DeleteRequest": {"Key": {"name": _av(reg["sk"]), "sk": _av(i["sk"])}}}
                    for i in self._query(self.metrics_table,
                                         KeyConditionExpression="#n = :n AND #sk < :c",
                                         ExpressionAttributeNames={"#n": "name", "#sk": "sk"},
                                         ExpressionAttributeValues={":n": _av(reg["sk"]),
                                                                    ":c": _av(cutoff)},
                                         ProjectionExpression="#n, #sk")]
            if keys:
                self._batch_write(self.metrics_table, keys)
                removed += len(keys)
        return removed


def _outbox_index_at(entry: OutboxEntry, now: datetime) -> str:
    """The entry's time in ``status-due-index`` (see the module docstring)."""
    if entry.status == "pending":
        return isoformat(entry.next_attempt_at)
    final = entry.delivered_at if entry.status == "delivered" and entry.delivered_at else now
    return isoformat(max(utc(final), entry.created_at))


def _dims_json(dimensions: Mapping[str, str]) -> str:
    return json.dumps(dict(dimensions), ensure_ascii=False, separators=(",", ":"), sort_keys=True)


# minute history is the raw samples (one per series per minute); hour and day are roll-ups.
_BUCKETS: dict[str, Callable[[datetime], datetime] | None] = {
    "minute": None,
    "hour": lambda d: d.replace(minute=0, second=0, microsecond=0),
    "day": lambda d: d.replace(hour=0, minute=0, second=0, microsecond=0),
}


class _Plan:
    __slots__ = ("sets", "removes", "event", "condition")

    def __init__(self, sets: dict[str, Any], removes: list[str], event: dict[str, Any] | None,
                 condition: Callable[[_Expr], str] | None = None) -> None:
        self.sets = sets
        self.removes = removes
        self.event = event
        self.condition = condition


class _Stale(Exception):
    """A conditional write found the item changed; carries the current item (None: gone)."""

    def __init__(self, item: dict[str, Any] | None, conflict: bool = False) -> None:
        super().__init__("stale")
        self.item = item
        self.conflict = conflict


class _NeedFresh(Exception):
    """A plan must not decide on a cached item: re-read and plan again."""


def _expected_for(workset_id: str, lease: Lease | None,
                  expected_state: WorksetState | str | None) -> WorksetState | None:
    """Validate a write's arguments before any request: the lease must be for this workset."""
    if lease is not None and lease.workset_id != workset_id:
        raise ValueError(f"lease is for {lease.workset_id!r}, not {workset_id!r}")
    return WorksetState.parse(expected_state) if expected_state is not None else None


def _need_fresh(fresh: bool) -> None:
    if not fresh:
        raise _NeedFresh


def _snake(operation: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower()


def _backoff(attempt: int) -> None:
    # Wall-clock backoff between retries of a contended write; not logical time, so it does not
    # go through the store's clock (a ManualClock would otherwise jump in tests).
    time.sleep(random.uniform(0, min(0.5, 0.01 * (2 ** attempt))))
