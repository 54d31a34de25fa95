"""DynamoDB-only behaviour of the state store (the shared contract lives in tests/contract/).

Errors an operator sees (missing tables, refused IAM actions, an unreachable endpoint), the
bounded workset item, the one-request claim, and the multi-process claim race.
"""

from __future__ import annotations

import multiprocessing
import random
import socket
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from wsmon.core.clock import ManualClock, isoformat
from wsmon.engine.store import StoreNotInitialized, StoreUnavailable
from wsmon.engine.store.dynamodb import DynamoDBStore
from wsmon.core.models import RECENT_EVENTS_KEPT


def _store(endpoint: str, table: str, clock: ManualClock | None = None, **options: Any
           ) -> DynamoDBStore:
    return DynamoDBStore.from_url(f"dynamodb://{table}?region=us-west-2&endpoint_url={endpoint}",
                                  clock=clock, **options)


class _FakeHttp:
    status_code = 400
    headers: dict[str, str] = {}


def _refuse(store: DynamoDBStore, operation: str, code: str, message: str) -> None:
    """Make the client answer ``operation`` with an AWS error, before anything is sent."""

    def answer(**_: Any) -> tuple[_FakeHttp, dict[str, Any]]:
        return _FakeHttp(), {"Error": {"Code": code, "Message": message},
                             "ResponseMetadata": {"HTTPStatusCode": 400}}

    store.client.meta.events.register(f"before-call.dynamodb.{operation}", answer)


# -- operator-facing errors ------------------------------------------------------------------


def test_missing_tables_say_which_and_what_to_run(moto_endpoint: str, unique_name: str) -> None:
    store = _store(moto_endpoint, unique_name)
    with pytest.raises(StoreNotInitialized) as err:
        store.get_workset("ws-1")
    assert str(err.value) == f"table {unique_name} not found: run `wsmon store init`"
    with pytest.raises(StoreNotInitialized) as err:
        store.list_monitors()
    assert f"table {unique_name}-meta not found" in str(err.value)
    with pytest.raises(StoreNotInitialized, match="run `wsmon store init`"):
        store.register_workset("ws-1", "bkt", "incoming/ws-1/")


def test_init_schema_creates_then_finds_every_table(moto_endpoint: str, unique_name: str) -> None:
    store = _store(moto_endpoint, unique_name)
    tables = [unique_name] + [f"{unique_name}-{s}" for s in
                              ("events", "meta", "alerts", "outbox", "metrics")]
    assert store.init_schema() == [f"created table {t}" for t in tables]
    assert store.init_schema() == [f"exists table {t}" for t in tables]
    desc = store.client.describe_table(TableName=unique_name)["Table"]
    assert desc["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    indexes = {g["IndexName"]: [k["AttributeName"] for k in g["KeySchema"]]
               for g in desc["GlobalSecondaryIndexes"]}
    assert indexes["state-priority-index"][0] == "state"
    assert indexes["created-at-index"] == ["state", "created_at"]


def test_access_denied_names_the_refused_action(moto_endpoint: str, unique_name: str) -> None:
    store = _store(moto_endpoint, unique_name)
    store.init_schema()
    _refuse(store, "GetItem", "AccessDeniedException",
            "User: arn:aws:iam::123456789012:user/ops is not authorized to perform: "
            f"dynamodb:GetItem on resource: arn:aws:dynamodb:us-west-2:123456789012:table/{unique_name}")
    with pytest.raises(StoreUnavailable) as err:
        store.get_workset("ws-1")
    assert str(err.value) == (
        f"dynamodb:GetItem on table {unique_name} was refused (AccessDeniedException): "
        "grant it, see `wsmon iam-policy`"
    )


