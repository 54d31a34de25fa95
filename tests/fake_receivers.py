"""A real HTTP server on 127.0.0.1 standing in for Linear's GraphQL API and a Slack webhook,
with injectable failures (tests/test_notify.py, tests/test_notify_cli.py)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LINEAR_KEY = "lin_api_S3cretKeyValue0123456789abcdef"
SLACK_PATH = "/services/T0SECRET/B0SECRET/XyZsecretToken"

# Clients under test give up after CLIENT_TIMEOUT; a "timeout" or "late" fault answers after
# ANSWER_DELAY. The margin either side is wide so a loaded CI machine cannot blur the two.
CLIENT_TIMEOUT = 1.0
ANSWER_DELAY = 2.0


class FakeService:
    """Linear's GraphQL endpoint and a Slack webhook. ``faults[path]`` is consumed one per request:
    "500", "503", "429:SECONDS", "timeout", "400", "ratelimited" (Linear's GraphQL-level limit),
    "late" (the request is carried out but answered after the client's timeout).
    While ``down`` holds a path every request to it gets a 503."""

    def __init__(self, clock) -> None:
        self.clock = clock
        self.lock = threading.Lock()
        self.faults: dict[str, list[str]] = {"/graphql": [], SLACK_PATH: []}
        self.down: set[str] = set()
        self.attempts: list[tuple[str, Any]] = []  # (path, clock time) of every request
        self.slack: list[dict[str, Any]] = []  # accepted webhook bodies
        self.issues: dict[str, dict[str, Any]] = {}
        self.mutations: list[tuple[str, dict[str, Any]]] = []  # accepted (name, input)
        self.raw_bodies: list[str] = []  # everything that reached us, for redaction checks
        self.headers: list[dict[str, str]] = []

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length).decode("utf-8")
        path = handler.path
        with self.lock:
            self.attempts.append((path, self.clock.now()))
            self.raw_bodies.append(raw)
            self.headers.append(dict(handler.headers))
            queued = self.faults.get(path)
            fault = "503" if path in self.down else (queued.pop(0) if queued else None)
        if fault == "timeout":
            time.sleep(ANSWER_DELAY)  # longer than the client's timeout; nothing is recorded
            self._reply(handler, 500, {"error": "too late"})
            return
        if fault and fault.startswith("429"):
            _, _, after = fault.partition(":")
            self._reply(handler, 429, {"error": "rate limited"}, {"Retry-After": after or "30"})
            return
        if fault == "ratelimited":
            self._reply(handler, 400, {"errors": [{"message": "Rate limit exceeded",
                                                   "extensions": {"code": "RATELIMITED"}}]}, {"Retry-After": "90"})
            return
        if fault in ("500", "503", "400"):
            self._reply(handler, int(fault), {"error": f"injected {fault} for {SLACK_PATH}"})
            return
        if path == SLACK_PATH:
            with self.lock:
                self.slack.append(json.loads(raw))
            self._reply(handler, 200, None, text="ok")
            return
        if path == "/graphql":
            self._graphql(handler, json.loads(raw), late=fault == "late")
            return
        self._reply(handler, 404, {"error": "no such path"})

    def _graphql(self, handler, body: dict[str, Any], late: bool = False) -> None:
        query, variables = body["query"], body.get("variables") or {}
        if handler.headers.get("Authorization") != LINEAR_KEY:
            self._reply(handler, 401, {"errors": [{"message": "Authentication required"}]})
            return
        with self.lock:
            if "issueCreate" in query:
                issue_id = f"iss-{len(self.issues) + 1}"
                self.issues[issue_id] = {"input": variables["input"], "comments": [], "state": None}
                self.mutations.append(("issueCreate", variables["input"]))
                data = {"issueCreate": {"success": True, "issue": {
                    "id": issue_id, "identifier": f"OPS-{len(self.issues)}", "url": f"https://linear.app/x/{issue_id}"}}}
            elif "commentCreate" in query:
                issue = self.issues.get(variables["input"]["issueId"])
                if issue is None:
                    self._reply(handler, 200, {"errors": [{"message": "Entity not found: Issue"}]})
                    return
                issue["comments"].append(variables["input"]["body"])
                self.mutations.append(("commentCreate", variables["input"]))
                data = {"commentCreate": {"success": True, "comment": {"id": "c1"}}}
            elif "issues(" in query:
                marker = variables["marker"]
                nodes = [{"id": i, "identifier": f"OPS-{i}", "url": ""} for i, issue in self.issues.items()
                         if marker in issue["input"]["description"]]
                data = {"issues": {"nodes": nodes[:1]}}
            elif "issueUpdate" in query:
                self.issues[variables["id"]]["state"] = variables["input"].get("stateId")
                self.mutations.append(("issueUpdate", variables["input"]))
                data = {"issueUpdate": {"success": True, "issue": {"id": variables["id"]}}}
            else:
                data = {"viewer": {"id": "u1", "name": "wsmon-bot"},
                        "team": {"id": variables.get("team"), "name": "Ops", "key": "OPS"}}
        if late:
            time.sleep(ANSWER_DELAY)  # done, but the answer comes after the client gave up
        self._reply(handler, 200, {"data": data})

    @staticmethod
    def _reply(handler, status: int, body: Any, headers: dict[str, str] | None = None, text: str | None = None) -> None:
        payload = (text if text is not None else json.dumps(body)).encode()
        try:
            handler.send_response(status)
            for k, v in (headers or {}).items():
                handler.send_header(k, v)
            handler.send_header("Content-Type", "text/plain" if text is not None else "application/json")
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout injection)

    def count(self, path: str) -> int:
        return sum(1 for p, _ in self.attempts if p == path)



@contextmanager
def running_fake_service(clock) -> Iterator[tuple[FakeService, str]]:
    svc = FakeService(clock)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            svc.handle(self)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield svc, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
