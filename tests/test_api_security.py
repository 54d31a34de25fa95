"""The API's security rules and its answers to bad input, against a real server on SQLite:
binding, tokens, no CORS, capped bodies, bad cursors, hostile ids, wrong methods, errors without
internals, archives that try to escape, and a stream client that never reads."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import tarfile
from datetime import datetime, timezone
from urllib.parse import quote

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from tests.api_support import READ_TOKEN, WRITE_TOKEN, api_settings, serving
from tests.waiting import wait_until
from wsmon.api.auth import ApiConfigError
from wsmon.api.server import ApiServer
from wsmon.config.settings import Settings
from wsmon.core.clock import ManualClock
from wsmon.engine.store import open_store

pytestmark = pytest.mark.slow


@pytest.fixture
def store(tmp_path):
    clock = ManualClock(datetime.now(timezone.utc).replace(microsecond=0))
    s = open_store(f"sqlite:///{tmp_path / 'state.db'}", clock=clock)
    yield s
    s.close()


@pytest.fixture
def served(store):
    with serving(api_settings(), store) as s:
        yield s


# -- exposure and tokens -----------------------------------------------------------------------

def test_binding_beyond_loopback_without_a_token_is_refused(store, tmp_path, no_user_config) -> None:
    with pytest.raises(ApiConfigError, match="without a token"):
        ApiServer(Settings(), store, bind="0.0.0.0:0")
    ApiServer(Settings(), store, bind="127.0.0.1:0").socket.close()  # loopback: fine without
    cli = subprocess.run([sys.executable, "-m", "wsmon.cli", "--store", store.url, "serve",
                          "--bind", "0.0.0.0:0"], capture_output=True, text=True, timeout=60,
                         check=False)
    assert cli.returncode == 2
    assert "refusing to serve the API on 0.0.0.0" in cli.stderr and "WSMON_API_TOKEN" in cli.stderr


def test_a_token_written_in_the_config_file_is_refused(store, tmp_path, no_user_config) -> None:
    from wsmon.config import load_settings

    toml = tmp_path / "config.toml"
    toml.write_text(f'[api]\ntoken = "ops:{WRITE_TOKEN}"\n')
    with pytest.raises(ApiConfigError, match="written in the config file"):
        ApiServer(load_settings(toml), store, bind="127.0.0.1:0")
    with pytest.raises(ApiConfigError, match="shorter than 16"):
        ApiServer(Settings(api={"token": SecretStr("ops:short")}), store, bind="127.0.0.1:0")


def test_token_file_names_the_actor(store, tmp_path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# lab systems\nlims-bot:{WRITE_TOKEN}\n")
    store.register_workset("ws-1", "b", "src/ws-1/")
    with serving(Settings(api={"token_file": tokens}), store) as s, s.writer() as w:
        assert w.post("/worksets/ws-1/ignore", json={"seen": {"state": "ready"}}).status_code == 200
        with s.client(WRITE_TOKEN[:-1] + ("x" if WRITE_TOKEN[-1] != "x" else "y")) as near:
            assert near.post("/worksets/ws-1/unignore", json={"seen": {"state": "ignored"}}).status_code == 401
    assert store.events("ws-1")[-1].actor == "api:lims-bot@127.0.0.1"


def test_reads_need_a_token_when_required(store) -> None:
    with serving(api_settings(read_token_required=True), store) as s:
        with s.client() as anonymous:
            r = anonymous.get("/worksets")
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
            assert httpx.get(f"{s.url}/metrics").status_code == 401
            assert anonymous.get("/events/stream").status_code == 401
            assert anonymous.get("/health").status_code in (200, 503)  # for load balancers
        with s.reader() as reader:
            assert reader.get("/worksets").status_code == 200


def test_no_cors_and_no_sniffing(served) -> None:
    with served.reader() as c:
        pre = c.options("/worksets", headers={"Origin": "https://evil.example",
                                              "Access-Control-Request-Method": "GET"})
        assert "access-control-allow-origin" not in pre.headers
        got = c.get("/worksets", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in got.headers
        assert got.headers["x-content-type-options"] == "nosniff"
        assert got.headers["content-type"] == "application/json"


# -- bad input ---------------------------------------------------------------------------------

def test_unknown_fields_and_wrong_types_are_named(served, store) -> None:
    store.register_workset("ws-1", "b", "src/ws-1/")
    with served.writer() as w:
        r = w.post("/worksets/ws-1/ignore", json={"seen": {"state": "ready"}, "force": True})
        assert r.status_code == 422 and "force" in r.json()["error"]["message"]
        r = w.post("/worksets/ws-1/priority", json={"seen": {"state": "ready"}, "priority": "asap"})
        assert r.status_code == 422 and "priority" in r.json()["error"]["message"]
        r = w.post("/worksets/ws-1/ignore", content=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 422
    assert store.get_workset("ws-1").state.value == "ready"


def test_huge_bodies_are_refused_before_they_are_read(served) -> None:
    big = json.dumps({"seen": {"state": "ready"}, "reason": "x" * 200_000}).encode()
    with served.writer() as w:
        r = w.post("/worksets/ws-1/ignore", content=big, headers={"Content-Type": "application/json"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"

        def chunks():  # no Content-Length: counted as it arrives
            for _ in range(100):
                yield b" " * 4096

        r = w.post("/worksets/ws-1/ignore", content=chunks(), headers={"Content-Type": "application/json"})
        assert r.status_code == 413


def test_bad_cursors_are_400(served, store) -> None:
    for i in range(5):
        store.register_workset(f"ws-{i}", "b", f"src/ws-{i}/")
    with served.reader() as c:
        cursor = c.get("/worksets", params={"limit": 2}).json()["next_cursor"]
        assert c.get("/worksets", params={"limit": 2, "cursor": cursor}).status_code == 200
        for bad in ("zzz", "%%%", cursor[:-3], "e30", "x" * 5000):
            r = c.get("/worksets", params={"cursor": bad})
            assert r.status_code in (400, 422) and r.json()["error"]["code"] in ("bad_cursor", "invalid_request"), bad
        r = c.get("/worksets", params={"limit": 2, "cursor": cursor, "state": "error"})
        assert r.status_code == 400 and "other filters" in r.json()["error"]["message"]


@pytest.mark.parametrize("name", ["[bold red]x[not bold]", "esc\x1b[31mred", "tab\tand\u202eflip", "spa ce", "ü-ñ"])
def test_hostile_ids_come_back_as_data(served, store, name) -> None:
    store.register_workset(name, "b", f"src/{name}/")
    with served.reader() as c:
        r = c.get(f"/worksets/{quote(name, safe='')}")
        assert r.status_code == 200 and r.json()["workset_id"] == name
        assert r.headers["content-type"] == "application/json"
        assert c.get("/worksets").json()["items"][0]["workset_id"] == name


def test_ids_with_slash_or_dots_never_reach_elsewhere(served, store) -> None:
    store.register_workset("ws-1", "b", "src/ws-1/")
    with served.reader() as c:
        for raw in ("a%2Fb", "..%2F..%2Fetc%2Fpasswd", "%2E%2E", "ws-1%2F..%2Fws-1"):
            r = httpx.get(f"{served.url}/api/v1/worksets/{raw}", headers=c.headers)
            assert r.status_code == 404 and r.headers["content-type"] == "application/json", raw
            assert "error" in r.json()


def test_wrong_methods_are_405_json(served) -> None:
    with served.writer() as w:
        for method, path in (("DELETE", "/worksets"), ("GET", "/worksets/ws-1/retry"),
                             ("PUT", "/queue/stats"), ("POST", "/health")):
            r = w.request(method, path)
            assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


def test_errors_carry_no_traceback_or_path(tmp_path) -> None:
    # a store that cannot be reached: its failure is a 503 naming only its kind
    store = open_store("dynamodb://wsmon-x?region=us-west-2&endpoint_url=http://127.0.0.1:9")
    with serving(api_settings(), store) as s, s.reader() as c:
        for path in ("/worksets", "/queue/stats", "/worksets/ws-1"):
            r = c.get(path)
            assert r.status_code == 503, (path, r.text)
            assert r.json()["error"]["code"] == "store_unavailable"
            text = r.text
            assert "Traceback" not in text and "127.0.0.1:9" not in text and "/work" not in text
        health = c.get("/health")
        assert health.status_code == 503 and health.json()["checks"]["store"]["ok"] is False


# -- uploads -----------------------------------------------------------------------------------

def _tar(members: dict[str, bytes], link: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo("ws/evil")
            info.type = tarfile.SYMTYPE
            info.linkname = link
            tar.addfile(info)
    return buffer.getvalue()


def test_archives_that_escape_or_overflow_are_refused(store) -> None:
    gz = {"Content-Type": "application/gzip"}
    with serving(api_settings(max_upload_bytes=4096), store) as s, s.reader() as c:
        r = c.post("/worksets/validate", content=_tar({"ws/../../etc/x": b"1"}), headers=gz)
        assert r.status_code == 422 and r.json()["error"]["code"] == "unsafe_archive"
        r = c.post("/worksets/validate", content=_tar({"/abs/x": b"1"}), headers=gz)
        assert r.status_code == 422 and r.json()["error"]["code"] == "unsafe_archive"
        r = c.post("/worksets/validate", content=_tar({"ws/a": b"1"}, link="/etc/passwd"), headers=gz)
        assert r.status_code == 422 and r.json()["error"]["code"] == "unsafe_archive"
        r = c.post("/worksets/validate", content=b"not an archive", headers=gz)
        assert r.status_code == 422 and r.json()["error"]["code"] == "bad_archive"
        r = c.post("/worksets/validate", content=b"\0" * 5000, headers=gz)
        assert r.status_code == 413
        r = c.post("/worksets/validate", content=b"x", headers={"Content-Type": "text/html"})
        assert r.status_code == 415
        r = c.post("/worksets/validate", content=_tar({"ws/daylily_work.yaml": b"a: 1\n"}), headers=gz)
        assert r.status_code == 200
        codes = {f["code"] for f in r.json()["findings"]}
        assert r.json()["valid"] is False and "WS-CFG-008" in codes and "WS-DAT-001" in codes


# -- a stream client that never reads ----------------------------------------------------------

def test_a_client_that_never_reads_the_stream_is_let_go(store) -> None:
    for i in range(50):
        store.register_workset(f"ws-{i:02d}", "b", f"src/ws-{i:02d}/", metadata={"pad": "x" * 4000})
    settings = api_settings(stream_poll_seconds=0.05, stream_client_buffer=8)
    with serving(settings, store) as s:
        hub = s.server.app.state.wsmon.hub
        sleeper = socket.socket()
        sleeper.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        sleeper.connect(("127.0.0.1", s.server.port))
        sleeper.sendall(f"GET /api/v1/events/stream HTTP/1.1\r\nHost: x\r\n"
                        f"Authorization: Bearer {READ_TOKEN}\r\n\r\n".encode())
        # the 50 registrations may still be news to the hub's first look: then the silent client
        # overflows its buffer and is let go before this ever sees it subscribed
        wait_until(lambda: hub.clients == 1 or hub.dropped_clients >= 1, "the silent client to subscribe")
        rounds = 0
        while hub.dropped_clients == 0:  # changes keep coming; the silent client never reads
            rounds += 1
            assert rounds < 400, "the silent client was never let go"
            for i in range(50):
                store.set_priority(f"ws-{i:02d}", ("urgent", "normal", "low")[(rounds + i) % 3], actor="t")
            wait_until(lambda n=rounds * 50: hub.published >= n, "the hub to publish the changes")
        with s.reader() as c:  # everyone else is served as before
            with c.stream("GET", "/events/stream", timeout=httpx.Timeout(30, read=2.0)) as live:
                lines = live.iter_lines()
                next(lines)
                store.set_priority("ws-00", "urgent" if store.get_workset("ws-00").priority.value != "urgent" else "low", actor="t")
                assert any(line.startswith("event: workset") for line in lines)
            metrics = httpx.get(f"{s.url}/metrics", headers=c.headers).text
        dropped = {x.name: x.value for f in text_string_to_metric_families(metrics) for x in f.samples}
        assert dropped["wsmon_api_stream_dropped_clients_total"] >= 1
        sleeper.close()
