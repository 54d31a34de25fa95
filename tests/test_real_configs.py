"""Real Daylily folders and hostile ones through a poll (issue 11): the real folders are
registered and scheduled by wsmon's own clock, and a hostile folder gets a coded error while
the normal one next to it is registered in the same poll."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import pytest

from wsmon.config.settings import Settings
from wsmon.core import aws
from wsmon.core.clock import ManualClock
from wsmon.core.models import WorksetState
from wsmon.engine.s3 import S3Source
from wsmon.engine.scheduler import ClusterCapacity, placements, schedule
from wsmon.engine.store import open_store
from wsmon.engine.worksetfiles import TSV_COLUMNS

FIXTURE_BUCKET = "lsmc-dayoa-omics-analysis-us-west-2"
STAND_IN_FASTQ = b"@stand-in\nACGT\n+\nIIII\n"


class Bucket:
    """The fixtures' bucket on the moto server, a unique prefix per test, a store (SQLite, or
    DynamoDB on the same moto server)."""

    def __init__(self, endpoint: str, name: str, tmp_path: Path, store: str = "sqlite") -> None:
        self.s3 = aws.client("s3", endpoint_url=endpoint, region="us-west-2", max_attempts=3)
        try:
            self.s3.create_bucket(Bucket=FIXTURE_BUCKET,
                                  CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
        except self.s3.exceptions.BucketAlreadyOwnedByYou:
            pass
        self.prefix = f"{name}/active/"
        self.tmp_path = tmp_path
        self.clock = ManualClock(datetime.now(timezone.utc).replace(microsecond=0))
        url = (f"sqlite:///{tmp_path}/s.db" if store == "sqlite" else
               f"dynamodb://{name}?region=us-west-2&endpoint_url={endpoint}")
        self.store = open_store(url, clock=self.clock)
        if store == "dynamodb":
            self.store.init_schema()  # what `wsmon store init` does

    def put(self, key: str, body: bytes | str) -> None:
        self.s3.put_object(Bucket=FIXTURE_BUCKET, Key=key,
                           Body=body.encode() if isinstance(body, str) else body)

    def upload_fixture(self, fixtures: str, name: str, as_name: str | None = None,
                       **replace: str) -> None:
        """A real folder as it is (``replace`` swaps one file's text), with stand-in FASTQs
        where its sample sheet points."""
        folder = Path(fixtures) / name
        base = f"{self.prefix}{as_name or name}/"
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                relative = path.relative_to(folder).as_posix()
                self.put(base + relative, replace.get(relative, path.read_bytes()))
        for line in (folder / "stage_samples.tsv").read_text().splitlines()[1:]:
            if line.strip():
                fields = line.split("\t")
                for uri in (fields[TSV_COLUMNS.index("R1_FQ")], fields[TSV_COLUMNS.index("R2_FQ")]):
                    self.put(uri[len(f"s3://{FIXTURE_BUCKET}/"):], STAND_IN_FASTQ)

    def settings(self, **discovery: object) -> Settings:
        return Settings(discovery={"sources": [{"bucket": FIXTURE_BUCKET, "prefix": self.prefix}],
                                   "ready_lock_backoff_seconds": 0, **discovery},
                        state_dir=self.tmp_path / "state")

    def source(self, **discovery: object) -> S3Source:
        return S3Source(self.settings(**discovery), self.store, clock=self.clock, s3_client=self.s3,
                        monitor_id="mon-1")


@pytest.fixture
def bucket(moto_endpoint: str, unique_name: str, tmp_path: Path) -> Bucket:
    return Bucket(moto_endpoint, unique_name, tmp_path)


@pytest.fixture(params=["sqlite", "dynamodb"])
def either_store(request, moto_endpoint: str, unique_name: str, tmp_path: Path) -> Bucket:
    return Bucket(moto_endpoint, unique_name, tmp_path, store=request.param)


def billion_laughs() -> str:
    lines = ['lol0: &lol0 "lol"']
    lines += [f"lol{i}: &lol{i} [" + ", ".join([f"*lol{i - 1}"] * 9) + "]" for i in range(1, 10)]
    return "\n".join(lines) + "\n"


def hostile(fixtures: str, name: str) -> dict[str, str]:
    """Replacement files that turn the real test_help folder into a hostile one."""
    work = (Path(fixtures) / "test_help" / "daylily_work.yaml").read_text()
    if name == "alias-bomb":
        return {"daylily_work.yaml": billion_laughs() + work.replace(
            'notes: "Daylily Snakemake; hg38; slurm profile; 192 jobs; rerun-incomplete."',
            "notes: *lol9")}
    if name == "100k-rows":
        rows = "".join(f"S{i}\tsample_data/{i}\tsample_data/{i}\n" for i in range(100_000))
        return {"stage_samples.tsv": "SAMPLE_ID\tR1_FQ\tR2_FQ\n" + rows}
    if name == "many-bad-rows":  # under the row cap, one error per row
        rows = "".join(f"S{i}\t../escape/{i}.fq\t../escape/{i}.fq\n" for i in range(5_000))
        return {"stage_samples.tsv": "SAMPLE_ID\tR1_FQ\tR2_FQ\n" + rows}
    if name == "huge-notes":  # 1 MB of notes: valid, but no record can hold it
        return {"daylily_work.yaml": work.replace(
            'notes: "Daylily Snakemake; hg38; slurm profile; 192 jobs; rerun-incomplete."',
            'notes: "' + "n" * 1_000_000 + '"')}
    raise ValueError(name)


def test_hostile_folders_get_coded_errors_and_the_normal_one_is_registered_in_the_same_poll(
        either_store: Bucket, daylily_fixtures: str) -> None:
    bucket = either_store
    bucket.upload_fixture(daylily_fixtures, "test_snv")
    expected = {"alias-bomb": "WS-CFG-015", "100k-rows": "WS-DAT-016",
                "many-bad-rows": "WS-DAT-007", "huge-notes": "WS-DAT-018"}
    for name in expected:
        bucket.upload_fixture(daylily_fixtures, "test_help", as_name=name,
                              **hostile(daylily_fixtures, name))
    source = bucket.source()
    report = source.poll()
    assert report.registered == ["test_snv"], report.to_dict()
    assert {i["workset_id"]: i["code"] for i in report.invalid} == expected
    for name, code in expected.items():
        ws = bucket.store.get_workset(name)
        assert (ws.state, ws.error_code) == (WorksetState.ERROR, code)
    capped = bucket.store.get_workset("many-bad-rows").findings
    assert len(capped) == 101 and capped[-1]["code"] == "WS-DAT-017"
    assert "9,901 more findings" in capped[-1]["message"]  # 10,000 rows + a header warning
    assert "300,000" in bucket.store.get_workset("huge-notes").error_details
    # the daylily.error body names the code, where the operator looks
    body = bucket.s3.get_object(Bucket=FIXTURE_BUCKET, Key=f"{bucket.prefix}alias-bomb/daylily.error")
    assert "WS-CFG-015" in body["Body"].read().decode()

    # an unchanged folder is never validated again: no file read, no FASTQ checked
    again = source.poll()
    assert not again.invalid and not again.registered
    assert again.requests.get("GetObject", 0) == 0 and again.requests.get("HeadObject", 0) == 0


def test_a_folder_over_its_time_budget_is_refused_and_the_poll_goes_on(
        bucket: Bucket, daylily_fixtures: str) -> None:
    for name in FIXTURE_NAMES:
        bucket.upload_fixture(daylily_fixtures, name)
    # each FASTQ check "takes" 20 s on the test's clock: test_allgiab has 14 FASTQs
    def slow_head(**_: object) -> None:
        bucket.clock.advance(20)

    bucket.s3.meta.events.register("before-call.s3.HeadObject", slow_head)
    report = bucket.source(list_workers=1, head_workers=1, folder_time_budget_seconds=50).poll()
    assert sorted(report.registered) == ["test_help", "test_snv"], report.invalid
    (refused,) = report.invalid
    assert (refused["workset_id"], refused["code"]) == ("test_allgiab", "WS-DAT-019")
    assert "folder_time_budget_seconds" in refused["message"]


def test_a_folder_over_its_memory_budget_is_refused_before_parsing(
        bucket: Bucket, daylily_fixtures: str) -> None:
    bucket.upload_fixture(daylily_fixtures, "test_snv")
    bucket.upload_fixture(daylily_fixtures, "test_help", as_name="big-sheet",
                          **hostile(daylily_fixtures, "100k-rows"))
    report = bucket.source(folder_memory_budget_mb=16).poll()
    assert report.registered == ["test_snv"]
    (refused,) = report.invalid
    assert (refused["workset_id"], refused["code"]) == ("big-sheet", "WS-DAT-019")
    assert "folder_memory_budget_mb" in refused["message"]


def test_stopping_the_engine_ends_a_poll_inside_a_validation(
        bucket: Bucket, daylily_fixtures: str) -> None:
    for name in FIXTURE_NAMES:
        bucket.upload_fixture(daylily_fixtures, name)
    source = bucket.source(list_workers=1, head_workers=1)
    heads: list[str] = []

    def shutdown_arrives(**_: object) -> None:  # SIGTERM while the first folder is checked
        heads.append("HEAD")
        source.stop_polling()

    bucket.s3.meta.events.register("before-call.s3.HeadObject", shutdown_arrives)
    report = source.poll()
    assert heads == ["HEAD"]  # no FASTQ checked after the stop
    assert not report.registered and "poll stopped part way: the engine is shutting down" in report.warnings
    assert list(bucket.store.iter_worksets()) == []  # nothing half-recorded: the next engine redoes it


def test_a_stale_ready_timestamp_does_not_jump_the_queue(bucket: Bucket, daylily_fixtures: str) -> None:
    # every real folder carries daylily.ready = 20251016T111111; an urgent copy is uploaded at
    # the same moment with the same stale stamp
    bucket.upload_fixture(daylily_fixtures, "test_snv")
    bucket.upload_fixture(daylily_fixtures, "test_help", as_name="urgent_help",
                          **{"daylily_info.yaml": "priority: urgent\n"})
    report = bucket.source().poll()
    assert sorted(report.registered) == ["test_snv", "urgent_help"], report.to_dict()
    normal = bucket.store.get_workset("test_snv")
    # the sentinel's own time is kept and shown as the state's time; age counts from the poll
    assert normal.state_changed_at == datetime(2025, 10, 16, 11, 11, 11, tzinfo=timezone.utc)
    assert normal.created_at == bucket.clock.now()
    ready = list(bucket.store.iter_worksets(state=WorksetState.READY))
    one_slot = ClusterCapacity("c1", "us-west-2d", 1024, 0, 8192, 0, 0, 1, 0.05, "ready")
    decisions = schedule(ready, [one_slot], now=bucket.clock.now())
    assert [d.workset_id for d in placements(decisions)] == ["urgent_help"]


# -- the earlier monitor's own config, end to end ---------------------------------------------
# Stand-ins for what the real config names: ./bin/daylily-stage-samples-from-local-to-headnode
# and ./bin/daylily-export-fsx-to-s3 (relative to where the monitor runs), day-clone, dyoinit,
# dy-a and dy-r on PATH. Each records the argv it was given, one line per word.
STAND_INS = {
    "bin/daylily-stage-samples-from-local-to-headnode": r'''
printf '%s\n' "$@" > "$E2E_SEEN/stage.$(basename "$(dirname "${@: -1}")").argv"
head -1 "${@: -1}" | grep -q SAMPLE_ID || { echo "no sample sheet at ${@: -1}"; exit 2; }
''',
    "path/day-clone": r'''
printf '%s\n' "$@" > "$E2E_SEEN/clone.$2.argv"
mkdir -p "$E2E_WORK/$2/bin"
printf '#!/bin/bash\nprintf "%%s\\n" "$@" > day_run.argv\ntouch daylily.successful_run\n' > "$E2E_WORK/$2/bin/day_run"
printf 'day_activate_args="$*"\n' > "$E2E_WORK/$2/bin/day_activate"
chmod +x "$E2E_WORK/$2/bin/day_run"
echo "Location: $E2E_WORK/$2"
''',
    "path/dyoinit": "export DYOINIT_SOURCED=1\n",
    "path/dyoainit": "export DYOINIT_SOURCED=1\n",
    "path/dy-a": r'''printf '%s\n' "$@" > dy-a.argv
''',
    "path/dy-r": r'''[ "$DYOINIT_SOURCED" = 1 ] || { echo "dyoinit was not sourced"; exit 3; }
printf '%s\n' "$@" > dy-r.argv
touch daylily.successful_run
''',
    "bin/daylily-export-fsx-to-s3": r'''
printf '%s\n' "$@" > "$E2E_SEEN/export.$$.argv"
''',
}

# the issue's variant of the same file: shell syntax in the clone command and the run prefix
ISSUE_VARIANT = {
    "clone_command: day-clone {clone_args}": "clone_command: echo cloning && day-clone {clone_args}",
    'run_prefix: ". dyoinit && dy-a slurm hg38 && dy-r "':
        'run_prefix: "source dyoainit && source bin/day_activate slurm hg38 && DAY_CONTAINERIZED=0 ./bin/day_run "',
}
REAL_SUFFIX = ["produce_snv_concordances", "-p", "-k", "-j", "20", "--config",
               "aligners=[sent,bwa2a,strobe]", "dedupers=[dppl]", "snv_callers=[sentd,deep19,oct]"]
FIXTURE_NAMES = ("test_allgiab", "test_help", "test_snv")


@pytest.mark.parametrize("variant", ["as-is", "issue-variant"])
def test_the_earlier_monitors_own_config_runs_the_real_folders_to_complete(
        bucket: Bucket, daylily_fixtures: str, tmp_path: Path, moto_endpoint: str,
        monkeypatch: pytest.MonkeyPatch, variant: str) -> None:
    from wsmon.config import load_settings
    from wsmon.engine.service import Engine

    home, work, seen, cwd = (tmp_path / d for d in ("home", "work", "seen", "monitor"))
    for d in (home, work, seen, cwd / "bin", cwd / "path"):
        d.mkdir(parents=True)
    for rel, body in STAND_INS.items():
        (cwd / rel).write_text("#!/bin/bash\n" + body)
        (cwd / rel).chmod(0o755)
    # this machine's AWS profile (the moto endpoint), in a config file of its own
    aws_config = tmp_path / "aws-config"
    aws_config.write_text("[profile wsmon-e2e]\nregion = us-west-2\naws_access_key_id = testing\n"
                          "aws_secret_access_key = testing\n")
    for name, value in (("AWS_CONFIG_FILE", str(aws_config)), ("HOME", str(home)),
                        ("PATH", f"{cwd / 'path'}:{os.environ['PATH']}"),
                        ("E2E_SEEN", str(seen)), ("E2E_WORK", str(work))):
        monkeypatch.setenv(name, value)
    # shell-mode commands run in a login shell (bash -lc), which takes PATH from the profile
    (home / ".bash_profile").write_text(f'export PATH="{cwd / "path"}:$PATH"\n')
    monkeypatch.chdir(cwd)
    for name in FIXTURE_NAMES:
        bucket.upload_fixture(daylily_fixtures, name)
    # the Daylily file as it is; only the AWS profile, the workdir and the bucket prefix (a
    # unique one per test on the shared moto server) differ
    text = (Path(daylily_fixtures) / "test_snv" / "daylily_info.yaml").read_text()
    text = (text.replace("profile: daylily-service-lsmc", "profile: wsmon-e2e")
                .replace("workdir: /fsx/worksets", f"workdir: {work}")
                .replace("prefix: daylily_monitoring/active_worksets/", f"prefix: {bucket.prefix}"))
    if variant == "issue-variant":
        for old, new in ISSUE_VARIANT.items():
            assert old in text
            text = text.replace(old, new)
    daylily = tmp_path / "daylily-monitor.yaml"
    daylily.write_text(text)
    toml = tmp_path / "wsmon.toml"
    toml.write_text(f'''monitor_id = "e2e"
state_dir = "{tmp_path / 'state'}"
daylily_yaml = "{daylily}"
[aws]
endpoint_url = "{moto_endpoint}"
[store]
url = "sqlite:///{tmp_path / 'engine.db'}"
[discovery]
ready_lock_backoff_seconds = 0
[clusters]
slurm_usage = false
static = [{{ name = "newcluex", availability_zone = "us-west-2d", max_vcpus = 100000, max_memory_gb = 1000000.0 }}]
[runner]
tmux_socket = "wsmon-test-{bucket.prefix.split('/')[0][-10:]}"
pipeline_poll_seconds = 0.1
[metrics]
sink = "none"
''')
    settings = load_settings(toml)
    assert settings.aws.profile == "wsmon-e2e" and settings.discovery.sources[0].bucket == FIXTURE_BUCKET
    store = open_store(settings.store_url, clock=bucket.clock)
    engine = Engine(settings, store=store, clock=bucket.clock)
    try:
        for _ in range(3):
            engine.run_cycle(wait=True, timeout=60)
        states = {name: store.get_workset(name).state for name in FIXTURE_NAMES}
        assert states == dict.fromkeys(FIXTURE_NAMES, WorksetState.COMPLETE), {
            n: (store.get_workset(n).error_code, store.get_workset(n).error_details) for n in FIXTURE_NAMES}
        pem = str(home / ".ssh" / "daylily-headnode.pem")
        for name in FIXTURE_NAMES:
            stage = (seen / f"stage.{sanitised_dir(name)}.argv").read_text().splitlines()
            assert stage[:9] == ["--profile", "wsmon-e2e", "--region", "us-west-2", "--pem", pem,
                                 "--cluster", "newcluex"] + stage[8:9]
            assert len(stage) == 9 and stage[8].endswith("stage_samples.tsv")
            tag = "0.7.389" if name == "test_allgiab" else "main"
            assert (seen / f"clone.{name}.argv").read_text().splitlines() == ["-d", name, "-t", tag]
            run_argv = work / name / ("dy-r.argv" if variant == "as-is" else "day_run.argv")
            expected = ["help"] if name == "test_help" else REAL_SUFFIX
            assert run_argv.read_text().splitlines() == expected
        exports = [p.read_text().splitlines() for p in seen.glob("export.*.argv")]
        assert exports == 3 * [["--cluster", "newcluex", "--target-uri", f"s3://{FIXTURE_BUCKET}/"
                                "daylily_monitoring/active_worksets/runme14/results/"]]
        if variant == "as-is":
            assert (work / "test_snv" / "dy-a.argv").read_text().splitlines() == ["slurm", "hg38"]
    finally:
        engine.stop(0)
        store.close()
        import subprocess
        subprocess.run(["tmux", "-L", settings.runner.tmux_socket, "kill-server"],
                       capture_output=True, check=False)


def sanitised_dir(workset_id: str) -> str:
    from wsmon.engine.runner import sanitise

    return sanitise(workset_id)


def test_sigterm_mid_poll_stops_the_headless_engine_within_its_grace(
        bucket: Bucket, daylily_fixtures: str, tmp_path: Path, moto_endpoint: str) -> None:
    import json
    import signal
    import subprocess
    import sys
    import threading

    # a folder whose validation runs for minutes: 20,000 FASTQ objects to check, none there
    rows = "".join(f"S{i}\ts3://{FIXTURE_BUCKET}/nowhere/{i}_1.fq\ts3://{FIXTURE_BUCKET}/nowhere/{i}_2.fq\n"
                   for i in range(10_000))
    bucket.upload_fixture(daylily_fixtures, "test_help", as_name="slow",
                          **{"stage_samples.tsv": "SAMPLE_ID\tR1_FQ\tR2_FQ\n" + rows})
    config = tmp_path / "wsmon.toml"
    config.write_text(f'''monitor_id = "sigterm"
state_dir = "{tmp_path / 'state'}"
[aws]
endpoint_url = "{moto_endpoint}"
region = "us-west-2"
[store]
url = "sqlite:///{tmp_path / 'engine.db'}"
[discovery]
sources = [{{ bucket = "{FIXTURE_BUCKET}", prefix = "{bucket.prefix}" }}]
folder_time_budget_seconds = 3600
head_workers = 2
[clusters]
pcluster_discovery = false
slurm_usage = false
[runner]
kind = "simulated"
shutdown_grace_seconds = 5
[metrics]
sink = "none"
''')
    env = {k: v for k, v in os.environ.items() if not k.startswith("WSMON_")}
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
               XDG_CONFIG_HOME=str(tmp_path / "xdg"), XDG_STATE_HOME=str(tmp_path / "xdg"))
    proc = subprocess.Popen([sys.executable, "-m", "wsmon.cli", "--config", str(config), "--headless"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    validating = threading.Event()
    lines: list[str] = []

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if '"s3source.validating"' in line:
                validating.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert validating.wait(60), "".join(lines[-20:])
        proc.send_signal(signal.SIGTERM)
        # the grace is 5 s; a poll that held shutdown would take minutes here
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise AssertionError("still running 30 s after SIGTERM:\n" + "".join(lines[-15:])) from None
        assert code == 0, "".join(lines[-20:])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(5)
    events = [json.loads(line).get("event") for line in lines if line.startswith("{")]
    assert "s3source.poll_stopped" in events
