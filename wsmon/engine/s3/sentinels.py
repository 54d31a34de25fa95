"""The sentinel format: objects ``daylily.<name>`` in a workset folder tell its state in S3.

With several present, precedence decides: ignore > error > complete > in_progress > lock > ready. A
sentinel body is a timestamp (``20251016T111111``, ISO 8601 with or without microseconds, ``Z`` or
``+00:00``); an error body is ``<timestamp>\\t<detail>``. A body that does not parse is kept as text
with a warning.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from wsmon.core.clock import parse_iso, utc
from wsmon.core.models import Workset, WorksetState
from wsmon.core.textsafe import strip_control, truncate
from wsmon.engine import diagnostics

S = WorksetState

# highest precedence first
SENTINELS = ("ignore", "error", "complete", "in_progress", "lock", "ready")
SENTINEL_PREFIX = "daylily."
PRECEDENCE = {name: rank for rank, name in enumerate(SENTINELS)}  # lower = stronger
STATE_SENTINEL: dict[WorksetState, str] = {
    S.READY: "ready", S.LOCKED: "lock", S.IN_PROGRESS: "in_progress", S.COMPLETE: "complete",
    S.ERROR: "error", S.RETRYING: "error", S.FAILED: "error", S.IGNORED: "ignore",
}
SENTINEL_READ_BYTES = 4096
WRITER_METADATA = "wsmon-writer"  # x-amz-meta-wsmon-writer on the sentinels wsmon writes


def parse_timestamp(text: str) -> datetime | None:
    """The timestamp formats writers in the field used; None when it is none of them."""
    value = text.strip()
    if not value:
        return None
    for fmt in ("%Y%m%dT%H%M%S", "%Y%m%dT%H%M%SZ", "%Y%m%d%H%M%S"):
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=timezone.utc)
        except ValueError:
            pass
    if value.isdigit() and 9 <= len(value) <= 11:  # epoch seconds (date +%s)
        return datetime.fromtimestamp(int(value), tz=timezone.utc)
    try:
        return utc(datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00")))
    except ValueError:
        return None


@dataclass
class SentinelBody:
    timestamp: datetime | None
    detail: str | None
    text: str
    warning: str | None = None


def parse_sentinel_body(data: bytes) -> SentinelBody:
    """``<timestamp>`` or ``<timestamp>\\t<detail>``; anything else is kept as text."""
    text = data.decode("utf-8", errors="replace").strip()
    if not text:
        return SentinelBody(None, None, "")
    head, sep, rest = text.partition("\t")
    stamp = parse_timestamp(head)
    if stamp is None and not sep:
        first, _, remainder = text.partition(" ")
        stamp = parse_timestamp(first)
        if stamp is not None:
            head, rest = first, remainder
    if stamp is None:
        stamp_line = text.splitlines()[0] if text else ""
        stamp = parse_timestamp(stamp_line)
        if stamp is None:
            return SentinelBody(None, truncate(strip_control(text), 2000), text,
                                warning=f"unreadable timestamp {truncate(strip_control(head), 60)!r}")
        rest = "\n".join(text.splitlines()[1:])
    detail = rest.strip() or None
    return SentinelBody(stamp, truncate(strip_control(detail), 2000) if detail else None, text)


def format_sentinel_body(workset: Workset) -> str:
    """What this monitor writes into the sentinel of ``workset``'s state."""
    stamp = workset.state_changed_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    sentinel = STATE_SENTINEL[workset.state]
    if sentinel == "error":
        code = workset.error_code or diagnostics.UNKNOWN_CODE
        detail = strip_control(workset.error_details or diagnostics.get(code).title)
        if detail.startswith(f"{code}: "):
            detail = detail[len(code) + 2:]
        return f"{stamp}\t{code}: {truncate(detail, 1000)}\n"
    if sentinel == "lock" and workset.lock_owner:
        return f"{stamp}\t{strip_control(workset.lock_owner)}\n"
    return f"{stamp}\n"


# -- what we know about one sentinel ----------------------------------------------------------
@dataclass
class SentinelInfo:
    name: str
    etag: str
    last_modified: str  # iso
    size: int
    timestamp: str | None = None  # iso, from the body
    detail: str | None = None
    warning: str | None = None
    ours: bool = False
    loaded: bool = True  # False: body not read yet (masked by a stronger sentinel)

    @property
    def effective_time(self) -> datetime:
        return parse_iso(self.timestamp) if self.timestamp else parse_iso(self.last_modified)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SentinelInfo:
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__ if k in data})


def sentinel_state(names: Iterable[str]) -> str | None:
    present = [n for n in names if n in PRECEDENCE]
    return min(present, key=PRECEDENCE.__getitem__) if present else None
