"""The store contract, part 2: named leases, key/value state, clusters, alerts, silences, the
notification outbox and metric history. Runs against every backend (see conftest.py)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from wsmon.core.clock import ManualClock
from wsmon.engine.store import AlertNotFound, Store, StoreError
from wsmon.core.models import Alert, AlertState, ClusterStatus, MetricSample, OutboxEntry, Severity

from .conftest import MAX_CLOCK_SKEW

# -- named leases ------------------------------------------------------------------------------


def test_named_lease_claim_renew_and_block(store: Store, clock: ManualClock) -> None:
    first = store.acquire_named_lease("poll:s3://bkt/in/", "engine-a", 60)
    assert first is not None and first.owner_id == "engine-a"
    assert first.expires_at == clock.now() + timedelta(seconds=60)
    assert store.get_named_lease("poll:s3://bkt/in/") == first
    clock.advance(30)
    renewed = store.acquire_named_lease("poll:s3://bkt/in/", "engine-a", 60)
    assert renewed is not None and renewed.fence == first.fence
    assert renewed.expires_at == clock.now() + timedelta(seconds=60)
    assert store.acquire_named_lease("poll:s3://bkt/in/", "engine-b", 60) is None
    clock.set(renewed.expires_at + timedelta(seconds=MAX_CLOCK_SKEW - 1))
    assert store.acquire_named_lease("poll:s3://bkt/in/", "engine-b", 60) is None
    clock.set(renewed.expires_at + timedelta(seconds=MAX_CLOCK_SKEW + 1))
    taken = store.acquire_named_lease("poll:s3://bkt/in/", "engine-b", 60)
    assert taken is not None and taken.owner_id == "engine-b" and taken.fence > first.fence
    assert store.get_named_lease("poll:s3://bkt/in/") == taken
    # The old holder can neither renew nor release the new holder's lease.
    assert store.acquire_named_lease("poll:s3://bkt/in/", "engine-a", 60) is None
    store.release_named_lease(first)
    assert store.get_named_lease("poll:s3://bkt/in/") == taken


def test_named_lease_release_frees_it_with_a_higher_fence(store: Store) -> None:
    lease = store.acquire_named_lease("scheduler", "engine-a", 60)
    assert lease is not None
    store.release_named_lease(lease)
    assert store.get_named_lease("scheduler") is None
    other = store.acquire_named_lease("scheduler", "engine-b", 60)
    assert other is not None and other.fence > lease.fence


def test_named_leases_are_independent(store: Store) -> None:
    assert store.acquire_named_lease("a", "engine-a", 60) is not None
    assert store.acquire_named_lease("b", "engine-b", 60) is not None
    assert store.get_named_lease("c") is None


# -- key/value ---------------------------------------------------------------------------------

def test_kv_round_trip(store: Store) -> None:
    assert store.kv_get("etags", "missing") is None
    values: dict[str, Any] = {
        "in/ws 1/": "\"abc123\"",
        "ünï/日本/": {"etag": "x", "size": 12, "nested": [1, 2.5, None, True]},
        "[@click=app.quit]x": [1, "two"],
        "n": 42,
        "f": False,
    }
    for key, value in values.items():
        store.kv_put("etags", key, value)
    for key, value in values.items():
        assert store.kv_get("etags", key) == value
    assert store.kv_get_all("etags") == values
    store.kv_put("etags", "n", 43)
    assert store.kv_get("etags", "n") == 43
    store.kv_delete("etags", "n")
    assert store.kv_get("etags", "n") is None
    store.kv_delete("etags", "never-there")


def test_kv_namespaces_are_separate_and_put_many(store: Store) -> None:
    store.kv_put_many("hashes", {f"k{i}": i for i in range(30)})
    store.kv_put("other", "k1", "x")
    got = store.kv_get_all("hashes")
    assert got == {f"k{i}": i for i in range(30)}
    assert store.kv_get_all("other") == {"k1": "x"}
    assert store.kv_get_all("empty") == {}
    store.kv_put_many("hashes", {"k1": "changed", "new": [1]})
    assert store.kv_get("hashes", "k1") == "changed" and store.kv_get("hashes", "new") == [1]
    assert store.kv_get("other", "k1") == "x"


# -- clusters ----------------------------------------------------------------------------------

def test_cluster_status_put_and_list(store: Store, clock: ManualClock) -> None:
    a = ClusterStatus(name="c-west-d", availability_zone="us-west-2d", source="pcluster",
                      max_vcpus=256, vcpus_used=64, max_memory_gb=1024.0, memory_gb_used=12.5,
                      active_worksets=1, cost_per_vcpu_hour=0.05, updated_at=clock.now())
    b = ClusterStatus(name="c-east", status="unavailable", detail="ssh: timeout",
                      updated_at=clock.now())
    store.put_cluster_status(a)
    store.put_cluster_status(b)
    assert {c.name: c for c in store.list_cluster_status()} == {"c-west-d": a, "c-east": b}
    clock.advance(60)
    a2 = a.model_copy(update={"vcpus_used": 128, "updated_at": clock.now()})
    store.put_cluster_status(a2)
    assert {c.name: c for c in store.list_cluster_status()} == {"c-west-d": a2, "c-east": b}


# -- alerts ------------------------------------------------------------------------------------

def make_alert(alert_id: str, at: datetime, rule: str = "stale_lease",
               subject: str = "ws-1", state: AlertState = AlertState.FIRING, **kw: Any) -> Alert:
    return Alert(alert_id=alert_id, rule=rule, subject=subject, severity=Severity.WARNING,
                 state=state, summary=f"{rule} on {subject}", pending_since=at,
                 fired_at=at if state is not AlertState.PENDING else None, updated_at=at, **kw)


def test_alert_put_get_and_find_active(store: Store, clock: ManualClock) -> None:
    alert = make_alert("a1", clock.now(), labels={"cluster": "c1"}, value=3.5,
                       description="\x1b[31m[bold]x[/bold]")
    assert store.put_alert(alert) == alert
    assert store.get_alert("a1") == alert
    assert store.get_alert("nope") is None
    assert store.find_active_alert("stale_lease", "ws-1") == alert
    assert store.find_active_alert("stale_lease", "ws-2") is None
    assert store.find_active_alert("other_rule", "ws-1") is None


def test_alert_ack_and_resolve(store: Store, clock: ManualClock) -> None:
    store.put_alert(make_alert("a1", clock.now()))
    clock.advance(10)
    until = clock.now() + timedelta(hours=1)
    acked = store.ack_alert("a1", "alice@host", note="looking", expires_at=until)
    assert acked.state is AlertState.ACKNOWLEDGED
    assert (acked.acknowledged_by, acked.acknowledged_at, acked.ack_note, acked.ack_expires_at) == (
        "alice@host", clock.now(), "looking", until)
    assert store.get_alert("a1") == acked
    clock.advance(5)
    again = store.ack_alert("a1", "alice@host", note="fix deployed at 12:30")
    assert again.state is AlertState.ACKNOWLEDGED and again.ack_note == "fix deployed at 12:30"
    assert store.find_active_alert("stale_lease", "ws-1") is not None
    clock.advance(5)
    resolved = store.resolve_alert("a1", "bob@host", "lease released")
    assert resolved.state is AlertState.RESOLVED
    assert (resolved.resolved_by, resolved.resolved_at) == ("bob@host", clock.now())
    assert store.get_alert("a1") == resolved
    assert store.find_active_alert("stale_lease", "ws-1") is None
    # A new occurrence after resolution is a new alert for the same key.
    store.put_alert(make_alert("a2", clock.now()))
    assert store.find_active_alert("stale_lease", "ws-1").alert_id == "a2"  # type: ignore[union-attr]


def test_ack_pending_alert_and_unknown_ids(store: Store, clock: ManualClock) -> None:
    store.put_alert(make_alert("p1", clock.now(), state=AlertState.PENDING))
    assert store.ack_alert("p1", "op").state is AlertState.ACKNOWLEDGED
    with pytest.raises(AlertNotFound):
        store.ack_alert("ghost", "op")
    with pytest.raises(AlertNotFound):
        store.resolve_alert("ghost", "op")


def test_list_alerts_filters_and_orders_newest_first(store: Store, clock: ManualClock) -> None:
    t0 = clock.now()
    store.put_alert(make_alert("old-firing", t0, subject="s1"))
    store.put_alert(make_alert("pending", t0 + timedelta(minutes=1), subject="s2",
                               state=AlertState.PENDING))
    store.put_alert(make_alert("acked", t0 + timedelta(minutes=2), subject="s3",
                               state=AlertState.ACKNOWLEDGED))
    store.put_alert(make_alert("long-ago", t0 - timedelta(days=2), subject="s4",
                               state=AlertState.RESOLVED, resolved_at=t0 - timedelta(days=2)))
    store.put_alert(make_alert("recent", t0 + timedelta(minutes=3), subject="s5",
                               state=AlertState.RESOLVED, resolved_at=t0 + timedelta(minutes=3)))
    assert [a.alert_id for a in store.list_alerts()] == ["acked", "pending", "old-firing"]
    assert [a.alert_id for a in store.list_alerts(states=["firing"])] == ["old-firing"]
    assert [a.alert_id for a in store.list_alerts(
        states=[AlertState.FIRING, AlertState.PENDING])] == ["pending", "old-firing"]
    with_resolved = store.list_alerts(resolved_since=t0 - timedelta(hours=1))
    assert [a.alert_id for a in with_resolved] == ["recent", "acked", "pending", "old-firing"]
    assert len(store.list_alerts(limit=2)) == 2


def test_conditional_put_alert(store: Store, clock: ManualClock) -> None:
    original = make_alert("a1", clock.now())
    store.put_alert(original)
    clock.advance(30)
    engine_a = original.model_copy(update={"value": 1.0, "updated_at": clock.now()})
    assert store.put_alert(engine_a, expected_updated_at=original.updated_at) == engine_a
    # A second writer that read the original loses and changes nothing.
    engine_b = original.model_copy(update={"value": 2.0, "updated_at": clock.now()})
    with pytest.raises(StoreError):
        store.put_alert(engine_b, expected_updated_at=original.updated_at)
    assert store.get_alert("a1") == engine_a
    # Unconditional put replaces.
    clock.advance(1)
    engine_c = engine_a.model_copy(update={"value": 3.0, "updated_at": clock.now()})
    store.put_alert(engine_c)
    assert store.get_alert("a1") == engine_c


# -- silences ----------------------------------------------------------------------------------

def test_silences(store: Store, clock: ManualClock) -> None:
    now = clock.now()
    everything = store.silence("alice@host", now + timedelta(hours=1), reason="maintenance")
    assert everything.starts_at == now and everything.rule is None and everything.subject is None
    later = store.silence("bob@host", now + timedelta(hours=5), rule="stale_lease",
                          subject="ws [1]", starts_at=now + timedelta(hours=2))
    assert {s.silence_id for s in store.list_silences()} == {everything.silence_id,
                                                            later.silence_id}
    assert everything.silence_id != later.silence_id
    assert store.list_silences(active_at=now + timedelta(minutes=30)) == [everything]
    assert store.list_silences(active_at=now + timedelta(hours=3)) == [later]
    assert store.list_silences(active_at=now + timedelta(hours=6)) == []
    stored = {s.silence_id: s for s in store.list_silences()}[later.silence_id]
    assert (stored.rule, stored.subject, stored.created_by, stored.ends_at) == (
        "stale_lease", "ws [1]", "bob@host", now + timedelta(hours=5))
    store.delete_silence(everything.silence_id, "alice@host")
    assert store.list_silences() == [later]


# -- notification outbox -----------------------------------------------------------------------

def make_entry(entry_id: str, at: datetime, channel: str = "slack", dedup_id: str | None = None,
               coalesce_key: str = "ws-1", **kw: Any) -> OutboxEntry:
    return OutboxEntry(entry_id=entry_id, channel=channel, dedup_id=dedup_id or entry_id,
                       coalesce_key=coalesce_key, event_type="workset.failed",
                       payload={"workset_id": coalesce_key, "n": entry_id}, created_at=at,
                       next_attempt_at=kw.pop("next_attempt_at", at), **kw)


def test_outbox_dedup(store: Store, clock: ManualClock) -> None:
    now = clock.now()
    assert store.enqueue_notification(make_entry("e1", now, dedup_id="evt-1")) is True
    assert store.enqueue_notification(make_entry("e2", now, dedup_id="evt-1",
                                                 coalesce_key="other")) is False
    assert store.enqueue_notification(make_entry("e3", now, channel="sns", dedup_id="evt-1")) is True
    assert sorted(e.entry_id for e in store.list_notifications()) == ["e1", "e3"]
    # Dedup holds after delivery too: at least once, never the same event twice by design.
    store.mark_notification_delivered("e1", now)
    assert store.enqueue_notification(make_entry("e4", now, dedup_id="evt-1")) is False


def test_outbox_coalesces_pending_entries(store: Store, clock: ManualClock) -> None:
    t0 = clock.now()
    assert store.enqueue_notification(make_entry("e1", t0))
    assert store.enqueue_notification(make_entry("e2", t0 + timedelta(seconds=1)))
    assert store.enqueue_notification(make_entry("e3", t0 + timedelta(seconds=2)))
    assert store.enqueue_notification(make_entry("other-key", t0, coalesce_key="ws-2"))
    assert store.enqueue_notification(make_entry("other-chan", t0, channel="linear"))
    pending = {e.entry_id: e for e in store.list_notifications(status="pending")}
    assert set(pending) == {"e3", "other-key", "other-chan"}
    assert pending["e3"].coalesced == 2 and pending["e3"].payload["n"] == "e3"
    assert pending["other-key"].coalesced == 0 and pending["other-chan"].coalesced == 0
    # A folded entry's dedup id still counts.
    assert store.enqueue_notification(make_entry("e1-again", t0, dedup_id="e1")) is False
    # Delivered entries are history: a new event starts a fresh pending entry.
    store.mark_notification_delivered("e3", t0 + timedelta(seconds=3))
    assert store.enqueue_notification(make_entry("e5", t0 + timedelta(seconds=4)))
    e5 = {e.entry_id: e for e in store.list_notifications()}["e5"]
    assert e5.coalesced == 0 and e5.status == "pending"


def test_outbox_due_order_and_delivery_lifecycle(store: Store, clock: ManualClock) -> None:
    t0 = clock.now()
    store.enqueue_notification(make_entry("late", t0 + timedelta(seconds=5), coalesce_key="k3",
                                          next_attempt_at=t0 + timedelta(seconds=5)))
    store.enqueue_notification(make_entry("first", t0, coalesce_key="k1"))
    store.enqueue_notification(make_entry("second", t0 + timedelta(seconds=1), coalesce_key="k2"))
    store.enqueue_notification(make_entry("sns", t0 + timedelta(seconds=2), channel="sns",
                                          coalesce_key="k1"))
    assert [e.entry_id for e in store.due_notifications(t0 + timedelta(seconds=3))] == [
        "first", "second", "sns"]
    assert [e.entry_id for e in store.due_notifications(t0 + timedelta(seconds=3),
                                                        channel="slack")] == ["first", "second"]
    assert [e.entry_id for e in store.due_notifications(t0 + timedelta(seconds=9), limit=2)] == [
        "first", "second"]
    assert store.due_notifications(t0 - timedelta(seconds=1)) == []

    store.mark_notification_delivered("first", t0 + timedelta(seconds=3))
    retry_at = t0 + timedelta(minutes=5)
    store.mark_notification_failed("second", "HTTP 503 from slack", retry_at)
    store.mark_notification_failed("sns", "AccessDenied", None)
    entries = {e.entry_id: e for e in store.list_notifications()}
    assert entries["first"].status == "delivered"
    assert entries["first"].delivered_at == t0 + timedelta(seconds=3)
    assert entries["second"].status == "pending" and entries["second"].attempts == 1
    assert entries["second"].last_error == "HTTP 503 from slack"
    assert entries["second"].next_attempt_at == retry_at
    assert entries["sns"].status == "dead" and entries["sns"].last_error == "AccessDenied"
    assert [e.entry_id for e in store.due_notifications(t0 + timedelta(minutes=1))] == ["late"]
    assert [e.entry_id for e in store.due_notifications(retry_at)] == ["second", "late"]
    store.mark_notification_failed("second", "HTTP 503 again", retry_at + timedelta(minutes=10))
    again = {e.entry_id: e for e in store.list_notifications(status="pending")}["second"]
    assert again.attempts == 2
    assert [e.entry_id for e in store.list_notifications(status="dead")] == ["sns"]
    assert [e.entry_id for e in store.list_notifications(status="delivered")] == ["first"]


def test_outbox_payload_round_trips(store: Store, clock: ManualClock) -> None:
    entry = make_entry("e1", clock.now()).model_copy(update={"payload": {
        "text": "ünï \x1b[31m [b]x[/b]", "n": 3, "items": [{"a": None}], "ok": True}})
    store.enqueue_notification(entry)
    assert store.list_notifications() == [entry]


# -- metric history ----------------------------------------------------------------------------

def _minute_series(start: datetime, values: list[float], name: str = "queue_depth",
                   **dims: str) -> list[MetricSample]:
    return [MetricSample(name=name, at=start + timedelta(minutes=i), value=v, dimensions=dims)
            for i, v in enumerate(values)]


def test_metric_history_minute_samples(store: Store, clock: ManualClock) -> None:
    start = datetime(2026, 1, 1, 10, 0, tzinfo=clock.now().tzinfo)
    samples = _minute_series(start, [1, 2, 3, 4, 5])
    store.record_metric_samples(samples)
    store.record_metric_samples(_minute_series(start, [100.0], name="other"))
    got = store.metric_history("queue_depth", since=start)
    assert got == samples
    # [since, until): until is exclusive.
    got = store.metric_history("queue_depth", since=start + timedelta(minutes=1),
                               until=start + timedelta(minutes=3))
    assert [s.value for s in got] == [2, 3]
    assert store.metric_history("missing", since=start) == []


def test_metric_history_roll_ups(store: Store, clock: ManualClock) -> None:
    day1 = datetime(2026, 1, 1, 0, 0, tzinfo=clock.now().tzinfo)
    # hour 0: values 0..59 (mean 29.5); hour 1: constant 10; next day hour 0: constant 4
    store.record_metric_samples(_minute_series(day1, [float(i) for i in range(60)]))
    store.record_metric_samples(_minute_series(day1 + timedelta(hours=1), [10.0] * 30))
    store.record_metric_samples(_minute_series(day1 + timedelta(days=1), [4.0] * 3))
    hourly = store.metric_history("queue_depth", since=day1, resolution="hour")
    assert [(s.at, s.value) for s in hourly] == [
        (day1, 29.5), (day1 + timedelta(hours=1), 10.0), (day1 + timedelta(days=1), 4.0)]
    daily = store.metric_history("queue_depth", since=day1, resolution="day")
    assert [(s.at, s.value) for s in daily] == [
        (day1, (sum(range(60)) + 300.0) / 90), (day1 + timedelta(days=1), 4.0)]
    with pytest.raises(ValueError):
        store.metric_history("queue_depth", since=day1, resolution="fortnight")


def test_metric_history_dimension_filter(store: Store, clock: ManualClock) -> None:
    start = datetime(2026, 1, 1, 10, 0, tzinfo=clock.now().tzinfo)
    west = _minute_series(start, [1, 2], name="vcpus_used", cluster="west", region="us-west-2")
    east = _minute_series(start, [50, 60], name="vcpus_used", cluster="east", region="us-east-1")
    store.record_metric_samples(west + east)
    assert store.metric_history("vcpus_used", since=start, dimensions={"cluster": "west"}) == west
    assert store.metric_history("vcpus_used", since=start,
                                dimensions={"cluster": "east", "region": "us-east-1"}) == east
    assert store.metric_history("vcpus_used", since=start,
                                dimensions={"cluster": "east", "region": "us-west-2"}) == []
    assert len(store.metric_history("vcpus_used", since=start)) == 4
    hourly = store.metric_history("vcpus_used", since=start, resolution="hour",
                                  dimensions={"cluster": "east"})
    assert [(s.at, s.value, s.dimensions) for s in hourly] == [
        (start, 55.0, {"cluster": "east", "region": "us-east-1"})]


def test_prune_metric_history(store: Store, clock: ManualClock) -> None:
    start = datetime(2026, 1, 1, 10, 0, tzinfo=clock.now().tzinfo)
    store.record_metric_samples(_minute_series(start, [1, 2, 3, 4, 5]))
    store.record_metric_samples(_minute_series(start, [7, 8], name="other", cluster="c"))
    assert store.prune_metric_history(start + timedelta(minutes=2)) == 4
    assert [s.value for s in store.metric_history("queue_depth", since=start)] == [3, 4, 5]
    assert store.metric_history("other", since=start) == []
    assert store.prune_metric_history(start) == 0
