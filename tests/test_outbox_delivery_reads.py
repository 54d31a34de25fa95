"""Recording a delivery on DynamoDB writes from the copy the deliverer read (no second GetItem of
the entry), and a stale copy still loses no change made in between."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from wsmon.core.clock import ManualClock
from wsmon.core.models import OutboxEntry
from wsmon.engine.store.dynamodb import DynamoDBStore


def _store(endpoint: str, table: str) -> tuple[DynamoDBStore, ManualClock]:
    clock = ManualClock(datetime.now().astimezone())
    store = DynamoDBStore.from_url(f"dynamodb://{table}?region=us-west-2&endpoint_url={endpoint}",
                                   clock=clock)
    store.init_schema()
    return store, clock


def _entry(clock: ManualClock, entry_id: str) -> OutboxEntry:
    return OutboxEntry(entry_id=entry_id, channel="sns", dedup_id=f"d-{entry_id}",
                       coalesce_key=f"c-{entry_id}", event_type="completed", payload={"text": "x"},
                       created_at=clock.now(), next_attempt_at=clock.now())


@contextmanager
def _counting_gets(store: DynamoDBStore) -> Iterator[list[str]]:
    """GetItem requests that reach the wire while inside, whoever in the store asks."""
    gets: list[str] = []
    events = store._db.raw.meta.events  # the client may be shared: unregister after

    def count(model, **_) -> None:
        gets.append(model.name)

    events.register("before-call.dynamodb.GetItem", count, unique_id="test-count-gets")
    try:
        yield gets
    finally:
        events.unregister("before-call.dynamodb.GetItem", unique_id="test-count-gets")


def test_a_delivery_is_recorded_from_the_entry_as_read(moto_endpoint: str, unique_name: str) -> None:
    store, clock = _store(moto_endpoint, unique_name)
    assert store.enqueue_notification(_entry(clock, "e1"))
    (due,) = store.due_notifications(clock.now(), channel="sns")
    clock.advance(1)
    with _counting_gets(store) as gets:
        store.mark_notification_delivered(due.entry_id, clock.now(), as_read=due)
    assert gets == []
    (done,) = store.list_notifications(status="delivered")
    assert done.entry_id == "e1" and done.delivered_at == clock.now()
    assert store.due_notifications(clock.now() + timedelta(minutes=5), channel="sns") == []


def test_a_stale_copy_is_read_again_and_keeps_the_change_made_since(moto_endpoint: str,
                                                                    unique_name: str) -> None:
    store, clock = _store(moto_endpoint, unique_name)
    assert store.enqueue_notification(_entry(clock, "e1"))
    (stale,) = store.due_notifications(clock.now(), channel="sns")
    store.mark_notification_failed("e1", "HTTP 503", clock.now())  # another engine's attempt
    with _counting_gets(store) as gets:
        store.mark_notification_delivered("e1", clock.now(), as_read=stale)
    assert len(gets) == 1  # the stale copy's write was refused; the entry was read once
    (done,) = store.list_notifications(status="delivered")
    assert done.attempts == 2  # the other engine's failed attempt counts, then this delivery
