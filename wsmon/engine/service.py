"""The engine: the jobs that turn the wheel, and the headless service around them.

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

Restart safety: a new engine with the same monitor id first re-adopts the worksets its previous
process held (``adopt_lock`` bumps the fence, so the old process, if it still lives, is fenced
out) and keeps watching their tmux pipelines instead of starting them again.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from wsmon import __version__
from wsmon.core.clock import Clock, SystemClock, isoformat, parse_iso
from wsmon.engine.clusters import ClusterRegistry
from wsmon.engine.retry import RetryPolicy
from wsmon.engine.runner import Aborted, BaseRunner, Job, RunOutcome, make_runner
from wsmon.engine.scheduler import SchedulingPolicy, placeable, plan
from wsmon.engine.store import LeaseLost, StateConflict, StoreError, WorksetNotFound, open_store
from wsmon.engine.store.base import parse_force_release_reason
from wsmon.core.exit_codes import EXIT_SOURCE, EXIT_STORE, EXIT_USAGE
from wsmon.core.models import RECENT_EVENTS_KEPT, Lease, Workset, WorksetState
from wsmon.core.textsafe import strip_control, truncate

if TYPE_CHECKING:
    from wsmon.config.settings import Settings
    from wsmon.engine.store import Store

log = structlog.get_logger(__name__)

S = WorksetState
REASON_WRITES_PER_PASS = 500  # waiting reasons written per scheduling pass (bounded store cost)
HALF_WRITTEN_RETRY_SECONDS = 60.0  # an `error` left between the two writes of a retry decision
RETENTION_EVERY = timedelta(hours=1)  # how often the sweep prunes old notifications and alerts
# Operators' force releases are found in the store's history (they happen on any host) and
# notified by one engine per store; the watermark of that look survives restarts in the kv store.
FORCE_RELEASE_NOTICE_LEASE = "force-release-notifier"
FORCE_RELEASE_KV = ("engine", "force_release_watermark")
FORCE_RELEASE_FIRST_LOOKBACK = timedelta(minutes=10)  # how far back an engine's first ever look goes
FORCE_RELEASE_MAX_LOOKBACK = timedelta(days=1)  # after a long outage, older releases are old news
LEASE_RECOVERED_REASON = "recovered: lease of"  # the engine's own force release (not an operator's)


def _one_line(text: str | None, limit: int = 200) -> str:
    first = (text or "").strip().splitlines()[:1]
    return truncate(strip_control(first[0] if first else ""), limit)


def _scrub(text: str | None) -> str | None:
    """Error text as stored on the workset: no control sequences, no secrets or home paths."""
    if text is None:
        return None
    from wsmon.engine.notify import scrub

    return scrub(strip_control(text, keep_newlines=True))


class Engine:
    def __init__(self, settings: Settings, store: Store | None = None, *, clock: Clock | None = None,
                 runner: BaseRunner | None = None, s3_client: Any = None,
                 monitor_id: str | None = None) -> None:
        self.settings = settings
        self.monitor_id = monitor_id or settings.effective_monitor_id
        self._own_store = store is None
        if store is None:
            store = open_store(settings.store_url, clock=clock,
                               max_clock_skew=settings.store.max_clock_skew_seconds,
                               default_lease_seconds=settings.store.lease_seconds,
                               aws_profile=settings.aws.profile)
        self.store = store
        self.clock: Clock = clock or getattr(store, "clock", None) or SystemClock()
        self.runner = runner or make_runner(settings, clock=self.clock)
        self.retry = RetryPolicy(settings.retry)
        self.clusters = ClusterRegistry(settings, store, clock=self.clock, owner_id=self.monitor_id)
        self.policy = SchedulingPolicy.from_settings(settings)
        self._s3_client = s3_client
        self._sources: list[Any] | None = None
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
        self._stopped = False
        self._last_retention: datetime | None = None
        self.host = socket.gethostname()
        self.metrics, self.notifier, self.alerts = self._wire_observability()

    # -- wiring ---------------------------------------------------------------------------
    def _wire_observability(self) -> tuple[Any, Any, Any]:
        from wsmon.engine.alerts import AlertEvaluator
        from wsmon.engine.metrics import Metrics
        from wsmon.engine.notify import Notifier

        metrics = Metrics(self.settings, self.store, clock=self.clock, monitor_id=self.monitor_id,
                          cloudwatch_client=None)
        notifier = Notifier(self.settings, self.store, clock=self.clock)
        alerts = AlertEvaluator(self.settings, self.store, clock=self.clock, notifier=notifier,
                                owner_id=self.monitor_id)
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

    def _make_sources(self) -> list[tuple[str, Any]]:
        """One ``S3Source`` and one poll lease per source. Sources that share a sentinel index
        location are polled together (their index files list both), under one lease."""
        from wsmon.engine.s3source import S3Source, normalize_prefix

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
                                       s3_client=self._s3_client, monitor_id=self.monitor_id)))
        return out

    def _mirror(self, workset: Workset) -> None:
        """Write the sentinel of the engine's own transition now (each poll also reconciles)."""
        if not self.settings.discovery.write_sentinels or not self.settings.discovery.sources:
            return
        try:
            if self._sources is None:
                self._sources = self._make_sources()
            if self._sources:
                self._sources[0][1].mirror_state(workset)
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
            ("heartbeat", self.heartbeat, s.store.heartbeat_seconds),
            ("clusters", lambda: self.clusters.refresh(force=True),
             s.clusters.refresh_interval_seconds),
            ("sweep", self.sweep, max(1.0, min(s.discovery.poll_interval_seconds,
                                                s.store.heartbeat_seconds))),
            ("metrics", self.flush_metrics, s.metrics.flush_interval_seconds),
            ("alerts", self.evaluate_alerts, s.alerts.evaluate_interval_seconds),
            ("outbox", self.deliver_notifications, s.notify.deliver_interval_seconds),
        ]
        for name, fn, seconds in jobs:
            scheduler.add_job(self._guard(name, fn), "interval", seconds=seconds, id=name,
                              name=name, next_run_time=now, misfire_grace_time=max(1, int(seconds)))
        scheduler.start()
        self._scheduler = scheduler
        log.info("engine_started", monitor_id=self.monitor_id, store=self.store.url,
                 runner=self.runner.kind, sources=len(s.discovery.sources))

    def _guard(self, name: str, fn: Any) -> Any:
        def job() -> None:
            try:
                fn()
            except StoreError as exc:
                self._health("store", False, str(exc))
                log.error("job_failed", job=name, error=strip_control(str(exc)))
            except Exception as exc:
                log.exception("job_failed", job=name, error=strip_control(str(exc)))
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
        if self._sources is None:
            self._sources = self._make_sources()
        lease_seconds = max(30.0, 3 * self.settings.discovery.poll_interval_seconds)
        polled = []
        for name, source in self._sources:
            if self.store.acquire_named_lease(name, self.monitor_id, lease_seconds) is None:
                continue
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
            for wid in report.registered:
                self._emit("registered", self.store.get_workset(wid))
            for bad in report.invalid:
                self._emit("validation_failed", self.store.get_workset(bad["workset_id"]),
                           error_code=bad.get("code"))
            polled.append(name)
            log.info("polled", source=name, monitor_id=self.monitor_id,
                     registered=len(report.registered), requests=report.request_total)
        return polled

    # -- schedule -------------------------------------------------------------------------
    def _free_local_slots(self) -> int:
        with self._jobs_lock:
            return self.settings.runner.max_parallel_worksets - len(self._jobs)

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

    # -- one workset attempt ----------------------------------------------------------------
    def _drive(self, job: Job, cluster: str | None, reason: str, adopted: bool) -> str:
        wid = job.workset_id
        try:
            if adopted:
                ws = self.store.get_workset(wid)
                if ws is None:
                    return "gone"
            else:
                current = self.store.get_workset(wid)
                if current is None:
                    return "gone"
                ws = self.store.update_state(
                    wid, S.IN_PROGRESS, f"started on {cluster}" if cluster else "started",
                    self.monitor_id, lease=job.get_lease(), expected_state=S.LOCKED,
                    cluster_name=cluster, attempts=current.attempts + 1, schedule_reason=reason,
                    retry_after=None, error_code=None, error_details=None, log_tail=None)
                self._incr("WorksetStateTransitions", State=S.IN_PROGRESS.value)
                self._mirror(ws)
                self._emit("started", ws, cluster=cluster, attempt=ws.attempts)
                log.info("workset_started", workset=wid, cluster=cluster, attempt=ws.attempts)
            try:
                problem = self._fetch_inputs(ws)
                if problem is not None:
                    outcome = problem
                else:
                    outcome = self.runner.execute(ws, job, self.store, self.monitor_id)
            except Aborted:
                return self._aborted(job)
            except (LeaseLost, StateConflict):
                raise
            except StoreError:
                raise
            except Exception as exc:  # a runner bug must not strand the workset in_progress
                log.exception("runner_crashed", workset=wid)
                outcome = RunOutcome("failed", job.current_step, f"engine error: {exc}", None)
            return self._finish(job, ws, outcome)
        except (LeaseLost, StateConflict) as exc:
            log.warning("lease_lost", workset=wid, detail=strip_control(str(exc)))
            return "lease_lost"
        except StoreError as exc:
            # the lease will expire and the sweep (ours or another engine's) recovers it
            log.error("store_error_during_run", workset=wid, error=strip_control(str(exc)))
            return "store_error"
        finally:
            with self._jobs_lock:
                self._jobs.pop(wid, None)

    def _fetch_inputs(self, ws: Workset) -> RunOutcome | None:
        """Copy stage_samples.tsv next to the step logs when a step template names it
        ({analysis_samples}, as the Daylily stage command does)."""
        cfg = self.settings.runner
        if cfg.kind == "simulated" or not self.settings.discovery.sources:
            return None
        templates = " ".join(str(t) for t in (cfg.stage_command, cfg.clone_command,
                                              cfg.run_command, cfg.export_command) if t)
        if "{analysis_samples}" not in templates and "{stage_samples}" not in templates:
            return None
        if any(r.name == "stage" and r.status == "succeeded" for r in ws.steps):
            return None
        from wsmon.engine.runner import sanitise

        dest = self.settings.state_dir / "worksets" / sanitise(ws.workset_id) / "stage_samples.tsv"
        try:
            if self._sources is None:
                self._sources = self._make_sources()
            self._sources[0][1].download_file(ws, "stage_samples.tsv", dest)
        except Exception as exc:
            from wsmon.core.aws import describe_client_error

            return RunOutcome("failed", "stage",
                              f"could not fetch stage_samples.tsv: {describe_client_error(exc)}")
        return None

    def _aborted(self, job: Job) -> str:
        if job.abort_reason.startswith("lease lost"):
            log.warning("workset_stopped_lease_lost", workset=job.workset_id)
            return "lease_lost"
        # shutdown grace ran out during a short step: give the workset back, uncounted
        try:
            ws = self.store.get_workset(job.workset_id)
            if ws is not None:
                steps = [r.model_copy(update={"status": "interrupted",
                                              "detail": "engine shut down during this step"})
                         if r.status == "running" else r for r in ws.steps]
                self.store.update_fields(job.workset_id, actor=self.monitor_id,
                                         lease=job.get_lease(), attempts=max(0, ws.attempts - 1),
                                         steps=steps)
            self.store.release_lock(job.get_lease(), reason="engine shutting down mid-step")
            self._incr("WorksetStateTransitions", State=S.READY.value)
        except (LeaseLost, StoreError) as exc:
            log.warning("release_failed", workset=job.workset_id, error=strip_control(str(exc)))
        return "released"

    def _finish(self, job: Job, ws: Workset, outcome: RunOutcome) -> str:
        wid = job.workset_id
        if outcome.status == "detached":
            log.info("pipeline_left_running", workset=wid)
            return "detached"
        lease = job.get_lease()
        if outcome.succeeded:
            done = self.store.update_state(wid, S.COMPLETE, "all steps succeeded", self.monitor_id,
                                           lease=lease, expected_state=S.IN_PROGRESS,
                                           schedule_reason=None)
            self._incr("WorksetStateTransitions", State=S.COMPLETE.value)
            self._mirror(done)
            started = ws.lock_acquired_at or ws.state_changed_at
            try:
                self.metrics.observe("WorksetProcessingDuration",
                                     (done.state_changed_at - started).total_seconds(), "Seconds",
                                     State=S.COMPLETE.value)
            except Exception:
                pass
            self._emit("completed", done)
            log.info("workset_completed", workset=wid, attempt=done.attempts)
            return "completed"
        now = self.clock.now()
        text = outcome.error_text or f"{outcome.step or 'a step'} failed"
        decision = self.retry.decide(ws, text, now, retryable=outcome.retryable)
        details = _scrub(text)
        headline = f"{outcome.step or 'step'} failed: {_one_line(text)}"
        errored = self.store.update_state(
            wid, S.ERROR, headline, self.monitor_id, lease=lease, expected_state=S.IN_PROGRESS,
            error_code=decision.error_code, error_details=truncate(details or "", 4000),
            log_tail=_scrub(outcome.log_tail), retry_after=decision.retry_after)
        self._incr("WorksetStateTransitions", State=S.ERROR.value)
        self._emit("failed", errored, step=outcome.step, error_code=decision.error_code)
        final = self.store.update_state(wid, decision.state, decision.reason, self.monitor_id,
                                        expected_state=S.ERROR, retry_after=decision.retry_after)
        self._incr("WorksetStateTransitions", State=decision.state.value)
        self._mirror(final)
        if decision.will_retry:
            self._incr("WorksetRetries")
            self._emit("retrying", final, retry_after=decision.retry_after, attempt=decision.attempt)
        else:
            self._incr("WorksetDeadLettered")
            self._emit("dead_lettered", final, error_code=decision.error_code,
                       remediation=decision.remediation)
        log.warning("workset_failed", workset=wid, step=outcome.step, code=decision.error_code,
                    next=decision.state.value, attempt=decision.attempt)
        return decision.state.value

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
        details = {"active": len(self.active_worksets), "runner": self.runner.kind,
                   "tools": dict(self.clusters.tool_status), "polls": dict(self.poll_counts)}
        self.store.record_monitor_heartbeat(self.monitor_id, self.host, os.getpid(), __version__,
                                            role="engine", details=details,
                                            started_at=self._started_at)
        self._incr("EngineHeartbeat")

    def _finished_by_us(self, workset_id: str) -> bool:
        try:
            ws = self.store.get_workset(workset_id)
        except StoreError:
            return False
        return (ws is not None and not ws.state.holds_lease and bool(ws.recent_events)
                and ws.recent_events[-1].actor == self.monitor_id)

    # -- adoption and sweep -----------------------------------------------------------------
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
                     reason=ws.schedule_reason or "re-adopted after restart", adopted=in_progress)
        return True

    def sweep(self) -> dict[str, list[str]]:
        """Recover expired leases; move due retries back to ready."""
        now = self.clock.now()
        result: dict[str, list[str]] = {"recovered": [], "adopted": [], "due": []}
        active = set(self.active_worksets)
        for ws in self.store.expired_leases(now):
            if ws.workset_id in active:
                continue
            if ws.lock_owner == self.monitor_id and self._claiming:
                if self._adopt(ws):
                    result["adopted"].append(ws.workset_id)
                continue
            try:
                self.store.force_release(
                    ws.workset_id, self.monitor_id,
                    f"{LEASE_RECOVERED_REASON} {ws.lock_owner} expired at "
                    f"{ws.lock_expires_at:%Y-%m-%d %H:%M:%S}Z")
            except (StateConflict, LeaseLost, WorksetNotFound):
                continue
            self._incr("WorksetStateTransitions", State=S.READY.value)
            result["recovered"].append(ws.workset_id)
            log.warning("lease_recovered", workset=ws.workset_id, owner=ws.lock_owner)
        for ws in list(self.store.iter_worksets(state=S.RETRYING)):
            if ws.retry_after is None or ws.retry_after <= now:
                try:
                    self.store.update_state(ws.workset_id, S.READY, "retry due", self.monitor_id,
                                            expected_state=S.RETRYING)
                except (StateConflict, WorksetNotFound):
                    continue
                self._incr("WorksetStateTransitions", State=S.READY.value)
                result["due"].append(ws.workset_id)
        stale = now - timedelta(seconds=HALF_WRITTEN_RETRY_SECONDS)
        for ws in list(self.store.iter_worksets(state=S.ERROR)):
            # an engine died between "error" and "retrying": finish its decision
            if ws.retry_after is not None and ws.updated_at < stale:
                try:
                    self.store.update_state(ws.workset_id, S.RETRYING,
                                            "retry decided before an engine restart",
                                            self.monitor_id, expected_state=S.ERROR)
                except (StateConflict, WorksetNotFound):
                    continue
        try:
            result["force_released"] = [wid for wid, _ in self.notice_force_releases()]
        except StoreError as exc:  # the watermark stays: the next sweep looks again
            log.warning("force_release_notice_failed", error=strip_control(str(exc))[:300])
        try:
            self.prune_history()
        except StoreError as exc:  # worksets first: a failed prune waits for the next hour
            log.warning("history_prune_failed", error=strip_control(str(exc))[:300])
        return result

    def notice_force_releases(self) -> list[tuple[str, int]]:
        """Notify ``lock_force_released`` for every operator force release recorded since the
        last look; returns (workset, event seq) of those newly notified.

        Operators release through the store (dashboard on any host, ``wsmon release``), never
        through an engine, so the engine reads it back from the history. One engine per store
        looks (a named lease); the dedup id per (workset, event seq) keeps a restart or a lease
        handover from notifying twice."""
        if not self.notifier.channels:
            return []  # nobody to tell: spare the store the reads
        lease_seconds = max(90.0, 3 * max(1.0, min(self.settings.discovery.poll_interval_seconds,
                                                   self.settings.store.heartbeat_seconds)))
        if self.store.acquire_named_lease(FORCE_RELEASE_NOTICE_LEASE, self.monitor_id,
                                          lease_seconds) is None:
            return []
        stored = self.store.kv_get(*FORCE_RELEASE_KV)
        now = self.clock.now()
        since = (max(parse_iso(stored), now - FORCE_RELEASE_MAX_LOOKBACK) if stored
                 else now - FORCE_RELEASE_FIRST_LOOKBACK)
        changed, watermark = self.store.worksets_changed_since(since)
        found: list[tuple[str, int]] = []
        for ws in changed:
            for event in self._events_since(ws, since):
                parsed = parse_force_release_reason(event)
                if parsed is None:
                    continue
                reason, holder = parsed
                if reason.startswith(LEASE_RECOVERED_REASON):
                    continue  # an engine recovering a dead holder's lease: the sweep logs that
                queued = self._emit("lock_force_released", ws, actor=event.actor,
                                    previous_holder=holder, reason=reason or None,
                                    dedup_id=f"lock_force_released:{ws.workset_id}:{event.seq}")
                if not queued:
                    continue  # already notified (seen again inside the watermark's lag), or no channel
                found.append((ws.workset_id, event.seq))
                log.info("force_release_noticed", workset=strip_control(ws.workset_id),
                         actor=strip_control(event.actor), previous_holder=strip_control(holder or ""))
        self.store.kv_put(*FORCE_RELEASE_KV, isoformat(watermark))
        return found

    def _events_since(self, ws: Workset, since: datetime) -> list[Any]:
        recent = ws.recent_events
        if (len(recent) >= RECENT_EVENTS_KEPT and min(e.seq for e in recent) > 1
                and min(e.at for e in recent) >= since):
            # busier than the inline history: what happened before it is only in the full one
            recent = self.store.events(ws.workset_id)
        return [e for e in recent if e.at >= since]

    def prune_history(self) -> dict[str, int] | None:
        """At most once per ``RETENTION_EVERY`` (by the engine's clock): delete delivered and
        given-up notifications older than ``notify.outbox_retention_days`` and alerts resolved
        more than ``alerts.resolved_retention_days`` ago, so the store stops growing with age.
        Returns what was removed, or None when it was not time yet."""
        now = self.clock.now()
        if self._last_retention is not None and now - self._last_retention < RETENTION_EVERY:
            return None
        self._last_retention = now  # also on failure: retry next hour, not every sweep
        s = self.settings
        removed = {
            "notifications": self.store.prune_notifications(
                now - timedelta(days=s.notify.outbox_retention_days)),
            "alerts": self.store.prune_alerts(
                now - timedelta(days=s.alerts.resolved_retention_days)),
        }
        if any(removed.values()):
            log.info("history_pruned", **removed,
                     outbox_retention_days=s.notify.outbox_retention_days,
                     resolved_retention_days=s.alerts.resolved_retention_days)
        return removed

    # -- observability jobs -------------------------------------------------------------------
    def flush_metrics(self) -> None:
        self.metrics.sample_history()
        self.metrics.flush()

    def evaluate_alerts(self) -> None:
        self.alerts.evaluate()

    def deliver_notifications(self) -> None:
        self.notifier.deliver()


