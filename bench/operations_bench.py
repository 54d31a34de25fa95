"""Operator actions: what one action costs, and listing the audit trail (prints, never asserts).

On a SQLite store in a temporary directory: N worksets in error are retried one by one through
``wsmon.operations`` (re-read, rule check, re-validation by a stand-in validator that finds the
files valid, one conditional write, one audit entry), then a bulk retry of N more, then N refused
ignores of running worksets (audited too); then ``Store.list_operator_actions`` over the whole
trail, the newest 50 (what ``wsmon events --actions`` and the ``:events`` screen read) and one
workset's own entries (what ``wsmon events ID`` merges).

    .venv/bin/python bench/operations_bench.py
    .venv/bin/python bench/operations_bench.py --worksets 2000
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import structlog  # noqa: E402

from wsmon.engine.store import open_store  # noqa: E402
from wsmon.engine.worksetfiles import ValidationReport  # noqa: E402
from wsmon.operations import Operations  # noqa: E402


def valid(workset):
    return ValidationReport(target=f"s3://{workset.bucket}/{workset.prefix}",
                            workset_id=workset.workset_id)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worksets", type=int, default=500)
    args = parser.parse_args()
    n = args.worksets
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{tmp}/bench.db")
        store.init_schema()
        ops = Operations(store, "bench@host", validator=valid)
        for i in range(2 * n):
            store.register_workset(f"err-{i:05d}", "b", f"p/err-{i:05d}/", state="error")
        for i in range(n):
            store.register_workset(f"run-{i:05d}", "b", f"p/run-{i:05d}/")
            store.acquire_lock(f"run-{i:05d}", "engine-1", lease_seconds=3600)

        shown = [store.get_workset(f"err-{i:05d}") for i in range(n)]
        started = time.perf_counter()
        done = sum(ops.retry(ws).done for ws in shown)
        single = time.perf_counter() - started
        print(f"retry, one at a time: {done}/{n} done in {single:.2f} s "
              f"({1000 * single / n:.2f} ms per action)")

        shown = [store.get_workset(f"err-{i:05d}") for i in range(n, 2 * n)]
        started = time.perf_counter()
        done = sum(o.done for o in ops.run_batch("retry", shown))
        bulk = time.perf_counter() - started
        print(f"bulk retry: {done}/{n} done in {bulk:.2f} s ({1000 * bulk / n:.2f} ms per workset)")

        shown = [store.get_workset(f"run-{i:05d}") for i in range(n)]
        started = time.perf_counter()
        refused = sum(ops.ignore(ws).refused for ws in shown)
        spent = time.perf_counter() - started
        print(f"refused ignore of running worksets: {refused}/{n} refused in {spent:.2f} s "
              f"({1000 * spent / n:.2f} ms per action, audit entry included)")

        started = time.perf_counter()
        entries = store.list_operator_actions(limit=len(shown) * 3)
        listed = time.perf_counter() - started
        started = time.perf_counter()
        last = store.list_operator_actions(limit=50)
        tail = time.perf_counter() - started
        started = time.perf_counter()
        one = store.list_operator_actions(workset_id=shown[-1].workset_id)
        own = time.perf_counter() - started
        print(f"list_operator_actions: {len(entries)} entries in {1000 * listed:.1f} ms; "
              f"the last {len(last)} in {1000 * tail:.1f} ms; one workset's {len(one)} in "
              f"{1000 * own:.1f} ms (a time index: reads only what is asked for)")
        store.close()


if __name__ == "__main__":
    main()
