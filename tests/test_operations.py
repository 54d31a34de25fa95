"""wsmon.operations against a real SQLite store and real (moto) S3 folders: the one rule set
every front end uses. The issue-12 observations are kept here as regression tests (the dashboard
and CLI sides are in test_app_actions.py, test_ops_cli.py and test_operations_frontends.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from ops_world import S3Folders, s3_folders, validator_for

from wsmon.config.settings import Settings
from wsmon.core.clock import ManualClock
from wsmon.core.models import Alert, AlertState, Severity, WorksetState
from wsmon.engine.store import open_store
from wsmon.operations import (
    ACTIONS,
    DurationError,
    Operations,
    Result,
    format_duration,
    parse_duration,
)

S = WorksetState
OPERATOR = "alice@bastion"
INVALID_DEMO_DEFECTS = {  # the demo's invalid worksets, each reaching `complete` before issue 12
    "invalid-shell-in-dy-r": "shell",
    "invalid-bad-yaml": "bad_yaml",
    "invalid-no-r1-column": "no_r1_column",
    "invalid-fastq-escape": "escape",
    "invalid-missing-sheet": "missing_sheet",
}


@pytest.fixture
def folders(moto_endpoint: str, unique_name: str) -> S3Folders:
    return s3_folders(moto_endpoint, unique_name)


@pytest.fixture
def store(tmp_path, clock: ManualClock):
    s = open_store(f"sqlite:///{tmp_path / 'ops.db'}", clock=clock, max_clock_skew=5)
    yield s
    s.close()


@pytest.fixture
def ops(store, folders: S3Folders) -> Operations:
    return Operations(store, OPERATOR, validator=validator_for(folders))


def register(store, folders: S3Folders, name: str, state: str = "error", **fields):
    store.register_workset(name, folders.bucket, f"src/{name}/", state=state, **fields)
    return store.get_workset(name)


def running(store, folders: S3Folders, name: str, lease_seconds: float = 300):
    register(store, folders, name, state="ready")
    lease = store.acquire_lock(name, "engine-1", lease_seconds=lease_seconds)
    store.update_state(name, "in_progress", "pipeline started", "engine-1", lease=lease,
                       cluster_name="cluster-a")
    return store.get_workset(name), lease


# -- observation 1: retry skips validation ------------------------------------------------------

@pytest.mark.parametrize("name,defect", sorted(INVALID_DEMO_DEFECTS.items()))
def test_retry_of_an_invalid_workset_stays_in_error_with_the_new_findings(
        store, folders, ops, name, defect):
    folders.put(name, defect=defect)
    shown = register(store, folders, name, error_code="WS-OLD-001", error_details="old",
                     findings=[{"code": "WS-OLD-001", "severity": "error", "message": "old"}])
    outcome = ops.retry(shown)
    assert outcome.result is Result.REFUSED and "still invalid" in outcome.message
    assert outcome.findings and all(f["code"] != "WS-OLD-001" for f in outcome.findings)
    after = store.get_workset(name)
    assert after.state is S.ERROR
    assert after.error_code == outcome.findings[0]["code"] != "WS-OLD-001"
    assert [f["code"] for f in after.findings] == [f["code"] for f in outcome.findings]
    assert store.acquire_lock(name, "engine-1") is None  # so it never reaches in_progress


def test_retry_of_a_fixed_folder_goes_to_ready_and_clears_the_old_error(store, folders, ops):
    folders.put("ws-1", defect="shell")
    shown = register(store, folders, "ws-1")
    assert ops.retry(shown).refused
    folders.put("ws-1")  # the operator fixed the folder
    outcome = ops.retry(store.get_workset("ws-1"))
    assert outcome.done, outcome.message
    after = store.get_workset("ws-1")
    assert after.state is S.READY and after.error_code is None
    assert store.events("ws-1")[-1].actor == OPERATOR


def test_every_path_into_ready_refuses_an_invalid_folder(store, folders, ops, clock):
    """Poll, retry, bulk retry, re-run, un-ignore: none lets an invalid workset be claimed."""
    from wsmon.engine.s3.source import S3Source

    # the poll: a new folder that does not validate is registered in error
    folders.s3.put_object(Bucket=folders.bucket, Key="src/README", Body=b"x")
    folders.put("polled", defect="escape")
    settings = Settings(discovery={"sources": [{"bucket": folders.bucket, "prefix": "src/"}],
                                   "ready_lock_backoff_seconds": 0})
    S3Source(settings, store, clock=clock, s3_client=folders.s3, monitor_id="mon-1").poll()
    assert store.get_workset("polled").state is S.ERROR
    paths = {
        "retry": ("error", lambda ws: ops.retry(ws)),
        "bulk retry": ("failed", lambda ws: ops.run_batch("retry", [ws])[0]),
        "re-run": ("complete", lambda ws: ops.rerun(ws)),
        "un-ignore": ("ignored", lambda ws: ops.unignore(ws)),
    }
    for name, (state, act) in paths.items():
        wid = name.replace(" ", "-")
        folders.put(wid, defect="shell")
        shown = register(store, folders, wid, state=state)
        outcome = act(shown)
        assert outcome.result is Result.REFUSED, (name, outcome)
        assert store.get_workset(wid).state.value == state, name
    for ws in store.iter_worksets():
        assert store.acquire_lock(ws.workset_id, "engine-1") is None, ws.workset_id


def test_without_a_validator_nothing_goes_back_to_ready(store, folders):
    shown = register(store, folders, "ws-1")
    outcome = Operations(store, OPERATOR).retry(shown)
    assert outcome.refused and "re-validate" in outcome.message
    assert store.get_workset("ws-1").state is S.ERROR


# -- observation 2: one rule set ---------------------------------------------------------------

def test_retry_of_complete_is_refused_and_points_to_rerun(store, folders, ops):
    folders.put("done")
    shown = register(store, folders, "done", state="complete")
    outcome = ops.retry(shown)
    assert outcome.refused and "re-run" in outcome.message
    assert ops.rerun(shown).done and store.get_workset("done").state is S.READY


def test_ignore_of_a_running_workset_is_refused_whatever_its_lease(store, folders, ops, clock):
    live, _ = running(store, folders, "live")
    outcome = ops.ignore(live)
    assert outcome.refused and "use stop" in outcome.message
    clock.advance(hours=2)  # the lease is long expired now: still a run, still stop
    assert ops.ignore(store.get_workset("live")).refused
    assert store.get_workset("live").state is S.IN_PROGRESS


def test_preconditions_match_the_rule_table(store, folders, ops, clock):
    """Each workset rule admits exactly the states its table row names (and so the docs)."""
    for action in ("retry", "rerun", "stop", "release", "ignore", "unignore", "priority"):
        for state in S:
            name = f"{action}-{state.value}"
            if state in (S.LOCKED, S.IN_PROGRESS):
                register(store, folders, name, state="ready")
                lease = store.acquire_lock(name, "engine-1", lease_seconds=60)
                if state is S.IN_PROGRESS:
                    store.update_state(name, state, "started", "engine-1", lease=lease)
            else:
                register(store, folders, name, state=state.value)
            ws = store.get_workset(name)
            assert ws.state is state
            allowed = ops.check(action, ws) is None
            expected = state in ACTIONS[action].states
            if action == "release" and expected:
                assert not allowed  # a live holder: refused (stop)
                clock.advance(minutes=5)
                allowed = ops.check(action, store.get_workset(name)) is None
                clock.advance(minutes=-5)
            assert allowed is expected, (action, state)


# -- observations 3 and 4: release and stop -----------------------------------------------------

def test_release_of_a_live_holder_is_refused_and_points_to_stop(store, folders, ops):
    live, _ = running(store, folders, "live")
    outcome = ops.release(live)
    assert outcome.refused and "use stop" in outcome.message and "engine-1 is alive" in outcome.message
    after = store.get_workset("live")
    assert after.state is S.IN_PROGRESS and after.fence == live.fence


def test_release_of_a_gone_holder_fences_it_out(store, folders, ops, clock):
    gone, lease = running(store, folders, "gone", lease_seconds=60)
    clock.advance(minutes=5)
    outcome = ops.release(store.get_workset("gone"), "engine-1 crashed")
    assert outcome.done, outcome.message
    after = store.get_workset("gone")
    assert after.state is S.READY and after.fence == gone.fence + 1
    from wsmon.engine.store import LeaseLost

    with pytest.raises(LeaseLost):
        store.renew_lock(lease)


def test_release_judges_the_holder_by_its_engines_heartbeat_not_only_its_lease(store, folders, clock):
    """A crashed engine's lease can have minutes left; release is for exactly that stuck lock.
    While the holder's engine is heard from, release stays refused (use stop)."""
    ops = Operations(store, OPERATOR, engine_stale_after=timedelta(seconds=60))
    store.record_monitor_heartbeat("engine-1", "headnode", 4242, "0", role="engine")
    held, _ = running(store, folders, "held", lease_seconds=600)
    assert ops.check("release", held) is not None  # heartbeat fresh, lease live: alive
    refused = ops.release(held)
    assert refused.refused and "use stop" in refused.message
    clock.advance(minutes=2)  # no heartbeat since; the lease still has 8 minutes
    assert store.get_workset("held").lock_expires_at > clock.now()
    assert ops.check("release", held) is None
    outcome = ops.release(held, "engine-1 stopped answering")
    assert outcome.done, outcome.message
    assert store.get_workset("held").state is S.READY


