"""The read side of /api/v1: worksets, history, queue and scheduler views, clusters, alerts,
monitors and health. Every route reads the store; none changes it."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import JSONResponse

from wsmon.api import cursor as page_cursor
from wsmon.api.context import ApiContext, api_context, reader
from wsmon.api.errors import ApiError
from wsmon.api.schemas import (
    AlertList,
    ClusterCapacityBody,
    ClusterList,
    EventList,
    Health,
    HealthCheck,
    MonitorBody,
    MonitorList,
    NextWorkset,
    Placement,
    QueueStatsBody,
    SchedulerStats,
    SilenceList,
    UsageBody,
    WorksetPage,
)
from wsmon.core.models import AlertState, Priority, Workset, WorksetState
from wsmon.engine.store.base import InvalidCursor

MAX_PAGE = 500
# a filtered page reads at most this many records from the store before it answers with what
# it has (and a cursor), so a filter matching almost nothing never makes one slow request
SCAN_BUDGET = 5000

router = APIRouter(dependencies=[Depends(reader)])
Ctx = Annotated[ApiContext, Depends(api_context)]
WorksetId = Annotated[str, Path(min_length=1, max_length=1024, description="The workset id (its folder name).")]


def _matches(ws: Workset, cluster: str | None, text: str | None) -> bool:
    if cluster is not None and ws.cluster_name != cluster:
        return False
    if text:
        needle = text.casefold()
        haystack = (ws.workset_id, ws.customer_id or "", str(ws.metadata.get("s3_uri") or ""),
                    ws.error_code or "")
        return any(needle in h.casefold() for h in haystack)
    return True


@router.get("/worksets", response_model=WorksetPage, summary="List worksets in queue order")
def list_worksets(
    ctx: Ctx,
    state: WorksetState | None = None,
    priority: Priority | None = None,
    customer: Annotated[str | None, Query(max_length=256)] = None,
    cluster: Annotated[str | None, Query(max_length=256)] = None,
    text: Annotated[str | None, Query(max_length=256, description="Case-insensitive part of the id, customer, S3 URI or error code.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    cursor: Annotated[str | None, Query(max_length=4096, description="next_cursor of the previous page.")] = None,
) -> WorksetPage:
    """Ordered by priority, then age, then id. ``has_more`` says whether another page follows."""
    filters = {"state": state.value if state else None, "priority": priority.value if priority else None,
               "customer": customer, "cluster": cluster, "text": text}
    store_cursor, skip = page_cursor.decode(cursor, filters) if cursor else (None, 0)
    post_filter = cluster is not None or bool(text)
    # unfiltered, a store page is exactly this page; filtered, whole store pages are read and a
    # cursor may point into the middle of one (its start, and how many were handed out)
    page_size = MAX_PAGE if post_filter else limit
    items: list[Workset] = []
    scanned = 0
    resume: tuple[str | None, int] | None = None
    while True:
        try:
            page = ctx.store.list_worksets(state=state, priority=priority, customer_id=customer,
                                           limit=page_size, cursor=store_cursor)
        except InvalidCursor:
            raise ApiError(400, "bad_cursor", "the cursor is not valid for this store; start "
                                              "again without a cursor") from None
        consumed = skip
        for ws in page.items[skip:]:
            consumed += 1
            if not post_filter or _matches(ws, cluster, text):
                items.append(ws)
                if len(items) >= limit:
                    break
        scanned += consumed - skip
        if len(items) >= limit and consumed < len(page.items):
            resume = (store_cursor, consumed)
            break
        store_cursor, skip = page.next_cursor, 0
        if not store_cursor:
            break
        if len(items) >= limit or scanned >= SCAN_BUDGET:
            resume = (store_cursor, 0)
            break
    next_cursor = page_cursor.encode(resume[0], resume[1], filters) if resume else None
    return WorksetPage(items=items, next_cursor=next_cursor, has_more=next_cursor is not None,
                       limit=limit)


def _placements(ctx: ApiContext) -> tuple[list[Workset], list[Workset], list, list[Placement]]:
    from wsmon.engine.scheduler import SchedulingPolicy, placeable, plan

    store, settings = ctx.store, ctx.settings
    now = ctx.clock.now()
    ready = list(store.iter_worksets(state=WorksetState.READY))
    running = [*store.iter_worksets(state=WorksetState.LOCKED),
               *store.iter_worksets(state=WorksetState.IN_PROGRESS)]
    candidates = placeable(ready, now, timedelta(seconds=settings.discovery.ready_lock_backoff_seconds))
    clusters = [c for c in store.list_cluster_status() if c.source != "command"]
    decisions = plan(candidates, running, clusters, policy=SchedulingPolicy.from_settings(settings),
                     now=now, default_az=settings.clusters.preferred_availability_zone)
    placed = [Placement(workset_id=d.workset_id, cluster_name=d.cluster_name, reason=d.reason,
                        rank=d.rank, backfilled=d.backfilled, unschedulable=d.unschedulable)
              for d in decisions]
    return ready, candidates, running, placed


@router.get("/worksets/next", response_model=NextWorkset,
            summary="What the scheduler would place next, and why")
def next_workset(ctx: Ctx) -> NextWorkset:
    ready, candidates, _running, placed = _placements(ctx)
    if not placed:
        why = ("no workset is ready" if not ready else
               f"{len(ready)} ready workset(s), none past the upload backoff or present in S3")
        return NextWorkset(workset=None, placement=None, reason=why)
    by_id = {ws.workset_id: ws for ws in candidates}
    first = next((p for p in placed if p.cluster_name), None)
    if first is None:
        top = placed[0]
        return NextWorkset(workset=None, placement=top,
                           reason=f"nothing can start now; first in line {top.workset_id}: {top.reason}")
    return NextWorkset(workset=by_id[first.workset_id], placement=first, reason=first.reason)


@router.get("/worksets/{workset_id}", response_model=Workset, summary="One workset, every field")
def get_workset(ctx: Ctx, workset_id: WorksetId) -> Workset:
    ws = ctx.store.get_workset(workset_id)
    if ws is None:
        raise ApiError(404, "not_found", "no such workset", workset_id=workset_id)
    return ws


@router.get("/worksets/{workset_id}/events", response_model=EventList,
            summary="A workset's whole state history, oldest first")
def workset_events(ctx: Ctx, workset_id: WorksetId,
                   limit: Annotated[int | None, Query(ge=1, le=100_000)] = None) -> EventList:
    if ctx.store.get_workset(workset_id) is None:
        raise ApiError(404, "not_found", "no such workset", workset_id=workset_id)
    return EventList(workset_id=workset_id, events=ctx.store.events(workset_id, limit=limit))


@router.get("/queue/stats", response_model=QueueStatsBody, summary="Worksets per state and priority")
def queue_stats(ctx: Ctx) -> QueueStatsBody:
    stats = ctx.store.queue_stats()
    by_priority: dict[str, int] = {p.value: 0 for p in Priority}
    for per in stats.counts.values():
        for prio, n in per.items():
            by_priority[prio] = by_priority.get(prio, 0) + n
    return QueueStatsBody(counts=stats.counts,
                          by_state={s.value: stats.total(s) for s in WorksetState},
                          by_priority=by_priority, total=stats.total())


@router.get("/scheduler/stats", response_model=SchedulerStats,
            summary="Clusters, free capacity, and why each waiting workset waits")
def scheduler_stats(ctx: Ctx) -> SchedulerStats:
    from wsmon.engine.scheduler import ClusterCapacity

    ready, candidates, running, placed = _placements(ctx)
    clusters = []
    for status in ctx.store.list_cluster_status():
        cap = ClusterCapacity.from_status(status)
        clusters.append(ClusterCapacityBody(
            name=status.name, status=status.status, availability_zone=status.availability_zone,
            free_vcpus=cap.free_vcpus, free_memory_gb=cap.free_memory_gb, free_slots=cap.free_slots,
            active_worksets=status.active_worksets,
            max_concurrent_worksets=status.max_concurrent_worksets, updated_at=status.updated_at))
    return SchedulerStats(ready=len(ready), placeable=len(candidates), running=len(running),
                          max_concurrent_worksets=ctx.settings.scheduler.max_concurrent_worksets,
                          clusters=clusters, decisions=placed)


@router.get("/clusters", response_model=ClusterList, summary="Clusters as the engine last saw them")
def clusters(ctx: Ctx) -> ClusterList:
    return ClusterList(clusters=ctx.store.list_cluster_status())


@router.get("/alerts", response_model=AlertList, summary="Open alerts (and recently resolved ones)")
def alerts(ctx: Ctx, state: AlertState | None = None,
           resolved_within_hours: Annotated[float | None, Query(gt=0, le=24 * 90)] = None,
           limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = MAX_PAGE) -> AlertList:
    since = (ctx.clock.now() - timedelta(hours=resolved_within_hours)
             if resolved_within_hours else None)
    states = [state] if state and state is not AlertState.RESOLVED else None
    found = ctx.store.list_alerts(states=states, resolved_since=since, limit=limit)
    if state is not None:
        found = [a for a in found if a.state is state]
    return AlertList(alerts=found)


@router.get("/silences", response_model=SilenceList, summary="Silences in force now")
def silences(ctx: Ctx) -> SilenceList:
    return SilenceList(silences=ctx.store.list_silences(active_at=ctx.clock.now()))


@router.get("/monitors", response_model=MonitorList, summary="Engines and dashboards the store knows")
def monitors(ctx: Ctx) -> MonitorList:
    now = ctx.clock.now()
    out = []
    for m in ctx.store.list_monitors():
        age = max(0.0, (now - m.last_seen).total_seconds())
        out.append(MonitorBody(**m.model_dump(), alive=age <= ctx.stale_after_seconds,
                               heartbeat_age_seconds=round(age, 3)))
    return MonitorList(monitors=out)


@router.get("/usage", response_model=UsageBody,
            summary="vCPU-hours and cost per customer, cluster or priority (as wsmon usage)")
def usage(ctx: Ctx, by: Literal["customer", "cluster", "priority"] = "customer",
          since: Annotated[datetime | None, Query(description="Start (default: the first of this month, UTC).")] = None,
          until: Annotated[datetime | None, Query(description="End, exclusive (default: now).")] = None) -> UsageBody:
    from wsmon.core.clock import utc
    from wsmon.engine.progress.usage import month_start, summarize

    now = ctx.clock.now()
    start = utc(since) if since else month_start(now)
    end = utc(until) if until else now + timedelta(microseconds=1)
    if end <= start:
        raise ApiError(422, "invalid_request", "until must be after since")
    rows = summarize(ctx.store.iter_worksets(), start, end, by)
    return UsageBody(since=start, until=end, by=by, rows=[r.as_dict() for r in rows])


health_router = APIRouter()


@health_router.get("/health", response_model=Health, responses={503: {"model": Health}},
                   summary="Store reachable and an engine alive (200), or why not (503)")
def health(ctx: Ctx) -> JSONResponse:
    """Open to every caller (no token): a load balancer or an uptime check uses it as it is.
    It says only whether things work, never anything about the worksets."""
    checks: dict[str, HealthCheck] = {}
    try:
        monitors = ctx.store.list_monitors()
        checks["store"] = HealthCheck(ok=True, detail="reachable")
    except Exception as exc:  # noqa: BLE001 - any failure is "not reachable", whatever the backend raised
        monitors = []
        checks["store"] = HealthCheck(ok=False, detail=f"unreachable ({type(exc).__name__})")
    if checks["store"].ok:
        now = ctx.clock.now()
        engines = [m for m in monitors if m.role == "engine"]
        alive = [m for m in engines if (now - m.last_seen).total_seconds() <= ctx.stale_after_seconds]
        if alive:
            checks["engines"] = HealthCheck(ok=True, detail=f"{len(alive)} alive")
        elif engines:
            newest = max(engines, key=lambda m: m.last_seen)
            age = int((now - newest.last_seen).total_seconds())
            checks["engines"] = HealthCheck(ok=False, detail=f"no engine heartbeat for {age}s")
        else:
            checks["engines"] = HealthCheck(ok=False, detail="no engine has ever reported to this store")
    if ctx.hub is not None:
        checks["event_stream"] = HealthCheck(ok=ctx.hub.alive, detail=ctx.hub.status)
    ok = all(c.ok for c in checks.values())
    body = Health(status="ok" if ok else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if ok else 503)
