"""Job lag and overruns of the engine in the demo world (prints, never asserts).

    .venv/bin/python bench/engine_health_bench.py [--seconds 120] [--store dynamodb|sqlite]

Builds the demo world (embedded AWS endpoint, ~40 seeded folders, a new folder every 10-20 s),
runs the real engine with the demo's settings for the window, and prints per job: interval,
runs, skipped/missed runs (overruns), worst and last lag, last duration; plus the machine's load
average, since the figures depend on it (the issue's 5-minute window is --seconds 300).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from wsmon.demo.run import (Dropper, _aws_client, create_world, dummy_aws_credentials,
                            embedded_aws, seed_world)
from wsmon.engine.service import Engine


def _job_of_caller() -> str | None:
    """The engine job this request runs under (Engine._guard's wrapper holds its name)."""
    import sys

    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_name == "job" and "fn" in frame.f_locals:
            return str(frame.f_locals.get("name"))
        frame = frame.f_back
    return None


def _caller_site() -> str:
    """The engine function (outside the store and the AWS helpers) a request was made for."""
    import sys

    frame = sys._getframe(2)
    while frame is not None:
        path = frame.f_code.co_filename.replace("\\", "/")
        if "/wsmon/" in path and "/wsmon/engine/store/" not in path and "/wsmon/core/" not in path:
            module = path.rsplit("/wsmon/", 1)[1].removesuffix(".py").replace("/", ".")
            return f"{module}:{frame.f_code.co_name}"
        frame = frame.f_back
    return "?"


def _count_requests(by_site: bool = False) -> dict:
    """Wrap botocore's API call to count requests and time per (job, operation), and with
    ``by_site`` also per engine function that asked."""
    import re
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from botocore.client import BaseClient

    calls: dict = {}
    real = BaseClient._make_api_call
    # the store fans some reads out to a plain ThreadPoolExecutor (one Query per state): such a
    # request is counted under the job and function that submitted it
    origin = threading.local()
    real_submit = ThreadPoolExecutor.submit

    def submit(self, fn, /, *args, **kwargs):
        job, site = _job_of_caller(), _caller_site()

        def run(*a, **k):
            # only a fan-out from inside a job (apscheduler's own pool runs the jobs themselves)
            if job is not None and threading.current_thread().name.startswith("ThreadPoolExecutor"):
                origin.job, origin.site = job, site
            try:
                return fn(*a, **k)
            finally:
                origin.job = origin.site = None
        return real_submit(self, run, *args, **kwargs)

    def counted(self, operation, params):
        began = time.perf_counter()
        try:
            return real(self, operation, params)
        finally:
            thread = re.sub(r"[-_]\d+$", "", threading.current_thread().name)[:28]
            key = (_job_of_caller() or getattr(origin, "job", None) or thread, operation)
            if by_site:
                key += (getattr(origin, "site", None) or _caller_site(),)
            n, spent = calls.get(key, (0, 0.0))
            calls[key] = (n + 1, spent + time.perf_counter() - began)

    BaseClient._make_api_call = counted
    ThreadPoolExecutor.submit = submit
    return calls


def _children_cpu_seconds() -> float | None:
    """CPU seconds (user + system) used so far by this process's children (the AWS stand-in in
    its own process); None where /proc is not there to read."""
    me, tick, total = os.getpid(), os.sysconf("SC_CLK_TCK"), 0
    try:
        pids = [d for d in os.listdir("/proc") if d.isdigit()]
    except OSError:
        return None
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == me:
            total += int(fields[11]) + int(fields[12])
    return total / tick


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--store", choices=["dynamodb", "sqlite"], default="dynamodb")
    parser.add_argument("--endpoint", choices=["thread", "process"], default="process",
                        help="the AWS stand-in in a thread of this process (before the fix) "
                             "or its own process (the demo since the fix)")
    parser.add_argument("--warmup", type=float, default=0.0,
                        help="seconds run before the window (startup burst: the seeded folders "
                             "all become ready at once); the figures count the window only")
    parser.add_argument("--before", action="store_true",
                        help="reproduce the figures before the fix: the force-release look on "
                             "every sweep, the stand-in in a thread")
    parser.add_argument("--requests", action="store_true",
                        help="also count AWS requests per job thread and operation (slower)")
    parser.add_argument("--sites", action="store_true",
                        help="with --requests, also name the engine function behind each request")
    args = parser.parse_args()
    calls = _count_requests(args.sites) if args.requests else None
    if args.before:
        from datetime import timedelta

        import wsmon.engine.sweep as sweep

        sweep.FORCE_RELEASE_NOTICE_EVERY = timedelta(0)
        args.endpoint = "thread"
    import logging

    logging.disable(logging.WARNING)  # the figures are the output, not the engine's chatter
    with dummy_aws_credentials(), embedded_aws(args.endpoint == "process") as endpoint:
        world = create_world(endpoint, Path(tempfile.mkdtemp(prefix="wsmon-bench-")), args.store)
        seed_world(world)
        dropper = Dropper(_aws_client(world.settings, "s3"))
        dropper.start()
        engine = Engine(world.settings)
        load_before = os.getloadavg()[0]
        engine.start()
        try:
            time.sleep(args.warmup)
            start = engine.job_health.summary()
            calls_before = dict(calls) if calls is not None else {}
            cpu_before = (time.process_time(), _children_cpu_seconds())
            time.sleep(args.seconds)
            figures = engine.job_health.summary()
            cpu_after = (time.process_time(), _children_cpu_seconds())
            if calls is not None:  # the window's requests, not the warm-up's
                window_calls = {}
                for key, (n, spent) in list(calls.items()):
                    n0, spent0 = calls_before.get(key, (0, 0.0))
                    if n > n0:
                        window_calls[key] = (n - n0, spent - spent0)
                calls = window_calls
            for name, f in figures.items():  # the window's counts, not the warm-up's
                f["runs"] -= start[name]["runs"]
                f["overruns"] -= start[name]["overruns"]
        finally:
            dropper.stop()
            engine.stop(world.settings.runner.shutdown_grace_seconds)
    print(f"store={args.store} window={args.seconds:g}s after {args.warmup:g}s warm-up "
          f"endpoint={args.endpoint} cpus={os.cpu_count()} "
          f"load_1m before={load_before:.1f} after={os.getloadavg()[0]:.1f}")
    print(f"{'job':<10} {'every':>6} {'runs':>5} {'overruns':>8} {'max_lag':>8} {'lag':>6} {'duration':>8}")
    for name, f in sorted(figures.items()):
        print(f"{name:<10} {f['interval_seconds']:>6g} {f['runs']:>5} {f['overruns']:>8} "
              f"{f['max_lag_seconds']:>8.3f} {f['lag_seconds']:>6.3f} {f['duration_seconds']:>8.3f}")
    total = sum(f["overruns"] for f in figures.values())
    print(f"total overruns: {total}")
    engine_cpu = cpu_after[0] - cpu_before[0]
    stand_in = (f"{cpu_after[1] - cpu_before[1]:.1f}s "
                f"({100 * (cpu_after[1] - cpu_before[1]) / args.seconds:.0f}% of a core)"
                if cpu_after[1] is not None and cpu_before[1] is not None else "unknown")
    print(f"CPU in the window: engine process {engine_cpu:.1f}s "
          f"({100 * engine_cpu / args.seconds:.0f}% of a core"
          f"{', request counting included' if calls is not None else ''}), "
          f"AWS stand-in process {stand_in}")
    if calls is not None:
        print(f"AWS requests in the window by (job or thread, operation), most time first "
              f"({sum(n for n, _ in calls.values())} in all):")
        for (thread, op, *site), (n, spent) in sorted(calls.items(), key=lambda kv: -kv[1][1])[:40]:
            print(f"  {thread:<28} {op:<24} {n:>6} {spent:>8.2f}s  {''.join(site)}")
        by_op: dict = {}
        for (_, op, *_site), (n, _spent) in calls.items():
            by_op[op] = by_op.get(op, 0) + n
        print("by operation: " + ", ".join(f"{op} {n}" for op, n in
                                          sorted(by_op.items(), key=lambda kv: -kv[1])))
    print(json.dumps({"store": args.store, "seconds": args.seconds, "jobs": figures}))


if __name__ == "__main__":
    main()
