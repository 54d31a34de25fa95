"""The engine's view inside its running worksets: progress, ETA, log tail and actual cost.

Every ``progress.interval_seconds`` the engine hands the tracker the worksets it drives (with
their leases). For each whose ``run`` step has started, the tracker follows the pipeline's run
log through the runner's host (this machine, or the head node over ssh), reading only the bytes
added since the last time; keeps an ETA from the recent rate of finished steps; asks ``sacct``
about the Slurm job ids the log names every ``progress.sacct_interval_seconds``; and writes
``progress``, ``actual`` and ``log_tail`` on the workset, fenced by the lease, only when something
changed. When a workset leaves the engine (its attempt ended) the tracker reads the log and asks
sacct one last time, writes the final figures, and forgets it.

Nothing here may stop the engine: a bad log, a missing sacct or a store error becomes a status on
the workset or a log line, and the next round tries again.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from wsmon.core.clock import Clock, SystemClock
from wsmon.core.models import ActualUsage, Lease, RunProgress, StepRecord, Workset
from wsmon.core.textsafe import strip_control, truncate
from wsmon.engine.progress.eta import RateEstimator
from wsmon.engine.progress.logsource import CommandLogSource, LocalLogSource, LogFollower, LogSource
from wsmon.engine.progress.sacct import CostLedger, PriceBook, SacctError, run_sacct
from wsmon.engine.runner.base import session_name
from wsmon.engine.runner.hosts import SshHost, child_env
from wsmon.engine.store import LeaseLost, StoreError

if TYPE_CHECKING:
    from wsmon.config.settings import Settings
    from wsmon.engine.store import Store

log = structlog.get_logger(__name__)

# Where the pipeline's output is tee'd on an SSH head node (runner/tmux.py writes it there);
# on this host it goes to the run step's own log (StepRecord.log_path).
REMOTE_RUN_LOG = ".wsmon-run.log"
# The stored tail is bounded in bytes too: a workset record must stay well inside DynamoDB's
# 400 KB item limit whatever the pipeline prints.
TAIL_MAX_CHARS = 32 * 1024
TAIL_LINE_MAX_CHARS = 400
# An ETA that moved by less than this is not worth a store write on its own.
ETA_WRITE_STEP = timedelta(minutes=1)


def run_log_location(settings: Settings, runner: Any, workset: Workset) -> tuple[str, str | None] | None:
    """(path, head node or None for this host) of the workset's pipeline log, once the run step
    has started; None before that or for a runner without a host (simulated)."""
    host = getattr(runner, "host", None)
    run = latest_run_step(workset)
    if host is None or run is None:
        return None
    if isinstance(host, SshHost):
        if not workset.pipeline_dir:
            return None
        return os.path.join(workset.pipeline_dir, REMOTE_RUN_LOG), settings.runner.ssh_host
    return (run.log_path, None) if run.log_path else None


def latest_run_step(workset: Workset) -> StepRecord | None:
    runs = [s for s in workset.steps if s.name == "run"]
    return runs[-1] if runs else None


def price_book(settings: Settings) -> PriceBook:
    return PriceBook(settings.progress.default_cost_per_vcpu_hour,
                     clusters={c.name: c.cost_per_vcpu_hour for c in settings.clusters.static},
                     partitions=settings.progress.partition_prices)


@dataclass
class _Followed:
    follower: LogFollower
    rate: RateEstimator
    ledger: CostLedger
    session: str
    log_host: str | None
    run_started_at: datetime | None
    last_progress_at: datetime | None = None
    next_sacct_at: float = 0.0
    sacct_status: str = "not measured yet"
    written: dict[str, Any] = field(default_factory=dict)
    dirty: bool = True  # something other than time changed since the last write
    last_status: str = ""


class ProgressTracker:
    def __init__(self, settings: Settings, store: Store, runner: Any, *, actor: str,
                 clock: Clock | None = None, metrics: Any = None) -> None:
        self.settings = settings
        self.cfg = settings.progress
        self.store = store
        self.runner = runner
        self.actor = actor
        self.clock = clock or SystemClock()
        self.prices = price_book(settings)
        self.metrics = metrics  # where the measured cost of a finished run is published
        self._runs: dict[str, _Followed] = {}

    @property
    def followed(self) -> list[str]:
        return list(self._runs)

    def observe(self, running: Mapping[str, Lease | None]) -> None:
        """One round over the worksets this engine drives now (id → its lease)."""
        if not self.cfg.enabled:
            return
        for workset_id, lease in running.items():
            try:
                self._observe(workset_id, lease)
            except Exception as exc:  # one workset's trouble never stops the others or the engine
                log.error("progress_failed", workset=workset_id, error=strip_control(str(exc))[:300])
        for workset_id in [w for w in self._runs if w not in running]:
            try:
                self._finish(workset_id)
            except Exception as exc:
                log.error("progress_final_failed", workset=workset_id, error=strip_control(str(exc))[:300])
            finally:
                self._runs.pop(workset_id, None)

    # -- one workset ---------------------------------------------------------------------------
    def _observe(self, workset_id: str, lease: Lease | None) -> None:
        run = self._runs.get(workset_id)
        if run is None:
            run = self._start(workset_id)
            if run is None:
                return
        self._read(run)
        if self.clock.monotonic() >= run.next_sacct_at:
            self._measure(run)
        self._write(workset_id, run, lease, final=False)

    def _start(self, workset_id: str) -> _Followed | None:
        ws = self.store.get_workset(workset_id)
        if ws is None:
            return None
        where = run_log_location(self.settings, self.runner, ws)
        if where is None:
            return None
        path, log_host = where
        host = self.runner.host
        source: LogSource = (CommandLogSource(host.wrap, timeout=self.cfg.sacct_timeout_seconds,
                                              env=child_env())
                             if isinstance(host, SshHost) else LocalLogSource())
        run_step = latest_run_step(ws)
        follower = LogFollower(source, path, tail_lines=self.cfg.tail_lines,
                               catch_up_bytes=self.cfg.catch_up_mb << 20)
        run = _Followed(follower=follower,
                        rate=RateEstimator(timedelta(minutes=self.cfg.eta_window_minutes)),
                        ledger=CostLedger(ws.cluster_name, self.prices),
                        session=session_name(self.settings, workset_id), log_host=log_host,
                        run_started_at=run_step.started_at if run_step else None)
        # a restarted engine keeps what the previous one measured until the log says more
        if ws.progress is not None and ws.progress.last_progress_at is not None:
            run.last_progress_at = ws.progress.last_progress_at
        self._runs[workset_id] = run
        log.info("progress_following", workset=workset_id, log=strip_control(path), host=log_host or "local")
        return run

    def _read(self, run: _Followed) -> None:
        result = run.follower.poll()
        progress = run.follower.progress
        now = self.clock.now()
        if result.read_bytes or result.status != run.last_status:
            run.dirty = True
            run.last_status = result.status
        if result.progress_changed:
            run.rate.record(now, progress.done)
            run.last_progress_at = now
        run.ledger.add_ids(progress.take_pending_slurm_ids())

    def _measure(self, run: _Followed, *, final: bool = False) -> None:
        ids = run.ledger.unsettled_ids()
        if not ids:
            if run.ledger.settled.jobs == 0 and not run.follower.progress.slurm_ids:
                run.sacct_status = "no Slurm jobs in the log yet"
            return
        run.dirty = True
        # the first jobs are measured as soon as the log names them, then once an interval
        run.next_sacct_at = self.clock.monotonic() + self.cfg.sacct_interval_seconds
        wrap = self.runner.host.wrap if isinstance(getattr(self.runner, "host", None), SshHost) else list
        try:
            run.ledger.apply(run_sacct(ids, wrap, timeout=self.cfg.sacct_timeout_seconds,
                                       env=child_env()))
            run.sacct_status = "ok"
            if run.ledger.dropped_ids:
                run.sacct_status = f"ok, but {run.ledger.dropped_ids} jobs were not tracked (too many at once)"
        except SacctError as exc:
            run.sacct_status = str(exc)
            log.warning("sacct_failed", error=str(exc), final=final)

    def _finish(self, workset_id: str) -> None:
        run = self._runs[workset_id]
        self._read(run)
        self._measure(run, final=True)
        actual = self._write(workset_id, run, None, final=True)
        if self.metrics is not None and actual is not None and (actual.jobs or actual.vcpu_hours):
            # beside the estimate published at completion (Kind=estimated): the dashboard's
            # cost-per-workset widget draws both
            self.metrics.observe("WorksetCost", actual.cost_usd, "None", Kind="actual")

    # -- the record ----------------------------------------------------------------------------
    def _progress(self, run: _Followed, final: bool) -> RunProgress:
        p = run.follower.progress
        now = self.clock.now()
        return RunProgress(
            status=run.follower.status,
            steps_done=p.done, steps_total=p.total if p.known else None,
            percent=p.percent if p.known else None,
            running_rules=p.running_rules() if not final else {},
            done_per_rule=dict(p.done_per_rule), errors=p.errors, last_error_rule=p.last_error_rule,
            partial=run.follower.partial,
            last_progress_at=run.last_progress_at or run.run_started_at,
            eta=None if final else run.rate.eta(now, p.done, p.total if p.known else None),
            rate_per_hour=None if final else run.rate.rate_per_hour(now),
            slurm_job_ids=list(p.slurm_ids),
            session=run.session, log_path=run.follower.path, log_host=run.log_host,
            updated_at=now,
        )

    def _actual(self, run: _Followed, final: bool) -> ActualUsage:
        usage = run.ledger.total()
        return ActualUsage(vcpu_hours=round(usage.vcpu_hours, 4), cost_usd=round(usage.cost_usd, 4),
                           jobs=usage.jobs, jobs_running=len(run.ledger.unsettled_ids()),
                           final=final, status=run.sacct_status, updated_at=self.clock.now())

    def _tail(self, run: _Followed) -> str | None:
        lines = [truncate(line, TAIL_LINE_MAX_CHARS)
                 for line in run.follower.parser.tail_text().split("\n")]
        text = "\n".join(lines)
        if len(text) > TAIL_MAX_CHARS:
            text = text[-TAIL_MAX_CHARS:].split("\n", 1)[-1]
        return text or None

    def _tail_is_ours(self, workset_id: str, run: _Followed, final: bool) -> bool:
        """After the run, the runner may have stored a failed step's own tail: keep that one."""
        if not final:
            return True
        ws = self.store.get_workset(workset_id)
        return ws is not None and ws.log_tail in (None, run.written.get("tail"))

    def _eta_bucket(self, run: _Followed, final: bool) -> int | None:
        if final:
            return None
        p = run.follower.progress
        eta = run.rate.eta(self.clock.now(), p.done, p.total if p.known else None)
        return int(eta.timestamp() // ETA_WRITE_STEP.total_seconds()) if eta else None

    def _write(self, workset_id: str, run: _Followed, lease: Lease | None, *,
               final: bool) -> ActualUsage | None:
        """Write the run's figures when they changed; returns the usage figures it built (None
        on a round with nothing new, which a final write never is)."""
        if not run.dirty and not final and run.written.get("eta") == self._eta_bucket(run, final):
            return None  # the usual round: nothing new in the log, no sacct, the same ETA minute
        progress = self._progress(run, final)
        actual = self._actual(run, final)
        tail = self._tail(run)
        # what matters for a write: everything but the timestamps of this round, the ETA to
        # the minute
        key = {
            "progress": progress.model_dump(mode="json", exclude={"updated_at", "eta", "rate_per_hour"}),
            "eta": int(progress.eta.timestamp() // ETA_WRITE_STEP.total_seconds()) if progress.eta else None,
            "actual": actual.model_dump(mode="json", exclude={"updated_at"}),
            "tail": tail,
        }
        if key == run.written:
            run.dirty = False
            return actual
        fields: dict[str, Any] = {"progress": progress, "actual": actual}
        if tail is not None and key["tail"] != run.written.get("tail") and self._tail_is_ours(workset_id, run, final):
            fields["log_tail"] = tail
        try:
            self.store.update_fields(workset_id, actor=self.actor, lease=lease, **fields)
            run.written = key
            run.dirty = False
        except LeaseLost:
            log.debug("progress_write_lease_lost", workset=workset_id)
        except StoreError as exc:
            log.warning("progress_write_failed", workset=workset_id, error=strip_control(str(exc))[:300])
        return actual
