"""The notification message: the events wsmon announces, one rendered ``Message`` (what the outbox
stores and every channel formats from), and the text shaping every channel shares (scrubbed,
control characters stripped, cut to a size)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from wsmon.core.clock import isoformat
from wsmon.core.models import OutboxEntry, Severity
from wsmon.core.redaction import scrub
from wsmon.core.textsafe import strip_control


WORKSET_EVENTS = (
    "registered", "started", "completed", "failed", "retrying", "dead_lettered",
    "validation_failed", "lock_force_released",
)
ALERT_EVENTS = ("alert_firing", "alert_acknowledged", "alert_resolved")
ENGINE_EVENTS = ("monitor_pruned",)  # an engine silent past store.monitor_prune_hours was removed
EVENT_TYPES = WORKSET_EVENTS + ALERT_EVENTS + ENGINE_EVENTS

# How loud a workset event is, so severity filters work for workset events too.
WORKSET_EVENT_SEVERITY = {
    "registered": Severity.INFO, "started": Severity.INFO, "completed": Severity.INFO,
    "retrying": Severity.INFO, "failed": Severity.WARNING, "validation_failed": Severity.WARNING,
    "lock_force_released": Severity.WARNING, "dead_lettered": Severity.CRITICAL,
}


def clean_line(text: object, secrets: Iterable[str] = (), limit: int = 500) -> str:
    value = scrub(strip_control(text), secrets)
    return value if len(value) <= limit else value[: limit - 1] + "…"


def clean_block(text: object, secrets: Iterable[str] = (), limit: int = 20_000) -> str:
    value = scrub(strip_control(text, keep_newlines=True), secrets)
    return value if len(value) <= limit else value[: limit - 1] + "…"


def truncate_utf8(text: str, max_bytes: int) -> str:
    """Cut ``text`` to ``max_bytes`` of UTF-8, marking the cut. Same input, same output."""
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text
    marker = f"\n… [truncated: {len(encoded)} bytes, showing the first part]"
    budget = max(0, max_bytes - len(marker.encode("utf-8")))
    return encoded[:budget].decode("utf-8", "ignore") + marker


@dataclass
class Message:
    """One rendered notification; what the outbox stores and every channel formats from."""

    event_type: str
    title: str
    text: str
    severity: str
    at: str
    priority: str | None = None
    state: str | None = None
    workset_id: str | None = None
    alert_id: str | None = None
    alert_state: str | None = None
    rule: str | None = None
    subject: str | None = None
    link: str | None = None
    link_text: str | None = None
    fields: list[list[str]] = field(default_factory=list)
    issue_key: str | None = None  # Linear: one issue per alert / per workset
    dedup_id: str | None = None
    coalesced: int = 0
    attempt: int = 0  # earlier delivery attempts of this entry

    def to_payload(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("coalesced", None)
        data.pop("attempt", None)
        return data

    @classmethod
    def from_entry(cls, entry: OutboxEntry) -> Message:
        known = {f for f in cls.__dataclass_fields__}
        data = {k: v for k, v in entry.payload.items() if k in known}
        data.setdefault("event_type", entry.event_type)
        data.setdefault("title", entry.event_type)
        data.setdefault("text", "")
        data.setdefault("severity", "info")
        data.setdefault("at", isoformat(entry.created_at))
        msg = cls(**data)
        msg.coalesced = entry.coalesced
        msg.dedup_id = entry.dedup_id
        msg.attempt = entry.attempts
        return msg

    def full_text(self) -> str:
        lines = [self.text] if self.text else []
        for name, value in self.fields:
            lines.append(f"{name}: {value}")
        if self.link:
            lines.append(f"{self.link_text or 'link'}: {self.link}")
        if self.coalesced:
            lines.append(f"({self.coalesced} earlier notification(s) about this subject were folded "
                         "into this one)")
        return "\n".join(lines)
