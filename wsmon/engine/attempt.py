"""One workset attempt: mark it in progress (or pick up an adopted one), fetch its inputs, run the
steps through the runner, and record the outcome (complete, or error followed by the retry policy's
decision: retrying or failed), with the sentinel written back and the events notified.

It runs in the engine's thread pool; the engine keeps the table of attempts in flight."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from wsmon.core.models import Workset, WorksetState
from wsmon.core.redaction import scrub
from wsmon.core.textsafe import strip_control, truncate
from wsmon.engine.retry import RetryPolicy
from wsmon.engine.runner import Aborted, BaseRunner, Job, RunOutcome, sanitise
from wsmon.engine.store import LeaseLost, StateConflict, StoreError, StoreUnavailable

if TYPE_CHECKING:
    from wsmon.config.settings import Settings
    from wsmon.core.clock import Clock
    from wsmon.engine.store import Store

log = structlog.get_logger(__name__)

S = WorksetState


class AttemptHost(Protocol):
    """What an attempt uses of the engine that runs it."""

    settings: Settings
    store: Store
    clock: Clock
    monitor_id: str
    runner: BaseRunner
    retry: RetryPolicy
    metrics: Any

    def _emit(self, event_type: str, workset: Workset | None = None, **details: Any) -> list[Any]: ...

    def _incr(self, name: str, value: float = 1.0, **dims: Any) -> None: ...

    def _mirror(self, workset: Workset) -> None: ...

    def _primary_source(self) -> Any: ...


def _one_line(text: str | None, limit: int = 200) -> str:
    first = (text or "").strip().splitlines()[:1]
    return truncate(strip_control(first[0] if first else ""), limit)


def _scrub(text: str | None) -> str | None:
    """Error text as stored on the workset: no control sequences, no secrets or home paths."""
    if text is None:
        return None
    return scrub(strip_control(text, keep_newlines=True))


def drive_attempt(engine: AttemptHost, job: Job, cluster: str | None, reason: str,
                  adopted: bool) -> str:
    """Run one attempt of ``job`` to its end; returns how it ended (for logs and tests)."""
    wid = job.workset_id
    try:
        if adopted:
            ws = engine.store.get_workset(wid)
            if ws is None:
                return "gone"
        else:
            current = engine.store.get_workset(wid)
            if current is None:
                return "gone"
            ws = engine.store.update_state(
                wid, S.IN_PROGRESS, f"started on {cluster}" if cluster else "started",
                engine.monitor_id, lease=job.get_lease(), expected_state=S.LOCKED,
                cluster_name=cluster, attempts=current.attempts + 1, schedule_reason=reason,
                retry_after=None, error_code=None, error_details=None, log_tail=None)
            engine._incr("WorksetStateTransitions", State=S.IN_PROGRESS.value)
            engine._mirror(ws)
            engine._emit("started", ws, cluster=cluster, attempt=ws.attempts)
            log.info("workset_started", workset=wid, cluster=cluster, attempt=ws.attempts)
        try:
            problem = _fetch_inputs(engine, ws)
            if problem is not None:
                outcome = problem
            else:
                outcome = engine.runner.execute(ws, job, engine.store, engine.monitor_id)
        except Aborted:
            return _aborted(engine, job)
        except (LeaseLost, StateConflict):
            raise
        except StoreError:
            raise
        except Exception as exc:  # a runner bug must not strand the workset in_progress
            log.exception("runner_crashed", workset=wid)
            outcome = RunOutcome("failed", job.current_step, f"engine error: {exc}", None)
        return _finish(engine, job, ws, outcome)
    except (LeaseLost, StateConflict) as exc:
        log.warning("lease_lost", workset=wid, detail=strip_control(str(exc)))
        return "lease_lost"
    except StoreError as exc:
        # the lease will expire and the sweep (ours or another engine's) recovers it
        log.error("store_error_during_run", workset=wid, error=strip_control(str(exc)))
        return "store_error"


def _fetch_inputs(engine: AttemptHost, ws: Workset) -> RunOutcome | None:
    """Copy stage_samples.tsv next to the step logs when a step template names it
    ({analysis_samples}, as the Daylily stage command does)."""
    cfg = engine.settings.runner
    if cfg.kind == "simulated" or not engine.settings.discovery.sources:
        return None
    templates = " ".join(str(t) for t in (cfg.stage_command, cfg.clone_command,
                                          cfg.run_command, cfg.export_command) if t)
    if "{analysis_samples}" not in templates and "{stage_samples}" not in templates:
        return None
    if any(r.name == "stage" and r.status == "succeeded" for r in ws.steps):
        return None
    dest = engine.settings.state_dir / "worksets" / sanitise(ws.workset_id) / "stage_samples.tsv"
    try:
        engine._primary_source().download_file(ws, "stage_samples.tsv", dest)
    except Exception as exc:
        from wsmon.core.aws import describe_client_error

        return RunOutcome("failed", "stage",
                          f"could not fetch stage_samples.tsv: {describe_client_error(exc)}")
    return None


def _aborted(engine: AttemptHost, job: Job) -> str:
    if job.abort_reason.startswith("lease lost"):
        log.warning("workset_stopped_lease_lost", workset=job.workset_id)
        return "lease_lost"
    # shutdown grace ran out during a short step: give the workset back, uncounted
    try:
        ws = engine.store.get_workset(job.workset_id)
        if ws is not None:
            steps = [r.model_copy(update={"status": "interrupted",
                                          "detail": "engine shut down during this step"})
                     if r.status == "running" else r for r in ws.steps]
            engine.store.update_fields(job.workset_id, actor=engine.monitor_id,
                                     lease=job.get_lease(), attempts=max(0, ws.attempts - 1),
                                     steps=steps)
        engine.store.release_lock(job.get_lease(), reason="engine shutting down mid-step")
        engine._incr("WorksetStateTransitions", State=S.READY.value)
    except (LeaseLost, StoreError) as exc:
        log.warning("release_failed", workset=job.workset_id, error=strip_control(str(exc)))
    return "released"


def _final_write(engine: AttemptHost, job: Job, target: WorksetState,
                 write: Callable[[], Workset]) -> Workset:
    """A transition at the end of an attempt, retried with backoff (0.5 s doubling to 15 s)
    while the store is unreachable, for up to half a lease: the heartbeat keeps renewing the
    lease meanwhile, so a short outage costs seconds, not a lease period and a recovery. A write
    that did land although its answer was lost is recognised by the state it left."""
    delay, waited = 0.5, 0.0
    patience = engine.settings.store.lease_seconds / 2
    retried = False
    while True:
        try:
            return write()
        except StoreUnavailable as exc:
            if waited + delay > patience or job.abort.is_set():
                raise
            log.warning("final_write_retrying", workset=job.workset_id, to=target.value,
                        retry_in_seconds=delay, error=strip_control(str(exc)))
            engine.clock.sleep(delay)
            waited += delay
            delay = min(delay * 2, 15.0)
            retried = True
        except StateConflict:
            current = engine.store.get_workset(job.workset_id) if retried else None
            if current is not None and current.state is target:
                return current
            raise


def _finish(engine: AttemptHost, job: Job, ws: Workset, outcome: RunOutcome) -> str:
    wid = job.workset_id
    if outcome.status == "detached":
        log.info("pipeline_left_running", workset=wid)
        return "detached"
    if outcome.succeeded:
        done = _final_write(engine, job, S.COMPLETE, lambda: engine.store.update_state(
            wid, S.COMPLETE, "all steps succeeded", engine.monitor_id, lease=job.get_lease(),
            expected_state=S.IN_PROGRESS, schedule_reason=None))
        engine._incr("WorksetStateTransitions", State=S.COMPLETE.value)
        engine._mirror(done)
        started = ws.lock_acquired_at or ws.state_changed_at
        try:
            engine.metrics.observe("WorksetProcessingDuration",
                                 (done.state_changed_at - started).total_seconds(), "Seconds",
                                 State=S.COMPLETE.value)
            cost = (ws.estimate or {}).get("cost_usd")
            if isinstance(cost, (int, float)):  # the dashboard's cost-per-workset widget
                engine.metrics.observe("WorksetCost", float(cost), "None", Kind="estimated")
        except Exception:
            pass
        engine._emit("completed", done)
        log.info("workset_completed", workset=wid, attempt=done.attempts)
        return "completed"
    now = engine.clock.now()
    text = outcome.error_text or f"{outcome.step or 'a step'} failed"
    decision = engine.retry.decide(ws, text, now, retryable=outcome.retryable)
    details = _scrub(text)
    headline = f"{outcome.step or 'step'} failed: {_one_line(text)}"
    errored = _final_write(engine, job, S.ERROR, lambda: engine.store.update_state(
        wid, S.ERROR, headline, engine.monitor_id, lease=job.get_lease(),
        expected_state=S.IN_PROGRESS, error_code=decision.error_code,
        error_details=truncate(details or "", 4000), log_tail=_scrub(outcome.log_tail),
        retry_after=decision.retry_after))
    engine._incr("WorksetStateTransitions", State=S.ERROR.value)
    engine._emit("failed", errored, step=outcome.step, error_code=decision.error_code)
    final = _final_write(engine, job, decision.state, lambda: engine.store.update_state(
        wid, decision.state, decision.reason, engine.monitor_id, expected_state=S.ERROR,
        retry_after=decision.retry_after))
    engine._incr("WorksetStateTransitions", State=decision.state.value)
    engine._mirror(final)
    if decision.will_retry:
        engine._incr("WorksetRetries")
        engine._emit("retrying", final, retry_after=decision.retry_after, attempt=decision.attempt)
    else:
        engine._incr("WorksetDeadLettered")
        engine._emit("dead_lettered", final, error_code=decision.error_code,
                   remediation=decision.remediation)
    log.warning("workset_failed", workset=wid, step=outcome.step, code=decision.error_code,
                next=decision.state.value, attempt=decision.attempt)
    return decision.state.value
