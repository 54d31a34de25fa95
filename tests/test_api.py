"""The HTTP API against a real server (uvicorn on 127.0.0.1) on SQLite and on DynamoDB (moto):
every read endpoint, pagination to the end, each operation's 200 / 401 / 403 / 409, the event
stream, /metrics through prometheus-client's own parser, registering and validating folders."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.api_support import WRITE_TOKEN, api_settings, make_store, serving
from tests.ops_world import s3_folders
from wsmon.core.clock import ManualClock
from wsmon.core.models import Alert, AlertState, ClusterStatus, OutboxEntry, Severity

pytestmark = pytest.mark.slow


@pytest.fixture
def stream_poll() -> float:
    """Seconds between the event hub's looks at the store; long unless a test watches the stream
    (moto serves one request at a time, so a busy watcher slows every other request)."""
    return 30.0


@pytest.fixture(params=["sqlite", "dynamodb"])
def world(request, tmp_path, moto_endpoint, unique_name, stream_poll):
    clock = ManualClock(datetime.now(timezone.utc).replace(microsecond=0))
    store = make_store(request.param, tmp_path, moto_endpoint, unique_name, clock)
    folders = s3_folders(moto_endpoint, unique_name)
    settings = api_settings(moto_endpoint, bucket=unique_name, stream_poll_seconds=stream_poll)
    with serving(settings, store, s3=folders.s3) as served:
        served.clock = clock
        served.folders = folders
        yield served
    store.close()


def reg(world, name: str, **kw) -> None:
    assert world.store.register_workset(name, world.folders.bucket, f"src/{name}/", **kw)


def alert(world, alert_id: str = "a1", state: AlertState = AlertState.FIRING,
          severity: Severity = Severity.CRITICAL) -> Alert:
    now = world.clock.now()
    return world.store.put_alert(Alert(alert_id=alert_id, rule="dead_lettered", subject="ws-x",
                                       severity=severity, state=state, summary="ws-x gave up",
                                       pending_since=now, fired_at=now, updated_at=now))


# -- reads -------------------------------------------------------------------------------------

def test_every_read_endpoint(world) -> None:
    reg(world, "ws-urgent", priority="urgent", customer_id="acme")
    reg(world, "ws-normal", customer_id="beta")
    reg(world, "ws-low", priority="low")
    world.store.update_state("ws-low", "error", reason="boom", actor="t", error_code="WS-RES-001")
    world.store.put_cluster_status(ClusterStatus(name="c1", max_vcpus=256, vcpus_used=64,
                                                 max_memory_gb=1024, max_concurrent_worksets=3,
                                                 updated_at=world.clock.now()))
    alert(world)
    world.store.record_monitor_heartbeat("eng-1", "head", 42, "0.1", role="engine")
    with world.reader() as c:
        page = c.get("/worksets").json()
        assert [w["workset_id"] for w in page["items"]] == ["ws-urgent", "ws-normal", "ws-low"]
        assert page["has_more"] is False and page["next_cursor"] is None
        assert [w["workset_id"] for w in c.get("/worksets", params={"state": "error"}).json()["items"]] == ["ws-low"]
        assert [w["workset_id"] for w in c.get("/worksets", params={"customer": "beta"}).json()["items"]] == ["ws-normal"]
        assert [w["workset_id"] for w in c.get("/worksets", params={"text": "URG"}).json()["items"]] == ["ws-urgent"]
        assert [w["workset_id"] for w in c.get("/worksets", params={"priority": "low"}).json()["items"]] == ["ws-low"]

        one = c.get("/worksets/ws-low").json()
        assert one["state"] == "error" and one["error_code"] == "WS-RES-001"
        assert {"fence", "steps", "findings", "estimate", "recent_events", "lock_owner"} <= set(one)
        events = c.get("/worksets/ws-low/events").json()["events"]
        assert [(e["from_state"], e["to_state"]) for e in events] == [(None, "ready"), ("ready", "error")]

        stats = c.get("/queue/stats").json()
        assert stats["by_state"]["ready"] == 2 and stats["by_state"]["error"] == 1
        assert stats["counts"]["ready"]["urgent"] == 1 and stats["total"] == 3

        nxt = c.get("/worksets/next").json()
        assert nxt["workset"]["workset_id"] == "ws-urgent"
        assert nxt["placement"]["cluster_name"] == "c1"
        sched = c.get("/scheduler/stats").json()
        assert sched["clusters"][0]["free_vcpus"] == 192
        assert [d["workset_id"] for d in sched["decisions"]] == ["ws-urgent", "ws-normal"]
        assert all(d["reason"] for d in sched["decisions"])

        assert [x["name"] for x in c.get("/clusters").json()["clusters"]] == ["c1"]
        assert [a["alert_id"] for a in c.get("/alerts").json()["alerts"]] == ["a1"]
        assert c.get("/alerts", params={"state": "acknowledged"}).json()["alerts"] == []
        monitors = c.get("/monitors").json()["monitors"]
        assert monitors[0]["monitor_id"] == "eng-1" and monitors[0]["alive"] is True
        usage = c.get("/usage", params={"by": "customer"}).json()
        assert usage["by"] == "customer" and usage["rows"][-1]["group"] == "total"
        assert c.get("/usage", params={"by": "planet"}).status_code == 422
        health = c.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert c.get("/openapi.json").json()["info"]["title"] == "wsmon API"
        assert "swagger" in c.get("/docs").text.lower()


def test_health_says_why_not_when_no_engine_is_alive(world) -> None:
    world.store.record_monitor_heartbeat("eng-1", "head", 42, "0.1", role="engine")
    world.clock.advance(3600)
    with world.client() as c:  # no token: a load balancer checks it as it is
        r = c.get("/health")
    assert r.status_code == 503
    assert r.json()["checks"]["engines"] == {"ok": False, "detail": "no engine heartbeat for 3600s"}


def test_pagination_reaches_the_end_of_1200_worksets(world) -> None:
    names = [f"ws-{i:04d}" for i in range(1200)]
    for i, name in enumerate(names):
        reg(world, name, priority=("urgent", "normal", "low")[i % 3])
    expected = [n for p in (0, 1, 2) for n in names if names.index(n) % 3 == p]
    seen, cursor, pages = [], None, 0
    with world.reader() as c:
        while True:
            params = {"limit": 500, **({"cursor": cursor} if cursor else {})}
            page = c.get("/worksets", params=params).json()
            pages += 1
            seen += [w["workset_id"] for w in page["items"]]
            if not page["has_more"]:
                assert page["next_cursor"] is None
                break
            cursor = page["next_cursor"]
        assert seen == expected and pages == 3
        # a filtered walk (priority and text) ends too, with every match exactly once
        seen, cursor = [], None
        while True:
            params = {"limit": 25, "priority": "low", "text": "ws-1", **({"cursor": cursor} if cursor else {})}
            page = c.get("/worksets", params=params).json()
            seen += [w["workset_id"] for w in page["items"]]
            if not page["has_more"]:
                break
            cursor = page["next_cursor"]
        assert seen == [n for n in expected if n.startswith("ws-1") and names.index(n) % 3 == 2]
        assert c.get("/worksets", params={"limit": 501}).status_code == 422


# -- operations --------------------------------------------------------------------------------

def _setup(world, op: str) -> tuple[str, dict, dict]:
    """A record op applies to; returns (path, body, body naming a state the client did not see)."""
    store, clock = world.store, world.clock
    if op in ("ack", "resolve"):
        alert(world, "al-1")
        body = {"seen": {"state": "firing"}, **({"reason": "fixed by hand"} if op == "resolve" else {"note": "on it", "expires": "2h"})}
        return f"/alerts/al-1/{op}", body, {**body, "seen": {"state": "pending"}}
    if op == "silence":
        return "/silences", {"rule": "dead_lettered", "duration": "4h", "reason": "maintenance"}, {}
    name = f"ws-{op}"
    world.folders.put(name)
    reg(world, name)
    state = "ready"
    if op in ("retry", "unignore", "rerun"):
        target = {"retry": "error", "unignore": "ignored", "rerun": "complete"}[op]
        if target == "complete":
            store.acquire_lock(name, "eng-1", 300)
            store.update_state(name, "in_progress", reason="go", actor="eng-1",
                               lease=_lease(store, name))
        store.update_state(name, target, reason="setup", actor="t",
                           lease=_lease(store, name) if target == "complete" else None)
        state = target
    fence = None
    if op in ("stop", "release"):
        store.acquire_lock(name, "eng-1", 300)
        state, fence = "locked", store.get_workset(name).fence
        if op == "release":
            clock.advance(3600)  # the holder is gone: its lease expired long ago
    seen = {"state": state, **({"fence": fence} if fence is not None else {})}
    body = {"seen": seen, **({"priority": "urgent"} if op == "priority" else {}),
            **({"to": "error"} if op == "stop" else {})}
    other = "failed" if state != "failed" else "error"
    return f"/worksets/{name}/{op}", body, {**body, "seen": {**seen, "state": other}}


def _lease(store, name):
    from wsmon.core.models import Lease

    ws = store.get_workset(name)
    return Lease(workset_id=name, owner_id=ws.lock_owner, fence=ws.fence, expires_at=ws.lock_expires_at)


OPS = ["retry", "rerun", "stop", "release", "ignore", "unignore", "priority", "ack", "resolve", "silence"]


@pytest.mark.parametrize("op", OPS)
def test_operation_answers_401_403_409_and_200(world, op: str) -> None:
    path, body, stale = _setup(world, op)
    with world.client() as anonymous:
        r = anonymous.post(path, json=body)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"
    with world.client("not-" + WRITE_TOKEN) as wrong:
        assert wrong.post(path, json=body).status_code == 401
    with world.reader() as reader:
        r = reader.post(path, json=body)
        assert r.status_code == 403 and "may only read" in r.json()["error"]["message"]
    with world.writer() as w:
        if stale:  # the client saw another state: changed meanwhile, with the current record
            r = w.post(path, json=stale)
            assert r.status_code == 409 and r.json()["result"] == "changed"
            assert r.json()["current"] is not None
        r = w.post(path, json=body)
        assert r.status_code == 200, r.text
        assert r.json()["result"] == "done"
        again = w.post(path, json=body)  # the same request twice: the record moved on
        if op != "silence":
            assert again.status_code == 409, again.text
            assert again.json()["result"] in ("changed", "refused")
    if op not in ("ack", "resolve", "silence"):
        events = world.store.events(f"ws-{op}")
        if op != "priority":
            assert events[-1].actor == "api:ops@127.0.0.1"


def test_refusal_comes_with_the_reason_from_the_operations_module(world) -> None:
    reg(world, "ws-busy")
    world.store.record_monitor_heartbeat("eng-1", "headnode", 4242, "0", role="engine")
    world.store.acquire_lock("ws-busy", "eng-1", 300)
    fence = world.store.get_workset("ws-busy").fence
    with world.writer() as w:
        r = w.post("/worksets/ws-busy/retry", json={"seen": {"state": "locked", "fence": fence}})
        assert r.status_code == 409 and r.json()["result"] == "refused"
        assert r.json()["error"]["message"] == "it is locked (held by eng-1): use stop to end the run"
        r = w.post("/worksets/ws-busy/release", json={"seen": {"state": "locked", "fence": fence}})
        assert r.status_code == 409 and "holder eng-1 is alive" in r.json()["message"]
        r = w.post("/worksets/ws-busy/release", json={"seen": {"state": "locked"}})
        assert r.status_code == 422 and "seen.fence" in r.json()["error"]["message"]
        assert w.post("/worksets/nope/ignore", json={"seen": {"state": "ready"}}).status_code == 404


def test_retry_of_a_folder_still_invalid_is_refused_with_its_findings(world) -> None:
    world.folders.put("ws-bad", defect="shell")
    reg(world, "ws-bad")
    world.store.update_state("ws-bad", "error", reason="setup", actor="t")
    with world.writer() as w:
        r = w.post("/worksets/ws-bad/retry", json={"seen": {"state": "error"}})
    assert r.status_code == 409 and r.json()["result"] == "refused"
    assert r.json()["findings"] and all("code" in f for f in r.json()["findings"])
    assert world.store.get_workset("ws-bad").state.value == "error"


# -- event stream ------------------------------------------------------------------------------

def _events(lines, want: int):
    """The next ``want`` events; each of ours ends with its one ``data:`` line (the blank line
    after it may wait in the decoder for the next chunk)."""
    got, current = [], {}
    for line in lines:
        if line.startswith(("id:", "event:", "data:")):
            key, _, value = line.partition(":")
            current[key] = value.strip()
            if key == "data":
                got.append(current)
                current = {}
                if len(got) >= want:
                    return got
    return got


@pytest.mark.parametrize("stream_poll", [0.1])
def test_stream_delivers_a_change_within_two_seconds_and_resumes(world) -> None:
    reg(world, "ws-s")
    timeout = httpx.Timeout(30, read=2.0)  # no event within 2 s fails the read
    with world.reader() as c:
        with c.stream("GET", "/events/stream", timeout=timeout) as stream:
            lines = stream.iter_lines()
            next(lines)  # the opening comment: subscribed
            world.store.update_state("ws-s", "ignored", reason="x", actor="t")
            # the registration just before may still be news to the hub's first look, so it can
            # arrive first; the change must follow, each event within the read timeout
            first = None
            while first is None:
                (event,) = _events(lines, 1)
                assert event["event"] == "workset", event
                if json.loads(event["data"])["state"] == "ignored":
                    first = event
                else:
                    assert json.loads(event["data"])["state"] == "ready", event
        world.store.update_state("ws-s", "ready", reason="x", actor="t")
        world.store.set_priority("ws-s", "urgent", actor="t")
        alert(world, "al-s")
        with c.stream("GET", "/events/stream", timeout=timeout,
                      headers={"Last-Event-ID": first["id"]}) as stream:
            lines = stream.iter_lines()
            missed: list[dict] = []
            # two writes inside one look at the store arrive as one event: read until both the
            # alert and the workset's last state have come, each within the read timeout
            while not (any(e["event"] == "alert" for e in missed)
                       and any(e["event"] == "workset" and json.loads(e["data"])["priority"] == "urgent"
                               for e in missed)):
                missed += _events(lines, 1)
        seq = lambda event: int(event["id"].rsplit("-", 1)[1])
        assert all(seq(e) > seq(first) for e in missed)
        assert json.loads(next(e for e in missed if e["event"] == "alert")["data"])["state"] == "firing"
        with c.stream("GET", "/events/stream", timeout=timeout,
                      headers={"Last-Event-ID": "from-another-server-7"}) as stream:
            (reset,) = _events(stream.iter_lines(), 1)
        assert reset["event"] == "reset"


# -- metrics -----------------------------------------------------------------------------------

def test_metrics_parse_with_prometheus_client(world) -> None:
    reg(world, "ws-a", priority="urgent")
    reg(world, "ws-b")
    world.store.acquire_lock("ws-b", "eng-1", 300)
    world.store.update_fields("ws-b", actor="t", cluster_name="c1")
    world.clock.advance(120)
    alert(world, severity=Severity.WARNING)
    now = world.clock.now()
    world.store.enqueue_notification(OutboxEntry(
        entry_id="e1", channel="slack", dedup_id="d1", coalesce_key="k1", event_type="failed",
        payload={}, created_at=now, next_attempt_at=now))
    world.store.record_monitor_heartbeat("eng-1", "head", 42, "0.1", role="engine",
                                         details={"polls": {"polls": 7, "requests": 30, "errors": 2}})
    world.clock.advance(5)
    with world.reader() as c:
        r = httpx.get(f"{world.url}/metrics", headers=c.headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    assert samples[("wsmon_queue_depth", (("priority", "urgent"), ("state", "ready")))] == 1
    assert samples[("wsmon_queue_depth", (("priority", "normal"), ("state", "locked")))] == 1
    assert samples[("wsmon_worksets_running", (("cluster", "c1"),))] == 1
    assert samples[("wsmon_lease_age_seconds", (("owner", "eng-1"), ("workset_id", "ws-b")))] == 125
    assert samples[("wsmon_lease_expires_in_seconds", (("owner", "eng-1"), ("workset_id", "ws-b")))] == 175
    assert samples[("wsmon_alerts_firing", (("severity", "warning"),))] == 1
    assert samples[("wsmon_alerts_firing", (("severity", "critical"),))] == 0
    assert samples[("wsmon_outbox_backlog", (("channel", "slack"),))] == 1
    assert samples[("wsmon_engine_heartbeat_age_seconds", (("monitor", "eng-1"),))] == 5
    assert samples[("wsmon_poll_total", (("monitor", "eng-1"),))] == 7
    assert samples[("wsmon_poll_requests_total", (("monitor", "eng-1"),))] == 30
    assert samples[("wsmon_poll_errors_total", (("monitor", "eng-1"),))] == 2
    assert ("wsmon_api_stream_clients", ()) in samples


# -- submitting work ---------------------------------------------------------------------------

def _ready_folder(world, name: str, defect: str | None = None) -> None:
    world.folders.put(name, defect=defect)  # a folder as uploaded: its daylily.ready included


def test_register_a_folder_now(world) -> None:
    _ready_folder(world, "ws-new")
    uri = f"s3://{world.folders.bucket}/src/ws-new/"
    with world.writer() as w:
        r = w.post("/worksets", json={"s3_uri": uri})
        assert r.status_code == 201, r.text
        assert r.json()["workset"]["state"] == "ready" and r.json()["registered"] is True
        again = w.post("/worksets", json={"s3_uri": uri})
        assert again.status_code == 200 and again.json()["registered"] is False
        world.folders.put("ws-unsent")
        world.folders.s3.delete_object(Bucket=world.folders.bucket, Key="src/ws-unsent/daylily.ready")
        r = w.post("/worksets", json={"s3_uri": f"s3://{world.folders.bucket}/src/ws-unsent/"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "not_submitted"
        r = w.post("/worksets", json={"s3_uri": f"s3://{world.folders.bucket}/elsewhere/ws-new/"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "not_a_source_folder"
    assert world.store.events("ws-new")[0].actor == "api:ops@127.0.0.1"
    with world.reader() as reader:
        assert reader.post("/worksets", json={"s3_uri": uri}).status_code == 403


def test_validate_gives_the_findings_of_wsmon_validate(world, tmp_path) -> None:
    from wsmon.engine.s3 import validate_s3_folder
    from wsmon.engine.worksetfiles import validate_local_folder

    _ready_folder(world, "ws-shell", defect="shell")
    uri = f"s3://{world.folders.bucket}/src/ws-shell/"
    with world.reader() as c:
        r = c.post("/worksets/validate", json={"s3_uri": uri})
    assert r.status_code == 200
    direct = validate_s3_folder(world.folders.s3, world.folders.bucket, "src/ws-shell/", world.settings)
    assert r.json()["valid"] is False
    assert [f["code"] for f in r.json()["findings"]] == [f.code for f in direct.findings]

    import io
    import tarfile

    folder = tmp_path / "up" / "ws-local"
    folder.mkdir(parents=True)
    listed = world.folders.s3.list_objects_v2(Bucket=world.folders.bucket, Prefix="src/ws-shell/")
    for obj in listed["Contents"]:
        rel = obj["Key"][len("src/ws-shell/"):]
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(world.folders.s3.get_object(Bucket=world.folders.bucket, Key=obj["Key"])["Body"].read())
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(folder, arcname="ws-local")
    with world.reader() as c:
        r = c.post("/worksets/validate", content=buffer.getvalue(),
                   headers={"Content-Type": "application/gzip"})
    assert r.status_code == 200, r.text
    local = validate_local_folder(folder, world.settings)
    assert r.json()["workset_id"] == "ws-local"
    assert [(f["code"], f["message"]) for f in r.json()["findings"]] == [(f.code, f.message) for f in local.findings]
    assert str(tmp_path) not in r.text and "/tmp" not in r.text
