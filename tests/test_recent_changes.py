"""The engine's recent-changes view (wsmon/engine/recent_changes.py): the poll, sweep, alerts and
metrics share one store read per freshness interval, and none of them misses a change."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any

import pytest

from wsmon.config.settings import Settings
from wsmon.core.clock import ManualClock
from wsmon.engine.recent_changes import RecentChanges
from wsmon.engine.service import Engine
from wsmon.engine.store import open_store
from wsmon.engine.store.base import Store
from wsmon.engine.store.dynamodb import DynamoDBStore

WINDOW = timedelta(minutes=10)
FRESHNESS = 1.0


class CountingStore:
    """The store, with its change reads and queue counts counted."""

    def __init__(self, store: Store, during_read: Any = None) -> None:
        self._store = store
        self.change_reads: list[datetime | None] = []
        self.stats_reads = 0
        self.stats_states: list[list[str] | None] = []
        self.during_read = during_read  # called after each change read, before it returns
        self._count_lock = threading.Lock()

    def worksets_changed_since(self, since):
        with self._count_lock:
            self.change_reads.append(since)
        answer = self._store.worksets_changed_since(since)
        if self.during_read is not None:
            self.during_read()
        return answer

    def queue_stats(self, states=None):
        with self._count_lock:
            self.stats_reads += 1
            self.stats_states.append(None if states is None else [str(s.value) for s in states])
        return self._store.queue_stats(states)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


@pytest.fixture
def store(tmp_path, clock):
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}", clock=clock)
    yield store
    store.close()


def register(store, *ids: str) -> None:
    for wid in ids:
        store.register_workset(wid, "b", f"p/{wid}/")


def ids(worksets) -> list[str]:
    return [ws.workset_id for ws in worksets]


def assert_same_as_store(view: RecentChanges, store: Store, since: datetime) -> None:
    from_view, _ = view.changed_since(since)
    from_store, _ = store.worksets_changed_since(since)
    assert from_view == from_store, since


def build_history(store, clock: ManualClock) -> datetime:
    """Worksets registered and changed at different times; returns when it began."""
    began = clock.now()
    register(store, "a", "b")
    clock.advance(30)
    register(store, "c")
    store.update_fields("a", schedule_reason="waiting: cluster full")
    clock.advance(30)
    store.set_priority("b", "urgent", actor="op")
    return began


def test_answers_equal_the_stores_for_any_since_inside_the_window(store, clock) -> None:
    began = build_history(store, clock)
    view = RecentChanges(store, window=WINDOW, freshness=FRESHNESS, clock=clock)
    view.changed_since(clock.now())  # the first read
    clock.advance(5)
    register(store, "d")
    store.update_fields("c", schedule_reason="waiting: no capacity")
    clock.advance(FRESHNESS)
    for since in (began, began + timedelta(seconds=30), began + timedelta(seconds=61),
                  clock.now() - timedelta(seconds=1), clock.now()):
        assert_same_as_store(view, store, since)
    found, _ = view.changed_since(began)
    assert ids(found) == ["a", "b", "c", "d"]  # oldest change first, one entry per workset
    assert found[2].schedule_reason == "waiting: no capacity"  # the newest version of "c"


def test_a_change_made_between_two_reads_reaches_the_next_caller(store, clock) -> None:
    register(store, "a")
    view = RecentChanges(store, window=WINDOW, freshness=FRESHNESS, clock=clock)
    _, watermark = view.changed_since(clock.now() - timedelta(minutes=1))
    clock.advance(0.2)
    register(store, "late")
    clock.advance(0.3)
    found, watermark = view.changed_since(watermark)  # still inside the freshness interval
    assert "late" not in ids(found)
    clock.advance(FRESHNESS)
    found, _ = view.changed_since(watermark)
    assert "late" in ids(found)


def test_a_change_committed_during_a_read_is_not_skipped(store, clock) -> None:
    """A write stamped at the read's instant that lands just after the read took its rows."""
    register(store, "a")
    counting = CountingStore(store)
    counting.during_read = lambda: (setattr(counting, "during_read", None),
                                    register(store, "racer"))
    view = RecentChanges(counting, window=WINDOW, freshness=FRESHNESS, clock=clock)
    found, watermark = view.changed_since(clock.now() - timedelta(minutes=1))
    assert ids(found) == ["a"]
    clock.advance(FRESHNESS)
    found, _ = view.changed_since(watermark)
    assert "racer" in ids(found)


