"""Request and response bodies of the API (they are the OpenAPI document's schemas).

Request models forbid unknown fields, so a typo is a 422 naming the field instead of an action
silently done without it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from wsmon.core.models import (
    Alert,
    AlertState,
    ClusterStatus,
    Event,
    MonitorInfo,
    Priority,
    Silence,
    Workset,
    WorksetState,
)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- reads -------------------------------------------------------------------------------------

class WorksetPage(BaseModel):
    items: list[Workset]
    next_cursor: str | None = Field(None, description="Pass as ?cursor= for the next page; null on the last.")
    has_more: bool
    limit: int


class EventList(BaseModel):
    workset_id: str
    events: list[Event]


class Placement(BaseModel):
    workset_id: str
    cluster_name: str | None = Field(None, description="Where it would run now; null while it waits.")
    reason: str
    rank: int
    backfilled: bool = False
    unschedulable: bool = False


class NextWorkset(BaseModel):
    workset: Workset | None = Field(None, description="What the scheduler would place next; null when nothing can start now.")
    placement: Placement | None = None
    reason: str = Field(..., description="Why this one, or why none.")


class QueueStatsBody(BaseModel):
    counts: dict[str, dict[str, int]] = Field(..., description="counts[state][priority]")
    by_state: dict[str, int]
    by_priority: dict[str, int]
    total: int


class ClusterCapacityBody(BaseModel):
    name: str
    status: str
    availability_zone: str | None
    free_vcpus: float
    free_memory_gb: float
    free_slots: int
    active_worksets: int
    max_concurrent_worksets: int
    updated_at: datetime


class SchedulerStats(BaseModel):
    ready: int
    placeable: int = Field(..., description="Ready worksets past the upload backoff and present in S3.")
    running: int
    max_concurrent_worksets: int
    clusters: list[ClusterCapacityBody]
    decisions: list[Placement] = Field(..., description="Every placeable workset in rank order, with where it would go or why it waits.")


class ClusterList(BaseModel):
    clusters: list[ClusterStatus]


class AlertList(BaseModel):
    alerts: list[Alert]


class SilenceList(BaseModel):
    silences: list[Silence]


class MonitorBody(MonitorInfo):
    alive: bool
    heartbeat_age_seconds: float


class MonitorList(BaseModel):
    monitors: list[MonitorBody]


class UsageBody(BaseModel):
    since: datetime
    until: datetime
    by: Literal["customer", "cluster", "priority"]
    rows: list[dict[str, Any]] = Field(..., description="One per group, highest actual cost first, then the total (as wsmon usage --json).")


class HealthCheck(BaseModel):
    ok: bool
    detail: str


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, HealthCheck]


# -- writes ------------------------------------------------------------------------------------

class SeenWorkset(Strict):
    """The record as the client last saw it; the action is refused (409, with the current
    record) when the store no longer holds that."""

    state: WorksetState
    fence: int | None = Field(None, ge=0, description="Required for stop and release: the lease the client saw.")
    lock_owner: str | None = Field(None, max_length=512)
    priority: Priority | None = None


class WorksetAction(Strict):
    seen: SeenWorkset
    reason: str = Field("", max_length=2000)


class StopAction(WorksetAction):
    to: Literal["ignored", "error"] = Field("ignored", description="The state the stopped run ends in.")


class PriorityAction(WorksetAction):
    priority: Priority


class SeenAlert(Strict):
    state: AlertState


class AckAction(Strict):
    seen: SeenAlert
    note: str = Field("", max_length=2000)
    expires: str | None = Field(None, max_length=32, description="How long the acknowledgement lasts: 90s, 30m, 4h, 2d.")


class ResolveAction(Strict):
    seen: SeenAlert
    reason: str = Field(..., min_length=1, max_length=2000)


class SilenceRequest(Strict):
    rule: str | None = Field(None, max_length=200, description="Rule to silence (null: every rule).")
    subject: str | None = Field(None, max_length=1024, description="Subject to silence (null: every subject).")
    duration: str = Field(..., max_length=32, description="90s, 30m, 4h, 2d")
    reason: str = Field("", max_length=2000)


class ActionResult(BaseModel):
    action: str
    key: str
    result: Literal["done", "refused", "changed", "not_found"]
    message: str
    current: dict[str, Any] | None = Field(None, description="The record as the store holds it now.")
    findings: list[dict[str, Any]] = Field(default_factory=list)


class RegisterRequest(Strict):
    s3_uri: str = Field(..., max_length=2048, description="s3://BUCKET/PREFIX/WORKSET/ under a configured discovery source.")


class RegisterResult(BaseModel):
    registered: bool
    workset: Workset | None = None
    message: str
    report: dict[str, Any]


class ValidateRequest(Strict):
    s3_uri: str = Field(..., max_length=2048, description="s3://BUCKET/PREFIX/WORKSET/")


class ValidationResult(BaseModel):
    target: str
    workset_id: str
    valid: bool
    findings: list[dict[str, Any]]
    estimate: dict[str, Any] | None = None
    report: dict[str, Any]
