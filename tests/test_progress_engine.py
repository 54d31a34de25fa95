"""The engine's progress tracker, the stored progress/actual fields, and the two alert rules that
read them (pipeline_stalled, over_budget). Time is a ManualClock; sacct is the fake on PATH."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from wsmon.config.settings import Settings
from wsmon.core.models import ActualUsage, AlertState, RunProgress, StepRecord
from wsmon.engine.alerts import AlertEvaluator
from wsmon.engine.progress.tracker import ProgressTracker
from wsmon.engine.runner.base import session_name
from wsmon.engine.runner.hosts import LocalHost, SshHost
from wsmon.engine.store import open_store

HERE = Path(__file__).parent / "fixtures" / "progress"
FAKE_BIN = HERE / "bin"
OTHER_RULES = ["queue_depth", "urgent_waiting", "long_running", "stale_lease", "lock_failures",
               "error_rate", "dead_lettered", "cluster_full", "engine_heartbeat", "channel_failing",
               "backend_errors", "pipeline_stalled", "over_budget"]


def fixture_text(name: str) -> str:
    path = HERE / name
    if not path.is_file():
        pytest.fail(f"test data {path} is missing (it belongs in the repository)")
    return path.read_text()


@pytest.fixture
def store(tmp_path, clock):
    s = open_store(f"sqlite:///{tmp_path}/s.db", clock=clock)
    yield s
    s.close()


@pytest.fixture
def fake_sacct(monkeypatch, tmp_path):
    if not (FAKE_BIN / "sacct").is_file():
        pytest.fail("fake sacct is missing from tests/fixtures/progress/bin")
    monkeypatch.setenv("PATH", f"{FAKE_BIN}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SACCT_DATA", str(HERE / "sacct_parsable2.txt"))
    calls = tmp_path / "sacct-calls"
    monkeypatch.setenv("FAKE_SACCT_CALLS", str(calls))
    return calls


class LocalRunner:
    """What the tracker uses of CommandRunner: its host."""

    host = LocalHost()


def settings(**extra: Any) -> Settings:
    return Settings(monitor_id="engine-a", **extra)


def running_workset(store, clock, log: Path, workset_id: str = "ws1", **fields: Any):
    store.register_workset(workset_id, "b", f"p/{workset_id}/", **fields)
    lease = store.acquire_lock(workset_id, "engine-a", lease_seconds=86400)
    store.update_state(workset_id, "in_progress", "started", "engine-a", lease=lease,
                       cluster_name="prod", steps=[StepRecord(name="run", status="running",
                                                              started_at=clock.now(), log_path=str(log))])
    return lease


@pytest.fixture(params=["sqlite", "dynamodb"])
def any_store(request, tmp_path, clock, unique_name):
    if request.param == "sqlite":
        s = open_store(f"sqlite:///{tmp_path}/any.db", clock=clock)
    else:
        endpoint = request.getfixturevalue("moto_endpoint")
        s = open_store(f"dynamodb://{unique_name}?region=us-west-2&endpoint_url={endpoint}", clock=clock)
        s.init_schema()
    yield s
    s.close()


def test_progress_and_actual_persist_in_the_store(any_store, clock):
    store = any_store
    store.register_workset("ws1", "b", "p/ws1/")
    progress = RunProgress(status="ok", steps_done=3, steps_total=10, percent=30.0,
                           running_rules={"dedup": 2}, last_progress_at=clock.now(),
                           eta=clock.now() + timedelta(hours=1), slurm_job_ids=["1", "2"],
                           session="wsmon-ws1", log_path="/x/run.log")
    store.update_fields("ws1", progress=progress, actual=ActualUsage(vcpu_hours=1.5, cost_usd=0.07, jobs=2))
    ws = store.get_workset("ws1")
    assert ws.progress == progress
    assert ws.actual.vcpu_hours == 1.5 and ws.actual.jobs == 2


def test_tracker_follows_the_log_measures_cost_and_writes_the_final_figures(store, clock, tmp_path, fake_sacct):
    log = tmp_path / "run.log"
    lease = running_workset(store, clock, log)
    tracker = ProgressTracker(settings(progress={"partition_prices": {"prod": {"i192": 0.03}}}),
                              store, LocalRunner(), actor="engine-a", clock=clock)

    tracker.observe({"ws1": lease})
    ws = store.get_workset("ws1")
    assert ws.progress.status == "log not written yet" and ws.progress.percent is None
    assert ws.progress.session == session_name(tracker.settings, "ws1") and ws.progress.log_path == str(log)

    log.write_text(fixture_text("snakemake_run.log"))
    clock.advance(minutes=1)
    tracker.observe({"ws1": lease})
    ws = store.get_workset("ws1")
    assert (ws.progress.steps_done, ws.progress.steps_total, ws.progress.percent) == (2, 6, 33.0)
    assert ws.progress.running_rules == {"dedup": 1}
    assert ws.progress.done_per_rule == {"bwa2a_sort": 2}
    assert ws.progress.slurm_job_ids == ["1234567", "1234568", "1234569", "1234570"]
    assert ws.progress.last_progress_at == clock.now()
    assert ws.log_tail.splitlines()[-1] == "Submitted job 2 with external jobid '1234570'."
    settled = (64 * 4109 + 64 * 4310 + 16 * 1772) / 3600
    assert ws.actual.vcpu_hours == pytest.approx(settled + 16 * 720 / 3600, abs=1e-3)
    assert ws.actual.cost_usd == pytest.approx(ws.actual.vcpu_hours * 0.03, abs=1e-3)
    assert ws.actual.jobs_running == 1 and ws.actual.status == "ok" and not ws.actual.final

    # nothing new: no write, no sacct call (the interval has not passed)
    before = ws.updated_at
    calls = fake_sacct.read_text().count("\n")
    clock.advance(seconds=30)
    tracker.observe({"ws1": lease})
    assert store.get_workset("ws1").updated_at == before
    assert fake_sacct.read_text().count("\n") == calls

    # more steps: an ETA from the rate
    clock.advance(minutes=10)
    with open(log, "a") as fh:
        fh.write("Finished job 2.\n4 of 6 steps (67%) done\n")
    tracker.observe({"ws1": lease})
    ws = store.get_workset("ws1")
    assert ws.progress.steps_done == 4 and ws.progress.eta is not None
    assert ws.progress.eta == pytest.approx(clock.now() + timedelta(minutes=10.5) / 1, abs=timedelta(seconds=1))

    # the attempt ended: a last sacct, the final figures, and the tracker forgets it
    store.update_state("ws1", "complete", "done", "engine-a", lease=lease)
    tracker.observe({})
    ws = store.get_workset("ws1")
    assert ws.actual.final and ws.progress.eta is None and ws.progress.running_rules == {}
    assert tracker.followed == []
    assert fake_sacct.read_text().splitlines()[-1] == "1234570"


def test_bad_input_is_a_status_and_never_stops_the_round(store, clock, tmp_path, monkeypatch):
    log = tmp_path / "run.log"
    log.write_bytes(b"\x00\xff garbage \x1b[2J\nSubmitted job 1 with external jobid '99'.\n")
    lease = running_workset(store, clock, log)
    other_log = tmp_path / "other.log"
    other_log.write_text("1 of 2 steps (50%) done\n")
    lease2 = running_workset(store, clock, other_log, "ws2")
    monkeypatch.setenv("PATH", str(tmp_path))  # no sacct anywhere
    tracker = ProgressTracker(settings(), store, LocalRunner(), actor="engine-a", clock=clock)
    tracker.observe({"ws1": lease, "ws2": lease2})
    ws = store.get_workset("ws1")
    assert ws.progress.status.startswith("progress unknown") and ws.progress.percent is None
    assert ws.actual.status == "sacct: not found on head node"
    assert "\x1b" not in ws.log_tail
    assert store.get_workset("ws2").progress.percent == 50.0


# -- alert rules --------------------------------------------------------------------------------

def rules_only(rule: str, **cfg: Any) -> dict[str, Any]:
    out: dict[str, Any] = {n: {"enabled": False} for n in OTHER_RULES}
    out[rule] = {"enabled": True, "keep_firing_for_seconds": 0, **cfg}
    return out


def evaluate(store, clock, rule: str, **cfg: Any):
    AlertEvaluator(Settings(monitor_id="engine-a", alerts=rules_only(rule, **cfg)), store, clock=clock).evaluate()
    return [a for a in store.list_alerts() if a.rule == rule]


def test_pipeline_stalled_fires_while_the_run_lives_and_resolves_when_progress_resumes(store, clock, tmp_path):
    lease = running_workset(store, clock, tmp_path / "run.log")
    store.update_fields("ws1", lease=lease, progress=RunProgress(
        status="ok", steps_done=3, steps_total=10, percent=30.0, last_progress_at=clock.now(),
        session="wsmon-ws1", log_path="/x/run.log"))
    clock.advance(minutes=59)
    assert evaluate(store, clock, "pipeline_stalled", threshold=60) == []
    clock.advance(minutes=2)
    [alert] = evaluate(store, clock, "pipeline_stalled", threshold=60)
    assert alert.state is AlertState.FIRING and alert.subject == "ws1"
    assert "3 of 10 steps" in alert.summary and "wsmon-ws1" in alert.description
    store.update_fields("ws1", lease=lease, progress=store.get_workset("ws1").progress.model_copy(
        update={"steps_done": 4, "last_progress_at": clock.now()}))
    [alert] = evaluate(store, clock, "pipeline_stalled", threshold=60)
    assert alert.cleared_at == clock.now()  # clear from now; resolved at the next evaluation
    clock.advance(seconds=30)
    assert evaluate(store, clock, "pipeline_stalled", threshold=60) == []
    assert store.get_alert(alert.alert_id).state is AlertState.RESOLVED


def test_pipeline_stalled_not_raised_once_the_run_step_ended(store, clock, tmp_path):
    lease = running_workset(store, clock, tmp_path / "run.log")
    store.update_fields("ws1", lease=lease, progress=RunProgress(last_progress_at=clock.now()),
                        steps=[StepRecord(name="run", status="succeeded", started_at=clock.now())])
    clock.advance(hours=5)
    assert evaluate(store, clock, "pipeline_stalled", threshold=60) == []


def test_over_budget_from_the_budget_or_the_estimate(store, clock, tmp_path):
    lease = running_workset(store, clock, tmp_path / "a.log", "with-budget",
                            metadata={"work": {"budget": 10.0}}, estimate={"cost_usd": 100.0})
    lease2 = running_workset(store, clock, tmp_path / "b.log", "estimate-only",
                             estimate={"cost_usd": 4.0})
    store.update_fields("with-budget", lease=lease, actual=ActualUsage(vcpu_hours=200, cost_usd=9.5, jobs=3))
    store.update_fields("estimate-only", lease=lease2, actual=ActualUsage(vcpu_hours=100, cost_usd=5.0, jobs=2))
    assert evaluate(store, clock, "over_budget", estimate_factor=1.5) == []
    store.update_fields("with-budget", lease=lease, actual=ActualUsage(vcpu_hours=230, cost_usd=11.5, jobs=4))
    store.update_fields("estimate-only", lease=lease2, actual=ActualUsage(vcpu_hours=130, cost_usd=6.5, jobs=3))
    alerts = {a.subject: a for a in evaluate(store, clock, "over_budget", estimate_factor=1.5)}
    assert set(alerts) == {"with-budget", "estimate-only"}
    assert "$11.50" in alerts["with-budget"].summary and "budget of $10.00" in alerts["with-budget"].summary
    assert "1.5 × its estimate of $4.00" in alerts["estimate-only"].summary
    assert alerts["estimate-only"].labels["limit_usd"] == "6.00"


class HeadNodeHere(SshHost):
    """The SSH runner's host with the ssh prefix taken away: the same argv runs on this machine,
    so the remote code path (one shell round trip per read, sacct through wrap) is exercised."""

    def __init__(self) -> None:
        self.prefix = []
        self.timeout = 30.0

    def wrap(self, argv):
        return list(argv)


def test_ssh_runner_follows_the_log_in_the_pipeline_dir_on_the_head_node(store, clock, tmp_path, fake_sacct):
    pipeline_dir = tmp_path / "fsx" / "ws 1; echo pwned"
    pipeline_dir.mkdir(parents=True)
    (pipeline_dir / ".wsmon-run.log").write_text(fixture_text("snakemake_run.log"))
    lease = running_workset(store, clock, tmp_path / "local-step.log", pipeline_dir=str(pipeline_dir))

    class SshRunner:
        host = HeadNodeHere()

    ssh_settings = settings(runner={"kind": "ssh", "ssh_host": "head-1"})
    tracker = ProgressTracker(ssh_settings, store, SshRunner(), actor="engine-a", clock=clock)
    tracker.observe({"ws1": lease})
    ws = store.get_workset("ws1")
    assert ws.progress.log_path == str(pipeline_dir / ".wsmon-run.log") and ws.progress.log_host == "head-1"
    assert (ws.progress.steps_done, ws.progress.steps_total) == (2, 6)
    assert ws.actual.status == "ok" and ws.actual.jobs == 4
    with open(pipeline_dir / ".wsmon-run.log", "a") as fh:
        fh.write("Finished job 2.\n3 of 6 steps (50%) done\n")
    tracker.observe({"ws1": lease})
    assert store.get_workset("ws1").progress.steps_done == 3
