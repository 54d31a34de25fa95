"""The engine as a process: ``wsmon --headless`` (run until SIGTERM/SIGINT, then stop cleanly) and
``wsmon --headless --once`` (one cycle), with their exit codes."""

from __future__ import annotations

import os
import signal
import threading
from typing import TYPE_CHECKING, Any

import structlog

from wsmon.core.exit_codes import EXIT_SOURCE, EXIT_STORE, EXIT_USAGE
from wsmon.core.textsafe import strip_control
from wsmon.engine.runner import TemplateError
from wsmon.engine.service import Engine
from wsmon.engine.store import StoreError

if TYPE_CHECKING:
    from wsmon.config.settings import Settings

log = structlog.get_logger(__name__)


def _configure_logging(settings: Settings) -> None:
    from wsmon.logging import configure_logging

    configure_logging(settings, "headless")


def _open_engine(settings: Settings) -> tuple[Engine | None, int]:
    try:
        return Engine(settings), 0
    except StoreError as exc:
        log.error("store_unavailable", store=settings.store_url.split("?", 1)[0],
                  error=strip_control(str(exc)))
        return None, EXIT_STORE
    except TemplateError as exc:  # e.g. runner.kind = "ssh" without runner.ssh_host
        log.error("engine_config_invalid", error=strip_control(str(exc)))
        return None, EXIT_USAGE


def run_headless(settings: Settings) -> int:
    """``wsmon --headless``: run until SIGTERM/SIGINT, then stop cleanly (exit 0)."""
    _configure_logging(settings)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        if stop.is_set():
            # a second signal means "now": leases expire and are recovered (fences keep it safe)
            log.warning("second_signal_exiting_now", signal=signal.Signals(signum).name)
            os._exit(130)
        log.info("signal_received", signal=signal.Signals(signum).name,
                 grace_seconds=settings.runner.shutdown_grace_seconds)
        stop.set()

    engine, code = _open_engine(settings)
    if engine is None:
        return code
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        engine.start()
        while not stop.wait(1.0):
            pass
    except StoreError as exc:
        log.error("engine_failed", error=strip_control(str(exc)))
        return EXIT_STORE
    finally:
        engine.stop(settings.runner.shutdown_grace_seconds)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def run_once(settings: Settings, timeout: float | None = None) -> int:
    """``wsmon --headless --once``: poll, schedule, start, wait for what started (or timeout).

    0 when the cycle ran; 4 (the CLI's "store cannot be opened or reached") when it could not;
    5 when it ran but an S3 discovery source could not be listed (so new worksets were missed).
    """
    _configure_logging(settings)
    engine, code = _open_engine(settings)
    if engine is None:
        return code
    try:
        summary = engine.run_cycle()
        finished = engine.wait_idle(timeout)
        log.info("cycle_done", started=summary["started"], polled=summary["polled"],
                 all_finished=finished)
        failures = summary["source_failures"]
        if failures:
            log.error("cycle_source_unreachable", sources=[f["source"] for f in failures],
                      code=failures[0].get("code"), error=failures[0].get("message"),
                      hint="check aws.endpoint_url / region / credentials and that the bucket exists")
            code = EXIT_SOURCE
    except StoreError as exc:
        log.error("cycle_failed", error=strip_control(str(exc)))
        code = EXIT_STORE
    finally:
        engine.stop(0 if timeout is not None else settings.runner.shutdown_grace_seconds)
    return code
