"""Usage and cost per customer, cluster or priority over a period, from the workset records.

A workset counts in a period when its latest ``run`` step started inside it (worksets that never
reached the run step used no cluster time). Per group: worksets run, actual vCPU-hours and cost
(sacct, ``Workset.actual``), estimated cost (the estimate at validation), failures (worksets now
in error or failed) and retries (attempts beyond the first). Pure: the CLI (``wsmon usage``) and
the clusters screen call the same function.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from wsmon.core.models import Workset, WorksetState

GROUPINGS = ("customer", "cluster", "priority")
NONE_LABEL = "(none)"
FAILED_STATES = frozenset({WorksetState.ERROR, WorksetState.FAILED})


@dataclass
class UsageRow:
    group: str
    worksets: int = 0
    vcpu_hours: float = 0.0
    actual_cost_usd: float = 0.0
    estimated_cost_usd: float = 0.0
    failures: int = 0
    retries: int = 0
    unmeasured: int = 0  # run, but no sacct figures (yet, or sacct was not available)

    def as_dict(self) -> dict[str, object]:
        out = asdict(self)
        for key in ("vcpu_hours", "actual_cost_usd", "estimated_cost_usd"):
            out[key] = round(float(out[key]), 4)
        return out


def month_start(now: datetime) -> datetime:
    return now.astimezone(timezone.utc).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def run_started(ws: Workset) -> datetime | None:
    runs = [s.started_at for s in ws.steps if s.name == "run" and s.started_at is not None]
    return runs[-1] if runs else None


def _group_of(ws: Workset, by: str) -> str:
    if by == "customer":
        return ws.customer_id or NONE_LABEL
    if by == "cluster":
        return ws.cluster_name or NONE_LABEL
    if by == "priority":
        return ws.priority.value
    raise ValueError(f"unknown grouping {by!r} (one of {', '.join(GROUPINGS)})")


def _estimated_cost(ws: Workset) -> float:
    try:
        return float((ws.estimate or {}).get("cost_usd") or 0.0)
    except (TypeError, ValueError, AttributeError):
        return 0.0


@dataclass(frozen=True, slots=True)
class UsageFacts:
    """What usage needs of one workset that reached its run step (small: the dashboard keeps one
    per workset)."""

    run_started: datetime
    groups: tuple[str, str, str]  # customer, cluster, priority
    estimated_cost_usd: float
    retries: int
    failed: bool
    measured: bool
    vcpu_hours: float
    actual_cost_usd: float


def facts(ws: Workset) -> UsageFacts | None:
    started = run_started(ws)
    if started is None:
        return None
    measured = ws.actual is not None and bool(ws.actual.jobs or ws.actual.vcpu_hours)
    return UsageFacts(
        run_started=started, groups=tuple(_group_of(ws, by) for by in GROUPINGS),  # type: ignore[arg-type]
        estimated_cost_usd=_estimated_cost(ws), retries=max(0, ws.attempts - 1),
        failed=ws.state in FAILED_STATES, measured=measured,
        vcpu_hours=ws.actual.vcpu_hours if measured and ws.actual else 0.0,
        actual_cost_usd=ws.actual.cost_usd if measured and ws.actual else 0.0)


def summarize(worksets: Iterable[Workset], since: datetime, until: datetime, by: str) -> list[UsageRow]:
    """One row per group (sorted by actual cost, highest first) and a last row "total"."""
    return summarize_facts((f for f in map(facts, worksets) if f is not None), since, until, by)


def summarize_facts(items: Iterable[UsageFacts], since: datetime, until: datetime,
                    by: str) -> list[UsageRow]:
    if by not in GROUPINGS:
        raise ValueError(f"unknown grouping {by!r} (one of {', '.join(GROUPINGS)})")
    index = GROUPINGS.index(by)
    rows: dict[str, UsageRow] = {}
    total = UsageRow("total")
    for item in items:
        if not (since <= item.run_started < until):
            continue
        group = item.groups[index]
        row = rows.setdefault(group, UsageRow(group))
        for target in (row, total):
            target.worksets += 1
            target.estimated_cost_usd += item.estimated_cost_usd
            target.retries += item.retries
            target.failures += item.failed
            target.vcpu_hours += item.vcpu_hours
            target.actual_cost_usd += item.actual_cost_usd
            target.unmeasured += not item.measured
    ordered = sorted(rows.values(), key=lambda r: (-r.actual_cost_usd, r.group))
    return [*ordered, total]
