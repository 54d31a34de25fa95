"""Calling DynamoDB: every request goes through ``DynamoClient.call``, so errors read the same
everywhere (missing tables, refused IAM actions, throttling, an unreachable endpoint), plus the
paging and batching loops every concern shares."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from wsmon.core import aws
from wsmon.engine.store.dynamodb.codec import item_py
from wsmon.engine.store.errors import StoreError, StoreNotInitialized, StoreUnavailable

#: Conditional-write retries after a stale cache or a transaction conflict.
MAX_WRITE_ATTEMPTS = 6

_REFUSED_CODES = frozenset({"AccessDenied", "AccessDeniedException", "UnrecognizedClientException",
                            "InvalidSignatureException", "ExpiredTokenException",
                            "MissingAuthenticationTokenException"})
_THROTTLE_CODES = frozenset({"ProvisionedThroughputExceededException", "ThrottlingException",
                             "RequestLimitExceeded", "InternalServerError",
                             "ServiceUnavailable"})


class DynamoClient:
    """The low-level boto3 client plus the error mapping (one per store instance)."""

    def __init__(self, client: Any, region: str | None, endpoint_url: str | None) -> None:
        self.raw = client
        self.region = region
        self.endpoint_url = endpoint_url

    def safe_endpoint(self) -> str:
        # An endpoint URL may carry credentials (user:pass@host) or a signed query: never shown.
        if not self.endpoint_url:
            return ""
        p = urlsplit(self.endpoint_url)
        host = p.hostname or ""
        if p.port:
            host = f"{host}:{p.port}"
        return f"{p.scheme}://{host}{p.path}" if p.scheme else host

    def close(self) -> None:
        close = getattr(self.raw, "close", None)
        if close:
            close()

    def call(self, operation: str, table: str, *, passthrough: frozenset[str] = frozenset(),
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

        method = getattr(self.raw, _snake(operation))
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
            where = self.safe_endpoint() or f"the {self.region or 'default'} region endpoint"
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
            found = re.search(r"Table: (\S+) not found", message)
            missing = found.group(1) if found else table
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

    def query(self, table: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """All items of a Query, following LastEvaluatedKey."""
        while True:
            out = self.call("Query", table, TableName=table, **kwargs)
            for item in out.get("Items", []):
                yield item_py(item)  # type: ignore[misc]
            lek = out.get("LastEvaluatedKey")
            if not lek:
                return
            kwargs["ExclusiveStartKey"] = lek

    def batch_write(self, table: str, requests: list[dict[str, Any]]) -> None:
        """BatchWriteItem in chunks of 25, resending what DynamoDB left unprocessed."""
        for start in range(0, len(requests), 25):
            pending = {table: requests[start:start + 25]}
            for attempt in range(10):
                out = self.call("BatchWriteItem", table, RequestItems=pending)
                pending = out.get("UnprocessedItems") or {}
                if not pending:
                    break
                backoff(attempt)
            else:
                raise StoreUnavailable(f"DynamoDB kept throttling batch writes to table {table}")

    @staticmethod
    def parallel(fn: Callable[[Any], Any], args: list[Any]) -> list[Any]:
        # The low-level client is thread-safe; a few concurrent Queries keep refreshes snappy.
        with ThreadPoolExecutor(max_workers=min(8, len(args) or 1)) as pool:
            return list(pool.map(fn, args))


def cancellation(exc: Exception) -> list[dict[str, Any]]:
    """The per-item reasons of a cancelled transaction (empty for any other error)."""
    return list((getattr(exc, "response", None) or {}).get("CancellationReasons") or [])


def condition_failed(exc: Exception) -> bool:
    """A single-item write whose condition did not hold (any other error: False)."""
    return aws.error_code(exc) == "ConditionalCheckFailedException"


def backoff(attempt: int) -> None:
    # Wall-clock backoff between retries of a contended write; not logical time, so it does not
    # go through the store's clock (a ManualClock would otherwise jump in tests).
    time.sleep(random.uniform(0, min(0.5, 0.01 * (2 ** attempt))))


def _snake(operation: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower()
