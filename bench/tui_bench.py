"""Dashboard benchmark: 10,000 worksets in a SQLite store.

Prints: time to the first full frame (app start until the queue holds every row and a frame
was drawn), UI-thread time per refresh when 1 % of the worksets change (the SnapshotReady
handler, which applies the diff to every screen), the refresh reader's time (worker thread), and
peak RSS. Targets: first frame < 1.5 s, refresh < 50 ms, RSS < 250 MB.

Then the figure issue 17 names: the attached dashboard's CPU as % of one core over a steady
window (``--window`` seconds), the real ``WsmonApp`` on the system clock with the refresh interval
from settings (``ui.refresh_interval``, 2 s by default), while a writer in a child process changes
1 % of the worksets every 2 s through the store API. The child keeps its CPU out of this
process's figure (``os.times()``: every thread of this process, no children). Target: 10 % or
less. Figures are printed, never asserted.

    .venv/bin/python bench/tui_bench.py [--worksets 10000] [--refreshes 10] [--window 60]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from wsmon.core.clock import ManualClock
from wsmon.config.settings import Settings
from wsmon.engine.store import open_store

CUSTOMERS = ["acme", "oncology", "genomix", "labcorp", "uni-hospital"]
PRIORITIES = ["urgent", "normal", "normal", "normal", "low"]


def seed(path: Path, n: int, clock: ManualClock, *, spread: timedelta | None = None):
    """``spread``: register one workset every ``spread / n`` (ages spread evenly, as a queue
    that filled over that time); without it, in bursts of 500 three minutes apart."""
    store = open_store(f"sqlite:///{path}", clock=clock)
    rng = random.Random(7)
    for i in range(n):
        name = f"ws-{i:05d}-{rng.choice(['tumor', 'cohort', 'wgs', 'exome'])}"
        state = rng.choice(["ready"] * 6 + ["complete"] * 3 + ["failed", "ignored"])
        store.register_workset(name, "daylily-ws", f"worksets/{name}/",
                               priority=rng.choice(PRIORITIES), customer_id=rng.choice(CUSTOMERS),
                               state=state, actor="discovery")
        if spread is not None:
            clock.advance(seconds=spread.total_seconds() / n)
        elif i % 500 == 0:
            clock.advance(minutes=3)
    return store


def change_one(store, key: str, state: str, change: str, rng: random.Random) -> str:
    """One change as an engine or operator makes it; returns the workset's new state."""
    if change == "priority":  # the default sort column: every refresh re-sorts
        store.set_priority(key, rng.choice(["urgent", "normal", "low"]), "bench@host")
        return state
    if state == "ready":  # an engine claims it
        return "locked" if store.acquire_lock(key, "engine-bench") is not None else state
    if state in ("locked", "in_progress"):
        store.force_release(key, "bench@host", "bench")
        return "ready"
    store.update_state(key, "ready", "bench retry", "bench@host")
    return "ready"


def write_batches(store, states: dict[str, str], rng: random.Random, batch: int, change: str,
                  count: int, every: float, clock: ManualClock | None = None) -> None:
    """``count`` batches of ``batch`` changes ``every`` seconds apart (on ``clock`` when given,
    else in real time; count < 0: until the process is ended)."""
    keys = sorted(states)
    while count != 0:
        started = time.monotonic()
        if clock is not None:
            clock.advance(seconds=every)
        for key in rng.sample(keys, batch):
            states[key] = change_one(store, key, states[key], change, rng)
        if clock is None:
            time.sleep(max(0.0, every - (time.monotonic() - started)))
        count -= 1


def writer(db: Path, fraction: float, every: float, change: str) -> None:
    """The child process: change ``fraction`` of the worksets every ``every`` seconds, on the
    system clock, until the parent ends it. Says "writing" on stdout once it has begun."""
    store = open_store(f"sqlite:///{db}")
    worksets, _ = store.worksets_changed_since(None)
    states = {ws.workset_id: ws.state.value for ws in worksets}
    print("writing", flush=True)
    write_batches(store, states, random.Random(13), max(1, int(len(states) * fraction)), change,
                  -1, every)


class CollectorTime:
    """A gc callback: CPU seconds in collections (any thread), and how many were full ones."""

    def __init__(self) -> None:
        self.seconds, self.full, self._started = 0.0, 0, 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.thread_time()
        else:
            self.seconds += time.thread_time() - self._started
            self.full += info["generation"] == 2


