"""Pydantic models shared by the engine, the store, the CLI and the dashboard.

These are the nouns of wsmon. They carry data only; behaviour lives in the engine modules and the
store. Timestamps are timezone-aware UTC ``datetime`` values everywhere.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from wsmon.core.clock import utc


class WorksetState(str, Enum):
    READY = "ready"
    LOCKED = "locked"
    IN_PROGRESS = "in_progress"
    COMPLETE = "complete"
    ERROR = "error"
    RETRYING = "retrying"
    FAILED = "failed"
    IGNORED = "ignored"

    @classmethod
    def parse(cls, value: WorksetState | str) -> WorksetState:
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            allowed = ", ".join(s.value for s in cls)
            raise ValueError(f"unknown workset state {value!r} (allowed: {allowed})") from None

    @property
    def is_terminal(self) -> bool:
        """No engine will touch it again without an operator (or S3) asking."""
        return self in TERMINAL_STATES

    @property
    def holds_lease(self) -> bool:
        return self in (WorksetState.LOCKED, WorksetState.IN_PROGRESS)


TERMINAL_STATES = frozenset({WorksetState.COMPLETE, WorksetState.FAILED, WorksetState.IGNORED})


class Priority(str, Enum):
    URGENT = "urgent"
    NORMAL = "normal"
    LOW = "low"

    @classmethod
    def parse(cls, value: Priority | str | None) -> Priority:
        if value is None or value == "":
            return cls.NORMAL
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            allowed = ", ".join(p.value for p in cls)
            raise ValueError(f"unknown priority {value!r} (allowed: {allowed})") from None

    @property
    def rank(self) -> int:
        """Lower runs first."""
        return {Priority.URGENT: 0, Priority.NORMAL: 1, Priority.LOW: 2}[self]


class _Model(BaseModel):
    model_config = ConfigDict(use_enum_values=False, extra="forbid")


def _aware(value: Any) -> Any:
    if isinstance(value, datetime):
        return utc(value)
    return value


class Event(_Model):
    """One transition (or operator action) in a workset's history."""

    workset_id: str
    seq: int
    at: datetime
    actor: str
    from_state: WorksetState | None
    to_state: WorksetState
    reason: str = ""

    _norm_at = field_validator("at", mode="before")(_aware)


class StepRecord(_Model):
    """One pipeline step of one attempt."""

    name: str
    status: str  # pending | running | succeeded | failed | timed_out | skipped
    attempt: int = 1
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int | None = None
    log_path: str | None = None
    detail: str | None = None

    _norm = field_validator("started_at", "finished_at", mode="before")(_aware)


class RunProgress(_Model):
    """What the pipeline's run log says, kept on the workset by the engine (engine/progress).

    ``steps_total`` and ``percent`` stay None until Snakemake states them: a log without progress
    lines shows elapsed time only, never a made-up percentage."""

    status: str = "progress unknown"
    steps_done: int = 0
    steps_total: int | None = None
    percent: float | None = None
    running_rules: dict[str, int] = Field(default_factory=dict)
    done_per_rule: dict[str, int] = Field(default_factory=dict)
    errors: int = 0
    last_error_rule: str | None = None
    partial: bool = False  # the log's start was skipped (too large): per-rule counts are partial
    last_progress_at: datetime | None = None
    eta: datetime | None = None
    rate_per_hour: float | None = None
    slurm_job_ids: list[str] = Field(default_factory=list)  # the most recent, bounded
    session: str | None = None
    log_path: str | None = None
    log_host: str | None = None  # None: this engine's host; else the SSH head node
    updated_at: datetime | None = None

    _norm = field_validator("last_progress_at", "eta", "updated_at", mode="before")(_aware)


class ActualUsage(_Model):
    """What the workset's Slurm jobs actually used (sacct), priced from configuration."""

    vcpu_hours: float = 0.0
    cost_usd: float = 0.0
    jobs: int = 0
    jobs_running: int = 0
    final: bool = False  # measured once more after the run ended
    status: str = "not measured yet"
    updated_at: datetime | None = None

    _norm = field_validator("updated_at", mode="before")(_aware)


class Workset(_Model):
    """A workset as the store knows it."""

    workset_id: str
    bucket: str
    prefix: str
    state: WorksetState = WorksetState.READY
    priority: Priority = Priority.NORMAL
    customer_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    updated_at: datetime
    state_changed_at: datetime
    # lease
    lock_owner: str | None = None
    lock_acquired_at: datetime | None = None
    lock_expires_at: datetime | None = None
    fence: int = 0
    # execution
    cluster_name: str | None = None
    attempts: int = 0
    max_retries: int | None = None
    retry_after: datetime | None = None
    steps: list[StepRecord] = Field(default_factory=list)
    pipeline_dir: str | None = None
    log_tail: str | None = None
    # diagnosis and validation
    error_code: str | None = None
    error_details: str | None = None
    findings: list[dict[str, Any]] = Field(default_factory=list)
    estimate: dict[str, Any] | None = None
    schedule_reason: str | None = None
    # inside the run: progress from the pipeline log, and actual usage from Slurm
    progress: RunProgress | None = None
    actual: ActualUsage | None = None
    # S3 presence: a folder that vanished is marked, never deleted
    s3_missing: bool = False
    # the last few events; the full history comes from Store.events()
    recent_events: list[Event] = Field(default_factory=list)

    _norm = field_validator(
        "created_at", "updated_at", "state_changed_at", "lock_acquired_at", "lock_expires_at",
        "retry_after", mode="before",
    )(_aware)

    @field_validator("state", mode="before")
    @classmethod
    def _state(cls, v: Any) -> WorksetState:
        return WorksetState.parse(v)

    @field_validator("priority", mode="before")
    @classmethod
    def _priority(cls, v: Any) -> Priority:
        return Priority.parse(v)


