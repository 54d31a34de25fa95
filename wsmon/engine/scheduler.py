"""Ranking and placement as pure functions over a snapshot.

Nothing here touches the store, a clock or a cluster: the service hands in the ready worksets,
the cluster capacities and what is already running, and gets back one ``SchedulingDecision`` per
ready workset, in rank order, each with the reason the dashboard shows. That makes the rules easy
to test (tests/test_scheduler.py has a hypothesis property test that nothing is ever
over-committed) and easy to explain (docs/scheduling.md).

Rules, in short:

* Rank: priority (urgent, normal, low); a workset waiting longer than ``max_age`` climbs one
  priority level per ``max_age`` waited and, on its new level, goes ahead of work that had that
  priority from the start (Slurm's age factor, discretised so it is explainable). Within a level:
  cheaper estimated cost first, then longer waiting, then id.
* Place: a cluster takes a workset when it is ready, has a free workset slot, enough free vCPUs
  and memory for the estimate, is the pinned cluster (``daylily_work.yaml: cluster_name``) if any,
  and is in the preferred availability zone when the preference is hard. Customer quotas and the
  global limit hold.
* Backfill: the first workset that fits nowhere right now (but could once running work drains)
  gets a reservation on one cluster; a later workset may start on that cluster only if its
  estimated duration ends before the reserved workset could start there. Other clusters are
  not affected.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from wsmon.core.models import ClusterStatus, Priority, Workset

if TYPE_CHECKING:
    from wsmon.config.settings import Settings

READY_STATUSES = frozenset({"ready"})
_MAX_REASON_CLUSTERS = 4  # a reason names this many clusters, then "... and N more"


@dataclass(frozen=True)
class ClusterCapacity:
    """What one cluster can still take (names follow the earlier monitor's scheduler)."""

    cluster_name: str
    availability_zone: str | None = None
    max_vcpus: int = 0
    current_vcpus_used: float = 0
    max_memory_gb: float = 0.0
    current_memory_gb_used: float = 0.0
    active_worksets: int = 0
    max_concurrent_worksets: int = 1
    cost_per_vcpu_hour: float = 0.0
    status: str = "ready"

    @property
    def free_vcpus(self) -> float:
        return self.max_vcpus - self.current_vcpus_used

    @property
    def free_memory_gb(self) -> float:
        return self.max_memory_gb - self.current_memory_gb_used

    @property
    def free_slots(self) -> int:
        return self.max_concurrent_worksets - self.active_worksets

    @property
    def is_ready(self) -> bool:
        return self.status in READY_STATUSES

    def take(self, req: WorksetRequirements) -> ClusterCapacity:
        return replace(
            self,
            current_vcpus_used=self.current_vcpus_used + req.vcpus,
            current_memory_gb_used=self.current_memory_gb_used + req.memory_gb,
            active_worksets=self.active_worksets + 1,
        )

    @classmethod
    def from_status(cls, status: ClusterStatus) -> ClusterCapacity:
        return cls(
            cluster_name=status.name,
            availability_zone=status.availability_zone,
            max_vcpus=status.max_vcpus,
            current_vcpus_used=status.vcpus_used,
            max_memory_gb=status.max_memory_gb,
            current_memory_gb_used=status.memory_gb_used,
            active_worksets=status.active_worksets,
            max_concurrent_worksets=status.max_concurrent_worksets,
            cost_per_vcpu_hour=status.cost_per_vcpu_hour,
            status=status.status,
        )


@dataclass(frozen=True)
class WorksetRequirements:
    """What a workset needs, read from its estimate and metadata."""

    workset_id: str = ""
    priority: Priority = Priority.NORMAL
    customer_id: str | None = None
    vcpus: float = 0
    memory_gb: float = 0.0
    estimated_cost_usd: float = 0.0
    estimated_duration_hours: float | None = None
    preferred_availability_zone: str | None = None
    cluster_name: str | None = None  # pinned: only this cluster
    waiting_since: datetime | None = None

    @classmethod
    def from_workset(cls, ws: Workset, default_az: str | None = None) -> WorksetRequirements:
        est = ws.estimate or {}
        info = (ws.metadata or {}).get("info") or {}
        work = (ws.metadata or {}).get("work") or {}
        az = info.get("preferred_availability_zone") if isinstance(info, dict) else None
        pinned = work.get("cluster_name") if isinstance(work, dict) else None
        return cls(
            workset_id=ws.workset_id,
            priority=ws.priority,
            customer_id=ws.customer_id,
            vcpus=_num(est.get("vcpus"), 0),
            memory_gb=_num(est.get("memory_gb"), 0.0),
            estimated_cost_usd=_num(est.get("cost_usd"), 0.0),
            estimated_duration_hours=_num(est.get("duration_hours"), None),
            preferred_availability_zone=str(az) if az else default_az,
            cluster_name=str(pinned) if pinned else None,
            waiting_since=ready_since(ws),
        )


def ready_since(ws: Workset) -> datetime:
    """When this workset started waiting, by wsmon's own clock: the later of when wsmon first
    saw the folder (``created_at``, set by the store at registration) and its last state change.
    A folder registered from ``daylily.ready`` keeps the sentinel's own time as
    ``state_changed_at``; real folders carry copied timestamps months old, which must not buy
    them age."""
    return max(ws.created_at, ws.state_changed_at)


@dataclass(frozen=True)
class RunningWork:
    """A workset already running on a cluster; its expected end lets backfill look ahead."""

    cluster_name: str
    vcpus: float = 0
    memory_gb: float = 0.0
    expected_end: datetime | None = None  # None: unknown, so it never counts as draining


@dataclass(frozen=True)
class SchedulingPolicy:
    max_age: timedelta = timedelta(hours=4)
    az_preference: str = "soft"  # soft | hard
    max_concurrent_worksets: int = 10
    customer_quotas: Mapping[str, int] = field(default_factory=dict)
    backfill: bool = True
    preferred_cluster: str | None = None  # Daylily reuse_cluster_name

    @classmethod
    def from_settings(cls, settings: Settings) -> SchedulingPolicy:
        sched = settings.scheduler
        return cls(
            max_age=timedelta(minutes=sched.max_age_minutes),
            az_preference=sched.az_preference,
            max_concurrent_worksets=sched.max_concurrent_worksets,
            customer_quotas=dict(sched.customer_quotas),
            backfill=sched.backfill,
            preferred_cluster=settings.clusters.reuse_cluster_name,
        )


@dataclass(frozen=True)
class SchedulingDecision:
    """One ready workset's outcome for this pass. ``cluster_name`` None means it waits."""

    workset_id: str
    cluster_name: str | None
    reason: str
    rank: int
    backfilled: bool = False
    unschedulable: bool = False  # no cluster could ever take it as configured

    @property
    def placed(self) -> bool:
        return self.cluster_name is not None


def _num(value: Any, default: Any) -> Any:
    try:
        if value is None:
            return default
        number = float(value)
        return number if math.isfinite(number) and number >= 0 else default
    except (TypeError, ValueError):
        return default


def _fmt(value: float) -> str:
    return f"{value:g}" if value == int(value) else f"{value:.1f}"


# -- ranking --------------------------------------------------------------------------------

def age_boost(req: WorksetRequirements, now: datetime, max_age: timedelta) -> int:
    """Priority levels gained by waiting: one per full ``max_age`` waited."""
    if req.waiting_since is None or max_age.total_seconds() <= 0:
        return 0
    waited = (now - req.waiting_since).total_seconds()
    return max(0, int(waited // max_age.total_seconds()))


def rank_key(req: WorksetRequirements, now: datetime, max_age: timedelta) -> tuple:
    boost = age_boost(req, now, max_age)
    level = req.priority.rank - boost
    waiting = req.waiting_since.timestamp() if req.waiting_since else float("inf")
    # -boost: on a shared level, the workset that climbed there outranks native work of that level
    return (level, -boost, req.estimated_cost_usd, waiting, req.workset_id)


def rank(reqs: Iterable[WorksetRequirements], now: datetime,
         max_age: timedelta) -> list[WorksetRequirements]:
    return sorted(reqs, key=lambda r: rank_key(r, now, max_age))


# -- placement ------------------------------------------------------------------------------

def _misfit(cap: ClusterCapacity, req: WorksetRequirements, policy: SchedulingPolicy,
            *, ignore_usage: bool = False) -> str | None:
    """Why ``cap`` cannot take ``req`` (None: it can). ``ignore_usage`` asks "could it ever?"."""
    if req.cluster_name and cap.cluster_name != req.cluster_name:
        return f"{cap.cluster_name} is not the pinned cluster {req.cluster_name}"
    if not cap.is_ready:
        return f"{cap.cluster_name} {cap.status}"
    if (policy.az_preference == "hard" and req.preferred_availability_zone
            and cap.availability_zone != req.preferred_availability_zone):
        return (f"{cap.cluster_name} in {cap.availability_zone or 'unknown AZ'}, "
                f"needs {req.preferred_availability_zone}")
    if ignore_usage:
        if cap.max_concurrent_worksets < 1:
            return f"{cap.cluster_name} takes no worksets (max 0)"
        if req.vcpus > cap.max_vcpus:
            return f"{cap.cluster_name} has {_fmt(cap.max_vcpus)} vCPUs, needs {_fmt(req.vcpus)}"
        if req.memory_gb > cap.max_memory_gb:
            return (f"{cap.cluster_name} has {_fmt(cap.max_memory_gb)} GB, "
                    f"needs {_fmt(req.memory_gb)} GB")
        return None
    if cap.free_slots < 1:
        return f"{cap.cluster_name} full {cap.active_worksets}/{cap.max_concurrent_worksets}"
    if req.vcpus > cap.free_vcpus:
        return (f"{cap.cluster_name} {_fmt(max(0.0, cap.free_vcpus))}/{_fmt(cap.max_vcpus)} vCPUs "
                f"free, needs {_fmt(req.vcpus)}")
    if req.memory_gb > cap.free_memory_gb:
        return (f"{cap.cluster_name} {_fmt(max(0.0, cap.free_memory_gb))}/"
                f"{_fmt(cap.max_memory_gb)} GB free, needs {_fmt(req.memory_gb)} GB")
    return None


def _preference(cap: ClusterCapacity, req: WorksetRequirements,
                policy: SchedulingPolicy) -> tuple:
    in_az = bool(req.preferred_availability_zone) and cap.availability_zone == req.preferred_availability_zone
    preferred = policy.preferred_cluster is not None and cap.cluster_name == policy.preferred_cluster
    # preferred AZ, the configured reuse cluster, cheapest, then the tightest fit (keeps big
    # holes open for big worksets), then name for determinism
    return (not in_az, not preferred, cap.cost_per_vcpu_hour,
            cap.free_vcpus - req.vcpus, cap.cluster_name)


def _fits_now(cap: ClusterCapacity, req: WorksetRequirements, policy: SchedulingPolicy) -> bool:
    """``_misfit(...) is None`` without building a sentence (the hot path of a pass)."""
    return (cap.status in READY_STATUSES
            and not (policy.az_preference == "hard" and req.preferred_availability_zone
                     and cap.availability_zone != req.preferred_availability_zone)
            and cap.active_worksets < cap.max_concurrent_worksets
            and req.vcpus <= cap.max_vcpus - cap.current_vcpus_used
            and req.memory_gb <= cap.max_memory_gb - cap.current_memory_gb_used)


def _could_ever(cap: ClusterCapacity, req: WorksetRequirements, policy: SchedulingPolicy) -> bool:
    """``_misfit(..., ignore_usage=True) is None`` without building a sentence."""
    return ((not req.cluster_name or cap.cluster_name == req.cluster_name)
            and cap.status in READY_STATUSES
            and not (policy.az_preference == "hard" and req.preferred_availability_zone
                     and cap.availability_zone != req.preferred_availability_zone)
            and cap.max_concurrent_worksets >= 1
            and req.vcpus <= cap.max_vcpus and req.memory_gb <= cap.max_memory_gb)


def _join_reasons(reasons: Sequence[Any]) -> str:
    shown = [r() if callable(r) else r for r in reasons[:_MAX_REASON_CLUSTERS]]
    if len(reasons) > _MAX_REASON_CLUSTERS:
        shown.append(f"and {len(reasons) - _MAX_REASON_CLUSTERS} more")
    return ", ".join(shown)


@dataclass
class _Reservation:
    workset_id: str
    cluster_name: str
    start_at: datetime | None  # None: unknown, nothing may backfill on that cluster


def _shadow_time(cap: ClusterCapacity, req: WorksetRequirements,
                 running: Sequence[RunningWork], now: datetime) -> datetime | None:
    """When, by the running work's expected ends, ``cap`` will have room for ``req``."""
    vcpus, mem, slots = cap.free_vcpus, cap.free_memory_gb, cap.free_slots
    ends = sorted((r for r in running if r.cluster_name == cap.cluster_name),
                  key=lambda r: (r.expected_end is None, r.expected_end or now))
    for work in ends:
        if work.expected_end is None:
            return None
        vcpus += work.vcpus
        mem += work.memory_gb
        slots += 1
        if slots >= 1 and vcpus >= req.vcpus and mem >= req.memory_gb:
            return max(now, work.expected_end)
    return None


def schedule(
    ready: Iterable[WorksetRequirements | Workset],
    clusters: Iterable[ClusterCapacity | ClusterStatus],
    running_per_customer: Mapping[str | None, int] | None = None,
    *,
    policy: SchedulingPolicy | None = None,
    now: datetime,
    running_total: int | None = None,
    running: Sequence[RunningWork] = (),
    default_az: str | None = None,
) -> list[SchedulingDecision]:
    """One scheduling pass: a decision for every ready workset, in rank order.

    ``running_per_customer`` counts worksets already running (locked or in progress) per
    ``customer_id``; ``running_total`` defaults to their sum. Cluster capacities must already
    include what is running on them. ``running`` (optional) lets backfill compute when the
    reserved workset could start.
    """
    policy = policy or SchedulingPolicy()
    per_customer: dict[str | None, int] = dict(running_per_customer or {})
    total = sum(per_customer.values()) if running_total is None else running_total
    caps: dict[str, ClusterCapacity] = {}
    for c in clusters:
        cap = ClusterCapacity.from_status(c) if isinstance(c, ClusterStatus) else c
        caps[cap.cluster_name] = cap
    reqs = [WorksetRequirements.from_workset(r, default_az) if isinstance(r, Workset) else r
            for r in ready]
    ordered = rank(reqs, now, policy.max_age)
    reservation: _Reservation | None = None
    decisions: list[SchedulingDecision] = []
    no_cluster_reason = "waiting: no cluster is configured or discovered"

    shared_wait: str | None = None  # once every cluster is full or down, one reason fits all

    def open_clusters() -> int:
        return sum(1 for c in caps.values() if c.is_ready and c.free_slots >= 1)

    open_count = open_clusters()

    for position, req in enumerate(ordered):
        def wait(reason: str, *, unschedulable: bool = False, _pos: int = position,
                 _req: WorksetRequirements = req) -> None:
            decisions.append(SchedulingDecision(_req.workset_id, None, reason, _pos,
                                                unschedulable=unschedulable))

        if total >= policy.max_concurrent_worksets:
            wait(f"waiting: global limit {total}/{policy.max_concurrent_worksets} running")
            continue
        quota = policy.customer_quotas.get(req.customer_id) if req.customer_id is not None else None
        if quota is not None and per_customer.get(req.customer_id, 0) >= quota:
            wait(f"waiting: customer {req.customer_id} quota "
                 f"{per_customer.get(req.customer_id, 0)}/{quota} running")
            continue
        if not caps:
            wait(no_cluster_reason)
            continue
        if reservation is not None and not policy.backfill:
            wait(f"waiting: behind {reservation.workset_id}, next in line on "
                 f"{reservation.cluster_name} (backfill is off)")
            continue

        hard_az = policy.az_preference == "hard" and req.preferred_availability_zone
        if open_count == 0 and reservation is not None and not req.cluster_name and not hard_az:
            # Fast path (10,000 waiting worksets): nothing can start anywhere this pass and the
            # reasons ("full", "unavailable") do not depend on the workset.
            if any(c.is_ready and c.max_concurrent_worksets >= 1 and req.vcpus <= c.max_vcpus
                   and req.memory_gb <= c.max_memory_gb for c in caps.values()):
                if shared_wait is None:
                    probe = WorksetRequirements()
                    shared_wait = "waiting: " + _join_reasons(
                        [w for c in caps.values() if (w := _misfit(c, probe, policy))])
                wait(shared_wait)
                continue

        fits: list[ClusterCapacity] = []
        reasons: list[Any] = []  # reason strings, or thunks only built if shown
        for cap in caps.values():
            if req.cluster_name and cap.cluster_name != req.cluster_name:
                continue
            if not _fits_now(cap, req, policy):
                reasons.append(lambda c=cap, r=req: _misfit(c, r, policy))
                continue
            if reservation is not None and cap.cluster_name == reservation.cluster_name:
                ends_by = (now + timedelta(hours=req.estimated_duration_hours)
                           if req.estimated_duration_hours is not None else None)
                if reservation.start_at is None or ends_by is None or ends_by > reservation.start_at:
                    reasons.append(f"{cap.cluster_name} held for {reservation.workset_id}")
                    continue
            fits.append(cap)
        if req.cluster_name and req.cluster_name not in caps:
            reasons.insert(0, f"pinned cluster {req.cluster_name} is not known")

        if fits:
            best = min(fits, key=lambda c: _preference(c, req, policy))
            caps[best.cluster_name] = best.take(req)
            open_count = open_clusters()
            total += 1
            per_customer[req.customer_id] = per_customer.get(req.customer_id, 0) + 1
            backfilled = reservation is not None
            where = f"{best.cluster_name}" + (f" ({best.availability_zone})" if best.availability_zone else "")
            after = caps[best.cluster_name]
            detail = (f"{after.active_worksets}/{after.max_concurrent_worksets} worksets, "
                      f"{_fmt(max(0.0, after.free_vcpus))} vCPUs free after")
            soft_miss = (req.preferred_availability_zone
                         and best.availability_zone != req.preferred_availability_zone)
            note = (f"; preferred {req.preferred_availability_zone} had no room"
                    if soft_miss else "")
            lead = f"backfilled ahead of {reservation.workset_id}: " if backfilled and reservation else ""
            decisions.append(SchedulingDecision(
                req.workset_id, best.cluster_name, f"{lead}placed on {where}: {detail}{note}",
                position, backfilled=backfilled))
            continue

        # Fits nowhere now. Could it ever, once running work drains?
        if reservation is None:
            eventual = [c for c in caps.values() if _could_ever(c, req, policy)]
        else:  # later blocked worksets only need to know whether any cluster could ever fit
            first = next((c for c in caps.values() if _could_ever(c, req, policy)), None)
            eventual = [first] if first is not None else []
        if not eventual:
            never = [w for c in caps.values()
                     if (w := _misfit(c, req, policy, ignore_usage=True)) is not None
                     and not (req.cluster_name and c.cluster_name != req.cluster_name)]
            if req.cluster_name and req.cluster_name not in caps:
                never.insert(0, f"pinned cluster {req.cluster_name} is not known")
            wait("cannot run on any cluster as configured: " + _join_reasons(never or reasons),
                 unschedulable=True)
            continue
        if reservation is None:
            target = min(eventual, key=lambda c: (
                _shadow_time(c, req, running, now) is None,
                _shadow_time(c, req, running, now) or now,
                _preference(c, req, policy)))
            reservation = _Reservation(req.workset_id, target.cluster_name,
                                       _shadow_time(target, req, running, now))
            wait(f"waiting: {_join_reasons(reasons)}; next in line on {target.cluster_name}")
            continue
        wait("waiting: " + _join_reasons(reasons))
    return decisions


def placeable(ready: Iterable[Workset], now: datetime, upload_backoff: timedelta) -> list[Workset]:
    """The ready worksets a pass considers: still in S3, and ready for longer than the upload
    backoff (``discovery.ready_lock_backoff_seconds``)."""
    return [ws for ws in ready
            if not ws.s3_missing and ws.state_changed_at + upload_backoff <= now]


def plan(ready: Sequence[Workset], running: Sequence[Workset],
         clusters: Iterable[ClusterCapacity | ClusterStatus], *, policy: SchedulingPolicy,
         now: datetime, default_az: str | None = None) -> list[SchedulingDecision]:
    """``schedule`` over store records: what runs now (per customer, and when it should end,
    for backfill) is read from the ``running`` worksets (locked or in progress). The engine's
    pass and the API's ``/worksets/next`` both ask this, so they give the same answer."""
    per_customer: dict[str | None, int] = {}
    running_work = []
    for ws in running:
        per_customer[ws.customer_id] = per_customer.get(ws.customer_id, 0) + 1
        if not ws.cluster_name:
            continue
        est = ws.estimate or {}
        hours = est.get("duration_hours")
        began = ws.lock_acquired_at or ws.state_changed_at
        end = began + timedelta(hours=float(hours)) if isinstance(hours, (int, float)) else None
        running_work.append(RunningWork(ws.cluster_name, float(est.get("vcpus") or 0),
                                        float(est.get("memory_gb") or 0), end))
    return schedule(ready, clusters, per_customer, policy=policy, now=now,
                    running_total=len(running), running=running_work, default_az=default_az)


def placements(decisions: Iterable[SchedulingDecision]) -> list[SchedulingDecision]:
    return [d for d in decisions if d.placed]
