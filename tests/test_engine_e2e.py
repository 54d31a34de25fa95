"""End to end: moto S3 + SQLite store + the command runner with small scripts as the Daylily
tools, configured from a Daylily monitor YAML, over the real workset folders and 20 generated ones.

In-process tests drive ``Engine.run_cycle`` with a ManualClock (retries come due by moving the
clock); the multi-process tests run ``wsmon --headless`` and kill it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from wsmon.core import aws
from wsmon.config import load_settings
from wsmon.engine.service import Engine
from wsmon.engine.store import open_store
from wsmon.core.models import WorksetState
from tests.waiting import wait_until

PREFIX = "daylily_monitoring/active_worksets/"
DATA_BUCKET = "lsmc-dayoa-omics-analysis-us-west-2"
FIXTURE_NAMES = ("test_allgiab", "test_help", "test_snv")

# generated worksets: name -> (fate, daylily_info.yaml extra, expected state, expected attempts)
GENERATED: dict[str, tuple[str, str, WorksetState, int]] = {}
for i in range(12):
    GENERATED[f"gen ok {i:02d}"] = ("ok", "", WorksetState.COMPLETE, 1)
for i in range(4):
    GENERATED[f"gen transient {i}"] = ("transient", "", WorksetState.COMPLETE, 2)
for i in range(2):
    GENERATED[f"gen permanent {i}"] = ("permanent", "", WorksetState.FAILED, 1)
GENERATED["gen flaky forever"] = ("always-transient", "max_retries: 1\n", WorksetState.FAILED, 2)
GENERATED["gen hang"] = ("hang", "max_retries: 0\n", WorksetState.FAILED, 1)
assert len(GENERATED) == 20

SCRIPTS = {
    "stage": r'''echo "stage $*" >> "$DAYLILY_E2E_COUNTS/stage.log"
samples="${@: -1}"
head -1 "$samples" | grep -q SAMPLE_ID || { echo "no sample sheet at $samples"; exit 2; }
echo staged
''',
    "day-clone": r'''dir="$DAYLILY_E2E_WORK/$2"
mkdir -p "$dir"
echo "cloning daylily $4 into $dir"
echo "Location: $dir"
''',
    "dyoinit": r'''export PATH="$DAYLILY_E2E_BIN:$PATH"
''',
    "dy-a": r'''echo "dy-a $*"
''',
    "dy-r": r'''echo run >> runs.txt
printf '%s\n' "$@" > args.txt
fate=ok
for a in "$@"; do case "$a" in fate=*) fate="${a#fate=}";; esac; done
n=$(wc -l < runs.txt)
case "$fate" in
  transient) if [ "$n" -le 1 ]; then echo "ssh: connect to host head port 22: Connection reset by peer"; touch daylily.failed_run; exit 1; fi ;;
  always-transient) echo "ssh: connect to host head port 22: Connection reset by peer"; touch daylily.failed_run; exit 1 ;;
  permanent) echo "Error in rule align: see logs/align.log"; touch daylily.failed_run; exit 1 ;;
  hang) sleep 120 ;;
  slow) sleep "${DAYLILY_E2E_SLOW:-3}" ;;
esac
echo "pipeline finished"
touch daylily.successful_run
''',
    "export": r'''echo "export $*" >> "$DAYLILY_E2E_COUNTS/export.log"
''',
}

DAYLILY_YAML = """\
# Daylily workset monitor config, as users of the earlier monitor have it.
aws:
  profile: ""
  region: us-west-2
monitor:
  bucket: {bucket}
  prefix: {prefix}
  poll_interval_seconds: {poll}
  ready_lock_backoff_seconds: 0
  continuous: true
cluster:
  preferred_availability_zone: us-west-2d
  reuse_cluster_name: "newcluex"
pipeline:
  workdir: {work}
  stage_command: {bin}/stage --region {{region}} --cluster {{cluster}} {{analysis_samples}}
  clone_command: {bin}/day-clone {{clone_args}}
  run_prefix: ". {bin}/dyoinit && dy-a slurm hg38 && dy-r "
  export_command: {bin}/export --cluster {{cluster}} --target-uri {{target_uri}}
