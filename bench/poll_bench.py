"""What one S3 discovery poll costs, counted by operation with botocore event hooks.

Starts a moto server on 127.0.0.1 (port chosen by the OS), seeds N workset folders of which
90 % carry a terminal sentinel (daylily.complete) and 10 % are ready (full, valid folders with
sample data), then runs a cold poll (registers everything) and several idle polls (nothing
changed). Prints requests per poll by operation and wall time, next to what the earlier
Daylily monitor would have made (about 2N+1 LIST and 3N GET per poll).

    .venv/bin/python bench/poll_bench.py                 # 100, 1000, 5000 folders
    .venv/bin/python bench/poll_bench.py --sizes 1000 --idle-polls 20

Target: an idle poll over 1,000 folders with 900 terminal costs at most 120 requests.
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--idle-polls", type=int, default=10)
    args = parser.parse_args(argv)

    logging.disable(logging.CRITICAL)  # moto/werkzeug access lines
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    rows = []
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
