"""Metrics: CloudWatch (batched PutMetricData, or embedded-metric-format lines) and local history.

``incr``/``observe`` never do I/O: they add to a bounded in-memory buffer that aggregates datums
of the same metric, dimensions and minute into one statistic set. ``flush`` (the engine's metrics
job, and ``close`` at shutdown) sends the buffer in batches of at most 1,000 datums and well under
the 1 MB request limit. CloudWatch being down never stalls the engine: requests have short
timeouts, a failed flush puts its datums back (oldest dropped first when the buffer is full,
counted and logged) and the sink backs off before it is tried again.

``sample_history`` writes the dashboard's chart data into the store once a minute — queue depth
per state, throughput, error rate, per-cluster utilisation and this engine's lock/retry counters —
and prunes it to ``metrics.history_days``; hourly and daily roll-ups come from
``Store.metric_history(resolution=...)``.
"""

from __future__ import annotations

import json
import sys
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import IO, TYPE_CHECKING, Any

import structlog

from wsmon.core.clock import Clock, SystemClock
from wsmon.core.models import MetricSample, WorksetState
from wsmon.engine.recent_changes import ChangeReads, StoreReads

if TYPE_CHECKING:
    from wsmon.config.settings import MetricsSettings, Settings
    from wsmon.engine.store import Store

log = structlog.get_logger(__name__)

# CloudWatch metric names (the names the earlier monitor published, plus ours).
STATE_TRANSITIONS = "WorksetStateTransitions"
QUEUE_DEPTH = "WorksetQueueDepth"
LOCK_ACQUISITIONS = "WorksetLockAcquisitions"
LOCK_FAILURES = "WorksetLockFailures"
PROCESSING_DURATION = "WorksetProcessingDuration"
RETRIES = "WorksetRetries"
DEAD_LETTERED = "WorksetDeadLettered"
ENGINE_HEARTBEAT = "EngineHeartbeat"
METRIC_NAMES = (STATE_TRANSITIONS, QUEUE_DEPTH, LOCK_ACQUISITIONS, LOCK_FAILURES, PROCESSING_DURATION,
                RETRIES, DEAD_LETTERED, ENGINE_HEARTBEAT)

# Local history series (MetricSample.name) the dashboard charts and the alert rules read.
H_QUEUE_DEPTH = "queue_depth"  # dims: state
H_QUEUE_DEPTH_PRIORITY = "queue_depth_priority"  # dims: state, priority
H_THROUGHPUT = "throughput"  # completions per minute
H_ERROR_RATE = "error_rate"  # failed / finished in the sampled minute (0..1)
H_FAILURES = "failures"
H_COMPLETIONS = "completions"
H_CLUSTER_UTILISATION = "cluster_utilisation"  # dims: cluster; 0..1
H_CLUSTER_ACTIVE = "cluster_active_worksets"  # dims: cluster
# This engine's counters per minute (dims: monitor), from incr() calls.
COUNTER_HISTORY = {
    LOCK_FAILURES: "lock_failures",
    LOCK_ACQUISITIONS: "lock_acquisitions",
    RETRIES: "retries",
    DEAD_LETTERED: "dead_lettered",
}

MAX_DATUMS_PER_REQUEST = 1000
# PutMetricData accepts 1 MB per request; the estimate below is generous, this leaves headroom.
MAX_REQUEST_BYTES = 900_000
MAX_DIMENSIONS = 30
EMF_MAX_VALUES = 100
BACKOFF_START_SECONDS = 30.0
BACKOFF_MAX_SECONDS = 300.0
PRUNE_EVERY = timedelta(hours=1)


@dataclass
class _Aggregate:
    """All datums of one metric + dimensions + unit within one minute."""

    name: str
    dimensions: tuple[tuple[str, str], ...]
    unit: str
    timestamp: datetime
    count: float = 0.0
    total: float = 0.0
    minimum: float = float("inf")
    maximum: float = float("-inf")
    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.minimum = min(self.minimum, value)
        self.maximum = max(self.maximum, value)
        if len(self.values) < EMF_MAX_VALUES:
            self.values.append(value)

    def datum(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "MetricName": self.name,
            "Dimensions": [{"Name": k, "Value": v} for k, v in self.dimensions],
            "Timestamp": self.timestamp,
            "Unit": self.unit,
        }
        if self.count == 1:
            d["Value"] = self.total
        else:
            d["StatisticValues"] = {"SampleCount": self.count, "Sum": self.total,
                                    "Minimum": self.minimum, "Maximum": self.maximum}
        return d


