"""What one S3 discovery poll costs, counted by operation with botocore event hooks.

Starts a moto server on 127.0.0.1 (port chosen by the OS), seeds N workset folders of which
90 % carry a terminal sentinel (daylily.complete) and 10 % are ready (full, valid folders with
sample data), then runs a cold poll (registers everything) and several idle polls (nothing
changed). Prints requests per poll by operation and wall time, next to what the earlier
Daylily monitor would have made (about 2N+1 LIST and 3N GET per poll).

    .venv/bin/python bench/poll_bench.py                 # 100, 1000, 5000 folders
    .venv/bin/python bench/poll_bench.py --sizes 1000 --idle-polls 20
    .venv/bin/python bench/poll_bench.py --events --sizes 1000 10000

Target: an idle poll over 1,000 folders with 900 terminal costs at most 120 requests.

``--events`` (event-driven discovery, wsmon/engine/s3/events.py) prints, per size, the S3 and SQS
requests of an idle hour with the default settings: one reconcile poll an hour (measured: the
requests of an idle poll) plus the long-poll receives (measured: how long one empty
WaitTimeSeconds=20 receive lasts on the server, so 3600 / that many an hour), next to today's
60-second poll (60 idle polls an hour). Then the discovery latency from the last object of an
upload to the folder's registration, with a consumer long-polling as the engine does (p50/p99).
Targets: idle cost at 10,000 folders at least 20x below polling, at most 180 receives an hour,
latency p99 under 2 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

for var, value in (("AWS_ACCESS_KEY_ID", "bench"), ("AWS_SECRET_ACCESS_KEY", "bench"),
                   ("AWS_DEFAULT_REGION", "us-west-2")):
    os.environ.setdefault(var, value)
os.environ["AWS_CONFIG_FILE"] = os.devnull
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
os.environ.pop("AWS_PROFILE", None)

import logging  # noqa: E402

import structlog  # noqa: E402

from wsmon.core import aws  # noqa: E402
from wsmon.config.settings import Settings  # noqa: E402
from wsmon.engine.s3 import S3Source  # noqa: E402
from wsmon.engine.store import open_store  # noqa: E402
from wsmon.engine.worksetfiles import TSV_COLUMNS  # noqa: E402

PREFIX = "active_worksets/"


def sample_sheet() -> bytes:
    values = {c: "x" for c in TSV_COLUMNS}
    values.update(SAMPLE_ID="S1", R1_FQ="sample_data/S1_R1.fastq.gz", R2_FQ="sample_data/S1_R2.fastq.gz")
    return ("\t".join(TSV_COLUMNS) + "\n" + "\t".join(values[c] for c in TSV_COLUMNS) + "\n").encode()


def seed(s3: Any, bucket: str, folders: int, workers: int = 32) -> float:
    started = time.monotonic()
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    objects: list[tuple[str, bytes]] = []
    ready_every = 10
    for i in range(folders):
        base = f"{PREFIX}ws{i:05d}/"
        if i % ready_every == 0:
            objects += [(base + "daylily_work.yaml", b"dy-r: produce -j 8\nday-clone: -d {workdir_name}\n"),
                        (base + "daylily_info.yaml", b"priority: normal\n"),
                        (base + "stage_samples.tsv", sample_sheet()),
                        (base + "sample_data/S1_R1.fastq.gz", b"@r\nACGT\n+\nIIII\n"),
                        (base + "sample_data/S1_R2.fastq.gz", b"@r\nACGT\n+\nIIII\n"),
                        (base + "daylily.ready", b"20251016T111111")]
        else:
            objects += [(base + "daylily.ready", b"20251016T111111"),
                        (base + "daylily.complete", b"2025-10-17T11:11:11Z")]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda kv: s3.put_object(Bucket=bucket, Key=kv[0], Body=kv[1]), objects))
    return time.monotonic() - started


class Counted:
    """HTTP requests actually sent (retries included), by operation."""

    def __init__(self, s3: Any) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        s3.meta.events.register("before-send.s3", self._on_send)

    def _on_send(self, event_name: str, **_: Any) -> None:
        with self._lock:
            self.counts[event_name.rsplit(".", 1)[-1]] += 1

    def take(self) -> Counter[str]:
        with self._lock:
            out, self.counts = self.counts, Counter()
            return out


def run_size(endpoint: str, folders: int, idle_polls: int, workdir: Path) -> dict[str, Any]:
    s3 = aws.client("s3", endpoint_url=endpoint, region="us-west-2", max_pool_connections=64)
    bucket = f"bench-{folders}-{int(time.time())}"
    seed_seconds = seed(s3, bucket, folders)
    counter = Counted(s3)
    store = open_store(f"sqlite:///{workdir / f'bench-{folders}.db'}")
    settings = Settings(discovery={"sources": [{"bucket": bucket, "prefix": PREFIX}],
                                   "ready_lock_backoff_seconds": 0},
                        state_dir=workdir)
    source = S3Source(settings, store, s3_client=s3, monitor_id="bench")
    started = time.monotonic()
    cold = source.poll()
    cold_seconds = time.monotonic() - started
    cold_counts = counter.take()
    idle: list[tuple[Counter[str], float, int]] = []
    for _ in range(idle_polls):
        started = time.monotonic()
        report = source.poll()
        idle.append((counter.take(), time.monotonic() - started, report.folders_listed))
    totals = [sum(c.values()) for c, _, _ in idle]
    ops: Counter[str] = Counter()
    for c, _, _ in idle:
        ops.update(c)
    return {
        "folders": folders, "seed_s": seed_seconds, "registered": len(cold.registered),
        "imported": len(cold.imported), "cold_requests": sum(cold_counts.values()),
        "cold_ops": dict(cold_counts), "cold_s": cold_seconds,
        "idle_min": min(totals), "idle_median": statistics.median(totals), "idle_max": max(totals),
        "idle_ops_avg": {k: round(v / len(idle), 1) for k, v in sorted(ops.items())},
        "idle_s_median": statistics.median(t for _, t, _ in idle),
        "listed_median": statistics.median(n for _, _, n in idle),
        "old_monitor": (2 * folders + 1) + 3 * folders,
        "reconcile_every": settings.discovery.reconcile_every,
    }


def _event_queue(s3: Any, endpoint: str, bucket: str) -> tuple[Any, str]:
    """The queue, DLQ and bucket notification as `wsmon s3-events setup` makes them."""
    from wsmon.engine.s3.event_setup import apply_setup, plan_setup

    sqs = aws.client("sqs", endpoint_url=endpoint, region="us-west-2")
    plan = plan_setup(s3, bucket, PREFIX, f"{bucket}-events", region="us-west-2",
                      account="123456789012")  # moto's account
    url = apply_setup(plan, s3, sqs)
    while True:  # S3's set-up test event
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                       WaitTimeSeconds=0).get("Messages") or []
        if not messages:
            return sqs, url
        for m in messages:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


def receive_seconds(endpoint: str, bucket: str, s3: Any) -> float:
    """How long one empty receive with the engine's default wait lasts (one long poll)."""
    from wsmon.config.settings import DiscoverySettings

    sqs, url = _event_queue(s3, endpoint, bucket)
    wait = DiscoverySettings().events_wait_seconds
    started = time.monotonic()
    sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=wait)
    return time.monotonic() - started


