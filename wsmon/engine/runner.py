"""Step execution: the Daylily steps (stage, clone, run, export) for one workset attempt.

* Steps are argv templates from ``settings.runner``; placeholders are filled per token, so a value
  read from S3 is always exactly one argument and never meets a shell. The one place a shell is
  involved is the pipeline itself, which runs ``run_prefix`` + the workset's run suffix inside a
  detached tmux session (as the earlier Daylily monitor did), with every suffix token
  ``shlex.quote``'d.
* The pipeline runs in tmux session ``<tmux_session_prefix><sanitised workset>`` in the pipeline
  directory named by the clone step's ``Location:`` line. The runner watches the pipeline's own
  sentinels (``daylily.successful_run`` / ``daylily.failed_run``), an exit-status file its wrapper
  writes, and whether the session still lives. When the engine stops, the session keeps running;
  the restarted engine (same monitor id) re-adopts it instead of starting it again.
* Every step has a timeout and a log file (STATE_DIR/logs/<sanitised>/<step>.log). On timeout it
  gets Ctrl-C (SIGINT to its process group, or ``tmux send-keys C-c``), ``kill_grace_seconds``,
  then a kill. On failure the log's last lines are stored on the workset.
* Completed steps are recorded on the workset (``steps``) through the lease, so a retry resumes at
  the failed step, and a holder whose lease moved on writes nothing.

Runners: ``CommandRunner`` on this host (default), the same over SSH (``kind = "ssh"``, host keys
checked), and ``SimulatedRunner`` for the demo and tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from wsmon.core.clock import Clock, SystemClock
from wsmon.core.models import Lease, StepRecord, Workset, WorksetState
from wsmon.core.textsafe import strip_control

if TYPE_CHECKING:
    from wsmon.config.settings import Settings
    from wsmon.engine.store import Store

log = structlog.get_logger(__name__)

STEPS = ("stage", "clone", "run", "export")
SUCCESS_SENTINEL = "daylily.successful_run"
FAILURE_SENTINEL = "daylily.failed_run"
EXIT_FILE = ".wsmon-exit-status"
OWNER_FILE = ".wsmon-owner.json"
_LOCATION = re.compile(r"^\s*Location:\s*(\S.*?)\s*$", re.MULTILINE)
_UNSAFE_TOKEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def child_env() -> dict[str, str]:
    """The environment for steps and tmux: wsmon's own variables (the Linear key and Slack
    webhook arrive as WSMON_* from the service's environment file) never reach a pipeline."""
    return {k: v for k, v in os.environ.items() if not k.startswith("WSMON_")}


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


# -- command templates ----------------------------------------------------------------------

class TemplateError(ValueError):
    """A runner template is invalid (the text says so, classified WS-CFG-014)."""


def _template_tokens(template: list[str] | str) -> list[str]:
    if isinstance(template, str):
        try:
            tokens = shlex.split(template)
        except ValueError as exc:
            raise TemplateError(f"invalid command template {template!r}: {exc}") from None
    else:
        tokens = [str(t) for t in template]
    if not tokens:
        raise TemplateError("invalid command template: empty")
    return tokens


def check_token(token: str, what: str) -> str:
    if _UNSAFE_TOKEN.search(token):
        raise StepFailed("validate", f"WS-CFG-010 control characters in {what}: {token!r}",
                         retryable=False)
    return token


def expand(template: list[str] | str, values: dict[str, Any]) -> list[str]:
    """Fill a template token by token. A token that is exactly ``{name}`` with a list value
    becomes that many arguments; otherwise values are substituted as text into one argument.
    ``~/`` at the start of a template token (config, trusted) is expanded."""
    out: list[str] = []
    for token in _template_tokens(template):
        whole = re.fullmatch(r"\{(\w+)\}", token)
        if whole and isinstance(values.get(whole.group(1)), list):
            out.extend(check_token(str(v), whole.group(1)) for v in values[whole.group(1)])
            continue
        if token.startswith("~/"):
            token = os.path.expanduser(token)

        def fill(match: re.Match[str]) -> str:
            key = match.group(1)
            if key not in values:
                raise TemplateError(f"unknown placeholder {{{key}}} in command template {template!r}")
            value = values[key]
            if isinstance(value, list):
                value = " ".join(str(v) for v in value)
            return check_token("" if value is None else str(value), key)

        out.append(re.sub(r"\{(\w+)\}", fill, token))
    return out


def run_suffix_tokens(workset: Workset) -> list[str]:
    work = (workset.metadata or {}).get("work") or {}
    suffix = work.get("run_suffix") if isinstance(work, dict) else None
    if isinstance(suffix, str):
        suffix = shlex.split(suffix)
    if not suffix:
        raise StepFailed("run", "WS-CFG-003 no run suffix in daylily_work.yaml (dy-r)",
                         retryable=False)
    return [check_token(str(t), "run suffix") for t in suffix]