def _estimated_bytes(datum: Mapping[str, Any]) -> int:
    # The wire format (CBOR, or query parameters in older botocore) is no bigger than the JSON of
    # the datum plus field-name overhead; estimating high only makes batches smaller.
    return len(json.dumps(datum, default=str)) + 64


def _metrics_settings(settings: Any) -> MetricsSettings:
    return settings.metrics if hasattr(settings, "metrics") else settings


class Metrics:
    """The engine's metrics sink. Thread-safe; ``incr``/``observe`` never block on the network."""

    def __init__(self, settings: Settings, store: Store | None, *, clock: Clock | None = None,
                 monitor_id: str = "wsmon", cloudwatch_client: Any = None,
                 stream: IO[str] | None = None, changes: ChangeReads | None = None) -> None:
        self.settings = settings
        self.cfg = _metrics_settings(settings)
        self.store = store
        # the engine's shared view of recent changes; on its own, the store itself
        self.changes = changes if changes is not None or store is None else StoreReads(store)
        self.clock = clock or getattr(store, "clock", None) or SystemClock()
        self.monitor_id = monitor_id
        self._client = cloudwatch_client
        self._stream = stream
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._buffer: OrderedDict[tuple[Any, ...], _Aggregate] = OrderedDict()
        self._counters: dict[str, float] = {}
        self._blocked_until: float | None = None  # monotonic
        self._backoff = BACKOFF_START_SECONDS
        self._last_drop_log: float | None = None
        self._last_sample_minute: datetime | None = None
        self._last_sample_at: datetime | None = None
        self._last_prune: datetime | None = None
        # figures for the dashboard / logs
        self.sent = 0
        self.dropped = 0
        self.requests = 0
        self.failed_requests = 0

    # -- recording ------------------------------------------------------------------------------
    def incr(self, name: str, value: float = 1.0, unit: str = "Count", **dims: Any) -> None:
        self._add(name, float(value), unit, dims)
        history = COUNTER_HISTORY.get(name)
        if history is not None:
            with self._lock:
                self._counters[history] = self._counters.get(history, 0.0) + float(value)

    def observe(self, name: str, value: float, unit: str = "Seconds", **dims: Any) -> None:
        self._add(name, float(value), unit, dims)

    def _add(self, name: str, value: float, unit: str, dims: Mapping[str, Any]) -> None:
        if self.cfg.sink == "none":
            return
        dimensions = [("MonitorId", self.monitor_id[:255])]
        for k, v in dims.items():
            if v is None or k == "MonitorId":
                continue
            if hasattr(v, "value") and not isinstance(v, (int, float, str)):
                v = v.value  # enums (WorksetState, Priority)
            text = str(v)[:255]
            if text:
                dimensions.append((str(k)[:255], text))
        dimensions = sorted(dimensions[:MAX_DIMENSIONS])
        stamp = self.clock.now().replace(second=0, microsecond=0)
        key = (name, tuple(dimensions), unit, stamp)
        dropped = 0
        with self._lock:
            agg = self._buffer.get(key)
            if agg is None:
                if len(self._buffer) >= self.cfg.buffer_size:
                    self._buffer.popitem(last=False)  # the oldest goes first
                    dropped = 1
                agg = _Aggregate(name, tuple(dimensions), unit, stamp)
                self._buffer[key] = agg
            agg.add(value)
        if dropped:
            self._count_drops(dropped, "buffer full")

    def _count_drops(self, n: int, reason: str) -> None:
        with self._lock:
            self.dropped += n
            total = self.dropped
        now = self.clock.monotonic()
        if self._last_drop_log is None or now - self._last_drop_log >= 60:
            self._last_drop_log = now
            log.warning("metrics_dropped", dropped_total=total, reason=reason)

    @property
    def buffered(self) -> int:
        with self._lock:
            return len(self._buffer)

    # -- sending --------------------------------------------------------------------------------
    def client(self) -> Any:
        if self._client is None:
            from wsmon.core.aws import client

            aws = getattr(self.settings, "aws", None)
            # short timeouts and a single retry (max_attempts counts the first attempt): a metrics
            # outage must cost the engine seconds
            self._client = client(
                "cloudwatch", profile=getattr(aws, "profile", None), region=getattr(aws, "region", None),
                endpoint_url=getattr(aws, "endpoint_url", None), max_attempts=2,
                connect_timeout=2.0, read_timeout=5.0,
            )
        return self._client

    def flush(self) -> int:
        """Send what is buffered; returns how many datums went out. Never raises."""
        with self._flush_lock:
            with self._lock:
                items = list(self._buffer.values())
                self._buffer.clear()
            if not items:
                return 0
            if self.cfg.sink == "emf":
                return self._write_emf(items)
            if self.cfg.sink != "cloudwatch":
                return 0
            if self._blocked_until is not None and self.clock.monotonic() < self._blocked_until:
                self._requeue(items)
                return 0
            sent = 0
            batches = list(self._batches(items))
            for index, batch in enumerate(batches):
                try:
                    self.requests += 1
                    self.client().put_metric_data(Namespace=self.cfg.namespace,
                                                  MetricData=[a.datum() for a in batch])
                except Exception as exc:
                    self.failed_requests += 1
                    from wsmon.core.aws import describe_client_error

                    rest = [a for b in batches[index:] for a in b]
                    self._blocked_until = self.clock.monotonic() + self._backoff
                    log.warning("metrics_flush_failed", error=describe_client_error(exc)[:300],
                                requeued=len(rest), retry_in_seconds=self._backoff)
                    self._backoff = min(BACKOFF_MAX_SECONDS, self._backoff * 2)
                    self._requeue(rest)
                    break
                sent += len(batch)
            else:
                self._blocked_until = None
                self._backoff = BACKOFF_START_SECONDS
            self.sent += sent
            return sent

    def _batches(self, items: list[_Aggregate]):
        batch: list[_Aggregate] = []
        size = 0
        for agg in items:
            est = _estimated_bytes(agg.datum())
            if batch and (len(batch) >= MAX_DATUMS_PER_REQUEST or size + est > MAX_REQUEST_BYTES):
                yield batch
                batch, size = [], 0
            batch.append(agg)
            size += est
        if batch:
            yield batch

    def _requeue(self, items: list[_Aggregate]) -> None:
        """Put unsent aggregates back in front of newer ones; the oldest beyond the bound go."""
        dropped = 0
        with self._lock:
            merged: OrderedDict[tuple[Any, ...], _Aggregate] = OrderedDict()
            for agg in items:
                merged[(agg.name, agg.dimensions, agg.unit, agg.timestamp)] = agg
            for key, agg in self._buffer.items():
                old = merged.get(key)
                if old is None:
                    merged[key] = agg
                else:
                    old.count += agg.count
                    old.total += agg.total
                    old.minimum = min(old.minimum, agg.minimum)
                    old.maximum = max(old.maximum, agg.maximum)
                    old.values.extend(agg.values[: EMF_MAX_VALUES - len(old.values)])
            while len(merged) > self.cfg.buffer_size:
                merged.popitem(last=False)
                dropped += 1
            self._buffer = merged
        if dropped:
            self._count_drops(dropped, "cloudwatch unavailable")

    def _write_emf(self, items: list[_Aggregate]) -> int:
        out = self._stream or sys.stdout
        lines = []
        for agg in items:
            dims = dict(agg.dimensions)
            chunks: list[Any]
            if agg.unit == "Count" or agg.count > len(agg.values):
                chunks = [agg.total if agg.unit == "Count" else agg.total / max(agg.count, 1)]
            else:
                chunks = [agg.values[i:i + EMF_MAX_VALUES] for i in range(0, len(agg.values), EMF_MAX_VALUES)]
            for value in chunks:
                record = {
                    "_aws": {
                        "Timestamp": int(agg.timestamp.timestamp() * 1000),
                        "CloudWatchMetrics": [{
                            "Namespace": self.cfg.namespace,
                            "Dimensions": [sorted(dims)],
                            "Metrics": [{"Name": agg.name, "Unit": agg.unit}],
                        }],
                    },
                    **dims,
                    agg.name: value,
                }
                lines.append(json.dumps(record, separators=(",", ":"), ensure_ascii=False))
        try:
            out.write("\n".join(lines) + "\n")
            out.flush()
        except (OSError, ValueError) as exc:  # stdout closed or a broken pipe: metrics are optional
            self._count_drops(len(items), f"emf write failed: {type(exc).__name__}")
            return 0
        self.sent += len(items)
        return len(items)

    def close(self) -> None:
        self.flush()

    # -- local history --------------------------------------------------------------------------
    def sample_history(self) -> list[MetricSample]:
        """Write this minute's chart samples to the store (once per minute); prune old ones."""
        if self.store is None:
            return []
        now = self.clock.now()
        minute = now.replace(second=0, microsecond=0)
        if self._last_sample_minute == minute:
            return []
        window_start = self._last_sample_at or (now - timedelta(minutes=1))
        samples: list[MetricSample] = []

        assert self.changes is not None
        stats = self.changes.queue_stats()
        for state in WorksetState:
            per_priority = stats.counts.get(state.value, {})
            samples.append(MetricSample(name=H_QUEUE_DEPTH, at=minute, value=float(sum(per_priority.values())),
                                        dimensions={"state": state.value}))
            for priority, count in sorted(per_priority.items()):
                samples.append(MetricSample(name=H_QUEUE_DEPTH_PRIORITY, at=minute, value=float(count),
                                            dimensions={"state": state.value, "priority": priority}))
            # the same figures to CloudWatch, so its graphs match the dashboard's
            for priority, count in per_priority.items():
                self.observe(QUEUE_DEPTH, float(count), unit="Count", State=state.value, Priority=priority)

        changed, _ = self.changes.changed_since(window_start)
        completions = failures = 0
        for ws in changed:
            if not (window_start <= ws.state_changed_at < now + timedelta(microseconds=1)):
                continue
            if ws.state is WorksetState.COMPLETE:
                completions += 1
            elif ws.state in (WorksetState.ERROR, WorksetState.RETRYING, WorksetState.FAILED):
                failures += 1
        minutes = max((now - window_start).total_seconds() / 60.0, 1e-9)
        finished = completions + failures
        samples += [
            MetricSample(name=H_THROUGHPUT, at=minute, value=round(completions / minutes, 4)),
            MetricSample(name=H_COMPLETIONS, at=minute, value=float(completions)),
            MetricSample(name=H_FAILURES, at=minute, value=float(failures)),
            MetricSample(name=H_ERROR_RATE, at=minute, value=round(failures / finished, 4) if finished else 0.0),
        ]

        for cluster in self.store.list_cluster_status():
            if cluster.max_vcpus:
                util = cluster.vcpus_used / cluster.max_vcpus
            elif cluster.max_concurrent_worksets:
                util = cluster.active_worksets / cluster.max_concurrent_worksets
            else:
                util = 0.0
            dims = {"cluster": cluster.name}
            samples.append(MetricSample(name=H_CLUSTER_UTILISATION, at=minute, value=round(min(util, 1.0), 4),
                                        dimensions=dims))
            samples.append(MetricSample(name=H_CLUSTER_ACTIVE, at=minute, value=float(cluster.active_worksets),
                                        dimensions=dims))

        with self._lock:
            counters, self._counters = self._counters, {}
        for history_name in COUNTER_HISTORY.values():
            samples.append(MetricSample(name=history_name, at=minute, value=counters.get(history_name, 0.0),
                                        dimensions={"monitor": self.monitor_id}))

        self.store.record_metric_samples(samples)
        self._last_sample_minute = minute
        self._last_sample_at = now
        if self._last_prune is None or now - self._last_prune >= PRUNE_EVERY:
            self.prune()
        return samples

    def prune(self) -> int:
        if self.store is None:
            return 0
        now = self.clock.now()
        self._last_prune = now
        removed = self.store.prune_metric_history(now - timedelta(days=self.cfg.history_days))
        if removed:
            log.info("metrics_history_pruned", removed=removed, kept_days=self.cfg.history_days)
        return removed

    def history(self, name: str, since: datetime, until: datetime | None = None,
                resolution: str = "minute", **dimensions: str) -> list[MetricSample]:
        """The chart series: minute samples or hourly/daily means."""
        if self.store is None:
            return []
        return self.store.metric_history(name, since, until, resolution=resolution,
                                         dimensions=dimensions or None)


__all__ = ["COUNTER_HISTORY", "METRIC_NAMES", "Metrics"]