def test_one_store_read_when_several_consumers_ask_at_once(store, clock) -> None:
    register(store, "a", "b")
    counting = CountingStore(store)
    view = RecentChanges(counting, window=WINDOW, freshness=FRESHNESS, clock=clock)
    since = clock.now() - timedelta(minutes=1)
    askers = 6
    start = threading.Barrier(askers)
    answers: list[list[str]] = []

    def ask() -> None:
        start.wait()
        found, _ = view.changed_since(since)
        view.queue_stats()
        answers.append(ids(found))

    threads = [threading.Thread(target=ask) for _ in range(askers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == [["a", "b"]] * askers
    assert len(counting.change_reads) == 1 and counting.stats_reads == 1
    clock.advance(FRESHNESS)  # the next tick reads once more, from the view's own watermark
    view.changed_since(since)
    view.queue_stats()
    assert len(counting.change_reads) == 2 and counting.stats_reads == 2
    assert counting.change_reads[1] > since


def test_the_engines_jobs_share_one_read_per_tick(tmp_path, store, clock) -> None:
    settings = Settings(
        monitor_id="engine-t", state_dir=tmp_path / "state",
        store={"url": f"sqlite:///{tmp_path / 'state.db'}"}, metrics={"sink": "none"},
        notify={"slack_webhook_url": "http://127.0.0.1:9/services/T000/B000/XXXXXXXX",
                "allow_inline_secrets": True})
    register(store, "a")
    counting = CountingStore(store)
    engine = Engine(settings, store=counting, clock=clock)  # type: ignore[arg-type]
    try:
        engine.flush_metrics()  # this minute's sample: queue depth, completions
        engine.evaluate_alerts()  # error rate over its window, queue depth
        engine.notice_force_releases()  # the sweep's look for operators' releases
        assert len(counting.change_reads) == 1
        assert counting.stats_states == [None]  # the count of every state answers the alerts too
        clock.advance(3)
        engine.evaluate_alerts()  # on its own, the alerts count the ready queue only
        assert counting.stats_states == [None, ["ready"]]
    finally:
        engine.stop(0)


def test_a_since_older_than_the_view_goes_to_the_store(store, clock) -> None:
    began = build_history(store, clock)
    clock.advance(minutes=20)
    register(store, "new")
    counting = CountingStore(store)
    view = RecentChanges(counting, window=WINDOW, freshness=FRESHNESS, clock=clock)
    found, watermark = view.changed_since(clock.now() - timedelta(minutes=1))
    assert ids(found) == ["new"] and len(counting.change_reads) == 1
    found, fallback_watermark = view.changed_since(began)  # 21 minutes back: the view holds 10
    assert ids(found) == ["a", "c", "b", "new"] and counting.change_reads[-1] == began
    assert fallback_watermark >= watermark
    found, _ = view.changed_since(None)  # everything, as the store gives it
    assert ids(found) == ["a", "c", "b", "new"]


def test_worksets_older_than_the_window_are_let_go(store, clock) -> None:
    register(store, "old")
    view = RecentChanges(store, window=timedelta(minutes=1), freshness=FRESHNESS, clock=clock)
    found, _ = view.changed_since(clock.now() - timedelta(seconds=30))
    assert ids(found) == ["old"] and view.held == 1
    clock.advance(45)
    register(store, "new")
    assert ids(view.changed_since(clock.now() - timedelta(seconds=50))[0]) == ["old", "new"]
    clock.advance(30)  # "old" changed 75 s ago, "new" 30 s ago
    found, _ = view.changed_since(clock.now() - timedelta(seconds=50))
    assert ids(found) == ["new"] and view.held == 1
    assert_same_as_store(view, store, clock.now() - timedelta(seconds=59))


def test_a_failed_read_is_retried_by_the_next_caller(store, clock) -> None:
    register(store, "a")
    counting = CountingStore(store)
    view = RecentChanges(counting, window=WINDOW, freshness=FRESHNESS, clock=clock)
    view.changed_since(clock.now())
    clock.advance(FRESHNESS)
    register(store, "b")

    def broken() -> None:
        raise ConnectionError("store unreachable")

    counting.during_read = broken
    with pytest.raises(ConnectionError):
        view.changed_since(clock.now() - timedelta(minutes=1))
    counting.during_read = None
    found, _ = view.changed_since(clock.now() - timedelta(minutes=1))  # no wait for freshness
    assert ids(found) == ["a", "b"]


def test_dynamodb_answers_equal_the_stores(moto_endpoint: str, unique_name: str) -> None:
    clock = ManualClock(datetime.now().astimezone())
    store = DynamoDBStore.from_url(
        f"dynamodb://{unique_name}?region=us-west-2&endpoint_url={moto_endpoint}", clock=clock)
    store.init_schema()
    began = build_history(store, clock)
    view = RecentChanges(store, window=WINDOW, freshness=FRESHNESS, clock=clock)
    _, watermark = view.changed_since(began)
    clock.advance(3)
    register(store, "d")
    store.update_fields("a", schedule_reason="waiting: no capacity")
    clock.advance(FRESHNESS)
    found, _ = view.changed_since(watermark)
    # "b" changed inside the store's watermark lag, so it comes again
    assert ids(found) == ["b", "a", "d"] and found[1].schedule_reason == "waiting: no capacity"
    for since in (began, began + timedelta(seconds=45), clock.now() - timedelta(seconds=2)):
        assert_same_as_store(view, store, since)
