"""Engine service behaviour on a SQLite store without S3: claiming limits, lease loss, shutdown,
the sweep, and the --once exit codes."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from datetime import timedelta

import pytest

from wsmon.config.settings import Settings
from wsmon.engine.runner import Aborted, BaseRunner
from wsmon.engine.process import run_once
from wsmon.engine.service import Engine
from wsmon.engine.store import open_store
from wsmon.core.models import WorksetState

S = WorksetState


def settings_for(tmp_path, **runner) -> Settings:
    return Settings(
        monitor_id="engine-t", state_dir=tmp_path / "state",
        store={"url": f"sqlite:///{tmp_path / 'state.db'}"},
        clusters={"static": [{"name": "c1", "max_vcpus": 1000, "max_memory_gb": 10000,
                              "max_concurrent_worksets": 10}], "slurm_usage": False},
        discovery={"ready_lock_backoff_seconds": 0},
        runner={"kind": "simulated", "simulated_transient_failure_rate": 0,
                "simulated_permanent_failure_rate": 0, "simulated_step_seconds": {},
                **runner},
        metrics={"sink": "none"},
    )


class BlockingRunner(BaseRunner):
    """A runner whose one step waits until released or aborted."""

    kind = "blocking"

    def __init__(self, settings, clock) -> None:
        super().__init__(settings, clock=clock)
        self.release = threading.Event()
        self.entered = threading.Semaphore(0)
        self.fail_with: Exception | None = None

    def active_steps(self) -> list[str]:
        return ["stage"]

    def run_step(self, name, workset, job, book, state, previous):
        rec = book.start(name, None)
        self.entered.release()
        while not self.release.is_set():
            if job.abort.wait(0.05):
                raise Aborted(job.abort_reason)
        if self.fail_with is not None:
            raise self.fail_with
        book.finish(rec, "succeeded")
        return None


@pytest.fixture
def env(tmp_path, clock):
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}", clock=clock)
    yield tmp_path, clock, store
    store.close()


def register(store, *ids: str, **kw) -> None:
    for wid in ids:
        store.register_workset(wid, "b", f"p/{wid}/", estimate={"vcpus": 4, "memory_gb": 8}, **kw)


@contextmanager
def one_workset_running(env):
    """Workset "w" claimed and inside its (blocked) first step; the engine stopped afterwards."""
    tmp_path, clock, store = env
    register(store, "w")
    runner = BlockingRunner(settings_for(tmp_path), clock)
    engine = Engine(settings_for(tmp_path), store=store, clock=clock, runner=runner)
    try:
        engine.run_cycle()
        assert runner.entered.acquire(timeout=10)
        yield engine
    finally:
        runner.release.set()
        engine.stop(0)


def test_an_engine_claims_no_more_than_its_pool_and_says_why_the_rest_wait(env) -> None:
    tmp_path, clock, store = env
    register(store, "a", "b", "c", "d", "e")
    runner = BlockingRunner(settings_for(tmp_path), clock)
    engine = Engine(settings_for(tmp_path, max_parallel_worksets=2), store=store, clock=clock,
                    runner=runner)
    try:
        claimed = engine.run_cycle()["started"]
        assert len(claimed) == 2
        waiting = [ws for ws in store.iter_worksets(state=S.READY)]
        assert len(waiting) == 3
        assert all(ws.schedule_reason.startswith("waiting: this engine is busy") for ws in waiting)
        runner.release.set()
        assert engine.wait_idle(10)
        assert {store.get_workset(w).state for w in claimed} == {S.COMPLETE}
    finally:
        runner.release.set()
        engine.stop(0)


def test_a_lost_lease_stops_the_work_and_the_engine_overwrites_nothing(env) -> None:
    store = env[2]
    with one_workset_running(env) as engine:
        store.force_release("w", "op@host", "operator wants it back")
        engine.heartbeat()  # renewal fails with LeaseLost: the job is stopped
        assert engine.wait_idle(10)
        ws = store.get_workset("w")
        assert ws.state is S.READY
        assert [e.actor for e in store.events("w")][-1] == "op@host"


def test_an_operator_ignoring_a_running_workset_stops_its_work(env) -> None:
    """The fence does not move on an ignore, but the last event is the operator's, not ours:
    the heartbeat must treat it as a lost lease, not as the job's own finish."""
    store = env[2]
    with one_workset_running(env) as engine:
        current = store.get_workset("w").state
        store.update_state("w", S.IGNORED, "operator: bad sample sheet", "op@host",
                           expected_state=current)
        engine.heartbeat()
        assert engine.wait_idle(10)
        ws = store.get_workset("w")
        assert ws.state is S.IGNORED
        assert [e.actor for e in store.events("w")][-1] == "op@host"


