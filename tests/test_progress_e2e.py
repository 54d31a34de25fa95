"""End to end on the real tmux runner: a fake Snakemake writes a real-format log over time inside
the workset's tmux session; the engine's progress tracker follows it, the dashboard's reader shows
0 → 30 → 100 %, a stalled run raises pipeline_stalled (and it resolves when steps finish again),
the fake sacct prices the Slurm jobs at the end, and `wsmon usage` shows the cost.

The stages of the fake pipeline are released by the test (gate files), and the test waits for the
store rows it needs, never a fixed sleep. Store time is a ManualClock, moved to make a run stall."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from wsmon.cli.main import cli
from wsmon.config.settings import Settings
from wsmon.core.models import AlertState
from wsmon.engine.alerts import AlertEvaluator
from wsmon.engine.progress.tracker import ProgressTracker
from wsmon.engine.runner import Aborted, CommandRunner, Job
from wsmon.engine.store import open_store
from wsmon.screens.snapshot import SnapshotReader
from tests.waiting import wait_until

HERE = Path(__file__).parent / "fixtures" / "progress"
FAKE_BIN = HERE / "bin"
WID = "e2e progress [run]"
RULES_OFF = ["queue_depth", "urgent_waiting", "long_running", "stale_lease", "lock_failures",
             "error_rate", "dead_lettered", "cluster_full", "engine_heartbeat", "channel_failing",
             "backend_errors", "over_budget"]


@pytest.fixture
def tmux_socket():
    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed: the end-to-end progress test needs the real runner")
    name = f"wsmon-test-{uuid.uuid4().hex[:10]}"
    yield name
    subprocess.run(["tmux", "-L", name, "kill-server"], capture_output=True, check=False)


def test_progress_stall_and_cost_end_to_end(tmp_path, clock, tmux_socket, monkeypatch):
    for needed in ("snakemake", "sacct"):
        if not (FAKE_BIN / needed).is_file():
            pytest.fail(f"fake {needed} missing from tests/fixtures/progress/bin")
    monkeypatch.setenv("PATH", f"{FAKE_BIN}{os.pathsep}{os.environ['PATH']}")
    gate = tmp_path / "gate"
    gate.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    settings = Settings(
        monitor_id="engine-1", state_dir=tmp_path / "state",
        runner={"workdir": str(work), "tmux_socket": tmux_socket, "pipeline_poll_seconds": 0.1,
                "run_command": [sys.executable, str(FAKE_BIN / "snakemake"), "--total", "10",
                                "--stages", "0,3,10", "--gate", str(gate)]},
        progress={"partition_prices": {"prod": {"i192": 0.04}}},
        alerts={**{r: {"enabled": False} for r in RULES_OFF},
                "pipeline_stalled": {"threshold": 60, "keep_firing_for_seconds": 0}},
    )
    db = tmp_path / "state.db"
    store = open_store(f"sqlite:///{db}", clock=clock)
    store.register_workset(WID, "bucket", f"prefix/{WID}/", customer_id="acme",
                           estimate={"cost_usd": 3.0}, metadata={"work": {"workdir_name": "wd1"}})
    lease = store.acquire_lock(WID, "engine-1", 86400)
    ws = store.update_state(WID, "in_progress", "started", "engine-1", lease=lease, cluster_name="prod",
                            attempts=1)
    runner = CommandRunner(settings, clock=clock)
    job = Job(WID, lease)
    outcome: list = []

    def drive():
        try:
            outcome.append(runner.execute(ws, job, store, "engine-1"))
        except Aborted as exc:
            outcome.append(exc)

    thread = threading.Thread(target=drive)
    thread.start()
    published: list[tuple[str, float, dict]] = []

    class CloudWatchFigures:
        """What the engine's metrics publisher receives (the CloudWatch dashboard's figures)."""

        def observe(self, name: str, value: float, unit: str = "Seconds", **dims) -> None:
            published.append((name, value, dims))

    tracker = ProgressTracker(settings, store, runner, actor="engine-1", clock=clock,
                              metrics=CloudWatchFigures())
    reader = SnapshotReader(store, clock, stale_after=3600)

    def observe():
        tracker.observe({WID: lease} if thread.is_alive() else {})

    rows: dict = {}

    def dashboard_cell() -> str:
        """The queue's progress cell, as the dashboard's refresh reader gives it to the screen."""
        rows.update(reader.read().changed)
        return rows[WID].cells[-1]

    def shows(percent: str):
        return lambda: dashboard_cell().endswith(percent)

    try:
        assert dashboard_cell() == "—"  # before the run: nothing known, nothing made up
        (gate / "go-0").touch()
        wait_until(shows(" 0%"), "0% on the dashboard", 60, between=observe)
        (gate / "go-1").touch()
        wait_until(shows("30%"), "30% on the dashboard", 60, between=observe)
        progress = store.get_workset(WID).progress
        assert (progress.steps_done, progress.steps_total) == (3, 10)
        assert progress.session and progress.log_path.endswith("run.log")

        # no step for an hour while the tmux session lives: pipeline_stalled
        evaluator = AlertEvaluator(settings, store, clock=clock)
        clock.advance(minutes=61)
        observe()
        [alert] = [a for a in evaluator.evaluate() if a.rule == "pipeline_stalled"]
        assert alert.state is AlertState.FIRING and alert.subject == WID

        (gate / "go-2").touch()
        wait_until(lambda: not thread.is_alive(), "the pipeline to finish", 60, between=observe)
        assert outcome and outcome[0].succeeded, outcome
        store.update_state(WID, "complete", "done", "engine-1", lease=lease)
        observe()  # the attempt ended: final figures
        assert dashboard_cell().endswith("100%")
        evaluator.evaluate()
        evaluator.evaluate()
        assert store.get_alert(alert.alert_id).state is AlertState.RESOLVED

        final = store.get_workset(WID)
        # the fake sacct: each of the 10 jobs 30 min on 8 CPUs = 4 vCPU-hours at $0.04
        assert final.actual.final and final.actual.jobs == 10
        assert final.actual.vcpu_hours == pytest.approx(40.0)
        assert final.actual.cost_usd == pytest.approx(1.6)
        # the measured cost reaches CloudWatch once, beside the engine's estimate
        costs = [(value, dims) for name, value, dims in published if name == "WorksetCost"]
        assert len(costs) == 1 and costs[0][0] == pytest.approx(1.6)
        assert costs[0][1] == {"Kind": "actual"}
    finally:
        job.stop("test over")
        thread.join(timeout=30)
        store.close()

    result = CliRunner().invoke(cli, ["--store", f"sqlite:///{db}", "usage", "--json",
                                      "--since", "2000-01-01"], catch_exceptions=False)
    usage = json.loads(result.output)
    assert usage["groups"] == [{"group": "acme", "worksets": 1, "vcpu_hours": 40.0,
                                "actual_cost_usd": 1.6, "estimated_cost_usd": 3.0, "failures": 0,
                                "retries": 0, "unmeasured": 0}]
