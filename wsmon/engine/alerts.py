"""Alert rules and the alert lifecycle: pending → firing → acknowledged → resolved.

Each rule looks at the store and answers "which subjects are in trouble right now". The evaluator
turns those answers into alert records, deduplicated by (rule, subject):

* a condition that becomes true opens a *pending* alert; it *fires* once it has held for the rule's
  ``for_seconds`` (continuously: a clear moment restarts the wait);
* a firing alert resolves only after its condition has stayed clear for ``keep_firing_for`` — this
  hysteresis is what keeps a flapping condition to one notification instead of one per flap;
* an operator's acknowledgement (``Store.ack_alert``; dashboard or ``wsmon ack``) stops further
  notifications; with an expiry, the alert fires (and notifies) again when it passes;
* silences suppress notifications, never the alert record; a firing alert that was never
  notified because of a silence is notified when the silence ends;
* a firing after a resolve is a new alert; resolved alerts stay in the store as history.

Everything lives in the store, so acknowledgements survive restarts and the dashboard on another
host sees the same alerts. One engine evaluates at a time (a named lease), so two engines never
open the same alert twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

import structlog

from wsmon.core.clock import Clock, SystemClock, isoformat, parse_iso
from wsmon.core.models import (
    Alert,
    AlertState,
    ClusterStatus,
    Priority,
    Severity,
    Silence,
    Workset,
    WorksetState,
)
from wsmon.core.textsafe import strip_control
from wsmon.engine.recent_changes import ChangeReads, StoreReads

if TYPE_CHECKING:
    from wsmon.config.settings import AlertRuleSettings, AlertsSettings, Settings
    from wsmon.engine.notify import Notifier
    from wsmon.engine.store import Store

log = structlog.get_logger(__name__)

HEALTH_NAMESPACE = "health"
EVALUATOR_LEASE = "alert-evaluator"
# A component whose last health report is older than this is not judged (whoever reported it is
# gone or stopped using it); the engine-heartbeat rule covers a vanished engine.
HEALTH_STALE_AFTER = timedelta(hours=1)
# Re-write a still-true alert at most this often just to refresh last_true_at.
TOUCH_INTERVAL = timedelta(minutes=5)
# Metric history names this module reads (written by engine/metrics.py).
LOCK_FAILURES_SAMPLE = "lock_failures"
# Subject of the one alert that stands for a rule's subjects beyond alerts.max_alerts_per_rule.
GROUP_SUBJECT = "*"


# ------------------------------------------------------------------------------------------------
# health reports (S3 / DynamoDB errors persisting)
# ------------------------------------------------------------------------------------------------


def record_health(store: Store, component: str, ok: bool, detail: str = "", *,
                  clock: Clock | None = None) -> dict[str, Any]:
    """Report whether ``component`` ("s3", "dynamodb", "store"...) works right now.

    Stored as kv("health", component) = {"ok", "since" (start of the current streak), "at",
    "detail", "failures"}. The ``backend_errors`` rule fires when a component stays not-ok for its
    ``for_seconds``.
    """
    from wsmon.engine.notify import scrub

    now = (clock or getattr(store, "clock", None) or SystemClock()).now()
    previous = store.kv_get(HEALTH_NAMESPACE, component) or {}
    same_streak = bool(previous) and bool(previous.get("ok")) == bool(ok)
    record = {
        "ok": bool(ok),
        "since": previous.get("since") if same_streak and previous.get("since") else isoformat(now),
        "at": isoformat(now),
        "detail": "" if ok else scrub(strip_control(detail))[:500],
        "failures": 0 if ok else int(previous.get("failures", 0) if same_streak else 0) + 1,
    }
    store.kv_put(HEALTH_NAMESPACE, component, record)
    return record


# ------------------------------------------------------------------------------------------------
# rules
# ------------------------------------------------------------------------------------------------


@dataclass
class Observation:
    """A subject for which a rule's condition is true right now."""

    subject: str
    summary: str
    value: float | None = None
    description: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    since: datetime | None = None  # when the condition became true, if the rule knows better


