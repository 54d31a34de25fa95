"""Where a step's processes run: this machine, or a head node over ssh (host keys checked). Both run
an argv and read, write or tail small files."""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from wsmon.core.textsafe import strip_control
from wsmon.engine.runner.templates import TemplateError

if TYPE_CHECKING:
    from wsmon.config.settings import Settings


def child_env() -> dict[str, str]:
    """The environment for steps and tmux: wsmon's own variables (the Linear key and Slack
    webhook arrive as WSMON_* from the service's environment file) never reach a pipeline."""
    return {k: v for k, v in os.environ.items() if not k.startswith("WSMON_")}


ATTEMPT_HEADER = "=== wsmon attempt "


def this_run_only(text: str) -> str:
    """What follows the last ``=== wsmon attempt`` header: a step log is appended to across
    attempts, and a failure must be classified from its own output, never from an earlier
    attempt's text (a retried transient error read as the old permanent one)."""
    at = text.rfind("\n" + ATTEMPT_HEADER)
    if at >= 0:
        return text[text.index("\n", at + 1) + 1:] if "\n" in text[at + 1:] else ""
    if text.startswith(ATTEMPT_HEADER):
        return text.split("\n", 1)[1] if "\n" in text else ""
    return text


def tail_text(path: Path, lines: int) -> str | None:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode("utf-8", "replace")
    except OSError:
        return None
    kept = this_run_only(data).splitlines()[-lines:]
    return strip_control("\n".join(kept), keep_newlines=True) or None


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
        proc = self._run(["tail", "-c", str(64 * 1024), "--", path])
        if proc is None or proc.returncode != 0:
            return None
        kept = this_run_only(proc.stdout).splitlines()[-lines:]
        return strip_control("\n".join(kept), keep_newlines=True) or None
