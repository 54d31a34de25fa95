"""The pipeline step in a detached tmux session: start it (or re-adopt the one a restarted engine
left running), watch the pipeline's sentinels, its exit-status file and the session, and stop it
with Ctrl-C, a grace period, then a kill."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import threading
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
    Job,
    RunOutcome,
    StepBook,
    StepFailed,
    book_safe_finish,
    session_name,
)
from wsmon.engine.runner.hosts import ATTEMPT_HEADER, LocalHost, SshHost, child_env, tail_text
from wsmon.engine.runner.templates import TemplateError, pipeline_command

if TYPE_CHECKING:
    from wsmon.config.settings import Settings

log = structlog.get_logger(__name__)


SUCCESS_SENTINEL = "daylily.successful_run"
FAILURE_SENTINEL = "daylily.failed_run"
EXIT_FILE = ".wsmon-exit-status"
OWNER_FILE = ".wsmon-owner.json"


_TMUX_START_LOCK = threading.Lock()


class TmuxPipeline:
    """The run step of ``CommandRunner``: the pipeline in tmux session
    ``<tmux_session_prefix><sanitised workset>``, in the directory the clone step named."""

    settings: Settings
    cfg: Any
    clock: Clock
    host: LocalHost
    _monotonic: Callable[[], float]

    def _fail(self, book: StepBook, name: str, detail: str, log_path: Path | None, *,
              retryable: bool | None = None, record: bool = True) -> RunOutcome:
        raise NotImplementedError

    def tmux(self, *args: str) -> list[str]:
        argv = ["tmux"]
        if self.cfg.tmux_socket:
            argv += ["-L", self.cfg.tmux_socket]
        return self.host.wrap(argv + list(args))

    def _tmux_run(self, *args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str] | None:
        try:
            return subprocess.run(self.tmux(*args), capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL, check=False, env=child_env())
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("tmux_call_failed", args=list(args[:1]), error=str(exc))
            return None

    def session_alive(self, name: str) -> bool:
        proc = self._tmux_run("has-session", "-t", f"={name}")
        return proc is not None and proc.returncode == 0

    def _run_pipeline(self, workset: Workset, job: Job, book: StepBook, state: dict[str, Any],
                      previous: StepRecord | None, values: dict[str, Any],
                      log_path: Path) -> RunOutcome | None:
        pipeline_dir = state.get("pipeline_dir") or workset.pipeline_dir
        if not pipeline_dir or not self.host.is_dir(pipeline_dir):
            detail = f"pipeline directory {pipeline_dir!r} does not exist (clone step?)"
            return self._fail(book, "run", detail, None)
        name = session_name(self.settings, workset.workset_id)
        exit_file = os.path.join(pipeline_dir, EXIT_FILE)
        if previous is not None and previous.status == "running":
            # re-adoption after a restart: watch what runs (or finished) instead of starting again
            if self.session_alive(name) or self._pipeline_result(pipeline_dir, exit_file) is not None:
                log.info("pipeline_adopted", workset=workset.workset_id, session=name)
                return self._watch(workset, job, book, previous, name, pipeline_dir, exit_file,
                                   log_path)
            # the previous process died between recording the step and starting tmux
            log.warning("pipeline_not_found_at_adoption", workset=workset.workset_id, session=name)
        try:
            command = pipeline_command(self.settings, workset, values)
        except TemplateError as exc:
            return self._fail(book, "run", str(exc), None, retryable=False)
        except StepFailed as exc:
            return self._fail(book, "run", exc.detail, None, retryable=exc.retryable)
        if self.session_alive(name):
            detail = (f"tmux session {name} already exists: another engine or an operator "
                      "runs this workset; not starting a second pipeline")
            return self._fail(book, "run", detail, None, retryable=True)
        for stale in (SUCCESS_SENTINEL, FAILURE_SENTINEL, EXIT_FILE):
            self.host.remove(os.path.join(pipeline_dir, stale))
        lease = job.get_lease()
        self.host.write_small(os.path.join(pipeline_dir, OWNER_FILE), json.dumps(
            {"workset_id": workset.workset_id, "owner": lease.owner_id, "session": name}))
        remote = isinstance(self.host, SshHost)
        pipe_log = os.path.join(pipeline_dir, ".wsmon-run.log") if remote else str(log_path)
        # the remote log gets its own attempt header, so its tail is this attempt's output only
        header = f"{ATTEMPT_HEADER}{book.attempt} run" if remote else None
        script = ((f"printf '%s\\n' {shlex.quote(header)} >> {shlex.quote(pipe_log)}\n" if header else "")
                  + f"{{ {command}\n}} 2>&1 | tee -a {shlex.quote(pipe_log)}\n"
                  f"rc=${{PIPESTATUS[0]}}\n"
                  f"printf '%s\\n' \"$rc\" > {shlex.quote(exit_file)}\nexit \"$rc\"\n")
        with open(log_path, "ab") as out:
            out.write(f"{ATTEMPT_HEADER}{book.attempt} run {self.clock.now().isoformat()} "
                      f"tmux session {name} in {pipeline_dir}: "
                      f"{strip_control(command)}\n".encode())
        # recorded before tmux starts: a crash in between is re-adopted (and started), never
        # mistaken for someone else's session
        rec = book.start("run", log_path, f"tmux session {name}")
        started = self._new_session(name, pipeline_dir, script)
        if started is None or started.returncode != 0:
            err = strip_control((started.stderr if started else "tmux did not answer").strip())
            detail = f"could not start tmux session {name}: {err}"
            book.finish(rec, "failed", detail=detail)
            return RunOutcome("failed", "run", detail)
        return self._watch(workset, job, book, rec, name, pipeline_dir, exit_file, log_path)

    def _new_session(self, name: str, pipeline_dir: str,
                     script: str) -> subprocess.CompletedProcess[str] | None:
        """Start the detached session. Serialised in this process, and retried a few times:
        clients racing to start the tmux server make it fail with "server exited unexpectedly"."""
        started = None
        for attempt in range(3):
            with _TMUX_START_LOCK:
                started = self._tmux_run("new-session", "-d", "-s", name, "-c", pipeline_dir,
                                         "bash", "-c", script)
            if started is not None and started.returncode == 0:
                return started
            if self.session_alive(name):
                # no such session existed just before and we hold the workset's lease: the
                # session is ours, created although the client reported an error
                return subprocess.CompletedProcess(args=[], returncode=0)
            time.sleep(0.2 * (attempt + 1))
        return started

    def _pipeline_result(self, pipeline_dir: str, exit_file: str) -> tuple[str, int | None] | None:
        if self.host.exists(os.path.join(pipeline_dir, SUCCESS_SENTINEL)):
            return "succeeded", 0
        if self.host.exists(os.path.join(pipeline_dir, FAILURE_SENTINEL)):
            code_text = self.host.read_small(exit_file)
            return "failed", _int(code_text)
        code_text = self.host.read_small(exit_file)
        if code_text is not None and _int(code_text) is not None:
            code = _int(code_text)
            return ("succeeded" if code == 0 else "failed"), code
        return None

    def _watch(self, workset: Workset, job: Job, book: StepBook, rec: StepRecord, name: str,
               pipeline_dir: str, exit_file: str, log_path: Path) -> RunOutcome | None:
        timeout = self.cfg.pipeline_timeout_minutes * 60
        already = 0.0
        if rec.started_at is not None:
            already = max(0.0, (self.clock.now() - rec.started_at).total_seconds())
        deadline = self._monotonic() + max(0.0, timeout - already)
        poll = self.cfg.pipeline_poll_seconds
        linger_until: float | None = None
        while True:
            result = self._pipeline_result(pipeline_dir, exit_file)
            alive = self.session_alive(name)
            if result is None and not alive:
                # the session may have finished between the two checks
                result = self._pipeline_result(pipeline_dir, exit_file)
            if (result is not None and alive and self.host.read_small(exit_file) is None
                    and not (job.abort.is_set() or job.detach.is_set())):
                # the sentinel is written just before the pipeline exits: let it finish, so the
                # next step never overlaps the pipeline's last moments (bounded wait)
                linger_until = linger_until or self._monotonic() + 30.0
                if self._monotonic() < linger_until:
                    _nap(job, min(poll, 0.5))
                    continue
            if result is not None:
                status, code = result
                if status == "succeeded":
                    book.finish(rec, "succeeded", exit_code=code)
                    return None
                tail = self._pipe_tail(log_path, pipeline_dir)
                detail = (f"pipeline failed ({FAILURE_SENTINEL})" if code is None
                          else f"pipeline failed with exit code {code}")
                book.finish(rec, "failed", exit_code=code, detail=detail)
                return RunOutcome("failed", "run", detail + ("\n" + tail if tail else ""), tail)
            if not alive:
                tail = self._pipe_tail(log_path, pipeline_dir)
                detail = (f"tmux session {name} ended without a result "
                          "(killed, or the host restarted)")
                book.finish(rec, "failed", detail=detail)
                return RunOutcome("failed", "run", detail + ("\n" + tail if tail else ""), tail, True)
            if job.abort.is_set():
                self._stop_session(name, pipeline_dir, job)
                book_safe_finish(book, rec, "interrupted", f"stopped: {job.abort_reason}")
                raise Aborted(job.abort_reason)
            if job.detach.is_set():
                return RunOutcome("detached", "run")
            if self._monotonic() >= deadline:
                self._stop_session(name, pipeline_dir, job)
                tail = self._pipe_tail(log_path, pipeline_dir)
                detail = (f"pipeline exceeded its time limit of {timeout:g}s: sent Ctrl-C, "
                          "then killed the tmux session")
                book.finish(rec, "timed_out", detail=detail)
                return RunOutcome("failed", "run", detail + ("\n" + tail if tail else ""), tail, True)
            _nap(job, max(0.05, min(poll, deadline - self._monotonic())))

    def _pipe_tail(self, log_path: Path, pipeline_dir: str) -> str | None:
        if isinstance(self.host, SshHost):
            return self.host.tail(os.path.join(pipeline_dir, ".wsmon-run.log"), self.cfg.log_tail_lines)
        return tail_text(log_path, self.cfg.log_tail_lines)

    def _stop_session(self, name: str, pipeline_dir: str, job: Job) -> None:
        """Ctrl-C into the session, a grace period, then kill it."""
        owner = _json(self.host.read_small(os.path.join(pipeline_dir, OWNER_FILE)))
        if owner and owner.get("owner") not in (None, job.get_lease().owner_id):
            log.warning("pipeline_not_ours", session=name, owner=owner.get("owner"))
            return
        self._tmux_run("send-keys", "-t", f"={name}", "C-c")
        deadline = self._monotonic() + self.cfg.kill_grace_seconds
        while self._monotonic() < deadline and self.session_alive(name):
            time.sleep(0.2)
        if self.session_alive(name):
            self._tmux_run("kill-session", "-t", f"={name}")


def _nap(job: Job, seconds: float) -> None:
    """Wait, waking early when the job is aborted or detached."""
    end = time.monotonic() + seconds
    while not (job.abort.is_set() or job.detach.is_set()):
        left = end - time.monotonic()
        if left <= 0:
            return
        job.abort.wait(min(0.25, left))


def _int(text: str | None) -> int | None:
    try:
        return int((text or "").strip())
    except ValueError:
        return None


def _json(text: str | None) -> dict[str, Any] | None:
    try:
        value = json.loads(text or "")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
