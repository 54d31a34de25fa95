"""Runner: real subprocesses and a real tmux server on a private socket."""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from wsmon.config.settings import Settings
from wsmon.engine.runner import (
    CommandRunner,
    Job,
    SimulatedRunner,
    SshHost,
    TemplateError,
    expand,
    sanitise,
    session_name,
)
from wsmon.engine.store import open_store
from wsmon.core.models import WorksetState
from tests.waiting import wait_until

HOSTILE = ['aligners=[sent,bwa2a,strobe]', 'two words', '$(touch pwned)', '; touch pwned2', '`id`',
           "it's", '--config', 'a=["x","y"]']


def write_script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/bash\n" + body, encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def tmux_socket():
    name = f"wsmon-test-{uuid.uuid4().hex[:10]}"
    yield name
    subprocess.run(["tmux", "-L", name, "kill-server"], capture_output=True, check=False)


@pytest.fixture
def world(tmp_path, clock, tmux_socket):
    """Steps as small scripts that count their runs in tmp/counts/<step>."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    counts = tmp_path / "counts"
    counts.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    write_script(bin_dir / "stage", f'echo stage >> "{counts}/stage"\necho staged "$@"\nenv > "{counts}/stage.env"\n')
    write_script(bin_dir / "clone", f'''echo clone >> "{counts}/clone"
dir="{work}/$2"
mkdir -p "$dir"
echo "cloning into $dir"
echo "Location: $dir"
''')
    # the "pipeline": records its argv, fails while a flag file exists, hangs while another does
    write_script(bin_dir / "dy-r", f'''echo run >> "{counts}/run"
printf '%s\\n' "$@" > args.txt
env > "{counts}/run.env"
if [ -e "{tmp_path}/hang" ]; then sleep 60; fi
if [ -e "{tmp_path}/fail" ]; then echo "Error in rule align: boom"; touch daylily.failed_run; exit 1; fi
echo "pipeline done"
touch daylily.successful_run
''')
    write_script(bin_dir / "export", f'echo export >> "{counts}/export"\necho exported to "$1"\n')
    settings = Settings(
        state_dir=tmp_path / "state",
        runner={
            "workdir": str(work),
            "stage_command": [str(bin_dir / "stage"), "{s3_uri}", "{analysis_samples}"],
            "clone_command": f"{bin_dir / 'clone'} -d {{workdir_name}} {{clone_args}}",
            "run_prefix": f"{bin_dir / 'dy-r'} ",
            "export_command": [str(bin_dir / "export"), "{export_uri}"],
            "tmux_socket": tmux_socket, "pipeline_poll_seconds": 0.1, "kill_grace_seconds": 1.0,
            "step_timeout_minutes": 0.5, "pipeline_timeout_minutes": 0.5,
        },
    )
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}", clock=clock)
    return {"settings": settings, "store": store, "counts": counts, "work": work, "tmp": tmp_path,
            "bin": bin_dir, "clock": clock}


def count(world, step: str) -> int:
    path = world["counts"] / step
    return len(path.read_text().splitlines()) if path.exists() else 0


def claim(world, wid: str = "ws one [x]", suffix=None, attempt: int = 1):
    store = world["store"]
    if store.get_workset(wid) is None:
        store.register_workset(wid, "bucket", f"prefix/{wid}/", metadata={
            "s3_uri": f"s3://bucket/prefix/{wid}/",
            "work": {"clone_args": ["-t", "main"], "run_suffix": suffix or HOSTILE,
                     "export_uri": "s3://bucket/results/", "workdir_name": "wd1"}})
    lease = store.acquire_lock(wid, "engine-1", 300)
    assert lease is not None
    ws = store.update_state(wid, "in_progress", "test", "engine-1", lease=lease, attempts=attempt)
    return ws, Job(wid, lease)


def finish_to_ready(world, ws, job) -> None:
    store = world["store"]
    store.update_state(ws.workset_id, "error", "failed", "engine-1", lease=job.lease)
    store.update_state(ws.workset_id, "retrying", "retry", "engine-1")
    store.update_state(ws.workset_id, "ready", "retry due", "engine-1")


def test_sanitised_names_are_tmux_safe_and_unique() -> None:
    a, b = sanitise("run.1:a b"), sanitise("run_1_a_b")
    assert a != b
    assert all(c.isalnum() or c in "_-" for c in a)
    assert sanitise("../../etc").startswith("etc-")


def test_templates_expand_per_token_and_reject_unknown_placeholders() -> None:
    values = {"clone_args": ["-d", "x y"], "workset": "a;b", "export_uri": "s3://b/p/"}
    assert expand("day-clone {clone_args} --name={workset}", values) == ["day-clone", "-d", "x y", "--name=a;b"]
    with pytest.raises(TemplateError, match="unknown placeholder"):
        expand(["x", "{nope}"], values)


def test_all_steps_run_and_the_pipeline_gets_each_suffix_token_exactly(world, monkeypatch) -> None:
    monkeypatch.setenv("WSMON_LINEAR_API_KEY", "lin_api_secret_value")
    ws, job = claim(world)
    runner = CommandRunner(world["settings"], clock=world["clock"])
    outcome = runner.execute(ws, job, world["store"], "engine-1")
    assert outcome.status == "succeeded", outcome.error_text
    pipeline_dir = world["work"] / "wd1"
    assert (pipeline_dir / "args.txt").read_text().splitlines() == HOSTILE
    assert not list(pipeline_dir.glob("pwned*")) and not list(Path.cwd().glob("pwned*"))
    stored = world["store"].get_workset(ws.workset_id)
    assert [(s.name, s.status) for s in stored.steps] == [
        ("stage", "succeeded"), ("clone", "succeeded"), ("run", "succeeded"), ("export", "succeeded")]
    assert stored.pipeline_dir == str(pipeline_dir)
    log_dir = world["settings"].state_dir / "logs" / sanitise(ws.workset_id)
    assert "pipeline done" in (log_dir / "run.log").read_text()
    assert "exported to s3://bucket/results/" in (log_dir / "export.log").read_text()
    assert not runner.session_alive(session_name(world["settings"], ws.workset_id))
    for step in ("stage", "run"):  # wsmon's secrets never reach a step's environment
        assert "lin_api_secret_value" not in (world["counts"] / f"{step}.env").read_text()


def test_a_failed_pipeline_keeps_its_log_tail_and_a_retry_resumes_at_the_run_step(world) -> None:
    (world["tmp"] / "fail").touch()
    ws, job = claim(world)
    runner = CommandRunner(world["settings"], clock=world["clock"])
    outcome = runner.execute(ws, job, world["store"], "engine-1")
    assert (outcome.status, outcome.step) == ("failed", "run")
    assert "Error in rule align: boom" in outcome.log_tail
    assert "pipeline failed" in outcome.error_text
    finish_to_ready(world, ws, job)
    (world["tmp"] / "fail").unlink()
    ws, job = claim(world, attempt=2)
    outcome = runner.execute(ws, job, world["store"], "engine-1")
    assert outcome.succeeded
    assert (count(world, "stage"), count(world, "clone"), count(world, "run"), count(world, "export")) == (1, 1, 2, 1)
    run = next(s for s in world["store"].get_workset(ws.workset_id).steps if s.name == "run")
    assert run.attempt == 2


def test_a_step_past_its_timeout_gets_ctrl_c_then_is_killed(world) -> None:
    write_script(world["bin"] / "stage", f'''trap 'echo got-ctrl-c' INT
echo $$ > "{world["tmp"]}/stage.pid"
while true; do sleep 0.1; done
''')
    settings = world["settings"].model_copy(deep=True)
    # Generous: under load bash may take longer than half a second to reach its trap line, and a
    # Ctrl-C sent before the trap exists kills it silently (the flake CI saw once).
    settings.runner.step_timeout_minutes = 3 / 60
    ws, job = claim(world)
    outcome = CommandRunner(settings, clock=world["clock"]).execute(ws, job, world["store"], "engine-1")
    assert (outcome.status, outcome.step, outcome.retryable) == ("failed", "stage", True)
    assert "time limit" in outcome.error_text
    assert "got-ctrl-c" in outcome.log_tail
    pid = int((world["tmp"] / "stage.pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    (stage,) = [s for s in world["store"].get_workset(ws.workset_id).steps if s.name == "stage"]
    assert stage.status == "timed_out"


def test_a_hanging_pipeline_is_interrupted_and_its_session_killed(world) -> None:
    (world["tmp"] / "hang").touch()
    settings = world["settings"].model_copy(deep=True)
    settings.runner.pipeline_timeout_minutes = 1.0 / 60
    settings.runner.kill_grace_seconds = 0.5
    ws, job = claim(world)
    runner = CommandRunner(settings, clock=world["clock"])
    outcome = runner.execute(ws, job, world["store"], "engine-1")
    assert (outcome.status, outcome.step, outcome.retryable) == ("failed", "run", True)
    assert "time limit" in outcome.error_text
    assert not runner.session_alive(session_name(settings, ws.workset_id))


def test_a_restarted_runner_adopts_the_live_session_instead_of_starting_again(world) -> None:
    write_script(world["bin"] / "dy-r", f'''echo run >> "{world["counts"]}/run"
while [ ! -e "{world["tmp"]}/go" ]; do sleep 0.1; done
touch daylily.successful_run
''')
    ws, job = claim(world)
    first = CommandRunner(world["settings"], clock=world["clock"])
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault(
        "outcome", first.execute(ws, job, world["store"], "engine-1")))
    thread.start()
    name = session_name(world["settings"], ws.workset_id)
    deadline = time.monotonic() + 10
    while not first.session_alive(name) and time.monotonic() < deadline:
        time.sleep(0.05)
    job.detach.set()  # the engine shuts down: the pipeline keeps running
    thread.join(10)
    assert result["outcome"].status == "detached"
    assert first.session_alive(name)

    store = world["store"]
    stored = store.get_workset(ws.workset_id)
    new_lease = store.adopt_lock(job.lease)
    assert new_lease.fence > job.lease.fence
    (world["tmp"] / "go").touch()
    outcome = CommandRunner(world["settings"], clock=world["clock"]).execute(
        stored, Job(ws.workset_id, new_lease, adopted=True), store, "engine-1")
    assert outcome.succeeded, outcome.error_text
    assert count(world, "run") == 1
    assert count(world, "export") == 1


def test_a_session_that_vanished_without_a_result_is_a_retryable_failure(world) -> None:
    write_script(world["bin"] / "dy-r", "sleep 30\n")
    ws, job = claim(world)
    runner = CommandRunner(world["settings"], clock=world["clock"])
    name = session_name(world["settings"], ws.workset_id)

    def kill_it() -> None:
        deadline = time.monotonic() + 10
        while not runner.session_alive(name) and time.monotonic() < deadline:
            time.sleep(0.05)
        subprocess.run(runner.tmux("kill-session", "-t", name), check=False, capture_output=True)

    killer = threading.Thread(target=kill_it)
    killer.start()
    outcome = runner.execute(ws, job, world["store"], "engine-1")
    killer.join()
    assert (outcome.status, outcome.retryable) == ("failed", True)
    assert "ended without a result" in outcome.error_text


def test_a_lost_lease_stops_the_pipeline_and_writes_nothing_more(world) -> None:
    write_script(world["bin"] / "dy-r", "sleep 30\n")
    ws, job = claim(world)
    runner = CommandRunner(world["settings"], clock=world["clock"])
    name = session_name(world["settings"], ws.workset_id)
    errors = []

    def run() -> None:
        try:
            runner.execute(ws, job, world["store"], "engine-1")
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 10
    while not runner.session_alive(name) and time.monotonic() < deadline:
        time.sleep(0.05)
    world["store"].force_release(ws.workset_id, "op@host", "operator stopped it")
    job.stop("lease lost")
    thread.join(15)
    assert errors and type(errors[0]).__name__ == "Aborted"
    assert not runner.session_alive(name)
    assert world["store"].get_workset(ws.workset_id).state is WorksetState.READY


def test_the_ssh_runner_checks_host_keys_and_quotes_the_remote_command(tmp_path) -> None:
    settings = Settings(state_dir=tmp_path, runner={
        "kind": "ssh", "ssh_host": "head.example", "ssh_user": "ec2-user",
        "ssh_extra_args": ["-o", "StrictHostKeyChecking=no"]})
    argv = SshHost(settings).wrap(["dy-r", "a b", "$(id)"])
    assert argv[:3] == ["ssh", "-o", "StrictHostKeyChecking=yes"]
    assert argv.index("StrictHostKeyChecking=yes") < argv.index("StrictHostKeyChecking=no")
    assert argv[-2:] == ["--", "dy-r 'a b' '$(id)'"]
    assert shlex.split(argv[-1]) == ["dy-r", "a b", "$(id)"]


def test_the_simulated_runner_follows_its_seeded_failure_mix(tmp_path, clock) -> None:
    settings = Settings(state_dir=tmp_path, runner={
        "kind": "simulated", "simulated_seed": 3, "simulated_transient_failure_rate": 0.3,
        "simulated_permanent_failure_rate": 0.3, "simulated_hang_rate": 0.2})
    store = open_store(f"sqlite:///{tmp_path / 's.db'}", clock=clock)
    runner = SimulatedRunner(settings, clock=clock)
    fates = {f"w{i}": runner.fate(f"w{i}") for i in range(60)}
    assert set(fates.values()) == {"success", "transient", "permanent", "hang"}
    assert fates == {w: SimulatedRunner(settings, clock=clock).fate(w) for w in fates}
    results = {}
    for wid in ("w0", "w1", "w2", "w3", "w4", "w5", "w6", "w7"):
        store.register_workset(wid, "b", f"p/{wid}/")
        per_attempt = []
        for attempt in (1, 2):
            lease = store.acquire_lock(wid, "sim", 60)
            ws = store.update_state(wid, "in_progress", "t", "sim", lease=lease, attempts=attempt)
            outcome = runner.execute(ws, Job(wid, lease), store, "sim")
            per_attempt.append(outcome.status)
            if outcome.succeeded:
                break
            store.update_state(wid, "error", "t", "sim", lease=lease)
            store.update_state(wid, "ready", "t", "sim")
        results[wid] = per_attempt
    for wid, statuses in results.items():
        expected = {"success": ["succeeded"], "transient": ["failed", "succeeded"],
                    "hang": ["failed", "succeeded"], "permanent": ["failed", "failed"]}[fates[wid]]
        assert statuses == expected, (wid, fates[wid])


# -- real Daylily templates (issue 11) --------------------------------------------------------
def test_template_modes_argv_unless_the_template_uses_shell_syntax() -> None:
    from wsmon.engine.runner.templates import template_mode

    assert template_mode("day-clone {clone_args}") == "argv"
    assert template_mode(["echo", "a && b"]) == "argv"  # a list is argv whatever it holds
    assert template_mode("./bin/stage --pem ~/.ssh/k.pem {analysis_samples}") == "argv"
    for shell in ("echo cloning && day-clone {clone_args}", ". dyoinit && dy-r ",
                  "source env.sh; x", "x | tee log", "x > out", "echo ${HOME}"):
        assert template_mode(shell) == "shell", shell


def test_a_shell_template_quotes_every_value_and_keeps_shell_variables() -> None:
    from wsmon.engine.runner.templates import step_command

    values = {"clone_args": ["-d", "$(touch pwned)", "a b"], "workset": "w;rm -rf /"}
    argv = step_command("echo cloning && day-clone {clone_args} --name {workset} ${HOME}", values)
    assert argv[:2] == ["bash", "-lc"]
    assert argv[2] == ("echo cloning && day-clone -d '$(touch pwned)' 'a b' "
                       "--name 'w;rm -rf /' ${HOME}")


@pytest.mark.parametrize("template", [
    "./bin/stage --profile {profile} --region {region} {analysis_samples}",
    "cd /tmp && ./bin/stage --profile {profile} --region {region} {analysis_samples}",
    ["./bin/stage", "--profile", "{profile}", "--region", "{region}", "{analysis_samples}"],
])
def test_an_empty_value_leaves_out_its_option_instead_of_passing_an_empty_argument(template) -> None:
    from wsmon.engine.runner.templates import step_command

    argv = step_command(template, {"profile": "", "region": "us-west-2",
                                   "analysis_samples": "/s/stage_samples.tsv"})
    words = shlex.split(argv[2]) if argv[0] == "bash" else argv
    assert "--profile" not in words and "" not in words
    assert words[-3:] == ["--region", "us-west-2", "/s/stage_samples.tsv"]


def test_a_shell_clone_template_runs_through_bash_and_values_stay_data(world) -> None:
    settings = world["settings"].model_copy(deep=True)
    settings.runner.clone_command = (f"echo cloning && {world['bin'] / 'clone'} -d {{workdir_name}} "
                                     "{clone_args}")
    ws, job = claim(world, wid="shell-clone")
    world["store"].update_fields(ws.workset_id, actor="t", lease=job.lease, metadata={
        **ws.metadata, "work": {**ws.metadata["work"], "clone_args": ["-t", "$(touch pwned)"]}})
    ws = world["store"].get_workset(ws.workset_id)
    outcome = CommandRunner(settings, clock=world["clock"]).execute(ws, job, world["store"], "engine-1")
    assert outcome.succeeded, outcome.error_text
    log = (settings.state_dir / "logs" / sanitise(ws.workset_id) / "clone.log").read_text()
    assert "cloning\ncloning into" in log
    assert world["store"].get_workset(ws.workset_id).pipeline_dir == str(world["work"] / "wd1")
    assert not list(world["tmp"].rglob("pwned")) and not list(Path.cwd().glob("pwned"))


def test_a_workset_without_day_clone_skips_the_clone_step(world) -> None:
    ws, job = claim(world, wid="no-clone")
    world["store"].update_fields(ws.workset_id, actor="t", lease=job.lease, metadata={
        **ws.metadata, "work": {**ws.metadata["work"], "clone_args": []}})
    ws = world["store"].get_workset(ws.workset_id)
    outcome = CommandRunner(world["settings"], clock=world["clock"]).execute(
        ws, job, world["store"], "engine-1")
    assert outcome.succeeded, outcome.error_text
    assert count(world, "clone") == 0 and count(world, "run") == 1
    steps = {s.name: s.status for s in world["store"].get_workset(ws.workset_id).steps}
    assert steps["clone"] == "skipped"


def test_a_retry_is_classified_from_its_own_output_only(world) -> None:
    from wsmon.engine.retry import RetryPolicy
    from wsmon.config.settings import RetrySettings

    write_script(world["bin"] / "dy-r", f'''echo run >> "{world['counts']}/run"
cat "{world['tmp']}/says"
exit 1
''')
    (world["tmp"] / "says").write_text("Error in rule align: MissingInputException: ref.fa\n")
    ws, job = claim(world, wid="classify")
    runner = CommandRunner(world["settings"], clock=world["clock"])
    first = runner.execute(ws, job, world["store"], "engine-1")
    assert "MissingInputException" in first.error_text
    finish_to_ready(world, ws, job)  # the operator's retry
    (world["tmp"] / "says").write_text("ssh: Connection reset by peer\n")
    ws, job = claim(world, wid="classify", attempt=2)
    second = runner.execute(ws, job, world["store"], "engine-1")
    assert "Connection reset by peer" in second.error_text
    assert "MissingInputException" not in second.error_text
    decision = RetryPolicy(RetrySettings()).decide(ws, second.error_text, world["clock"].now())
    assert decision.will_retry and decision.error_code == "WS-NET-002"




CRASHING_ENGINE = """
import json, sys
from wsmon.config.settings import Settings
from wsmon.core.models import Lease
from wsmon.engine.runner import CommandRunner, Job
from wsmon.engine.store import open_store
args = json.loads(sys.argv[1])
settings = Settings(state_dir=args["state_dir"], runner=json.loads(args["runner"]))
store = open_store(args["db"])
lease = Lease.model_validate_json(args["lease"])
runner = CommandRunner(settings)
runner.execute(store.get_workset(lease.workset_id), Job(lease.workset_id, lease), store, "engine-1")
"""


def test_a_stage_that_outlives_a_crashed_engine_is_waited_for_not_started_again(world) -> None:
    import json
    import sys

    tmp = world["tmp"]
    write_script(world["bin"] / "stage", f'''echo started >> "{tmp}/stage.started"
while [ ! -e "{tmp}/release" ]; do sleep 0.05; done
echo stage >> "{world['counts']}/stage"
''')
    ws, job = claim(world, wid="survivor")
    settings = world["settings"]
    engine = subprocess.Popen([sys.executable, "-c", CRASHING_ENGINE, json.dumps({
        "state_dir": str(settings.state_dir), "runner": settings.runner.model_dump_json(),
        "db": f"sqlite:///{tmp / 'state.db'}", "lease": job.lease.model_dump_json()})])
    try:
        wait_until(lambda: (tmp / "stage.started").exists(), "the stage step to start")
    finally:
        engine.kill()  # kill -9: the stage process lives on in its own session
        engine.wait()
    store = world["store"]
    lease = store.adopt_lock(job.lease)  # the restarted engine (same monitor id)
    result: dict = {}
    restarted = threading.Thread(target=lambda: result.update(outcome=CommandRunner(
        settings, clock=world["clock"]).execute(store.get_workset(ws.workset_id),
                                                Job(ws.workset_id, lease), store, "engine-1")))
    restarted.start()

    def waiting_for_survivor() -> bool:
        steps = store.get_workset(ws.workset_id).steps
        return any(s.name == "stage" and "waiting for the stage process" in (s.detail or "")
                   for s in steps)

    wait_until(waiting_for_survivor, "the restarted runner to find the surviving stage")
    (tmp / "release").touch()
    restarted.join(60)
    assert result["outcome"].succeeded, result["outcome"].error_text
    assert (tmp / "stage.started").read_text().splitlines() == ["started"]  # never started twice
    assert count(world, "stage") == 1 and count(world, "run") == 1


def test_the_simulated_run_writes_a_snakemake_log_the_progress_parser_follows(tmp_path, clock) -> None:
    """The demo's runs show progress moving: the simulated run step writes Snakemake's log
    format over time (one job per slice of the step), which the real parser reads."""
    from wsmon.engine.progress.snakelog import SnakemakeLogParser

    settings = Settings(state_dir=tmp_path, runner={
        "kind": "simulated", "workdir": str(tmp_path / "work"), "simulated_seed": 4,
        "simulated_transient_failure_rate": 0.0, "simulated_permanent_failure_rate": 0.0,
        "simulated_hang_rate": 0.0, "simulated_step_seconds": {"run": 60.0}})
    store = open_store(f"sqlite:///{tmp_path / 's.db'}", clock=clock)
    seen: list[tuple[int, int | None]] = []
    parser = SnakemakeLogParser()
    offset = 0

    def sleep_and_read(seconds: float, job: Job) -> None:
        nonlocal offset
        clock.advance(seconds=seconds)
        logs = list((tmp_path / "work").rglob("run.attempt1.log"))
        if logs:
            data = logs[0].read_bytes()
            parser.feed(data[offset:])
            offset = len(data)
            seen.append((parser.progress.done, parser.progress.total))

    runner = SimulatedRunner(settings, clock=clock, sleep=sleep_and_read)
    store.register_workset("ws-sim", "b", "p/ws-sim/")
    lease = store.acquire_lock("ws-sim", "sim", 60)
    ws = store.update_state("ws-sim", "in_progress", "t", "sim", lease=lease, attempts=1)
    outcome = runner.execute(ws, Job("ws-sim", lease), store, "sim")
    assert outcome.succeeded
    total = parser.progress.total
    assert total is not None and total >= 8
    dones = [done for done, _ in seen]
    assert dones == sorted(dones) and dones[0] < total and 0 < dones[len(dones) // 2] < total
    log_text = next((tmp_path / "work").rglob("run.attempt1.log")).read_text()
    assert parser.progress.done == total and f"{total} of {total} steps (100%) done" in log_text
    run = [s for s in store.get_workset("ws-sim").steps if s.name == "run"][-1]
    assert run.log_path and run.log_path.endswith("run.attempt1.log")
