"""A real ``wsmon serve`` for the API tests: uvicorn on a free 127.0.0.1 port over a SQLite or a
DynamoDB (moto) store, and httpx clients holding the test's tokens."""

from __future__ import annotations

import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import SecretStr

from wsmon.api.server import ApiServer
from wsmon.config.settings import Settings
from wsmon.core.clock import ManualClock
from wsmon.engine.store import open_store
from wsmon.engine.store.base import Store

from tests.waiting import wait_until

WRITE_TOKEN = secrets.token_urlsafe(24)
READ_TOKEN = secrets.token_urlsafe(24)
BUCKET = "api-bucket"


def api_settings(endpoint: str | None = None, bucket: str = BUCKET, **api: Any) -> Settings:
    values: dict[str, Any] = {"token": SecretStr(f"ops:{WRITE_TOKEN}"),
                              "read_token": SecretStr(f"lims:{READ_TOKEN}"),
                              **api}
    aws = {"region": "us-west-2", **({"endpoint_url": endpoint} if endpoint else {})}
    return Settings(aws=aws, api=values,
                    discovery={"sources": [{"bucket": bucket, "prefix": "src/"}],
                               "ready_lock_backoff_seconds": 0})


def make_store(kind: str, tmp_path: Any, endpoint: str, name: str,
               clock: ManualClock | None = None) -> Store:
    if kind == "sqlite":
        return open_store(f"sqlite:///{tmp_path / 'state.db'}", clock=clock)
    store = open_store(f"dynamodb://{name}?region=us-west-2&endpoint_url={endpoint}", clock=clock)
    store.init_schema()
    return store


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]




@dataclass
class Served:
    server: ApiServer
    store: Store
    settings: Settings

    @property
    def url(self) -> str:
        return self.server.url

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=f"{self.url}/api/v1", headers=headers, timeout=30, **kwargs)

    def writer(self) -> httpx.Client:
        return self.client(WRITE_TOKEN)

    def reader(self) -> httpx.Client:
        return self.client(READ_TOKEN)


@contextmanager
def serving(settings: Settings, store: Store, s3: Any = None) -> Iterator[Served]:
    server = ApiServer(settings, store, bind="127.0.0.1:0", s3_client=s3)
    server.start()
    try:
        wait_until(lambda: server.ready, "the API server to accept connections")
        yield Served(server, store, settings)
    finally:
        server.stop()
