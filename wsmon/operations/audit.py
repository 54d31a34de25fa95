"""The audit trail of operator actions, refused ones included, across every workset and alert.

A workset's own history (``Store.events``) records the transitions an action made; a refusal
makes no transition, and alerts and silences have no history at all. So every operation also
writes one entry here: who (``user@host``), what, on which record, why, and what came of it.

Stored in the store's key/value namespace ``operator-actions`` (the Store interface has no audit
table yet); keys sort by time, so listing is one ``kv_get_all``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

import structlog

from wsmon.engine.store.base import Store, StoreError
from wsmon.operations.outcome import Outcome

log = structlog.get_logger(__name__)

AUDIT_NAMESPACE = "operator-actions"


@dataclass(frozen=True)
class AuditEntry:
    at: datetime
    actor: str
    action: str
    target: str
    reason: str
    outcome: str  # done | refused | changed | not_found
    detail: str

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["at"] = self.at.astimezone(timezone.utc).isoformat()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AuditEntry:
        return cls(at=datetime.fromisoformat(data["at"]), actor=data.get("actor", ""),
                   action=data.get("action", ""), target=data.get("target", ""),
                   reason=data.get("reason", ""), outcome=data.get("outcome", ""),
                   detail=data.get("detail", ""))


def record(store: Store, outcome: Outcome, actor: str, reason: str, at: datetime) -> None:
    """Write the entry; a store that cannot take it is logged, never hides the outcome."""
    entry = AuditEntry(at=at, actor=actor, action=outcome.action, target=outcome.key,
                       reason=reason, outcome=outcome.result.value, detail=outcome.message)
    # the store's clock first (what the entry says); wall-clock nanoseconds break ties, so actions
    # in the same instant (a bulk retry, a test's frozen clock) list in the order they were made
    key = (f"{at.astimezone(timezone.utc):%Y%m%dT%H%M%S.%f}Z-{time.time_ns():020d}-"
           f"{uuid.uuid4().hex[:8]}")
    try:
        store.kv_put(AUDIT_NAMESPACE, key, entry.to_json())
    except (StoreError, OSError) as exc:
        log.error("audit_write_failed", action=outcome.action, target=outcome.key, error=str(exc))


def list_actions(store: Store, *, limit: int | None = None,
                 since: datetime | None = None) -> list[AuditEntry]:
    """Operator actions, oldest first (the last ``limit`` of them when given)."""
    entries = [AuditEntry.from_json(value) for _key, value
               in sorted(store.kv_get_all(AUDIT_NAMESPACE).items()) if isinstance(value, dict)]
    if since is not None:
        entries = [e for e in entries if e.at >= since]
    return entries[-limit:] if limit else entries
