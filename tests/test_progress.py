"""Progress from Snakemake's run log, ETA, and actual cost from sacct (wsmon/engine/progress)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wsmon.engine.progress import sacct as sacct_mod
from wsmon.engine.progress.eta import RateEstimator
from wsmon.engine.progress.logsource import CommandLogSource, LocalLogSource, LogFollower
from wsmon.engine.progress.sacct import (
    CostLedger,
    PriceBook,
    SacctError,
    parse_duration,
    parse_sacct,
    run_sacct,
)
from wsmon.engine.progress.snakelog import MAX_LINE_BYTES, SnakemakeLogParser
from tests.waiting import wait_until

HERE = Path(__file__).parent / "fixtures" / "progress"
FAKE_BIN = HERE / "bin"


def fixture_bytes(name: str) -> bytes:
    path = HERE / name
    if not path.is_file():
        pytest.fail(f"test data {path} is missing (it belongs in the repository)")
    return path.read_bytes()


def parse(data: bytes) -> SnakemakeLogParser:
    parser = SnakemakeLogParser()
    parser.feed(data)
    return parser


# -- the parser ---------------------------------------------------------------------------------

def test_sample_log_gives_steps_rules_errors_and_slurm_ids():
    p = parse(fixture_bytes("snakemake_run.log")).progress
    assert (p.done, p.total, p.percent) == (2, 6, 33.0)
    assert p.running_rules() == {"dedup": 1}  # failed once, restarted
    assert p.done_per_rule == {"bwa2a_sort": 2}
    assert list(p.slurm_ids) == ["1234567", "1234568", "1234569", "1234570"]
    assert (p.errors, p.last_error_rule) == (1, "dedup")


def test_job_stats_total_gives_zero_percent_before_the_first_step():
    p = parse(b"Building DAG of jobs...\nJob stats:\njob  count\n---  -----\nall  1\nx  9\ntotal  10\n\n").progress
    assert p.known and (p.done, p.total, p.percent) == (0, 10, 0.0)


def test_log_without_snakemake_progress_is_unknown_not_zero():
    p = parse(b"staging samples...\ncopying 3 files\nrule-like text: nope\n").progress
    assert not p.known and p.percent is None and p.total is None


def test_snakemake_8_forms():
    p = parse(b"rule call:\n    jobid: 3\n\nJob 3 has been submitted with SLURM jobid 555 (log: x.log).\n"
              b"Finished jobid: 3 (Rule: call)\n1 of 4 steps (25%) done\n").progress
    assert (p.done, p.total) == (1, 4)
    assert p.done_per_rule == {"call": 1} and not p.running
    assert list(p.slurm_ids) == ["555"]


def test_localrule_blocks_and_a_new_run_in_the_same_log():
    data = (b"localrule all:\n    jobid: 0\n\nrule a:\n    jobid: 1\n\n"
            b"Building DAG of jobs...\nrule b:\n    jobid: 7\n")
    p = parse(data).progress
    assert p.running_rules() == {"b": 1}
    assert p.runs == 1


def test_non_slurm_external_ids_are_never_kept_for_sacct():
    p = parse(b"Submitted job 1 with external jobid 'x; rm -rf /'.\n"
              b"Submitted job 2 with external jobid 'Submitted batch job 42'.\n").progress
    assert p.take_pending_slurm_ids() == ["42"]


def test_markup_and_escapes_in_rule_names_are_stripped_of_control_characters():
    p = parse(b"rule [bold red]x\x1b[31m\x1b]52;c;cGF3bmVk\x07evil:\n    jobid: 9\n").progress
    (rule,) = p.running_rules()
    assert "\x1b" not in rule and "\x07" not in rule
    assert rule.startswith("[bold red]x")  # kept literally; screens escape markup


def test_binary_garbage_does_not_stop_parsing():
    rng = random.Random(7)
    garbage = bytes(rng.randrange(256) for _ in range(200_000))
    data = garbage + b"\n3 of 9 steps (33%) done\n" + garbage.replace(b"\n", b"")[:5000]
    p = parse(data).progress
    assert (p.done, p.total) == (3, 9)


def test_a_huge_line_without_newline_keeps_memory_bounded():
    parser = SnakemakeLogParser()
    for _ in range(40):
        parser.feed(b"x" * 256 * 1024)
    assert len(parser._partial) <= MAX_LINE_BYTES
    parser.feed(b"\n5 of 10 steps (50%) done\n")
    assert parser.progress.done == 5
    assert parser.progress.skipped_long_lines == 1


def test_tail_is_bounded_and_clean():
    parser = SnakemakeLogParser(tail_lines=3)
    parser.feed(b"".join(b"line %d\n" % i for i in range(100)) + b"\x1b[2Jlast\n")
    assert parser.tail_text() == "line 98\nline 99\nlast"


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=4000), min_size=1, max_size=30))
def test_feeding_in_any_pieces_gives_the_same_result(cuts):
    data = fixture_bytes("snakemake_run.log")
    whole = parse(data).progress
    parser = SnakemakeLogParser()
    pos = 0
    for size in cuts:
        parser.feed(data[pos:pos + size])
        pos += size
    parser.feed(data[pos:])
    p = parser.progress
    assert (p.done, p.total, dict(p.running), p.done_per_rule, list(p.slurm_ids), p.errors) == (
        whole.done, whole.total, dict(whole.running), whole.done_per_rule, list(whole.slurm_ids),
        whole.errors)


# -- following a file ---------------------------------------------------------------------------

class CountingSource(LocalLogSource):
    def __init__(self) -> None:
        self.bytes_read = 0

    def read_from(self, path, offset, limit):
        chunk = super().read_from(path, offset, limit)
        self.bytes_read += len(chunk.data)
        return chunk


def test_follower_reads_only_what_was_added(tmp_path):
    log = tmp_path / "run.log"
    source = CountingSource()
    follower = LogFollower(source, str(log))
    assert follower.poll().status == "log not written yet"
    log.write_bytes(b"Building DAG of jobs...\n")
    assert follower.poll().status.startswith("progress unknown")
    with open(log, "ab") as fh:
        fh.write(b"1 of 4 steps (25%) do")
    follower.poll()
    assert follower.progress.done == 0  # the line is not finished yet
    with open(log, "ab") as fh:
        fh.write(b"ne\n")
    result = follower.poll()
    assert result.progress_changed and follower.progress.done == 1 and result.status == "ok"
    before = source.bytes_read
    assert follower.poll().read_bytes == 0
    assert source.bytes_read == before == log.stat().st_size


def test_truncated_log_is_read_again_from_the_start(tmp_path):
    log = tmp_path / "run.log"
    log.write_bytes(b"rule a:\n    jobid: 1\n" + b"1 of 4 steps (25%) done\n" * 50)
    follower = LogFollower(LocalLogSource(), str(log))
    follower.poll()
    log.write_bytes(b"2 of 8 steps (25%) done\n")
    status = follower.poll().status
    assert "truncated" in status
    assert (follower.progress.done, follower.progress.total) == (2, 8)
    assert not follower.progress.running


def test_rotated_log_is_followed_from_the_start_of_the_new_file(tmp_path):
    log = tmp_path / "run.log"
    log.write_bytes(b"1 of 4 steps (25%) done\n")
    follower = LogFollower(LocalLogSource(), str(log))
    follower.poll()
    log.rename(tmp_path / "run.log.1")
    log.write_bytes(b"3 of 4 steps (75%) done\n" + b"x" * 100)
    assert "replaced" in follower.poll().status
    assert follower.progress.done == 3
    (tmp_path / "run.log").unlink()
    assert "gone" in follower.poll().status


def test_a_2_gb_log_is_not_read_in_full(tmp_path):
    log = tmp_path / "huge.log"
    with open(log, "wb") as fh:
        fh.truncate(2 * 1024**3)  # sparse: two gigabytes of NULs, no newline
        fh.seek(0, os.SEEK_END)
        fh.write(b"\n340 of 345 steps (99%) done\n")
    source = CountingSource()
    follower = LogFollower(source, str(log), catch_up_bytes=4 << 20, max_bytes_per_poll=8 << 20)
    status = follower.poll().status
    assert (follower.progress.done, follower.progress.total) == (340, 345)
    assert follower.partial and "partial" in status
    assert source.bytes_read <= (4 << 20) + (1 << 20)


def test_unreadable_log_is_a_status_not_an_exception(tmp_path):
    log = tmp_path / "run.log"
    log.mkdir()  # reading a directory fails with an OSError
    status = LogFollower(LocalLogSource(), str(log)).poll().status
    assert status.startswith("cannot read")


def test_command_source_reads_through_a_wrapper(tmp_path):
    """The SSH runner's host wraps argv in ssh; the same script runs here through plain sh."""
    log = tmp_path / "run log with spaces; $(echo x).log"
    log.write_bytes(b"2 of 5 steps (40%) done\n")
    follower = LogFollower(CommandLogSource(list), str(log))
    follower.poll()
    assert (follower.progress.done, follower.progress.total) == (2, 5)
    with open(log, "ab") as fh:
        fh.write(b"3 of 5 steps (60%) done\n")
    assert follower.poll().read_bytes == len(b"3 of 5 steps (60%) done\n")
    assert follower.progress.done == 3
    assert LogFollower(CommandLogSource(list), str(tmp_path / "nope")).poll().status == "log not written yet"