def test_release_of_a_holder_the_store_never_heard_from_is_allowed(store, folders, clock):
    ops = Operations(store, OPERATOR, engine_stale_after=timedelta(seconds=60))
    held, _ = running(store, folders, "orphan", lease_seconds=600)
    assert ops.release(held, "no such engine").done


@pytest.mark.parametrize("to", [S.IGNORED, S.ERROR])
def test_stop_is_one_fenced_transition_no_engine_can_claim_after(store, folders, ops, clock, to):
    _live, lease = running(store, folders, "live")
    clock.advance(hours=20)
    store.renew_lock(lease)
    outcome = ops.stop(store.get_workset("live"), to, "wrong reference genome")
    assert outcome.done, outcome.message
    after = store.get_workset("live")
    assert after.state is to and after.lock_owner is None
    event = store.events("live")[-1]
    assert event.from_state is S.IN_PROGRESS and event.to_state is to
    assert event.actor == OPERATOR and "wrong reference genome" in event.reason
    assert "was held by engine-1" in event.reason and "ran 20h00m" in event.reason
    assert store.acquire_lock("live", "engine-2") is None
    from wsmon.engine.store import LeaseLost

    with pytest.raises(LeaseLost):  # the holder's next heartbeat: it ends its tmux session
        store.renew_lock(lease)


