"""Retention: the engine's sweep prunes delivered/dead notifications and resolved alerts once an
hour, and the channel-failing alert reads recently given-up notifications however old the
outbox's history is. SQLite store, time moved by hand."""

from __future__ import annotations

from datetime import timedelta

import pytest

from wsmon.config.settings import Settings
from wsmon.engine.alerts import AlertEvaluator
from wsmon.engine.service import Engine
from wsmon.engine.store import open_store
from wsmon.core.models import Alert, AlertState, OperatorAction, OutboxEntry, Severity

DAY = timedelta(days=1)


@pytest.fixture
def store(tmp_path, clock):
    s = open_store(f"sqlite:///{tmp_path / 'state.db'}", clock=clock)
    yield s
    s.close()


def entry(entry_id: str, at, channel: str = "slack") -> OutboxEntry:
    return OutboxEntry(entry_id=entry_id, channel=channel, dedup_id=entry_id,
                       coalesce_key=f"workset:{entry_id}", event_type="failed",
                       payload={"title": entry_id}, created_at=at, next_attempt_at=at)


def resolved_alert(store, alert_id: str, at) -> None:
    store.put_alert(Alert(alert_id=alert_id, rule="stale_lease", subject=alert_id,
                          severity=Severity.WARNING, state=AlertState.FIRING, summary=alert_id,
                          pending_since=at, fired_at=at, updated_at=at))
    store.resolve_alert(alert_id, "wsmon", "cleared")


def engine_for(tmp_path, store, clock, **retention) -> Engine:
    settings = Settings(
        monitor_id="engine-t", state_dir=tmp_path / "state",
        store={"url": f"sqlite:///{tmp_path / 'state.db'}",
               "audit_retention_days": retention.get("audit", 365)},
        clusters={"static": [], "slurm_usage": False}, metrics={"sink": "none"},
        runner={"kind": "simulated"},
        notify={"outbox_retention_days": retention.get("outbox", 7)},
        alerts={"resolved_retention_days": retention.get("alerts", 30)},
    )
    return Engine(settings, store=store, clock=clock)


def test_the_sweep_prunes_old_history_once_an_hour(tmp_path, store, clock) -> None:
    t0 = clock.now()
    store.enqueue_notification(entry("delivered-long-ago", t0))
    store.mark_notification_delivered("delivered-long-ago", t0)
    store.enqueue_notification(entry("still-pending", t0))
    resolved_alert(store, "resolved-long-ago", t0)
    store.put_alert(Alert(alert_id="still-firing", rule="stale_lease", subject="x",
                          severity=Severity.WARNING, state=AlertState.FIRING, summary="x",
                          pending_since=t0, fired_at=t0, updated_at=t0))
    clock.set(t0 + 3 * DAY)
    store.enqueue_notification(entry("delivered-recently", clock.now()))
    store.mark_notification_delivered("delivered-recently", clock.now())
    resolved_alert(store, "resolved-recently", clock.now())

    engine = engine_for(tmp_path, store, clock, outbox=2, alerts=2)
    try:
        engine.sweep()
        assert {e.entry_id for e in store.list_notifications()} == {"still-pending",
                                                                    "delivered-recently"}
        assert store.get_alert("resolved-long-ago") is None
        assert store.get_alert("still-firing") is not None
        assert store.get_alert("resolved-recently") is not None

        # Both age past retention within the hour: the next sweeps leave them until the hour is up.
        clock.set(clock.now() + 2 * DAY - timedelta(minutes=1))
        engine.sweep()
        clock.advance(30 * 60)
        engine.sweep()
        assert store.get_alert("resolved-recently") is not None
        assert "delivered-recently" in {e.entry_id for e in store.list_notifications()}
        clock.advance(31 * 60)
        engine.sweep()
        assert store.get_alert("resolved-recently") is None
        assert [e.entry_id for e in store.list_notifications()] == ["still-pending"]
    finally:
        engine.stop(grace=0)


def test_retention_defaults_are_a_week_of_outbox_and_a_month_of_alerts() -> None:
    settings = Settings()
    assert settings.notify.outbox_retention_days == 7
    assert settings.alerts.resolved_retention_days == 30
    assert settings.store.audit_retention_days == 365


def test_the_sweep_prunes_operator_actions_past_their_retention_once_an_hour(
        tmp_path, store, clock) -> None:
    t0 = clock.now()
    audit = lambda action_id: OperatorAction(
        action_id=action_id, at=clock.now(), actor="op@host", action="retry", target="ws-1",
        outcome="refused")
    store.record_operator_action(audit("long-ago"))
    clock.set(t0 + 5 * DAY)
    store.record_operator_action(audit("recent"))
    engine = engine_for(tmp_path, store, clock, audit=3)
    try:
        engine.sweep()
        assert [e.action_id for e in store.list_operator_actions()] == ["recent"]
        clock.set(t0 + 8 * DAY + timedelta(minutes=30))  # "recent" is now past 3 days old
        engine.sweep()
        assert [e.action_id for e in store.list_operator_actions(workset_id="ws-1")] == []
    finally:
        engine.stop(grace=0)


def test_channel_failing_sees_notifications_given_up_recently(store, clock) -> None:
    t0 = clock.now()
    # Years of history: many entries given up long ago, oldest first in the outbox.
    for i in range(1005):
        store.enqueue_notification(entry(f"old-{i:04d}", t0, channel="sns"))
        store.mark_notification_failed(f"old-{i:04d}", "AccessDenied", None)
    clock.set(t0 + 10 * DAY)
    # Created hours ago, last try scheduled more than the window ago, given up just now.
    created = clock.now() - timedelta(hours=3)
    late = entry("given-up-now", created).model_copy(
        update={"next_attempt_at": clock.now() - timedelta(minutes=70)})
    store.enqueue_notification(late)
    store.mark_notification_failed("given-up-now", "slack: channel_not_found (HTTP 404)", None)

    names = ["queue_depth", "urgent_waiting", "long_running", "stale_lease", "lock_failures",
             "error_rate", "dead_lettered", "cluster_full", "engine_heartbeat", "backend_errors"]
    alerts = {n: {"enabled": False} for n in names}
    alerts["channel_failing"] = {"enabled": True, "window_seconds": 3600}
    evaluator = AlertEvaluator(Settings(monitor_id="engine-a", alerts=alerts), store, clock=clock)
    [alert] = evaluator.evaluate()
    assert alert.subject == "slack" and alert.value == 1
    assert "channel_not_found" in alert.description


def test_a_version_1_sqlite_store_is_upgraded_in_place_even_when_opened_without_create(
        tmp_path, clock) -> None:
    import sqlite3

    path = tmp_path / "v1.db"
    old = open_store(f"sqlite:///{path}", clock=clock)
    old.enqueue_notification(entry("kept", clock.now()))
    old.close()
    with sqlite3.connect(path) as raw:  # what a wsmon before retention left behind
        raw.execute("DROP TABLE outbox_folded")
        raw.execute("PRAGMA user_version = 1")
    upgraded = open_store(f"sqlite:///{path}", clock=clock, create=False)
    try:
        upgraded.enqueue_notification(entry("kept", clock.now()).model_copy(
            update={"entry_id": "newer", "dedup_id": "newer"}))  # folds "kept"
        upgraded.mark_notification_delivered("newer", clock.now())
        assert upgraded.prune_notifications(clock.now() + DAY) == 1
        assert upgraded.list_notifications() == []
    finally:
        upgraded.close()
