"""What following a Snakemake run log costs the engine.

Builds a real-format log (rule blocks with jobid, Slurm submissions, "Finished job", "N of M
steps" lines, in the proportions of tests/fixtures/progress/snakemake_run.log) of --mb
megabytes in a temporary directory, then prints:

* parse cost per MB: one LogFollower reading the whole file (catch-up jump disabled);
* the per-workset per-heartbeat cost when the log has not grown (one stat and nothing to read),
  for --worksets followers, averaged over --rounds heartbeats;
* the same when every log grew by one job's lines since the last heartbeat;
* the engine's progress job (ProgressTracker.observe, SQLite store) per workset per round when no
  log has grown: the follower's read plus the comparison that skips the store write.

    .venv/bin/python bench/progress_bench.py
    .venv/bin/python bench/progress_bench.py --mb 64 --worksets 50

Target: under 1 ms per workset per heartbeat when the log has not grown.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wsmon.engine.progress.logsource import LocalLogSource, LogFollower  # noqa: E402


def job_lines(jobid: int, total: int) -> bytes:
    rule = ("bwa2a_sort", "dedup", "deepvariant", "produce_snv_concordances")[jobid % 4]
    return (
        f"Select jobs to execute...\n\n[Thu Dec  3 10:02:11 2026]\nrule {rule}:\n"
        f"    input: results/day/hg38/RIH0_ANA0-HG{jobid:05d}_DBC0_0/align/bwa2a/RIH0.bwa2a.sort.bam\n"
        f"    output: results/day/hg38/RIH0_ANA0-HG{jobid:05d}_DBC0_0/align/bwa2a/RIH0.bwa2a.mrkdup.bam\n"
        f"    jobid: {jobid}\n    wildcards: sample=RIH0_ANA0-HG{jobid:05d}_DBC0_0\n"
        f"    threads: 16\n    resources: mem_mb=60000, disk_mb=1000, tmpdir=<TBD>, partition=i192\n\n"
        f"Submitted job {jobid} with external jobid '{7000000 + jobid}'.\n"
        f"[Thu Dec  3 10:12:11 2026]\nFinished job {jobid}.\n"
        f"{jobid} of {total} steps ({100 * jobid // total}%) done\n"
    ).encode()


def build_log(path: Path, megabytes: float) -> int:
    target = int(megabytes * 1024 * 1024)
    per_job = len(job_lines(1, 10**6))
    total = max(1, target // per_job)
    with open(path, "wb") as fh:
        fh.write(b"Building DAG of jobs...\nJob stats:\njob  count\n---  -----\n"
                 + f"total  {total}\n\n".encode())
        for jobid in range(1, total + 1):
            fh.write(job_lines(jobid, total))
    return total


def main() -> None:
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=32.0, help="size of the log parsed in full")
    ap.add_argument("--worksets", type=int, default=20, help="followers polled per heartbeat")
    ap.add_argument("--rounds", type=int, default=200, help="heartbeats timed")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big.log"
        jobs = build_log(big, args.mb)
        size = big.stat().st_size
        follower = LogFollower(LocalLogSource(), str(big), max_bytes_per_poll=size + 1,
                               catch_up_bytes=size + 1)
        t0 = time.perf_counter()
        follower.poll()
        parse_s = time.perf_counter() - t0
        assert follower.progress.done == jobs, (follower.progress.done, jobs)
        mb = size / 1024 / 1024
        print(f"parse: {mb:.1f} MB ({jobs} jobs) in {parse_s:.2f} s = "
              f"{parse_s / mb * 1000:.1f} ms per MB ({mb / parse_s:.1f} MB/s)")

        followers = []
        for i in range(args.worksets):
            path = Path(tmp) / f"ws{i}.log"
            build_log(path, 0.05)
            f = LogFollower(LocalLogSource(), str(path))
            f.poll()
            followers.append(f)
        t0 = time.perf_counter()
        for _ in range(args.rounds):
            for f in followers:
                f.poll()
        idle = (time.perf_counter() - t0) / (args.rounds * len(followers))
        print(f"heartbeat, log not grown: {idle * 1e6:.1f} µs per workset "
              f"({len(followers)} worksets × {args.rounds} heartbeats); target < 1000 µs")

        grown_rounds = max(1, args.rounds // 10)
        spent = 0.0
        for r in range(grown_rounds):
            for f in followers:
                with open(f.path, "ab") as fh:
                    fh.write(job_lines(10_000 + r, 20_000))
            t0 = time.perf_counter()
            for f in followers:
                f.poll()
            spent += time.perf_counter() - t0
        grown = spent / (grown_rounds * len(followers))
        print(f"heartbeat, log grew by one job ({len(job_lines(1, 2))} bytes): "
              f"{grown * 1e6:.1f} µs per workset")
        tracker_round(Path(tmp), followers, args.rounds)


def tracker_round(tmp: Path, followers: list, rounds: int) -> None:
    from wsmon.config.settings import Settings
    from wsmon.core.clock import ManualClock
    from wsmon.core.models import StepRecord
    from wsmon.engine.progress.tracker import ProgressTracker
    from wsmon.engine.runner.hosts import LocalHost
    from wsmon.engine.store import open_store

    class Runner:
        host = LocalHost()

    clock = ManualClock()
    store = open_store(f"sqlite:///{tmp / 'bench.db'}", clock=clock)
    running = {}
    for i, f in enumerate(followers):
        wid = f"ws{i}"
        store.register_workset(wid, "b", f"p/{wid}/")
        lease = store.acquire_lock(wid, "bench", lease_seconds=86400)
        store.update_state(wid, "in_progress", "bench", "bench", lease=lease, steps=[
            StepRecord(name="run", status="running", started_at=clock.now(), log_path=f.path)])
        running[wid] = lease
    tracker = ProgressTracker(Settings(), store, Runner(), actor="bench", clock=clock)
    tracker.observe(running)  # first round: reads every log, writes every workset
    t0 = time.perf_counter()
    for _ in range(rounds):
        tracker.observe(running)
    per = (time.perf_counter() - t0) / (rounds * len(running))
    print(f"progress job, logs not grown (store write skipped): {per * 1e6:.1f} µs per workset "
          f"per round; target < 1000 µs")
    store.close()


if __name__ == "__main__":
    main()
