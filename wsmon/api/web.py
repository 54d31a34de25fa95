"""``wsmon web``: textual-serve with the API's token rule in front of it.

textual-serve starts the dashboard command once per browser session. On loopback it is served as
it is; beyond loopback every request must carry a token, as a bearer header, or once as
``?token=`` on the page (then an HttpOnly, SameSite=Strict cookie carries it).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from textual_serve.server import Server

from wsmon.api.auth import TokenSet, is_loopback

COOKIE = "wsmon_web_token"


class DashboardServer(Server):
    def __init__(self, command: str, *, host: str, port: int, public_url: str | None,
                 tokens: TokenSet, need_write: bool) -> None:
        super().__init__(command, host=host, port=port, title="wsmon", public_url=public_url)
        self.tokens = tokens
        self.need_write = need_write
        self.check_tokens = not is_loopback(host)

    def initialize_logging(self) -> None:
        """wsmon's own logging is already set up; textual-serve's rich handler would add a second."""

    async def on_startup(self, app: web.Application) -> None:
        """Quiet: the command already said where it serves."""

    def _allowed(self, presented: str | None) -> bool:
        if not presented:
            return False
        token = self.tokens.match(presented)
        return token is not None and (token.can_write or not self.need_write)

    async def _make_app(self) -> web.Application:
        app = await super()._make_app()
        if self.check_tokens:
            app.middlewares.append(self._token_middleware)
        return app

    @web.middleware
    async def _token_middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        presented = header[7:].strip() if header.lower().startswith("bearer ") else None
        from_query = request.query.get("token")
        presented = presented or from_query or request.cookies.get(COOKIE)
        if not self._allowed(presented):
            return web.json_response({"error": {"code": "unauthorized",
                                                "message": "a token is needed: open this page "
                                                           "with ?token=TOKEN once"}}, status=401)
        if from_query:
            # drop the token from the address bar (and from history) once the cookie has it
            response = web.HTTPFound(request.rel_url.without_query("token"))
            response.set_cookie(COOKIE, from_query, httponly=True, samesite="Strict",
                                secure=request.secure)
            return response
        return await handler(request)