def test_fake_snakemake_writes_progress_over_time(tmp_path):
    log = tmp_path / "run.log"
    gate = tmp_path / "gate"
    gate.mkdir()
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, str(FAKE_BIN / "snakemake"), "--total", "10",
                                 "--stages", "0,3,10", "--gate", str(gate)], stdout=out)
    try:
        follower = LogFollower(LocalLogSource(), str(log))
        seen = []
        for stage, expected in enumerate((0.0, 30.0, 100.0)):
            (gate / f"go-{stage}").touch()
            wait_until(lambda: follower.poll() and follower.progress.percent == expected,
                       f"{expected}% in the log")
            seen.append(follower.progress.percent)
        assert seen == [0.0, 30.0, 100.0]
        assert proc.wait(timeout=30) == 0
        assert len(follower.progress.take_pending_slurm_ids()) == 10
    finally:
        proc.kill()


# -- ETA ----------------------------------------------------------------------------------------

def test_eta_from_the_recent_rate_and_growing_when_stalled(clock):
    rate = RateEstimator(window=timedelta(minutes=30))
    start = clock.now()
    assert rate.eta(start, 0, 100) is None  # nothing to measure yet
    rate.record(start, 0)
    for _ in range(10):
        clock.advance(minutes=6)
        rate.record(clock.now(), rate._samples[-1][1] + 5)
    now = clock.now()  # 50 done in 60 min; the last 30 min: 25 steps → 50 steps/h
    assert rate.rate_per_hour(now) == pytest.approx(50.0)
    assert rate.eta(now, 50, 100) == now + timedelta(hours=1)
    clock.advance(minutes=30)  # stalled: no step for 30 minutes
    later = rate.eta(clock.now(), 50, 100)
    assert later is not None and later > now + timedelta(hours=1) + timedelta(minutes=30)
    assert rate.eta(clock.now(), 100, 100) is None
    assert rate.eta(clock.now(), 50, None) is None