def test_refused_transaction_names_the_item_actions(moto_endpoint: str, unique_name: str) -> None:
    store = _store(moto_endpoint, unique_name)
    store.init_schema()
    _refuse(store, "TransactWriteItems", "AccessDenied", "Access denied")
    with pytest.raises(StoreUnavailable) as err:
        store.register_workset("ws-1", "bkt", "incoming/ws-1/")
    message = str(err.value)
    # IAM authorises a transaction item by item: the operator must grant PutItem, not
    # a "TransactWriteItems" action that does not exist.
    assert message.startswith("dynamodb:PutItem on table ")
    assert f"{unique_name}-events" in message and "(AccessDenied)" in message
    assert "wsmon iam-policy" in message


def test_bad_credentials_are_reported_as_refused(moto_endpoint: str, unique_name: str) -> None:
    store = _store(moto_endpoint, unique_name)
    _refuse(store, "Query", "UnrecognizedClientException",
            "The security token included in the request is invalid.")
    with pytest.raises(StoreUnavailable, match=r"dynamodb:Query on table .* was refused "
                                               r"\(UnrecognizedClientException\)"):
        store.list_worksets(state="ready")


def test_unreachable_endpoint_names_it() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = _store(f"http://127.0.0.1:{port}", "wsmon-unreachable", max_attempts=1)
    with pytest.raises(StoreUnavailable) as err:
        store.get_workset("ws-1")
    assert f"http://127.0.0.1:{port}" in str(err.value)
    assert "cannot reach DynamoDB" in str(err.value)


def test_url_never_shows_credentials_in_the_endpoint() -> None:
    store = DynamoDBStore.from_url(
        "dynamodb://wsmon-state?region=eu-west-1&endpoint_url=https://key:s3cret@ddb.internal:8443/x")
    assert store.url == "dynamodb://wsmon-state?region=eu-west-1&endpoint_url=https://ddb.internal:8443/x"
    assert "s3cret" not in store.url


# -- one request per claim and per transition -------------------------------------------------


def test_claim_and_transition_are_one_request_each(moto_endpoint: str, unique_name: str,
                                                   clock: ManualClock) -> None:
    store = _store(moto_endpoint, unique_name, clock)
    store.init_schema()
    for i in range(3):
        store.register_workset(f"ws-{i}", "bkt", f"incoming/ws-{i}/")
    sent: Counter[str] = Counter()
    store.client.meta.events.register(
        "before-send.dynamodb", lambda event_name, **_: sent.update([event_name.split(".")[-1]]))

    snapshot = store.list_worksets(state="ready").items  # the scheduler's view
    sent.clear()
    lease = store.acquire_lock(snapshot[0].workset_id, "engine-1")
    assert lease is not None
    assert sent == {"TransactWriteItems": 1}
    sent.clear()
    store.update_state(lease.workset_id, "in_progress", "go", "engine-1", lease=lease)
    store.update_state(lease.workset_id, "complete", "done", "engine-1", lease=lease)
    assert sent == {"TransactWriteItems": 2}
    # A lost race costs the failed write only: DynamoDB hands back the current item with it.
    other = _store(moto_endpoint, unique_name, clock)
    other.list_worksets(state="ready")
    assert store.acquire_lock("ws-1", "engine-1") is not None
    other_sent: Counter[str] = Counter()
    other.client.meta.events.register(
        "before-send.dynamodb",
        lambda event_name, **_: other_sent.update([event_name.split(".")[-1]]))
    assert other.acquire_lock("ws-1", "engine-2") is None
    assert other_sent == {"TransactWriteItems": 1}