def thread_cpu() -> tuple[float, float]:
    """(UI thread, every other thread) CPU seconds of this process, from /proc (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    main = other = 0.0
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended
            continue
        cpu = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        if int(task.name) == os.getpid():
            main += cpu
        else:
            other += cpu
    return main, other


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
                change_one(store, key, app.rows[key].state.value, change, rng)
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


async def cpu_window(n: int, window: float, change: str, warmup: float = 6.0) -> None:
    """The attached dashboard's CPU (% of one core) while a child process writes."""
    from wsmon.app import WsmonApp

    tmp = Path(tempfile.mkdtemp(prefix="wsmon-bench-cpu-"))
    db = tmp / "bench.db"
    # a queue that filled over the last six hours, so ages tick as they do for a real one, and
    # the writer's last minute back-dated: from the start, as many rows show an age in seconds
    # (changed within the minute) as in the steady state
    clock = ManualClock(datetime.now(timezone.utc) - timedelta(hours=6))
    store = seed(db, n, clock, spread=timedelta(hours=6))
    clock.set(datetime.now(timezone.utc) - timedelta(seconds=60))
    states = {ws.workset_id: ws.state.value for ws in store.worksets_changed_since(None)[0]}
    write_batches(store, states, random.Random(12), max(1, n // 100), change, 30, 2.0, clock)
    store.close()
    settings = Settings(state_dir=tmp / "state", ui={"bell": False})
    child = subprocess.Popen([sys.executable, __file__, "--writer", str(db), "--change", change],
                             stdout=subprocess.PIPE, text=True)
    try:
        if child.stdout.readline().strip() != "writing":
            raise SystemExit("the writer process did not start")
        store = open_store(f"sqlite:///{db}")
        app = WsmonApp(store, settings, actor="bench@host", remember_theme=False)
        async with app.run_test(size=(160, 48)):
            while not app.loaded:
                if not app.is_running:
                    raise SystemExit("the app stopped before its first full read")
                await asyncio.sleep(0.05)
            await asyncio.sleep(warmup)  # past the first frames and the first diffs
            generation = app.refresh_generation
            collector = CollectorTime()
            gc.callbacks.append(collector)
            before, wall, threads_before = os.times(), time.monotonic(), thread_cpu()
            applies, seen = [], app.refresh_generation
            while time.monotonic() - wall < window:
                await asyncio.sleep(0.05)
                if app.refresh_generation != seen:
                    seen = app.refresh_generation
                    applies.append(app.last_apply_cpu_seconds)
            after, elapsed, threads_after = os.times(), time.monotonic() - wall, thread_cpu()
            gc.callbacks.remove(collector)
            refreshes = app.refresh_generation - generation
        store.close()
    finally:
        child.terminate()
        child.wait()
    cpu = (after.user - before.user) + (after.system - before.system)
    ui, rest = (a - b for a, b in zip(threads_after, threads_before))
    print(f"attached dashboard, {n} worksets, 1% changed every 2 s by another process "
          f"({change} changes), refresh every {settings.ui.refresh_interval:g} s:")
    print(f"  CPU {cpu / elapsed * 100:.1f} % of one core over {elapsed:.0f} s "
          f"({refreshes} refreshes, {cpu / max(1, refreshes) * 1000:.0f} ms CPU per refresh); "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"  of which the UI thread {ui / elapsed * 100:.1f} %, the refresh reader and other "
          f"threads {rest / elapsed * 100:.1f} %; Python's garbage collector "
          f"{collector.seconds / elapsed * 100:.1f} % ({collector.full} full collections)")
    if applies:
        print(f"  UI thread applying a refresh (SnapshotReady handler): median "
              f"{statistics.median(applies) * 1000:.0f} ms CPU, the rest of its time drawing")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worksets", type=int, default=10_000)
    parser.add_argument("--refreshes", type=int, default=10)
    parser.add_argument("--change", choices=["state", "priority"], default="state",
                        help="state: claims/releases (order unchanged); priority: the sort column")
    parser.add_argument("--window", type=float, default=60.0,
                        help="seconds of the steady CPU window (0: skip it)")
    parser.add_argument("--writer", type=Path, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.writer is not None:
        writer(args.writer, 0.01, 2.0, args.change)
        return
    if args.refreshes:
        asyncio.run(run(args.worksets, args.refreshes, args.change))
    if args.window > 0:
        asyncio.run(cpu_window(args.worksets, args.window, args.change))


if __name__ == "__main__":
    sys.exit(main())
