"""``queue_stats(states=...)`` counts only the states asked for, the same on every backend: the
alert rules read the ready queue without paying for the finished worksets."""

from __future__ import annotations

from wsmon.core.models import WorksetState
from wsmon.engine.store.base import Store

S = WorksetState


def test_queue_stats_of_some_states_counts_only_those(store: Store) -> None:
    store.register_workset("u1", "b", "p/u1/", priority="urgent")
    store.register_workset("n1", "b", "p/n1/")
    store.register_workset("c1", "b", "p/c1/", state="complete")
    store.register_workset("f1", "b", "p/f1/", priority="low", state="failed")
    ready = store.queue_stats(states=[S.READY])
    assert ready.counts["ready"] == store.queue_stats().counts["ready"]
    assert ready.counts["ready"]["urgent"] == 1 and ready.total("ready") == 2
    assert ready.total() == 2  # complete and failed were not counted
    both = store.queue_stats(states=["failed", S.READY])
    assert both.total("failed") == 1 and both.total("complete") == 0 and both.total() == 3