class _Context:
    """What rules read, fetched once per evaluation."""

    def __init__(self, store: Store, settings: Settings, now: datetime,
                 changes: ChangeReads | None = None) -> None:
        self.store = store
        self.settings = settings
        self.now = now
        # recent changes and queue counts: the engine's shared view, or the store itself
        self.changes: ChangeReads = changes if changes is not None else StoreReads(store)

    @cached_property
    def queue_stats(self):
        # the rules look at the ready queue only: the finished states (the big ones) stay unread
        return self.changes.queue_stats(states=[WorksetState.READY])

    def worksets(self, state: WorksetState, priority: Priority | None = None) -> list[Workset]:
        key = (state, priority)
        cache = self.__dict__.setdefault("_ws", {})
        if key not in cache:
            cache[key] = list(self.store.iter_worksets(state=state, priority=priority))
        return cache[key]

    @cached_property
    def clusters(self) -> list[ClusterStatus]:
        return self.store.list_cluster_status()


def _minutes(seconds: float) -> str:
    if seconds >= 5400:
        return f"{seconds / 3600:.1f} h"
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"


def _label(text: str, limit: int = 120) -> str:
    value = strip_control(text)
    return value if len(value) <= limit else value[: limit - 1] + "…"


def rule_queue_depth(ctx: _Context, cfg: Any) -> list[Observation]:
    out = []
    ready = ctx.queue_stats.counts.get(WorksetState.READY.value, {})
    for priority in Priority:
        threshold = cfg.per_priority.get(priority.value, cfg.threshold)
        depth = ready.get(priority.value, 0)
        if depth > threshold:
            out.append(Observation(
                subject=f"priority={priority.value}", value=float(depth),
                summary=f"{depth} {priority.value} worksets ready (threshold {threshold:g})",
                description=f"The ready queue for priority {priority.value} holds {depth} worksets, "
                            f"above {threshold:g}. Check cluster capacity and the scheduler.",
                labels={"priority": priority.value},
            ))
    return out


def rule_urgent_waiting(ctx: _Context, cfg: Any) -> list[Observation]:
    out = []
    limit = timedelta(minutes=cfg.threshold)
    for ws in ctx.worksets(WorksetState.READY, Priority.URGENT):
        waited = ctx.now - ws.state_changed_at
        if waited > limit:
            out.append(Observation(
                subject=ws.workset_id, value=round(waited.total_seconds() / 60, 1),
                summary=f"urgent workset {_label(ws.workset_id)} waiting {_minutes(waited.total_seconds())}",
                description=f"Urgent workset {_label(ws.workset_id, 300)} has been ready for "
                            f"{_minutes(waited.total_seconds())} (limit {cfg.threshold:g} min).",
                labels={"workset_id": ws.workset_id, "priority": ws.priority.value, "state": ws.state.value},
                since=ws.state_changed_at + limit,
            ))
    return out


def rule_long_running(ctx: _Context, cfg: Any) -> list[Observation]:
    out = []
    for ws in ctx.worksets(WorksetState.IN_PROGRESS):
        running = (ctx.now - ws.state_changed_at).total_seconds()
        estimate_h = None
        if isinstance(ws.estimate, dict):
            try:
                estimate_h = float(ws.estimate.get("duration_hours") or 0) or None
            except (TypeError, ValueError):
                estimate_h = None
        limit = cfg.max_hours * 3600
        why = f"the maximum of {cfg.max_hours:g} h"
        if estimate_h is not None and estimate_h * cfg.factor * 3600 < limit:
            limit = estimate_h * cfg.factor * 3600
            why = f"{cfg.factor:g} × its estimate of {estimate_h:g} h"
        if running > limit:
            out.append(Observation(
                subject=ws.workset_id, value=round(running / 3600, 2),
                summary=f"workset {_label(ws.workset_id)} running {_minutes(running)}, beyond {why}",
                description=f"Workset {_label(ws.workset_id, 300)} has been in progress on "
                            f"{_label(ws.cluster_name or '?', 80)} for {_minutes(running)}, beyond {why}.",
                labels={"workset_id": ws.workset_id, "priority": ws.priority.value, "state": ws.state.value},
            ))
    return out


def rule_stale_lease(ctx: _Context, cfg: Any) -> list[Observation]:
    out = []
    for ws in ctx.store.expired_leases(ctx.now):
        expired = ws.lock_expires_at or ctx.now
        out.append(Observation(
            subject=ws.workset_id, value=round((ctx.now - expired).total_seconds(), 0),
            summary=f"stale lease on {_label(ws.workset_id)} (owner {_label(ws.lock_owner or '?', 60)})",
            description=f"The lease of {_label(ws.lock_owner or '?', 80)} on {_label(ws.workset_id, 300)} "
                        f"expired at {isoformat(expired)} and nobody has recovered it yet.",
            labels={"workset_id": ws.workset_id, "priority": ws.priority.value, "state": ws.state.value},
            since=expired,
        ))
    return out


