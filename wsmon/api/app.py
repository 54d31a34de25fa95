"""``create_app``: the FastAPI application of ``wsmon serve`` (and of ``[api] enabled`` inside
``wsmon --headless``).

/api/v1/...          REST (reads: routes.py; actions: actions.py; submit and validate: submit.py)
/api/v1/events/stream  Server-Sent Events (stream.py)
/api/v1/openapi.json, /api/v1/docs   the OpenAPI document and interactive docs
/metrics             Prometheus text format (metrics.py)

No CORS middleware: browsers on other origins are not served. Every response says
``nosniff`` and no caching of API data; request bodies are capped before anything reads them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response, StreamingResponse

from wsmon import __version__
from wsmon.api import actions, errors, routes, submit
from wsmon.api.auth import TokenSet, load_tokens, reads_need_token
from wsmon.api.context import ApiContext, api_context, reader
from wsmon.api.stream import EventHub, event_frames

if TYPE_CHECKING:
    from wsmon.config.settings import Settings
    from wsmon.core.clock import Clock
    from wsmon.engine.store.base import Store

API_PREFIX = "/api/v1"
UPLOAD_PATH = f"{API_PREFIX}/worksets/validate"

DESCRIPTION = """\
The queue, the scheduler's view, alerts and operator actions of a wsmon store, for lab systems
(LIMS, schedulers, chat bots) and people without SSH.

**Tokens.** Send `Authorization: Bearer TOKEN`. Writes always need a read-write token; reads need
a token when the server is bound beyond loopback (or `api.read_token_required`). Actions are
recorded as `api:<token name>@<client address>`.

**Actions** send what the client saw (`seen`: state, and for stop/release the lease's `fence`);
a record that changed since is refused with 409 and the current record. Refusals (the one rule
set the dashboard and the CLI use) are 409 with the reason.

**Errors** are `{"error": {"code", "message"}}`.
"""


class BodyLimit:
    """Pure ASGI middleware: 413 for a body over the limit, by Content-Length or by counting."""

    def __init__(self, app: Any, json_limit: int, upload_limit: int) -> None:
        self.app = app
        self.json_limit = json_limit
        self.upload_limit = upload_limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.upload_limit if scope["path"] == UPLOAD_PATH else self.json_limit
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"").decode("latin-1")
        if declared.isdigit() and int(declared) > limit:
            await _send_413(send, limit)
            return
        received = 0
        exceeded = False
        started = False

        async def counting_receive() -> Any:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # the application sees the client leave; this middleware answers 413
                    exceeded = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Any) -> None:
            nonlocal started
            if exceeded:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await _send_413(send, limit)


class SecurityHeaders:
    """Pure ASGI: every response says nosniff, no framing and no caching of API data."""

    HEADERS: ClassVar[list[tuple[bytes, bytes]]] = [
        (b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
        (b"cache-control", b"no-store")]

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    h for h in self.HEADERS if h[0] not in present]
            await send(message)

        await self.app(scope, receive, with_headers)


async def _send_413(send: Any, limit: int) -> None:
    import json

    body = json.dumps(errors.error_body("body_too_large",
                                        f"request body larger than {limit} bytes")).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def create_app(settings: Settings, store: Store, *, clock: Clock | None = None,
               tokens: TokenSet | None = None, host: str = "127.0.0.1", stream: bool = True,
               s3_client: Any = None) -> FastAPI:
    """The application over ``store``. ``host`` is the address it will be bound to (it decides
    whether reads need a token by default)."""
    clock = clock or store.clock
    ctx = ApiContext(settings=settings, store=store, clock=clock,
                     tokens=tokens if tokens is not None else load_tokens(settings),
                     reads_need_token=reads_need_token(settings, host), s3_client=s3_client)
    api = settings.api
    if stream:
        ctx.hub = EventHub(store, clock, poll_seconds=api.stream_poll_seconds,
                           history=api.stream_history, client_buffer=api.stream_client_buffer)

    app = FastAPI(title="wsmon API", version=__version__, description=DESCRIPTION,
                  openapi_url=f"{API_PREFIX}/openapi.json", docs_url=f"{API_PREFIX}/docs",
                  redoc_url=None, swagger_ui_parameters={"defaultModelsExpandDepth": 0},
                  lifespan=_lifespan)
    app.state.wsmon = ctx
    errors.install(app)
    app.add_middleware(BodyLimit, json_limit=api.max_body_bytes, upload_limit=api.max_upload_bytes)

    app.add_middleware(SecurityHeaders)

    app.include_router(routes.health_router, prefix=API_PREFIX, tags=["health"])
    app.include_router(routes.router, prefix=API_PREFIX, tags=["read"])
    app.include_router(submit.router, prefix=API_PREFIX, tags=["submit"])
    app.include_router(actions.router, prefix=API_PREFIX, tags=["actions"])

    @app.get(f"{API_PREFIX}/events/stream", tags=["read"], dependencies=[Depends(reader)],
             response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {}},
                              "description": "`workset` and `alert` events; `reset` when the "
                                             "events since Last-Event-ID are no longer known"}},
             summary="Server-Sent Events of workset and alert changes (Last-Event-ID resumes)")
    async def events_stream(request: Request,
                            context: Annotated[ApiContext, Depends(api_context)]) -> StreamingResponse:
        if context.hub is None:
            raise errors.ApiError(404, "not_found", "the event stream is off in this server")
        frames = event_frames(context.hub, request.headers.get("last-event-id"),
                              request.is_disconnected)
        return StreamingResponse(frames, media_type="text/event-stream",
                                 headers={"X-Accel-Buffering": "no"})

    @app.get("/metrics", tags=["metrics"], dependencies=[Depends(reader)],
             response_class=Response,
             responses={200: {"content": {"text/plain": {}}}},
             summary="Prometheus metrics: queue, leases, alerts, outbox, engines, polls")
    def metrics(context: Annotated[ApiContext, Depends(api_context)]) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        from wsmon.api.metrics import registry_for

        registry = context.extras.get("registry")
        if registry is None:
            registry = context.extras["registry"] = registry_for(context)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    hub = app.state.wsmon.hub
    if hub is not None:
        hub.start()
    try:
        yield
    finally:
        if hub is not None:
            hub.stop()
