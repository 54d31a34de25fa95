"""Alert rules and lifecycle against the SQLite store, with time moved by hand."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from wsmon.config.settings import Settings
from wsmon.engine.alerts import AlertEvaluator, Observation, record_health
from wsmon.engine.store import open_store
from wsmon.core.models import AlertState, ClusterStatus, MetricSample


class RecordingNotifier:
    """Stands in for engine.notify.Notifier: records what the evaluator asked to announce."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def emit(self, event_type: str, *, alert: Any = None, **_: Any) -> list[Any]:
        self.sent.append((event_type, alert.alert_id if alert else ""))
        return []

    def events(self, kind: str | None = None) -> list[tuple[str, str]]:
        return [e for e in self.sent if kind is None or e[0] == kind]


class Switch:
    """A rule whose condition the test flips."""

    def __init__(self, *subjects: str) -> None:
        self.on: set[str] = set(subjects)
        self.raises = False

    def __call__(self, ctx: Any, cfg: Any) -> list[Observation]:
        if self.raises:
            raise RuntimeError("backend hiccup")
        return [Observation(subject=s, summary=f"{s} is bad", value=1.0) for s in sorted(self.on)]


@pytest.fixture
def store(tmp_path, clock):
    s = open_store(f"sqlite:///{tmp_path}/s.db", clock=clock)
    yield s
    s.close()


def settings(**alerts: Any) -> Settings:
    return Settings(monitor_id="engine-a", alerts=alerts)


def evaluator(store, clock, notifier=None, rule=None, name="queue_depth", **alerts) -> AlertEvaluator:
    rules = {name: rule} if rule is not None else None
    return AlertEvaluator(settings(**alerts), store, clock=clock, notifier=notifier, rules=rules)


def test_pending_fires_after_for_and_resolves_after_keep_firing_for(store, clock):
    note = RecordingNotifier()
    cond = Switch("priority=urgent")
    ev = evaluator(store, clock, note, cond, queue_depth={"for_seconds": 120}, keep_firing_for_seconds=300)

    [alert] = ev.evaluate()
    assert alert.state is AlertState.PENDING and note.sent == []
    clock.advance(60)
    assert ev.evaluate() == []
    clock.advance(60)
    [alert] = ev.evaluate()
    assert alert.state is AlertState.FIRING
    assert note.events() == [("alert_firing", alert.alert_id)]

    cond.on.clear()
    clock.advance(30)
    ev.evaluate()
    assert store.get_alert(alert.alert_id).state is AlertState.FIRING  # hysteresis
    clock.advance(299)
    ev.evaluate()
    assert store.get_alert(alert.alert_id).state is AlertState.FIRING
    clock.advance(1)
    [resolved] = ev.evaluate()
    assert resolved.state is AlertState.RESOLVED and resolved.resolved_at == clock.now()
    assert note.events("alert_resolved") == [("alert_resolved", alert.alert_id)]

    # a firing after a resolve is a new alert; the old one stays as history
    cond.on.add("priority=urgent")
    [again] = ev.evaluate()
    assert again.alert_id != alert.alert_id and again.state is AlertState.PENDING
    history = store.list_alerts(resolved_since=clock.now() - timedelta(hours=1))
    assert {a.alert_id for a in history} == {alert.alert_id, again.alert_id}


def test_pending_condition_must_hold_continuously(store, clock):
    note = RecordingNotifier()
    cond = Switch("x")
    ev = evaluator(store, clock, note, cond, queue_depth={"for_seconds": 120})
    ev.evaluate()
    clock.advance(90)
    cond.on.clear()
    ev.evaluate()
    clock.advance(20)
    cond.on.add("x")
    ev.evaluate()
    clock.advance(40)  # 150 s since the first sighting, but only 40 s since it came back
    ev.evaluate()
    [alert] = store.list_alerts()
    assert alert.state is AlertState.PENDING and note.sent == []
    clock.advance(80)
    ev.evaluate()
    assert store.get_alert(alert.alert_id).state is AlertState.FIRING