def rule_lock_failures(ctx: _Context, cfg: Any) -> list[Observation]:
    since = ctx.now - timedelta(seconds=cfg.window_seconds)
    samples = ctx.store.metric_history(LOCK_FAILURES_SAMPLE, since=since, until=ctx.now + timedelta(seconds=1))
    total = sum(s.value for s in samples)
    if total > cfg.threshold:
        return [Observation(
            subject="all", value=total,
            summary=f"{total:g} lock failures in {_minutes(cfg.window_seconds)} (threshold {cfg.threshold:g})",
            description="Claims are failing far more than usual: engines racing for the same worksets, "
                        "or the store refusing conditional writes.",
        )]
    return []


def rule_error_rate(ctx: _Context, cfg: Any) -> list[Observation]:
    since = ctx.now - timedelta(seconds=cfg.window_seconds)
    changed, _ = ctx.changes.changed_since(since)
    failed = ok = 0
    for ws in changed:
        if ws.state_changed_at < since:
            continue
        if ws.state in (WorksetState.ERROR, WorksetState.RETRYING, WorksetState.FAILED):
            failed += 1
        elif ws.state is WorksetState.COMPLETE:
            ok += 1
    finished = failed + ok
    if finished >= cfg.min_events and failed / finished > cfg.threshold:
        rate = failed / finished
        return [Observation(
            subject="all", value=round(rate, 3),
            summary=f"{rate:.0%} of worksets failed in the last {_minutes(cfg.window_seconds)} "
                    f"({failed} of {finished})",
            description=f"{failed} of {finished} worksets that finished in the last "
                        f"{_minutes(cfg.window_seconds)} failed (threshold {cfg.threshold:.0%}).",
        )]
    return []


def rule_dead_lettered(ctx: _Context, cfg: Any) -> list[Observation]:
    out = []
    for ws in ctx.worksets(WorksetState.FAILED):
        out.append(Observation(
            subject=ws.workset_id, value=float(ws.attempts),
            summary=f"workset {_label(ws.workset_id)} dead-lettered after {ws.attempts} attempt(s)"
                    + (f" [{_label(ws.error_code, 20)}]" if ws.error_code else ""),
            description=f"Workset {_label(ws.workset_id, 300)} gave up"
                        + (f" with {_label(ws.error_code, 20)}" if ws.error_code else "")
                        + ". Fix the cause, then retry it (wsmon retry) or ignore it.",
            labels={"workset_id": ws.workset_id, "priority": ws.priority.value, "state": ws.state.value},
            since=ws.state_changed_at,
        ))
    return out


def _cluster_full(c: ClusterStatus) -> bool:
    if c.status != "ready":
        return False  # an unavailable cluster is not "full"; it simply is not a candidate
    if c.max_concurrent_worksets and c.active_worksets >= c.max_concurrent_worksets:
        return True
    return bool(c.max_vcpus) and c.vcpus_used >= c.max_vcpus


def rule_cluster_full(ctx: _Context, cfg: Any) -> list[Observation]:
    waiting = ctx.queue_stats.counts.get(WorksetState.READY.value, {}).get(Priority.URGENT.value, 0)
    if not waiting:
        return []
    out = []
    for c in ctx.clusters:
        if _cluster_full(c):
            out.append(Observation(
                subject=c.name, value=float(waiting),
                summary=f"cluster {_label(c.name, 60)} full while {waiting} urgent workset(s) wait",
                description=f"Cluster {_label(c.name, 80)} runs {c.active_worksets}/{c.max_concurrent_worksets} "
                            f"worksets and {c.vcpus_used}/{c.max_vcpus} vCPUs while {waiting} urgent "
                            "worksets are ready. Add capacity or lower other work's priority.",
                labels={"cluster": c.name},
            ))
    return out


