"""The engine's recent-changes view: one store read per freshness interval, shared by every job.

The poll, the sweep, the alert rules and the metrics sample each want "the worksets changed since
my watermark" on their own tick; in the demo they tick together every few seconds, and each asked
the store (one Query per state on DynamoDB, returning full items). ``RecentChanges`` keeps, in
memory, the newest version of every workset changed within ``window`` (the longest look-back any
of them needs), refreshes it incrementally with ``store.worksets_changed_since(own watermark)`` at
most once per ``freshness`` seconds, and answers each caller from memory.

It is a read cache with a short life, not a second store: the store stays the one source of truth
and decides the watermark (``engine/store/rules.py``). A caller is handed the VIEW's watermark, so
its next ``since`` never lies after a change the view has not read yet. A ``since`` older than the
view covers (a first look, a watermark kept across a restart) goes to the store directly.

``queue_stats`` is shared the same way (alerts and metrics both count the queue each tick).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from wsmon.core.clock import Clock, SystemClock, utc
from wsmon.core.models import QueueStats, Workset, WorksetState

if TYPE_CHECKING:
    from wsmon.config.settings import Settings
    from wsmon.engine.store import Store

#: the longest a shared answer may be old when no job interval asks for less
MAX_FRESHNESS_SECONDS = 1.0
_STATE_ORDER = list(WorksetState)
#: look-back kept beyond the consumers' own windows: the store's watermark lag, a late tick
WINDOW_SLACK = timedelta(seconds=30)


class ChangeReads(Protocol):
    """What the engine's consumers read through: the view, or the store itself."""

    def changed_since(self, since: datetime | None) -> tuple[list[Workset], datetime]: ...

    def queue_stats(self, states: Iterable[WorksetState] | None = None) -> QueueStats: ...


class StoreReads:
    """Straight to the store: for a consumer used on its own (CLI, API, tests of one rule)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def changed_since(self, since: datetime | None) -> tuple[list[Workset], datetime]:
        return self.store.worksets_changed_since(since)

    def queue_stats(self, states: Iterable[WorksetState] | None = None) -> QueueStats:
        return self.store.queue_stats(states)


def newer(candidate: Workset, held: Workset | None) -> bool:
    """Whether ``candidate`` is at least as new a version of the workset as ``held``."""
    return held is None or candidate.updated_at >= held.updated_at


class RecentChanges:
    """Worksets changed within ``window``, refreshed from the store at most once per ``freshness``
    seconds (by ``clock.monotonic``). Thread-safe: one refresh at a time; callers that arrive
    while it runs wait for it and use its result."""

    def __init__(self, store: Store, *, window: timedelta, freshness: float,
                 clock: Clock | None = None) -> None:
        if window <= timedelta(0):
            raise ValueError(f"window must be positive, not {window}")
        self.store = store
        self.window = window
        self.freshness = max(0.0, freshness)
        self.clock: Clock = clock or getattr(store, "clock", None) or SystemClock()
        self._lock = threading.Lock()
        self._entries: dict[str, Workset] = {}
        self._covers_from: datetime | None = None  # every change at or after this is held
        self._watermark: datetime | None = None  # the store's, from the last read
        self._read_at: float | None = None
        self._stats_lock = threading.Lock()
        self._stats: dict[frozenset[WorksetState] | None, tuple[float, QueueStats]] = {}
        self.store_reads = 0  # worksets_changed_since calls this view made (incl. fallbacks)

    @classmethod
    def from_settings(cls, settings: Settings, store: Store, *,
                      clock: Clock | None = None) -> RecentChanges:
        """Window and freshness from the intervals and look-backs of the engine's consumers."""
        from wsmon.engine.sweep import FORCE_RELEASE_NOTICE_EVERY, sweep_interval_seconds

        s = settings
        sweep_every = sweep_interval_seconds(s)
        intervals = [s.discovery.poll_interval_seconds, sweep_every,
                     s.alerts.evaluate_interval_seconds, s.metrics.flush_interval_seconds]
        needs = [
            timedelta(seconds=3 * s.discovery.poll_interval_seconds),  # the poll's watermark
            FORCE_RELEASE_NOTICE_EVERY + timedelta(seconds=2 * sweep_every),  # the sweep's
            timedelta(seconds=60 + 2 * s.metrics.flush_interval_seconds),  # metrics' minute
        ]
        if s.alerts.enabled and s.alerts.error_rate.enabled:
            needs.append(timedelta(seconds=s.alerts.error_rate.window_seconds))
        return cls(store, window=max(needs) + WINDOW_SLACK,
                   freshness=min(MAX_FRESHNESS_SECONDS, min(intervals) / 2), clock=clock)

    @property
    def held(self) -> int:
        """How many worksets the view holds in memory."""
        with self._lock:
            return len(self._entries)

    # -- reads ------------------------------------------------------------------------------
    def changed_since(self, since: datetime | None) -> tuple[list[Workset], datetime]:
        """Like ``store.worksets_changed_since``: worksets whose record changed at or after
        ``since`` (newest version of each, oldest change first) and the watermark to pass next."""
        since = utc(since) if since is not None else None
        with self._lock:
            self._refresh_if_due()
            if since is not None and self._covers_from is not None and since >= self._covers_from:
                found = [ws for ws in self._entries.values() if ws.updated_at >= since]
                found.sort(key=lambda ws: (ws.updated_at, ws.workset_id))
                assert self._watermark is not None
                return found, self._watermark
        self.store_reads += 1
        return self.store.worksets_changed_since(since)  # older than the view holds

    def queue_stats(self, states: Iterable[WorksetState] | None = None) -> QueueStats:
        """The store's queue counts (of ``states``, all when None), shared for ``freshness``
        seconds; a fresh count of every state also answers a question about some."""
        key = None if states is None else frozenset(WorksetState.parse(s) for s in states)
        with self._stats_lock:
            now = self.clock.monotonic()
            for held in (None, key):
                cached = self._stats.get(held)
                if cached is not None and now - cached[0] < self.freshness:
                    return cached[1]
            stats = self.store.queue_stats(None if key is None else sorted(key, key=_STATE_ORDER.index))
            self._stats[key] = (now, stats)
            return stats

    # -- refresh ----------------------------------------------------------------------------
    def _refresh_if_due(self) -> None:
        began = self.clock.monotonic()
        if self._read_at is not None and began - self._read_at < self.freshness:
            return
        cutoff = utc(self.clock.now()) - self.window
        if self._watermark is None or self._watermark < cutoff:
            # first read, or reads failed for longer than the window: start over
            since, fresh_start = cutoff, True
        else:
            since, fresh_start = self._watermark, False
        self.store_reads += 1
        changed, watermark = self.store.worksets_changed_since(since)
        if fresh_start:
            self._entries, self._covers_from = {}, since
        for ws in changed:
            if newer(ws, self._entries.get(ws.workset_id)):
                self._entries[ws.workset_id] = ws
        self._watermark = watermark
        self._evict(cutoff)
        self._read_at = began

    def _evict(self, cutoff: datetime) -> None:
        assert self._covers_from is not None
        if self._covers_from >= cutoff:
            return
        self._entries = {wid: ws for wid, ws in self._entries.items() if ws.updated_at >= cutoff}
        self._covers_from = cutoff
