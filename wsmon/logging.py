"""Logging: structlog for wsmon, stdlib loggers (botocore, apscheduler) through the same output.

- headless: JSON lines on stdout (console lines when stdout is a terminal, unless
  ``logging.format`` says otherwise);
- tui: a rotating file under the state directory and nothing on stdout/stderr, because the
  dashboard owns the terminal;
- cli: readable lines on stderr, so a command's stdout stays clean for pipes.

Every event passes through ``redact_value`` before it is rendered: values under keys that look like
secrets are masked, and AWS keys, Linear keys and Slack webhook URLs are masked wherever they appear
(nested values, longer strings, exception text). ``redact`` / ``redact_value`` are public so the
notifier masks outgoing text the same way.
"""

from __future__ import annotations

import logging
import logging.handlers
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

import structlog

if TYPE_CHECKING:
    from wsmon.config.settings import Settings

MASK = "****"

# Key names whose values are secrets. A bare "key" is left alone: S3 object keys are logged
# everywhere and are what an operator needs to find a workset.
_SECRET_KEY_NAME = re.compile(
    r"secret|token|passw(?:or)?d|passwd|passphrase|webhook|authori[sz]ation|credential|cookie|"
    r"api[_-]?key|apikey|access[_-]?key|private[_-]?key|signing[_-]?key|session[_-]?key|"
    r"encryption[_-]?key|client[_-]?key",
    re.IGNORECASE,
)

_SLACK_WEBHOOK = re.compile(r"https?://hooks\.slack(?:-gov)?\.com/[^\s\"'<>`]*", re.IGNORECASE)
_LINEAR_KEY = re.compile(r"\blin_(?:api|oauth)_[A-Za-z0-9]+")
_AWS_ACCESS_KEY_ID = re.compile(r"(?<![A-Za-z0-9])((?:AKIA|ASIA))[A-Z0-9]{16}(?![A-Za-z0-9])")
# A 40-character secret access key right after something that names it:
# aws_secret_access_key = X, "SecretAccessKey": "X", secret: X
_AWS_SECRET_IN_CONTEXT = re.compile(
    r"((?:aws)?[_-]?secret[A-Za-z0-9_-]*[\"']?\s*[:=]?\s*[\"']?\s*)([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])",
    re.IGNORECASE,
)
_AWS_SECRET_ALONE = re.compile(r"^[A-Za-z0-9/+]{40}$")
_BEARER = re.compile(r"\b(bearer|token|basic)(\s+)([A-Za-z0-9._~+/=-]{12,})", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"\b([a-z][a-z0-9+.-]*://[^/\s:@]+:)([^@\s/]+)(@)", re.IGNORECASE)
_SECRET_ASSIGNMENT = re.compile(
    r"\b([A-Za-z0-9_-]*(?:password|passwd|secret|token|api[_-]?key|apikey|access[_-]?key|webhook[_-]?url|"
    r"authorization)[A-Za-z0-9_-]*)([\"']?\s*[:=]\s*[\"']?)(?!(?:bearer|basic|token)\s)(?!\*{4})([^\s\"',;&}\]]+)",
    re.IGNORECASE,
)


# Every pattern above needs one of these words somewhere in the text (or a bare 40-character value).
_MAY_HOLD_SECRET = re.compile(
    r"hooks\.slack|lin_|AKIA|ASIA|secret|bearer|token|basic|://|passw|api[_-]?key|access[_-]?key|webhook|authori",
    re.IGNORECASE,
)


def is_secret_key(name: object) -> bool:
    return isinstance(name, str) and bool(_SECRET_KEY_NAME.search(name))


def redact(text: str) -> str:
    """``text`` with every secret-looking value masked; the rest is left as it was."""
    if not text or (not _MAY_HOLD_SECRET.search(text) and len(text.strip()) != 40):
        return text  # the common case, checked with one search instead of every pattern
    out = _SLACK_WEBHOOK.sub("https://hooks.slack.com/" + MASK, text)
    out = _LINEAR_KEY.sub("lin_api_" + MASK, out)
    out = _AWS_ACCESS_KEY_ID.sub(lambda m: m.group(1) + MASK, out)
    out = _AWS_SECRET_IN_CONTEXT.sub(lambda m: m.group(1) + MASK, out)
    out = _BEARER.sub(lambda m: m.group(1) + m.group(2) + MASK, out)
    out = _URL_PASSWORD.sub(lambda m: m.group(1) + MASK + m.group(3), out)
    out = _SECRET_ASSIGNMENT.sub(lambda m: m.group(1) + m.group(2) + MASK, out)
    stripped = out.strip()
    if _AWS_SECRET_ALONE.match(stripped) and _looks_random(stripped):
        return MASK
    return out


def _looks_random(text: str) -> bool:
    # A value that is only a 40-character mix of cases and digits is a secret access key far more
    # often than anything else (git hashes are lower-case hex, paths have dots and dashes).
    return any(c.isupper() for c in text) and any(c.islower() for c in text) and any(c.isdigit() for c in text)


def redact_value(obj: Any, *, _depth: int = 0) -> Any:
    """``obj`` with secrets masked, at any depth: mappings (by key name and by value), sequences, strings."""
    if _depth > 20:
        return MASK  # something self-referential or absurdly deep: safer to drop than to show
    if obj is None or isinstance(obj, (bool, int, float)):
        return obj
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, Mapping):
        return {key: (MASK if is_secret_key(key) and value not in (None, "") else
                      redact_value(value, _depth=_depth + 1))
                for key, value in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = [redact_value(item, _depth=_depth + 1) for item in obj]
        return tuple(items) if isinstance(obj, tuple) else items
    if type(obj).__name__ == "SecretStr":
        return MASK
    if isinstance(obj, BaseException):
        return redact(f"{type(obj).__name__}: {obj}")
    if isinstance(obj, Path):
        return obj
    text = str(obj)
    cleaned = redact(text)
    return obj if cleaned == text else cleaned


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
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.handlers.RotatingFileHandler(
            log_file, maxBytes=LOG_FILE_BYTES, backupCount=LOG_FILE_BACKUPS, encoding="utf-8")
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
