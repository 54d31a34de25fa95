"""Step execution: the Daylily steps (stage, clone, run, export) for one workset attempt.

* Steps are command templates from ``settings.runner`` (``templates.py``): without shell syntax
  they are argv, each placeholder exactly one argument that never meets a shell; an operator's
  template that uses shell syntax (``echo cloning && day-clone {clone_args}``) runs through
  ``bash -lc`` with every value ``shlex.quote``'d. The pipeline runs ``run_prefix`` + the
  workset's run suffix inside a detached tmux session (as the earlier Daylily monitor did), with
  every suffix token ``shlex.quote``'d.
* Stage, clone and export run in a session of their own and outlive an engine crash; a restarted
  engine waits for the survivor (or takes its recorded exit status) instead of starting the step
  again (``command.py``).
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

Modules: ``base`` (job handle, outcomes, step book, the step loop), ``templates`` (argv templates),
``hosts`` (local or SSH host), ``tmux`` (the pipeline in tmux), ``command`` (CommandRunner),
``simulated`` (SimulatedRunner).
"""


from __future__ import annotations

from typing import TYPE_CHECKING

from wsmon.core.clock import Clock
from wsmon.engine.runner.base import (
    STEPS,
    Aborted,
    BaseRunner,
    Job,
    RunOutcome,
    StepBook,
    StepFailed,
    book_safe_finish,
    reset_for_rerun,
    sanitise,
    session_name,
)
from wsmon.engine.runner.command import CommandRunner
from wsmon.engine.runner.hosts import LocalHost, SshHost, child_env, tail_text
from wsmon.engine.runner.simulated import PERMANENT_ERRORS, TRANSIENT_ERRORS, SimulatedRunner
from wsmon.engine.runner.templates import (
    TemplateError,
    check_token,
    expand,
    pipeline_command,
    run_suffix_tokens,
    template_values,
)
from wsmon.engine.runner.tmux import EXIT_FILE, FAILURE_SENTINEL, OWNER_FILE, SUCCESS_SENTINEL

if TYPE_CHECKING:
    from wsmon.config.settings import Settings


def make_runner(settings: Settings, *, clock: Clock | None = None) -> BaseRunner:
    if settings.runner.kind == "simulated":
        return SimulatedRunner(settings, clock=clock)
    return CommandRunner(settings, clock=clock)


__all__ = [
    "Aborted", "BaseRunner", "CommandRunner", "EXIT_FILE", "FAILURE_SENTINEL", "Job", "LocalHost",
    "OWNER_FILE", "PERMANENT_ERRORS", "RunOutcome", "STEPS", "SUCCESS_SENTINEL", "SimulatedRunner",
    "SshHost", "StepBook", "StepFailed", "TRANSIENT_ERRORS", "TemplateError", "book_safe_finish",
    "check_token", "child_env", "expand", "make_runner", "pipeline_command", "reset_for_rerun",
    "run_suffix_tokens", "sanitise", "session_name", "tail_text", "template_values",
]
