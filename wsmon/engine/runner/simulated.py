"""The simulated runner (demo and tests): steps that only take time and fail by a seeded mix."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
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
from wsmon.engine.runner.hosts import LocalHost

if TYPE_CHECKING:
    from wsmon.config.settings import Settings


TRANSIENT_ERRORS = (
    "botocore.exceptions.ReadTimeoutError: Read timeout on endpoint URL",
    "ssh: connect to host head-node port 22: Connection reset by peer",
    "An error occurred (ThrottlingException): Rate exceeded",
)
# The rules a simulated Daylily run goes through, in Snakemake's own words (the log format is
# Snakemake's; tests/fixtures/progress/snakemake_run.log is a real-looking sample).
SIMULATED_RULES = ("bwa2a_sort", "dedup", "deepvariant", "produce_snv_concordances")
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
        # the run step's Snakemake log is written on this machine: the progress tracker follows
        # it here as it follows a real run's
        self.host = LocalHost()

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
        seconds = float(self.cfg.simulated_step_seconds.get(name, 1.0))
        first = book.attempt == 1
        log_path = None
        # only where the work directory's parent exists (the demo's state dir), never creating
        # the production default (/fsx/worksets) on a machine that only simulates
        if name == "run" and self.cfg.workdir and Path(self.cfg.workdir).parent.is_dir():
            # the folder the clone step names as the pipeline directory
            log_path = (Path(workset.pipeline_dir or f"{self.cfg.workdir}/{sanitise(workset.workset_id)}")
                        / f"run.attempt{book.attempt}.log")
        rec = book.start(name, log_path, "simulated")
        if log_path is not None and not (fate == "hang" and first):
            return self._run_with_log(name, workset, job, book, rec, log_path, seconds, fate, first)
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
        return self._end_step(name, workset, job, book, rec, fate, first)

    def _run_with_log(self, name: str, workset: Workset, job: Job, book: StepBook,
                      rec: StepRecord, log_path: Path, seconds: float, fate: str,
                      first: bool) -> RunOutcome | None:
        """The run step, writing a Snakemake log as it goes: a rule block when a job starts,
        ``Finished job N.`` and ``N of M steps (P%) done`` when it ends."""
        rng = random.Random(f"{self.cfg.simulated_seed}:{workset.workset_id}:log")
        total = rng.randint(8, 16)
        # a failing run stops part way, as a real one does
        fails_after = rng.randint(1, total - 1) if fate == "permanent" or (
            fate == "transient" and first) else total
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a", encoding="utf-8") as out:
            out.write(f"Building DAG of jobs...\nUsing shell: /usr/bin/bash\n"
                      f"Provided cores: 32\nJob stats:\njob    count\n-----  -------\n"
                      f"total  {total}\n\nSelect jobs to execute...\n")
            out.flush()
            for jobid in range(1, fails_after + 1):
                if job.abort.is_set():
                    break
                rule = SIMULATED_RULES[(jobid - 1) % len(SIMULATED_RULES)]
                out.write(f"\n[{self._stamp()}]\nrule {rule}:\n    jobid: {jobid}\n"
                          f"    threads: 16\n\n")
                out.flush()
                self._sleep(seconds / total, job)
                if job.abort.is_set():
                    break
                out.write(f"[{self._stamp()}]\nFinished job {jobid}.\n"
                          f"{jobid} of {total} steps ({round(100 * jobid / total)}%) done\n")
                out.flush()
            if not job.abort.is_set() and fails_after < total:
                out.write(f"[{self._stamp()}]\nError in rule {SIMULATED_RULES[0]}:\n"
                          f"    jobid: {fails_after + 1}\n")
        return self._end_step(name, workset, job, book, rec, fate, first)

    def _stamp(self) -> str:
        return self.clock.now().ctime()  # Snakemake's own stamp: "Thu Dec  3 10:02:11 2026"

    def _end_step(self, name: str, workset: Workset, job: Job, book: StepBook, rec: StepRecord,
                  fate: str, first: bool) -> RunOutcome | None:
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
