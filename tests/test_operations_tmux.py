"""Release and Stop against a live holder: a real engine runs a real pipeline in tmux (private
socket) under the command runner, and the operator acts through the CLI (issue 12, obs. 3-4).

Release is refused while the holder's lease is live and leaves the tmux session alone; Stop is
one fenced transition, after which the holding engine's heartbeat ends the tmux session."""

from __future__ import annotations

import stat
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from wsmon.cli.main import cli
from wsmon.config.settings import Settings
from wsmon.core.clock import SystemClock
from wsmon.core.identity import operator_actor
from wsmon.core.models import WorksetState
from wsmon.engine.runner import CommandRunner, session_name
from wsmon.engine.service import Engine
from wsmon.engine.store import open_store

pytestmark = pytest.mark.usefixtures("no_user_config")


def script(path: Path, body: str) -> str:
    path.write_text("#!/bin/bash\n" + body, encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.fixture
def tmux_socket():
    name = f"wsmon-test-{uuid.uuid4().hex[:10]}"
    yield name
    subprocess.run(["tmux", "-L", name, "kill-server"], capture_output=True, check=False)


@pytest.fixture
def running(tmp_path: Path, tmux_socket: str):
    """Workset "long-run" in_progress, its pipeline alive in tmux, held by a live engine."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    url = f"sqlite:///{tmp_path / 'state.db'}"
    settings = Settings(
        monitor_id="engine-t", state_dir=tmp_path / "state", store={"url": url},
        clusters={"static": [{"name": "c1", "max_vcpus": 1000, "max_memory_gb": 10000,
                              "max_concurrent_worksets": 10}], "slurm_usage": False},
        discovery={"ready_lock_backoff_seconds": 0}, metrics={"sink": "none"},
        runner={"kind": "command", "workdir": str(work),
                "stage_command": [script(bin_dir / "stage", "echo staged\n")],
                "clone_command": script(bin_dir / "clone", f'mkdir -p "{work}/$2"\n'
                                        f'echo "Location: {work}/$2"\n') + " -d {workdir_name}",
                "run_prefix": script(bin_dir / "dy-r", "echo running; sleep 120\n") + " ",
                "export_command": [script(bin_dir / "export", "echo exported\n")],
                "tmux_socket": tmux_socket, "pipeline_poll_seconds": 0.1,
                "kill_grace_seconds": 1.0},
    )
    store = open_store(url, clock=SystemClock())
    store.register_workset("long-run", "bucket", "p/long-run/", estimate={"vcpus": 4, "memory_gb": 8},
                           metadata={"s3_uri": "s3://bucket/p/long-run/",
                                     "work": {"run_suffix": ["help"], "workdir_name": "wd1",
                                              "export_uri": "s3://bucket/results/"}})
    runner = CommandRunner(settings, clock=SystemClock())
    engine = Engine(settings, store=store, clock=SystemClock(), runner=runner)
    name = session_name(settings, "long-run")
    try:
        assert engine.run_cycle()["started"] == ["long-run"]
        deadline = time.monotonic() + 30  # the pipeline's tmux session, not a fixed sleep
        while not runner.session_alive(name):
            assert time.monotonic() < deadline, store.get_workset("long-run")
            time.sleep(0.05)
        assert store.get_workset("long-run").state is WorksetState.IN_PROGRESS
        yield url, store, engine, runner, name
    finally:
        engine.stop(0)
        store.close()


def cli_run(url: str, *args: str):
    return CliRunner().invoke(cli, ["--store", url, *args], catch_exceptions=False)


def test_release_of_a_live_holder_is_refused_and_the_pipeline_keeps_running(running) -> None:
    url, store, engine, runner, name = running
    before = store.get_workset("long-run")
    result = cli_run(url, "release", "long-run", "--yes")
    assert result.exit_code == 1 and "use stop" in result.output
    engine.heartbeat()  # the holder renews as usual: nothing was taken from it
    assert runner.session_alive(name)
    after = store.get_workset("long-run")
    assert (after.state, after.lock_owner, after.fence) == (WorksetState.IN_PROGRESS,
                                                            "engine-t", before.fence)


def test_stop_ends_the_tmux_session_and_no_engine_claims_it(running) -> None:
    url, store, engine, runner, name = running
    result = cli_run(url, "stop", "long-run", "--to", "error", "--reason", "wrong genome", "--yes")
    assert result.exit_code == 0, result.output
    assert store.get_workset("long-run").state is WorksetState.ERROR
    assert engine.run_cycle()["started"] == []  # no engine can claim it
    engine.heartbeat()  # the holder finds its lease gone: Ctrl-C, grace, kill
    assert engine.wait_idle(30)
    assert not runner.session_alive(name)
    after = store.get_workset("long-run")
    assert after.state is WorksetState.ERROR  # the holder wrote nothing over the operator's stop
    last = store.events("long-run")[-1]
    assert last.actor == operator_actor() and "wrong genome" in last.reason
