"""The audit trail of operator actions, refused ones included, across every workset and alert.

A workset's own history (``Store.events``) records the transitions an action made; a refusal
makes no transition, and alerts and silences have no history at all. So every operation also
writes one entry to the store's audit trail (``Store.record_operator_action``): who
(``user@host``), what, on which record, why, and what came of it. Front ends read it with
``Store.list_operator_actions`` (newest first, by time range, per workset); the engine's hourly
retention prunes it (``store.audit_retention_days``).
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime

import structlog

from wsmon.core.models import OperatorAction
from wsmon.engine.store.base import Store, StoreError
from wsmon.operations.outcome import Outcome

log = structlog.get_logger(__name__)

def record(store: Store, outcome: Outcome, actor: str, reason: str, at: datetime) -> None:
    """Write the entry; a store that cannot take it is logged, never hides the outcome."""
    # the store's clock orders the trail; wall-clock nanoseconds break ties, so actions in the
    # same instant (a bulk retry, a test's frozen clock) list in the order they were made
    entry = OperatorAction(action_id=f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}", at=at,
                           actor=actor, action=outcome.action, target=outcome.key,
                           reason=reason, outcome=outcome.result.value, detail=outcome.message)
    try:
        store.record_operator_action(entry)
    except (StoreError, OSError) as exc:
        log.error("audit_write_failed", action=outcome.action, target=outcome.key, error=str(exc))