def rule_engine_heartbeat(ctx: _Context, cfg: Any) -> list[Observation]:
    interval = cfg.interval_seconds or ctx.settings.store.heartbeat_seconds
    limit = timedelta(seconds=interval * cfg.threshold)
    out = []
    for m in ctx.store.list_monitors():
        if m.role != "engine":
            continue
        silent = ctx.now - m.last_seen
        if silent > limit:
            out.append(Observation(
                subject=m.monitor_id, value=round(silent.total_seconds(), 0),
                summary=f"engine {_label(m.monitor_id, 60)} silent for {_minutes(silent.total_seconds())}",
                description=f"Engine {_label(m.monitor_id, 80)} on {_label(m.host, 80)} (pid {m.pid}) last "
                            f"sent a heartbeat at {isoformat(m.last_seen)}. Its leases will expire and be "
                            "recovered; check the host.",
                labels={"host": _label(m.host, 80)},
                since=m.last_seen + limit,
            ))
    return out


def rule_engine_overloaded(ctx: _Context, cfg: Any) -> list[Observation]:
    """A live engine's job keeps missing its schedule: ``threshold`` runs or more skipped (the
    previous run still going) or missed within the last 10 minutes, as its heartbeat reports
    (wsmon/engine/watchdog.py). A silent engine is the heartbeat rule's."""
    from wsmon.engine.health import engine_stale_after

    stale_after = engine_stale_after(ctx.settings)
    out = []
    for m in ctx.store.list_monitors():
        if m.role != "engine" or ctx.now - m.last_seen > stale_after:
            continue
        for job, figures in ((m.details or {}).get("jobs") or {}).items():
            if not isinstance(figures, dict):
                continue
            skipped = int(figures.get("recent_overruns") or 0)
            if skipped < cfg.threshold:
                continue
            interval = float(figures.get("interval_seconds") or 0)
            took = float(figures.get("duration_seconds") or 0)
            out.append(Observation(
                subject=f"{m.monitor_id}/{job}", value=float(skipped),
                summary=f"engine {_label(m.monitor_id, 60)}: job {_label(job, 40)} skipped "
                        f"{skipped} run(s) in 10 min",
                description=f"The {_label(job, 40)} job of engine {_label(m.monitor_id, 80)} runs "
                            f"every {interval:g}s but its last run took {took:.1f}s; {skipped} "
                            "runs were skipped in the last 10 minutes. The engine is overloaded "
                            "or its store or AWS endpoint is slow: check `wsmon health` and the "
                            "engine's job_overrun log lines.",
                labels={"host": _label(m.host, 80), "job": _label(job, 40)},
            ))
    return out


def rule_channel_failing(ctx: _Context, cfg: Any) -> list[Observation]:
    from wsmon.engine.notify import HEALTH_NAMESPACE as NOTIFY_HEALTH

    out: dict[str, Observation] = {}
    for channel, record in (ctx.store.kv_get_all(NOTIFY_HEALTH) or {}).items():
        failures = int((record or {}).get("consecutive_failures", 0))
        if failures >= cfg.threshold:
            out[channel] = Observation(
                subject=channel, value=float(failures),
                summary=f"notification channel {channel} failing ({failures} attempts in a row)",
                description=f"Deliveries to {channel} keep failing: "
                            f"{_label(record.get('last_error') or '?', 300)}. "
                            "Messages wait in the outbox and go out when it recovers.",
                labels={"channel": channel},
            )
    since = ctx.now - timedelta(seconds=cfg.window_seconds)
    dead: dict[str, int] = {}
    last_error: dict[str, str] = {}
    # Given up within the window, newest first: however many older dead entries the outbox
    # still keeps, the recent ones are what this rule reads (and the first error is the latest).
    for entry in ctx.store.list_notifications(status="dead", limit=1000, since=since):
        dead[entry.channel] = dead.get(entry.channel, 0) + 1
        last_error.setdefault(entry.channel, entry.last_error or "?")
    for channel, count in dead.items():
        if channel in out:
            out[channel].description += f" {count} notification(s) were given up."
            continue
        out[channel] = Observation(
            subject=channel, value=float(count),
            summary=f"notification channel {channel}: {count} notification(s) given up",
            description=f"{count} notification(s) to {channel} were given up after repeated failures "
                        f"(last error: {_label(last_error[channel], 300)}).",
            labels={"channel": channel},
        )
    return list(out.values())