def test_stop_never_lands_on_a_lease_that_changed_hands(store, folders, ops, clock):
    shown, _ = running(store, folders, "live", lease_seconds=60)
    clock.advance(minutes=5)
    assert store.acquire_lock("live", "engine-2") is not None  # takeover after expiry
    outcome = ops.stop(shown, "error")
    assert outcome.changed and "engine-2" in outcome.message
    assert store.get_workset("live").lock_owner == "engine-2"


def test_stop_only_ends_in_ignored_or_error(store, folders, ops):
    live, _ = running(store, folders, "live")
    assert ops.stop(live, "ready").refused
    assert store.get_workset("live").state is S.IN_PROGRESS


# -- observation 7: resolve by hand -------------------------------------------------------------

def test_resolve_by_hand_is_audited_and_a_new_firing_opens_a_new_alert(store, clock):
    from wsmon.engine.alerts import AlertEvaluator, Observation

    class Always:
        def __call__(self, ctx, cfg):
            return [Observation(subject="normal", summary="queue deep", value=30.0)]

    evaluator = AlertEvaluator(Settings(monitor_id="engine-a",
                                        alerts={"queue_depth": {"for_seconds": 0}}),
                               store, clock=clock, rules={"queue_depth": Always()})
    evaluator.evaluate()
    [first] = store.list_alerts()
    assert first.state is AlertState.FIRING
    ops = Operations(store, OPERATOR)
    assert ops.resolve(first, "").refused  # a reason is required
    outcome = ops.resolve(first, "capacity added by hand")
    assert outcome.done and store.get_alert(first.alert_id).state is AlertState.RESOLVED
    clock.advance(60)
    evaluator.evaluate()
    [second] = store.list_alerts()
    assert second.alert_id != first.alert_id and second.state is AlertState.FIRING
    entries = [e for e in store.list_operator_actions() if e.action == "resolve"]
    assert [(e.actor, e.outcome, e.reason) for e in entries][0] == (
        OPERATOR, "done", "capacity added by hand")


def test_ack_of_a_resolved_alert_is_refused_and_expiry_uses_the_duration_syntax(store, clock):
    now = clock.now()
    store.put_alert(Alert(alert_id="al-1", rule="r", subject="s", severity=Severity.WARNING,
                          state=AlertState.FIRING, summary="x", pending_since=now, fired_at=now,
                          updated_at=now))
    ops = Operations(store, OPERATOR)
    outcome = ops.acknowledge(store.get_alert("al-1"), "on it", parse_duration("4h"))
    assert outcome.done and store.get_alert("al-1").ack_expires_at == now + timedelta(hours=4)
    store.resolve_alert("al-1", "engine")
    assert ops.acknowledge(store.get_alert("al-1")).refused


# -- the audit trail ---------------------------------------------------------------------------

def test_every_operation_refused_ones_included_is_audited(store, folders, ops):
    live, _ = running(store, folders, "live")
    ops.ignore(live, "duplicate")  # refused
    ops.stop(live, "ignored", "duplicate")  # done
    ops.set_priority(store.get_workset("live"), "urgent")
    ops.silence("queue_depth", None, parse_duration("30m"), "maintenance")
    entries = store.list_operator_actions()  # newest first
    assert [(e.action, e.outcome) for e in entries] == [
        ("silence", "done"), ("priority", "done"), ("stop", "done"), ("ignore", "refused")]
    assert all(e.actor == OPERATOR for e in entries)
    assert entries[3].target == "live" and "use stop" in entries[3].detail
    assert entries[2].reason == "duplicate"
    assert [e.action for e in store.list_operator_actions(limit=2)] == ["silence", "priority"]
    assert [e.action for e in store.list_operator_actions(workset_id="live")] == [
        "priority", "stop", "ignore"]


# -- one duration syntax -----------------------------------------------------------------------

@pytest.mark.parametrize("text,seconds", [("90s", 90), ("30m", 1800), ("4h", 14400),
                                          ("2d", 172800), ("1h30m", 5400), (" 2H ", 7200)])
def test_durations(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["30", "", "soon", "0m", "-5m", "5 minutes", "1w"])
def test_a_duration_needs_a_number_and_a_unit(text):
    with pytest.raises(DurationError, match="90s, 30m, 4h, 2d"):
        parse_duration(text)


def test_durations_are_shown_in_the_same_units():
    assert [format_duration(timedelta(seconds=s)) for s in (59, 90, 3 * 3600 + 300, 3 * 86400)] \
        == ["59s", "1m", "3h05m", "3d00h"]
