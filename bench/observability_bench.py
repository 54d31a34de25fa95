"""Alerts, notifications and metrics costs on a SQLite store (prints, never asserts).

    .venv/bin/python bench/observability_bench.py [--worksets 5000] [--events 1000] [--incr 100000]

* one alert evaluation pass over N worksets (every rule on, a fraction of them in trouble);
* emit + deliver of E notifications through an in-process channel (outbox round trip only);
* Metrics.incr cost per call and one flush of 2,500 distinct datums to a stub client.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import timedelta

from wsmon.core.clock import ManualClock
from wsmon.config.settings import Settings
from wsmon.engine.alerts import AlertEvaluator
from wsmon.engine.metrics import Metrics
from wsmon.engine.notify import Channel, Message, Notifier
from wsmon.engine.store import open_store


class NullChannel(Channel):
    def __init__(self) -> None:
        super().__init__("null")
        self.sent = 0

    def send(self, msg: Message) -> str:
        self.sent += 1
        return "ok"


class StubCloudWatch:
    def __init__(self) -> None:
        self.requests = 0

    def put_metric_data(self, **kwargs):
        self.requests += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worksets", type=int, default=5000)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--incr", type=int, default=100_000)
    args = parser.parse_args()
    clock = ManualClock()
    settings = Settings(monitor_id="bench", alerts={"queue_depth": {"for_seconds": 0}})
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{tmp}/bench.db", clock=clock)
        for i in range(args.worksets):
            state = "failed" if i % 50 == 0 else "complete" if i % 3 == 0 else "ready"
            store.register_workset(f"ws-{i:06d}", "bucket", f"w/ws-{i:06d}/",
                                   priority=("urgent", "normal", "low")[i % 3], state=state)
        clock.advance(hours=2)
        notifier = Notifier(settings, store, clock=clock, channels={"null": NullChannel()})
        evaluator = AlertEvaluator(settings, store, clock=clock, notifier=notifier)
        t0 = time.perf_counter()
        changed = evaluator.evaluate()
        first = time.perf_counter() - t0
        clock.advance(30)
        t0 = time.perf_counter()
        evaluator.evaluate()
        steady = time.perf_counter() - t0
        print(f"alerts: {args.worksets} worksets, {len(changed)} alerts opened: first pass {first * 1000:.0f} ms, "
              f"steady pass {steady * 1000:.0f} ms")

        delivered = notifier.deliver().delivered
        ws = store.get_workset("ws-000001")
        t0 = time.perf_counter()
        for i in range(args.events):
            notifier.emit("registered", workset=ws, dedup_id=f"bench-{i}", coalesce_key=f"k{i}")
        emit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        while True:
            report = notifier.deliver()
            delivered += report.delivered
            if not report.delivered:
                break
        deliver_s = time.perf_counter() - t0
        print(f"notify: emit {args.events / emit_s:.0f}/s, deliver {args.events / deliver_s:.0f}/s "
              f"(outbox round trip, no network)")

        stub = StubCloudWatch()
        metrics = Metrics(settings, store, clock=clock, monitor_id="bench", cloudwatch_client=stub)
        t0 = time.perf_counter()
        for i in range(args.incr):
            metrics.incr("WorksetStateTransitions", State=("ready", "locked", "complete")[i % 3])
        incr_us = (time.perf_counter() - t0) / args.incr * 1e6
        for i in range(2500):
            metrics.incr("WorksetQueueDepth", State="ready", Priority=f"p{i}")
        t0 = time.perf_counter()
        sent = metrics.flush()
        flush_ms = (time.perf_counter() - t0) * 1000
        print(f"metrics: incr {incr_us:.1f} µs/call; flush of {sent} datums in {stub.requests} requests "
              f"{flush_ms:.0f} ms (stub client)")
        t0 = time.perf_counter()
        for _ in range(60):
            metrics.sample_history()
            clock.advance(timedelta(minutes=1).total_seconds())
        print(f"history: sample_history {(time.perf_counter() - t0) / 60 * 1000:.1f} ms/minute "
              f"at {args.worksets} worksets")
        store.close()


if __name__ == "__main__":
    main()