def rule_backend_errors(ctx: _Context, cfg: Any) -> list[Observation]:
    out = []
    for component, record in (ctx.store.kv_get_all(HEALTH_NAMESPACE) or {}).items():
        if not isinstance(record, dict) or record.get("ok", True):
            continue
        try:
            at = parse_iso(record["at"])
            since = parse_iso(record.get("since") or record["at"])
        except (KeyError, ValueError, TypeError):
            continue
        if ctx.now - at > HEALTH_STALE_AFTER:
            continue
        lasting = (ctx.now - since).total_seconds()
        out.append(Observation(
            subject=component, value=float(record.get("failures", 1)),
            summary=f"{_label(component, 40)} errors for {_minutes(lasting)}",
            description=f"{_label(component, 40)} has been failing since {isoformat(since)}: "
                        f"{_label(record.get('detail') or '?', 300)}",
            labels={"component": _label(component, 40)},
            since=since,
        ))
    return out


def _pipeline_running(ws: Workset) -> bool:
    """The run step is running: the runner watches its tmux session and finishes the step within
    one runner.pipeline_poll_seconds of the session ending, so this is "the session lives"."""
    runs = [s for s in ws.steps if s.name == "run"]
    return bool(runs) and runs[-1].status == "running"


def rule_pipeline_stalled(ctx: _Context, cfg: Any) -> list[Observation]:
    out = []
    limit = timedelta(minutes=cfg.threshold)
    for ws in ctx.worksets(WorksetState.IN_PROGRESS):
        progress = ws.progress
        if progress is None or not _pipeline_running(ws):
            continue
        runs = [s for s in ws.steps if s.name == "run"]
        last = progress.last_progress_at or runs[-1].started_at
        if last is None:
            continue
        quiet = ctx.now - last
        if quiet > limit:
            where = (f"{progress.steps_done} of {progress.steps_total} steps"
                     if progress.steps_total else "no Snakemake progress in its log")
            out.append(Observation(
                subject=ws.workset_id, value=round(quiet.total_seconds() / 60, 1),
                summary=f"pipeline of {_label(ws.workset_id)} made no progress for "
                        f"{_minutes(quiet.total_seconds())} ({where})",
                description=f"Workset {_label(ws.workset_id, 300)}: its tmux session "
                            f"{_label(progress.session or '?', 80)} is alive but the log "
                            f"{_label(progress.log_path or '?', 200)} shows no finished step for "
                            f"{_minutes(quiet.total_seconds())} (limit {cfg.threshold:g} min; {where}). "
                            "Attach read-only from the detail screen to look.",
                labels={"workset_id": ws.workset_id, "priority": ws.priority.value, "state": ws.state.value},
                since=last + limit,
            ))
    return out


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number >= 0 else None


def rule_over_budget(ctx: _Context, cfg: Any) -> list[Observation]:
    out = []
    for ws in ctx.worksets(WorksetState.IN_PROGRESS):
        if ws.actual is None or ws.actual.cost_usd <= 0:
            continue
        work = (ws.metadata or {}).get("work") or {}
        budget = _float(work.get("budget")) if isinstance(work, dict) else None
        if budget is not None:
            limit, why = budget, f"its budget of ${budget:,.2f}"
        else:
            estimate = _float((ws.estimate or {}).get("cost_usd")) if isinstance(ws.estimate, dict) else None
            if not estimate:
                continue
            limit = estimate * cfg.estimate_factor
            why = f"{cfg.estimate_factor:g} × its estimate of ${estimate:,.2f}"
        cost = ws.actual.cost_usd
        if cost > limit:
            out.append(Observation(
                subject=ws.workset_id, value=round(cost, 2),
                summary=f"workset {_label(ws.workset_id)} has cost ${cost:,.2f}, beyond {why}",
                description=f"Workset {_label(ws.workset_id, 300)} on {_label(ws.cluster_name or '?', 80)} "
                            f"has used {ws.actual.vcpu_hours:,.1f} vCPU-hours costing ${cost:,.2f} "
                            f"(sacct, {ws.actual.jobs} jobs), beyond {why} (limit ${limit:,.2f}).",
                labels={"workset_id": ws.workset_id, "priority": ws.priority.value, "state": ws.state.value,
                        "cost_usd": f"{cost:.2f}", "limit_usd": f"{limit:.2f}"},
            ))
    return out


