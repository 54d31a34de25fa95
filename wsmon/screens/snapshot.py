"""What one dashboard refresh reads from the store, shaped for the screens.

Runs in the refresh worker thread, never on the UI thread: it reads the store, turns each workset
into a ``QueueRow`` of display strings, and hands the screens only what changed since the last
refresh, so the UI thread applies a small diff instead of re-rendering thousands of rows.
"""

from __future__ import annotations

import heapq
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from rich.markup import escape

from wsmon.core.clock import Clock, parse_iso
from wsmon.engine.store.base import Store
from wsmon.core.models import (
    Alert,
    ClusterStatus,
    MonitorInfo,
    Priority,
    QueueStats,
    Silence,
    Workset,
    WorksetState,
)
from wsmon.core.textsafe import strip_control
from wsmon.engine.progress.usage import UsageFacts, UsageRow, month_start, summarize_facts
from wsmon.engine.progress.usage import facts as usage_facts
from wsmon.widgets.difftable import ColumnSpec
from wsmon.widgets.format import (
    STATE_ORDER,
    age_since,
    compact_age,
    compact_age_changes_at,
    progress_cell,
    state_label,
)

# Queue columns. Widths follow the terminal (roomy from 120 columns, compact below, so all of
# them show at 80) but never the text, so adding 10,000 rows never measures a cell. The id is
# what identifies a row: at 80 columns it keeps 15 cells, cut in the middle, and the event
# keeps room for its age and an error code; customer, cluster and holder give way first. With
# room to spare the event grows most: a wait reason ("waiting: cluster-a full 3/3, ...") is
# the one cell an operator reads whole.
QUEUE_COLUMNS: list[ColumnSpec] = [
    ColumnSpec("sel", " ", 1, gap=0),
    ColumnSpec("id", "workset", 26, narrow=15, cut="middle"),
    ColumnSpec("state", "state", 13, narrow=9),
    ColumnSpec("priority", "prio", 6, narrow=4),
    ColumnSpec("customer", "customer", 10, narrow=4, short="cust", grow=1, max=14),
    ColumnSpec("cluster", "cluster", 10, narrow=6, short="clust"),
    # since wsmon registered the workset (Workset.created_at), as the detail's "registered" line
    # and the timeline's registration row say; "reg" for short, since the whole word would take
    # six cells from the event column
    ColumnSpec("age", "reg", 4, narrow=3),
    ColumnSpec("attempts", "try", 3),
    ColumnSpec("lease", "lease holder", 18, narrow=5, short="lease"),
    ColumnSpec("last_event", "last event / why waiting", 20, narrow=15, short="event/why",
               grow=12),
    ColumnSpec("progress", "progress", 9, narrow=4, short="done"),
]
# states whose last event is about an error: the event cell leads with the error code
ERROR_CODE_STATES = frozenset({WorksetState.ERROR, WorksetState.FAILED, WorksetState.RETRYING})


def _code_in_text(code: str) -> re.Pattern[str]:
    """The code where a reason already names it ("retrying: WS-NET-001, retry 1 of 2")."""
    return re.compile(rf"\s*{re.escape(code)}[:,]?\s*")


SORTABLE = [spec.key for spec in QUEUE_COLUMNS if spec.key != "sel"]
GONE_FROM_S3 = "⚠ gone from S3"

# Local metric history the charts read; names and dimensions as engine/metrics.py writes them
# (H_QUEUE_DEPTH, H_CLUSTER_UTILISATION). Not imported: screens stay off engine modules.
QUEUE_DEPTH_METRIC = "queue_depth"  # dims: state
UTILISATION_METRIC = "cluster_utilisation"  # dims: cluster; 0..1
CHART_HOURS = 6
THROUGHPUT_METRIC = "throughput"  # completions per minute (a roll-up is the mean per bucket)
ERROR_RATE_METRIC = "error_rate"  # failed / finished, 0..1
# Chart ranges (label, span, store resolution): minutes up to six hours, then hourly and daily
# roll-ups, so a long range is a few hundred points, never tens of thousands.
CHART_RANGES: list[tuple[str, timedelta, str]] = [
    ("6h", timedelta(hours=CHART_HOURS), "minute"),
    ("2d", timedelta(days=2), "hour"),
    ("14d", timedelta(days=14), "day"),
]
RESOLVED_ALERTS_HOURS = 24


