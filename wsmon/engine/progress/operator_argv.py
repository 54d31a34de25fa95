"""The commands an operator runs to look inside a workset's run: the whole log in a pager, a
read-only attach to its tmux session, and where its folder is in the S3 console.

Built as argv lists from settings and the workset's stored progress (session name, log path, head
node), never as shell text: on the SSH runner the remote side gets one ``shlex.join``'d string
after ``--``, exactly as the runner's own ssh calls do. The dashboard runs them with the terminal
handed over (``App.suspend``); ``wsmon show`` prints them.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING
from urllib.parse import quote

from wsmon.core.models import Workset
from wsmon.engine.runner.hosts import SshHost

if TYPE_CHECKING:
    from wsmon.config.settings import Settings

DEFAULT_PAGER = ["less", "-R", "+G"]


class NothingToOpen(Exception):
    """The workset has no log or session (yet); the message says which, for the operator."""


def _interactive_ssh(settings: Settings, argv: Sequence[str]) -> list[str]:
    """ssh with a terminal (-t) for a pager or tmux; the same host-key checks as the runner."""
    wrapped = SshHost(settings).wrap(argv)
    return [wrapped[0], "-t", *wrapped[1:]]


def _remote(workset: Workset) -> bool:
    return bool(workset.progress and workset.progress.log_host)


def pager_argv(settings: Settings, workset: Workset, environ: Mapping[str, str]) -> list[str]:
    """The whole run log in ``$PAGER`` here, or in ``less`` on the head node for the SSH runner."""
    progress = workset.progress
    if progress is None or not progress.log_path:
        raise NothingToOpen("no pipeline log yet (the run step has not started)")
    if _remote(workset):
        return _interactive_ssh(settings, [*DEFAULT_PAGER, "--", progress.log_path])
    pager = shlex.split(environ.get("PAGER", "")) or list(DEFAULT_PAGER)
    return [*pager, progress.log_path]


def tmux_argv(settings: Settings, *args: str) -> list[str]:
    argv = ["tmux"]
    if settings.runner.tmux_socket:
        argv += ["-L", settings.runner.tmux_socket]
    return argv + list(args)


def attach_argv(settings: Settings, workset: Workset) -> list[str]:
    """Attach read-only (``tmux attach -r``) to the workset's session; detach returns."""
    progress = workset.progress
    if progress is None or not progress.session:
        raise NothingToOpen("no tmux session recorded (the run step has not started)")
    argv = tmux_argv(settings, "attach-session", "-r", "-t", f"={progress.session}")
    return _interactive_ssh(settings, argv) if _remote(workset) else argv


def s3_uri(workset: Workset) -> str:
    return f"s3://{workset.bucket}/{workset.prefix}"


def s3_console_url(workset: Workset, region: str | None) -> str:
    """The folder in the AWS console (the region only picks the console endpoint)."""
    url = (f"https://s3.console.aws.amazon.com/s3/buckets/{quote(workset.bucket, safe='')}"
           f"?prefix={quote(workset.prefix, safe='')}")
    return url + (f"&region={quote(region, safe='')}" if region else "")
