"""The store contract, part 4: the audit trail of operator actions. Recording, the newest-first
time-range listing (per workset too), pruning by time, and the move of entries an older wsmon kept
in the key/value namespace. Runs against every backend (see conftest.py)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from wsmon.core.clock import ManualClock
from wsmon.core.models import OperatorAction
from wsmon.engine.store import Store

DAY = timedelta(days=1)


def action(action_id: str, at: datetime, *, target: str = "ws-1", action: str = "retry",
           outcome: str = "done", reason: str = "") -> OperatorAction:
    return OperatorAction(action_id=action_id, at=at, actor="op@host", action=action,
                          target=target, reason=reason, outcome=outcome)


def test_operator_actions_list_newest_first_whole_and_limited(store: Store,
                                                              clock: ManualClock) -> None:
    t0 = clock.now()
    # recorded out of order, and two in the same instant: time orders them, then action_id
    store.record_operator_action(action("b", t0 + timedelta(minutes=2), action="stop",
                                        reason="wrong reference; see ticket 1234"))
    store.record_operator_action(action("a", t0))
    store.record_operator_action(action("c2", t0 + timedelta(minutes=5), outcome="refused"))
    store.record_operator_action(action("c1", t0 + timedelta(minutes=5), target="alert-9",
                                        action="resolve"))

    listed = store.list_operator_actions()
    assert [e.action_id for e in listed] == ["c2", "c1", "b", "a"]
    assert listed[0].outcome == "refused"
    assert listed[2] == action("b", t0 + timedelta(minutes=2), action="stop",
                               reason="wrong reference; see ticket 1234")
    assert [e.action_id for e in store.list_operator_actions(limit=2)] == ["c2", "c1"]
    assert store.list_operator_actions(limit=0) == []
    with pytest.raises(ValueError):
        store.list_operator_actions(limit=-1)


def test_operator_actions_time_range_is_since_inclusive_until_exclusive(
        store: Store, clock: ManualClock) -> None:
    t0 = clock.now()
    for i in range(6):
        store.record_operator_action(action(f"a{i}", t0 + i * DAY))
    ids = lambda **kw: [e.action_id for e in store.list_operator_actions(**kw)]
    assert ids(since=t0 + 2 * DAY) == ["a5", "a4", "a3", "a2"]
    assert ids(until=t0 + 2 * DAY) == ["a1", "a0"]
    assert ids(since=t0 + DAY, until=t0 + 4 * DAY) == ["a3", "a2", "a1"]
    assert ids(since=t0 + DAY, until=t0 + 4 * DAY, limit=1) == ["a3"]
    assert ids(since=t0 + 10 * DAY) == []


def test_operator_actions_of_one_workset(store: Store, clock: ManualClock) -> None:
    t0 = clock.now()
    store.record_operator_action(action("1", t0, target="ws-1", outcome="refused"))
    store.record_operator_action(action("2", t0 + timedelta(seconds=1), target="ws-10"))
    store.record_operator_action(action("3", t0 + timedelta(seconds=2), target="ws-1",
                                        action="ignore"))
    store.record_operator_action(action("4", t0 + timedelta(seconds=3), target="ws 1 [x]"))
    assert [e.action_id for e in store.list_operator_actions(workset_id="ws-1")] == ["3", "1"]
    assert [e.action_id for e in store.list_operator_actions(workset_id="ws 1 [x]")] == ["4"]
    assert [e.action_id for e in store.list_operator_actions(
        workset_id="ws-1", since=t0 + timedelta(seconds=1))] == ["3"]
    assert store.list_operator_actions(workset_id="ws-2") == []


def test_prune_operator_actions_removes_only_older_entries(store: Store,
                                                           clock: ManualClock) -> None:
    t0 = clock.now()
    for i in range(5):
        store.record_operator_action(action(f"a{i}", t0 + i * DAY, target=f"ws-{i % 2}"))
    assert store.prune_operator_actions(t0 + 3 * DAY) == 3
    assert [e.action_id for e in store.list_operator_actions()] == ["a4", "a3"]
    # the per-workset view loses them too
    assert [e.action_id for e in store.list_operator_actions(workset_id="ws-0")] == ["a4"]
    assert [e.action_id for e in store.list_operator_actions(workset_id="ws-1")] == ["a3"]
    assert store.prune_operator_actions(t0 + 3 * DAY) == 0


def test_operator_action_needs_an_id(store: Store, clock: ManualClock) -> None:
    with pytest.raises(ValueError):
        store.record_operator_action(action(" ", clock.now()))
    assert store.list_operator_actions() == []


def test_init_schema_moves_the_key_value_trail_of_an_older_wsmon(store: Store,
                                                                 clock: ManualClock) -> None:
    t0 = clock.now()
    older = {"at": t0.isoformat(), "actor": "op@host", "action": "ignore", "target": "ws-1",
             "reason": "duplicate upload", "outcome": "done", "detail": ""}
    store.kv_put("operator-actions", "20260101T000000.000000Z-1-abc", older)
    store.kv_put("operator-actions", "not-an-entry", "garbage")
    lines = store.init_schema()
    assert any("moved 1 operator action" in line for line in lines)
    [moved] = store.list_operator_actions()
    assert (moved.action, moved.target, moved.reason, moved.at) == (
        "ignore", "ws-1", "duplicate upload", t0)
    assert store.kv_get_all("operator-actions") == {"not-an-entry": "garbage"}
    assert not any("moved" in line for line in store.init_schema())  # only once
