"""The engine: the jobs that turn the wheel, wired together.

Jobs (APScheduler ``BackgroundScheduler``; each ``max_instances=1``, ``coalesce=True``, with its
own ``misfire_grace_time``; a job that raises logs and runs again next tick):

* poll       S3 discovery, only by the holder of the named lease ``poll:<bucket>/<prefix>`` (one
             engine polls a source; the others take over within a few polls if it dies)
* schedule   cluster snapshot → ranking/placement → claim (one conditional write) → the workset's
             attempt runs in a bounded thread pool, so a poll never waits for a pipeline
* heartbeat  monitor heartbeat, and lease renewal for every workset this engine drives; a
             ``LeaseLost`` stops that workset's work at once
* clusters   cluster discovery (pcluster) and Slurm usage, on their own interval
* sweep      leases expired by more than the clock skew go back to ready (or are re-adopted when
             they are this monitor's own); ``retrying`` worksets whose ``retry_after`` passed go
             back to ready; once an hour, delivered/dead notifications and resolved alerts past
             their retention are deleted (metric history prunes itself in the metrics job)
* metrics, alerts, outbox: flush CloudWatch metrics and sample history, evaluate alert rules,
  deliver notifications
* progress   the pipeline log of every workset this engine drives (only the bytes added), its
             ETA, and sacct for its Slurm jobs' actual usage and cost (engine/progress)

Restart safety: a new engine with the same monitor id first re-adopts the worksets its previous
process held (``adopt_lock`` bumps the fence, so the old process, if it still lives, is fenced
out) and keeps watching their tmux pipelines instead of starting them again.

One workset attempt lives in ``attempt.py``, the sweep (with retention and force-release notices)
in ``sweep.py``, and the process entry points (``run_headless``, ``run_once``) in ``process.py``.
"""

from __future__ import annotations

import os
import socket
import threading
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from wsmon import __version__
from wsmon.core.clock import Clock, SystemClock
from wsmon.engine.attempt import drive_attempt
from wsmon.engine.clusters import ClusterRegistry
from wsmon.engine.progress.tracker import ProgressTracker
from wsmon.engine.recent_changes import RecentChanges
from wsmon.engine.retry import RetryPolicy
from wsmon.engine.runner import BaseRunner, Job, make_runner
from wsmon.engine.scheduler import SchedulingPolicy, placeable, plan
from wsmon.engine.store import LeaseLost, StateConflict, StoreError, WorksetNotFound
from wsmon.engine.store.from_settings import open_store_from_settings
from wsmon.engine.health import MonitorPruner
from wsmon.engine.sweep import Sweeper, sweep_interval_seconds
from wsmon.engine.watchdog import JobHealth, SystemdNotifier
from wsmon.core.models import Lease, Workset, WorksetState
from wsmon.core.textsafe import strip_control

if TYPE_CHECKING:
    from wsmon.config.settings import Settings
    from wsmon.engine.store import Store

log = structlog.get_logger(__name__)

S = WorksetState
REASON_WRITES_PER_PASS = 500  # waiting reasons written per scheduling pass (bounded store cost)