def test_shutdown_gives_a_short_step_back_uncounted_when_grace_runs_out(env) -> None:
    tmp_path, clock, store = env
    register(store, "w")
    runner = BlockingRunner(settings_for(tmp_path), clock)
    engine = Engine(settings_for(tmp_path, kill_grace_seconds=0), store=store, clock=clock, runner=runner)
    engine.run_cycle()
    assert runner.entered.acquire(timeout=10)
    engine.stop(0)
    ws = store.get_workset("w")
    assert (ws.state, ws.attempts, ws.lock_owner) == (S.READY, 0, None)
    assert [s.status for s in ws.steps] == ["interrupted"]
    assert store.list_monitors() == []


def test_a_runner_crash_does_not_strand_the_workset(env) -> None:
    tmp_path, clock, store = env
    register(store, "w")
    runner = BlockingRunner(settings_for(tmp_path), clock)
    runner.fail_with = RuntimeError("unexpected runner bug")
    runner.release.set()
    engine = Engine(settings_for(tmp_path), store=store, clock=clock, runner=runner)
    try:
        engine.run_cycle(wait=True, timeout=10)
        ws = store.get_workset("w")
        assert ws.state is S.RETRYING
        assert "engine error: unexpected runner bug" in ws.error_details
    finally:
        engine.stop(0)


def test_sweep_moves_due_retries_back_and_finishes_a_half_written_retry(env) -> None:
    tmp_path, clock, store = env
    register(store, "due", "later", "half")
    for wid, after in (("due", 10), ("later", 1000)):
        store.update_state(wid, S.ERROR, "failed", "x")
        store.update_state(wid, S.RETRYING, "retry", "x", retry_after=clock.now() + timedelta(seconds=after))
    store.update_state("half", S.ERROR, "failed", "x", retry_after=clock.now() + timedelta(seconds=5))
    engine = Engine(settings_for(tmp_path), store=store, clock=clock)
    try:
        clock.advance(61)
        result = engine.sweep()
        assert result["due"] == ["due"]
        assert store.get_workset("later").state is S.RETRYING
        assert store.get_workset("half").state is S.RETRYING
    finally:
        engine.stop(0)


def test_simulated_worksets_complete_and_retry_with_their_backoff(tmp_path, clock) -> None:
    settings = settings_for(tmp_path, simulated_transient_failure_rate=1.0,
                            simulated_step_seconds={"run": 30})
    store = open_store(settings.store_url, clock=clock)
    register(store, "w1", "w2")
    engine = Engine(settings, store=store, clock=clock)
    try:
        engine.run_cycle(wait=True, timeout=10)
        assert {store.get_workset(w).state for w in ("w1", "w2")} == {S.RETRYING}
        ws = store.get_workset("w1")
        failed_at = [e.at for e in store.events("w1") if e.to_state is S.ERROR][-1]
        # first retry: full jitter under base (60 s); the decision is taken just before the
        # error is written, and the other workset's simulated steps move the shared clock
        assert ws.retry_after <= failed_at + timedelta(seconds=60)
        assert "retry 1 of 3" in store.events("w1")[-1].reason
        clock.advance(61)
        engine.run_cycle(wait=True, timeout=10)
        assert [(store.get_workset(w).state, store.get_workset(w).attempts) for w in ("w1", "w2")] == [
            (S.COMPLETE, 2), (S.COMPLETE, 2)]
    finally:
        engine.stop(0)
        store.close()


def test_once_exits_0_after_a_cycle_and_4_when_the_store_is_unusable(tmp_path) -> None:
    settings = settings_for(tmp_path)
    store = open_store(settings.store_url)
    register(store, "w")
    store.close()
    assert run_once(settings, timeout=30) == 0
    store = open_store(settings.store_url)
    try:
        assert store.get_workset("w").state is S.COMPLETE
    finally:
        store.close()
    broken = tmp_path / "broken.db"
    broken.write_bytes(b"this is not a database" * 100)
    bad = settings.model_copy(update={"store": settings.store.model_copy(update={"url": f"sqlite:///{broken}"})})
    assert run_once(bad, timeout=5) == 4


def test_cluster_usage_is_published_for_the_dashboard(env) -> None:
    store = env[2]
    with one_workset_running(env) as engine:
        engine.schedule_pass()  # the next pass sees the running workset on c1
        (c1,) = store.list_cluster_status()
        assert (c1.name, c1.active_worksets, c1.vcpus_used, c1.memory_gb_used) == ("c1", 1, 4, 8.0)


def test_an_ssh_runner_without_a_host_is_a_configuration_error(tmp_path) -> None:
    settings = settings_for(tmp_path)
    bad = settings.model_copy(update={"runner": settings.runner.model_copy(update={"kind": "ssh"})})
    assert run_once(bad, timeout=5) == 2