@dataclass(frozen=True, slots=True)
class QueueRow:
    """One workset as the queue table shows it; ``cells`` follow QUEUE_COLUMNS minus "sel"."""

    key: str
    state: WorksetState
    priority: str
    cells: tuple[str, ...]
    sort_values: tuple[Any, ...]
    search: str
    markup: tuple[str, ...]  # the same cells escaped for DataTable, which parses str as markup
    s3_missing: bool = False  # the last event cell starts with GONE_FROM_S3 (the screen colours it)
    percent: float | None = None  # the progress cell's figure (the screen shortens it when narrow)

    def sort_value(self, column: str) -> Any:
        return self.sort_values[SORTABLE.index(column)]


@dataclass(frozen=True, slots=True)
class _Static:
    """The parts of a row that only change when the record changes."""

    state: WorksetState
    priority: str
    priority_rank: int
    customer: str
    cluster: str
    attempts: int
    lease: str
    display_id: str
    created_at: datetime
    last_event_at: datetime
    created_ts: float  # the same instants as POSIX seconds: ages are float arithmetic
    last_event_ts: float
    last_event_text: str
    escaped: tuple[str, ...]  # display_id, customer, cluster, lease, last_event_text, waiting
    search: str
    waiting: str  # the scheduler's reason a ready workset still waits ("" if none)
    s3_missing: bool
    percent: float | None  # Snakemake's steps done, from the engine's progress tracker


@dataclass(frozen=True)
class EngineStatus:
    kind: str  # alive | stale | none
    text: str
    monitor: MonitorInfo | None = None


@dataclass
class Snapshot:
    at: datetime
    full: bool
    changed: dict[str, QueueRow]
    removed: set[str]
    stats: QueueStats
    monitors: list[MonitorInfo]
    engine: EngineStatus
    clusters: list[ClusterStatus]
    alerts: list[Alert]
    silences: list[Silence]
    charts: dict[str, list[tuple[datetime, float]]] | None = None
    read_seconds: float = 0.0
    changed_records: set[str] = field(default_factory=set)
    preview: bool = False  # the first page only, so the first screen is drawn before all rows


def engine_status(monitors: list[MonitorInfo], now: datetime, stale_after: float) -> EngineStatus:
    from wsmon.engine.health import EngineLiveness

    engines = sorted((m for m in monitors if m.role == "engine"), key=lambda m: m.last_seen,
                     reverse=True)
    if not engines:
        return EngineStatus("none", "no engine")
    live = [m for m in engines if (now - m.last_seen).total_seconds() <= stale_after]
    if live:
        m = live[0]
        extra = f" (+{len(live) - 1})" if len(live) > 1 else ""
        return EngineStatus("alive", f"alive on {strip_control(m.host)} pid {m.pid}{extra}"
                            f"{discovery_summary(m.details, now)}{skipped_runs_summary(live)}", m)
    m = engines[0]
    # not only "no engine here": none anywhere, said loudly, with how long since the last beat
    loud = EngineLiveness.of(engines, now, timedelta(seconds=stale_after)).none_alive_text(now)
    return EngineStatus("stale", f"{loud} ({strip_control(m.host)})", m)


def skipped_runs_summary(live: list[MonitorInfo]) -> str:
    """Job runs the live engines skipped in the last 10 minutes (heartbeat details ``jobs``,
    engine/watchdog.py): "" when none."""
    skipped = 0
    for m in live:
        jobs = m.details.get("jobs") if isinstance(m.details, dict) else None
        for figures in (jobs or {}).values() if isinstance(jobs, dict) else ():
            if isinstance(figures, dict):
                skipped += int(figures.get("recent_overruns") or 0)
    return f" · {skipped} skipped job run(s) in 10 min" if skipped else ""


def discovery_summary(details: dict, now: datetime) -> str:
    """How the engine discovers folders, when S3 events are configured (heartbeat details
    ``discovery``, engine/s3/events.py): "" for polling only."""
    queues = details.get("discovery") if isinstance(details, dict) else None
    if not isinstance(queues, list) or not queues:
        return ""
    if any(isinstance(q, dict) and q.get("mode") == "fallback" for q in queues):
        return " · S3 events unreadable: polling"
    stamps = [q.get("last_event_at") for q in queues if isinstance(q, dict) and q.get("last_event_at")]
    if not stamps:
        return " · S3 events, none yet"
    try:
        last = max(parse_iso(str(t)) for t in stamps)
    except (ValueError, TypeError):
        return " · S3 events"
    return f" · S3 events, last {age_since(last, now)} ago"