# -- entry points ---------------------------------------------------------------------------

def _configure_logging(settings: Settings) -> None:
    from wsmon.logging import configure_logging

    configure_logging(settings, "headless")


def _open_engine(settings: Settings) -> tuple[Engine | None, int]:
    from wsmon.engine.runner import TemplateError

    try:
        return Engine(settings), 0
    except StoreError as exc:
        log.error("store_unavailable", store=settings.store_url.split("?", 1)[0],
                  error=strip_control(str(exc)))
        return None, EXIT_STORE
    except TemplateError as exc:  # e.g. runner.kind = "ssh" without runner.ssh_host
        log.error("engine_config_invalid", error=strip_control(str(exc)))
        return None, EXIT_USAGE


def run_headless(settings: Settings) -> int:
    """``wsmon --headless``: run until SIGTERM/SIGINT, then stop cleanly (exit 0)."""
    _configure_logging(settings)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        if stop.is_set():
            # a second signal means "now": leases expire and are recovered (fences keep it safe)
            log.warning("second_signal_exiting_now", signal=signal.Signals(signum).name)
            os._exit(130)
        log.info("signal_received", signal=signal.Signals(signum).name,
                 grace_seconds=settings.runner.shutdown_grace_seconds)
        stop.set()

    engine, code = _open_engine(settings)
    if engine is None:
        return code
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        engine.start()
        while not stop.wait(1.0):
            pass
    except StoreError as exc:
        log.error("engine_failed", error=strip_control(str(exc)))
        return EXIT_STORE
    finally:
        engine.stop(settings.runner.shutdown_grace_seconds)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def run_once(settings: Settings, timeout: float | None = None) -> int:
    """``wsmon --headless --once``: poll, schedule, start, wait for what started (or timeout).

    0 when the cycle ran; 4 (the CLI's "store cannot be opened or reached") when it could not;
    5 when it ran but an S3 discovery source could not be listed (so new worksets were missed).
    """
    _configure_logging(settings)
    engine, code = _open_engine(settings)
    if engine is None:
        return code
    try:
        summary = engine.run_cycle()
        finished = engine.wait_idle(timeout)
        log.info("cycle_done", started=summary["started"], polled=summary["polled"],
                 all_finished=finished)
        failures = summary["source_failures"]
        if failures:
            log.error("cycle_source_unreachable", sources=[f["source"] for f in failures],
                      code=failures[0].get("code"), error=failures[0].get("message"),
                      hint="check aws.endpoint_url / region / credentials and that the bucket exists")
            code = EXIT_SOURCE
    except StoreError as exc:
        log.error("cycle_failed", error=strip_control(str(exc)))
        code = EXIT_STORE
    finally:
        engine.stop(0 if timeout is not None else settings.runner.shutdown_grace_seconds)
    return code