def test_a_stale_view_never_writes_stale_state(moto_endpoint: str, unique_name: str,
                                               clock: ManualClock) -> None:
    """Two store instances (two hosts): each remembers what it last read. When the other moved
    the record on, a write is retried on the current record, and the history stays exact."""
    a = _store(moto_endpoint, unique_name, clock)
    a.init_schema()
    b = _store(moto_endpoint, unique_name, clock)
    a.register_workset("ws-1", "bkt", "incoming/ws-1/")
    assert a.get_workset("ws-1") is not None and b.get_workset("ws-1") is not None
    lease = b.acquire_lock("ws-1", "engine-b")  # a still believes ws-1 is ready and free
    assert lease is not None
    assert a.acquire_lock("ws-1", "engine-a") is None
    b.update_state("ws-1", "in_progress", "go", "engine-b", lease=lease, log_tail="step 1")
    clock.advance(5)
    # a's operator ignores it; a's view is two transitions old.
    ws = a.update_state("ws-1", "ignored", "operator says no", "alice@ops")
    assert ws.state.value == "ignored" and ws.log_tail == "step 1" and ws.lock_owner is None
    assert ws == b.get_workset("ws-1")
    assert [(e.from_state and e.from_state.value, e.to_state.value) for e in a.events("ws-1")] == [
        (None, "ready"), ("ready", "locked"), ("locked", "in_progress"), ("in_progress", "ignored")]


def test_pages_across_states_keep_the_queue_order(moto_endpoint: str, unique_name: str,
                                                  clock: ManualClock) -> None:
    """Without a state filter every state's partition is merged into one ordered listing."""
    store = _store(moto_endpoint, unique_name, clock)
    store.init_schema()
    states = ["ready", "ignored", "failed", "complete"]
    prios = ["low", "urgent", "normal"]
    for i in range(14):
        store.register_workset(f"ws-{i:02d}", "bkt", f"incoming/ws-{i:02d}/",
                               priority=prios[i % 3], state=states[i % 4])
        clock.advance(1)
    everything = [w.workset_id for w in store.list_worksets().items]
    rank = {"urgent": 0, "normal": 1, "low": 2}
    assert everything == sorted(everything, key=lambda w: (rank[prios[int(w[3:]) % 3]], w))
    for limit in (1, 2, 5):
        seen, cursor = [], None
        while True:
            page = store.list_worksets(limit=limit, cursor=cursor)
            seen += [w.workset_id for w in page.items]
            cursor = page.next_cursor
            if not cursor:
                break
        assert seen == everything


# -- the workset item stays bounded ----------------------------------------------------------


def _item_size(value: dict[str, Any]) -> int:
    """DynamoDB's item size, rounded up: attribute names plus values (numbers at most 21 bytes)."""

    def size(av: dict[str, Any]) -> int:
        (kind, v), = av.items()
        if kind == "S":
            return len(v.encode())
        if kind == "N":
            return 21
        if kind in ("BOOL", "NULL"):
            return 1
        if kind == "M":
            return 3 + sum(len(k.encode()) + 1 + size(x) for k, x in v.items())
        if kind == "L":
            return 3 + sum(1 + size(x) for x in v)
        return len(str(v))

    return sum(len(k.encode()) + size(v) for k, v in value.items())


@pytest.fixture(scope="module")
def serial_moto() -> Iterator[str]:
    """A moto server in its own process that handles one request at a time (see
    wsmon/demo/moto_server.py), with per-item transaction rollback so long histories stay fast."""
    from wsmon.demo.moto_server import serve_in_subprocess

    with serve_in_subprocess() as endpoint:
        yield endpoint