# Fields the engine may set alongside a transition or with Store.update_fields.
# Everything else (state, lease, fence, timestamps, history) is owned by the store itself.
MUTABLE_WORKSET_FIELDS = frozenset({
    "metadata", "customer_id", "cluster_name", "attempts", "max_retries", "retry_after", "steps",
    "pipeline_dir", "log_tail", "error_code", "error_details", "findings", "estimate",
    "schedule_reason", "s3_missing", "progress", "actual",
})

RECENT_EVENTS_KEPT = 5


class Lease(_Model):
    """Proof of a claim. Every write its holder makes is conditional on ``fence``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    workset_id: str
    owner_id: str
    fence: int
    expires_at: datetime

    _norm = field_validator("expires_at", mode="before")(_aware)


class NamedLease(_Model):
    """A lease on something that is not a workset (e.g. "who polls source X")."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    owner_id: str
    fence: int
    expires_at: datetime

    _norm = field_validator("expires_at", mode="before")(_aware)


class Page(_Model):
    items: list[Workset]
    next_cursor: str | None = None


class QueueStats(_Model):
    """Counts per state and priority: ``counts["ready"]["urgent"] == 3``."""

    counts: dict[str, dict[str, int]] = Field(default_factory=dict)

    def total(self, state: WorksetState | str | None = None) -> int:
        if state is None:
            return sum(sum(p.values()) for p in self.counts.values())
        return sum(self.counts.get(WorksetState.parse(state).value, {}).values())


class MonitorInfo(_Model):
    monitor_id: str
    host: str
    pid: int
    version: str
    role: str  # "engine", "dashboard", "cli"
    started_at: datetime
    last_seen: datetime
    details: dict[str, Any] = Field(default_factory=dict)

    _norm = field_validator("started_at", "last_seen", mode="before")(_aware)


class ClusterStatus(_Model):
    """What the engine last learned about a cluster; the dashboard reads it from the store."""

    name: str
    availability_zone: str | None = None
    source: str = "config"  # config | pcluster | slurm
    status: str = "ready"  # ready | unavailable | creating | unknown
    max_vcpus: int = 0
    vcpus_used: int = 0
    max_memory_gb: float = 0.0
    memory_gb_used: float = 0.0
    max_concurrent_worksets: int = 1
    active_worksets: int = 0
    cost_per_vcpu_hour: float = 0.0
    detail: str | None = None
    updated_at: datetime

    _norm = field_validator("updated_at", mode="before")(_aware)


class Severity(str, Enum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class AlertState(str, Enum):
    PENDING = "pending"
    FIRING = "firing"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class Alert(_Model):
    """One alert instance, deduplicated by (rule, subject) while not resolved."""

    alert_id: str
    rule: str
    subject: str
    severity: Severity
    state: AlertState
    summary: str
    description: str = ""
    value: float | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    pending_since: datetime
    fired_at: datetime | None = None
    last_true_at: datetime | None = None
    cleared_at: datetime | None = None
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    ack_note: str | None = None
    ack_expires_at: datetime | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    last_notified_at: datetime | None = None
    updated_at: datetime

    _norm = field_validator(
        "pending_since", "fired_at", "last_true_at", "cleared_at", "acknowledged_at",
        "ack_expires_at", "resolved_at", "last_notified_at", "updated_at", mode="before",
    )(_aware)


class Silence(_Model):
    silence_id: str
    rule: str | None = None  # None matches every rule
    subject: str | None = None  # None matches every subject
    created_by: str
    reason: str = ""
    starts_at: datetime
    ends_at: datetime

    _norm = field_validator("starts_at", "ends_at", mode="before")(_aware)

    def matches(self, alert: Alert, at: datetime) -> bool:
        return (
            self.starts_at <= at < self.ends_at
            and (self.rule is None or self.rule == alert.rule)
            and (self.subject is None or self.subject == alert.subject)
        )


class OutboxEntry(_Model):
    """A notification waiting to be delivered to one channel (at least once, deduplicated)."""

    entry_id: str
    channel: str
    dedup_id: str
    coalesce_key: str  # entries with the same key and channel collapse into the newest
    event_type: str
    payload: dict[str, Any]
    created_at: datetime
    next_attempt_at: datetime
    attempts: int = 0
    status: str = "pending"  # pending | delivered | dead
    last_error: str | None = None
    delivered_at: datetime | None = None
    coalesced: int = 0

    _norm = field_validator("created_at", "next_attempt_at", "delivered_at", mode="before")(_aware)


class OperatorAction(_Model):
    """One operator action in the audit trail (refused ones included): who, what, on which
    workset or alert, why, and what came of it. ``action_id`` breaks ties between actions in the
    same instant, so the trail lists them in the order they were made."""

    action_id: str
    at: datetime
    actor: str
    action: str
    target: str
    reason: str = ""
    outcome: str  # done | refused | changed | not_found
    detail: str = ""

    _norm = field_validator("at", mode="before")(_aware)


class MetricSample(_Model):
    """One local history sample the dashboard's charts read (not the CloudWatch datum)."""

    name: str
    at: datetime
    value: float
    dimensions: dict[str, str] = Field(default_factory=dict)

    _norm = field_validator("at", mode="before")(_aware)