def test_eta_restarts_when_a_new_run_counts_from_zero(clock):
    rate = RateEstimator()
    rate.record(clock.now(), 5)
    clock.advance(minutes=5)
    rate.record(clock.now(), 10)
    rate.record(clock.now(), 0)
    assert rate.rate_per_hour(clock.now()) is None


# -- sacct and cost -----------------------------------------------------------------------------

def test_parse_duration():
    assert parse_duration("05:07") == 307
    assert parse_duration("01:08:29") == 4109
    assert parse_duration("3-01:02:56") == 3 * 86400 + 3776
    assert parse_duration("00:00:01.250") == 1
    assert parse_duration("INVALID") is None and parse_duration("") is None


def test_sacct_fixture_jobs_only_not_steps():
    report = parse_sacct(fixture_bytes("sacct_parsable2.txt").decode())
    assert [j.job_id for j in report.jobs] == ["1234567", "1234568", "1234569", "1234570"]
    first = report.jobs[0]
    assert (first.alloc_cpus, first.elapsed_seconds, first.partition, first.final) == (64, 4109, "i192", True)
    assert first.vcpu_hours == pytest.approx(64 * 4109 / 3600)
    assert report.jobs[3].state == "RUNNING" and not report.jobs[3].final


def test_sacct_junk_and_odd_states():
    with pytest.raises(SacctError, match="unreadable output"):
        parse_sacct("Segmentation fault\n::::\n")
    with pytest.raises(SacctError, match="unreadable output"):
        parse_sacct("JobID|Elapsed|AllocCPUS|CPUTime|Partition|State\nabc|x|y|z|p|COMPLETED\n")
    report = parse_sacct("JobID|Elapsed|AllocCPUS|CPUTime|Partition|State\n"
                         "77|00:10:00|4|INVALID|i8|CANCELLED by 1000\n")
    assert report.jobs[0].state == "CANCELLED" and report.jobs[0].cpu_seconds == 2400


def test_ledger_settles_finished_jobs_and_keeps_asking_only_about_the_rest():
    prices = PriceBook(0.05, clusters={"c1": 0.04}, partitions={"c1": {"i192": 0.03}})
    ledger = CostLedger("c1", prices)
    ledger.add_ids(["1234567", "1234568", "1234569", "1234570", "1234567"])
    ledger.apply(parse_sacct(fixture_bytes("sacct_parsable2.txt").decode()))
    assert ledger.unsettled_ids() == ["1234570"]
    settled_hours = (64 * 4109 + 64 * 4310 + 16 * 1772) / 3600
    assert ledger.settled.vcpu_hours == pytest.approx(settled_hours)
    total = ledger.total()  # the running job counts for what it used so far
    assert total.vcpu_hours == pytest.approx(settled_hours + 16 * 720 / 3600)
    assert total.cost_usd == pytest.approx(total.vcpu_hours * 0.03)


