"""Waiting for another thread or process in tests: poll a predicate until it holds.

One helper for every test that waits on something it does not drive (a subprocess, a server
thread, tmux); a test that drives time itself moves a ManualClock instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], what: str, timeout: float = 30.0, *,
               every: float = 0.05, between: Callable[[], Any] | None = None) -> T:
    """The predicate's first truthy value; ``between`` runs before each look (e.g. one engine
    round). Fails the test with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if between is not None:
            between()
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)