def test_flapping_condition_notifies_once_in_an_hour(store, clock):
    note = RecordingNotifier()
    cond = Switch("flappy")
    ev = evaluator(store, clock, note, cond, queue_depth={"for_seconds": 0}, keep_firing_for_seconds=300)
    for step in range(120):  # one hour, toggling every 30 s
        if step % 2:
            cond.on.clear()
        else:
            cond.on.add("flappy")
        ev.evaluate()
        clock.advance(30)
    assert len(note.sent) == 1 and note.sent[0][0] == "alert_firing"
    assert len(store.list_alerts(resolved_since=clock.now() - timedelta(days=1))) == 1
    # once it settles, the single alert resolves (one more message, not one per flap)
    cond.on.clear()
    for _ in range(12):
        ev.evaluate()
        clock.advance(30)
    assert [e[0] for e in note.sent] == ["alert_firing", "alert_resolved"]


def test_deduplicated_by_rule_and_subject(store, clock):
    cond = Switch("a", "b")
    ev = evaluator(store, clock, RecordingNotifier(), cond, queue_depth={"for_seconds": 0})
    for _ in range(5):
        ev.evaluate()
        clock.advance(30)
    alerts = store.list_alerts()
    assert sorted(a.subject for a in alerts) == ["a", "b"]
    # a second evaluator (another engine) cannot evaluate while the first holds the lease
    other = AlertEvaluator(settings(queue_depth={"for_seconds": 0}), store, clock=clock,
                           rules={"queue_depth": cond}, owner_id="engine-b")
    assert other.evaluate() == []
    assert len(store.list_alerts()) == 2


def test_ack_stops_notifications_and_expiry_renotifies(store, clock):
    note = RecordingNotifier()
    cond = Switch("x")
    ev = evaluator(store, clock, note, cond, queue_depth={"for_seconds": 0}, repeat_interval_seconds=600)
    [alert] = ev.evaluate()
    store.ack_alert(alert.alert_id, "alice@ops", note="looking into it",
                    expires_at=clock.now() + timedelta(hours=1))
    clock.advance(30)
    ev.evaluate()
    assert note.events() == [("alert_firing", alert.alert_id), ("alert_acknowledged", alert.alert_id)]
    for _ in range(110):  # 55 minutes: no repeats while acknowledged
        clock.advance(30)
        ev.evaluate()
    assert len(note.sent) == 2
    acked = store.get_alert(alert.alert_id)
    assert acked.state is AlertState.ACKNOWLEDGED and acked.acknowledged_by == "alice@ops"
    assert acked.ack_note == "looking into it"
    clock.advance(300)  # past the expiry
    [refired] = ev.evaluate()
    assert refired.state is AlertState.FIRING and refired.alert_id == alert.alert_id
    assert note.events()[-1] == ("alert_firing", alert.alert_id)


def test_ack_survives_an_engine_restart(tmp_path, clock):
    url = f"sqlite:///{tmp_path}/s.db"
    cond = Switch("x")
    first = open_store(url, clock=clock)
    note = RecordingNotifier()
    [alert] = evaluator(first, clock, note, cond, queue_depth={"for_seconds": 0}).evaluate()
    first.ack_alert(alert.alert_id, "bob@ops")
    first.close()

    restarted = open_store(url, clock=clock)
    note2 = RecordingNotifier()
    ev2 = evaluator(restarted, clock, note2, cond, queue_depth={"for_seconds": 0}, repeat_interval_seconds=60)
    for _ in range(10):
        clock.advance(60)
        ev2.evaluate()
    kept = restarted.get_alert(alert.alert_id)
    assert kept.state is AlertState.ACKNOWLEDGED and kept.acknowledged_by == "bob@ops"
    assert note2.events("alert_firing") == []
    restarted.close()


