"""Reading a growing log a piece at a time, on this host or on a head node over ssh.

A ``LogFollower`` remembers where it stopped and which file it was reading (device and inode), so
each call reads only the bytes added since; when the log shrank (truncated) or is another file
(rotated, or a new attempt replaced it) it starts again from the top and says so. A backlog larger
than ``catch_up_bytes`` (a restarted engine meeting a log of gigabytes) is not read in full: the
follower jumps to the last ``catch_up_bytes``, because Snakemake restates "N of M steps" after
every job, and marks the per-rule counts as partial.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from wsmon.core.textsafe import strip_control
from wsmon.engine.progress.snakelog import SnakemakeLogParser

READ_CHUNK_BYTES = 1 << 20
DEFAULT_MAX_BYTES_PER_POLL = 32 << 20
DEFAULT_CATCH_UP_BYTES = 16 << 20


@dataclass(frozen=True)
class LogStat:
    size: int
    identity: str  # device:inode; another value means another file at the same path


@dataclass(frozen=True)
class LogChunk:
    stat: LogStat | None  # None: there is no file at the path
    data: bytes


class LogReadError(Exception):
    """The log could not be read (permissions, ssh down); the message is for the operator."""


class LogSource(Protocol):
    def read_from(self, path: str, offset: int, limit: int) -> LogChunk:
        """The file's size and identity, and up to ``limit`` bytes from ``offset`` (none when
        the file is not longer than ``offset``)."""


class LocalLogSource:
    def read_from(self, path: str, offset: int, limit: int) -> LogChunk:
        try:
            with open(path, "rb") as fh:
                st = os.fstat(fh.fileno())
                stat = LogStat(st.st_size, f"{st.st_dev}:{st.st_ino}")
                if st.st_size <= offset or limit <= 0:
                    return LogChunk(stat, b"")
                fh.seek(offset)
                return LogChunk(stat, fh.read(limit))
        except FileNotFoundError:
            return LogChunk(None, b"")
        except OSError as exc:
            raise LogReadError(f"cannot read {strip_control(path)}: {exc.strerror or exc}") from None


# One round trip: the stat line, then the new bytes. Paths and numbers are arguments ($1..$3),
# never pasted into the script.
_REMOTE_READ = (
    's=$(stat -L -c "%s %d:%i" -- "$1" 2>/dev/null) || { [ -e "$1" ] && exit 4; exit 3; }; '
    'printf "%s\\n" "$s"; size=${s%% *}; '
    'if [ "$size" -gt "$2" ] && [ "$3" -gt 0 ]; then tail -c +"$(($2 + 1))" -- "$1" | head -c "$3"; fi'
)


class CommandLogSource:
    """Reads through a host's argv wrapper (``SshHost.wrap`` runs argv on the head node)."""

    def __init__(self, wrap: Callable[[Sequence[str]], list[str]], *, timeout: float = 30.0,
                 env: dict[str, str] | None = None) -> None:
        self.wrap = wrap
        self.timeout = timeout
        self.env = env

    def read_from(self, path: str, offset: int, limit: int) -> LogChunk:
        argv = self.wrap(["sh", "-c", _REMOTE_READ, "sh", path, str(offset), str(limit)])
        try:
            proc = subprocess.run(argv, capture_output=True, timeout=self.timeout,
                                  stdin=subprocess.DEVNULL, check=False, env=self.env)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise LogReadError(f"cannot reach the head node to read the log: {exc}") from None
        if proc.returncode == 3:
            return LogChunk(None, b"")
        if proc.returncode != 0:
            err = strip_control(proc.stderr.decode("utf-8", "replace").strip()[:200])
            raise LogReadError(f"cannot read {strip_control(path)} on the head node "
                               f"(exit {proc.returncode}){': ' + err if err else ''}")
        head, _, data = proc.stdout.partition(b"\n")
        size, _, identity = head.decode("ascii", "replace").partition(" ")
        if not size.isdigit():
            raise LogReadError(f"unreadable answer reading {strip_control(path)} on the head node")
        return LogChunk(LogStat(int(size), identity), data)


@dataclass
class PollResult:
    read_bytes: int = 0
    progress_changed: bool = False
    status: str = ""


class LogFollower:
    """One log, followed incrementally into one parser."""

    def __init__(self, source: LogSource, path: str, *, tail_lines: int = 200,
                 max_bytes_per_poll: int = DEFAULT_MAX_BYTES_PER_POLL,
                 catch_up_bytes: int = DEFAULT_CATCH_UP_BYTES) -> None:
        self.source = source
        self.path = path
        self.parser = SnakemakeLogParser(tail_lines=tail_lines)
        self.offset = 0
        self.identity: str | None = None
        self.max_bytes_per_poll = max_bytes_per_poll
        self.catch_up_bytes = catch_up_bytes
        self.partial = False  # the start of the log was skipped: per-rule counts are partial
        self.seen_file = False
        self.status = "log not written yet"

    @property
    def progress(self):
        return self.parser.progress

    def poll(self) -> PollResult:
        """Read what was added since the last call. Never raises for a bad log: the problem
        becomes ``status``."""
        result = PollResult()
        try:
            self._poll(result)
        except LogReadError as exc:
            self.status = str(exc)
        result.status = self.status
        return result

    def _poll(self, result: PollResult) -> None:
        chunk = self.source.read_from(self.path, self.offset, min(READ_CHUNK_BYTES, self.max_bytes_per_poll))
        if chunk.stat is None:
            self.status = ("log is gone (moved or deleted)" if self.seen_file
                           else "log not written yet")
            return
        self.seen_file = True
        note = ""
        if self.identity is not None and chunk.stat.identity != self.identity:
            note = "log was replaced (rotated): reading the new file from the start"
            self._restart()
        elif chunk.stat.size < self.offset:
            note = "log was truncated: reading it again from the start"
            self._restart()
        self.identity = chunk.stat.identity
        if note:
            chunk = self.source.read_from(self.path, self.offset, min(READ_CHUNK_BYTES, self.max_bytes_per_poll))
            if chunk.stat is None:
                return
        if chunk.stat.size - self.offset > self.catch_up_bytes + self.max_bytes_per_poll:
            self.offset = chunk.stat.size - self.catch_up_bytes
            self.parser.resync()
            self.partial = True
            note = note or "log is large: read from its last part, per-rule counts are partial"
            chunk = self.source.read_from(self.path, self.offset, READ_CHUNK_BYTES)
            if chunk.stat is None:
                return
        budget = self.max_bytes_per_poll
        while True:
            if chunk.data:
                changed = self.parser.feed(chunk.data)
                self.offset += len(chunk.data)
                result.read_bytes += len(chunk.data)
                result.progress_changed |= changed > 0
                budget -= len(chunk.data)
            if budget <= 0 or not chunk.data or chunk.stat is None or self.offset >= chunk.stat.size:
                break
            chunk = self.source.read_from(self.path, self.offset, min(READ_CHUNK_BYTES, budget))
        self.status = note or ("progress unknown (no Snakemake progress in the log yet)"
                               if not self.progress.known else "ok")

    def _restart(self) -> None:
        self.offset = 0
        self.parser.reset_line_state()
        self.progress.running.clear()
