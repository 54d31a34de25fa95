"""How values look on screen: state symbols, ages, durations, bars. Pure functions, no Textual."""

from __future__ import annotations

from datetime import datetime, timedelta

from wsmon.core.models import AlertState, Severity, WorksetState

S = WorksetState

# A symbol per state so the table reads on a monochrome terminal or for colour-blind operators.
STATE_SYMBOLS: dict[WorksetState, str] = {
    S.READY: "○", S.LOCKED: "◔", S.IN_PROGRESS: "▶", S.COMPLETE: "✓",
    S.ERROR: "✗", S.RETRYING: "↻", S.FAILED: "‼", S.IGNORED: "⊘",
}
# Theme colour role per state (resolved against the active theme when rendering).
STATE_ROLES: dict[WorksetState, str] = {
    S.READY: "foreground", S.LOCKED: "secondary", S.IN_PROGRESS: "primary",
    S.COMPLETE: "success", S.ERROR: "error", S.RETRYING: "warning", S.FAILED: "error",
    S.IGNORED: "muted",
}
# Number keys filter the queue by state, in this order.
STATE_KEYS: list[WorksetState] = [S.READY, S.LOCKED, S.IN_PROGRESS, S.COMPLETE, S.ERROR,
                                  S.RETRYING, S.FAILED, S.IGNORED]
STATE_ORDER = {state: i for i, state in enumerate(STATE_KEYS)}

SEVERITY_SYMBOLS = {Severity.CRITICAL: "‼", Severity.WARNING: "▲", Severity.INFO: "ℹ"}
SEVERITY_ROLES = {Severity.CRITICAL: "error", Severity.WARNING: "warning", Severity.INFO: "primary"}
ALERT_STATE_SYMBOLS = {AlertState.FIRING: "🔥", AlertState.PENDING: "…",
                       AlertState.ACKNOWLEDGED: "✓", AlertState.RESOLVED: "·"}
ALERT_STATE_ORDER = {AlertState.FIRING: 0, AlertState.PENDING: 1, AlertState.ACKNOWLEDGED: 2,
                     AlertState.RESOLVED: 3}


# Shorter words for narrow terminals; still a symbol and a word, so they read without colour.
STATE_SHORT_WORDS: dict[WorksetState, str] = {S.IN_PROGRESS: "running", S.COMPLETE: "done",
                                              S.RETRYING: "retry"}
PRIORITY_SHORT_WORDS = {"urgent": "urg", "normal": "norm", "low": "low"}


def state_label(state: WorksetState, compact: bool = False) -> str:
    word = STATE_SHORT_WORDS.get(state, state.value) if compact else state.value
    return f"{STATE_SYMBOLS[state]} {word}"


# compact_age's steps, one table for the text and for when it next changes:
# (below this many seconds, rounded down to a multiple of, shown in units of, suffix)
_AGE_STEPS = ((60, 10, 1, "s"), (3600, 60, 60, "m"), (86400 * 2, 3600, 3600, "h"),
              (float("inf"), 86400, 86400, "d"))


def _age_step(seconds: float) -> tuple[int, int, str]:
    for below, step, unit, suffix in _AGE_STEPS:
        if seconds < below:
            return step, unit, suffix
    raise AssertionError("the last step has no bound")


def compact_age(seconds: float) -> str:
    """'40s', '12m', '3h', '5d', each rounded down: coarse on purpose, so a refresh rarely
    changes the cell. Under a minute in steps of 10 s ('0s' is under 10 s): with 1 % of 10,000
    worksets changing every 2 s, whole seconds changed ~3,000 queue cells per refresh and
    doubled the attached dashboard's CPU (bench/tui_bench.py)."""
    seconds = max(0.0, seconds)
    step, unit, suffix = _age_step(seconds)
    return f"{int(seconds // step) * step // unit}{suffix}"


def compact_age_changes_at(seconds: float) -> int:
    """The elapsed seconds at which ``compact_age`` next shows another text (the next whole
    step), so a reader recomputes an age only when its cell can change."""
    seconds = max(0.0, seconds)
    step, _, _ = _age_step(seconds)
    return (int(seconds // step) + 1) * step


def age_since(then: datetime | None, now: datetime) -> str:
    if then is None:
        return "-"
    return compact_age((now - then).total_seconds())


def duration(seconds: float | None) -> str:
    """'1h02m', '3m05s', '12s'."""
    if seconds is None:
        return "-"
    seconds = int(max(0, seconds))
    if seconds >= 2 * 86400:
        d, rest = divmod(seconds, 86400)
        return f"{d}d{rest // 3600:02d}h"
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m:02d}m"
    if m:
        return f"{m}m{s:02d}s"
    return f"{s}s"


def relative(when: datetime | None, now: datetime) -> str:
    """'in 3m05s' or '12m ago'."""
    if when is None:
        return "-"
    delta = (when - now).total_seconds()
    if delta >= 0:
        return f"in {duration(delta)}"
    return f"{duration(-delta)} ago"


def clock_time(when: datetime | None) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S UTC") if when else "-"


def bar(used: float, total: float, width: int = 10) -> str:
    """'█████░░░░░  52%' (a text bar that reads without colour)."""
    if total <= 0:
        return "░" * width + "    -"
    frac = max(0.0, min(1.0, used / total))
    filled = round(frac * width)
    return "█" * filled + "░" * (width - filled) + f" {round(frac * 100):3d}%"


def span(delta: timedelta) -> str:
    return duration(delta.total_seconds())


UNKNOWN_PROGRESS = "—"


def progress_cell(percent: float | None, compact: bool = False) -> str:
    """A queue cell: '██░░  30%', or '30%' on a narrow terminal; '—' when the pipeline's log has
    said nothing about its steps (never a made-up figure)."""
    if percent is None:
        return UNKNOWN_PROGRESS
    if compact:
        return f"{round(max(0.0, min(100.0, percent)))}%"
    return bar(percent, 100.0, width=4)
