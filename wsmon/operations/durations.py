"""The one duration syntax of every operator action: ``90s``, ``30m``, ``4h``, ``2d``.

Ack expiry, silences and anything else that asks "for how long" read it here, whichever front end
the operator uses, so the same words mean the same time everywhere.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta

DURATION_EXAMPLES = "90s, 30m, 4h, 2d"
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class DurationError(ValueError):
    """The text is not a duration; the message says what to type instead."""


def parse_duration(text: str) -> timedelta:
    """A positive number and a unit (s, m, h, d), or several (``1h30m``); no bare numbers, so a
    duration never silently means minutes in one place and seconds in another."""
    value = str(text).strip().lower().replace(" ", "")
    parts = _DURATION.findall(value)
    if not value or not parts or "".join(n + u for n, u in parts) != value:
        raise DurationError(f"{text!r} is not a duration: use a number and a unit, "
                            f"e.g. {DURATION_EXAMPLES}")
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    if seconds <= 0 or not math.isfinite(seconds):
        raise DurationError(f"{text!r} is not a positive duration (e.g. {DURATION_EXAMPLES})")
    return timedelta(seconds=seconds)


def format_duration(span: timedelta | float) -> str:
    """3s, 4m, 2h05m, 3d04h: the way durations are shown back (same units as they are typed)."""
    seconds = int(abs(span.total_seconds() if isinstance(span, timedelta) else span))
    if seconds < 60:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"
