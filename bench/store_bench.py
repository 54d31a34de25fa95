"""State store benchmark: claims/s, transitions/s and queue_stats time at N worksets.

    .venv/bin/python bench/store_bench.py [--n 10000] [--backend sqlite|dynamodb|all] [--claims K]

SQLite runs on a file in a temporary directory. DynamoDB runs against a moto server this script
starts in its own process (``wsmon.demo.moto_server``: one request at a time, per-item transaction
rollback): its figures measure how many requests the store makes and moto's speed, NOT
DynamoDB latency (a real table answers in single-digit milliseconds per request, over the
network). What carries over to real DynamoDB is the request count per operation, printed by
operation name from botocore ``before-send`` hooks: a claim and a transition are one request each.

Claims follow the engine's path: the scheduler lists the ready queue (``list_worksets``), then
claims from that snapshot, so the store has seen each record. A claim of a record the store
instance has never seen costs one GetItem first; that case is measured and printed separately.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wsmon.engine.store.base import Store  # noqa: E402
from wsmon.core.models import QueueStats  # noqa: E402

OWNER = "bench-engine"


class RequestCounter:
    """Counts requests actually sent (retries included) by operation, via botocore hooks."""

    def __init__(self, client: Any) -> None:
        self.by_operation: Counter[str] = Counter()
        client.meta.events.register("before-send.dynamodb", self._on_send)

    def _on_send(self, event_name: str = "", **_: Any) -> None:
        self.by_operation[event_name.rsplit(".", 1)[-1]] += 1
        return None  # never short-circuit the request

    def snapshot(self) -> Counter[str]:
        return Counter(self.by_operation)


def _diff(after: Counter[str], before: Counter[str]) -> Counter[str]:
    out = Counter(after)
    out.subtract(before)
    return Counter({k: v for k, v in out.items() if v})


def _fmt_ops(ops: Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(ops.items())) or "none"


@contextmanager
def _moto_server() -> Iterator[str]:
    # Its own process (no GIL shared with the client), with moto's whole-table transaction
    # snapshots replaced by per-item ones (see wsmon/demo/moto_server.py), one request at a time.
    from wsmon.demo.moto_server import serve_in_subprocess

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    with serve_in_subprocess() as endpoint:
        yield endpoint


def _rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}/s" if seconds > 0 else "inf"


def _timed_queue_stats(store: Store, repeats: int = 3) -> tuple[QueueStats, list[float]]:
    """The last result of ``queue_stats`` and the seconds each of ``repeats`` calls took."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        stats = store.queue_stats()
        times.append(time.perf_counter() - t)
    return stats, times


