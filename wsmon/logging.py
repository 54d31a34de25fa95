"""Logging: structlog for wsmon, stdlib loggers (botocore, apscheduler) through the same output.

- headless: JSON lines on stdout (console lines when stdout is a terminal, unless
  ``logging.format`` says otherwise);
- tui: a rotating file under the state directory and nothing on stdout/stderr, because the
  dashboard owns the terminal;
- cli: readable lines on stderr, so a command's stdout stays clean for pipes.

Every event passes through the one redactor (``wsmon.core.redaction``, which notifications use
too) before it is rendered: values under keys that look like secrets are masked, and AWS keys,
Linear keys and Slack webhook URLs are masked wherever they appear (nested values, longer strings,
exception text).

Every face sets logging up here and nowhere else: the service (``headless``), the dashboard
(``tui``), commands that log (``cli``) and the demo (either of the first two).
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

import structlog

from wsmon.core.redaction import MASK, is_secret_key, redact_value

if TYPE_CHECKING:
    from wsmon.config.settings import Settings


def redact_event(logger: Any, method_name: str, event_dict: Any) -> Any:
    """structlog processor: runs after exceptions are formatted, so their text is masked too."""
    return {key: value if key in _FORMATTER_META else
            (MASK if is_secret_key(key) and value not in (None, "") else redact_value(value))
            for key, value in event_dict.items()}


# Keys structlog's ProcessorFormatter needs intact until it removes them itself.
_FORMATTER_META = frozenset({"_record", "_from_structlog"})


def _strip_control_values(logger: Any, method_name: str, event_dict: Any) -> Any:
    # Console output goes to a terminal: escape sequences from S3 keys or error text must not act.
    from wsmon.core.textsafe import strip_control

    return {key: strip_control(value, keep_newlines=True) if isinstance(value, str) else value
            for key, value in event_dict.items()}


# ---- setup --------------------------------------------------------------------------------------

Mode = Literal["headless", "tui", "cli"]
_OURS = "_wsmon_handler"
# Libraries whose INFO/DEBUG chatter is not for operators; their warnings still come through.
QUIET_LIBRARIES = ("botocore", "boto3", "urllib3", "s3transfer", "apscheduler", "moto", "werkzeug",
                   "httpx", "httpcore", "asyncio", "markdown_it", "filelock")
LOG_FILE_BYTES = 10 * 1024 * 1024
LOG_FILE_BACKUPS = 5


def _shared_processors() -> list[Any]:
    return [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        structlog.processors.UnicodeDecoder(),
        redact_event,
    ]


def _formatter(json_lines: bool, colors: bool) -> logging.Formatter:
    renderer: Any
    if json_lines:
        renderer = structlog.processors.JSONRenderer(sort_keys=False, ensure_ascii=False)
        final = [structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=colors, exception_formatter=structlog.dev.plain_traceback)
        final = [structlog.stdlib.ProcessorFormatter.remove_processors_meta, _strip_control_values, renderer]
    return structlog.stdlib.ProcessorFormatter(
        processors=final,
        foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *_shared_processors()],
    )


def _isatty(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def default_log_file(settings: Settings) -> Path:
    if settings.logging.file:
        return Path(settings.logging.file).expanduser()
    return Path(settings.state_dir).expanduser() / "wsmon.log"


def configure_logging(settings: Settings, mode: Mode = "cli", stream: IO[str] | None = None) -> Path | None:
    """Set up structlog and the stdlib root logger for ``mode``. Returns the log file, if one is written.

    In ``tui`` mode a log file that cannot be created is reported on stderr and logging is off,
    so the dashboard still starts; the other modes raise ``OSError``.

    Safe to call again (tests, a dashboard that starts after a CLI command): handlers this function
    added before are replaced, others are left alone.
    """
    level = getattr(logging, settings.logging.level.upper())
    fmt = settings.logging.format
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _OURS, False):
            root.removeHandler(handler)
            handler.close()

    handlers: list[logging.Handler] = []
    log_file: Path | None = None
    if mode == "tui" or settings.logging.file:
        log_file = default_log_file(settings)
        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            file_handler = logging.handlers.RotatingFileHandler(
                log_file, maxBytes=LOG_FILE_BYTES, backupCount=LOG_FILE_BACKUPS, encoding="utf-8")
        except OSError as exc:
            if mode != "tui":
                raise
            # A log file that cannot be written must not keep the dashboard from starting; said
            # now, before the dashboard takes the terminal.
            print(f"wsmon: logging not configured: {exc}", file=sys.stderr)
            log_file = None
        else:
            file_handler.setFormatter(_formatter(json_lines=fmt != "console", colors=False))
            handlers.append(file_handler)
    if mode != "tui":
        out = stream if stream is not None else (sys.stdout if mode == "headless" else sys.stderr)
        terminal = _isatty(out)
        json_lines = fmt == "json" or (fmt == "auto" and not terminal)
        stream_handler = logging.StreamHandler(out)
        stream_handler.setFormatter(_formatter(json_lines=json_lines, colors=terminal))
        handlers.append(stream_handler)
    elif mode == "tui":
        # Anything a library prints through a handler of its own would tear the screen.
        for handler in list(root.handlers):
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler) \
                    and getattr(handler, "stream", None) in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
                root.removeHandler(handler)

    for handler in handlers:
        setattr(handler, _OURS, True)
        root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(logging.WARNING, level))
    logging.captureWarnings(True)

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.filter_by_level,
            structlog.stdlib.PositionalArgumentsFormatter(),
            *_shared_processors(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    log = structlog.get_logger("wsmon.config")
    for warning in settings.config_warnings:
        log.warning("config_warning", detail=warning)
    return log_file


def reset_logging() -> None:
    """Undo configure_logging: remove its handlers and restore structlog's defaults (tests)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _OURS, False):
            root.removeHandler(handler)
            handler.close()
    logging.captureWarnings(False)
    structlog.reset_defaults()
