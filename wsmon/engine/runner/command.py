"""The command runner: stage, clone and export as subprocesses (each with a timeout and a log file),
the pipeline in tmux (``tmux.py``), on this host or over SSH (``hosts.py``)."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wsmon.core.clock import Clock
from wsmon.core.models import StepRecord, Workset
from wsmon.core.textsafe import strip_control
from wsmon.engine.runner.base import (
    Aborted,
    BaseRunner,
    Job,
    RunOutcome,
    StepBook,
    StepFailed,
    book_safe_finish,
    sanitise,
)
from wsmon.engine.runner.hosts import (
    ATTEMPT_HEADER,
    LocalHost,
    SshHost,
    child_env,
    tail_text,
    this_run_only,
)
from wsmon.engine.runner.templates import UNSAFE_TOKEN, TemplateError, step_command, template_values
from wsmon.engine.runner.tmux import TmuxPipeline

if TYPE_CHECKING:
    from wsmon.config.settings import Settings


_LOCATION = re.compile(r"^\s*Location:\s*(\S.*?)\s*$", re.MULTILINE)


class CommandRunner(TmuxPipeline, BaseRunner):
    """Real steps: subprocesses for stage/clone/export, tmux for the pipeline."""

    kind = "command"

    def __init__(self, settings: Settings, *, clock: Clock | None = None,
                 host: LocalHost | None = None, monotonic: Callable[[], float] | None = None) -> None:
        super().__init__(settings, clock=clock)
        self.host = host or (SshHost(settings) if self.cfg.kind == "ssh" else LocalHost())
        # subprocesses live in real time whatever clock the store uses (tests move a ManualClock)
        self._monotonic = monotonic or time.monotonic
        self.state_dir = Path(settings.state_dir)

    def log_dir(self, workset_id: str) -> Path:
        path = self.state_dir / "logs" / sanitise(workset_id)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def local_dir(self, workset_id: str) -> Path:
        return self.state_dir / "worksets" / sanitise(workset_id)

    def active_steps(self) -> list[str]:
        cfg = self.cfg
        chosen = []
        if cfg.stage_command:
            chosen.append("stage")
        chosen.append("clone")  # without a clone command it just prepares the directory
        chosen.append("run")
        if cfg.export_command:
            chosen.append("export")
        return chosen

    def run_step(self, name: str, workset: Workset, job: Job, book: StepBook,
                 state: dict[str, Any], previous: StepRecord | None) -> RunOutcome | None:
        log_path = self.log_dir(workset.workset_id) / f"{name}.log"
        try:
            values = template_values(self.settings, workset, state.get("pipeline_dir"),
                                     self.local_dir(workset.workset_id))
            if name == "run":
                return self._run_pipeline(workset, job, book, state, previous, values, log_path)
            if name == "clone" and not self.cfg.clone_command:
                return self._use_work_directory(workset, book, state, "succeeded",
                                                "no clone_command: using the work directory")
            if name == "clone" and not values["clone_args"] and "{clone_args}" in str(self.cfg.clone_command):
                # the earlier monitor cloned only when the workset asked for it (day-clone)
                return self._use_work_directory(workset, book, state, "skipped",
                                                "no day-clone in daylily_work.yaml: clone skipped, "
                                                "using the work directory")
            if name == "export" and not values["export_uri"]:
                rec = book.start(name, None)
                book.finish(rec, "skipped", detail="no export_uri in daylily_work.yaml")
                return None
            template = getattr(self.cfg, f"{name}_command")
            argv = step_command(template, values)
        except TemplateError as exc:
            return self._fail(book, name, str(exc), None, retryable=False)
        except StepFailed as exc:
            return self._fail(book, name, exc.detail, None, retryable=exc.retryable)
        rec = book.start(name, log_path)
        timeout = self.cfg.step_timeout_minutes * 60
        try:
            code, timed_out = self._run_process(argv, log_path, timeout, job, book.attempt, name)
        except Aborted:
            book_safe_finish(book, rec, "interrupted", f"stopped: {job.abort_reason}")
            raise
        except OSError as exc:
            detail = f"{name}: command not found: {argv[0]}" if isinstance(exc, FileNotFoundError) \
                else f"{name}: could not start {argv[0]}: {exc}"
            book.finish(rec, "failed", detail=detail)
            return self._fail(book, name, detail, log_path, record=False)
        tail = tail_text(log_path, self.cfg.log_tail_lines)
        if timed_out:
            detail = (f"{name} exceeded its time limit of {timeout:g}s: sent Ctrl-C, then killed")
            book.finish(rec, "timed_out", exit_code=code, detail=detail)
            return RunOutcome("failed", name, detail + ("\n" + tail if tail else ""), tail, True)
        if code != 0:
            detail = f"{name} failed with exit code {code}"
            book.finish(rec, "failed", exit_code=code, detail=detail)
            return RunOutcome("failed", name, detail + ("\n" + tail if tail else ""), tail)
        extra: dict[str, Any] = {}
        if name == "clone":
            found = self._clone_location(log_path, book.attempt)
            if found is None or not os.path.isabs(found) or UNSAFE_TOKEN.search(found):
                detail = "clone printed no 'Location:' line with an absolute directory"
                book.finish(rec, "failed", exit_code=code, detail=detail)
                return RunOutcome("failed", name, detail + ("\n" + tail if tail else ""), tail, False)
            state["pipeline_dir"] = found
            extra["pipeline_dir"] = found
        book.finish(rec, "succeeded", exit_code=0, **extra)
        return None

    def _use_work_directory(self, workset: Workset, book: StepBook, state: dict[str, Any],
                            status: str, detail: str) -> None:
        pipeline_dir = str(Path(self.cfg.workdir) / sanitise(workset.workset_id))
        rec = book.start("clone", None, detail)
        self.host.makedirs(pipeline_dir)
        state["pipeline_dir"] = pipeline_dir
        book.finish(rec, status, pipeline_dir=pipeline_dir)

    def _fail(self, book: StepBook, name: str, detail: str, log_path: Path | None, *,
              retryable: bool | None = None, record: bool = True) -> RunOutcome:
        if record:
            rec = book.start(name, log_path)
            book.finish(rec, "failed", detail=detail)
        tail = tail_text(log_path, self.cfg.log_tail_lines) if log_path else None
        return RunOutcome("failed", name, detail + ("\n" + tail if tail else ""), tail, retryable)

    def _clone_location(self, log_path: Path, attempt: int) -> str | None:
        try:
            text = log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
        matches = _LOCATION.findall(this_run_only(text))
        return matches[-1].strip().strip("'\"") if matches else None

    def _run_process(self, argv: list[str], log_path: Path, timeout: float, job: Job,
                     attempt: int, name: str) -> tuple[int, bool]:
        """Run to completion; returns (exit code, timed out). Abort interrupts it."""
        wrapped = self.host.wrap(argv)
        with open(log_path, "ab") as out:
            out.write(f"{ATTEMPT_HEADER}{attempt} {name} {self.clock.now().isoformat()} argv: "
                      f"{strip_control(shlex.join(argv))}\n".encode())
            out.flush()
            proc = subprocess.Popen(wrapped, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    env=child_env())
        deadline = self._monotonic() + timeout
        while True:
            try:
                code = proc.wait(timeout=0.2)
                return code, False
            except subprocess.TimeoutExpired:
                pass
            if job.abort.is_set():
                self._interrupt_process(proc)
                raise Aborted(job.abort_reason)
            if self._monotonic() >= deadline:
                return self._interrupt_process(proc), True

    def _interrupt_process(self, proc: subprocess.Popen) -> int:
        """Ctrl-C to the whole process group, a grace period, then SIGKILL."""
        for sig, wait in ((signal.SIGINT, self.cfg.kill_grace_seconds), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                return proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
        return proc.wait()
