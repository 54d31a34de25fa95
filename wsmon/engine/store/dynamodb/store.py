"""``DynamoDBStore``: the store URL, the client, and one mixin per concern."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from wsmon.core import aws
from wsmon.core.clock import Clock
from wsmon.engine.store.base import Store
from wsmon.engine.store.dynamodb import schema
from wsmon.engine.store.dynamodb.alerts import Alerts
from wsmon.engine.store.dynamodb.audit import OperatorActions
from wsmon.engine.store.dynamodb.cache import ItemCache
from wsmon.engine.store.dynamodb.client import DynamoClient
from wsmon.engine.store.dynamodb.leases import Leases
from wsmon.engine.store.dynamodb.meta import MetaRecords
from wsmon.engine.store.dynamodb.metrics import MetricsHistory
from wsmon.engine.store.dynamodb.outbox import Outbox
from wsmon.engine.store.dynamodb.worksets import Worksets
from wsmon.engine.store.errors import StoreError


class DynamoDBStore(Worksets, Leases, MetaRecords, Alerts, Outbox, MetricsHistory,
                    OperatorActions, Store):
    """The state store on DynamoDB (see the package docstring for the design)."""

    def __init__(self, table: str, *, region: str | None, endpoint_url: str | None = None,
                 aws_profile: str | None = None, clock: Clock | None = None,
                 max_clock_skew: float = 30.0, default_lease_seconds: float = 300.0,
                 max_attempts: int | None = None, client: Any = None) -> None:
        Store.__init__(self, clock=clock, max_clock_skew=max_clock_skew,
                       default_lease_seconds=default_lease_seconds)
        self.tables = schema.TableNames.of(table)
        self.table = table
        self.region = region
        self.endpoint_url = endpoint_url
        if client is None:
            extra = {} if max_attempts is None else {"max_attempts": max_attempts}
            client = aws.client("dynamodb", profile=aws_profile, region=region,
                                endpoint_url=endpoint_url, **extra)
        self._db = DynamoClient(client, region, endpoint_url)
        self._cache = ItemCache()
        self._known_metric_names = set()

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
            params.append(f"endpoint_url={self._db.safe_endpoint()}")
        return out + ("?" + "&".join(params) if params else "")

    @property
    def client(self) -> Any:
        """The low-level boto3 client (the benchmark counts its requests)."""
        return self._db.raw

    def close(self) -> None:
        self._db.close()

    def init_schema(self) -> list[str]:
        return schema.init_schema(self._db, self.tables) + self._move_legacy_operator_actions()
