"""What one poll found and changed (``S3Source.poll``'s answer; the engine and ``wsmon discover``
read it)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from wsmon.core.clock import isoformat


@dataclass
class PollReport:
    seq: int
    started_at: datetime
    duration_seconds: float = 0.0
    sources: list[dict[str, Any]] = field(default_factory=list)
    folders_seen: int = 0
    folders_listed: int = 0
    registered: list[str] = field(default_factory=list)
    imported: list[dict[str, str]] = field(default_factory=list)
    invalid: list[dict[str, str]] = field(default_factory=list)
    changes: list[dict[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    reappeared: list[str] = field(default_factory=list)
    waiting: list[dict[str, str]] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    sentinel_writes: int = 0
    index_writes: list[str] = field(default_factory=list)
    requests: dict[str, int] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.registered or self.imported or self.invalid or self.changes
                    or self.missing or self.reappeared)

    @property
    def request_total(self) -> int:
        return sum(self.requests.values())

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["started_at"] = isoformat(self.started_at)
        out["request_total"] = self.request_total
        return out
