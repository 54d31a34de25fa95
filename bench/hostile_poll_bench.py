"""Poll time and memory with one hostile folder among 1,000 (prints, never asserts).

Starts a moto server in a process of its own on 127.0.0.1 (so the memory figures are the
engine's alone) and seeds three buckets the way
poll_bench.py does (1,000 folders, 10 % ready with valid files, 90 % complete); in two of them one
ready folder is hostile: a YAML alias bomb (billion laughs referenced from ``notes:``), or a
100,000-row stage_samples.tsv. Each bucket gets one cold poll (everything registered or imported)
and one idle poll, on a SQLite store and on a DynamoDB store (the same moto server). Prints poll
seconds, what the hostile folder got, and this process's resident memory (VmRSS after the poll,
VmHWM = the peak so far).

    .venv/bin/python bench/hostile_poll_bench.py
    .venv/bin/python bench/hostile_poll_bench.py --folders 300 --stores sqlite

Issue 11's target: the normal folders registered in the same poll, the hostile one a coded
error, the engine under 600 MB.
"""

from __future__ import annotations

import argparse
import logging
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from poll_bench import PREFIX, seed  # noqa: E402  (also sets up the AWS environment)

import structlog  # noqa: E402

from wsmon.config.settings import Settings  # noqa: E402
from wsmon.core import aws  # noqa: E402
from wsmon.engine.s3 import S3Source  # noqa: E402
from wsmon.engine.store import open_store  # noqa: E402


def billion_laughs() -> bytes:
    lines = ['lol0: &lol0 "lol"']
    lines += [f"lol{i}: &lol{i} [" + ", ".join([f"*lol{i - 1}"] * 9) + "]" for i in range(1, 10)]
    return ("\n".join(lines) + "\ndy-r: help\nnotes: *lol9\n").encode()


def huge_sheet(rows: int = 100_000) -> bytes:
    return ("SAMPLE_ID\tR1_FQ\tR2_FQ\n" + "".join(
        f"S{i}\tsample_data/{i}\tsample_data/{i}\n" for i in range(rows))).encode()


HOSTILE: dict[str, dict[str, bytes]] = {
    "none": {},
    "alias-bomb": {"daylily_work.yaml": billion_laughs()},
    "100k-rows": {"stage_samples.tsv": huge_sheet()},
}


def memory_mb() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process in MB."""
    values = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            values[line.split(":")[0]] = int(line.split()[1]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


def open_bench_store(kind: str, endpoint: str, workdir: Path, name: str) -> Any:
    if kind == "sqlite":
        return open_store(f"sqlite:///{workdir / f'{name}.db'}")
    store = open_store(f"dynamodb://{name}?region=us-west-2&endpoint_url={endpoint}")
    store.init_schema()
    return store


def run(endpoint: str, bucket: str, hostile: str, kind: str, workdir: Path) -> dict[str, Any]:
    s3 = aws.client("s3", endpoint_url=endpoint, region="us-west-2", max_pool_connections=64)
    store = open_bench_store(kind, endpoint, workdir, f"{bucket}-{kind}")
    settings = Settings(discovery={"sources": [{"bucket": bucket, "prefix": PREFIX}],
                                   "ready_lock_backoff_seconds": 0}, state_dir=workdir)
    source = S3Source(settings, store, s3_client=s3, monitor_id="bench")
    started = time.monotonic()
    cold = source.poll()
    cold_s = time.monotonic() - started
    rss, peak = memory_mb()
    started = time.monotonic()
    source.poll()
    idle_s = time.monotonic() - started
    got = next((f"{i['code']}" for i in cold.invalid if i["workset_id"] == "ws00000"), "registered"
               if "ws00000" in cold.registered else "?")
    return {"hostile": hostile, "store": kind, "cold_s": cold_s, "idle_s": idle_s,
            "registered": len(cold.registered), "hostile_got": got, "rss": rss, "peak": peak}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folders", type=int, default=1000)
    parser.add_argument("--stores", nargs="+", default=["sqlite", "dynamodb"])
    args = parser.parse_args(argv)
    logging.disable(logging.CRITICAL)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with socket.socket() as probe:  # a free port for the moto server process
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    rows = []
    try:
        s3 = aws.client("s3", endpoint_url=endpoint, region="us-west-2", max_pool_connections=64)
        with tempfile.TemporaryDirectory(prefix="wsmon-hostile-") as tmp:
            for hostile, files in HOSTILE.items():
                bucket = f"hostile-{hostile}-{int(time.time())}"
                print(f"seeding {args.folders} folders ({hostile}) ...", file=sys.stderr, flush=True)
                seed(s3, bucket, args.folders)  # ws00000 is one of the ready ones
                for name, body in files.items():
                    s3.put_object(Bucket=bucket, Key=f"{PREFIX}ws00000/{name}", Body=body)
                for kind in args.stores:
                    rows.append(run(endpoint, bucket, hostile, kind, Path(tmp)))
                    print(f"  {kind}: {rows[-1]}", file=sys.stderr, flush=True)
    finally:
        server.terminate()
        server.wait()
    print(f"\nOne poll over {args.folders} folders ({args.folders // 10} ready), one of them hostile")
    header = (f"{'hostile folder':>15} {'store':>9} {'cold s':>7} {'idle s':>7} {'registered':>11} "
              f"{'hostile got':>12} {'RSS MB':>7} {'peak MB':>8}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['hostile']:>15} {r['store']:>9} {r['cold_s']:>7.2f} {r['idle_s']:>7.2f} "
              f"{r['registered']:>11} {r['hostile_got']:>12} {r['rss']:>7.0f} {r['peak']:>8.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