"""


def s3_client(endpoint: str):
    return aws.client("s3", region="us-west-2", endpoint_url=endpoint)


def ensure_bucket(s3, name: str) -> None:
    try:
        s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    except Exception as exc:  # the data bucket is shared by tests on the one moto server
        if aws.error_code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise


def upload_folder(s3, bucket: str, name: str, files: dict[str, bytes]) -> None:
    for rel, body in files.items():
        s3.put_object(Bucket=bucket, Key=f"{PREFIX}{name}/{rel}", Body=body)
    s3.put_object(Bucket=bucket, Key=f"{PREFIX}{name}/sample_data/stand-in.txt", Body=b"x")


def fixture_files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in root.iterdir() if p.is_file()}


def generated_files(name: str, fate: str, info_extra: str, sample_tsv: bytes) -> dict[str, bytes]:
    work = (f'day-clone: " -d {{workdir_name}} -t main "\n'
            f'dy-r: "help fate={fate} --config aligners=[\\"sent\\",\\"bwa2a\\"]"\n'
            f'export_uri: "s3://{DATA_BUCKET}/results/{{workset}}/"\n')
    return {"daylily.ready": b"20251016T111111", "daylily_work.yaml": work.encode(),
            "daylily_info.yaml": f"priority: normal\n{info_extra}".encode(),
            "stage_samples.tsv": sample_tsv}


def make_world(tmp_path: Path, endpoint: str, fixtures_root: str, *, names: dict[str, str] | None = None,
               with_fixtures: bool = True, poll: float = 30, extra_toml: str = "",
               socket: str | None = None) -> dict:
    """Buckets, folders, scripts, a Daylily YAML and a wsmon TOML that points at it."""
    bucket = f"e2e-{uuid.uuid4().hex[:12]}"
    s3 = s3_client(endpoint)
    ensure_bucket(s3, bucket)
    ensure_bucket(s3, DATA_BUCKET)
    root = Path(fixtures_root)
    # the FASTQ stand-ins the real sample sheets point at
    for fixture in FIXTURE_NAMES:
        for line in (root / fixture / "stage_samples.tsv").read_text().splitlines()[1:]:
            for uri in line.split("\t")[10:12]:
                key = uri.split("/", 3)[3]
                s3.put_object(Bucket=DATA_BUCKET, Key=key, Body=b"@r\nA\n+\nI\n")
    if with_fixtures:
        for fixture in FIXTURE_NAMES:
            upload_folder(s3, bucket, fixture, fixture_files(root / fixture))
    sample_tsv = (root / "test_help" / "stage_samples.tsv").read_bytes()
    for name, fate in (names or {}).items():
        info_extra = GENERATED[name][1] if name in GENERATED else ""
        upload_folder(s3, bucket, name, generated_files(name, fate, info_extra, sample_tsv))
    bin_dir, work, counts, state = (tmp_path / d for d in ("bin", "work", "counts", "state"))
    for d in (bin_dir, work, counts, state):
        d.mkdir()
    for name, body in SCRIPTS.items():
        path = bin_dir / name
        path.write_text("#!/bin/bash\n" + body)
        path.chmod(0o755)
    daylily = tmp_path / "daylily-monitor.yaml"
    daylily.write_text(DAYLILY_YAML.format(bucket=bucket, prefix=PREFIX, work=work, bin=bin_dir, poll=poll))
    socket = socket or f"wsmon-test-{uuid.uuid4().hex[:10]}"
    toml = tmp_path / "wsmon.toml"
    toml.write_text(f"""\
monitor_id = "e2e-engine"
state_dir = "{state}"
daylily_yaml = "{daylily}"

[aws]
endpoint_url = "{endpoint}"
region = "us-west-2"
max_attempts = 2

[store]
url = "sqlite:///{tmp_path / 'state.db'}"

[discovery]
allowed_buckets = ["{DATA_BUCKET}"]

[clusters]
slurm_usage = false
static = [{{ name = "newcluex", availability_zone = "us-west-2d", max_vcpus = 100000, max_memory_gb = 1000000.0, max_concurrent_worksets = 40 }}]

[scheduler]
max_concurrent_worksets = 40

[runner]
tmux_socket = "{socket}"
pipeline_poll_seconds = 0.1
kill_grace_seconds = 0.5
pipeline_timeout_minutes = 0.1
max_parallel_worksets = 8