def pipeline_command(settings: Settings, workset: Workset, values: dict[str, Any]) -> str:
    """The shell text the tmux session runs. Daylily compatibility: ``run_prefix`` followed by
    the run suffix tokens, each quoted, exactly as the earlier monitor built it."""
    cfg = settings.runner
    # login_shell_init is operator config (trusted), e.g. conda or module setup
    init = f"{cfg.login_shell_init.strip()}\n" if getattr(cfg, "login_shell_init", None) else ""
    if cfg.run_command:
        return init + shlex.join(expand(cfg.run_command, values))
    if cfg.run_prefix is None:
        raise TemplateError("invalid command template: set runner.run_prefix or runner.run_command")
    prefix = cfg.run_prefix
    if prefix and not prefix.endswith(" "):
        prefix += " "
    return init + prefix + " ".join(shlex.quote(t) for t in run_suffix_tokens(workset))


def template_values(settings: Settings, workset: Workset, pipeline_dir: str | None,
                    local_dir: Path) -> dict[str, Any]:
    work = (workset.metadata or {}).get("work") or {}
    work = work if isinstance(work, dict) else {}
    clone_args = work.get("clone_args") or []
    if isinstance(clone_args, str):
        clone_args = shlex.split(clone_args)
    cluster = workset.cluster_name or work.get("cluster_name") or ""
    s3_uri = (workset.metadata or {}).get("s3_uri") or f"s3://{workset.bucket}/{workset.prefix}"
    export_uri = work.get("export_uri") or ""
    cfg = settings.runner
    values: dict[str, Any] = {
        "workset": workset.workset_id,
        "workset_id": workset.workset_id,
        "workset_safe": sanitise(workset.workset_id),
        "workdir": cfg.workdir,
        "workdir_name": work.get("workdir_name") or sanitise(workset.workset_id),
        "bucket": workset.bucket,
        "prefix": workset.prefix,
        "s3_uri": s3_uri,
        "clone_args": [str(a) for a in clone_args],
        "cluster": cluster,
        "export_uri": export_uri,
        "target_uri": export_uri,
        "pipeline_dir": pipeline_dir or "",
        "analysis_samples": str(local_dir / "stage_samples.tsv"),
        "stage_samples": str(local_dir / "stage_samples.tsv"),
        "local_dir": str(local_dir),
        "profile": settings.aws.profile or "",
        "region": settings.aws.region or "",
        "local_stage_root": getattr(cfg, "local_stage_root", None) or "",
        "reference_bucket": getattr(cfg, "reference_bucket", None) or "",
    }
    for key in ("workset", "workdir_name", "cluster", "export_uri"):
        check_token(str(values[key]), key)
    return values


def tail_text(path: Path, lines: int) -> str | None:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode("utf-8", "replace")
    except OSError:
        return None
    kept = data.splitlines()[-lines:]
    return strip_control("\n".join(kept), keep_newlines=True) or None


# -- hosts: where a step's processes run ----------------------------------------------------

class LocalHost:
    """Steps run on this machine."""

    def wrap(self, argv: Sequence[str]) -> list[str]:
        return list(argv)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(path)

    def read_small(self, path: str) -> str | None:
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                return fh.read(4096)
        except OSError:
            return None

    def write_small(self, path: str, text: str) -> None:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)

    def remove(self, path: str) -> None:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def tail(self, path: str, lines: int) -> str | None:
        return tail_text(Path(path), lines)


class SshHost(LocalHost):
    """Steps run on a head node over ssh. Host keys are checked (``StrictHostKeyChecking=yes``
    comes first, and ssh keeps the first value it sees for an option); the remote side runs the
    argv through its login shell, so every token is quoted with ``shlex.join``."""

    def __init__(self, settings: Settings, timeout: float = 60.0) -> None:
        cfg = settings.runner
        if not cfg.ssh_host:
            raise TemplateError("invalid command template: runner.kind = ssh needs runner.ssh_host")
        self.prefix = ["ssh", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
                       "-o", "ConnectTimeout=15"]
        if cfg.ssh_identity_file:
            self.prefix += ["-i", str(cfg.ssh_identity_file)]
        if cfg.ssh_user:
            self.prefix += ["-l", cfg.ssh_user]
        self.prefix += [str(a) for a in cfg.ssh_extra_args]
        self.prefix += [cfg.ssh_host, "--"]
        self.timeout = timeout

    def wrap(self, argv: Sequence[str]) -> list[str]:
        return self.prefix + [shlex.join(list(argv))]

    def _run(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str] | None:
        try:
            return subprocess.run(self.wrap(argv), capture_output=True, text=True,
                                  timeout=self.timeout, stdin=subprocess.DEVNULL, check=False,
                                  env=child_env())
        except (OSError, subprocess.TimeoutExpired):
            return None

    def exists(self, path: str) -> bool:
        proc = self._run(["test", "-e", path])
        return proc is not None and proc.returncode == 0

    def is_dir(self, path: str) -> bool:
        proc = self._run(["test", "-d", path])
        return proc is not None and proc.returncode == 0

    def read_small(self, path: str) -> str | None:
        proc = self._run(["head", "-c", "4096", path])
        return proc.stdout if proc is not None and proc.returncode == 0 else None

    def write_small(self, path: str, text: str) -> None:
        proc = self._run(["sh", "-c", 'printf "%s" "$1" > "$2"', "sh", text, path])
        if proc is None or proc.returncode != 0:
            raise OSError(f"could not write {path} on the head node")

    def remove(self, path: str) -> None:
        self._run(["rm", "-f", "--", path])

    def makedirs(self, path: str) -> None:
        self._run(["mkdir", "-p", "--", path])

    def tail(self, path: str, lines: int) -> str | None:
        proc = self._run(["tail", "-n", str(lines), "--", path])
        if proc is None or proc.returncode != 0:
            return None
        return strip_control(proc.stdout, keep_newlines=True) or None