def test_silence_suppresses_notifications_not_the_alert(store, clock):
    note = RecordingNotifier()
    cond = Switch("x")
    ev = evaluator(store, clock, note, cond, queue_depth={"for_seconds": 0})
    store.silence("carol@ops", ends_at=clock.now() + timedelta(minutes=30), rule="queue_depth",
                  reason="maintenance")
    [alert] = ev.evaluate()
    assert alert.state is AlertState.FIRING and note.sent == []
    for _ in range(10):
        clock.advance(60)
        ev.evaluate()
    assert note.sent == []
    clock.advance(21 * 60)  # the silence has ended, the alert still fires: announce it once
    ev.evaluate()
    ev.evaluate()
    assert note.events() == [("alert_firing", alert.alert_id)]


def test_silence_for_another_subject_does_not_hide(store, clock):
    note = RecordingNotifier()
    ev = evaluator(store, clock, note, Switch("x"), queue_depth={"for_seconds": 0})
    store.silence("carol@ops", ends_at=clock.now() + timedelta(minutes=30), subject="y")
    ev.evaluate()
    assert len(note.events("alert_firing")) == 1


def test_failing_rule_leaves_alerts_alone_and_disabled_rule_resolves(store, clock):
    cond = Switch("x")
    ev = evaluator(store, clock, RecordingNotifier(), cond, queue_depth={"for_seconds": 0},
                   keep_firing_for_seconds=0)
    [alert] = ev.evaluate()
    cond.raises = True
    clock.advance(600)
    assert ev.evaluate() == []
    assert store.get_alert(alert.alert_id).state is AlertState.FIRING
    off = evaluator(store, clock, RecordingNotifier(), cond, queue_depth={"enabled": False})
    [resolved] = off.evaluate()
    assert resolved.alert_id == alert.alert_id and resolved.state is AlertState.RESOLVED


# -- the built-in rules ------------------------------------------------------------------------


def only(rule: str, **cfg: Any) -> dict[str, Any]:
    """Alert settings with every rule off except ``rule``."""
    names = ["queue_depth", "urgent_waiting", "long_running", "stale_lease", "lock_failures", "error_rate",
             "dead_lettered", "cluster_full", "engine_heartbeat", "channel_failing", "backend_errors"]
    out: dict[str, Any] = {n: {"enabled": False} for n in names}
    out[rule] = {"enabled": True, **cfg}
    return out


def run(store, clock, **alerts) -> list:
    AlertEvaluator(settings(**alerts), store, clock=clock).evaluate()
    return store.list_alerts()


def test_queue_depth_per_priority(store, clock):
    for i in range(4):
        store.register_workset(f"u{i}", "b", f"p/u{i}/", priority="urgent")
        store.register_workset(f"n{i}", "b", f"p/n{i}/", priority="normal")
    alerts = run(store, clock, **only("queue_depth", threshold=10, per_priority={"urgent": 3}, for_seconds=0))
    [alert] = alerts
    assert alert.subject == "priority=urgent" and alert.value == 4 and alert.state is AlertState.FIRING


def test_urgent_waiting(store, clock):
    store.register_workset("late one", "b", "p/late one/", priority="urgent")
    store.register_workset("normal", "b", "p/normal/", priority="normal")
    assert run(store, clock, **only("urgent_waiting", threshold=30)) == []
    clock.advance(minutes=31)
    [alert] = run(store, clock, **only("urgent_waiting", threshold=30))
    assert alert.subject == "late one" and alert.severity.value == "critical"


