"""Leases on worksets: the claim, heartbeat, release, adoption after a restart, the operator's
force release, and the sweep's view of expired leases."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from wsmon.core.clock import isoformat
from wsmon.core.models import Lease, Workset, WorksetState
from wsmon.engine.store import rules
from wsmon.engine.store.dynamodb.client import condition_failed
from wsmon.engine.store.dynamodb.codec import Expr, av, item_py
from wsmon.engine.store.dynamodb.schema import STATE_PRIORITY_INDEX
from wsmon.engine.store.dynamodb.writes import (
    Condition,
    Plan,
    WorksetWrites,
    fence_condition,
    plan_of,
    workset_from,
)
from wsmon.engine.store.errors import LeaseLost, WorksetNotFound

S = WorksetState
LEASE_STATES = (S.LOCKED, S.IN_PROGRESS)


def _claim_condition(cutoff: datetime) -> Condition:
    """The claim rule as a condition, independent of the version pin: free, or expired by
    more than the allowed clock skew (``cutoff``)."""
    def cond(expr: Expr) -> str:
        st, owner, exp = expr.n("state"), expr.n("lock_owner"), expr.n("lock_expires_at")
        return (f"({st} = {expr.v(S.READY.value)} AND attribute_not_exists({owner})) OR "
                f"({st} IN ({expr.v(S.LOCKED.value)}, {expr.v(S.IN_PROGRESS.value)}) "
                f"AND {exp} < {expr.v(isoformat(cutoff))})")
    return cond


class Leases(WorksetWrites):
    def acquire_lock(self, workset_id: str, owner_id: str,
                     lease_seconds: float | None = None) -> Lease | None:
        duration = rules.lease_duration(self.default_lease_seconds, lease_seconds)
        claimed: list[Lease] = []

        def plan(ws: Workset, item: dict[str, Any]) -> Plan | None:
            now = self.clock.now()
            change = rules.claim(ws, owner_id, now, duration, self.max_clock_skew)
            if change is None:
                return None
            assert change.lease is not None
            claimed[:] = [change.lease]
            return plan_of(ws, item, change,
                           _claim_condition(rules.claim_cutoff(now, self.max_clock_skew)))

        try:
            item = self._mutate(workset_id, plan)
        except WorksetNotFound:
            return None
        return claimed[0] if item is not None else None

    def renew_lock(self, lease: Lease, lease_seconds: float | None = None) -> Lease:
        """One UpdateItem conditional on the still-held rule; no read, no event."""
        from botocore.exceptions import ClientError

        duration = rules.lease_duration(self.default_lease_seconds, lease_seconds)
        now = self.clock.now()
        expires = now + duration
        expr = Expr()
        parts = [f"{expr.n('lock_expires_at')} = {expr.v(expires)}",
                 f"{expr.n('updated_at')} = {expr.v(now)}",
                 f"{expr.n('version')} = {expr.n('version')} + {expr.v(1)}"]
        cond = (f"{expr.n('fence')} = {expr.v(lease.fence)} AND "
                f"{expr.n('lock_owner')} = {expr.v(lease.owner_id)} AND "
                f"{expr.n('state')} IN ({expr.v(S.LOCKED.value)}, {expr.v(S.IN_PROGRESS.value)})")
        try:
            out = self._db.call("UpdateItem", self.tables.worksets, TableName=self.tables.worksets,
                                Key={"workset_id": av(lease.workset_id)},
                                UpdateExpression="SET " + ", ".join(parts),
                                ConditionExpression=cond, ReturnValues="ALL_NEW",
                                ReturnValuesOnConditionCheckFailure="ALL_OLD", **expr.kwargs())
        except ClientError as exc:
            if not condition_failed(exc):
                raise
            item = self._refresh(lease.workset_id, (getattr(exc, "response", None) or {}).get("Item"))
            if item is None:
                raise WorksetNotFound(lease.workset_id) from None
            raise LeaseLost(lease.workset_id, lease.fence, int(item.get("fence", 0))) from None
        self._cache.remember(item_py(out["Attributes"]))
        return lease.model_copy(update={"expires_at": expires})

    def adopt_lock(self, lease: Lease, lease_seconds: float | None = None) -> Lease:
        duration = rules.lease_duration(self.default_lease_seconds, lease_seconds)
        adopted: list[Lease] = []

        def plan(ws: Workset, item: dict[str, Any]) -> Plan:
            change = rules.adopt(ws, lease, self.clock.now(), duration)
            assert change.lease is not None
            adopted[:] = [change.lease]
            return plan_of(ws, item, change, fence_condition(lease))

        self._mutate(lease.workset_id, plan)
        return adopted[0]

    def release_lock(self, lease: Lease, reason: str = "released") -> Workset:
        def plan(ws: Workset, item: dict[str, Any]) -> Plan:
            change = rules.release(ws, lease, reason, self.clock.now())
            return plan_of(ws, item, change, fence_condition(lease))

        item = self._mutate(lease.workset_id, plan)
        assert item is not None
        return workset_from(item)

    def force_release(self, workset_id: str, actor: str, reason: str, *,
                      expected_fence: int | None = None) -> Workset:
        def plan(ws: Workset, item: dict[str, Any]) -> Plan:
            change = rules.force_release(ws, actor, reason, expected_fence, self.clock.now())
            return plan_of(ws, item, change)

        item = self._mutate(workset_id, plan)
        assert item is not None
        return workset_from(item)

    def expired_leases(self, now: datetime | None = None) -> list[Workset]:
        """Two Queries (locked, in_progress) on the state index with a filter on the expiry:
        only lease-holding worksets are read, a number bounded by cluster capacity."""
        cutoff = isoformat(rules.claim_cutoff(now or self.clock.now(), self.max_clock_skew))
        out: list[dict[str, Any]] = []
        for st in LEASE_STATES:
            expr = Expr()
            kwargs = {"IndexName": STATE_PRIORITY_INDEX,
                      "KeyConditionExpression": f"{expr.n('state')} = {expr.v(st.value)}",
                      "FilterExpression": f"{expr.n('lock_expires_at')} < {expr.v(cutoff)}"}
            out.extend(self._db.query(self.tables.worksets, **kwargs, **expr.kwargs()))
        for it in out:
            self._cache.remember(it)
        out.sort(key=lambda i: (i.get("lock_expires_at") or "", i["workset_id"]))
        return [workset_from(i) for i in out]
