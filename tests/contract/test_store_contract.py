"""The store contract, part 1: worksets, the state machine, leases and fencing, events, monitors.

Every test runs against every backend (see conftest.py). Time only moves when a test moves it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from wsmon.core.clock import ManualClock
from wsmon.engine.store import (
    IllegalTransition,
    LeaseLost,
    LockChanged,
    StateConflict,
    Store,
    WorksetNotFound,
)
from wsmon.engine.store.base import TRANSITIONS, parse_force_release_reason
from wsmon.core.models import RECENT_EVENTS_KEPT, Lease, Priority, StepRecord, Workset, WorksetState

from .conftest import DEFAULT_LEASE_SECONDS, MAX_CLOCK_SKEW

S = WorksetState
LEASE = 60.0  # seconds; short leases make the arithmetic in fencing tests readable


def register(store: Store, workset_id: str = "ws-1", **kw: Any) -> str:
    kw.setdefault("bucket", "bkt")
    kw.setdefault("prefix", f"incoming/{workset_id}/")
    assert store.register_workset(workset_id, **kw) is True
    return workset_id


def fingerprint(ws: Workset | None) -> dict[str, Any]:
    """Everything a failed write must leave untouched."""
    assert ws is not None
    return ws.model_dump(exclude={"recent_events"})


def past_expiry(clock: ManualClock, lease: Lease, extra: float = 1.0) -> None:
    """Move the clock to just after the lease may be taken by someone else."""
    clock.set(lease.expires_at + timedelta(seconds=MAX_CLOCK_SKEW + extra))


# -- registering and reading -------------------------------------------------------------------

def test_register_then_get_returns_the_record(store: Store, clock: ManualClock) -> None:
    register(store, "ws-1", bucket="my-bucket", prefix="in/ws-1/", priority="urgent",
             metadata={"work": {"clone_args": ["-d", "x"]}, "s3_uri": "s3://my-bucket/in/ws-1/"},
             customer_id="acme")
    ws = store.get_workset("ws-1")
    assert ws is not None
    assert (ws.workset_id, ws.bucket, ws.prefix) == ("ws-1", "my-bucket", "in/ws-1/")
    assert ws.state is S.READY and ws.priority is Priority.URGENT
    assert ws.customer_id == "acme"
    assert ws.metadata["work"]["clone_args"] == ["-d", "x"]
    assert ws.created_at == clock.now() == ws.updated_at == ws.state_changed_at
    assert ws.lock_owner is None and ws.lock_expires_at is None and ws.fence == 0
    assert [(e.from_state, e.to_state) for e in ws.recent_events] == [(None, S.READY)]


def test_get_unknown_workset_is_none(store: Store) -> None:
    assert store.get_workset("nope") is None


def test_register_twice_returns_false_and_changes_nothing(store: Store, clock: ManualClock) -> None:
    register(store, "ws-1", bucket="first", priority="low", metadata={"v": 1})
    before = store.get_workset("ws-1")
    clock.advance(10)
    assert store.register_workset("ws-1", "second", "other/", priority="urgent",
                                  metadata={"v": 2}, customer_id="x") is False
    after = store.get_workset("ws-1")
    assert fingerprint(after) == fingerprint(before)
    assert len(store.events("ws-1")) == 1


def test_register_with_defaults(store: Store) -> None:
    assert store.register_workset("ws-d", "bkt", "p/ws-d/") is True
    ws = store.get_workset("ws-d")
    assert ws is not None and ws.priority is Priority.NORMAL and ws.metadata == {}
    assert ws.customer_id is None


@pytest.mark.parametrize("workset_id", [
    "with space",
    "ünïcødé-ß-日本語-🧬",
    "brackets [x] (y) {z} <w>",
    "esc\x1b[31mred\x1b[0m",
    "[@click=app.quit]x",
    "[bold]markup[/bold]",
    "quote'double\"back\\slash",
    "tab\tand%2Fpercent",
], ids=["space", "unicode", "brackets", "ansi-escape", "click-markup", "rich-markup", "quotes",
        "tab-percent"])
def test_workset_ids_round_trip_exactly(store: Store, workset_id: str) -> None:
    register(store, workset_id)
    ws = store.get_workset(workset_id)
    assert ws is not None and ws.workset_id == workset_id
    assert [w.workset_id for w in store.list_worksets().items] == [workset_id]
    lease = store.acquire_lock(workset_id, "engine-1")
    assert lease is not None and lease.workset_id == workset_id
    store.update_state(workset_id, "in_progress", "start", "engine-1", lease=lease)
    assert [e.workset_id for e in store.events(workset_id)] == [workset_id] * 3
    assert store.expired_leases(lease.expires_at + timedelta(hours=1))[0].workset_id == workset_id


@pytest.mark.parametrize("as_enum", [True, False], ids=["enum", "string"])
def test_states_and_priorities_accept_enum_or_string(store: Store, as_enum: bool) -> None:
    def st(s: S) -> S | str:
        return s if as_enum else s.value

    def pr(p: Priority) -> Priority | str:
        return p if as_enum else p.value

    register(store, "ws-1", priority=pr(Priority.URGENT))
    register(store, "ws-2", priority=pr(Priority.LOW), state=st(S.COMPLETE))
    assert store.get_workset("ws-1").priority is Priority.URGENT  # type: ignore[union-attr]
    assert store.get_workset("ws-2").state is S.COMPLETE  # type: ignore[union-attr]
    lease = store.acquire_lock("ws-1", "e1")
    assert lease is not None
    ws = store.update_state("ws-1", st(S.IN_PROGRESS), "go", "e1", lease=lease,
                            expected_state=st(S.LOCKED))
    assert ws.state is S.IN_PROGRESS
    assert [w.workset_id for w in store.list_worksets(state=st(S.IN_PROGRESS)).items] == ["ws-1"]
    assert [w.workset_id for w in store.list_worksets(priority=pr(Priority.LOW)).items] == ["ws-2"]
    assert store.set_priority("ws-2", pr(Priority.NORMAL), "op").priority is Priority.NORMAL


def test_unknown_state_or_priority_is_rejected(store: Store) -> None:
    with pytest.raises(ValueError, match="priority"):
        store.register_workset("ws-x", "b", "p/", priority="asap")
    assert store.get_workset("ws-x") is None
    register(store, "ws-1")
    with pytest.raises(ValueError, match="state"):
        store.update_state("ws-1", "finished", "?", "op")
    assert store.get_workset("ws-1").state is S.READY  # type: ignore[union-attr]


def test_register_in_terminal_state_with_sentinel_time(store: Store, clock: ManualClock) -> None:
    sentinel_at = clock.now() - timedelta(days=3)
    register(store, "done", state="complete", state_at=sentinel_at, actor="s3-import",
             reason="daylily.complete found")
    ws = store.get_workset("done")
    assert ws is not None and ws.state is S.COMPLETE
    assert ws.state_changed_at == sentinel_at
    [event] = store.events("done")
    assert (event.from_state, event.to_state, event.actor, event.reason) == (
        None, S.COMPLETE, "s3-import", "daylily.complete found")
    assert store.acquire_lock("done", "e1") is None


def test_register_with_mutable_fields(store: Store) -> None:
    estimate = {"samples": 4, "vcpus": 64, "memory_gb": 256.0, "storage_gb": 500.0,
                "vcpu_hours": 12.5, "cost_usd": 3.2, "duration_hours": 2.0}
    findings = [{"code": "WS-DAT-003", "severity": "warning", "message": "odd", "file": "x.tsv",
                 "line": 3, "column": None, "remediation": "fix it"}]
    register(store, "ws-1", estimate=estimate, findings=findings, max_retries=2,
             schedule_reason="waiting")
    ws = store.get_workset("ws-1")
    assert ws is not None
    assert ws.estimate == estimate and ws.findings == findings
    assert ws.max_retries == 2 and ws.schedule_reason == "waiting"


def test_register_rejects_fields_the_store_owns(store: Store) -> None:
    with pytest.raises(ValueError, match="fence"):
        store.register_workset("ws-1", "b", "p/", fence=7)
    assert store.get_workset("ws-1") is None


# -- listing -----------------------------------------------------------------------------------

def test_list_orders_by_priority_then_age_then_id(store: Store, clock: ManualClock) -> None:
    register(store, "n-old", priority="normal")
    clock.advance(1)
    register(store, "u-new", priority="urgent")
    register(store, "l-any", priority="low")
    register(store, "n-b", priority="normal")
    register(store, "n-a", priority="normal")
    clock.advance(1)
    register(store, "u-newest", priority="urgent")
    ids = [w.workset_id for w in store.list_worksets().items]
    assert ids == ["u-new", "u-newest", "n-old", "n-a", "n-b", "l-any"]


def _page_through(store: Store, limit: int, **filters: Any) -> list[str]:
    seen: list[str] = []
    cursor = None
    for _ in range(100):
        page = store.list_worksets(limit=limit, cursor=cursor, **filters)
        assert len(page.items) <= limit
        seen.extend(w.workset_id for w in page.items)
        cursor = page.next_cursor
        if not cursor:
            return seen
    raise AssertionError("pagination did not end")


def test_pagination_returns_every_item_exactly_once(store: Store, clock: ManualClock) -> None:
    prios = ["urgent", "normal", "low"]
    for i in range(23):
        register(store, f"ws-{i:02d}", priority=prios[i % 3],
                 customer_id="acme" if i % 2 else "globex")
        if i % 4 == 0:
            clock.advance(1)
    everything = [w.workset_id for w in store.list_worksets(limit=500).items]
    assert sorted(everything) == [f"ws-{i:02d}" for i in range(23)]
    for limit in (1, 5, 7, 23, 50):
        assert _page_through(store, limit) == everything
    acme = [w for w in everything if int(w[3:]) % 2]
    assert _page_through(store, 4, customer_id="acme") == acme
    urgent = [w for w in everything if int(w[3:]) % 3 == 0]
    assert _page_through(store, 3, priority="urgent") == urgent
    assert [w.workset_id for w in store.iter_worksets(page_size=6)] == everything


def test_list_filters_combine(store: Store) -> None:
    register(store, "a", priority="urgent", customer_id="acme")
    register(store, "b", priority="normal", customer_id="acme")
    register(store, "c", priority="urgent", customer_id="globex")
    register(store, "d", priority="urgent", customer_id="acme", state="ignored")
    page = store.list_worksets(state="ready", priority="urgent", customer_id="acme")
    assert [w.workset_id for w in page.items] == ["a"]
    assert page.next_cursor is None
    assert store.list_worksets(state="failed").items == []


def test_queue_stats_counts_per_state_and_priority(store: Store) -> None:
    register(store, "u1", priority="urgent")
    register(store, "u2", priority="urgent")
    register(store, "n1")
    register(store, "l1", priority="low", state="failed")
    register(store, "c1", state="complete")
    lease = store.acquire_lock("u2", "e1")
    assert lease is not None
    stats = store.queue_stats()
    assert stats.counts["ready"]["urgent"] == 1
    assert stats.counts["ready"]["normal"] == 1
    assert stats.counts["locked"]["urgent"] == 1
    assert stats.counts["failed"]["low"] == 1
    assert stats.counts["complete"]["normal"] == 1
    assert stats.total() == 5
    assert stats.total("ready") == 2 and stats.total(S.LOCKED) == 1
    assert stats.total("in_progress") == 0


def test_queue_stats_on_an_empty_store(store: Store) -> None:
    assert store.queue_stats().total() == 0


def test_worksets_changed_since_returns_only_recent_changes(store: Store,
                                                            clock: ManualClock) -> None:
    register(store, "old")
    register(store, "busy")
    clock.advance(60)
    changed, watermark = store.worksets_changed_since(None)
    assert {w.workset_id for w in changed} == {"old", "busy"}
    # The watermark trails now a little, so a write committed late is not skipped.
    assert watermark <= clock.now()
    clock.advance(5)
    store.update_fields("busy", schedule_reason="waiting for capacity")
    changed, watermark2 = store.worksets_changed_since(watermark)
    assert [w.workset_id for w in changed] == ["busy"]
    assert changed[0].schedule_reason == "waiting for capacity"
    assert watermark2 > watermark
    clock.advance(60)
    _, watermark3 = store.worksets_changed_since(watermark2)
    clock.advance(60)
    assert store.worksets_changed_since(watermark3)[0] == []


# -- updates -----------------------------------------------------------------------------------

def test_update_fields_changes_fields_without_an_event(store: Store, clock: ManualClock) -> None:
    register(store, "ws-1")
    clock.advance(5)
    steps = [StepRecord(name="stage", status="succeeded", started_at=clock.now(), exit_code=0)]
    ws = store.update_fields("ws-1", cluster_name="c1", steps=steps, log_tail="ok",
                             metadata={"k": "v"}, s3_missing=True)
    assert ws.updated_at == clock.now()
    stored = store.get_workset("ws-1")
    assert stored is not None
    assert stored.cluster_name == "c1" and stored.log_tail == "ok" and stored.s3_missing
    assert stored.steps[0].name == "stage" and stored.steps[0].exit_code == 0
    assert stored.metadata == {"k": "v"}
    assert stored.state is S.READY
    assert len(store.events("ws-1")) == 1


def test_update_fields_conditions(store: Store, clock: ManualClock) -> None:
    register(store, "ws-1")
    with pytest.raises(StateConflict):
        store.update_fields("ws-1", expected_state="locked", log_tail="x")
    lease = store.acquire_lock("ws-1", "A", LEASE)
    assert lease is not None
    store.update_fields("ws-1", lease=lease, expected_state="locked", log_tail="mine")
    past_expiry(clock, lease)
    assert store.acquire_lock("ws-1", "B", LEASE) is not None
    before = store.get_workset("ws-1")
    with pytest.raises(LeaseLost):
        store.update_fields("ws-1", lease=lease, log_tail="stale")
    assert fingerprint(store.get_workset("ws-1")) == fingerprint(before)
    with pytest.raises(WorksetNotFound):
        store.update_fields("ghost", log_tail="x")
    with pytest.raises(ValueError):
        store.update_fields("ws-1", state="complete")


def test_a_lease_on_one_workset_never_writes_another(store: Store) -> None:
    register(store, "ws-1")
    register(store, "ws-2")
    lease = store.acquire_lock("ws-1", "A", LEASE)
    assert store.acquire_lock("ws-2", "A", LEASE) is not None  # same owner, same fence 1
    before = store.get_workset("ws-2")
    with pytest.raises(ValueError):
        store.update_fields("ws-2", lease=lease, log_tail="wrong workset")
    with pytest.raises(ValueError):
        store.update_state("ws-2", "in_progress", "wrong workset", "A", lease=lease)
    assert fingerprint(store.get_workset("ws-2")) == fingerprint(before)


def test_update_state_sets_fields_and_records_the_event(store: Store, clock: ManualClock) -> None:
    register(store, "ws-1")
    lease = store.acquire_lock("ws-1", "e1")
    assert lease is not None
    clock.advance(3)
    ws = store.update_state("ws-1", "in_progress", "pipeline started", "e1", lease=lease,
                            cluster_name="c1", attempts=1, pipeline_dir="/fsx/ws-1")
    assert ws.state is S.IN_PROGRESS and ws.state_changed_at == clock.now()
    assert (ws.cluster_name, ws.attempts, ws.pipeline_dir) == ("c1", 1, "/fsx/ws-1")
    assert ws.lock_owner == "e1" and ws.fence == lease.fence
    assert store.get_workset("ws-1") == ws
    last = store.events("ws-1")[-1]
    assert (last.from_state, last.to_state, last.actor, last.reason, last.at) == (
        S.LOCKED, S.IN_PROGRESS, "e1", "pipeline started", clock.now())


def test_update_state_on_unknown_workset(store: Store) -> None:
    with pytest.raises(WorksetNotFound) as err:
        store.update_state("ghost", "ignored", "?", "op")
    assert "ghost" in str(err.value)


def test_update_state_rejects_unknown_fields_and_changes_nothing(store: Store) -> None:
    register(store, "ws-1")
    before = store.get_workset("ws-1")
    with pytest.raises(ValueError, match="lock_owner"):
        store.update_state("ws-1", "ignored", "?", "op", lock_owner="me")
    assert fingerprint(store.get_workset("ws-1")) == fingerprint(before)


def test_expected_state_mismatch_is_a_conflict(store: Store) -> None:
    register(store, "ws-1")
    before = store.get_workset("ws-1")
    with pytest.raises(StateConflict) as err:
        store.update_state("ws-1", "ignored", "op says", "op", expected_state="error")
    assert err.value.actual is S.READY and err.value.expected is S.ERROR
    assert fingerprint(store.get_workset("ws-1")) == fingerprint(before)
    store.update_state("ws-1", "ignored", "op says", "op", expected_state="ready")
    assert store.get_workset("ws-1").state is S.IGNORED  # type: ignore[union-attr]


def test_set_priority_is_an_event_and_reorders(store: Store, clock: ManualClock) -> None:
    register(store, "a")
    register(store, "b")
    clock.advance(1)
    ws = store.set_priority("b", "urgent", "alice@host", "customer escalation")
    assert ws.priority is Priority.URGENT and ws.state is S.READY
    assert [w.workset_id for w in store.list_worksets().items] == ["b", "a"]
    last = store.events("b")[-1]
    assert (last.from_state, last.to_state, last.actor, last.reason) == (
        S.READY, S.READY, "alice@host", "customer escalation")
    assert store.queue_stats().counts["ready"]["urgent"] == 1
    with pytest.raises(WorksetNotFound):
        store.set_priority("ghost", "low", "op")


# -- the state machine -------------------------------------------------------------------------

def put_in_state(store: Store, workset_id: str, state: S) -> Lease | None:
    """Drive a fresh workset to ``state`` through legal transitions; the lease if one is held."""
    register(store, workset_id)
    if state is S.READY:
        return None
    if state is S.IGNORED:
        store.update_state(workset_id, S.IGNORED, "setup", "op")
        return None
    lease = store.acquire_lock(workset_id, "setup-engine")
    assert lease is not None
    if state is S.LOCKED:
        return lease
    store.update_state(workset_id, S.IN_PROGRESS, "setup", "setup-engine", lease=lease)
    if state is S.IN_PROGRESS:
        return lease
    if state is S.COMPLETE:
        store.update_state(workset_id, S.COMPLETE, "setup", "setup-engine", lease=lease)
        return None
    store.update_state(workset_id, S.ERROR, "setup", "setup-engine", lease=lease)
    if state is not S.ERROR:
        store.update_state(workset_id, state, "setup", "setup-engine")
    return None


LEGAL = sorted(((a, b) for a, targets in TRANSITIONS.items() for b in targets),
               key=lambda e: (e[0].value, e[1].value))
ILLEGAL = sorted(((a, b) for a in S for b in S if b not in TRANSITIONS[a]),
                 key=lambda e: (e[0].value, e[1].value))


@pytest.mark.parametrize(("src", "dst"), LEGAL, ids=[f"{a.value}->{b.value}" for a, b in LEGAL])
def test_every_legal_transition_works(store: Store, clock: ManualClock, src: S, dst: S) -> None:
    lease = put_in_state(store, "ws", src)
    assert store.get_workset("ws").state is src  # type: ignore[union-attr]
    clock.advance(1)
    if dst is S.LOCKED:
        # The only way into locked is a claim.
        new_lease = store.acquire_lock("ws", "e2")
        assert new_lease is not None
        ws = store.get_workset("ws")
        actor = "e2"
    else:
        ws = store.update_state("ws", dst, f"to {dst.value}", "actor-x", lease=lease,
                                expected_state=src)
        actor = "actor-x"
    assert ws is not None and ws.state is dst
    assert store.get_workset("ws").state is dst  # type: ignore[union-attr]
    last = store.events("ws")[-1]
    assert (last.from_state, last.to_state, last.actor, last.at) == (src, dst, actor, clock.now())
    if dst.holds_lease:
        assert ws.lock_owner is not None and ws.lock_expires_at is not None
    else:
        # Leaving locked/in_progress clears the lease.
        assert ws.lock_owner is None and ws.lock_expires_at is None


@pytest.mark.parametrize(("src", "dst"), ILLEGAL,
                         ids=[f"{a.value}->{b.value}" for a, b in ILLEGAL])
def test_illegal_transitions_raise_and_change_nothing(store: Store, src: S, dst: S) -> None:
    lease = put_in_state(store, "ws", src)
    before = store.get_workset("ws")
    n_events = len(store.events("ws"))
    with pytest.raises(IllegalTransition) as err:
        store.update_state("ws", dst, "nope", "op", lease=lease)
    assert src.value in str(err.value) and dst.value in str(err.value)
    assert (err.value.from_state, err.value.to_state) == (src, dst)
    assert fingerprint(store.get_workset("ws")) == fingerprint(before)
    assert len(store.events("ws")) == n_events


# -- claims and leases -------------------------------------------------------------------------

def test_acquire_lock_claims_a_ready_workset(store: Store, clock: ManualClock) -> None:
    register(store, "ws-1")
    lease = store.acquire_lock("ws-1", "engine-a", 120)
    assert lease is not None
    assert (lease.workset_id, lease.owner_id, lease.fence) == ("ws-1", "engine-a", 1)
    assert lease.expires_at == clock.now() + timedelta(seconds=120)
    ws = store.get_workset("ws-1")
    assert ws is not None and ws.state is S.LOCKED
    assert (ws.lock_owner, ws.lock_expires_at, ws.fence) == ("engine-a", lease.expires_at, 1)
    assert ws.lock_acquired_at == clock.now()
    last = store.events("ws-1")[-1]
    assert (last.from_state, last.to_state, last.actor) == (S.READY, S.LOCKED, "engine-a")


def test_acquire_lock_uses_the_default_lease(store: Store, clock: ManualClock) -> None:
    register(store, "ws-1")
    lease = store.acquire_lock("ws-1", "e")
    assert lease is not None
    assert lease.expires_at == clock.now() + timedelta(seconds=DEFAULT_LEASE_SECONDS)


def test_acquire_lock_refuses_held_missing_and_not_ready(store: Store) -> None:
    register(store, "ws-1")
    register(store, "done", state="complete")
    register(store, "bad", state="error")
    assert store.acquire_lock("ws-1", "A") is not None
    before = store.get_workset("ws-1")
    assert store.acquire_lock("ws-1", "B") is None
    assert fingerprint(store.get_workset("ws-1")) == fingerprint(before)
    assert store.acquire_lock("ghost", "B") is None
    assert store.acquire_lock("done", "B") is None
    assert store.acquire_lock("bad", "B") is None
    assert store.get_workset("ghost") is None


def test_renew_extends_expiry_and_keeps_the_fence(store: Store, clock: ManualClock) -> None:
    register(store, "ws-1")
    lease = store.acquire_lock("ws-1", "A", LEASE)
    assert lease is not None
    clock.advance(50)
    renewed = store.renew_lock(lease, 600)
    assert renewed.fence == lease.fence and renewed.owner_id == "A"
    assert renewed.expires_at == clock.now() + timedelta(seconds=600)
    assert store.get_workset("ws-1").lock_expires_at == renewed.expires_at  # type: ignore[union-attr]
    # The old lease object still carries the current fence: renewing with it is fine too.
    clock.advance(60 + MAX_CLOCK_SKEW + 1)
    assert store.acquire_lock("ws-1", "B") is None
    assert store.renew_lock(lease).fence == lease.fence


def test_renew_after_expiry_but_before_anyone_claims(store: Store, clock: ManualClock) -> None:
    register(store, "ws-1")
    lease = store.acquire_lock("ws-1", "A", LEASE)
    assert lease is not None
    past_expiry(clock, lease, extra=100)
    renewed = store.renew_lock(lease, LEASE)
    assert renewed.fence == lease.fence
    assert store.acquire_lock("ws-1", "B") is None


def test_release_returns_to_ready_and_the_next_claim_gets_a_higher_fence(
        store: Store, clock: ManualClock) -> None:
    register(store, "ws-1")
    lease = store.acquire_lock("ws-1", "A")
    assert lease is not None
    ws = store.release_lock(lease, "capacity changed")
    assert ws.state is S.READY and ws.lock_owner is None and ws.lock_expires_at is None
    last = store.events("ws-1")[-1]
    assert (last.from_state, last.to_state, last.actor, last.reason) == (
        S.LOCKED, S.READY, "A", "capacity changed")
    second = store.acquire_lock("ws-1", "B")
    assert second is not None and second.fence > lease.fence
    with pytest.raises(LeaseLost):
        store.release_lock(lease)


def test_release_from_in_progress(store: Store) -> None:
    register(store, "ws-1")
    lease = store.acquire_lock("ws-1", "A")
    assert lease is not None
    store.update_state("ws-1", "in_progress", "go", "A", lease=lease)
    assert store.release_lock(lease).state is S.READY


def test_lease_is_gone_once_the_holder_leaves_locked_states(store: Store) -> None:
    register(store, "ws-1")
    lease = store.acquire_lock("ws-1", "A")
    assert lease is not None
    store.update_state("ws-1", "in_progress", "go", "A", lease=lease)
    ws = store.update_state("ws-1", "complete", "done", "A", lease=lease)
    assert ws.lock_owner is None and ws.lock_expires_at is None
    with pytest.raises(LeaseLost):
        store.renew_lock(lease)
    with pytest.raises(LeaseLost):
        store.release_lock(lease)
    assert store.get_workset("ws-1").state is S.COMPLETE  # type: ignore[union-attr]


def test_no_claim_before_expiry_plus_clock_skew(store: Store, clock: ManualClock) -> None:
    register(store, "ws-1")
    lease = store.acquire_lock("ws-1", "A", LEASE)
    assert lease is not None
    clock.set(lease.expires_at)
    assert store.acquire_lock("ws-1", "B") is None
    clock.set(lease.expires_at + timedelta(seconds=MAX_CLOCK_SKEW - 1))
    assert store.acquire_lock("ws-1", "B") is None
    assert store.get_workset("ws-1").lock_owner == "A"  # type: ignore[union-attr]
    clock.set(lease.expires_at + timedelta(seconds=MAX_CLOCK_SKEW + 1))
    taken = store.acquire_lock("ws-1", "B", LEASE)
    assert taken is not None and taken.owner_id == "B" and taken.fence == lease.fence + 1


def _assert_fenced_out(store: Store, stale: Lease) -> None:
    """Every write with ``stale`` raises LeaseLost and leaves the record as it was."""
    before = store.get_workset(stale.workset_id)
    n_events = len(store.events(stale.workset_id))
    with pytest.raises(LeaseLost) as err:
        store.renew_lock(stale)
    assert err.value.fence == stale.fence
    with pytest.raises(LeaseLost):
        store.release_lock(stale)
    with pytest.raises(LeaseLost):
        store.update_state(stale.workset_id, "error", "late failure", stale.owner_id, lease=stale,
                           error_code="WS-RES-001")
    with pytest.raises(LeaseLost):
        store.update_state(stale.workset_id, "complete", "late success", stale.owner_id,
                           lease=stale)
    with pytest.raises(LeaseLost):
        store.update_fields(stale.workset_id, lease=stale, log_tail="late")
    assert fingerprint(store.get_workset(stale.workset_id)) == fingerprint(before)
    assert len(store.events(stale.workset_id)) == n_events


@pytest.mark.parametrize("a_state", [S.LOCKED, S.IN_PROGRESS], ids=["locked", "in_progress"])
def test_fencing_after_expiry_and_reclaim(store: Store, clock: ManualClock, a_state: S) -> None:
    register(store, "ws-1")
    a = store.acquire_lock("ws-1", "A", LEASE)
    assert a is not None
    if a_state is S.IN_PROGRESS:
        store.update_state("ws-1", "in_progress", "go", "A", lease=a)
    past_expiry(clock, a)
    assert [w.workset_id for w in store.expired_leases()] == ["ws-1"]
    b = store.acquire_lock("ws-1", "B", LEASE)
    assert b is not None and b.fence > a.fence
    ws = store.get_workset("ws-1")
    assert ws is not None and ws.lock_owner == "B" and ws.fence == b.fence
    # Taking over an expired lease does not rewind a workset that was already running.
    assert ws.state is a_state
    _assert_fenced_out(store, a)
    # B is unaffected and carries on.
    assert store.renew_lock(b).fence == b.fence
    if a_state is S.LOCKED:
        store.update_state("ws-1", "in_progress", "go", "B", lease=b)
    assert store.update_state("ws-1", "complete", "done", "B", lease=b).state is S.COMPLETE


def test_force_release_fences_out_the_holder(store: Store, clock: ManualClock) -> None:
    register(store, "ws-1")
    a = store.acquire_lock("ws-1", "A")
    assert a is not None
    store.update_state("ws-1", "in_progress", "go", "A", lease=a)
    clock.advance(10)
    ws = store.force_release("ws-1", "alice@ops-host", "stuck after node failure")
    assert ws.state is S.READY and ws.fence > a.fence
    assert ws.lock_owner is None and ws.lock_expires_at is None
    last = store.events("ws-1")[-1]
    assert (last.from_state, last.to_state, last.actor, last.at) == (
        S.IN_PROGRESS, S.READY, "alice@ops-host", clock.now())
    assert "stuck after node failure" in last.reason
    _assert_fenced_out(store, a)
    b = store.acquire_lock("ws-1", "B")
    assert b is not None and b.fence > ws.fence
    _assert_fenced_out(store, a)


def test_force_release_records_each_detail_once(store: Store) -> None:
    register(store, "ws-1")
    assert store.acquire_lock("ws-1", "engine-a") is not None
    store.force_release("ws-1", "alice@ops-host", "node died")
    event = store.events("ws-1")[-1]
    assert event.reason == ("force release by alice@ops-host: node died "
                            "(was held by engine-a, fence 1)")
    # what the engine reads back to notify about it
    assert parse_force_release_reason(event) == ("node died", "engine-a")
    assert parse_force_release_reason(store.events("ws-1")[-2]) is None  # the claim


def test_force_release_with_the_fence_shown_releases(store: Store) -> None:
    register(store, "ws-1")
    a = store.acquire_lock("ws-1", "A")
    assert a is not None
    ws = store.force_release("ws-1", "op@host", "stuck", expected_fence=a.fence)
    assert ws.state is S.READY and ws.fence == a.fence + 1
    _assert_fenced_out(store, a)


def test_force_release_refuses_when_the_lease_changed_hands(store: Store,
                                                            clock: ManualClock) -> None:
    register(store, "ws-1")
    a = store.acquire_lock("ws-1", "A", LEASE)
    assert a is not None
    shown = store.get_workset("ws-1")
    assert shown is not None
    # Meanwhile A's lease expires and B takes over: the operator's dialog still shows A.
    clock.advance(LEASE + MAX_CLOCK_SKEW + 1)
    b = store.acquire_lock("ws-1", "B")
    assert b is not None and b.fence != shown.fence
    before = store.get_workset("ws-1")
    events_before = len(store.events("ws-1"))
    with pytest.raises(LockChanged) as caught:
        store.force_release("ws-1", "op@host", "stuck", expected_fence=shown.fence)
    assert isinstance(caught.value, StateConflict)
    message = str(caught.value)
    assert "changed meanwhile" in message
    assert f"now held by B (fence {b.fence})" in message
    assert store.get_workset("ws-1") == before
    assert len(store.events("ws-1")) == events_before
    assert store.renew_lock(b).fence == b.fence  # B still holds it


def test_force_release_refuses_when_someone_released_it_first(store: Store) -> None:
    register(store, "ws-1")
    a = store.acquire_lock("ws-1", "A")
    assert a is not None
    store.force_release("ws-1", "first@host", "stuck", expected_fence=a.fence)
    with pytest.raises(LockChanged, match="changed meanwhile: now ready, not held"):
        store.force_release("ws-1", "second@host", "stuck", expected_fence=a.fence)
    assert [e.actor for e in store.events("ws-1")].count("second@host") == 0


def test_force_release_of_a_locked_workset(store: Store) -> None:
    register(store, "ws-1")
    a = store.acquire_lock("ws-1", "A")
    assert a is not None
    ws = store.force_release("ws-1", "op", "testing")
    assert ws.state is S.READY
    _assert_fenced_out(store, a)


def test_force_release_of_a_ready_workset_is_illegal(store: Store) -> None:
    register(store, "ws-1")
    with pytest.raises(IllegalTransition):
        store.force_release("ws-1", "op", "why")
    with pytest.raises(WorksetNotFound):
        store.force_release("ghost", "op", "why")


def test_adopt_lock_bumps_the_fence_for_the_same_owner(store: Store, clock: ManualClock) -> None:
    register(store, "ws-1")
    old = store.acquire_lock("ws-1", "engine-a", LEASE)
    assert old is not None
    store.update_state("ws-1", "in_progress", "go", "engine-a", lease=old)
    clock.advance(10)
    new = store.adopt_lock(old, 600)
    assert new.owner_id == "engine-a" and new.fence > old.fence
    assert new.expires_at == clock.now() + timedelta(seconds=600)
    ws = store.get_workset("ws-1")
    assert ws is not None and ws.state is S.IN_PROGRESS and ws.fence == new.fence
    # The pre-restart process of the same owner is fenced out; the adopter carries on.
    _assert_fenced_out(store, old)
    assert store.renew_lock(new).fence == new.fence


def test_adopt_lock_after_expiry_when_nobody_claimed(store: Store, clock: ManualClock) -> None:
    register(store, "ws-1")
    old = store.acquire_lock("ws-1", "engine-a", LEASE)
    assert old is not None
    past_expiry(clock, old, extra=300)
    new = store.adopt_lock(old)
    assert new.fence > old.fence
    assert store.acquire_lock("ws-1", "engine-b") is None


def test_adopt_lock_fails_once_someone_else_claimed(store: Store, clock: ManualClock) -> None:
    register(store, "ws-1")
    old = store.acquire_lock("ws-1", "engine-a", LEASE)
    assert old is not None
    past_expiry(clock, old)
    b = store.acquire_lock("ws-1", "engine-b")
    assert b is not None
    with pytest.raises(LeaseLost):
        store.adopt_lock(old)
    # A different owner presenting the current fence cannot adopt either.
    impostor = Lease(workset_id="ws-1", owner_id="engine-c", fence=b.fence, expires_at=b.expires_at)
    with pytest.raises(LeaseLost):
        store.adopt_lock(impostor)
    assert store.get_workset("ws-1").lock_owner == "engine-b"  # type: ignore[union-attr]


def test_expired_leases_honours_clock_skew(store: Store, clock: ManualClock) -> None:
    for wid in ("short", "long", "idle"):
        register(store, wid)
    short = store.acquire_lock("short", "A", LEASE)
    long = store.acquire_lock("long", "A", 3600)
    assert short is not None and long is not None
    store.update_state("long", "in_progress", "go", "A", lease=long)
    assert store.expired_leases() == []
    at_expiry = short.expires_at
    assert store.expired_leases(at_expiry + timedelta(seconds=MAX_CLOCK_SKEW - 1)) == []
    expired = store.expired_leases(at_expiry + timedelta(seconds=MAX_CLOCK_SKEW + 1))
    assert [w.workset_id for w in expired] == ["short"]
    much_later = long.expires_at + timedelta(seconds=MAX_CLOCK_SKEW + 1)
    assert sorted(w.workset_id for w in store.expired_leases(much_later)) == ["long", "short"]
    # Without an argument it asks the store's clock.
    past_expiry(clock, short)
    assert [w.workset_id for w in store.expired_leases()] == ["short"]


# -- history -----------------------------------------------------------------------------------

def test_events_are_the_whole_history_in_order(store: Store, clock: ManualClock) -> None:
    register(store, "ws-1", actor="discovery", reason="found in s3")
    steps = [
        ("claim", None),
        ("in_progress", "pipeline started"),
        ("error", "exit 137"),
        ("retrying", "retry 1 of 3 in 5m"),
        ("ready", "retry due"),
        ("claim", None),
        ("in_progress", "pipeline started"),
        ("complete", "exported"),
    ]
    lease = None
    times = [clock.now()]
    for target, reason in steps:
        clock.advance(7)
        times.append(clock.now())
        if target == "claim":
            lease = store.acquire_lock("ws-1", "engine-a")
            assert lease is not None
        elif target in ("in_progress", "complete", "error"):
            store.update_state("ws-1", target, reason or "", "engine-a", lease=lease)
        else:
            store.update_state("ws-1", target, reason or "", "engine-a")
    events = store.events("ws-1")
    assert [(e.from_state, e.to_state) for e in events] == [
        (None, S.READY), (S.READY, S.LOCKED), (S.LOCKED, S.IN_PROGRESS),
        (S.IN_PROGRESS, S.ERROR), (S.ERROR, S.RETRYING), (S.RETRYING, S.READY),
        (S.READY, S.LOCKED), (S.LOCKED, S.IN_PROGRESS), (S.IN_PROGRESS, S.COMPLETE),
    ]
    assert [e.at for e in events] == times
    assert events[0].actor == "discovery" and events[0].reason == "found in s3"
    assert all(e.actor == "engine-a" for e in events[1:])
    assert events[3].reason == "exit 137"
    assert [e.seq for e in events] == sorted({e.seq for e in events})
    assert all(e.workset_id == "ws-1" for e in events)
    assert store.events("ws-1", limit=3) == events[:3]
    # The record keeps only the last few inline.
    recent = store.get_workset("ws-1").recent_events  # type: ignore[union-attr]
    assert recent == events[-RECENT_EVENTS_KEPT:]


def test_events_survive_many_cycles(store: Store) -> None:
    register(store, "ws-1")
    for _ in range(25):
        lease = store.acquire_lock("ws-1", "A")
        assert lease is not None
        store.release_lock(lease)
    events = store.events("ws-1")
    assert len(events) == 51
    assert [e.to_state for e in events[1:]] == [S.LOCKED, S.READY] * 25
    assert store.get_workset("ws-1").fence == 25  # type: ignore[union-attr]


def test_events_keep_untrusted_text_verbatim(store: Store) -> None:
    register(store, "ws-1")
    reason = "failed: \x1b[31m[bold]boom[/bold]\x1b[0m ünï 日本"
    store.update_state("ws-1", "error", reason, "[@click=app.quit]op")
    last = store.events("ws-1")[-1]
    assert last.reason == reason and last.actor == "[@click=app.quit]op"


def test_events_of_other_worksets_do_not_mix(store: Store) -> None:
    register(store, "a")
    register(store, "a b")
    register(store, "ab")
    store.update_state("a b", "ignored", "x", "op")
    assert len(store.events("a")) == 1 and len(store.events("ab")) == 1
    assert len(store.events("a b")) == 2


# -- monitors ----------------------------------------------------------------------------------

def test_monitor_heartbeats(store: Store, clock: ManualClock) -> None:
    started = clock.now()
    info = store.record_monitor_heartbeat("host-1-alice", "host-1", 4242, "0.1.0",
                                          role="engine", details={"jobs": 7}, started_at=started)
    assert (info.monitor_id, info.host, info.pid, info.version, info.role) == (
        "host-1-alice", "host-1", 4242, "0.1.0", "engine")
    assert info.started_at == started and info.last_seen == clock.now()
    assert info.details == {"jobs": 7}
    clock.advance(60)
    again = store.record_monitor_heartbeat("host-1-alice", "host-1", 4242, "0.1.0",
                                           details={"jobs": 8})
    assert again.started_at == started and again.last_seen == clock.now()
    assert again.details == {"jobs": 8}
    store.record_monitor_heartbeat("dash-2", "host-2", 99, "0.1.0", role="dashboard")
    monitors = {m.monitor_id: m for m in store.list_monitors()}
    assert set(monitors) == {"host-1-alice", "dash-2"}
    assert monitors["host-1-alice"].last_seen == clock.now()
    assert monitors["dash-2"].role == "dashboard"
    assert monitors["dash-2"].started_at == clock.now()
    store.remove_monitor("dash-2")
    assert [m.monitor_id for m in store.list_monitors()] == ["host-1-alice"]
    store.remove_monitor("never-seen")  # a goodbye from an unknown monitor is harmless