def live_engine(monitors: list[MonitorInfo], now: datetime, stale_after: float) -> MonitorInfo | None:
    status = engine_status(monitors, now, stale_after)
    return status.monitor if status.kind == "alive" else None


def _static(ws: Workset) -> _Static:
    last = ws.recent_events[-1] if ws.recent_events else None
    if last is not None:
        what = strip_control(last.reason or last.to_state.value)
        code = strip_control(ws.error_code or "")
        if code and ws.state in ERROR_CODE_STATES:
            # the code first: a narrow column still shows which error it is
            what = f"{code} {_code_in_text(code).sub(' ', what).strip()}".rstrip()
        # the reason first, so a narrow column cuts the actor, not what happened
        last_text = f"{what} · {strip_control(last.actor)}"
        last_at = last.at
    else:
        last_text, last_at = "", ws.updated_at
    lease = strip_control(ws.lock_owner) if ws.lock_owner and ws.state.holds_lease else ""
    display_id = strip_control(ws.workset_id)
    customer = strip_control(ws.customer_id or "")
    cluster = strip_control(ws.cluster_name or "")
    waiting = (strip_control(ws.schedule_reason)
               if ws.state == WorksetState.READY and ws.schedule_reason else "")
    search = " ".join((display_id, ws.state.value, ws.priority.value, customer, cluster, lease,
                       last_text, waiting, GONE_FROM_S3 if ws.s3_missing else "")).lower()
    return _Static(
        state=ws.state, priority=ws.priority.value, priority_rank=ws.priority.rank,
        customer=customer, cluster=cluster, attempts=ws.attempts, lease=lease,
        display_id=display_id, created_at=ws.created_at, last_event_at=last_at,
        created_ts=ws.created_at.timestamp(), last_event_ts=last_at.timestamp(),
        last_event_text=last_text,
        escaped=tuple(escape(v) for v in (display_id, customer, cluster, lease, last_text,
                                          waiting)),
        search=search, waiting=waiting, s3_missing=ws.s3_missing,
        percent=ws.progress.percent if ws.progress is not None else None,
    )


def _ages(st: _Static, now_ts: float) -> tuple[tuple[str, str], float]:
    """The row's two age cells at ``now_ts``, and when either next shows another text."""
    created, last = now_ts - st.created_ts, now_ts - st.last_event_ts
    changes_at = min(st.created_ts + compact_age_changes_at(created),
                     st.last_event_ts + compact_age_changes_at(last))
    return (compact_age(created), compact_age(last)), changes_at


def _row(key: str, st: _Static, ages: tuple[str, str]) -> QueueRow:
    age, last_age = ages
    e_id, e_customer, e_cluster, e_lease, e_last, e_waiting = st.escaped
    # A ready workset shows why it still waits (the scheduler's reason), others what happened last.
    if st.waiting:
        last, e_last_cell = st.waiting, e_waiting
    elif st.last_event_text:
        last, e_last_cell = f"{last_age} {st.last_event_text}", f"{last_age} {e_last}"
    else:
        last = e_last_cell = ""
    if st.s3_missing:  # the screen colours the marker; the plain cell carries it for diff/search
        last = f"{GONE_FROM_S3} · {last}" if last else GONE_FROM_S3
    label = state_label(st.state)
    done = progress_cell(st.percent)
    cells = (st.display_id, label, st.priority, st.customer, st.cluster, age,
             str(st.attempts), st.lease, last, done)
    markup = (e_id, label, st.priority, e_customer, e_cluster, age, str(st.attempts), e_lease,
              e_last_cell, done)
    sort_values = (key, STATE_ORDER[st.state], st.priority_rank, st.customer, st.cluster,
                   -st.created_ts, st.attempts, st.lease, -st.last_event_ts,
                   -1.0 if st.percent is None else st.percent)
    return QueueRow(key, st.state, st.priority, cells, sort_values, st.search, markup,
                    st.s3_missing, st.percent)


