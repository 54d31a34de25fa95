"""Dashboard benchmark: 10,000 worksets in a SQLite store.

Prints: time to the first full frame (app start until the queue holds every row and a frame
was drawn), UI-thread time per refresh when 1 % of the worksets change (the SnapshotReady
handler, which applies the diff to every screen), the refresh reader's time (worker thread), and
peak RSS. Targets: first frame < 1.5 s, refresh < 50 ms, RSS < 250 MB. Figures are printed, never
asserted.

    .venv/bin/python bench/tui_bench.py [--worksets 10000] [--refreshes 10]
"""

from __future__ import annotations

import argparse
import os
import asyncio
import random
import resource
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from wsmon.core.clock import ManualClock
from wsmon.config.settings import Settings
from wsmon.engine.store import open_store

CUSTOMERS = ["acme", "oncology", "genomix", "labcorp", "uni-hospital"]
PRIORITIES = ["urgent", "normal", "normal", "normal", "low"]


def seed(path: Path, n: int, clock: ManualClock):
    store = open_store(f"sqlite:///{path}", clock=clock)
    rng = random.Random(7)
    for i in range(n):
        name = f"ws-{i:05d}-{rng.choice(['tumor', 'cohort', 'wgs', 'exome'])}"
        state = rng.choice(["ready"] * 6 + ["complete"] * 3 + ["failed", "ignored"])
        store.register_workset(name, "daylily-ws", f"worksets/{name}/",
                               priority=rng.choice(PRIORITIES), customer_id=rng.choice(CUSTOMERS),
                               state=state, actor="discovery")
        if i % 500 == 0:
            clock.advance(minutes=3)
    return store


async def run(n: int, refreshes: int, change: str = "state") -> None:
    from wsmon.app import WsmonApp

    tmp = Path(tempfile.mkdtemp(prefix="wsmon-bench-"))
    clock = ManualClock(datetime(2026, 3, 2, 6, 0, tzinfo=timezone.utc))
    t0 = time.perf_counter()
    store = seed(tmp / "bench.db", n, clock)
    print(f"seeded {n} worksets in {time.perf_counter() - t0:.1f} s")
    settings = Settings(state_dir=tmp / "state", ui={"refresh_interval": 3600, "bell": False})

    started = time.perf_counter()
    started_cpu = time.thread_time()
    app = WsmonApp(store, settings, clock=clock, actor="bench@host", remember_theme=False)
    async with app.run_test(size=(160, 48)) as pilot:
        while app.refresh_generation < 1:
            if not app.is_running:
                raise SystemExit("the app stopped before its first refresh")
            await asyncio.sleep(0.005)
        await pilot.pause()  # the first complete screen: header figures and the top of the queue
        first_frame = time.perf_counter() - started
        first_cpu = time.thread_time() - started_cpu
        while not app.loaded:
            await asyncio.sleep(0.005)
        await pilot.pause()  # every row in the table
        all_rows = time.perf_counter() - started
        table = app.screen.table
        assert table.row_count == n, table.row_count
        print(f"first full frame: {first_frame * 1000:.0f} ms wall (UI-thread CPU "
              f"{first_cpu * 1000:.0f} ms); all {table.row_count} rows in the table after "
              f"{all_rows * 1000:.0f} ms (applying them: {app.last_apply_seconds * 1000:.0f} ms)")

        keys = sorted(app.rows)
        rng = random.Random(11)
        applies, cpu_applies, settles, reads = [], [], [], []
        for _ in range(refreshes):
            clock.advance(seconds=2)
            for key in rng.sample(keys, n // 100):
                row = app.rows[key]
                if change == "priority":  # the default sort column: every refresh re-sorts
                    new = "low" if row.priority != "low" else "urgent"
                    store.set_priority(key, new, "bench@host")
                elif row.state.value == "ready":  # an engine claims it
                    store.acquire_lock(key, "engine-bench")
                elif row.state.holds_lease:
                    store.force_release(key, "bench@host", "bench")
                else:
                    store.update_state(key, "ready", "bench retry", "bench@host")
            target = app.refresh_generation + 1
            app.refresh_now()
            while app.refresh_generation < target:
                if not app.is_running:
                    raise SystemExit("the app stopped")
                await asyncio.sleep(0.001)
            cpu_before = time.thread_time()  # CPU of this (the UI) thread only
            await pilot.pause()  # the frame with the diff drawn
            settles.append(app.last_apply_cpu_seconds + time.thread_time() - cpu_before)
            applies.append(app.last_apply_seconds)
            cpu_applies.append(app.last_apply_cpu_seconds)
            reads.append(app.reader_last_seconds)
        idle = []
        for _ in range(5):
            cpu_before = time.thread_time()
            await pilot.pause()
            idle.append(time.thread_time() - cpu_before)
        baseline = statistics.median(idle)
        print(f"refresh with 1% changed ({n // 100} worksets, {change} changes), {refreshes} runs:")
        print(f"  UI-thread apply (SnapshotReady handler), wall: median "
              f"{statistics.median(applies) * 1000:.1f} ms, max {max(applies) * 1000:.1f} ms")
        print(f"  UI-thread apply, CPU: median {statistics.median(cpu_applies) * 1000:.1f} ms, "
              f"max {max(cpu_applies) * 1000:.1f} ms")
        print(f"  UI-thread CPU per refresh incl. drawing the frame: median "
              f"{statistics.median(settles) * 1000:.1f} ms, max {max(settles) * 1000:.1f} ms "
              f"(the test pilot's own wait-for-idle, measured with nothing changed, is "
              f"{baseline * 1000:.1f} ms of that)")
        print(f"  store read in the worker thread (wall): median {statistics.median(reads) * 1000:.1f} ms")
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS: {peak:.0f} MB")
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worksets", type=int, default=10_000)
    parser.add_argument("--refreshes", type=int, default=10)
    parser.add_argument("--change", choices=["state", "priority"], default="state",
                        help="state: claims/releases (order unchanged); priority: the sort column")
    args = parser.parse_args()
    asyncio.run(run(args.worksets, args.refreshes, args.change))


if __name__ == "__main__":
    sys.exit(main())
