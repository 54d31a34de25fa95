"""HTTP API benchmark: latency of the two hottest reads at N worksets on SQLite, and requests per
second of a server held to one CPU core.

    .venv/bin/python bench/api_bench.py [--n 10000] [--requests 300] [--seconds 3] [--clients 8]

Seeds N worksets into a SQLite file, starts ``wsmon serve`` in its own process pinned to one core
(``os.sched_setaffinity``), then, from this process over keep-alive connections:

* p50 / p99 of ``GET /api/v1/worksets?limit=100`` (pages taken at random offsets through the
  queue, following cursors) and of ``GET /api/v1/worksets/{id}`` (random ids), one request at a
  time;
* requests per second with ``--clients`` threads asking ``GET /api/v1/worksets/{id}`` for
  ``--seconds``.

Targets (issue 14): p99 < 50 ms on SQLite on this machine; the seeds' own: API < 200 ms, queue
queries < 500 ms. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from wsmon.engine.store import open_store


def seed(db: Path, n: int) -> float:
    store = open_store(f"sqlite:///{db}")
    started = time.perf_counter()
    prios = ("urgent", "normal", "low")
    for i in range(n):
        wid = f"ws-{i:06d}"
        store.register_workset(wid, "bench-bucket", f"incoming/{wid}/", priority=prios[i % 3],
                               customer_id=f"cust-{i % 17}", metadata={"s3_uri": f"s3://bench-bucket/incoming/{wid}/"})
    store.close()
    return time.perf_counter() - started


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed(client: httpx.Client, url: str, params: dict | None = None) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = client.get(url, params=params)
    elapsed = (time.perf_counter() - started) * 1000
    response.raise_for_status()
    return elapsed, response


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="wsmon-api-bench-") as tmp:
        db = Path(tmp) / "state.db"
        took = seed(db, args.n)
        print(f"seeded {args.n} worksets in {took:.1f} s")
        port = free_port()
        env = {**os.environ, "XDG_STATE_HOME": tmp, "XDG_CONFIG_HOME": tmp}
        env = {k: v for k, v in env.items() if not k.upper().startswith("WSMON_")}
        core = min(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        server = subprocess.Popen(
            [sys.executable, "-m", "wsmon.cli", "--store", f"sqlite:///{db}", "serve",
             "--bind", f"127.0.0.1:{port}"], env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        if core is not None:
            os.sched_setaffinity(server.pid, {core})
        base = f"http://127.0.0.1:{port}/api/v1"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get(f"{base}/health", timeout=1)
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        print("the server did not start", file=sys.stderr)
                        return 1
                    time.sleep(0.1)
            rng = random.Random(7)
            with httpx.Client(timeout=30) as client:
                for _ in range(20):  # warm up connections and caches
                    timed(client, f"{base}/worksets", {"limit": 100})
                pages: list[float] = []
                cursor = None
                for _ in range(args.requests):
                    params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
                    ms, response = timed(client, f"{base}/worksets", params)
                    pages.append(ms)
                    body = response.json()
                    cursor = body["next_cursor"] if rng.random() < 0.9 else None
                ones: list[float] = []
                for _ in range(args.requests):
                    ms, _ = timed(client, f"{base}/worksets/ws-{rng.randrange(args.n):06d}")
                    ones.append(ms)
            print(f"GET /worksets?limit=100   p50 {percentile(pages, 0.5):6.1f} ms   "
                  f"p99 {percentile(pages, 0.99):6.1f} ms   mean {statistics.mean(pages):6.1f} ms   "
                  f"({args.requests} requests)")
            print(f"GET /worksets/{{id}}       p50 {percentile(ones, 0.5):6.1f} ms   "
                  f"p99 {percentile(ones, 0.99):6.1f} ms   mean {statistics.mean(ones):6.1f} ms   "
                  f"({args.requests} requests)")

            count = 0
            lock = threading.Lock()
            stop_at = time.monotonic() + args.seconds

            def hammer(seed_: int) -> None:
                nonlocal count
                local_rng = random.Random(seed_)
                done = 0
                with httpx.Client(timeout=30) as c:
                    while time.monotonic() < stop_at:
                        c.get(f"{base}/worksets/ws-{local_rng.randrange(args.n):06d}").raise_for_status()
                        done += 1
                with lock:
                    count += done

            threads = [threading.Thread(target=hammer, args=(i,)) for i in range(args.clients)]
            started = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.monotonic() - started
            pinned = f"pinned to core {core}" if core is not None else "not pinned"
            print(f"GET /worksets/{{id}}       {count / elapsed:6.0f} req/s with {args.clients} "
                  f"clients for {elapsed:.1f} s (server {pinned})")
        finally:
            server.terminate()
            server.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