class SnapshotReader:
    """Reads the store incrementally; one instance per dashboard, used from one thread."""

    def __init__(self, store: Store, clock: Clock, *, stale_after: float,
                 full_every: int = 150) -> None:
        self.store = store
        self.clock = clock
        self.stale_after = stale_after
        self.full_every = full_every
        self._watermark: datetime | None = None
        self._statics: dict[str, _Static] = {}
        self._rows: dict[str, QueueRow] = {}
        self._ages: dict[str, tuple[str, str]] = {}
        # When each row's ages next change, as a heap of (instant, key); _age_due holds the
        # instant that counts per key (a heap entry that differs is outdated), so a read
        # recomputes only the ages whose text can have moved, not all 10,000.
        self._age_heap: list[tuple[float, str]] = []
        self._age_due: dict[str, float] = {}
        self._last_now: float | None = None
        # (state, priority) -> worksets, kept from the mirror: the header's counts without a
        # queue_stats() read per refresh (on DynamoDB that is a Query per state)
        self._counts: Counter[tuple[str, str]] = Counter()
        self._reads = 0
        self._charts_read_at: float | None = None
        self.chart_range = 0  # index into CHART_RANGES; the clusters screen sets it
        self._usage: dict[str, UsageFacts] = {}
        # this month's usage per cluster, computed with the charts (read by the clusters screen)
        self.month_usage: list[UsageRow] = []

    def reset(self) -> None:
        """After a failure: the next read is a full one."""
        self._watermark = None

    def set_chart_range(self, index: int) -> None:
        """Charts over CHART_RANGES[index] from the next read on."""
        self.chart_range = index % len(CHART_RANGES)
        self._charts_read_at = None

    def read(self, *, want_charts: bool = False, force_full: bool = False) -> Snapshot:
        started = time.perf_counter()
        store = self.store
        full = force_full or self._watermark is None or self._reads % self.full_every == 0
        if full:
            worksets, watermark = store.worksets_changed_since(None)
        else:
            worksets, watermark = store.worksets_changed_since(self._watermark)
        now = self.clock.now()
        removed: set[str] = set()
        changed_records = {ws.workset_id for ws in worksets}
        if full:
            statics = {ws.workset_id: _static(ws) for ws in worksets}
            removed = set(self._statics) - set(statics)
            self._statics = statics
            self._counts = Counter((st.state.value, st.priority) for st in statics.values())
            dirty = list(statics)
            self._usage = {}
        else:
            dirty = []
            for ws in worksets:
                self._replace_static(ws.workset_id, _static(ws))
                dirty.append(ws.workset_id)
        for ws in worksets:
            used = usage_facts(ws)
            if used is None:
                self._usage.pop(ws.workset_id, None)
            else:
                self._usage[ws.workset_id] = used
        changed: dict[str, QueueRow] = {}
        rows, ages, statics = self._rows, self._ages, self._statics
        # Only ages move between reads: a row is rebuilt when its record changed or one of its
        # ages reached the instant its text changes.
        dirty_keys = set(dirty)
        now_ts = now.timestamp()
        to_rebuild = self._rows_to_rebuild(dirty, now_ts, full)
        heap, due_at = self._age_heap, self._age_due
        for key in to_rebuild:
            st = statics.get(key)
            if st is None:
                continue
            new_ages, due = _ages(st, now_ts)
            due_at[key] = due
            heapq.heappush(heap, (due, key))
            if key not in dirty_keys and ages.get(key) == new_ages:
                continue
            ages[key] = new_ages
            row = _row(key, st, new_ages)
            old = rows.get(key)
            if old is None or old.cells != row.cells:
                rows[key] = row
                changed[key] = row
        for key in removed:
            rows.pop(key, None)
            ages.pop(key, None)
            self._age_due.pop(key, None)
        self._last_now = now_ts
        self._watermark = watermark
        self._reads += 1

        monitors = store.list_monitors()
        alerts = store.list_alerts(resolved_since=now - timedelta(hours=RESOLVED_ALERTS_HOURS))
        charts = None
        if want_charts and (self._charts_read_at is None or full
                            or self.clock.monotonic() - self._charts_read_at >= 30):
            charts = self.read_charts(now)
            self._charts_read_at = self.clock.monotonic()
            self.month_usage = summarize_facts(self._usage.values(), month_start(now),
                                               now + timedelta(seconds=1), "cluster")
        return Snapshot(
            at=now, full=full, changed=changed, removed=removed, stats=self.queue_stats(),
            monitors=monitors, engine=engine_status(monitors, now, self.stale_after),
            clusters=store.list_cluster_status(), alerts=alerts,
            silences=store.list_silences(active_at=now), charts=charts,
            read_seconds=time.perf_counter() - started, changed_records=changed_records,
        )

    def _replace_static(self, key: str, st: _Static) -> None:
        old = self._statics.get(key)
        if old is not None:
            self._counts[(old.state.value, old.priority)] -= 1
        self._counts[(st.state.value, st.priority)] += 1
        self._statics[key] = st

    def _rows_to_rebuild(self, dirty: list[str], now: float, full: bool) -> list[str]:
        """The changed records (in store order), then the rows whose ages' instant came."""
        due_at = self._age_due
        if full or self._last_now is None or now < self._last_now:
            # every row: a full read, or the clock went back and every due instant is off
            self._age_heap, due_at = [], {}
            self._age_due = due_at
            return list(dict.fromkeys([*dirty, *self._statics]))
        heap = self._age_heap
        if len(heap) > 2 * len(due_at) + 1024:
            # rows that changed left their earlier instants behind: drop the outdated entries
            heap[:] = [(due, key) for key, due in due_at.items()]
            heapq.heapify(heap)
        keys = dict.fromkeys(dirty)
        # popped before any is pushed back: an age whose text has not moved yet (a clock step
        # finer than the instant) is looked at again next read, never in a loop now
        while heap and heap[0][0] <= now:
            due, key = heapq.heappop(heap)
            if due_at.get(key) == due:
                keys[key] = None
        return list(keys)

    def queue_stats(self) -> QueueStats:
        """What ``store.queue_stats()`` returns, counted from the mirror of every workset."""
        counts = {s.value: {p.value: 0 for p in Priority} for s in WorksetState}
        for (state, priority), n in self._counts.items():
            if n:
                counts.setdefault(state, {})[priority] = n
        return QueueStats(counts=counts)

    def read_preview(self, limit: int = 200) -> Snapshot:
        """The top of the queue (store order = the default sort) and the header figures, so the
        first screen appears before thousands of rows are read; ``read`` follows at once."""
        started = time.perf_counter()
        store = self.store
        page = store.list_worksets(limit=limit)
        now = self.clock.now()
        changed: dict[str, QueueRow] = {}
        for ws in page.items:
            st = _static(ws)
            ages, _ = _ages(st, now.timestamp())
            self._statics[ws.workset_id] = st
            self._ages[ws.workset_id] = ages
            row = _row(ws.workset_id, st, ages)
            self._rows[ws.workset_id] = row
            changed[ws.workset_id] = row
        monitors = store.list_monitors()
        return Snapshot(
            at=now, full=False, changed=changed, removed=set(), stats=store.queue_stats(),
            monitors=monitors, engine=engine_status(monitors, now, self.stale_after),
            clusters=store.list_cluster_status(),
            alerts=store.list_alerts(resolved_since=now - timedelta(hours=RESOLVED_ALERTS_HOURS)),
            silences=store.list_silences(active_at=now), read_seconds=time.perf_counter() - started,
            changed_records=set(changed), preview=True,
        )

    def read_charts(self, now: datetime) -> dict[str, list[tuple[datetime, float]]]:
        """Queue depth (summed over states still waiting or running), utilisation per cluster,
        throughput (completed per hour) and error rate (%), over the chosen range."""
        _, span, resolution = CHART_RANGES[self.chart_range]
        since = now - span

        def history(name: str):
            return self.store.metric_history(name, since, now, resolution=resolution)

        depth: dict[datetime, float] = {}
        for sample in history(QUEUE_DEPTH_METRIC):
            state = sample.dimensions.get("state", "")
            if state and state not in ("ready", "retrying", "locked", "in_progress"):
                continue
            depth[sample.at] = depth.get(sample.at, 0.0) + sample.value
        out: dict[str, list[tuple[datetime, float]]] = {"queue depth": sorted(depth.items())}
        per_cluster: dict[str, list[tuple[datetime, float]]] = {}
        for sample in history(UTILISATION_METRIC):
            name = strip_control(sample.dimensions.get("cluster", "all"))
            per_cluster.setdefault(name, []).append((sample.at, sample.value * 100))
        for name, points in per_cluster.items():
            out[f"util {name}"] = points
        out["done per hour"] = [(s.at, s.value * 60) for s in history(THROUGHPUT_METRIC)]
        out["error rate %"] = [(s.at, s.value * 100) for s in history(ERROR_RATE_METRIC)]
        return out