def run_events(endpoint: str, folders: int, workdir: Path, receive_s: float,
               uploads: int) -> dict[str, Any]:
    """Idle-hour cost with events on, and upload-to-registration latency."""
    from wsmon.engine.s3.events import QueueConsumer

    s3 = aws.client("s3", endpoint_url=endpoint, region="us-west-2", max_pool_connections=64)
    bucket = f"bench-ev-{folders}-{int(time.time())}"
    seed(s3, bucket, folders)
    counter = Counted(s3)
    store = open_store(f"sqlite:///{workdir / f'bench-ev-{folders}.db'}")
    sqs, url = _event_queue(s3, endpoint, bucket)
    settings = Settings(discovery={"sources": [{"bucket": bucket, "prefix": PREFIX,
                                                "events_queue": url}],
                                   "ready_lock_backoff_seconds": 0}, state_dir=workdir)
    source = S3Source(settings, store, s3_client=s3, monitor_id="bench")
    source.poll()  # cold: registers everything
    counter.take()
    reconcile = [sum(source.poll().requests.values()) for _ in range(3)]
    counter.take()
    disc = settings.discovery
    receives_per_hour = 3600 / max(receive_s, 1e-3)
    reconciles_per_hour = 3600 / disc.events_reconcile_seconds
    polls_per_hour = 3600 / disc.poll_interval_seconds
    reconcile_requests = statistics.median(reconcile)

    consumer = QueueConsumer(url, "bench", source, sqs, wait_seconds=disc.events_wait_seconds)
    stop = threading.Event()

    def consume() -> None:
        while not stop.is_set():
            consumer.receive_and_apply()

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    latencies = []
    sheet = sample_sheet()
    for n in range(uploads):
        base = f"{PREFIX}new{n:03d}/"
        for key, body in ((base + "daylily_work.yaml", b"dy-r: produce -j 8\n"),
                          (base + "daylily_info.yaml", b"priority: normal\n"),
                          (base + "stage_samples.tsv", sheet),
                          (base + "sample_data/S1_R1.fastq.gz", b"@r\nACGT\n+\nIIII\n"),
                          (base + "sample_data/S1_R2.fastq.gz", b"@r\nACGT\n+\nIIII\n"),
                          (base + "daylily.ready", b"20251016T111111")):
            s3.put_object(Bucket=bucket, Key=key, Body=body)
        uploaded = time.monotonic()
        while store.get_workset(f"new{n:03d}") is None and time.monotonic() - uploaded < 60:
            time.sleep(0.005)
        latencies.append(time.monotonic() - uploaded)
    stop.set()
    latencies.sort()
    return {
        "folders": folders, "reconcile_requests": reconcile_requests,
        "events_hour_s3": reconcile_requests * reconciles_per_hour,
        "events_hour_sqs": receives_per_hour,
        "poll_hour_s3": reconcile_requests * polls_per_hour,
        "latency_p50": latencies[len(latencies) // 2],
        "latency_p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "uploads": uploads,
    }


def print_events(rows: list[dict[str, Any]], receive_s: float) -> None:
    print()
    print(f"Idle hour with S3 events (default settings: reconcile hourly, one "
          f"{receive_s:.1f}s long poll at a time) vs today's 60 s poll")
    header = (f"{'folders':>8} {'reconcile':>10} {'events S3/h':>12} {'SQS/h':>6} "
              f"{'events total/h':>15} {'poll S3/h':>10} {'ratio':>6} {'p50 s':>6} {'p99 s':>6}")
    print(header)
    print("-" * len(header))
    for r in rows:
        total = r["events_hour_s3"] + r["events_hour_sqs"]
        r["ratio"] = r["poll_hour_s3"] / total
        print(f"{r['folders']:>8} {r['reconcile_requests']:>10} {r['events_hour_s3']:>12.0f} "
              f"{r['events_hour_sqs']:>6.0f} {total:>15.0f} {r['poll_hour_s3']:>10.0f} "
              f"{r['ratio']:>5.1f}x {r['latency_p50']:>6.2f} {r['latency_p99']:>6.2f}")
    print(f"(latency: {rows[0]['uploads']} uploads per size, last object written to registered)")
    big = max(rows, key=lambda r: r["folders"])
    print(f"\n{big['folders']:,} folders: {big['ratio']:.0f}x fewer requests per idle hour "
          f"({'meets' if big['ratio'] >= 20 else 'MISSES'} >= 20x); SQS receives "
          f"{big['events_hour_sqs']:.0f}/h ({'meets' if big['events_hour_sqs'] <= 180.5 else 'MISSES'}"
          f" <= 180); p99 {max(r['latency_p99'] for r in rows):.2f}s "
          f"({'meets' if max(r['latency_p99'] for r in rows) < 2 else 'MISSES'} < 2 s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--idle-polls", type=int, default=10)
    parser.add_argument("--events", action="store_true",
                        help="event-driven discovery: idle-hour requests and discovery latency")
    parser.add_argument("--uploads", type=int, default=30,
                        help="with --events: uploads timed for the latency figures")
    args = parser.parse_args(argv)

    logging.disable(logging.CRITICAL)  # moto/werkzeug access lines
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    rows = []
    if args.events:
        try:
            with tempfile.TemporaryDirectory(prefix="wsmon-bench-") as tmp:
                probe = aws.client("s3", endpoint_url=endpoint, region="us-west-2")
                probe.create_bucket(Bucket="bench-receive-probe",
                                    CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
                print("timing one empty long-poll receive ...", file=sys.stderr, flush=True)
                receive_s = receive_seconds(endpoint, "bench-receive-probe", probe)
                for size in args.sizes:
                    print(f"seeding {size} folders, reconcile and {args.uploads} uploads ...",
                          file=sys.stderr, flush=True)
                    rows.append(run_events(endpoint, size, Path(tmp), receive_s, args.uploads))
        finally:
            server.stop()
        print_events(rows, receive_s)
        return 0
    try:
        with tempfile.TemporaryDirectory(prefix="wsmon-bench-") as tmp:
            for size in args.sizes:
                print(f"seeding and polling {size} folders ...", file=sys.stderr, flush=True)
                rows.append(run_size(endpoint, size, args.idle_polls, Path(tmp)))
    finally:
        server.stop()

    print()
    print(f"S3 requests per poll (moto server, 90% terminal, reconcile_every="
          f"{rows[0]['reconcile_every']}, {args.idle_polls} idle polls)")
    header = (f"{'folders':>8} {'cold req':>9} {'cold s':>7} {'idle min':>9} {'idle med':>9} "
              f"{'idle max':>9} {'listed':>7} {'idle s':>7} {'old monitor':>12}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['folders']:>8} {r['cold_requests']:>9} {r['cold_s']:>7.2f} {r['idle_min']:>9} "
              f"{r['idle_median']:>9} {r['idle_max']:>9} {r['listed_median']:>7} "
              f"{r['idle_s_median']:>7.2f} {r['old_monitor']:>12}")
    print()
    for r in rows:
        print(f"{r['folders']:>6} folders: cold {r['cold_ops']}; idle average {r['idle_ops_avg']}; "
              f"seeded in {r['seed_s']:.1f}s; registered {r['registered']}, imported {r['imported']}")
    target = next((r for r in rows if r["folders"] == 1000), None)
    if target is not None:
        verdict = "meets" if target["idle_max"] <= 120 else "MISSES"
        print(f"\n1,000 folders / 900 terminal: idle poll max {target['idle_max']} requests "
              f"-> {verdict} the <= 120 target")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