class Engine:
    def __init__(self, settings: Settings, store: Store | None = None, *, clock: Clock | None = None,
                 runner: BaseRunner | None = None, s3_client: Any = None,
                 monitor_id: str | None = None) -> None:
        self.settings = settings
        self.monitor_id = monitor_id or settings.effective_monitor_id
        self._own_store = store is None
        if store is None:
            store = open_store_from_settings(settings, clock=clock)
        self.store = store
        self.clock: Clock = clock or getattr(store, "clock", None) or SystemClock()
        self.runner = runner or make_runner(settings, clock=self.clock)
        self.retry = RetryPolicy(settings.retry)
        self.clusters = ClusterRegistry(settings, store, clock=self.clock, owner_id=self.monitor_id)
        self.policy = SchedulingPolicy.from_settings(settings)
        self._s3_client = s3_client
        self._sources: list[Any] | None = None
        self._sources_lock = threading.Lock()
        self._events: Any = None  # EventDiscovery (engine/s3/events.py), made with the sources
        # sources whose listing failed in the last poll ({"source", "code", "message"})
        self.last_poll_failures: list[dict[str, str]] = []
        # cumulative since start, published in the heartbeat for the API's /metrics
        self.poll_counts: Counter[str] = Counter()
        self._pool = ThreadPoolExecutor(max_workers=settings.runner.max_parallel_worksets,
                                        thread_name_prefix="wsmon-ws")
        self._jobs: dict[str, tuple[Job, Future]] = {}
        self._jobs_lock = threading.Lock()
        self._claiming = True
        self._scheduler: Any = None
        self._started_at = self.clock.now()
        self._adopted = False
        self._no_cluster_said = False
        # set by stop(): every S3Source of this engine ends a poll in progress at its next check
        self._stop_polling = threading.Event()
        self._stopped = False
        self.host = socket.gethostname()
        # one shared read of recent changes (and queue counts) per tick for the poll, sweep,
        # alerts and metrics, instead of one store read each
        self.recent_changes = RecentChanges.from_settings(settings, store, clock=self.clock)
        self.metrics, self.notifier, self.alerts = self._wire_observability()
        self.sweeper = Sweeper(self)
        self.systemd = SystemdNotifier()
        self.monitor_pruner = MonitorPruner(settings, store, actor=self.monitor_id,
                                            emit=lambda event, **details: self._emit(event, **details))
        self.job_health = JobHealth()
        self.job_health.on_overrun = lambda job, kind: self._incr("EngineJobOverruns", Job=job)
        self.progress = ProgressTracker(settings, store, self.runner, actor=self.monitor_id,
                                        clock=self.clock, metrics=self.metrics)

    # -- wiring ---------------------------------------------------------------------------
    def _wire_observability(self) -> tuple[Any, Any, Any]:
        from wsmon.engine.alerts import AlertEvaluator
        from wsmon.engine.metrics import Metrics
        from wsmon.engine.notify import Notifier

        metrics = Metrics(self.settings, self.store, clock=self.clock, monitor_id=self.monitor_id,
                          cloudwatch_client=None, changes=self.recent_changes)
        notifier = Notifier(self.settings, self.store, clock=self.clock)
        alerts = AlertEvaluator(self.settings, self.store, clock=self.clock, notifier=notifier,
                                owner_id=self.monitor_id, changes=self.recent_changes)
        return metrics, notifier, alerts

    def _emit(self, event_type: str, workset: Workset | None = None, **details: Any) -> list[Any]:
        try:
            return self.notifier.emit(event_type, workset=workset, **details)
        except Exception as exc:  # a notification problem never stops a workset
            log.warning("notify_emit_failed", event_type=event_type, error=type(exc).__name__)
            return []

    def _incr(self, name: str, value: float = 1.0, **dims: Any) -> None:
        try:
            self.metrics.incr(name, value, **dims)
        except Exception as exc:
            log.warning("metric_failed", metric=name, error=type(exc).__name__)

    def _health(self, component: str, ok: bool, detail: str = "") -> None:
        try:
            self.alerts.record_health(component, ok, detail)
        except Exception:  # health reporting is best effort by design
            pass

    def _ensure_sources(self) -> list[tuple[str, Any]]:
        """The sources, made once: the poll, the event consumer and the mirror run on different
        threads, and two sets of sources would mean two ETag caches and two stop signals."""
        with self._sources_lock:
            if self._sources is None:
                self._sources = self._make_sources()
            return self._sources

    def _make_sources(self) -> list[tuple[str, Any]]:
        """One ``S3Source`` and one poll lease per source. Sources that share a sentinel index
        location are polled together (their index files list both), under one lease."""
        from wsmon.engine.s3 import S3Source, normalize_prefix

        disc = self.settings.discovery
        groups: dict[tuple[str, str], list[Any]] = {}
        for source in disc.sources:
            prefix = normalize_prefix(source.prefix)
            index = normalize_prefix(disc.sentinel_index_prefix or prefix)
            groups.setdefault((source.bucket, index), []).append(source)
        out = []
        for (bucket, _), members in groups.items():
            name = "poll:" + "+".join(f"{bucket}/{normalize_prefix(m.prefix)}" for m in members)
            narrowed = self.settings.model_copy(update={
                "discovery": disc.model_copy(update={"sources": members})})
            out.append((name, S3Source(narrowed, self.store, clock=self.clock,
                                       s3_client=self._s3_client, monitor_id=self.monitor_id,
                                       stop=self._stop_polling, changes=self.recent_changes)))
        return out

    def _mirror(self, workset: Workset) -> None:
        """Write the sentinel of the engine's own transition now (each poll also reconciles)."""
        if not self.settings.discovery.write_sentinels or not self.settings.discovery.sources:
            return
        try:
            sources = self._ensure_sources()
            if sources:
                sources[0][1].mirror_state(workset)
        except Exception as exc:  # the next poll writes it; the store is the truth
            log.warning("sentinel_write_deferred", workset=strip_control(workset.workset_id),
                        error=strip_control(str(exc))[:200])

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Adopt what this monitor held before a restart, then start the jobs."""
        from apscheduler.schedulers.background import BackgroundScheduler

        self.heartbeat()
        self.adopt_own_leases()
        s = self.settings
        scheduler = BackgroundScheduler(timezone="UTC", job_defaults={
            "max_instances": 1, "coalesce": True})
        now = datetime.now().astimezone()
        jobs = [
            ("poll", self.poll, s.discovery.poll_interval_seconds),
            ("schedule", self.schedule_pass, s.scheduler.interval_seconds),
            # under a systemd watchdog the heartbeat (which pings it) beats at least 3x per WatchdogSec
            ("heartbeat", self.heartbeat, min(s.store.heartbeat_seconds,
                                              self.systemd.ping_interval or s.store.heartbeat_seconds)),
            ("clusters", lambda: self.clusters.refresh(force=True),
             s.clusters.refresh_interval_seconds),
            ("sweep", self.sweep, sweep_interval_seconds(s)),
            ("metrics", self.flush_metrics, s.metrics.flush_interval_seconds),
            ("alerts", self.evaluate_alerts, s.alerts.evaluate_interval_seconds),
            ("outbox", self.deliver_notifications, s.notify.deliver_interval_seconds),
            ("progress", self.follow_progress, s.progress.interval_seconds),
        ]
        for name, fn, seconds in jobs:
            self.job_health.add_job(name, seconds)
            scheduler.add_job(self._guard(name, fn), "interval", seconds=seconds, id=name,
                              name=name, next_run_time=now, misfire_grace_time=max(1, int(seconds)))
        self.job_health.attach(scheduler)
        # made before the jobs start, so the poll job and the consumers share one
        events = self._event_discovery() if s.discovery.sources else None
        scheduler.start()
        self._scheduler = scheduler
        self.systemd.ready(f"engine {self.monitor_id}: {len(jobs)} jobs scheduled")
        if events is not None and events.enabled:
            events.start()  # long-polls in its own threads, not a job tick
        log.info("engine_started", monitor_id=self.monitor_id, store=self.store.url,
                 runner=self.runner.kind, sources=len(s.discovery.sources))

    def _guard(self, name: str, fn: Any) -> Any:
        def job() -> None:
            began = self.clock.monotonic()
            try:
                fn()
            except StoreError as exc:
                self._health("store", False, str(exc))
                log.error("job_failed", job=name, error=strip_control(str(exc)))
            except Exception as exc:
                log.exception("job_failed", job=name, error=strip_control(str(exc)))
            finally:
                self.job_health.finished(name, self.clock.monotonic() - began)
                lag = self.job_health.summary().get(name, {}).get("lag_seconds")
                if lag is not None:
                    try:
                        self.metrics.observe("EngineJobLag", lag, Job=name)
                    except Exception:  # figures are best effort
                        pass
        job.__name__ = f"wsmon_{name}"
        return job

    def stop(self, grace: float | None = None) -> None:
        """Stop claiming; let short steps finish within ``grace``; leave pipelines running in
        tmux for re-adoption; say goodbye in the store."""
        grace = self.settings.runner.shutdown_grace_seconds if grace is None else grace
        if self._stopped:
            return
        self._stopped = True
        self._claiming = False
        self.systemd.stopping(f"engine {self.monitor_id} stopping")
        self._stop_polling.set()  # a poll in progress ends soon instead of holding shutdown
        if self._events is not None:
            self._events.stop()
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            for job_id in ("poll", "schedule", "sweep", "alerts", "clusters"):
                try:
                    scheduler.remove_job(job_id)
                except Exception:
                    pass
        jobs = self._snapshot_jobs()
        for job, _ in jobs:
            job.detach.set()
        futures = [f for _, f in jobs]
        _, pending = wait_futures(futures, timeout=grace)
        if pending:
            for job, future in jobs:
                if future in pending:
                    job.stop("engine shutting down")
            wait_futures(pending, timeout=self.settings.runner.kill_grace_seconds + 15)
        if scheduler is not None:
            scheduler.shutdown(wait=True)
        self._pool.shutdown(wait=False, cancel_futures=True)
        for step in (self.metrics.flush, self.metrics.close):
            try:
                step()
            except Exception as exc:
                log.warning("metrics_close_failed", error=type(exc).__name__)
        try:
            for name, _ in self._sources or []:
                held = self.store.get_named_lease(name)
                if held is not None and held.owner_id == self.monitor_id:
                    self.store.release_named_lease(held)  # another engine polls right away
            self.store.remove_monitor(self.monitor_id)
        except StoreError as exc:
            log.warning("monitor_goodbye_failed", error=strip_control(str(exc)))
        detached = [j.workset_id for j, f in jobs
                    if f.done() and not f.cancelled() and f.exception() is None
                    and f.result() == "detached"]
        if self._own_store:
            self.store.close()
        log.info("engine_stopped", monitor_id=self.monitor_id, pipelines_left_running=detached,
                 not_finished=[j.workset_id for j, f in jobs if not f.done()])

    # -- one cycle (--once, tests) ------------------------------------------------------
    def run_cycle(self, *, wait: bool = False, timeout: float | None = None) -> dict[str, Any]:
        """Heartbeat, poll, sweep, schedule; with ``wait`` also wait for what was started."""
        if not self._adopted:
            self.adopt_own_leases()
        self.heartbeat()
        polled = self.poll()
        self.sweep()
        started = self.schedule_pass()
        summary = {"polled": polled, "started": started,
                   "source_failures": list(self.last_poll_failures)}
        if wait:
            summary["finished"] = self.wait_idle(timeout)
        return summary

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every workset attempt this engine drives has ended (or ``timeout``)."""
        futures = [f for _, f in self._snapshot_jobs()]
        _, pending = wait_futures(futures, timeout=timeout)
        return not pending

    def _snapshot_jobs(self) -> list[tuple[Job, Future]]:
        with self._jobs_lock:
            return list(self._jobs.values())

    @property
    def active_worksets(self) -> list[str]:
        with self._jobs_lock:
            return list(self._jobs)

    # -- poll -----------------------------------------------------------------------------
    def poll(self) -> list[str]:
        """Poll every source this engine holds the poll lease for; returns those polled.

        Sources that could not be listed are kept in ``last_poll_failures``."""
        self.last_poll_failures = []
        if not self._claiming or not self.settings.discovery.sources:
            return []
        self._ensure_sources()
        lease_seconds = max(30.0, 3 * self.settings.discovery.poll_interval_seconds)
        events = self._event_discovery() if self._event_discovery().enabled else None
        polled = []
        for name, source in self._sources:
            if self.store.acquire_named_lease(name, self.monitor_id, lease_seconds) is None:
                continue
            if events is not None and not events.full_poll_due(name):
                continue  # its events keep it current; the reconcile pass runs on its schedule
            self.poll_counts["polls"] += 1
            try:
                report = source.poll()
            except StoreError:
                raise
            except Exception as exc:
                self.poll_counts["errors"] += 1
                self._health("s3", False, str(exc))
                log.error("poll_failed", source=name, error=strip_control(str(exc)))
                self.last_poll_failures.append({"source": name, "code": type(exc).__name__,
                                                "message": strip_control(str(exc))})
                continue
            self.last_poll_failures.extend(e for e in report.errors if "source" in e)
            self.poll_counts["requests"] += report.request_total
            self.poll_counts["errors"] += len(report.errors)
            self._health("s3", not report.errors,
                         "; ".join(str(e) for e in report.errors[:3]) if report.errors else "")
            self._announce(report)
            if events is not None:
                events.full_poll_done(name)
            polled.append(name)
            log.info("polled", source=name, monitor_id=self.monitor_id,
                     registered=len(report.registered), requests=report.request_total)
        return polled

    def _announce(self, report: Any) -> None:
        """Notifications for what a poll or a batch of S3 events registered or refused."""
        for wid in report.registered:
            self._emit("registered", self.store.get_workset(wid))
        for bad in report.invalid:
            self._emit("validation_failed", self.store.get_workset(bad["workset_id"]),
                       error_code=bad.get("code"))

    def _event_discovery(self) -> Any:
        """The S3 event consumers (engine/s3/events.py); none without an events_queue."""
        if self._events is None:
            from wsmon.engine.s3.events import EventDiscovery

            self._ensure_sources()
            self._events = EventDiscovery(self.settings, self.store, self._sources,
                                          clock=self.clock, monitor_id=self.monitor_id,
                                          health=self._health, on_report=self._announce)
        return self._events

    # -- schedule -------------------------------------------------------------------------
    def _free_local_slots(self) -> int:
        with self._jobs_lock:
            return self.settings.runner.max_parallel_worksets - len(self._jobs)

    def _report_no_cluster(self, ready: list[Workset], capacities: list[Any]) -> None:
        """Ready work and not one cluster to place it on: say so once in the log, and keep the
        "clusters" health failing (the backend_errors alert fires after its for_seconds)."""
        stuck = bool(ready) and not capacities
        if stuck:
            detail = (f"{len(ready)} ready workset(s) wait: no cluster is configured "
                      "(clusters.static) or discovered (pcluster)")
            if not self._no_cluster_said:
                log.warning("no_cluster", ready=len(ready), detail=detail,
                            hint="declare clusters.static or make pcluster list the cluster")
            self._health("clusters", False, detail)
        elif self._no_cluster_said:
            log.info("cluster_available", clusters=len(capacities))
            self._health("clusters", True)
        self._no_cluster_said = stuck

    def schedule_pass(self) -> list[str]:
        """Rank and place ready worksets, claim what this engine can run; returns claimed ids."""
        if not self._claiming:
            return []
        now = self.clock.now()
        if self._scheduler is None or not self.clusters.has_snapshot:
            # under the service the "clusters" job refreshes, so a slow pcluster never holds
            # up a scheduling pass
            self.clusters.refresh()
        running = [*self.store.iter_worksets(state=S.LOCKED),
                   *self.store.iter_worksets(state=S.IN_PROGRESS)]
        backoff = timedelta(seconds=self.settings.discovery.ready_lock_backoff_seconds)
        ready = placeable(self.store.iter_worksets(state=S.READY), now, backoff)
        self._health("store", True)
        capacities = self.clusters.capacities(running)  # also publishes them for the dashboard
        self._report_no_cluster(ready, capacities)
        if not ready:
            return []
        decisions = plan(ready, running, capacities, policy=self.policy, now=now,
                         default_az=self.settings.clusters.preferred_availability_zone)
        by_id = {ws.workset_id: ws for ws in ready}
        claimed: list[str] = []
        reason_writes = 0
        free = self._free_local_slots()
        for decision in decisions:
            ws = by_id[decision.workset_id]
            if decision.placed and free > 0 and self._claiming:
                lease = self.store.acquire_lock(ws.workset_id, self.monitor_id,
                                                self.settings.store.lease_seconds)
                if lease is None:
                    self._incr("WorksetLockFailures")
                    continue
                self._incr("WorksetLockAcquisitions")
                self._incr("WorksetStateTransitions", State=S.LOCKED.value)
                free -= 1
                claimed.append(ws.workset_id)
                self._submit(Job(ws.workset_id, lease), cluster=decision.cluster_name,
                             reason=decision.reason)
                continue
            reason = decision.reason if not decision.placed else (
                "waiting: this engine is busy; " + decision.reason)
            if ws.schedule_reason != reason and reason_writes < REASON_WRITES_PER_PASS:
                reason_writes += 1
                try:
                    self.store.update_fields(ws.workset_id, actor=self.monitor_id,
                                             expected_state=S.READY, schedule_reason=reason)
                except (StateConflict, WorksetNotFound):
                    pass
        if not claimed and any(not d.placed and not d.unschedulable for d in decisions):
            waiting = next(d for d in decisions if not d.placed and not d.unschedulable)
            self.clusters.maybe_create_cluster(waiting.reason)
        return claimed

    def _submit(self, job: Job, *, cluster: str | None, reason: str, adopted: bool = False) -> None:
        with self._jobs_lock:
            future = self._pool.submit(self._drive, job, cluster, reason, adopted)
            self._jobs[job.workset_id] = (job, future)

    # -- one workset attempt (engine/attempt.py) --------------------------------------------
    def _drive(self, job: Job, cluster: str | None, reason: str, adopted: bool) -> str:
        try:
            return drive_attempt(self, job, cluster, reason, adopted)
        finally:
            with self._jobs_lock:
                self._jobs.pop(job.workset_id, None)

    def _primary_source(self) -> Any:
        """The S3Source an attempt downloads its workset files through."""
        return self._ensure_sources()[0][1]

    # -- heartbeat ------------------------------------------------------------------------
    def heartbeat(self) -> None:
        """Renew the leases of every workset this engine drives, then record the heartbeat."""
        for job, future in self._snapshot_jobs():
            if future.done():
                continue
            try:
                job.set_lease(self.store.renew_lock(job.get_lease(), self.settings.store.lease_seconds))
            except LeaseLost as exc:
                if self._finished_by_us(job.workset_id):
                    # the job's own last transition ended the lease a moment before its thread
                    # returned; nothing was taken from us
                    log.debug("lease_ended_by_own_transition", workset=job.workset_id)
                    continue
                log.warning("lease_lost", workset=job.workset_id, detail=strip_control(str(exc)))
                job.stop("lease lost: another holder or an operator took it")
            except StoreError as exc:
                # not fatal yet: the lease runs for lease_seconds; the next beat tries again
                log.error("lease_renew_failed", workset=job.workset_id, error=strip_control(str(exc)))
        jobs = self.job_health.summary()
        details = {"active": len(self.active_worksets), "runner": self.runner.kind,
                   "tools": dict(self.clusters.tool_status), "polls": dict(self.poll_counts),
                   "jobs": jobs}
        if self._events is not None and self._events.enabled:
            details["discovery"] = self._events.status()
        self.store.record_monitor_heartbeat(self.monitor_id, self.host, os.getpid(), __version__,
                                            role="engine", details=details,
                                            started_at=self._started_at)
        self._incr("EngineHeartbeat")
        # the store took this engine's write from a scheduler job: proof enough for systemd
        self.systemd.watchdog(self._status_line(jobs))

    def _status_line(self, jobs: dict[str, dict[str, Any]]) -> str:
        overruns = sum(int(j.get("recent_overruns", 0)) for j in jobs.values())
        worst = max(jobs.items(), key=lambda kv: kv[1].get("max_lag_seconds", 0.0), default=None)
        lag = f", worst lag {worst[0]} {worst[1]['max_lag_seconds']:.1f}s" if worst else ""
        return (f"{len(self.active_worksets)} workset(s) running, {overruns} skipped job run(s) "
                f"in 10 min{lag}")

    def _finished_by_us(self, workset_id: str) -> bool:
        try:
            ws = self.store.get_workset(workset_id)
        except StoreError:
            return False
        return (ws is not None and not ws.state.holds_lease and bool(ws.recent_events)
                and ws.recent_events[-1].actor == self.monitor_id)

    # -- adoption and sweep (engine/sweep.py) -------------------------------------------------------------
    def adopt_own_leases(self) -> list[str]:
        """Take back the worksets this monitor id held before a restart (new fence)."""
        self._adopted = True
        adopted = []
        for state in (S.LOCKED, S.IN_PROGRESS):
            for ws in list(self.store.iter_worksets(state=state)):
                if ws.lock_owner == self.monitor_id and ws.workset_id not in self.active_worksets:
                    if self._adopt(ws):
                        adopted.append(ws.workset_id)
        if adopted:
            log.info("adopted", worksets=adopted, monitor_id=self.monitor_id)
        return adopted

    def _adopt(self, ws: Workset) -> bool:
        if ws.lock_expires_at is None or self._free_local_slots() <= 0:
            return False
        old = Lease(workset_id=ws.workset_id, owner_id=ws.lock_owner or self.monitor_id,
                    fence=ws.fence, expires_at=ws.lock_expires_at)
        try:
            lease = self.store.adopt_lock(old, self.settings.store.lease_seconds)
        except LeaseLost:
            return False
        in_progress = ws.state is S.IN_PROGRESS
        self._submit(Job(ws.workset_id, lease, adopted=in_progress), cluster=ws.cluster_name,
                     reason=ws.schedule_reason or "re-adopted by its owner", adopted=in_progress)
        return True

    @property
    def claiming(self) -> bool:
        """False once the engine stops: it takes no new work (and adopts none)."""
        return self._claiming

    def sweep(self) -> dict[str, list[str]]:
        """Recover expired leases; move due retries back to ready (engine/sweep.py)."""
        swept = self.sweeper.sweep()
        swept["monitors_pruned"] = self.monitor_pruner.prune(self.clock.now())
        return swept

    def notice_force_releases(self) -> list[tuple[str, int]]:
        return self.sweeper.notice_force_releases()

    def prune_history(self) -> dict[str, int] | None:
        return self.sweeper.prune_history()

    # -- observability jobs -------------------------------------------------------------------
    def flush_metrics(self) -> None:
        self.metrics.sample_history()
        try:  # the CloudWatch outbox-backlog alarm's figure (wsmon cloudwatch install)
            backlog = len(self.store.list_notifications(status="pending", limit=1000))
            self.metrics.observe("NotificationOutboxBacklog", float(backlog), unit="Count")
        except StoreError as exc:
            log.warning("outbox_backlog_unknown", error=strip_control(str(exc))[:200])
        self.metrics.flush()

    def evaluate_alerts(self) -> None:
        self.alerts.evaluate()

    def deliver_notifications(self) -> None:
        self.notifier.deliver()

    def follow_progress(self) -> None:
        """Progress, log tail and actual cost of the worksets this engine drives; one whose
        attempt ended gets its final figures (engine/progress/tracker.py)."""
        running = {job.workset_id: job.get_lease() for job, future in self._snapshot_jobs()
                   if not future.done()}
        self.progress.observe(running)