@pytest.mark.parametrize("where", ["closed port", "missing bucket"])
def test_once_exits_5_when_a_discovery_source_cannot_be_listed(tmp_path, moto_endpoint, unique_name,
                                                               capsys, where) -> None:
    endpoint = "http://127.0.0.1:9" if where == "closed port" else moto_endpoint
    settings = settings_for(tmp_path).model_copy(update={
        "aws": Settings(aws={"endpoint_url": endpoint, "region": "us-west-2",
                             "max_attempts": 1}).aws,
        "discovery": Settings(discovery={"sources": [{"bucket": unique_name, "prefix": "ws/"}],
                                         "ready_lock_backoff_seconds": 0}).discovery,
    })
    store = open_store(settings.store_url)
    register(store, "w")
    store.close()
    assert run_once(settings, timeout=30) == 5
    out = capsys.readouterr().out
    assert "cycle_source_unreachable" in out and f"s3://{unique_name}/ws/" in out
    store = open_store(settings.store_url)
    try:  # the rest of the cycle still ran
        assert store.get_workset("w").state is S.COMPLETE
    finally:
        store.close()


def test_an_operator_force_release_is_notified_once_by_one_engine(env) -> None:
    import json

    tmp_path, clock, store = env
    settings = settings_for(tmp_path).model_copy(update={"notify": Settings(notify={
        "slack_webhook_url": "http://127.0.0.1:9/services/T000/B000/XXXXXXXX",
        "allow_inline_secrets": True}).notify})
    register(store, "w", "dead")
    assert store.acquire_lock("w", "engine-x", lease_seconds=3600) is not None
    assert store.acquire_lock("dead", "crashed", lease_seconds=10) is not None
    store.force_release("w", "op@host", "node died", expected_fence=1)
    clock.advance(60)  # "dead"'s lease is long expired: the sweep recovers it, no operator did

    def force_release_notes() -> list:
        return [e for e in store.list_notifications() if e.event_type == "lock_force_released"]

    engine = Engine(settings, store=store, clock=clock)
    other = Engine(settings, store=store, clock=clock, monitor_id="engine-other")
    try:
        swept = engine.sweep()
        assert swept["recovered"] == ["dead"] and swept["force_released"] == ["w"]
        (note,) = force_release_notes()
        payload = json.dumps(note.payload)
        assert "op@host" in payload and "engine-x" in payload and "node died" in payload
        clock.advance(1)
        assert engine.sweep()["force_released"] == []
        assert other.notice_force_releases() == []  # the first engine holds the notice lease
    finally:
        engine.stop(0)
    restarted = Engine(settings, store=store, clock=clock)
    try:
        clock.advance(1)
        assert restarted.sweep()["force_released"] == []
        assert len(force_release_notes()) == 1
    finally:
        restarted.stop(0)
        other.stop(0)


def test_a_short_store_outage_at_the_end_delays_the_final_transition_by_seconds(env) -> None:
    from wsmon.engine.store import StoreUnavailable

    tmp_path, clock, store = env
    register(store, "w")
    outage = {"left": 3}
    real_update_state = store.update_state

    def flaky_update_state(workset_id, to, *args, **kwargs):
        if S(to) is S.COMPLETE and outage["left"] > 0:
            outage["left"] -= 1
            raise StoreUnavailable("database is locked (injected outage)")
        return real_update_state(workset_id, to, *args, **kwargs)

    store.update_state = flaky_update_state
    engine = Engine(settings_for(tmp_path), store=store, clock=clock)
    try:
        engine.run_cycle(wait=True, timeout=30)
        ws = store.get_workset("w")
        assert ws.state is S.COMPLETE and outage["left"] == 0
        # retried after 0.5 + 1 + 2 s of the engine's clock, not a lease period (300 s) later
        last_step_done = max(step.finished_at for step in ws.steps)
        assert (ws.state_changed_at - last_step_done).total_seconds() == 3.5
        assert not any("restart" in e.reason for e in store.events("w"))
    finally:
        engine.stop(0)


def test_ready_work_with_no_cluster_is_said_once_and_raises_an_alert(env) -> None:
    from structlog.testing import capture_logs

    from wsmon.engine.alerts import AlertEvaluator

    tmp_path, clock, store = env
    register(store, "w")
    settings = settings_for(tmp_path).model_copy(deep=True)
    settings.clusters.static = []
    settings.clusters.pcluster_discovery = False
    settings.alerts.backend_errors.for_seconds = 0
    engine = Engine(settings, store=store, clock=clock)
    try:
        with capture_logs() as logs:
            assert engine.run_cycle()["started"] == []
            engine.run_cycle()
        said = [entry for entry in logs if entry["event"] == "no_cluster"]
        assert len(said) == 1 and "no cluster is configured" in said[0]["detail"]
        AlertEvaluator(settings, store, clock=clock).evaluate()
        [alert] = [a for a in store.list_alerts() if a.subject == "clusters"]
        assert "1 ready workset(s) wait: no cluster" in alert.description
    finally:
        engine.stop(0)
