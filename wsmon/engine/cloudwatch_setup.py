"""CloudWatch as code: the alarms and the dashboard that watch wsmon from outside the engine.

wsmon's own alerts are evaluated inside the engine, so a dead engine cannot report itself; these
alarms can: the heartbeat alarm treats missing data as breaching, so an engine that publishes
nothing alarms. ``plan`` builds the desired alarms and dashboard from the settings (the metric
names and dimensions the engine publishes, wsmon/engine/metrics.py); ``install`` creates or
updates in place only what differs (running it twice changes nothing); ``uninstall`` deletes
exactly what ``install`` creates: alarms named ``wsmon-<group>-…`` whose description carries
``MANAGED_MARK``, and the dashboard ``wsmon-<group>`` when its body carries the mark too.
Everything else in the account is left alone.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from wsmon.engine.metrics import (
    DEAD_LETTERED,
    ENGINE_HEARTBEAT,
    LOCK_ACQUISITIONS,
    LOCK_FAILURES,
    PROCESSING_DURATION,
    QUEUE_DEPTH,
    STATE_TRANSITIONS,
)

if TYPE_CHECKING:
    from wsmon.config.settings import Settings

MANAGED_MARK = "[managed by wsmon cloudwatch install]"
OUTBOX_BACKLOG = "NotificationOutboxBacklog"
JOB_LAG = "EngineJobLag"
JOB_OVERRUNS = "EngineJobOverruns"
WORKSET_COST = "WorksetCost"
PRIORITIES = ("urgent", "normal", "low")
# the alarm's own settings compared to decide "unchanged" (what put_metric_alarm takes)
_COMPARED = ("AlarmDescription", "ActionsEnabled", "OKActions", "AlarmActions", "MetricName",
             "Namespace", "Statistic", "Dimensions", "Period", "EvaluationPeriods",
             "DatapointsToAlarm", "Threshold", "ComparisonOperator", "TreatMissingData", "Metrics")


def group_name(settings: Settings, override: str | None = None) -> str:
    """The monitor group: the engines sharing one store. Its name is the DynamoDB table (or the
    SQLite file's stem) unless given; CloudWatch names allow [A-Za-z0-9_.-]."""
    if override:
        raw = override
    else:
        url = settings.store_url
        tail = url.split("://", 1)[-1].split("?", 1)[0].rstrip("/")
        raw = tail.rsplit("/", 1)[-1].rsplit(".", 1)[0] or "wsmon"
    return re.sub(r"[^A-Za-z0-9_.-]", "-", raw)[:100]


@dataclass
class Plan:
    group: str
    alarms: list[dict[str, Any]] = field(default_factory=list)
    dashboard_name: str = ""
    dashboard_body: dict[str, Any] = field(default_factory=dict)

    @property
    def alarm_prefix(self) -> str:
        return f"wsmon-{self.group}-"


def _dims(monitor_id: str, **more: str) -> list[dict[str, str]]:
    return sorted([{"Name": "MonitorId", "Value": monitor_id},
                   *({"Name": k, "Value": v} for k, v in more.items())], key=lambda d: d["Name"])


def _metric(namespace: str, name: str, dims: list[dict[str, str]], stat: str, period: int,
            metric_id: str) -> dict[str, Any]:
    return {"Id": metric_id, "ReturnData": False,
            "MetricStat": {"Metric": {"Namespace": namespace, "MetricName": name, "Dimensions": dims},
                           "Period": period, "Stat": stat}}


def plan(settings: Settings, *, monitor_ids: Sequence[str], sns_topic: str | None,
         group: str | None = None) -> Plan:
    ns = settings.metrics.namespace
    out = Plan(group=group_name(settings, group))
    actions = [sns_topic] if sns_topic else []
    rules = settings.alerts

    def alarm(suffix: str, description: str, **spec: Any) -> None:
        out.alarms.append({
            "AlarmName": f"{out.alarm_prefix}{suffix}",
            "AlarmDescription": f"{description} {MANAGED_MARK}",
            "ActionsEnabled": True, "AlarmActions": actions, "OKActions": actions, **spec})

    heartbeat = rules.engine_heartbeat.interval_seconds or settings.store.heartbeat_seconds
    beat_periods = max(1, math.ceil(rules.engine_heartbeat.threshold * heartbeat / 60))
    lock_period = max(60, int(round(rules.lock_failures.window_seconds / 60)) * 60)
    error_period = max(60, int(round(rules.error_rate.window_seconds / 60)) * 60)
    for mid in monitor_ids:
        tag = re.sub(r"[^A-Za-z0-9_.-]", "-", mid)[:80]
        alarm(f"heartbeat-missing-{tag}",
              f"Engine {mid} sent no heartbeat for {beat_periods} minute(s): dead or hung. "
              "Missing data counts as breaching, so an engine that publishes nothing alarms.",
              Namespace=ns, MetricName=ENGINE_HEARTBEAT, Dimensions=_dims(mid), Statistic="Sum",
              Period=60, EvaluationPeriods=beat_periods, DatapointsToAlarm=beat_periods,
              Threshold=1.0, ComparisonOperator="LessThanThreshold", TreatMissingData="breaching")
        depth = [_metric(ns, QUEUE_DEPTH, _dims(mid, State="ready", Priority=p), "Maximum", 60, f"q{p}")
                 for p in PRIORITIES]
        alarm(f"queue-depth-{tag}",
              f"More than {rules.queue_depth.threshold:g} ready worksets (all priorities) "
              f"for {rules.queue_depth.for_seconds:g}s, as engine {mid} counts them.",
              Metrics=[*depth, {"Id": "ready", "ReturnData": True, "Label": "ready worksets",
                                "Expression": "FILL(qurgent,0)+FILL(qnormal,0)+FILL(qlow,0)"}],
              EvaluationPeriods=max(1, math.ceil(rules.queue_depth.for_seconds / 60)),
              Threshold=float(rules.queue_depth.threshold),
              ComparisonOperator="GreaterThanThreshold", TreatMissingData="notBreaching")
        finished = [_metric(ns, STATE_TRANSITIONS, _dims(mid, State=s), "Sum", error_period, f"t{s}")
                    for s in ("complete", "error")]
        alarm(f"error-rate-{tag}",
              f"More than {rules.error_rate.threshold:.0%} of the worksets engine {mid} finished "
              f"in {error_period // 60} min failed (at least {rules.error_rate.min_events} finished).",
              Metrics=[*finished, {
                  "Id": "rate", "ReturnData": True, "Label": "error rate",
                  "Expression": (f"IF(FILL(tcomplete,0)+FILL(terror,0) >= {rules.error_rate.min_events}, "
                                 "FILL(terror,0)/(FILL(tcomplete,0)+FILL(terror,0)), 0)")}],
              EvaluationPeriods=1, Threshold=float(rules.error_rate.threshold),
              ComparisonOperator="GreaterThanThreshold", TreatMissingData="notBreaching")
        alarm(f"lock-failures-{tag}",
              f"More than {rules.lock_failures.threshold:g} failed lock acquisitions by engine "
              f"{mid} in {lock_period // 60} min (engines contending for the same worksets).",
              Namespace=ns, MetricName=LOCK_FAILURES, Dimensions=_dims(mid), Statistic="Sum",
              Period=lock_period, EvaluationPeriods=1, Threshold=float(rules.lock_failures.threshold),
              ComparisonOperator="GreaterThanThreshold", TreatMissingData="notBreaching")
        alarm(f"dead-letters-{tag}",
              f"Engine {mid} gave up on a workset (retries exhausted: state failed).",
              Namespace=ns, MetricName=DEAD_LETTERED, Dimensions=_dims(mid), Statistic="Sum",
              Period=60, EvaluationPeriods=1, Threshold=0.0,
              ComparisonOperator="GreaterThanThreshold", TreatMissingData="notBreaching")
        alarm(f"outbox-backlog-{tag}",
              f"More than 100 notifications waiting in the outbox for 15 min, as engine {mid} "
              "counts them (a channel failing or delivery stalled).",
              Namespace=ns, MetricName=OUTBOX_BACKLOG, Dimensions=_dims(mid), Statistic="Maximum",
              Period=300, EvaluationPeriods=3, Threshold=100.0,
              ComparisonOperator="GreaterThanThreshold", TreatMissingData="notBreaching")
    out.dashboard_name = f"wsmon-{out.group}"
    out.dashboard_body = _dashboard(ns, settings.aws.region or "us-east-1", out.group)
    return out


def _search(ns: str, dims: str, name: str, stat: str, period: int, label: str, expr_id: str,
            extra: str = "") -> list[Any]:
    return [{"expression": f"SEARCH('{{{ns},{dims}}} MetricName=\"{name}\"{extra}', '{stat}', {period})",
             "id": expr_id, "label": label}]


def _dashboard(ns: str, region: str, group: str) -> dict[str, Any]:
    def widget(x: int, y: int, title: str, metrics: list[Any], *, stat: str = "Sum",
               view: str = "timeSeries") -> dict[str, Any]:
        return {"type": "metric", "x": x, "y": y, "width": 12, "height": 6,
                "properties": {"title": title, "region": region, "view": view, "stat": stat,
                               "period": 60, "metrics": metrics}}

    widgets = [
        {"type": "text", "x": 0, "y": 0, "width": 24, "height": 1,
         "properties": {"markdown": f"wsmon monitor group **{group}** {MANAGED_MARK}"}},
        widget(0, 1, "Queue depth by state (worksets)",
               [_search(ns, "MonitorId,Priority,State", QUEUE_DEPTH, "Maximum", 60, "", "depth")],
               stat="Maximum"),
        widget(12, 1, "Throughput (worksets completed per minute)",
               [_search(ns, "MonitorId,State", STATE_TRANSITIONS, "Sum", 60, "", "done",
                        ' State="complete"')]),
        widget(0, 7, "Error rate (failed / finished)", [
            _search(ns, "MonitorId,State", STATE_TRANSITIONS, "Sum", 300, "", "err", ' State="error"')
            + [{"visible": False}],
            _search(ns, "MonitorId,State", STATE_TRANSITIONS, "Sum", 300, "", "ok", ' State="complete"')
            + [{"visible": False}],
            [{"expression": "SUM(err)/(SUM(err)+SUM(ok))", "id": "rate", "label": "error rate"}],
        ]),
        widget(12, 7, "Lock contention (acquired vs failed)", [
            _search(ns, "MonitorId", LOCK_ACQUISITIONS, "Sum", 60, "", "acq"),
            _search(ns, "MonitorId", LOCK_FAILURES, "Sum", 60, "", "fail"),
        ]),
        widget(0, 13, "Processing duration (seconds, p50 / p90)", [
            _search(ns, "MonitorId,State", PROCESSING_DURATION, "p50", 300, "", "p50"),
            _search(ns, "MonitorId,State", PROCESSING_DURATION, "p90", 300, "", "p90"),
        ], stat="p50"),
        widget(12, 13, "Cost per workset (USD, estimated, average)",
               [_search(ns, "Kind,MonitorId", WORKSET_COST, "Average", 3600, "", "cost")],
               stat="Average"),
        widget(0, 19, "Engine heartbeats and skipped job runs", [
            _search(ns, "MonitorId", ENGINE_HEARTBEAT, "Sum", 60, "", "beat"),
            _search(ns, "Job,MonitorId", JOB_OVERRUNS, "Sum", 60, "", "skip"),
        ]),
        widget(12, 19, "Job lag (seconds late, maximum)",
               [_search(ns, "Job,MonitorId", JOB_LAG, "Maximum", 60, "", "lag")], stat="Maximum"),
    ]
    return {"widgets": widgets}


# -- carrying it out ---------------------------------------------------------------------------------

def _normal(spec: dict[str, Any]) -> dict[str, Any]:
    """An alarm's settings, as put_metric_alarm takes them, in a comparable form."""
    out = {}
    for key in _COMPARED:
        value = spec.get(key)
        if value in (None, [], ""):
            continue
        if key == "Dimensions":
            value = sorted(value, key=lambda d: d["Name"])
        if key == "Metrics":
            value = [{k: v for k, v in m.items() if k in ("Id", "Expression", "Label", "ReturnData",
                                                          "MetricStat")} for m in value]
        if key == "Threshold":
            value = float(value)
        out[key] = value
    out.setdefault("DatapointsToAlarm", spec.get("EvaluationPeriods"))
    return json.loads(json.dumps(out, sort_keys=True, default=str))


def _existing_alarms(cw: Any, prefix: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for page in cw.get_paginator("describe_alarms").paginate(AlarmNamePrefix=prefix,
                                                            AlarmTypes=["MetricAlarm"]):
        for alarm in page.get("MetricAlarms", []):
            found[alarm["AlarmName"]] = alarm
    return found


@dataclass
class Change:
    kind: str  # alarm | dashboard
    name: str
    action: str  # create | update | unchanged | delete | kept (not ours)

    def line(self) -> str:
        return f"{self.action:<9} {self.kind:<9} {self.name}"


def install(cw: Any, desired: Plan, *, dry_run: bool = False) -> list[Change]:
    changes: list[Change] = []
    existing = _existing_alarms(cw, desired.alarm_prefix)
    for spec in desired.alarms:
        current = existing.get(spec["AlarmName"])
        if current is not None and _normal(current) == _normal(spec):
            changes.append(Change("alarm", spec["AlarmName"], "unchanged"))
            continue
        changes.append(Change("alarm", spec["AlarmName"], "update" if current else "create"))
        if not dry_run:
            cw.put_metric_alarm(**spec)
    body = json.dumps(desired.dashboard_body, sort_keys=True)
    try:
        current_body = cw.get_dashboard(DashboardName=desired.dashboard_name)["DashboardBody"]
    except cw.exceptions.ResourceNotFound:
        current_body = None
    if current_body is not None and json.loads(current_body) == desired.dashboard_body:
        changes.append(Change("dashboard", desired.dashboard_name, "unchanged"))
    else:
        changes.append(Change("dashboard", desired.dashboard_name,
                              "update" if current_body is not None else "create"))
        if not dry_run:
            cw.put_dashboard(DashboardName=desired.dashboard_name, DashboardBody=body)
    return changes


def uninstall(cw: Any, desired: Plan, *, dry_run: bool = False) -> list[Change]:
    """Delete the group's alarms that carry the mark (whatever monitor ids they were made for)
    and its dashboard if it carries the mark; name anything else found under the prefix as kept."""
    changes: list[Change] = []
    ours: list[str] = []
    for name, alarm in sorted(_existing_alarms(cw, desired.alarm_prefix).items()):
        if MANAGED_MARK in (alarm.get("AlarmDescription") or ""):
            ours.append(name)
            changes.append(Change("alarm", name, "delete"))
        else:
            changes.append(Change("alarm", name, "kept"))
    if ours and not dry_run:
        for start in range(0, len(ours), 100):
            cw.delete_alarms(AlarmNames=ours[start:start + 100])
    try:
        body = cw.get_dashboard(DashboardName=desired.dashboard_name)["DashboardBody"]
    except cw.exceptions.ResourceNotFound:
        body = None
    if body is not None:
        if MANAGED_MARK in body:
            changes.append(Change("dashboard", desired.dashboard_name, "delete"))
            if not dry_run:
                cw.delete_dashboards(DashboardNames=[desired.dashboard_name])
        else:
            changes.append(Change("dashboard", desired.dashboard_name, "kept"))
    return changes


def setup_statements(settings: Settings, account: str = "*", region: str = "*") -> list[dict[str, Any]]:
    """IAM for running install/uninstall (``wsmon iam-policy --with-cloudwatch-setup``)."""
    group = group_name(settings)
    return [
        {"Sid": "CloudWatchSetupRead", "Effect": "Allow",
         "Action": ["cloudwatch:DescribeAlarms", "cloudwatch:GetDashboard"], "Resource": "*"},
        {"Sid": "CloudWatchSetupAlarms", "Effect": "Allow",
         "Action": ["cloudwatch:PutMetricAlarm", "cloudwatch:DeleteAlarms"],
         "Resource": f"arn:aws:cloudwatch:{region}:{account}:alarm:wsmon-{group}-*"},
        {"Sid": "CloudWatchSetupDashboard", "Effect": "Allow",
         "Action": ["cloudwatch:PutDashboard", "cloudwatch:DeleteDashboards"],
         "Resource": f"arn:aws:cloudwatch::{account}:dashboard/wsmon-{group}"},
    ]


def describe(changes: Iterable[Change]) -> list[str]:
    return [c.line() for c in changes]
