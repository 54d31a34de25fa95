"""Time one scheduling pass over 10,000 ready worksets and 50 clusters (prints, never asserts).

    .venv/bin/python bench/schedule_bench.py [--worksets N] [--clusters N] [--seed N]
"""

from __future__ import annotations

import argparse
import random
import time
from datetime import datetime, timedelta, timezone

from wsmon.engine.scheduler import ClusterCapacity, SchedulingPolicy, WorksetRequirements, schedule
from wsmon.core.models import Priority


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worksets", type=int, default=10_000)
    parser.add_argument("--clusters", type=int, default=50)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--global-limit", type=int, default=400)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    now = datetime(2026, 3, 1, tzinfo=timezone.utc)
    zones = ["us-west-2a", "us-west-2b", "us-west-2c", "us-west-2d"]
    clusters = [
        ClusterCapacity(f"cluster-{i:02d}", rng.choice(zones), max_vcpus=rng.choice([256, 512, 1024]),
                        current_vcpus_used=rng.randint(0, 128), max_memory_gb=4096,
                        current_memory_gb_used=rng.uniform(0, 1024), active_worksets=rng.randint(0, 2),
                        max_concurrent_worksets=rng.choice([3, 5, 10]),
                        cost_per_vcpu_hour=rng.uniform(0.03, 0.08))
        for i in range(args.clusters)
    ]
    worksets = [
        WorksetRequirements(
            f"ws-{i:05d}", rng.choice(list(Priority)), rng.choice(["acme", "zed", "lab", None]),
            vcpus=rng.choice([4, 8, 16, 32, 64, 192]), memory_gb=rng.uniform(8, 256),
            estimated_cost_usd=rng.uniform(1, 500), estimated_duration_hours=rng.uniform(0.5, 30),
            preferred_availability_zone=rng.choice(zones + [None]),
            waiting_since=now - timedelta(minutes=rng.uniform(0, 1000)))
        for i in range(args.worksets)
    ]
    policy = SchedulingPolicy(max_concurrent_worksets=args.global_limit, customer_quotas={"acme": 40})
    for _ in range(args.repeat):
        start = time.perf_counter()
        decisions = schedule(worksets, clusters, {"acme": 10}, policy=policy, now=now)
        elapsed = time.perf_counter() - start
        placed = sum(1 for d in decisions if d.placed)
        print(f"one pass: {len(worksets)} ready worksets, {len(clusters)} clusters: "
              f"{elapsed * 1000:.0f} ms ({placed} placed)")


if __name__ == "__main__":
    main()