[metrics]
sink = "none"
{extra_toml}
""")
    env = {"DAYLILY_E2E_COUNTS": str(counts), "DAYLILY_E2E_WORK": str(work), "DAYLILY_E2E_BIN": str(bin_dir)}
    return {"bucket": bucket, "s3": s3, "toml": toml, "work": work, "counts": counts, "state": state,
            "socket": socket, "env": env, "db": tmp_path / "state.db"}


def runs(world: dict, workset_id: str) -> int:
    path = world["work"] / sanitise_workdir(workset_id) / "runs.txt"
    return len(path.read_text().splitlines()) if path.exists() else 0


def sanitise_workdir(workset_id: str) -> str:
    from wsmon.engine.worksetfiles import default_workdir_name

    return workset_id if workset_id in FIXTURE_NAMES else default_workdir_name(workset_id)


def kill_tmux(socket: str) -> None:
    subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, check=False)


@pytest.fixture
def e2e_env(monkeypatch):
    def apply(world: dict) -> None:
        for key, value in world["env"].items():
            monkeypatch.setenv(key, value)
    return apply


def test_real_folders_and_20_generated_worksets_end_in_their_expected_states(
        tmp_path, moto_endpoint, daylily_fixtures, clock, e2e_env) -> None:
    world = make_world(tmp_path, moto_endpoint, daylily_fixtures,
                       names={name: spec[0] for name, spec in GENERATED.items()})
    e2e_env(world)
    settings = load_settings(world["toml"])
    assert settings.runner.run_prefix.startswith(". ")  # the Daylily YAML was read
    store = open_store(settings.store_url, clock=clock)
    engine = Engine(settings, store=store, clock=clock)
    try:
        for _ in range(6):
            engine.run_cycle(wait=True, timeout=90)
            clock.advance(3601)  # past any retry_after (backoff cap is one hour)
        expected = {**{f: (WorksetState.COMPLETE, 1) for f in FIXTURE_NAMES},
                    **{n: (spec[2], spec[3]) for n, spec in GENERATED.items()}}
        got = {wid: (store.get_workset(wid).state, store.get_workset(wid).attempts) for wid in expected}
        assert got == expected
        for wid, (_, attempts) in expected.items():
            assert runs(world, wid) == attempts, wid  # the pipeline ran once per attempt, no more

        # the pipeline received the suffix tokens exactly as the earlier monitor's shell passed them
        args = (world["work"] / "test_allgiab" / "args.txt").read_text().splitlines()
        assert args == ["produce_snv_concordances", "-p", "-k", "-j", "20", "--config",
                        "aligners=[sent,bwa2a,strobe]", "dedupers=[dppl]", "snv_callers=[sentd,deep19,oct]"]
        permanent = store.get_workset("gen permanent 0")
        assert permanent.error_code == "WS-PIP-001"
        assert "Error in rule align" in permanent.log_tail
        hang = store.get_workset("gen hang")
        assert [s.status for s in hang.steps if s.name == "run"] == ["timed_out"]
        transient = store.get_workset("gen transient 0")
        states = [e.to_state for e in store.events("gen transient 0")]
        assert WorksetState.RETRYING in states and states[-1] is WorksetState.COMPLETE
        assert [(s.name, s.attempt) for s in transient.steps] == [
            ("stage", 1), ("clone", 1), ("run", 2), ("export", 2)]  # resumed at the failed step
        exports = (world["counts"] / "export.log").read_text()
        assert f"--target-uri s3://{DATA_BUCKET}/results/gen ok 00/" in exports

        engine.poll()  # the store's states are written back as sentinels
        keys = {o["Key"] for o in world["s3"].list_objects_v2(
            Bucket=world["bucket"], Prefix=f"{PREFIX}gen ok 00/")["Contents"]}
        assert f"{PREFIX}gen ok 00/daylily.complete" in keys
        assert not {o["Key"] for o in world["s3"].list_objects_v2(
            Bucket=world["bucket"], Prefix=f"{PREFIX}gen permanent 0/daylily.complete").get("Contents", [])}
    finally:
        engine.stop(0)
        store.close()
        kill_tmux(world["socket"])


def test_a_stale_lease_of_a_dead_monitor_is_recovered_and_run(tmp_path, moto_endpoint, daylily_fixtures,
                                                               clock, e2e_env) -> None:
    world = make_world(tmp_path, moto_endpoint, daylily_fixtures, with_fixtures=False,
                       names={"gen ok 00": "ok"})
    e2e_env(world)
    settings = load_settings(world["toml"])
    store = open_store(settings.store_url, clock=clock, max_clock_skew=30)
    engine = Engine(settings, store=store, clock=clock)
    try:
        engine.poll()
        lease = store.acquire_lock("gen ok 00", "crashed-monitor", 300)
        store.update_state("gen ok 00", "in_progress", "started", "crashed-monitor", lease=lease)
        clock.advance(300 + 29)
        assert engine.sweep()["recovered"] == []  # within the skew allowance: not yet
        clock.advance(2)
        assert engine.sweep()["recovered"] == ["gen ok 00"]
        engine.run_cycle(wait=True, timeout=60)
        ws = store.get_workset("gen ok 00")
        assert ws.state is WorksetState.COMPLETE and ws.fence > lease.fence
        assert any("lease of crashed-monitor expired" in e.reason for e in store.events("gen ok 00"))
    finally:
        engine.stop(0)
        store.close()
        kill_tmux(world["socket"])


# -- multi-process ---------------------------------------------------------------------------

def start_headless(world: dict, log_path: Path, monitor_id: str | None = None) -> subprocess.Popen:
    env = {**os.environ, **world["env"], "DAYLILY_E2E_SLOW": "3"}
    if monitor_id:
        env["WSMON_MONITOR_ID"] = monitor_id
    out = open(log_path, "ab")
    return subprocess.Popen([sys.executable, "-m", "wsmon.cli", "--config", str(world["toml"]), "--headless"],
                            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)




def states(db: Path) -> dict[str, WorksetState]:
    store = open_store(f"sqlite:///{db}")
    try:
        return {ws.workset_id: ws.state for ws in store.iter_worksets()}
    finally:
        store.close()


FAST_TOML = """
[store]
url = "sqlite:///{db}"
lease_seconds = 4.0
heartbeat_seconds = 1.0
max_clock_skew_seconds = 1.0
"""


def fast_world(tmp_path, endpoint, fixtures, names):
    world = make_world(tmp_path, endpoint, fixtures, with_fixtures=False, names=names, poll=1)
    text = world["toml"].read_text()
    text = text.replace(f'[store]\nurl = "sqlite:///{world["db"]}"\n', FAST_TOML.format(db=world["db"]))
    text = text.replace("[scheduler]\n", "[scheduler]\ninterval_seconds = 0.5\n")
    text = text.replace("pipeline_timeout_minutes = 0.1", "pipeline_timeout_minutes = 5")
    text = text.replace("[metrics]\n", "[alerts]\nevaluate_interval_seconds = 2.0\n\n[metrics]\n")
    world["toml"].write_text(text)
    return world


@pytest.mark.slow
def test_kill_9_mid_run_then_restart_loses_nothing_and_runs_nothing_twice(
        tmp_path, moto_endpoint, daylily_fixtures) -> None:
    names = {f"crash {i}": "slow" for i in range(6)}
    world = fast_world(tmp_path, moto_endpoint, daylily_fixtures, names)
    log_path = tmp_path / "engine.log"
    first = start_headless(world, log_path)
    try:
        # kill it while pipelines run in tmux
        wait_until(lambda: sum(runs(world, n) for n in names) >= 2, "pipelines to start", 45, every=0.2)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        second = start_headless(world, log_path)
        try:
            wait_until(lambda: set(states(world["db"]).values()) == {WorksetState.COMPLETE}
                       and len(states(world["db"])) == len(names), "every workset complete", 50,
                       every=0.2)
            second.send_signal(signal.SIGTERM)
            assert second.wait(30) == 0
        finally:
            if second.poll() is None:
                second.kill()
        assert {n: runs(world, n) for n in names} == {n: 1 for n in names}
        store = open_store(f"sqlite:///{world['db']}")
        try:
            for name in names:
                assert store.get_workset(name).attempts == 1
            assert store.list_monitors() == []  # the clean stop said goodbye
        finally:
            store.close()
        assert "adopted" in log_path.read_text()
    finally:
        if first.poll() is None:
            first.kill()
        kill_tmux(world["socket"])


@pytest.mark.slow
def test_two_engines_on_one_store_run_every_workset_once_and_one_polls(
        tmp_path, moto_endpoint, daylily_fixtures) -> None:
    names = {f"pair {i}": "slow" for i in range(8)}
    world = fast_world(tmp_path, moto_endpoint, daylily_fixtures, names)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [start_headless(world, logs[0], "engine-a"), start_headless(world, logs[1], "engine-b")]
    try:
        wait_until(lambda: set(states(world["db"]).values()) == {WorksetState.COMPLETE}
                   and len(states(world["db"])) == len(names), "every workset complete", 55,
                   every=0.2)
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        assert [p.wait(30) for p in procs] == [0, 0]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        kill_tmux(world["socket"])
    assert {n: runs(world, n) for n in names} == {n: 1 for n in names}
    pollers = set()
    for path in logs:
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") == "polled":
                pollers.add(record.get("monitor_id"))
    assert len(pollers) == 1