@pytest.mark.slow
def test_ten_thousand_transitions_keep_the_item_small(serial_moto: str, unique_name: str,
                                                      clock: ManualClock) -> None:
    """10,000 transitions on one workset: the item stays far under 64 KB, events() has all.

    moto takes ~40 ms per transaction, so the first 9,500 events are written straight into the
    events table (with the item's counters set to match) and the last 500 transitions, 100 laps
    of the inline ring, go through the store API.
    """
    total, through_api = 10_000, 500
    store = _store(serial_moto, unique_name, clock)
    store.init_schema()
    wid = "ws [10k] ü"
    store.register_workset(wid, "bkt", f"incoming/{wid}/")
    setup_seq = total - through_api
    states = ["locked", "ready"]
    events = [{"PutRequest": {"Item": {
        "workset_id": {"S": wid}, "seq": {"N": str(seq)},
        "at": {"S": isoformat(clock.now())}, "actor": {"S": "engine-old"},
        "from_state": {"S": states[seq % 2]}, "to_state": {"S": states[(seq + 1) % 2]},
        "reason": {"S": "history written by the test's setup"}}}}
        for seq in range(2, setup_seq + 1)]
    for start in range(0, len(events), 25):
        store.client.batch_write_item(
            RequestItems={f"{unique_name}-events": events[start:start + 25]})
    store.client.update_item(TableName=unique_name, Key={"workset_id": {"S": wid}},
                             UpdateExpression="SET event_seq = :s, version = :s",
                             ExpressionAttributeValues={":s": {"N": str(setup_seq)}})
    store = _store(serial_moto, unique_name, clock)  # forget what the old instance cached

    for lap in range(through_api // 2):
        clock.advance(1)
        lease = store.acquire_lock(wid, f"engine-{lap % 3}")
        assert lease is not None
        store.release_lock(lease, reason=f"lap {lap}")

    raw = store.client.get_item(TableName=unique_name, Key={"workset_id": {"S": wid}},
                                ConsistentRead=True)["Item"]
    assert _item_size(raw) < 8 * 1024  # far under DynamoDB's 400 KB and the 64 KB target
    ws = store.get_workset(wid)
    assert ws is not None
    assert [e.seq for e in ws.recent_events] == list(range(total - RECENT_EVENTS_KEPT + 1, total + 1))
    assert ws.recent_events[-1].reason == f"lap {through_api // 2 - 1}"

    history = store.events(wid)
    assert [e.seq for e in history] == list(range(1, total + 1))
    assert history[0].reason == "registered" and history[-1].reason == ws.recent_events[-1].reason
    assert [e.to_state.value for e in history[-4:]] == ["locked", "ready", "locked", "ready"]
    assert len(store.events(wid, limit=25)) == 25


# -- the race --------------------------------------------------------------------------------

RACERS = 8
RACE_WORKSETS = 500


def _race_worker(endpoint: str, table: str, owner: str, seed: int,
                 results: Any) -> None:
    store = _store(endpoint, table)
    ids = [f"race-{i:03d}" for i in range(RACE_WORKSETS)]
    random.Random(seed).shuffle(ids)
    won = [wid for wid in ids if store.acquire_lock(wid, owner, lease_seconds=3600) is not None]
    results.put((owner, won))


@pytest.mark.slow
def test_eight_processes_race_for_500_worksets(serial_moto: str, unique_name: str) -> None:
    """8 OS processes race to claim the same 500 worksets; each is claimed exactly once.

    moto does not make a conditional write atomic under concurrent requests (two requests can
    both pass the condition), so this runs against a moto server in its own process that
    handles ONE request at a time (wsmon/demo/moto_server.py), as DynamoDB handles each item: the
    condition check and the write of one request are never interleaved with another's. The
    processes still race: their requests interleave freely, each from its own stale view.
    """
    setup = _store(serial_moto, unique_name)
    setup.init_schema()
    for i in range(RACE_WORKSETS):
        setup.register_workset(f"race-{i:03d}", "bkt", f"incoming/race-{i:03d}/")

    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_race_worker,
                         args=(serial_moto, unique_name, f"engine-{n}", n, results))
             for n in range(RACERS)]
    for p in procs:
        p.start()
    won = dict(results.get(timeout=240) for _ in procs)
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0

    claims = Counter(wid for ids in won.values() for wid in ids)
    assert len(claims) == RACE_WORKSETS and set(claims.values()) == {1}
    assert sum(1 for ids in won.values() if ids) > 1, "no race happened: one process won all"
    # The store agrees with what each process was told.
    for owner, ids in won.items():
        for wid in ids[:20]:
            ws = setup.get_workset(wid)
            assert ws is not None and ws.lock_owner == owner and ws.fence == 1
            assert [e.to_state.value for e in setup.events(wid)] == ["ready", "locked"]
