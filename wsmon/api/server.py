"""Running the API: uvicorn on the configured address, in the foreground (``wsmon serve``) or in
a thread beside the engine (``wsmon --headless`` with ``[api] enabled``) or a test.

Before anything listens, the exposure rule is checked: beyond loopback only with a token.
Forwarded headers (client address, scheme) are believed only from ``api.trusted_proxies``.
"""

from __future__ import annotations

import socket
import threading
from typing import TYPE_CHECKING, Any

import structlog

from wsmon.api.auth import check_exposure, load_tokens, parse_bind

if TYPE_CHECKING:
    from wsmon.config.settings import Settings
    from wsmon.core.clock import Clock
    from wsmon.engine.store.base import Store

log = structlog.get_logger("wsmon.api")


class ApiServer:
    """uvicorn serving ``create_app`` on one socket bound before it starts (port 0: any free)."""

    def __init__(self, settings: Settings, store: Store, *, bind: str | None = None,
                 clock: Clock | None = None, s3_client: Any = None) -> None:
        import uvicorn

        from wsmon.api.app import create_app

        self.host, port = parse_bind(bind or settings.api.bind)
        tokens = load_tokens(settings)
        check_exposure(self.host, tokens)
        self.app = create_app(settings, store, clock=clock, tokens=tokens, host=self.host,
                              s3_client=s3_client)
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # proto named: asyncio turns Nagle off (TCP_NODELAY) only on accepted sockets whose
        # proto is IPPROTO_TCP, and with it on every response waits ~40 ms for a delayed ACK
        self.socket = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind((self.host, port))
        except OSError as exc:
            self.socket.close()
            from wsmon.api.auth import ApiConfigError

            raise ApiConfigError(f"cannot listen on {self.host}:{port}: {exc.strerror}") from None
        self.port = self.socket.getsockname()[1]
        config = uvicorn.Config(
            self.app, log_config=None, access_log=False, lifespan="on",
            proxy_headers=True, forwarded_allow_ips=",".join(settings.api.trusted_proxies) or "",
            server_header=False, timeout_graceful_shutdown=5,
        )
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def ready(self) -> bool:
        return bool(self.server.started)

    def run(self) -> None:
        """In the foreground until SIGINT/SIGTERM (uvicorn handles them)."""
        log.info("api.listening", url=self.url)
        self.server.run(sockets=[self.socket])

    def start(self) -> None:
        """In a thread; ``ready`` turns true once it accepts connections."""
        # uvicorn installs no signal handlers outside the main thread: the host process keeps its own
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]},
                                        name="wsmon-api", daemon=True)
        self._thread.start()
        log.info("api.listening", url=self.url)

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        try:
            self.socket.close()
        except OSError:
            pass
