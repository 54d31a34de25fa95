"""``GET /metrics``: the store's state in the Prometheus text format (prometheus-client).

Every scrape reads the store (a scrape every 15-60 s costs a handful of queries); nothing is
counted in this process except the event stream's own figures, so any number of API servers
report the same values. Poll counters come from each engine's heartbeat (cumulative since that
engine started, so they are counters that reset when it restarts, as Prometheus expects).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from wsmon.core.models import AlertState, Priority, Severity, WorksetState

if TYPE_CHECKING:
    from wsmon.api.context import ApiContext

OUTBOX_SCAN_LIMIT = 100_000


class StoreCollector(Collector):
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        store, now = self.ctx.store, self.ctx.clock.now()

        depth = GaugeMetricFamily("wsmon_queue_depth", "Worksets per state and priority.",
                                  labels=["state", "priority"])
        counts = store.queue_stats().counts
        for state in WorksetState:
            for prio in Priority:
                depth.add_metric([state.value, prio.value], counts.get(state.value, {}).get(prio.value, 0))
        yield depth

        running = [*store.iter_worksets(state=WorksetState.LOCKED),
                   *store.iter_worksets(state=WorksetState.IN_PROGRESS)]
        per_cluster = Counter(ws.cluster_name or "" for ws in running)
        for status in store.list_cluster_status():
            per_cluster.setdefault(status.name, 0)
        gauge = GaugeMetricFamily("wsmon_worksets_running", "Worksets locked or in progress per "
                                  "cluster (\"\" before one is chosen).", labels=["cluster"])
        for cluster, n in sorted(per_cluster.items()):
            gauge.add_metric([cluster], n)
        yield gauge

        age = GaugeMetricFamily("wsmon_lease_age_seconds", "Seconds since each held lease was "
                                "claimed.", labels=["workset_id", "owner"])
        left = GaugeMetricFamily("wsmon_lease_expires_in_seconds", "Seconds until each held lease "
                                 "expires (negative: overdue, its holder presumed gone).",
                                 labels=["workset_id", "owner"])
        for ws in running:
            labels = [ws.workset_id, ws.lock_owner or ""]
            if ws.lock_acquired_at is not None:
                age.add_metric(labels, (now - ws.lock_acquired_at).total_seconds())
            if ws.lock_expires_at is not None:
                left.add_metric(labels, (ws.lock_expires_at - now).total_seconds())
        yield age
        yield left

        firing = GaugeMetricFamily("wsmon_alerts_firing", "Alerts firing (not acknowledged) per "
                                   "severity.", labels=["severity"])
        open_alerts = GaugeMetricFamily("wsmon_alerts", "Open alerts per state and severity.",
                                        labels=["state", "severity"])
        by = Counter((a.state.value, a.severity.value) for a in store.list_alerts())
        for sev in Severity:
            firing.add_metric([sev.value], by.get((AlertState.FIRING.value, sev.value), 0))
            for st in (AlertState.PENDING, AlertState.FIRING, AlertState.ACKNOWLEDGED):
                open_alerts.add_metric([st.value, sev.value], by.get((st.value, sev.value), 0))
        yield firing
        yield open_alerts

        backlog = GaugeMetricFamily("wsmon_outbox_backlog", "Notifications waiting to be "
                                    "delivered per channel.", labels=["channel"])
        pending = Counter(e.channel for e in store.list_notifications(status="pending",
                                                                      limit=OUTBOX_SCAN_LIMIT))
        for channel, n in sorted(pending.items()):
            backlog.add_metric([channel], n)
        yield backlog

        heartbeat = GaugeMetricFamily("wsmon_engine_heartbeat_age_seconds", "Seconds since each "
                                      "engine's last heartbeat.", labels=["monitor"])
        polls = CounterMetricFamily("wsmon_poll", "S3 discovery polls by each engine since it "
                                    "started.", labels=["monitor"])
        requests = CounterMetricFamily("wsmon_poll_requests", "S3 requests made by each engine's "
                                       "polls since it started.", labels=["monitor"])
        errors = CounterMetricFamily("wsmon_poll_errors", "Poll errors (a source or a folder that "
                                     "could not be read) by each engine since it started.",
                                     labels=["monitor"])
        for m in store.list_monitors():
            if m.role != "engine":
                continue
            heartbeat.add_metric([m.monitor_id], max(0.0, (now - m.last_seen).total_seconds()))
            counts_ = m.details.get("polls") if isinstance(m.details, dict) else None
            if isinstance(counts_, dict):
                polls.add_metric([m.monitor_id], float(counts_.get("polls", 0)))
                requests.add_metric([m.monitor_id], float(counts_.get("requests", 0)))
                errors.add_metric([m.monitor_id], float(counts_.get("errors", 0)))
        yield heartbeat
        yield polls
        yield requests
        yield errors

        hub = self.ctx.hub
        if hub is not None:
            clients = GaugeMetricFamily("wsmon_api_stream_clients", "Clients connected to "
                                        "/api/v1/events/stream.")
            clients.add_metric([], hub.clients)
            yield clients
            dropped = CounterMetricFamily("wsmon_api_stream_dropped_clients", "Stream clients "
                                          "disconnected because they stopped reading.")
            dropped.add_metric([], hub.dropped_clients)
            yield dropped


def registry_for(ctx: ApiContext) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(ctx))
    return registry