RuleFunction = Callable[[_Context, Any], list[Observation]]
RULES: dict[str, RuleFunction] = {
    "queue_depth": rule_queue_depth,
    "urgent_waiting": rule_urgent_waiting,
    "long_running": rule_long_running,
    "stale_lease": rule_stale_lease,
    "lock_failures": rule_lock_failures,
    "error_rate": rule_error_rate,
    "dead_lettered": rule_dead_lettered,
    "cluster_full": rule_cluster_full,
    "engine_heartbeat": rule_engine_heartbeat,
    "engine_overloaded": rule_engine_overloaded,
    "channel_failing": rule_channel_failing,
    "backend_errors": rule_backend_errors,
    "pipeline_stalled": rule_pipeline_stalled,
    "over_budget": rule_over_budget,
}


# ------------------------------------------------------------------------------------------------
# the evaluator
# ------------------------------------------------------------------------------------------------


def _alerts_settings(settings: Any) -> AlertsSettings:
    return settings.alerts if hasattr(settings, "alerts") else settings


class AlertEvaluator:
    """Runs the rules and moves alerts through their lifecycle. Call ``evaluate`` on a timer."""

    def __init__(self, settings: Settings, store: Store, *, clock: Clock | None = None,
                 notifier: Notifier | None = None, rules: dict[str, RuleFunction] | None = None,
                 owner_id: str | None = None, changes: ChangeReads | None = None) -> None:
        self.settings = settings
        self.cfg = _alerts_settings(settings)
        self.store = store
        self.changes = changes
        self.clock = clock or getattr(store, "clock", None) or SystemClock()
        self.notifier = notifier
        self.rules = dict(RULES if rules is None else rules)
        if owner_id is None:
            owner_id = getattr(settings, "effective_monitor_id", None) or "wsmon"
        self.owner_id = owner_id
        self._health_written: dict[str, tuple[bool, datetime]] = {}

    # -- engine-facing helpers --------------------------------------------------------------------
    def record_health(self, component: str, ok: bool, detail: str = "") -> None:
        """Like the module function, but writes only when the state flips or once a minute, so the
        engine can call it on every S3/DynamoDB call. Never raises."""
        now = self.clock.now()
        last = self._health_written.get(component)
        if last is not None and last[0] == ok and now - last[1] < timedelta(minutes=1):
            return
        try:
            record_health(self.store, component, ok, detail, clock=self.clock)
            self._health_written[component] = (ok, now)
        except Exception as exc:
            log.warning("health_write_failed", component=component, error=type(exc).__name__)

    def rule_settings(self, rule: str) -> AlertRuleSettings | None:
        return getattr(self.cfg, rule, None)

    def _keep_firing_for(self, rule_cfg: Any) -> timedelta:
        value = getattr(rule_cfg, "keep_firing_for_seconds", None)
        if value is None:
            value = self.cfg.keep_firing_for_seconds
        return timedelta(seconds=value)

    def _hold_lease(self) -> bool:
        seconds = max(90.0, 3 * self.cfg.evaluate_interval_seconds)
        try:
            return self.store.acquire_named_lease(EVALUATOR_LEASE, self.owner_id, seconds) is not None
        except NotImplementedError:
            return True
        except Exception as exc:
            log.warning("alert_lease_failed", error=type(exc).__name__)
            return False

    # -- evaluation -------------------------------------------------------------------------------
    def evaluate(self) -> list[Alert]:
        """One pass over every rule; returns the alerts whose state changed (new ones included)."""
        if not self.cfg.enabled:
            return []
        if not self._hold_lease():
            return []  # another engine evaluates; two would open duplicate alerts
        now = self.clock.now()
        ctx = _Context(self.store, self.settings, now, self.changes)
        active: dict[tuple[str, str], Alert] = {
            (a.rule, a.subject): a for a in self.store.list_alerts(limit=100_000)
        }
        silences = self.store.list_silences(active_at=now)
        changed: list[Alert] = []
        for name, rule in self.rules.items():
            rule_cfg = self.rule_settings(name)
            if rule_cfg is None or not rule_cfg.enabled:
                for key in [k for k in active if k[0] == name]:
                    self._apply(active.pop(key), now, silences, changed, resolve_reason="rule disabled")
                continue
            try:
                observations = self._group({o.subject: o for o in rule(ctx, rule_cfg)},
                                           {k[1] for k in active if k[0] == name}, name)
            except Exception as exc:
                # Unknown is not clear: leave this rule's alerts exactly as they are.
                log.error("alert_rule_failed", rule=name, error=f"{type(exc).__name__}: {exc}"[:300])
                for key in [k for k in active if k[0] == name]:
                    active.pop(key)
                continue
            for subject, obs in observations.items():
                existing = active.pop((name, subject), None)
                self._on_true(name, rule_cfg, obs, existing, now, silences, changed)
            for key in [k for k in active if k[0] == name]:
                self._on_clear(active.pop(key), rule_cfg, now, silences, changed)
        # alerts of rules that no longer exist (renamed, removed) would otherwise stay forever
        for alert in active.values():
            self._apply(alert, now, silences, changed, resolve_reason="rule no longer exists")
        return changed

    def _group(self, observations: dict[str, Observation], open_subjects: set[str],
               rule: str) -> dict[str, Observation]:
        """Cap the alerts one rule opens: subjects that already have an alert keep it; new ones
        get their own alert while there is room, the rest share one alert with subject "*"."""
        limit = self.cfg.max_alerts_per_rule
        own = {s: o for s, o in observations.items() if s in open_subjects and s != GROUP_SUBJECT}
        new = sorted(s for s in observations if s not in own and s != GROUP_SUBJECT)
        room = max(0, limit - len(own))
        for subject in new[:room]:
            own[subject] = observations[subject]
        rest = [observations[s] for s in new[room:]]
        if rest:
            names = ", ".join(_label(o.subject, 40) for o in rest[:5]) + (", …" if len(rest) > 5 else "")
            own[GROUP_SUBJECT] = Observation(
                subject=GROUP_SUBJECT, value=float(len(rest)),
                summary=f"{rule}: {len(rest)} more subject(s) ({names})",
                description=f"More than {limit} subjects of rule {rule} are in trouble at once; these "
                            f"{len(rest)} share this alert: "
                            + ", ".join(_label(o.subject, 80) for o in rest[:50])
                            + (" …" if len(rest) > 50 else "") + ".\nFirst: " + rest[0].summary,
                labels={"grouped": str(len(rest))},
                since=min((o.since for o in rest if o.since), default=None),
            )
        return own

    def _silenced(self, alert: Alert, silences: Iterable[Silence], now: datetime) -> bool:
        return any(s.matches(alert, now) for s in silences)

    def _on_true(self, rule: str, rule_cfg: Any, obs: Observation, alert: Alert | None,
                 now: datetime, silences: list[Silence], changed: list[Alert]) -> None:
        for_ = timedelta(seconds=rule_cfg.for_seconds)
        severity = Severity(rule_cfg.severity)
        if alert is None:
            since = min(now, obs.since) if obs.since else now
            alert = Alert(
                alert_id=uuid.uuid4().hex[:12], rule=rule, subject=obs.subject, severity=severity,
                state=AlertState.PENDING, summary=obs.summary, description=obs.description,
                value=obs.value, labels=obs.labels, pending_since=since, last_true_at=now, updated_at=now,
            )
            if now - since >= for_:
                alert = alert.model_copy(update={"state": AlertState.FIRING, "fired_at": now})
            self._write(alert, None, now, silences, changed, event="alert_firing"
                        if alert.state is AlertState.FIRING else None, state_changed=True)
            return
        update: dict[str, Any] = {}
        event: str | None = None
        state_changed = False
        if alert.cleared_at is not None:
            update["cleared_at"] = None
            if alert.state is AlertState.PENDING:
                # the wait for `for` starts again: a pending condition must hold continuously
                update["pending_since"] = now
        seen = (alert.summary, alert.description, alert.value, alert.severity)
        if seen != (obs.summary, obs.description, obs.value, severity):
            update.update(summary=obs.summary, description=obs.description, value=obs.value, severity=severity,
                          labels=obs.labels)
        pending_since = update.get("pending_since", alert.pending_since)
        if alert.state is AlertState.PENDING and now - pending_since >= for_:
            update.update(state=AlertState.FIRING, fired_at=now)
            event, state_changed = "alert_firing", True
        elif alert.state is AlertState.ACKNOWLEDGED:
            if alert.ack_expires_at is not None and now >= alert.ack_expires_at:
                update.update(state=AlertState.FIRING)
                event, state_changed = "alert_firing", True
            elif self._ack_unannounced(alert):
                event = "alert_acknowledged"
        elif alert.state is AlertState.FIRING and self._can_notify(alert, silences, now):
            if alert.last_notified_at is None:
                event = "alert_firing"  # never announced (silenced, or no notifier then)
            elif self.cfg.repeat_interval_seconds and \
                    now - alert.last_notified_at >= timedelta(seconds=self.cfg.repeat_interval_seconds):
                event = "alert_firing"
        if not update and event is None:
            if alert.last_true_at is None or now - alert.last_true_at >= TOUCH_INTERVAL:
                update["last_true_at"] = now
            else:
                return
        update.setdefault("last_true_at", now)
        self._write(alert.model_copy(update=update), alert, now, silences, changed, event=event,
                    state_changed=state_changed)

    def _can_notify(self, alert: Alert, silences: Iterable[Silence], now: datetime) -> bool:
        return self.notifier is not None and not self._silenced(alert, silences, now)

    def _ack_unannounced(self, alert: Alert) -> bool:
        # Acks come from the CLI or the dashboard, which have no notifier: announce them here, but
        # only for alerts whose firing was announced (nobody needs "acknowledged" for a silent one).
        return (alert.acknowledged_at is not None and alert.last_notified_at is not None
                and alert.acknowledged_at >= alert.last_notified_at)

    def _on_clear(self, alert: Alert, rule_cfg: Any, now: datetime, silences: list[Silence],
                  changed: list[Alert]) -> None:
        if alert.cleared_at is None:
            event = "alert_acknowledged" if (alert.state is AlertState.ACKNOWLEDGED
                                             and self._ack_unannounced(alert)) else None
            self._write(alert.model_copy(update={"cleared_at": now}), alert, now, silences, changed,
                        event=event)
            return
        if now - alert.cleared_at >= self._keep_firing_for(rule_cfg):
            self._apply(alert, now, silences, changed, resolve_reason="condition cleared")
        elif alert.state is AlertState.ACKNOWLEDGED and self._ack_unannounced(alert):
            self._write(alert.model_copy(), alert, now, silences, changed, event="alert_acknowledged")

    def _apply(self, alert: Alert, now: datetime, silences: list[Silence], changed: list[Alert], *,
               resolve_reason: str) -> None:
        """Resolve ``alert``; announce it only if its firing was announced."""
        announced = alert.state is not AlertState.PENDING and alert.last_notified_at is not None
        resolved = alert.model_copy(update={
            "state": AlertState.RESOLVED, "resolved_at": now, "resolved_by": self.owner_id,
            "cleared_at": alert.cleared_at or now,
        })
        if resolve_reason and resolve_reason != "condition cleared":
            resolved = resolved.model_copy(update={
                "description": (alert.description + f"\n(resolved: {resolve_reason})").strip()})
        self._write(resolved, alert, now, silences, changed,
                    event="alert_resolved" if announced else None, state_changed=True)

    def _write(self, new: Alert, old: Alert | None, now: datetime, silences: list[Silence],
               changed: list[Alert], *, event: str | None, state_changed: bool = False) -> None:
        notify = event is not None and self._can_notify(new, silences, now)
        if event == "alert_acknowledged" and new.acknowledged_at is not None:
            # handled even when it could not be announced (or it would be retried every pass);
            # strictly after the ack, so an ack and a pass in the same instant announce once
            after_ack = new.acknowledged_at + timedelta(microseconds=1)
            new = new.model_copy(update={"last_notified_at": max(now, after_ack)})
        elif notify:
            new = new.model_copy(update={"last_notified_at": now})
        new = new.model_copy(update={"updated_at": now})
        try:
            stored = self.store.put_alert(new, expected_updated_at=old.updated_at if old else None)
        except Exception as exc:
            # Most likely an operator acknowledged it meanwhile: their write wins, we look again
            # next pass.
            log.info("alert_write_skipped", rule=new.rule, alert_id=new.alert_id, error=type(exc).__name__)
            return
        if state_changed or old is None:
            changed.append(stored)
            log.info("alert_state", rule=stored.rule, alert_id=stored.alert_id, state=stored.state.value,
                     subject=_label(stored.subject, 120), severity=stored.severity.value)
        if notify and event is not None:
            try:
                self.notifier.emit(event, alert=stored)
            except Exception as exc:
                log.error("alert_notify_failed", alert_id=stored.alert_id, error=type(exc).__name__)


__all__ = ["AlertEvaluator", "Observation", "RULES", "record_health", "HEALTH_NAMESPACE"]