def run(store: Store, n: int, ops: int, counter: RequestCounter | None,
        make_fresh: Any = None) -> None:
    ids = [f"bench-{i:06d}" for i in range(n)]
    prios = ("urgent", "normal", "low")

    t = time.perf_counter()
    for i, wid in enumerate(ids):
        store.register_workset(wid, "bench-bucket", f"incoming/{wid}/", priority=prios[i % 3])
    reg = time.perf_counter() - t
    print(f"  register         {n:>7,} worksets in {reg:7.2f} s  ({_rate(n, reg)})")

    stats, times = _timed_queue_stats(store)
    assert stats.total("ready") == n, stats
    print(f"  queue_stats      at {n:,} worksets: median {statistics.median(times) * 1000:8.1f} ms"
          f"  (min {min(times) * 1000:.1f} ms of 3)")

    before = counter.snapshot() if counter else None
    t = time.perf_counter()
    snapshot: list[str] = []
    for w in store.iter_worksets(state="ready", page_size=min(ops, 1000)):
        snapshot.append(w.workset_id)
        if len(snapshot) == ops:
            break
    listing = time.perf_counter() - t
    assert len(snapshot) == ops
    print(f"  list ready queue {ops:>7,} worksets in {listing:7.2f} s  (the scheduler's snapshot,"
          " head of the queue)")
    if counter and before is not None:
        print(f"                   requests: {_fmt_ops(_diff(counter.snapshot(), before))}")

    before = counter.snapshot() if counter else None
    t = time.perf_counter()
    leases = []
    for wid in snapshot:
        lease = store.acquire_lock(wid, OWNER)
        assert lease is not None, wid
        leases.append(lease)
    claims = time.perf_counter() - t
    print(f"  claims           {ops:>7,} in {claims:7.2f} s  ({_rate(ops, claims)})")
    if counter and before is not None:
        sent = _diff(counter.snapshot(), before)
        print(f"                   requests per claim: {sum(sent.values()) / ops:.2f}"
              f"  ({_fmt_ops(sent)})")

    before = counter.snapshot() if counter else None
    t = time.perf_counter()
    for lease in leases:
        store.update_state(lease.workset_id, "in_progress", "pipeline started", OWNER, lease=lease)
        store.update_state(lease.workset_id, "complete", "pipeline finished", OWNER, lease=lease)
    trans = time.perf_counter() - t
    print(f"  transitions      {2 * ops:>7,} in {trans:7.2f} s  ({_rate(2 * ops, trans)})"
          "  (locked->in_progress->complete, fenced)")
    if counter and before is not None:
        sent = _diff(counter.snapshot(), before)
        print(f"                   requests per transition: {sum(sent.values()) / (2 * ops):.2f}"
              f"  ({_fmt_ops(sent)})")

    stats, times = _timed_queue_stats(store)
    assert stats.total("complete") == ops, stats
    print(f"  queue_stats      after the run: median {statistics.median(times) * 1000:8.1f} ms")
    if counter:
        before = counter.snapshot()
        store.queue_stats()
        print(f"                   requests per queue_stats: "
              f"{_fmt_ops(_diff(counter.snapshot(), before))}")

    if make_fresh is not None:
        # A store instance that has never seen these records (e.g. a CLI one-shot).
        cold_n = min(100, ops)
        cold_ids = [f"cold-{i:04d}" for i in range(cold_n)]
        for wid in cold_ids:
            store.register_workset(wid, "bench-bucket", f"incoming/{wid}/")
        fresh, fresh_counter = make_fresh()
        before = fresh_counter.snapshot()
        for wid in cold_ids:
            assert fresh.acquire_lock(wid, OWNER) is not None
        ops = _diff(fresh_counter.snapshot(), before)
        print(f"  cold claims      requests per claim of a record this instance never read: "
              f"{sum(ops.values()) / cold_n:.2f}  ({_fmt_ops(ops)})")
        fresh.close()


def bench_sqlite(n: int, ops: int) -> None:
    from wsmon.engine.store.sqlite import SqliteStore

    print(f"sqlite (file in a temporary directory), n={n:,}, claims={ops:,}")
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore.from_url(f"sqlite:///{Path(tmp) / 'state.db'}")
        try:
            run(store, n, ops, None)
        finally:
            store.close()


def bench_dynamodb(n: int, ops: int) -> None:
    from wsmon.engine.store.dynamodb import DynamoDBStore

    print(f"dynamodb on a local moto server, n={n:,}, claims={ops:,}")
    print("  NOTE: these times measure moto (a Python emulator, tens of ms per request), NOT")
    print("        DynamoDB latency; the request counts are what carries over to real DynamoDB.")
    with _moto_server() as endpoint:
        url = f"dynamodb://wsmon-bench?region=us-west-2&endpoint_url={endpoint}"
        store = DynamoDBStore.from_url(url)
        for line in store.init_schema():
            print(f"  {line}")
        counter = RequestCounter(store.client)

        def make_fresh() -> tuple[DynamoDBStore, RequestCounter]:
            fresh = DynamoDBStore.from_url(url)
            return fresh, RequestCounter(fresh.client)

        try:
            run(store, n, ops, counter, make_fresh)
        finally:
            store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=10_000, help="worksets (default 10000)")
    parser.add_argument("--backend", choices=("sqlite", "dynamodb", "all"), default="all")
    parser.add_argument("--claims", type=int, default=None,
                        help="claims (each followed by 2 transitions); default: all N for sqlite, "
                             "min(N, 1000) for dynamodb, where moto takes ~40 ms per request")
    args = parser.parse_args(argv)
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request access log
    if args.backend in ("sqlite", "all"):
        bench_sqlite(args.n, min(args.claims or args.n, args.n))
    if args.backend in ("dynamodb", "all"):
        bench_dynamodb(args.n, min(args.claims or 1000, args.n))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
