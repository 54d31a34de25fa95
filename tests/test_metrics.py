"""Metrics: CloudWatch through moto (read back), batching, outages, EMF lines, local history."""

from __future__ import annotations

import io
import json
import socket
from datetime import timedelta

import pytest

from wsmon.core.aws import client as aws_client
from wsmon.config.settings import Settings
from wsmon.engine.metrics import Metrics
from wsmon.engine.store import open_store
from wsmon.core.models import ClusterStatus


@pytest.fixture
def store(tmp_path, clock):
    s = open_store(f"sqlite:///{tmp_path}/s.db", clock=clock)
    yield s
    s.close()


@pytest.fixture
def cloudwatch(moto_endpoint):
    return aws_client("cloudwatch", region="us-west-2", endpoint_url=moto_endpoint)


def make(store, clock, cloudwatch=None, **metrics) -> Metrics:
    cfg = Settings(metrics=metrics)
    return Metrics(cfg, store, clock=clock, monitor_id="engine-a", cloudwatch_client=cloudwatch)


class Recording:
    """Wraps a real (moto) client and remembers each PutMetricData batch size."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.batches: list[int] = []

    def put_metric_data(self, **kwargs):
        self.batches.append(len(kwargs["MetricData"]))
        return self.inner.put_metric_data(**kwargs)


def _stats(cw, ns, name, dims, clock, stat="Sum"):
    resp = cw.get_metric_statistics(
        Namespace=ns, MetricName=name, Dimensions=[{"Name": k, "Value": v} for k, v in dims.items()],
        StartTime=clock.now() - timedelta(hours=1), EndTime=clock.now() + timedelta(hours=1),
        Period=3600, Statistics=["Sum", "SampleCount", "Maximum"],
    )
    return resp["Datapoints"]


def test_counters_and_durations_reach_cloudwatch(store, clock, cloudwatch, unique_name):
    ns = f"Test/{unique_name}"
    m = make(store, clock, cloudwatch, namespace=ns)
    for _ in range(5):
        m.incr("WorksetStateTransitions", State="complete")
    m.incr("WorksetLockFailures")
    m.observe("WorksetProcessingDuration", 120.0, State="in_progress")
    m.observe("WorksetProcessingDuration", 60.0, State="in_progress")
    assert m.flush() == 3  # aggregated per metric, dimensions and minute
    [point] = _stats(cloudwatch, ns, "WorksetStateTransitions", {"MonitorId": "engine-a", "State": "complete"}, clock)
    assert point["Sum"] == 5
    [point] = _stats(cloudwatch, ns, "WorksetProcessingDuration", {"MonitorId": "engine-a", "State": "in_progress"}, clock)
    assert point["Sum"] == 180 and point["Maximum"] == 120
    listed = cloudwatch.list_metrics(Namespace=ns)["Metrics"]
    names = {(x["MetricName"], tuple(sorted(d["Name"] for d in x["Dimensions"]))) for x in listed}
    assert ("WorksetLockFailures", ("MonitorId",)) in names
    assert ("WorksetStateTransitions", ("MonitorId", "State")) in names
    assert m.flush() == 0  # nothing left behind


def test_batches_hold_at_most_1000_datums(store, clock, cloudwatch, unique_name):
    ns = f"Test/{unique_name}"
    rec = Recording(cloudwatch)
    m = make(store, clock, rec, namespace=ns, buffer_size=5000)
    for i in range(2500):
        m.incr("WorksetQueueDepth", State="ready", Priority=f"p{i}")
    assert m.flush() == 2500
    assert rec.batches == [1000, 1000, 500]
    assert m.dropped == 0


def _dead_endpoint() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now: connections are refused at once
    return f"http://127.0.0.1:{port}"


def test_outage_drops_oldest_counted_and_recovers(store, clock, cloudwatch, unique_name):
    ns = f"Test/{unique_name}"
    dead = aws_client("cloudwatch", region="us-west-2", endpoint_url=_dead_endpoint(), max_attempts=1,
                      connect_timeout=1, read_timeout=1)
    m = make(store, clock, dead, namespace=ns, buffer_size=100)
    for i in range(60):
        m.incr("WorksetRetries", Workset=f"w{i}")
    assert m.flush() == 0
    assert m.failed_requests == 1 and m.buffered == 60  # kept for later, not lost
    for i in range(60, 120):
        m.incr("WorksetRetries", Workset=f"w{i}")
    assert m.dropped == 20 and m.buffered == 100  # the bound holds; the oldest went first
    requests = m.requests
    assert m.flush() == 0  # backing off: no request at all while the sink is known down
    assert m.requests == requests
    # CloudWatch comes back
    m._client = cloudwatch
    clock.advance(31)
    assert m.flush() == 100
    assert _stats(cloudwatch, ns, "WorksetRetries", {"MonitorId": "engine-a", "Workset": "w119"}, clock)
    assert not _stats(cloudwatch, ns, "WorksetRetries", {"MonitorId": "engine-a", "Workset": "w0"}, clock)


def test_emf_lines_on_stdout(store, clock):
    out = io.StringIO()
    m = Metrics(Settings(metrics={"sink": "emf", "namespace": "Daylily/WorksetMonitor"}), store, clock=clock,
                monitor_id="engine-a", stream=out)
    m.incr("WorksetStateTransitions", State="error")
    m.incr("WorksetStateTransitions", State="error")
    m.observe("WorksetProcessingDuration", 12.5, State="in_progress")
    m.observe("WorksetProcessingDuration", 7.5, State="in_progress")
    m.close()
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    by_name = {next(iter(r["_aws"]["CloudWatchMetrics"][0]["Metrics"]))["Name"]: r for r in records}
    transitions = by_name["WorksetStateTransitions"]
    directive = transitions["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "Daylily/WorksetMonitor"
    assert directive["Dimensions"] == [["MonitorId", "State"]]
    assert transitions["WorksetStateTransitions"] == 2 and transitions["State"] == "error"
    assert transitions["MonitorId"] == "engine-a"
    assert transitions["_aws"]["Timestamp"] == int(clock.now().replace(second=0, microsecond=0).timestamp() * 1000)
    assert sorted(by_name["WorksetProcessingDuration"]["WorksetProcessingDuration"]) == [7.5, 12.5]


def test_sink_none_sends_nothing(store, clock):
    m = make(store, clock, object(), sink="none")
    m.incr("EngineHeartbeat")
    assert m.flush() == 0 and m.buffered == 0


def test_history_samples_queue_throughput_errors_and_clusters(store, clock):
    m = make(store, clock, sink="none")
    for i in range(3):
        store.register_workset(f"r{i}", "b", f"p/r{i}/", priority="urgent" if i == 0 else "normal")
    store.put_cluster_status(ClusterStatus(name="c1", max_vcpus=100, vcpus_used=25, updated_at=clock.now()))
    m.sample_history()  # the first minute
    clock.advance(60)
    store.register_workset("done1", "b", "p/done1/", state="complete")
    store.register_workset("done2", "b", "p/done2/", state="complete")
    store.register_workset("bad", "b", "p/bad/", state="failed")
    m.incr("WorksetLockFailures", 4)
    clock.advance(30)
    written = m.sample_history()
    assert written and m.sample_history() == []  # once per minute
    since = clock.now() - timedelta(minutes=5)
    depth = m.history("queue_depth", since, state="ready")
    assert [s.value for s in depth] == [3.0, 3.0]
    assert [s.value for s in m.history("queue_depth_priority", since, state="ready", priority="urgent")] == [1.0, 1.0]
    assert m.history("throughput", since)[-1].value == pytest.approx(2 / 1.5, abs=1e-3)
    assert m.history("error_rate", since)[-1].value == pytest.approx(1 / 3, abs=1e-3)
    assert m.history("cluster_utilisation", since, cluster="c1")[-1].value == 0.25
    assert m.history("lock_failures", since, monitor="engine-a")[-1].value == 4


def test_hourly_rollup_and_retention(store, clock):
    m = make(store, clock, sink="none", history_days=1)
    start = clock.now()
    for minute in range(120):
        if minute == 60:
            for i in range(4):
                store.register_workset(f"w{i}", "b", f"p/w{i}/")
        m.sample_history()
        clock.advance(60)
    hourly = m.history("queue_depth", start, resolution="hour", state="ready")
    assert [s.value for s in hourly] == [0.0, 4.0]
    assert hourly[1].at == start + timedelta(hours=1)
    clock.advance(days=2)
    m.sample_history()  # prunes what is older than a day
    assert m.history("queue_depth", start, start + timedelta(hours=3), state="ready") == []
    assert len(m.history("queue_depth", clock.now() - timedelta(minutes=5), state="ready")) == 1