def test_long_running_beyond_estimate_or_maximum(store, clock):
    store.register_workset("quick", "b", "p/quick/", estimate={"duration_hours": 1.0})
    store.register_workset("unknown", "b", "p/unknown/")
    for ws in ("quick", "unknown"):
        lease = store.acquire_lock(ws, "engine-a", lease_seconds=86400 * 3)
        store.update_state(ws, "in_progress", "started", "engine-a", lease=lease)
    clock.advance(hours=2.5)
    assert run(store, clock, **only("long_running", factor=3, max_hours=10)) == []
    clock.advance(hours=1)
    assert [a.subject for a in run(store, clock, **only("long_running", factor=3, max_hours=10))] == ["quick"]
    clock.advance(hours=7)
    assert sorted(a.subject for a in run(store, clock, **only("long_running", factor=3, max_hours=10))) == [
        "quick", "unknown"]


def test_stale_lease_waits_for_its_for(store, clock):
    store.register_workset("w", "b", "p/w/")
    store.acquire_lock("w", "engine-gone", lease_seconds=60)
    clock.advance(60 + 31)  # expired beyond the default 30 s skew
    [alert] = run(store, clock, **only("stale_lease", for_seconds=120))
    assert alert.state is AlertState.PENDING
    clock.advance(120)
    [alert] = run(store, clock, **only("stale_lease", for_seconds=120))
    assert alert.state is AlertState.FIRING and alert.subject == "w"


def test_lock_failure_spike_from_history(store, clock):
    store.record_metric_samples([
        MetricSample(name="lock_failures", at=clock.now() - timedelta(minutes=m), value=15,
                     dimensions={"monitor": "engine-a"}) for m in range(4)
    ])
    [alert] = run(store, clock, **only("lock_failures", threshold=50, window_seconds=300))
    assert alert.value == 60


def test_error_rate_needs_enough_events(store, clock):
    store.register_workset("ok1", "b", "p/ok1/", state="complete")
    store.register_workset("bad1", "b", "p/bad1/", state="failed")
    store.register_workset("bad2", "b", "p/bad2/", state="error")
    assert run(store, clock, **only("error_rate", threshold=0.5, min_events=4)) == []
    store.register_workset("bad3", "b", "p/bad3/", state="failed")
    [alert] = run(store, clock, **only("error_rate", threshold=0.5, min_events=4))
    assert alert.value == 0.75


def test_dead_lettered_until_retried(store, clock):
    store.register_workset("dead", "b", "p/dead/", state="failed", error_code="WS-DAT-003")
    [alert] = run(store, clock, **only("dead_lettered"), keep_firing_for_seconds=0)
    assert alert.subject == "dead" and "WS-DAT-003" in alert.summary
    store.update_state("dead", "ready", "operator retry", "alice@ops")
    run(store, clock, **only("dead_lettered"), keep_firing_for_seconds=0)
    clock.advance(1)
    assert run(store, clock, **only("dead_lettered"), keep_firing_for_seconds=0) == []


def test_cluster_full_only_while_urgent_work_waits(store, clock):
    store.put_cluster_status(ClusterStatus(name="c1", max_concurrent_worksets=2, active_worksets=2,
                                           max_vcpus=64, vcpus_used=32, updated_at=clock.now()))
    store.put_cluster_status(ClusterStatus(name="c2", max_concurrent_worksets=2, active_worksets=1,
                                           max_vcpus=64, vcpus_used=8, updated_at=clock.now()))
    assert run(store, clock, **only("cluster_full", for_seconds=0)) == []
    store.register_workset("u", "b", "p/u/", priority="urgent")
    [alert] = run(store, clock, **only("cluster_full", for_seconds=0))
    assert alert.subject == "c1"


def test_engine_heartbeat_missing_three_intervals(store, clock):
    store.record_monitor_heartbeat("engine-b", "host-b", 123, "0.1", role="engine")
    store.record_monitor_heartbeat("dash", "host-c", 7, "0.1", role="dashboard")
    clock.advance(179)
    assert run(store, clock, **only("engine_heartbeat", interval_seconds=60)) == []
    clock.advance(2)
    [alert] = run(store, clock, **only("engine_heartbeat", interval_seconds=60))
    assert alert.subject == "engine-b" and alert.state is AlertState.FIRING


