"""The store contract, part 4: the cases where the backends used to disagree.

Each case here was answered differently by SQLite and DynamoDB before the rules moved into
``wsmon/engine/store/rules.py``: an empty workset id, a bad page cursor, a field value the model
rejects, limits, and acknowledging or resolving an alert that someone else changed between the
read and the write, the same outbox entry enqueued twice, and a monitor detail JSON has no type
for. Runs against every backend (see conftest.py).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from wsmon.core.clock import ManualClock
from wsmon.core.models import Alert, AlertState, WorksetState
from wsmon.engine.store import (
    ActiveAlertExists,
    AlertChanged,
    InvalidCursor,
    Store,
    StoreError,
)

from .test_store_contract import fingerprint, register
from .test_store_contract_state import make_alert, make_entry

S = WorksetState


# -- registering -------------------------------------------------------------------------------

def test_an_empty_workset_id_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="workset_id must be a non-empty string"):
        store.register_workset("", "bkt", "incoming/")
    assert store.list_worksets().items == []
    assert store.queue_stats().total() == 0


@pytest.mark.parametrize("state", ["locked", "in_progress"])
def test_registering_in_a_lease_state_is_refused(store: Store, state: str) -> None:
    with pytest.raises(StoreError, match="only becomes locked or in_progress through a claim"):
        store.register_workset("ws-1", "bkt", "incoming/ws-1/", state=state)
    assert store.get_workset("ws-1") is None


# -- bad input to a write changes nothing ------------------------------------------------------

def test_a_field_value_the_model_rejects_changes_nothing(store: Store) -> None:
    register(store, "ws-1")
    before = store.get_workset("ws-1")
    with pytest.raises(ValueError, match="attempts"):
        store.update_fields("ws-1", attempts="many")
    with pytest.raises(ValueError, match="attempts"):
        store.update_state("ws-1", "error", "boom", "engine-a", attempts="many")
    with pytest.raises(ValueError, match="steps"):
        store.update_fields("ws-1", steps=None)
    assert fingerprint(store.get_workset("ws-1")) == fingerprint(before)
    assert len(store.events("ws-1")) == 1
    # The record still reads back and still takes a good write.
    assert store.update_fields("ws-1", attempts=2).attempts == 2


def test_a_lease_must_be_positive(store: Store) -> None:
    register(store, "ws-1")
    with pytest.raises(ValueError, match="lease_seconds must be positive"):
        store.acquire_lock("ws-1", "engine-a", 0)
    assert store.get_workset("ws-1").state is S.READY  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="lease_seconds must be positive"):
        store.acquire_named_lease("poll", "engine-a", -1)
    assert store.get_named_lease("poll") is None


# -- pages and limits --------------------------------------------------------------------------

def _b64(data: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


@pytest.mark.parametrize("cursor", [
    "not-a-cursor!!",
    _b64([1, "2026-01-01T00:00:00.000000Z", "ws-1"]),
    _b64({"v": 99, "after": [1, "x", "ws-1"]}),
    _b64({"v": 1, "something": "else"}),
    _b64({"v": 1, "after": "ws-1"}),
    _b64({"v": 1, "pos": "ready", "done": []}),
], ids=["garbage", "json-list", "other-version", "unknown-shape", "bad-keyset", "bad-partitions"])
def test_a_bad_page_cursor_is_one_error_type(store: Store, cursor: str) -> None:
    register(store, "ws-1")
    with pytest.raises(InvalidCursor) as err:
        store.list_worksets(limit=1, cursor=cursor)
    # What callers catch either way: a store error an operator can read, and bad input.
    assert isinstance(err.value, StoreError) and isinstance(err.value, ValueError)
    assert str(err.value).startswith("invalid page cursor ")
    assert "start again without a cursor" in str(err.value)


def test_a_cursor_survives_only_its_own_listing_format(store: Store) -> None:
    for i in range(3):
        register(store, f"ws-{i}")
    first = store.list_worksets(limit=1)
    assert first.next_cursor is not None
    second = store.list_worksets(limit=1, cursor=first.next_cursor)
    assert [w.workset_id for w in second.items] == ["ws-1"]


def test_page_and_list_limits(store: Store) -> None:
    register(store, "ws-1")
    store.update_state("ws-1", "ignored", "x", "op")
    with pytest.raises(ValueError, match="limit must be at least 1"):
        store.list_worksets(limit=0)
    assert store.events("ws-1", limit=0) == []
    assert len(store.events("ws-1", limit=1)) == 1
    for call in (lambda: store.events("ws-1", limit=-1),
                 lambda: store.list_alerts(limit=-1),
                 lambda: store.list_notifications(limit=-1)):
        with pytest.raises(ValueError, match="limit must not be negative"):
            call()
    assert store.list_alerts(limit=0) == []


# -- alerts: typed conflicts -------------------------------------------------------------------

def test_a_stale_conditional_put_is_alert_changed(store: Store, clock: ManualClock) -> None:
    original = make_alert("a1", clock.now())
    store.put_alert(original)
    clock.advance(30)
    newer = original.model_copy(update={"value": 1.0, "updated_at": clock.now()})
    store.put_alert(newer, expected_updated_at=original.updated_at)
    late = original.model_copy(update={"value": 2.0, "updated_at": clock.now()})
    with pytest.raises(AlertChanged) as err:
        store.put_alert(late, expected_updated_at=original.updated_at)
    assert err.value.alert_id == "a1" and "changed meanwhile" in str(err.value)
    assert store.get_alert("a1") == newer
    # A conditional put of an alert that is not there is the same conflict, and creates nothing.
    ghost = make_alert("ghost", clock.now(), subject="ws-9")
    with pytest.raises(AlertChanged):
        store.put_alert(ghost, expected_updated_at=clock.now())
    assert store.get_alert("ghost") is None


def test_a_second_active_alert_for_one_key_is_refused(store: Store, clock: ManualClock) -> None:
    first = make_alert("a1", clock.now())
    store.put_alert(first)
    with pytest.raises(ActiveAlertExists) as err:
        store.put_alert(make_alert("a2", clock.now()))
    assert (err.value.rule, err.value.subject) == ("stale_lease", "ws-1")
    assert store.get_alert("a2") is None
    assert store.find_active_alert("stale_lease", "ws-1") == first
    clock.advance(1)
    store.resolve_alert("a1", "op")
    assert store.put_alert(make_alert("a2", clock.now())).alert_id == "a2"


def test_acknowledging_a_resolved_alert_is_refused(store: Store, clock: ManualClock) -> None:
    store.put_alert(make_alert("a1", clock.now()))
    clock.advance(5)
    resolved = store.resolve_alert("a1", "bob@host")
    clock.advance(5)
    with pytest.raises(StoreError, match="already resolved; nothing to acknowledge"):
        store.ack_alert("a1", "alice@host")
    # Resolving again changes nothing: the first resolver and time stay.
    assert store.resolve_alert("a1", "carol@host") == resolved
    assert store.get_alert("a1") == resolved


def _first_read_is_stale(store: Store, stale: Alert) -> list[str]:
    """The next ``get_alert`` returns ``stale``: what a writer saw just before someone else's
    write landed. Returns the ids read, in order."""
    real: Callable[[str], Alert | None] = store.get_alert
    reads: list[str] = []

    def get_alert(alert_id: str) -> Alert | None:
        reads.append(alert_id)
        return stale if len(reads) == 1 else real(alert_id)

    store.get_alert = get_alert  # type: ignore[method-assign]
    return reads


def test_ack_of_an_alert_changed_meanwhile_acks_the_current_one(store: Store,
                                                              clock: ManualClock) -> None:
    original = make_alert("a1", clock.now(), value=1.0)
    store.put_alert(original)
    clock.advance(10)
    # The engine's evaluation pass updates the alert after the operator's read.
    current = original.model_copy(update={"value": 7.0, "updated_at": clock.now()})
    store.put_alert(current, expected_updated_at=original.updated_at)
    reads = _first_read_is_stale(store, original)
    clock.advance(1)
    acked = store.ack_alert("a1", "alice@host", note="on it")
    assert reads == ["a1", "a1"]  # the stale write was refused, the rule ran again
    assert acked.state is AlertState.ACKNOWLEDGED and acked.value == 7.0
    assert (acked.acknowledged_by, acked.ack_note, acked.acknowledged_at) == (
        "alice@host", "on it", clock.now())
    del store.get_alert  # type: ignore[attr-defined]
    assert store.get_alert("a1") == acked


def test_ack_of_an_alert_resolved_meanwhile_is_refused(store: Store, clock: ManualClock) -> None:
    original = make_alert("a1", clock.now())
    store.put_alert(original)
    clock.advance(10)
    resolved = store.resolve_alert("a1", "bob@host")
    _first_read_is_stale(store, original)
    with pytest.raises(StoreError, match="already resolved"):
        store.ack_alert("a1", "alice@host")
    del store.get_alert  # type: ignore[attr-defined]
    assert store.get_alert("a1") == resolved


def test_resolve_of_an_alert_resolved_meanwhile_keeps_the_first(store: Store,
                                                               clock: ManualClock) -> None:
    original = make_alert("a1", clock.now())
    store.put_alert(original)
    clock.advance(10)
    first = store.resolve_alert("a1", "bob@host", "fixed")
    clock.advance(10)
    _first_read_is_stale(store, original)
    assert store.resolve_alert("a1", "carol@host") == first
    del store.get_alert  # type: ignore[attr-defined]
    assert store.get_alert("a1") == first
    assert first.resolved_by == "bob@host"


# -- silences ----------------------------------------------------------------------------------

def test_a_silence_must_end_after_it_starts(store: Store, clock: ManualClock) -> None:
    now = clock.now()
    with pytest.raises(ValueError, match="must end after it starts"):
        store.silence("op", now)
    with pytest.raises(ValueError, match="must end after it starts"):
        store.silence("op", now + timedelta(hours=1), starts_at=now + timedelta(hours=2))
    assert store.list_silences() == []


# -- outbox and monitors -----------------------------------------------------------------------

def test_enqueueing_an_entry_id_twice_is_refused_quietly(store: Store, clock: ManualClock) -> None:
    now = clock.now()
    assert store.enqueue_notification(make_entry("e1", now, dedup_id="evt-1")) is True
    # A second entry under the same id (another event) is not added, and leaves no trace: its
    # dedup id is still free for the entry that really carries it.
    assert store.enqueue_notification(make_entry("e1", now, dedup_id="evt-2",
                                                 coalesce_key="other")) is False
    assert [(e.entry_id, e.dedup_id) for e in store.list_notifications()] == [("e1", "evt-1")]
    assert store.enqueue_notification(make_entry("e2", now, dedup_id="evt-2",
                                                 coalesce_key="other")) is True


def test_a_monitor_detail_without_a_json_type_is_kept_as_text(store: Store) -> None:
    since = datetime(2026, 1, 1, tzinfo=timezone.utc)
    info = store.record_monitor_heartbeat("engine-1", "host-1", 42, "0.1.0",
                                          details={"since": since, "jobs": 3})
    assert info.details == {"since": str(since), "jobs": 3}
    assert store.list_monitors()[0].details == {"since": str(since), "jobs": 3}