def test_price_book_falls_back_from_partition_to_cluster_to_default():
    prices = PriceBook(0.05, clusters={"c1": 0.04}, partitions={"c1": {"i192": 0.03}})
    assert prices.price("c1", "i192") == 0.03
    assert prices.price("c1", "i8") == 0.04
    assert prices.price("c2", "i192") == 0.05
    assert prices.price(None, None) == 0.05


@pytest.fixture
def fake_sacct_path(monkeypatch):
    if not (FAKE_BIN / "sacct").is_file():
        pytest.fail("fake sacct is missing from tests/fixtures/progress/bin")
    monkeypatch.setenv("PATH", f"{FAKE_BIN}{os.pathsep}{os.environ['PATH']}")


def test_run_sacct_with_the_fake_on_path(fake_sacct_path, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_SACCT_DATA", str(HERE / "sacct_parsable2.txt"))
    calls = tmp_path / "calls"
    monkeypatch.setenv("FAKE_SACCT_CALLS", str(calls))
    monkeypatch.setattr(sacct_mod, "IDS_PER_CALL", 2)
    report = run_sacct(["1234567", "1234569", "1234570"])
    assert [j.job_id for j in report.jobs] == ["1234567", "1234569", "1234570"]
    assert calls.read_text().splitlines() == ["1234567,1234569", "1234570"]


def test_run_sacct_failures_have_clear_messages(fake_sacct_path, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_SACCT_MODE", "fail")
    with pytest.raises(SacctError, match=r"sacct: failed \(exit 1\): .*Connection refused"):
        run_sacct(["1"])
    monkeypatch.setenv("FAKE_SACCT_MODE", "junk")
    with pytest.raises(SacctError, match="unreadable output") as err:
        run_sacct(["1"])
    assert "\x1b" not in str(err.value)
    monkeypatch.setenv("PATH", str(tmp_path))  # no sacct anywhere
    with pytest.raises(SacctError, match="sacct: not found on head node"):
        run_sacct(["1"])
    with pytest.raises(SacctError, match="sacct: not found on head node"):
        run_sacct(["1"], wrap=lambda argv: ["sh", "-c", 'exec "$@"', "sh", *argv])


# -- the operator's commands (pager, attach, S3 console) ------------------------------------------

def _workset(**progress):
    from datetime import datetime, timezone

    from wsmon.core.models import RunProgress, Workset

    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    return Workset(workset_id="ws 1", bucket="bkt", prefix="p/ws 1/", created_at=now, updated_at=now,
                   state_changed_at=now, progress=RunProgress(**progress) if progress else None)


def test_pager_and_attach_argv_locally_and_through_ssh():
    from wsmon.config.settings import Settings
    from wsmon.engine.progress.operator_argv import NothingToOpen, attach_argv, pager_argv

    local = Settings(runner={"tmux_socket": "sock"})
    ws = _workset(session="wsmon-ws_1-ab", log_path="/state/logs/ws 1/run.log")
    assert pager_argv(local, ws, {"PAGER": "most -s"}) == ["most", "-s", "/state/logs/ws 1/run.log"]
    assert pager_argv(local, ws, {}) == ["less", "-R", "+G", "/state/logs/ws 1/run.log"]
    assert attach_argv(local, ws) == ["tmux", "-L", "sock", "attach-session", "-r", "-t", "=wsmon-ws_1-ab"]

    ssh = Settings(runner={"kind": "ssh", "ssh_host": "head-1", "tmux_socket": "sock"})
    remote = _workset(session="wsmon-ws_1-ab", log_path="/fsx/ws 1;rm -rf ~/.wsmon-run.log",
                      log_host="head-1")
    argv = attach_argv(ssh, remote)
    assert argv[:2] == ["ssh", "-t"] and "StrictHostKeyChecking=yes" in argv
    assert argv[-2:] == ["--", "tmux -L sock attach-session -r -t =wsmon-ws_1-ab"]
    argv = pager_argv(ssh, remote, {"PAGER": "ignored-remotely"})
    assert argv[-1] == "less -R +G -- '/fsx/ws 1;rm -rf ~/.wsmon-run.log'"  # one quoted word
    with pytest.raises(NothingToOpen, match="run step has not started"):
        attach_argv(local, _workset())


def test_s3_console_url_quotes_the_prefix():
    from wsmon.engine.progress.operator_argv import s3_console_url, s3_uri

    ws = _workset()
    assert s3_uri(ws) == "s3://bkt/p/ws 1/"
    assert s3_console_url(ws, "us-west-2") == (
        "https://s3.console.aws.amazon.com/s3/buckets/bkt?prefix=p%2Fws%201%2F&region=us-west-2")
