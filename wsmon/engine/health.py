"""Is wsmon itself healthy? One judgement for ``wsmon health`` (Nagios exit codes), ``monitors
--check`` and the dashboard header; and the pruning of monitors that are gone for good.

Levels follow the Nagios convention: 0 OK, 1 WARNING (degraded), 2 CRITICAL.

* store: cannot be read → CRITICAL (nothing else can be judged).
* engines: none alive → CRITICAL (nobody polls, schedules or evaluates alerts: the one failure
  the engine's own alerts cannot report); some stale beside live ones → WARNING.
* S3 sources: one that cannot be listed → CRITICAL (new worksets are missed).
* jobs: a live engine's job skipped or late within the last 10 minutes (its heartbeat carries the
  figures) → WARNING.
* alerts: any firing critical → CRITICAL, firing warning → WARNING.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from wsmon.core.models import AlertState, MonitorInfo
from wsmon.core.textsafe import strip_control
from wsmon.engine.store import StoreError

if TYPE_CHECKING:
    from wsmon.config.settings import Settings
    from wsmon.engine.store import Store

log = structlog.get_logger(__name__)

OK, WARNING, CRITICAL = 0, 1, 2
LEVEL_NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL"}
HEARTBEAT_RULE = "engine_heartbeat"


def engine_stale_after(settings: Settings) -> timedelta:
    """A monitor not seen for ``engine_heartbeat.threshold`` heartbeat intervals (plus the clock
    skew) is presumed gone: the same judgement as the ``engine_heartbeat`` alert."""
    rule = settings.alerts.engine_heartbeat
    interval = rule.interval_seconds or settings.store.heartbeat_seconds
    return timedelta(seconds=rule.threshold * interval + settings.store.max_clock_skew_seconds)


def ago(span: timedelta) -> str:
    seconds = max(0, int(span.total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
    return f"{seconds // 86400}d"


@dataclass(frozen=True)
class Check:
    name: str
    level: int
    text: str


@dataclass
class HealthReport:
    checks: list[Check] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def level(self) -> int:
        return max((c.level for c in self.checks), default=OK)

    def line(self) -> str:
        """One line, Nagios style: ``WSMON CRITICAL - engines: ...; store: ok; ...``."""
        return (f"WSMON {LEVEL_NAMES[self.level]} - "
                + "; ".join(strip_control(c.text) for c in self.checks))

    def to_json(self) -> dict[str, Any]:
        return {"status": LEVEL_NAMES[self.level].lower(), "exit_code": self.level,
                "summary": self.line(),
                "checks": [{"name": c.name, "status": LEVEL_NAMES[c.level].lower(), "detail": c.text}
                           for c in self.checks],
                **self.figures}


@dataclass(frozen=True)
class EngineLiveness:
    """The engines as the store sees them: alive, stale, and when the last one was heard from."""

    alive: list[MonitorInfo]
    stale: list[MonitorInfo]
    last_seen: datetime | None

    @classmethod
    def of(cls, monitors: Iterable[MonitorInfo], now: datetime,
           stale_after: timedelta) -> EngineLiveness:
        engines = [m for m in monitors if m.role == "engine"]
        return cls(alive=[m for m in engines if now - m.last_seen <= stale_after],
                   stale=[m for m in engines if now - m.last_seen > stale_after],
                   last_seen=max((m.last_seen for m in engines), default=None))

    def none_alive_text(self, now: datetime) -> str | None:
        """The loud sentence when no engine is alive anywhere (None when one is)."""
        if self.alive:
            return None
        if self.last_seen is None:
            return "NO ENGINE has ever reported to this store"
        return f"NO ENGINE ALIVE anywhere: last heartbeat {ago(now - self.last_seen)} ago"


def _engine_check(live: EngineLiveness, now: datetime) -> Check:
    counts = f"{len(live.alive)} alive, {len(live.stale)} stale"
    loud = live.none_alive_text(now)
    if loud:
        return Check("engines", CRITICAL, f"engines: {counts}: {loud}")
    if live.stale:
        names = ", ".join(m.monitor_id for m in live.stale[:3])
        return Check("engines", WARNING, f"engines: {counts} ({names})")
    return Check("engines", OK, f"engines: {counts}")


def _job_check(live: EngineLiveness) -> tuple[Check, dict[str, Any]]:
    worst: tuple[str, str, float, float] | None = None  # monitor, job, lag, interval
    overruns: dict[str, int] = {}
    for m in live.alive:
        for job, figures in ((m.details or {}).get("jobs") or {}).items():
            if not isinstance(figures, dict):
                continue
            lag = float(figures.get("max_lag_seconds") or 0.0)
            interval = float(figures.get("interval_seconds") or 0.0)
            if worst is None or lag > worst[2]:
                worst = (m.monitor_id, job, lag, interval)
            recent = int(figures.get("recent_overruns") or 0)
            if recent:
                overruns[f"{m.monitor_id}/{job}"] = recent
    figures_out = {"oldest_job_lag_seconds": worst[2] if worst else None,
                   "oldest_job_lag_job": f"{worst[0]}/{worst[1]}" if worst else None,
                   "skipped_job_runs_10m": sum(overruns.values())}
    if worst is None:
        return Check("jobs", OK, "jobs: no figures yet"), figures_out
    text = f"worst job lag {worst[1]} {worst[2]:.1f}s"
    if overruns:
        listed = ", ".join(f"{k} {v}" for k, v in sorted(overruns.items(), key=lambda kv: -kv[1])[:3])
        return Check("jobs", WARNING, f"jobs: {text}, skipped runs in 10 min: {listed}"), figures_out
    if worst[3] and worst[2] > worst[3]:
        return Check("jobs", WARNING, f"jobs: {text} (more than its {worst[3]:g}s interval)"), figures_out
    return Check("jobs", OK, f"jobs: {text}, no skipped runs"), figures_out


def _source_check(settings: Settings, s3_client: Any) -> Check:
    sources = settings.discovery.sources
    if not sources:
        return Check("s3", OK, "s3: no sources configured")
    failed = []
    for source in sources:
        try:
            s3_client.list_objects_v2(Bucket=source.bucket, Prefix=source.prefix, MaxKeys=1)
        except Exception as exc:
            from wsmon.core.aws import describe_client_error

            failed.append(f"s3://{source.bucket}/{source.prefix} ({describe_client_error(exc)[:120]})")
    if failed:
        return Check("s3", CRITICAL, f"s3: {len(sources) - len(failed)}/{len(sources)} listable, "
                                     f"cannot list {', '.join(failed[:2])}")
    return Check("s3", OK, f"s3: {len(sources)}/{len(sources)} listable")


def _alert_check(store: Store) -> tuple[Check, dict[str, int]]:
    counts = {"critical": 0, "warning": 0, "info": 0}
    for alert in store.list_alerts(states=[AlertState.FIRING]):
        key = getattr(alert.severity, "value", str(alert.severity))
        counts[key] = counts.get(key, 0) + 1
    text = f"alerts firing: {counts['critical']} critical, {counts['warning']} warning"
    level = CRITICAL if counts["critical"] else WARNING if counts["warning"] else OK
    return Check("alerts", level, text), counts


def check_health(settings: Settings, open_store: Callable[[], Store], *, now: Callable[[], datetime],
                 s3_client: Callable[[], Any] | None = None) -> HealthReport:
    """The whole judgement. ``open_store`` and ``s3_client`` are called here, so a store that
    cannot even be opened is reported like one that cannot be read."""
    report = HealthReport()
    try:
        store = open_store()
        monitors = store.list_monitors()
    except Exception as exc:  # StoreError, a missing table, a refused connection: all "unreachable"
        report.checks.append(Check("store", CRITICAL,
                                   f"store: unreachable ({strip_control(str(exc))[:200]})"))
        return report
    try:
        at = now()
        live = EngineLiveness.of(monitors, at, engine_stale_after(settings))
        report.checks.append(_engine_check(live, at))
        report.figures["engines"] = {"alive": [m.monitor_id for m in live.alive],
                                     "stale": [m.monitor_id for m in live.stale],
                                     "seconds_since_last_heartbeat": (
                                         round((at - live.last_seen).total_seconds(), 1)
                                         if live.last_seen else None)}
        report.checks.append(Check("store", OK, "store: ok"))
        if s3_client is not None:
            report.checks.append(_source_check(settings, s3_client()))
        job_check, job_figures = _job_check(live)
        report.checks.append(job_check)
        report.figures.update(job_figures)
        try:
            alert_check, counts = _alert_check(store)
        except StoreError as exc:
            alert_check, counts = Check("alerts", CRITICAL, f"alerts: unreadable ({exc})"), {}
        report.checks.append(alert_check)
        report.figures["alerts_firing"] = counts
    finally:
        try:
            store.close()
        except Exception:
            pass
    return report


# -- stale monitors -------------------------------------------------------------------------------

def forget_monitor(store: Store, monitor: MonitorInfo, *, actor: str, reason: str,
                   now: datetime) -> list[str]:
    """Remove ``monitor`` from the store and resolve its open heartbeat alert at once (the rule
    would only notice after its keep-firing time). Returns the ids of the alerts resolved."""
    store.remove_monitor(monitor.monitor_id)
    resolved = []
    alert = store.find_active_alert(HEARTBEAT_RULE, monitor.monitor_id)
    if alert is not None:
        store.resolve_alert(alert.alert_id, actor, reason)
        resolved.append(alert.alert_id)
    return resolved


class MonitorPruner:
    """Monitors silent for longer than ``store.monitor_prune_hours`` are removed (with an event),
    at most once a minute; their heartbeat alerts resolve with them."""

    EVERY = timedelta(minutes=1)

    def __init__(self, settings: Settings, store: Store, *, actor: str,
                 emit: Callable[..., Any] | None = None) -> None:
        self.settings, self.store, self.actor, self.emit = settings, store, actor, emit
        self._last: datetime | None = None

    @property
    def prune_after(self) -> timedelta:
        return timedelta(hours=self.settings.store.monitor_prune_hours)

    def prune(self, now: datetime) -> list[str]:
        if self._last is not None and now - self._last < self.EVERY:
            return []
        self._last = now
        pruned = []
        for m in self.store.list_monitors():
            silent = now - m.last_seen
            if m.monitor_id == self.actor or silent <= self.prune_after:
                continue
            reason = (f"pruned: no heartbeat for {ago(silent)} "
                      f"(store.monitor_prune_hours = {self.settings.store.monitor_prune_hours:g})")
            resolved = forget_monitor(self.store, m, actor=self.actor, reason=reason, now=now)
            pruned.append(m.monitor_id)
            log.warning("monitor_pruned", monitor=strip_control(m.monitor_id),
                        host=strip_control(m.host), last_seen=m.last_seen.isoformat(),
                        alerts_resolved=resolved)
            if self.emit is not None:
                self.emit("monitor_pruned", title=f"Monitor pruned: {m.monitor_id}",
                          severity="warning", text=reason, monitor_id=m.monitor_id, host=m.host,
                          last_seen=m.last_seen)
        return pruned
