"""The command runner: stage, clone and export as subprocesses (each with a timeout and a log file),
the pipeline in tmux (``tmux.py``), on this host or over SSH (``hosts.py``).

A step's process runs in a session of its own, so it outlives an engine that crashes. It runs
under a small ``bash`` wrapper that writes its exit status to ``<step>.exit`` beside the step log,
and its pid and start time go to ``<step>.pid``. A restarted engine that finds the step recorded
as running looks for that survivor (the same pid *and* start time, so a reused pid is never
mistaken for it): while it lives, the engine waits for it (within the step's timeout, counted from
when it started); when it has ended, its exit status is the step's result. Only when neither the
process nor its status is found is the step started again, so a step never runs twice at once.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

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


log = structlog.get_logger(__name__)
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
        timeout = self.cfg.step_timeout_minutes * 60
        if previous is not None and previous.status == "running":
            survivor = self._adopt_survivor(name, job, book, previous, log_path, timeout)
            if survivor is not None:
                code, timed_out = survivor
                return self._step_result(name, book, previous, state, log_path, code, timed_out,
                                         timeout)
        rec = book.start(name, log_path)
        try:
            code, timed_out = self._run_process(argv, log_path, timeout, job, book.attempt, name)
        except Aborted:
            book_safe_finish(book, rec, "interrupted", f"stopped: {job.abort_reason}")
            raise
        except OSError as exc:
            detail = f"{name}: could not start {argv[0]}: {exc}"
            book.finish(rec, "failed", detail=detail)
            return self._fail(book, name, detail, log_path, record=False)
        return self._step_result(name, book, rec, state, log_path, code, timed_out, timeout)

    def _step_result(self, name: str, book: StepBook, rec: StepRecord, state: dict[str, Any],
                     log_path: Path, code: int, timed_out: bool, timeout: float) -> RunOutcome | None:
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
        pid_file, exit_file = _survivor_files(log_path)
        exit_file.unlink(missing_ok=True)
        wrapped = ["bash", "-c", _STATUS_WRAPPER, "wsmon-step", str(exit_file),
                   *self.host.wrap(argv)]
        with open(log_path, "ab") as out:
            out.write(f"{ATTEMPT_HEADER}{attempt} {name} {self.clock.now().isoformat()} argv: "
                      f"{strip_control(shlex.join(argv))}\n".encode())
            out.flush()
            proc = subprocess.Popen(wrapped, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    env=child_env())
        pid_file.write_text(json.dumps({"pid": proc.pid, "start": process_start(proc.pid)}))
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

    def _adopt_survivor(self, name: str, job: Job, book: StepBook, previous: StepRecord,
                        log_path: Path, timeout: float) -> tuple[int, bool] | None:
        """(exit code, timed out) of the step process a crashed engine left behind, after
        waiting for it while it lives; None when there is none (start the step again)."""
        pid_file, exit_file = _survivor_files(log_path)
        owner = _json_file(pid_file)
        pid, started = (owner or {}).get("pid"), (owner or {}).get("start")
        alive = isinstance(pid, int) and started is not None and process_start(pid) == started
        if alive:
            log.info("step_survivor_found", step=name, pid=pid, workset=job.workset_id)
            book.put(previous.model_copy(update={
                "detail": f"waiting for the {name} process (pid {pid}) left by an engine restart"}))
            already = 0.0
            if previous.started_at is not None:
                already = max(0.0, (self.clock.now() - previous.started_at).total_seconds())
            deadline = self._monotonic() + max(0.0, timeout - already)
            while process_start(pid) == started:
                if job.abort.is_set():
                    raise Aborted(job.abort_reason)
                if self._monotonic() >= deadline:
                    _end_group(pid, self.cfg.kill_grace_seconds, lambda: process_start(pid) == started)
                    return -1, True
                job.abort.wait(0.2)
        code = _int_file(exit_file)
        if code is None:
            if alive:  # it ended without writing a status: killed
                return 128 + int(signal.SIGKILL), False
            return None
        if not alive:
            log.info("step_survivor_finished", step=name, code=code, workset=job.workset_id)
        return code, False

    def _interrupt_process(self, proc: subprocess.Popen) -> int:
        """Ctrl-C to the whole process group, a grace period, then SIGKILL."""
        for sig, wait in ((signal.SIGINT, self.cfg.kill_grace_seconds), (signal.SIGKILL, 10.0)):
            if sig == signal.SIGKILL:
                # the step first, so the status wrapper (our child) reaps it and records the
                # kill; killed together, the step would be left to init (a zombie where init
                # does not reap, as in some containers)
                _kill_members(proc.pid, sig, but=proc.pid)
                try:
                    return proc.wait(timeout=2.0)
                except subprocess.TimeoutExpired:
                    pass
            try:
                os.killpg(proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                return proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
        return proc.wait()


# runs a step's argv and records its exit status, so an engine that restarts finds the result
_STATUS_WRAPPER = 'exit_file=$1; shift; "$@"; rc=$?; printf "%s\\n" "$rc" > "$exit_file"; exit "$rc"'


def _survivor_files(log_path: Path) -> tuple[Path, Path]:
    return log_path.with_suffix(".pid"), log_path.with_suffix(".exit")


def process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), or None if it is gone.
    With the pid it identifies one process: a pid reused later has another start time."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    if fields and fields[0] == "Z":  # a zombie has ended
        return None
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def _end_group(pid: int, grace: float, alive: Callable[[], bool]) -> None:
    """Ctrl-C to a survivor's process group, ``grace`` seconds, then SIGKILL."""
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        end = time.monotonic() + wait
        while alive() and time.monotonic() < end:
            time.sleep(0.1)
        if not alive():
            return


def _kill_members(pgid: int, sig: int, *, but: int) -> None:
    """Send ``sig`` to every process of group ``pgid`` except ``but`` (Linux /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == but:
            continue
        try:
            stat = (entry / "stat").read_text()
            if int(stat[stat.rfind(")") + 2:].split()[2]) == pgid:
                os.kill(int(entry.name), sig)
        except (OSError, ValueError, IndexError):
            continue


def _json_file(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _int_file(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None
