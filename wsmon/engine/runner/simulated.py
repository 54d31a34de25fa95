"""The simulated runner (demo and tests): steps that only take time and fail by a seeded mix."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from wsmon.core.clock import Clock, SystemClock
from wsmon.core.models import StepRecord, Workset
from wsmon.engine.runner.base import (
    Aborted,
    BaseRunner,
    Job,
    RunOutcome,
    StepBook,
    book_safe_finish,
    sanitise,
)

if TYPE_CHECKING:
    from wsmon.config.settings import Settings


TRANSIENT_ERRORS = (
    "botocore.exceptions.ReadTimeoutError: Read timeout on endpoint URL",
    "ssh: connect to host head-node port 22: Connection reset by peer",
    "An error occurred (ThrottlingException): Rate exceeded",
)
PERMANENT_ERRORS = (
    "Error in rule bwa_mem2_align: MissingInputException: reference fasta not found",
    "Error in rule deepvariant: exiting because a job execution failed",
)


class SimulatedRunner(BaseRunner):
    """Steps that only take time (from config) and fail by a seeded mix: transient-then-success,
    permanent, or a hang until the step's timeout. The same seed and workset id give the same
    fate, so a demo run tells the same story every time."""

    kind = "simulated"

    def __init__(self, settings: Settings, *, clock: Clock | None = None,
                 sleep: Callable[[float, Job], None] | None = None) -> None:
        super().__init__(settings, clock=clock)
        self._sleep = sleep or self._default_sleep

    def fate(self, workset_id: str) -> str:
        cfg = self.cfg
        roll = random.Random(f"{cfg.simulated_seed}:{workset_id}").random()
        edges = (("permanent", cfg.simulated_permanent_failure_rate),
                 ("transient", cfg.simulated_transient_failure_rate),
                 ("hang", cfg.simulated_hang_rate))
        total = 0.0
        for fate, share in edges:
            total += share
            if roll < total:
                return fate
        return "success"

    def _default_sleep(self, seconds: float, job: Job) -> None:
        if isinstance(self.clock, SystemClock):
            end = time.monotonic() + seconds
            while not job.abort.is_set() and time.monotonic() < end:
                job.abort.wait(min(0.5, max(0.0, end - time.monotonic())))
        else:
            self.clock.sleep(seconds)

    def run_step(self, name: str, workset: Workset, job: Job, book: StepBook,
                 state: dict[str, Any], previous: StepRecord | None) -> RunOutcome | None:
        fate = self.fate(workset.workset_id)
        rec = book.start(name, None, "simulated")
        seconds = float(self.cfg.simulated_step_seconds.get(name, 1.0))
        first = book.attempt == 1
        if name == "run" and fate == "hang" and first:
            limit = self.cfg.pipeline_timeout_minutes * 60
            self._sleep(limit, job)
            if job.abort.is_set():
                book_safe_finish(book, rec, "interrupted", f"stopped: {job.abort_reason}")
                raise Aborted(job.abort_reason)
            detail = f"pipeline exceeded its time limit of {limit:g}s: sent Ctrl-C, then killed"
            book.finish(rec, "timed_out", detail=detail)
            return RunOutcome("failed", name, detail, None, True)
        self._sleep(seconds, job)
        if job.abort.is_set():
            book_safe_finish(book, rec, "interrupted", f"stopped: {job.abort_reason}")
            raise Aborted(job.abort_reason)
        rng = random.Random(f"{self.cfg.simulated_seed}:{workset.workset_id}:{book.attempt}")
        if name == "run" and (fate == "permanent" or (fate == "transient" and first)):
            text = rng.choice(PERMANENT_ERRORS if fate == "permanent" else TRANSIENT_ERRORS)
            book.finish(rec, "failed", exit_code=1, detail=text)
            return RunOutcome("failed", name, text, text)
        extra = {}
        if name == "clone":
            extra["pipeline_dir"] = f"{self.cfg.workdir}/{sanitise(workset.workset_id)}"
        book.finish(rec, "succeeded", exit_code=0, **extra)
        return None
