"""What every route needs: the settings, the store, the clock, the tokens; and the request's
caller (``Principal``) checked against them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import Request

from wsmon.api.auth import Principal, TokenSet
from wsmon.api.errors import ApiError
from wsmon.engine.health import engine_stale_after

if TYPE_CHECKING:
    from wsmon.api.stream import EventHub
    from wsmon.config.settings import Settings
    from wsmon.core.clock import Clock
    from wsmon.engine.store.base import Store


@dataclass
class ApiContext:
    settings: Settings
    store: Store
    clock: Clock
    tokens: TokenSet
    reads_need_token: bool
    hub: EventHub | None = None
    s3_client: Any = None
    extras: dict[str, Any] = field(default_factory=dict)

    def s3(self) -> Any:
        """The S3 client for validation and registration, made on first use."""
        if self.s3_client is None:
            from wsmon.core import aws

            s = self.settings
            self.s3_client = aws.client("s3", profile=s.aws.profile, region=s.aws.region,
                                        endpoint_url=s.aws.endpoint_url,
                                        max_attempts=s.aws.max_attempts)
        return self.s3_client

    @property
    def stale_after_seconds(self) -> float:
        """An engine whose heartbeat is older than this is presumed gone (as the dashboard says)."""
        return engine_stale_after(self.settings).total_seconds()


def context_of(request: Request) -> ApiContext:
    return request.app.state.wsmon


async def api_context(request: Request) -> ApiContext:
    # async, like reader and writer: no I/O, so no hop through the thread pool per request
    return context_of(request)


def _presented_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise ApiError(401, "unauthorized", "use an Authorization: Bearer TOKEN header")
    return value.strip()


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _principal(request: Request, *, write: bool) -> Principal:
    ctx = context_of(request)
    presented = _presented_token(request)
    if presented is None:
        if write:
            hint = ("set WSMON_API_TOKEN (or api.token_file) on the server and send it as a bearer "
                    "token" if not len(ctx.tokens) else "send a bearer token")
            raise ApiError(401, "unauthorized", f"writes need a token: {hint}")
        if ctx.reads_need_token:
            raise ApiError(401, "unauthorized", "this server needs a bearer token for reads too")
        return Principal("anonymous", False, _client(request))
    token = ctx.tokens.match(presented)
    if token is None:
        raise ApiError(401, "unauthorized", "unknown token")
    if write and not token.can_write:
        raise ApiError(403, "forbidden", f"the token {token.name!r} may only read")
    if write and ctx.settings.api.read_only:
        raise ApiError(403, "forbidden", "this server is read-only (api.read_only)")
    return Principal(token.name, token.can_write, _client(request))


async def reader(request: Request) -> Principal:
    """Dependency of every read route."""
    return _principal(request, write=False)


async def writer(request: Request) -> Principal:
    """Dependency of every write route."""
    return _principal(request, write=True)