# -- the command runner ---------------------------------------------------------------------

_TMUX_START_LOCK = threading.Lock()

class CommandRunner(BaseRunner):
    """Real steps: subprocesses for stage/clone/export, tmux for the pipeline."""

    kind = "command"

    def __init__(self, settings: Settings, *, clock: Clock | None = None,
                 host: LocalHost | None = None, monotonic: Callable[[], float] | None = None) -> None:
        super().__init__(settings, clock=clock)
        self.host = host or (SshHost(settings) if self.cfg.kind == "ssh" else LocalHost())
        # subprocesses live in real time whatever clock the store uses (tests move a ManualClock)
        self._monotonic = monotonic or time.monotonic
        self.state_dir = Path(settings.state_dir)

    # -- helpers --
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
                pipeline_dir = str(Path(self.cfg.workdir) / sanitise(workset.workset_id))
                rec = book.start(name, None, "no clone_command: using the work directory")
                self.host.makedirs(pipeline_dir)
                state["pipeline_dir"] = pipeline_dir
                book.finish(rec, "succeeded", pipeline_dir=pipeline_dir)
                return None
            if name == "export" and not values["export_uri"]:
                rec = book.start(name, None)
                book.finish(rec, "skipped", detail="no export_uri in daylily_work.yaml")
                return None
            template = getattr(self.cfg, f"{name}_command")
            argv = expand(template, values)
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
            if found is None or not os.path.isabs(found) or _UNSAFE_TOKEN.search(found):
                detail = "clone printed no 'Location:' line with an absolute directory"
                book.finish(rec, "failed", exit_code=code, detail=detail)
                return RunOutcome("failed", name, detail + ("\n" + tail if tail else ""), tail, False)
            state["pipeline_dir"] = found
            extra["pipeline_dir"] = found
        book.finish(rec, "succeeded", exit_code=0, **extra)
        return None

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
        marker = f"=== wsmon attempt {attempt} clone"
        text = text[text.rfind(marker):] if marker in text else text
        matches = _LOCATION.findall(text)
        return matches[-1].strip().strip("'\"") if matches else None

    def _run_process(self, argv: list[str], log_path: Path, timeout: float, job: Job,
                     attempt: int, name: str) -> tuple[int, bool]:
        """Run to completion; returns (exit code, timed out). Abort interrupts it."""
        wrapped = self.host.wrap(argv)
        with open(log_path, "ab") as out:
            out.write(f"=== wsmon attempt {attempt} {name} {self.clock.now().isoformat()} argv: "
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

    # -- the pipeline in tmux --
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
        script = (f"{{ {command}\n}} 2>&1 | tee -a {shlex.quote(pipe_log)}\n"
                  f"rc=${{PIPESTATUS[0]}}\n"
                  f"printf '%s\\n' \"$rc\" > {shlex.quote(exit_file)}\nexit \"$rc\"\n")
        with open(log_path, "ab") as out:
            out.write(f"=== wsmon attempt {book.attempt} run {self.clock.now().isoformat()} "
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


def book_safe_finish(book: StepBook, rec: StepRecord, status: str, detail: str) -> None:
    """Record an interruption if the lease still allows it (after LeaseLost it does not)."""
    try:
        book.finish(rec, status, detail=detail)
    except Exception:  # LeaseLost: the new holder owns the record now
        pass


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


# -- the simulated runner -------------------------------------------------------------------

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


def make_runner(settings: Settings, *, clock: Clock | None = None) -> BaseRunner:
    if settings.runner.kind == "simulated":
        return SimulatedRunner(settings, clock=clock)
    return CommandRunner(settings, clock=clock)
