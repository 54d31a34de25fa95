"""What every runner shares: the job handle the service renews, outcomes, step bookkeeping through
the lease, and the step loop (run the steps in order, skipping those already done)."""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wsmon.core.clock import Clock, SystemClock
from wsmon.core.models import Lease, StepRecord, Workset, WorksetState

if TYPE_CHECKING:
    from wsmon.config.settings import Settings
    from wsmon.engine.store import Store


STEPS = ("stage", "clone", "run", "export")


# -- names ----------------------------------------------------------------------------------

def sanitise(name: str, limit: int = 48) -> str:
    """A tmux- and filesystem-safe form of a workset id, unique per id (hash suffix).

    tmux refuses ``.`` and ``:`` in session names; paths must not contain ``/`` or ``..``.
    """
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_-")[:limit] or "workset"
    digest = hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{cleaned}-{digest}"


def session_name(settings: Settings, workset_id: str) -> str:
    return f"{settings.runner.tmux_session_prefix}{sanitise(workset_id)}"


# -- outcomes and the per-workset handle the service shares with the runner -----------------

class StepFailed(Exception):
    def __init__(self, step: str, detail: str, *, exit_code: int | None = None,
                 timed_out: bool = False, log_tail: str | None = None,
                 retryable: bool | None = None) -> None:
        super().__init__(detail)
        self.step = step
        self.detail = detail
        self.exit_code = exit_code
        self.timed_out = timed_out
        self.log_tail = log_tail
        self.retryable = retryable


class Aborted(Exception):
    """The job was told to stop (lease lost, or shutdown grace ran out)."""


@dataclass
class RunOutcome:
    status: str  # succeeded | failed | detached | aborted
    step: str | None = None
    error_text: str | None = None
    log_tail: str | None = None
    retryable: bool | None = None

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"


@dataclass
class Job:
    """One workset attempt in flight. The service renews ``lease``; the runner writes with it."""

    workset_id: str
    lease: Lease
    adopted: bool = False
    detach: threading.Event = field(default_factory=threading.Event)  # shutdown: leave pipelines
    abort: threading.Event = field(default_factory=threading.Event)  # stop now, write nothing more
    abort_reason: str = ""
    current_step: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def set_lease(self, lease: Lease) -> None:
        with self._lock:
            self.lease = lease

    def get_lease(self) -> Lease:
        with self._lock:
            return self.lease

    def stop(self, reason: str) -> None:
        self.abort_reason = reason
        self.abort.set()


# -- step bookkeeping shared by every runner ------------------------------------------------

class StepBook:
    """The workset's step records, written through the lease after every change."""

    def __init__(self, store: Store, workset: Workset, job: Job, actor: str, clock: Clock) -> None:
        self.store = store
        self.job = job
        self.actor = actor
        self.clock = clock
        self.attempt = max(1, workset.attempts)
        self.records: list[StepRecord] = list(workset.steps)

    def latest(self, name: str) -> StepRecord | None:
        for rec in reversed(self.records):
            if rec.name == name:
                return rec
        return None

    def put(self, record: StepRecord, **fields: Any) -> None:
        self.records = [r for r in self.records if r.name != record.name] + [record]
        order = {n: i for i, n in enumerate(STEPS)}
        self.records.sort(key=lambda r: order.get(r.name, len(STEPS)))
        self.store.update_fields(self.job.workset_id, actor=self.actor, lease=self.job.get_lease(),
                                 steps=self.records, **fields)

    def start(self, name: str, log_path: Path | str | None, detail: str | None = None) -> StepRecord:
        rec = StepRecord(name=name, status="running", attempt=self.attempt,
                         started_at=self.clock.now(), log_path=str(log_path) if log_path else None,
                         detail=detail)
        self.put(rec)
        return rec

    def finish(self, rec: StepRecord, status: str, *, exit_code: int | None = None,
               detail: str | None = None, **fields: Any) -> StepRecord:
        done = rec.model_copy(update={"status": status, "finished_at": self.clock.now(),
                                      "exit_code": exit_code,
                                      "detail": detail if detail is not None else rec.detail})
        self.put(done, **fields)
        return done


def reset_for_rerun(workset: Workset) -> bool:
    """An operator sent a finished workset back to ready: start from the first step again."""
    events = workset.recent_events
    if not events:
        return False
    last = events[-1]
    return last.to_state is WorksetState.READY and last.from_state is WorksetState.COMPLETE


class BaseRunner:
    """Runs the steps in order, skipping those already succeeded, recording each."""

    kind = "base"

    def __init__(self, settings: Settings, *, clock: Clock | None = None) -> None:
        self.settings = settings
        self.cfg = settings.runner
        self.clock = clock or SystemClock()

    def active_steps(self) -> list[str]:
        return list(STEPS)

    def execute(self, workset: Workset, job: Job, store: Store, actor: str) -> RunOutcome:
        book = StepBook(store, workset, job, actor, self.clock)
        if reset_for_rerun(workset) and any(r.status == "succeeded" for r in book.records):
            book.records = []
        state: dict[str, Any] = {"pipeline_dir": workset.pipeline_dir}
        for name in self.active_steps():
            previous = book.latest(name)
            if previous is not None and previous.status in ("succeeded", "skipped"):
                continue
            if job.abort.is_set():
                raise Aborted(job.abort_reason)
            job.current_step = name
            try:
                outcome = self.run_step(name, workset, job, book, state, previous)
            finally:
                job.current_step = None
            if outcome is not None:
                return outcome
        return RunOutcome("succeeded")

    def run_step(self, name: str, workset: Workset, job: Job, book: StepBook,
                 state: dict[str, Any], previous: StepRecord | None) -> RunOutcome | None:
        raise NotImplementedError


def book_safe_finish(book: StepBook, rec: StepRecord, status: str, detail: str) -> None:
    """Record an interruption if the lease still allows it (after LeaseLost it does not)."""
    try:
        book.finish(rec, status, detail=detail)
    except Exception:  # LeaseLost: the new holder owns the record now
        pass