def test_backend_errors_persisting_and_scrubbed(store, clock):
    record_health(store, "dynamodb", False, "AccessDenied reading /home/alice/.aws/key.pem", clock=clock)
    [alert] = run(store, clock, **only("backend_errors", for_seconds=300))
    assert alert.state is AlertState.PENDING
    assert "/home/alice" not in alert.description and "key.pem" not in alert.description
    clock.advance(200)
    record_health(store, "dynamodb", False, "still failing", clock=clock)
    clock.advance(101)  # 301 s since the first failure
    [alert] = run(store, clock, **only("backend_errors", for_seconds=300))
    assert alert.state is AlertState.FIRING
    record_health(store, "dynamodb", True, clock=clock)
    clock.advance(1)
    run(store, clock, **only("backend_errors", for_seconds=300), keep_firing_for_seconds=0)
    clock.advance(1)
    assert run(store, clock, **only("backend_errors", for_seconds=300), keep_firing_for_seconds=0) == []


def test_evaluator_record_health_is_throttled(store, clock):
    ev = AlertEvaluator(settings(), store, clock=clock)
    ev.record_health("s3", False, "SlowDown")
    first = store.kv_get("health", "s3")
    clock.advance(10)
    ev.record_health("s3", False, "SlowDown")
    assert store.kv_get("health", "s3") == first
    ev.record_health("s3", True)
    assert store.kv_get("health", "s3")["ok"] is True


def test_channel_failing_from_notifier_health(store, clock):
    store.kv_put("notify_health", "slack", {"ok": False, "consecutive_failures": 4,
                                            "last_error": "slack: server error (HTTP 500)"})
    [alert] = run(store, clock, **only("channel_failing", threshold=3))
    assert alert.subject == "slack" and "HTTP 500" in alert.description


def test_a_storm_is_grouped_beyond_max_alerts_per_rule(store, clock):
    note = RecordingNotifier()
    alerts = dict(only("dead_lettered"), max_alerts_per_rule=10)
    for i in range(25):
        store.register_workset(f"ws-{i:02d}", "b", f"p/ws-{i:02d}/", state="failed")
    ev = AlertEvaluator(settings(**alerts), store, clock=clock, notifier=note)
    ev.evaluate()
    active = store.list_alerts()
    assert len(active) == 11 and len(note.events("alert_firing")) == 11
    group = next(a for a in active if a.subject == "*")
    assert group.value == 15 and "ws-10" in group.description
    for i in range(25, 30):
        store.register_workset(f"ws-{i:02d}", "b", f"p/ws-{i:02d}/", state="failed")
    clock.advance(30)
    ev.evaluate()
    assert len(store.list_alerts()) == 11 and len(note.events("alert_firing")) == 11
    assert store.get_alert(group.alert_id).value == 20


def test_repeat_interval_renotifies_only_unacknowledged_firing(store, clock):
    note = RecordingNotifier()
    ev = evaluator(store, clock, note, Switch("x"), queue_depth={"for_seconds": 0}, repeat_interval_seconds=3600)
    ev.evaluate()
    for _ in range(130):  # 65 minutes
        clock.advance(30)
        ev.evaluate()
    assert [e[0] for e in note.sent] == ["alert_firing", "alert_firing"]


def test_an_alert_that_never_fired_resolves_silently(store, clock):
    note = RecordingNotifier()
    cond = Switch("x")
    ev = evaluator(store, clock, note, cond, queue_depth={"for_seconds": 600}, keep_firing_for_seconds=60)
    [alert] = ev.evaluate()
    cond.on.clear()
    clock.advance(30)
    ev.evaluate()
    clock.advance(60)
    [resolved] = ev.evaluate()
    assert resolved.alert_id == alert.alert_id and resolved.state is AlertState.RESOLVED
    assert resolved.fired_at is None and note.sent == []
