"""The engine watching itself: systemd notifications and the scheduler's lag and overruns.

``SystemdNotifier`` speaks the sd_notify datagram protocol directly (a few lines; no library
needed): ``READY=1`` once the jobs are scheduled, ``WATCHDOG=1`` only from the heartbeat job after
its store write went through (so a wedged scheduler, an exhausted job pool or a store that no
longer takes writes all stop the pings, and systemd restarts the engine after ``WatchdogSec``),
``STATUS=`` with a one-line summary, and ``STOPPING=1`` on shutdown. Outside systemd
(no ``$NOTIFY_SOCKET``) every call is a no-op.

``JobHealth`` listens to APScheduler's events: each run's lag (started how long after it was
due), and every run that did not happen (``EVENT_JOB_MAX_INSTANCES``: the previous run was still
going; ``EVENT_JOB_MISSED``: too late to run at all) is counted and logged instead of being a
warning nobody reads. The engine publishes the figures in its heartbeat (``wsmon health``, the
dashboard header, the ``engine_overloaded`` alert) and to CloudWatch.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import structlog

log = structlog.get_logger(__name__)

OVERRUN_WINDOW_SECONDS = 600.0  # "recent" overruns and worst lag are counted over this window


class SystemdNotifier:
    """sd_notify over ``$NOTIFY_SOCKET`` (a path, or ``@name`` in the abstract namespace)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or ""
        if address.startswith("@"):
            address = "\0" + address[1:]
        self._address = address or None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._failed_said = False
        usec = env.get("WATCHDOG_USEC") or ""
        pid = env.get("WATCHDOG_PID") or ""
        own = not pid or (pid.isdigit() and int(pid) == os.getpid())
        self.watchdog_seconds = int(usec) / 1e6 if usec.isdigit() and int(usec) > 0 and own else None

    @property
    def enabled(self) -> bool:
        return self._address is not None

    @property
    def ping_interval(self) -> float | None:
        """How often to ping: a third of WatchdogSec, so one slow beat is not yet fatal."""
        return None if self.watchdog_seconds is None else max(0.5, self.watchdog_seconds / 3)

    def send(self, *fields: str) -> bool:
        if self._address is None:
            return False
        payload = "\n".join(fields).encode("utf-8", "replace")
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    self._sock.setblocking(False)
                self._sock.sendto(payload, self._address)
                return True
            except OSError as exc:  # systemd gone or the socket full: never stops the engine
                if not self._failed_said:
                    self._failed_said = True
                    log.warning("systemd_notify_failed", error=type(exc).__name__)
                return False

    def ready(self, status: str) -> bool:
        return self.send("READY=1", "STATUS=" + _one_line(status))

    def watchdog(self, status: str | None = None) -> bool:
        return self.send("WATCHDOG=1", *(["STATUS=" + _one_line(status)] if status else []))

    def stopping(self, status: str = "stopping") -> bool:
        return self.send("STOPPING=1", "STATUS=" + _one_line(status))

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:200]


@dataclass
class _JobFigures:
    interval_seconds: float
    runs: int = 0
    overruns: int = 0  # runs skipped because the previous one still ran, or missed outright
    last_lag: float = 0.0
    last_duration: float = 0.0
    recent: deque = field(default_factory=deque)  # (monotonic, lag) per run
    recent_overruns: deque = field(default_factory=deque)  # monotonic per overrun


class JobHealth:
    """Lag, duration and overruns per scheduler job (thread-safe; wall-clock, as the scheduler)."""

    def __init__(self, window_seconds: float = OVERRUN_WINDOW_SECONDS) -> None:
        self.window = window_seconds
        self._jobs: dict[str, _JobFigures] = {}
        self._lock = threading.Lock()
        self.on_overrun: Any = None  # callable(job, kind) set by the engine (metrics)

    def add_job(self, name: str, interval_seconds: float) -> None:
        with self._lock:
            self._jobs[name] = _JobFigures(interval_seconds=float(interval_seconds))

    def attach(self, scheduler: Any) -> None:
        from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, EVENT_JOB_SUBMITTED

        scheduler.add_listener(self._on_event,
                               EVENT_JOB_SUBMITTED | EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)

    def _on_event(self, event: Any) -> None:
        from apscheduler.events import EVENT_JOB_SUBMITTED

        name = getattr(event, "job_id", None)
        due = [t for t in (getattr(event, "scheduled_run_times", None)
                           or [getattr(event, "scheduled_run_time", None)]) if t is not None]
        if event.code == EVENT_JOB_SUBMITTED:
            lag = (datetime.now(timezone.utc) - max(due)).total_seconds() if due else 0.0
            self.started(name, max(0.0, lag))
        else:
            self.overran(name, "skipped" if event.code != _missed_code() else "missed")

    def started(self, name: str, lag: float) -> None:
        now = time.monotonic()
        with self._lock:
            figures = self._jobs.get(name)
            if figures is None:
                return
            figures.runs += 1
            figures.last_lag = lag
            figures.recent.append((now, lag))
            self._trim(figures, now)

    def finished(self, name: str, duration: float) -> None:
        with self._lock:
            figures = self._jobs.get(name)
            if figures is not None:
                figures.last_duration = duration

    def overran(self, name: str, kind: str) -> None:
        now = time.monotonic()
        with self._lock:
            figures = self._jobs.get(name)
            if figures is None:
                return
            figures.overruns += 1
            figures.recent_overruns.append(now)
            self._trim(figures, now)
            total, duration = figures.overruns, figures.last_duration
            interval = figures.interval_seconds
        log.warning("job_overrun", job=name, kind=kind, overruns=total,
                    last_duration_seconds=round(duration, 3), interval_seconds=interval)
        if self.on_overrun is not None:
            try:
                self.on_overrun(name, kind)
            except Exception:  # figures are best effort; the job itself matters more
                pass

    def _trim(self, figures: _JobFigures, now: float) -> None:
        while figures.recent and now - figures.recent[0][0] > self.window:
            figures.recent.popleft()
        while figures.recent_overruns and now - figures.recent_overruns[0] > self.window:
            figures.recent_overruns.popleft()

    def summary(self) -> dict[str, dict[str, float]]:
        """Per job: interval, runs, overruns (total and within the window), last and worst lag
        within the window, last duration; seconds rounded to milliseconds."""
        now = time.monotonic()
        out = {}
        with self._lock:
            for name, f in self._jobs.items():
                self._trim(f, now)
                out[name] = {
                    "interval_seconds": f.interval_seconds, "runs": f.runs,
                    "overruns": f.overruns, "recent_overruns": len(f.recent_overruns),
                    "lag_seconds": round(f.last_lag, 3),
                    "max_lag_seconds": round(max((lag for _, lag in f.recent), default=0.0), 3),
                    "duration_seconds": round(f.last_duration, 3),
                }
        return out


def _missed_code() -> int:
    from apscheduler.events import EVENT_JOB_MISSED

    return EVENT_JOB_MISSED


def worst_job(jobs: Mapping[str, Mapping[str, Any]]) -> tuple[str, float] | None:
    """The job with the largest recent lag (name, seconds), from a heartbeat's ``jobs`` details."""
    best: tuple[str, float] | None = None
    for name, figures in (jobs or {}).items():
        try:
            lag = float(figures.get("max_lag_seconds", 0.0))
        except (TypeError, ValueError, AttributeError):
            continue
        if best is None or lag > best[1]:
            best = (name, lag)
    return best
