"""The store contract, part 3: retention. Pruning the notification outbox and resolved alerts,
and the newest-first ``since`` view of the outbox. Runs against every backend (see conftest.py).

The dedup rule under test (Store.prune_notifications): a dedup id is remembered exactly as long
as the entry carrying it (its own, or the one it was coalesced into) is in the outbox, so it is
never forgotten while that entry is pending, and is accepted again once the entry was pruned."""

from __future__ import annotations

from datetime import timedelta

from wsmon.core.clock import ManualClock
from wsmon.engine.store import Store
from wsmon.core.models import AlertState

from .test_store_contract_state import make_alert, make_entry

DAY = timedelta(days=1)


def test_prune_notifications_removes_only_old_final_entries(store: Store,
                                                             clock: ManualClock) -> None:
    t0 = clock.now()
    for i, entry_id in enumerate(["old-delivered", "old-dead", "waiting", "retrying",
                                  "recent-delivered"]):
        assert store.enqueue_notification(make_entry(entry_id, t0, coalesce_key=f"k{i}"))
    store.mark_notification_delivered("old-delivered", t0 + timedelta(minutes=1))
    clock.advance(120)
    store.mark_notification_failed("old-dead", "HTTP 404", None)
    store.mark_notification_failed("retrying", "HTTP 503", t0 + 30 * DAY)
    clock.set(t0 + 10 * DAY)
    store.mark_notification_delivered("recent-delivered", clock.now())

    assert store.prune_notifications(clock.now() - 7 * DAY) == 2
    remaining = {e.entry_id: e.status for e in store.list_notifications()}
    # Pending entries stay however old they are, and so does a recent delivery.
    assert remaining == {"waiting": "pending", "retrying": "pending",
                         "recent-delivered": "delivered"}
    assert [e.entry_id for e in store.due_notifications(clock.now())] == ["waiting"]
    # A pruned entry's dedup id is free again; a kept entry's still rejects its duplicate.
    assert store.enqueue_notification(make_entry("again-1", clock.now(), dedup_id="old-delivered",
                                                 coalesce_key="n1"))
    assert store.enqueue_notification(make_entry("again-2", clock.now(), dedup_id="old-dead",
                                                 coalesce_key="n2"))
    for kept in ("waiting", "retrying", "recent-delivered"):
        assert not store.enqueue_notification(make_entry(f"dup-{kept}", clock.now(),
                                                         dedup_id=kept, coalesce_key="n3"))
    assert store.prune_notifications(clock.now() - 7 * DAY) == 0


def test_coalesced_dedup_ids_live_as_long_as_the_entry_they_were_folded_into(
        store: Store, clock: ManualClock) -> None:
    t0 = clock.now()
    for i, entry_id in enumerate(["e1", "e2", "e3"]):  # e3 absorbs e2, which absorbed e1
        assert store.enqueue_notification(make_entry(entry_id, t0 + timedelta(seconds=i)))
    for i, entry_id in enumerate(["f1", "f2"]):  # still pending when everything is pruned
        assert store.enqueue_notification(make_entry(entry_id, t0 + timedelta(seconds=i),
                                                     coalesce_key="ws-2"))
    store.mark_notification_delivered("e3", t0 + timedelta(seconds=3))
    assert {e.entry_id for e in store.list_notifications()} == {"e3", "f2"}

    assert store.prune_notifications(t0 + timedelta(seconds=3)) == 0  # not older than before
    assert not store.enqueue_notification(make_entry("x1", t0, dedup_id="e1", coalesce_key="x"))

    clock.set(t0 + 30 * DAY)
    assert store.prune_notifications(clock.now()) == 1
    assert [e.entry_id for e in store.list_notifications()] == ["f2"]
    for folded in ("e1", "e2", "e3"):  # the whole chain went with e3
        assert store.enqueue_notification(make_entry(f"new-{folded}", clock.now(),
                                                     dedup_id=folded, coalesce_key=folded))
    for folded in ("f1", "f2"):  # f2 is pending: neither its id nor the folded f1 is forgotten
        assert not store.enqueue_notification(make_entry(f"new-{folded}", clock.now(),
                                                         dedup_id=folded, coalesce_key="y"))
    # The group's coalescing still works after its delivered entry was pruned.
    assert store.enqueue_notification(make_entry("e4", clock.now()))
    assert store.enqueue_notification(make_entry("e5", clock.now() + timedelta(seconds=1)))
    pending = {e.entry_id: e for e in store.list_notifications(status="pending")}
    assert "e4" not in pending and pending["e5"].coalesced == 1


def test_list_notifications_since_is_newest_activity_first(store: Store,
                                                           clock: ManualClock) -> None:
    t0 = clock.now()
    for i, entry_id in enumerate(["old", "delivered", "dead", "retrying", "overdue"]):
        store.enqueue_notification(make_entry(entry_id, t0 + timedelta(seconds=i),
                                              coalesce_key=f"k{i}"))
    store.mark_notification_delivered("old", t0 + timedelta(minutes=1))
    clock.set(t0 + timedelta(minutes=10))
    store.mark_notification_delivered("delivered", clock.now())
    clock.set(t0 + timedelta(minutes=20))
    # Created at t0 but given up now: "recent" is about when it died, not when it was created.
    store.mark_notification_failed("dead", "HTTP 410", None)
    store.mark_notification_failed("retrying", "HTTP 503", t0 + timedelta(minutes=30))

    since = t0 + timedelta(minutes=5)
    assert [e.entry_id for e in store.list_notifications(since=since)] == [
        "retrying", "dead", "delivered"]
    assert [e.entry_id for e in store.list_notifications(since=since, limit=2)] == [
        "retrying", "dead"]
    assert [e.entry_id for e in store.list_notifications(status="dead", since=since)] == ["dead"]
    assert store.list_notifications(status="dead", since=t0 + timedelta(minutes=21)) == []
    assert [e.entry_id for e in store.list_notifications(status="delivered",
                                                         since=t0 + timedelta(minutes=10))] == [
        "delivered"]
    # Without since: every entry, oldest created first, as before.
    assert [e.entry_id for e in store.list_notifications()] == [
        "old", "delivered", "dead", "retrying", "overdue"]


def test_prune_alerts_removes_only_old_resolved_alerts(store: Store, clock: ManualClock) -> None:
    t0 = clock.now()
    store.put_alert(make_alert("old-resolved", t0, subject="ws-1"))
    store.put_alert(make_alert("old-firing", t0, subject="ws-2"))
    store.put_alert(make_alert("old-pending", t0, subject="ws-3", state=AlertState.PENDING))
    store.put_alert(make_alert("old-acked", t0, subject="ws-4"))
    store.ack_alert("old-acked", "alice@host", note="on it")
    store.put_alert(make_alert("recent-resolved", t0, subject="ws-5"))
    store.resolve_alert("old-resolved", "wsmon", "cleared")
    clock.set(t0 + 40 * DAY)
    store.resolve_alert("recent-resolved", "wsmon", "cleared")

    assert store.prune_alerts(clock.now() - 30 * DAY) == 1
    assert store.get_alert("old-resolved") is None
    for kept in ("old-firing", "old-pending", "old-acked", "recent-resolved"):
        assert store.get_alert(kept) is not None
    assert {a.alert_id for a in store.list_alerts()} == {"old-firing", "old-pending", "old-acked"}
    assert store.find_active_alert("stale_lease", "ws-2") is not None
    assert [a.alert_id for a in store.list_alerts(states=[AlertState.RESOLVED])] == [
        "recent-resolved"]
    assert store.prune_alerts(clock.now() - 30 * DAY) == 0
    # The subject of a pruned alert can open a new one.
    store.put_alert(make_alert("new", clock.now(), subject="ws-1"))
    assert store.find_active_alert("stale_lease", "ws-1").alert_id == "new"
