"""Configuration: pydantic-settings.

Sources, highest first: command-line flags, ``WSMON_*`` environment (nested with ``__``, e.g.
``WSMON_STORE__URL``), the TOML file (``--config``, else ``$XDG_CONFIG_HOME/wsmon/config.toml``),
defaults. The earlier Daylily monitor's YAML config is read too (``daylily_yaml``), below the file.
``load_settings`` (wsmon/config/loader.py) reads every source; ``Settings(...)`` built directly
takes only its arguments. The loader imports this model, never the reverse.

Every setting has a default, a type and a one-line description; docs/configuration.md is
generated from these models (tests/test_config_docs.py fails when it drifts).

Each engine module owns one section below; add a setting to your own section only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

if TYPE_CHECKING:
    from wsmon.config.loader import LoadInfo


def xdg_dir(env: str, fallback: str, environ: Mapping[str, str] | None = None) -> Path:
    base = (os.environ if environ is None else environ).get(env)
    return Path(base) if base else Path.home() / fallback


def default_state_dir() -> Path:
    return xdg_dir("XDG_STATE_HOME", ".local/state") / "wsmon"


def default_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """Where the TOML file is read from when ``--config`` is not given."""
    return xdg_dir("XDG_CONFIG_HOME", ".config", environ) / "wsmon" / "config.toml"


# The sources below the flags for the load in progress (set by the loader, wsmon/config/loader.py);
# Settings.settings_customise_sources reads them. Kept beside the model so the model never imports
# the loader.
LOADING_SOURCES: ContextVar[tuple[PydanticBaseSettingsSource, ...] | None] = ContextVar(
    "wsmon_settings_sources", default=None)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class AwsSettings(Section):
    profile: str | None = Field(None, description="AWS profile name (None: the default credential chain).")
    region: str | None = Field(None, description="AWS region for every client. None: AWS_REGION, then AWS_DEFAULT_REGION, then the profile's region; with none of them, anything that needs AWS refuses with exit 2. A dynamodb:// store URL's region= wins for the store.")
    endpoint_url: str | None = Field(None, description="Endpoint override for every AWS client (moto, LocalStack).")
    session_duration_seconds: int | None = Field(None, description="Role session duration when the profile assumes a role.")
    max_attempts: int | None = Field(None, ge=1, le=20, description="Attempts per AWS request, counting the first, as the AWS CLI counts them. None: AWS_MAX_ATTEMPTS or the profile's max_attempts, else 5. The retry mode is AWS_RETRY_MODE or the profile's retry_mode, else standard.")


class StoreSettings(Section):
    url: str | None = Field(None, description="State store URL: sqlite:///PATH or dynamodb://TABLE?region=R[&endpoint_url=U]. None: sqlite in the state directory.")
    lease_seconds: float = Field(300.0, gt=0, description="How long a claim lasts before it must be renewed.")
    heartbeat_seconds: float = Field(60.0, gt=0, description="How often a holder renews its lease (well inside lease_seconds).")
    max_clock_skew_seconds: float = Field(30.0, ge=0, description="Extra time after a lease expires before another monitor may take it.")
    audit_retention_days: int = Field(365, ge=1, description="Days an operator action (the audit trail `wsmon events --actions` lists, refused actions included) is kept before the engine deletes it.")
    monitor_prune_hours: float = Field(24.0, gt=0, description="A monitor (engine, dashboard) silent this long is removed from the store by the engines' sweep, with a monitor_pruned event; its heartbeat alert resolves. `wsmon monitors --forget ID` removes one at once.")


class SourceSettings(Section):
    bucket: str = Field(..., description="S3 bucket holding workset folders.")
    prefix: str = Field("", description="Prefix under which each workset is one folder.")
    events_queue: str | None = Field(None, description="SQS queue URL receiving this source's S3 event notifications (`wsmon s3-events setup` prints it). None: discovery.events_queue, else polling only.")


class DiscoverySettings(Section):
    sources: list[SourceSettings] = Field(default_factory=list, description="Where workset folders are found (bucket + prefix pairs).")
    poll_interval_seconds: float = Field(60.0, gt=0, description="Seconds between S3 discovery polls.")
    events_queue: str | None = Field(None, description="SQS queue URL receiving S3 event notifications for every source that names none of its own. With a queue, a folder is synced when its event arrives and the full poll becomes a reconcile pass every events_reconcile_seconds.")
    events_reconcile_seconds: float = Field(3600.0, gt=0, description="With events_queue: seconds between full polls that catch anything an event missed (at the normal poll_interval_seconds while the queue cannot be read).")
    events_wait_seconds: int = Field(20, ge=0, le=20, description="SQS long-poll wait per receive (WaitTimeSeconds). 20 costs at most 180 receives an hour per queue; lower only for a local test endpoint.")
    reconcile_every: int = Field(60, ge=1, description="Re-list a terminal workset folder every this many polls (spread evenly: 900 terminal folders cost 15 listings a poll at 60).")
    write_sentinels: bool = Field(True, description="Write daylily.* sentinel files and index logs for the engine's own transitions.")
    archive_prefix: str | None = Field(None, description="Prefix completed worksets are archived under (Daylily monitor compatibility).")
    sentinel_index_prefix: str | None = Field(None, description="Prefix for daylily.<state>.log index files (default: the source prefix).")
    allowed_buckets: list[str] = Field(default_factory=list, description="Buckets other than the workset's own that R1_FQ/R2_FQ may point into.")
    ready_lock_backoff_seconds: float = Field(30.0, ge=0, description="Wait after seeing daylily.ready before claiming (lets uploads finish).")
    list_workers: int = Field(8, ge=1, le=64, description="Threads listing workset folders in parallel.")
    head_workers: int = Field(8, ge=1, le=64, description="Threads checking FASTQ objects exist (HEAD) in parallel.")
    max_file_bytes: int = Field(5_000_000, gt=0, description="Largest workset file (YAML/TSV) that is read; larger is a validation error.")
    max_sample_rows: int = Field(10_000, ge=1, description="Most sample rows a stage_samples.tsv may have; more is a validation error (WS-DAT-016).")
    max_findings_per_folder: int = Field(100, ge=1, description="Validation findings kept per folder: the first this many, then one finding that counts the rest (WS-DAT-017).")
    folder_time_budget_seconds: float = Field(30.0, gt=0, description="Time one folder's validation may take in a poll; past it the folder gets WS-DAT-019 and the poll goes on.")
    folder_memory_budget_mb: int = Field(256, ge=16, description="Memory one folder's validation may add to the engine in a poll; past it the folder gets WS-DAT-019.")
    estimate_vcpus: int = Field(64, ge=1, description="Estimate: vCPUs a workset occupies while it runs (when daylily_info.yaml gives none).")
    estimate_memory_gb: float = Field(256.0, gt=0, description="Estimate: memory (GB) a workset occupies while it runs (when daylily_info.yaml gives none).")
    estimate_vcpu_hours_per_sample: float = Field(96.0, gt=0, description="Estimate: vCPU-hours per sample in stage_samples.tsv (30x WGS through alignment and calling).")
    estimate_storage_gb_per_sample: float = Field(150.0, gt=0, description="Estimate: FSx storage (GB) per sample (FASTQ, BAM, VCF, intermediates).")
    estimate_cost_per_vcpu_hour: float = Field(0.05, ge=0, description="Estimate: USD per vCPU-hour used for cost_usd.")
    estimate_overhead_hours: float = Field(0.5, ge=0, description="Estimate: fixed hours per workset for staging, clone and export, added to duration_hours.")


class ClusterConfig(Section):
    name: str = Field(..., description="Cluster name.")
    availability_zone: str | None = Field(None, description="Availability zone, e.g. us-west-2d.")
    max_vcpus: int = Field(256, ge=0, description="vCPUs worksets may use on this cluster.")
    max_memory_gb: float = Field(2048.0, ge=0, description="Memory (GB) worksets may use on this cluster.")
    max_concurrent_worksets: int = Field(3, ge=0, description="Worksets that may run at once on this cluster.")
    cost_per_vcpu_hour: float = Field(0.05, ge=0, description="USD per vCPU-hour, for estimates.")


class ClustersSettings(Section):
    static: list[ClusterConfig] = Field(default_factory=list, description="Clusters declared in config.")
    pcluster_discovery: bool = Field(True, description="Discover clusters with the pcluster CLI when it is installed (missing: a status, not an error).")
    pcluster_tag_filter: dict[str, str] = Field(default_factory=dict, description="Only discovered clusters carrying these tags.")
    slurm_usage: bool = Field(True, description="Read live usage from sinfo/squeue when they are on PATH.")
    create_cluster_command: list[str] | None = Field(None, description="argv that creates a cluster when nothing fits (off when unset).")
    preferred_availability_zone: str | None = Field(None, description="Default AZ preference for worksets that state none.")
    reuse_cluster_name: str | None = Field(None, description="Prefer this existing cluster (Daylily monitor compatibility).")
    local_cluster_name: str | None = Field(None, description="Cluster whose Slurm runs on this host, for sinfo/squeue usage (None: the only cluster, if there is exactly one).")
    refresh_interval_seconds: float = Field(60.0, gt=0, description="Seconds between cluster discovery/usage refreshes (pcluster is slow).")
    tool_timeout_seconds: float = Field(60.0, gt=0, description="Timeout of one pcluster/sinfo/squeue call.")
    create_cluster_timeout_minutes: float = Field(90.0, gt=0, description="A cluster creation still running after this long is stopped and reported.")


class SchedulerSettings(Section):
    max_age_minutes: float = Field(240.0, gt=0, description="A workset waiting longer than this outranks newer work of the next priority up.")
    az_preference: Literal["soft", "hard"] = Field("soft", description="hard: only place in the preferred AZ; soft: prefer it.")
    max_concurrent_worksets: int = Field(10, ge=0, description="Global limit on worksets running at once (all clusters).")
    customer_quotas: dict[str, int] = Field(default_factory=dict, description="Max concurrent worksets per customer_id.")
    backfill: bool = Field(True, description="Let smaller worksets start where they do not delay the top-ranked one.")
    interval_seconds: float = Field(15.0, gt=0, description="Seconds between scheduling passes.")


class RunnerSettings(Section):
    kind: Literal["command", "ssh", "simulated"] = Field("command", description="command: run steps on this host; ssh: on a head node; simulated: demo and tests.")
    workdir: str = Field("/fsx/worksets", description="Directory where worksets are staged and pipelines run.")
    stage_command: list[str] | str | None = Field(None, description="Stage step argv template.")
    clone_command: list[str] | str | None = Field(None, description="Clone step argv template (prints 'Location: DIR').")
    run_prefix: str | None = Field(None, description="Daylily compatibility: shell prefix the run suffix is appended to.")
    run_command: list[str] | str | None = Field(None, description="Run step argv template (instead of run_prefix).")
    export_command: list[str] | str | None = Field(None, description="Export step argv template.")
    step_timeout_minutes: float = Field(60.0, gt=0, description="Timeout for stage, clone and export steps.")
    pipeline_timeout_minutes: float = Field(24 * 60.0, gt=0, description="Timeout for the pipeline run step.")
    tmux_session_prefix: str = Field("wsmon-", description="Prefix of the tmux session a pipeline runs in.")
    shutdown_grace_seconds: float = Field(30.0, ge=0, description="On SIGTERM, how long short steps may finish.")
    kill_grace_seconds: float = Field(10.0, ge=0, description="After Ctrl-C on a timed-out step, how long before it is killed.")
    pipeline_poll_seconds: float = Field(30.0, gt=0, description="Seconds between checks of a running pipeline (tmux session and sentinels).")
    log_tail_lines: int = Field(40, ge=1, description="Lines of a failed step's log kept on the workset.")
    tmux_socket: str | None = Field(None, description="tmux -L socket name for pipeline sessions (None: the default tmux server).")
    ssh_host: str | None = Field(None, description="kind=ssh: head node host name; host keys must already be in known_hosts.")
    max_parallel_worksets: int = Field(8, ge=1, description="Worksets this engine drives at once (its thread pool); the scheduler's limits still apply.")
    simulated_seed: int = Field(42, description="kind=simulated: seed of the failure mix (same seed, same outcomes).")
    simulated_step_seconds: dict[str, float] = Field(default_factory=lambda: {"stage": 5.0, "clone": 3.0, "run": 60.0, "export": 5.0}, description="kind=simulated: how long each step takes.")
    simulated_transient_failure_rate: float = Field(0.1, ge=0, le=1, description="kind=simulated: share of worksets whose run fails once with a transient error, then succeeds.")
    simulated_permanent_failure_rate: float = Field(0.05, ge=0, le=1, description="kind=simulated: share of worksets whose run fails with a permanent error.")
    simulated_hang_rate: float = Field(0.0, ge=0, le=1, description="kind=simulated: share of worksets whose run hangs until its timeout (once).")
    ssh_user: str | None = Field(None, description="kind=ssh: user on the head node (None: ssh's default).")
    ssh_identity_file: Path | None = Field(None, description="kind=ssh: private key file passed to ssh -i.")
    ssh_extra_args: list[str] = Field(default_factory=list, description="kind=ssh: extra ssh arguments, e.g. [\"-o\", \"StrictHostKeyChecking=accept-new\"].")
    login_shell_init: str | None = Field(None, description="Shell snippet sourced before each step on the head node (e.g. conda/module setup).")
    local_stage_root: str | None = Field(None, description="Local directory the stage step copies workset inputs through ({local_stage_root} in templates).")
    reference_bucket: str | None = Field(None, description="S3 bucket with reference data ({reference_bucket} in templates).")


class ProgressSettings(Section):
    enabled: bool = Field(True, description="Follow each running workset's pipeline log for Snakemake progress, and ask sacct what its Slurm jobs used.")
    interval_seconds: float = Field(30.0, gt=0, description="Seconds between reads of the running pipelines' logs (only bytes added since the last read).")
    eta_window_minutes: float = Field(30.0, gt=0, description="ETA: the rate of finished steps is measured over this recent window (see docs/operator-guide.md).")
    tail_lines: int = Field(200, ge=10, le=5000, description="Last lines of a running pipeline's log kept on the workset for the detail screen.")
    catch_up_mb: int = Field(16, ge=1, description="A log backlog larger than this (a restarted engine, a log of gigabytes) is read from its last this many MB only.")
    sacct_interval_seconds: float = Field(300.0, gt=0, description="Seconds between sacct calls for a running workset's Slurm jobs (once more when the run ends).")
    sacct_timeout_seconds: float = Field(60.0, gt=0, description="Timeout of one sacct call.")
    default_cost_per_vcpu_hour: float = Field(0.05, ge=0, description="Actual cost: USD per vCPU-hour for a partition with no price below and a cluster not in clusters.static.")
    partition_prices: dict[str, dict[str, float]] = Field(default_factory=dict, description="Actual cost: USD per vCPU-hour by cluster, then partition, e.g. {\"prod\" = {\"i192\" = 0.045}}. Else the cluster's cost_per_vcpu_hour, else default_cost_per_vcpu_hour.")


class RetrySettings(Section):
    base_seconds: float = Field(60.0, gt=0, description="Backoff base: delay = uniform(0, min(cap, base * 2**attempt)).")
    cap_seconds: float = Field(3600.0, gt=0, description="Backoff cap in seconds.")
    max_retries: int = Field(3, ge=0, description="Retries after the first attempt (daylily_info.yaml max_retries overrides).")


class MetricsSettings(Section):
    sink: Literal["cloudwatch", "emf", "none"] = Field("cloudwatch", description="cloudwatch: PutMetricData; emf: embedded metric format lines on stdout; none.")
    namespace: str = Field("Daylily/WorksetMonitor", description="CloudWatch namespace.")
    flush_interval_seconds: float = Field(60.0, gt=0, description="Seconds between metric flushes.")
    buffer_size: int = Field(10_000, gt=0, description="Datums held before the oldest are dropped (counted and logged).")
    history_days: int = Field(14, ge=1, description="Days of local metric history kept for the dashboard charts.")


AlertSeverityName = Literal["info", "warning", "critical"]


class AlertRuleSettings(Section):
    enabled: bool = Field(True, description="Evaluate this rule.")
    severity: AlertSeverityName = Field("warning", description="Severity of the alerts this rule raises.")
    for_seconds: float = Field(0.0, ge=0, description="How long the condition must hold before the alert fires (pending until then).")
    keep_firing_for_seconds: float | None = Field(None, ge=0, description="How long the condition must stay clear before resolving (None: alerts.keep_firing_for_seconds).")


class QueueDepthRule(AlertRuleSettings):
    threshold: float = Field(50, ge=0, description="Ready worksets of one priority above which the alert fires.")
    per_priority: dict[str, float] = Field(default_factory=dict, description="Threshold per priority (urgent/normal/low), overriding threshold.")
    for_seconds: float = Field(600.0, ge=0, description="How long the queue must stay that deep before the alert fires.")


class UrgentWaitingRule(AlertRuleSettings):
    threshold: float = Field(60, gt=0, description="Minutes an urgent workset may wait in ready before the alert fires.")
    severity: AlertSeverityName = Field("critical", description="Severity of the alerts this rule raises.")


class LongRunningRule(AlertRuleSettings):
    factor: float = Field(3.0, gt=1, description="Fire when a workset runs longer than its estimated duration times this.")
    max_hours: float = Field(48.0, gt=0, description="Fire when a workset runs longer than this, whatever its estimate.")


class StaleLeaseRule(AlertRuleSettings):
    for_seconds: float = Field(120.0, ge=0, description="How long a lease may stay expired (unswept) before the alert fires.")


class LockFailuresRule(AlertRuleSettings):
    threshold: float = Field(50, ge=0, description="Failed lock acquisitions within window_seconds above which the alert fires.")
    window_seconds: float = Field(300.0, gt=0, description="Window the lock failures are counted over.")


class ErrorRateRule(AlertRuleSettings):
    threshold: float = Field(0.5, ge=0, le=1, description="Fraction of finished worksets that failed within window_seconds above which the alert fires.")
    window_seconds: float = Field(1800.0, gt=0, description="Window the error rate is computed over.")
    min_events: int = Field(4, ge=1, description="Finished worksets needed in the window before a rate is judged.")


class DeadLetteredRule(AlertRuleSettings):
    severity: AlertSeverityName = Field("critical", description="Severity of the alerts this rule raises.")


class ClusterFullRule(AlertRuleSettings):
    for_seconds: float = Field(600.0, ge=0, description="How long a cluster may stay full while urgent work waits before the alert fires.")


class EngineHeartbeatRule(AlertRuleSettings):
    threshold: float = Field(3, ge=1, description="Missed heartbeat intervals after which an engine counts as gone.")
    interval_seconds: float | None = Field(None, gt=0, description="The engines' heartbeat interval (None: store.heartbeat_seconds).")
    severity: AlertSeverityName = Field("critical", description="Severity of the alerts this rule raises.")


class EngineOverloadedRule(AlertRuleSettings):
    threshold: float = Field(3, ge=1, description="Skipped or missed runs of one engine job within 10 minutes at which the alert fires.")


class ChannelFailingRule(AlertRuleSettings):
    threshold: float = Field(3, ge=1, description="Consecutive failed deliveries on a channel after which the alert fires.")
    window_seconds: float = Field(3600.0, gt=0, description="A notification given up (dead) within this window keeps the alert firing.")


class BackendErrorsRule(AlertRuleSettings):
    for_seconds: float = Field(300.0, ge=0, description="How long S3/DynamoDB errors must persist before the alert fires.")
    severity: AlertSeverityName = Field("critical", description="Severity of the alerts this rule raises.")


class PipelineStalledRule(AlertRuleSettings):
    threshold: float = Field(60.0, gt=0, description="Minutes without a finished Snakemake step, while the pipeline's tmux session lives, before the alert fires.")


class OverBudgetRule(AlertRuleSettings):
    estimate_factor: float = Field(1.5, gt=0, description="With no budget in daylily_work.yaml: fire when the actual cost passes the estimated cost times this.")


class AlertsSettings(Section):
    enabled: bool = Field(True, description="Evaluate alert rules.")
    evaluate_interval_seconds: float = Field(30.0, gt=0, description="Seconds between alert evaluations.")
    keep_firing_for_seconds: float = Field(300.0, ge=0, description="How long a condition must stay clear before its alert resolves.")
    repeat_interval_seconds: float = Field(0.0, ge=0, description="Notify again while an alert keeps firing unacknowledged, this often (0: never).")
    max_alerts_per_rule: int = Field(10, ge=1, description="Subjects one rule may open alerts for; further ones are grouped into one alert (subject \"*\") so an incident is one message, not hundreds.")
    resolved_retention_days: int = Field(30, ge=1, description="Days a resolved alert is kept (alert history) before the engine deletes it.")
    queue_depth: QueueDepthRule = Field(default_factory=QueueDepthRule, description="Too many ready worksets of one priority.")
    urgent_waiting: UrgentWaitingRule = Field(default_factory=UrgentWaitingRule, description="An urgent workset waiting too long.")
    long_running: LongRunningRule = Field(default_factory=LongRunningRule, description="A workset in progress far beyond its estimate or a maximum.")
    stale_lease: StaleLeaseRule = Field(default_factory=StaleLeaseRule, description="A lease expired and not yet swept.")
    lock_failures: LockFailuresRule = Field(default_factory=LockFailuresRule, description="A spike of failed lock acquisitions.")
    error_rate: ErrorRateRule = Field(default_factory=ErrorRateRule, description="Too many finished worksets failing.")
    dead_lettered: DeadLetteredRule = Field(default_factory=DeadLetteredRule, description="A workset gave up retrying (state failed).")
    cluster_full: ClusterFullRule = Field(default_factory=ClusterFullRule, description="A cluster full while urgent work waits.")
    engine_heartbeat: EngineHeartbeatRule = Field(default_factory=EngineHeartbeatRule, description="An engine stopped sending heartbeats.")
    engine_overloaded: EngineOverloadedRule = Field(default_factory=EngineOverloadedRule, description="An engine job keeps missing its schedule (runs skipped because the previous one still ran).")
    channel_failing: ChannelFailingRule = Field(default_factory=ChannelFailingRule, description="A notification channel failing.")
    backend_errors: BackendErrorsRule = Field(default_factory=BackendErrorsRule, description="S3 or DynamoDB errors persisting.")
    pipeline_stalled: PipelineStalledRule = Field(default_factory=PipelineStalledRule, description="A running pipeline whose log shows no progress for too long.")
    over_budget: OverBudgetRule = Field(default_factory=OverBudgetRule, description="A workset whose actual cost passed its budget (or its estimate times a factor).")


class ChannelFilter(Section):
    event_types: list[str] = Field(default_factory=list, description="Event types sent to this channel (empty: all), e.g. failed, dead_lettered, alert_firing.")
    priorities: list[Literal["urgent", "normal", "low"]] = Field(default_factory=list, description="Workset priorities sent to this channel (empty: all).")
    states: list[str] = Field(default_factory=list, description="Workset states sent to this channel (empty: all).")
    severities: list[Literal["info", "warning", "critical"]] = Field(default_factory=list, description="Severities sent to this channel (empty: all).")


class NotifySettings(Section):
    deliver_interval_seconds: float = Field(15.0, gt=0, description="Seconds between outbox delivery runs.")
    # Secrets: from the environment (WSMON_LINEAR_API_KEY, WSMON_SLACK_WEBHOOK_URL) or a file, so they
    # stay out of config files that get copied around; see resolve_secret().
    linear_api_key: SecretStr | None = Field(None, description="Linear API key; set it with WSMON_LINEAR_API_KEY or linear_api_key_file (inline only with allow_inline_secrets).", json_schema_extra={"env": "WSMON_LINEAR_API_KEY", "secret": True})
    linear_api_key_file: Path | None = Field(None, description="File whose first line is the Linear API key (keep it mode 0600).")
    slack_webhook_url: SecretStr | None = Field(None, description="Slack incoming-webhook URL; set it with WSMON_SLACK_WEBHOOK_URL or slack_webhook_url_file (inline only with allow_inline_secrets).", json_schema_extra={"env": "WSMON_SLACK_WEBHOOK_URL", "secret": True})
    slack_webhook_url_file: Path | None = Field(None, description="File whose first line is the Slack webhook URL (keep it mode 0600).")
    allow_inline_secrets: bool = Field(False, description="Accept linear_api_key / slack_webhook_url written inline in the config file.")
    contact_email: str | None = Field(None, description="Operator contact address (Daylily cluster.contact_email), included in notifications so readers know whom to ask.")
    sns_topic_arn: str | None = Field(None, description="SNS topic notifications are published to (off when unset).")
    sns_filter: ChannelFilter = Field(default_factory=ChannelFilter, description="Which events go to SNS.")
    linear_team_id: str | None = Field(None, description="Linear team issues are opened in (Linear is off unless this and the API key are set).")
    linear_api_url: str = Field("https://api.linear.app/graphql", description="Linear GraphQL endpoint.")
    linear_resolved_state_id: str | None = Field(None, description="Linear workflow state an issue is moved to when its alert resolves (None: comment only).")
    linear_filter: ChannelFilter = Field(default_factory=lambda: ChannelFilter(event_types=["alert_firing", "alert_acknowledged", "alert_resolved", "validation_failed"]), description="Which events go to Linear (default: alerts and validation failures; a dead letter arrives as its dead_lettered alert, so one issue, not two).")
    slack_filter: ChannelFilter = Field(default_factory=ChannelFilter, description="Which events go to the Slack webhook (Slack is off unless the webhook URL is set).")
    dashboard_url: str | None = Field(None, description="Link template for a workset in messages, with {workset_id} {bucket} {prefix} (None: the S3 console).")
    request_timeout_seconds: float = Field(10.0, gt=0, description="Timeout of one HTTP request to Linear or Slack, and of an SNS publish.")
    max_attempts: int = Field(12, ge=1, description="Delivery attempts before a notification is given up (dead); about two hours of backoff at the defaults.")
    backoff_base_seconds: float = Field(30.0, gt=0, description="Delay after the first failed delivery; doubles per attempt.")
    backoff_cap_seconds: float = Field(900.0, gt=0, description="Longest delay between delivery attempts.")
    batch_size: int = Field(200, ge=1, description="Outbox entries handled per delivery run.")
    outbox_retention_days: int = Field(7, ge=1, description="Days a delivered or given-up notification (and its dedup id) is kept before the engine deletes it; pending ones are never deleted.")


class UISettings(Section):
    refresh_interval: float = Field(2.0, gt=0, description="Seconds between dashboard refreshes from the store.")
    theme: str = Field("wsmon-dark", description="Theme name: wsmon-dark, wsmon-light, wsmon-high-contrast, wsmon-ansi.")
    bell: bool = Field(True, description="Ring the terminal bell when a new alert fires.")
    read_only: bool = Field(False, description="Hide every action that changes state.")


class ApiSettings(Section):
    enabled: bool = Field(False, description="Run the HTTP API (wsmon serve) inside wsmon --headless too.")
    bind: str = Field("127.0.0.1:8080", description="HOST:PORT the HTTP API listens on; anything but loopback needs a token.")
    # Tokens come from the environment or a file only: wsmon serve refuses a token written in the config file.
    token: SecretStr | None = Field(None, description="Bearer token(s) allowed to read and write: TOKEN or NAME:TOKEN, comma-separated; only from WSMON_API_TOKEN, never inline.", json_schema_extra={"env": "WSMON_API_TOKEN", "secret": True})
    token_file: Path | None = Field(None, description="File of read-write tokens, one NAME:TOKEN (or TOKEN) per line (keep it mode 0600).")
    read_token: SecretStr | None = Field(None, description="Bearer token(s) allowed to read only: TOKEN or NAME:TOKEN, comma-separated; only from WSMON_API_READ_TOKEN.", json_schema_extra={"env": "WSMON_API_READ_TOKEN", "secret": True})
    read_token_file: Path | None = Field(None, description="File of read-only tokens, one NAME:TOKEN (or TOKEN) per line.")
    read_token_required: bool | None = Field(None, description="Reads need a token too (None: on when bound beyond loopback).")
    read_only: bool = Field(False, description="Refuse every write through the API (403), whatever the token.")
    max_body_bytes: int = Field(65_536, ge=1024, description="Largest JSON request body accepted (413 beyond).")
    max_upload_bytes: int = Field(50_000_000, ge=1024, description="Largest workset folder archive POST /worksets/validate accepts (413 beyond).")
    stream_poll_seconds: float = Field(0.5, gt=0, description="How often the event stream looks for workset and alert changes in the store.")
    stream_history: int = Field(1000, ge=10, description="Recent stream events kept so a client resuming with Last-Event-ID misses nothing.")
    stream_client_buffer: int = Field(256, ge=1, description="Events queued for one slow stream client before it is disconnected (it resumes with Last-Event-ID).")
    trusted_proxies: list[str] = Field(default_factory=lambda: ["127.0.0.1"], description="Addresses whose X-Forwarded-For / X-Forwarded-Proto are believed (a reverse proxy on this host).")
    web_bind: str = Field("127.0.0.1:8000", description="HOST:PORT wsmon web serves the dashboard on.")


class LoggingSettings(Section):
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    format: Literal["auto", "json", "console"] = Field("auto", description="auto: JSON when not a terminal (headless), console on a terminal.")
    file: str | None = Field(None, description="Log file (default under the TUI: STATE_DIR/wsmon.log).")


class Settings(BaseSettings):
    """Everything a user can configure."""

    model_config = SettingsConfigDict(
        env_prefix="WSMON_", env_nested_delimiter="__", extra="forbid", validate_assignment=True,
    )

    monitor_id: str | None = Field(None, description="This monitor's id (default: HOST-USER). Used as lease owner; keep it stable across restarts.")
    state_dir: Path = Field(default_factory=default_state_dir, description="Directory for the SQLite store, logs and step logs.", json_schema_extra={"doc_default": "$XDG_STATE_HOME/wsmon (~/.local/state/wsmon)"})
    daylily_yaml: Path | None = Field(None, description="Path to an earlier Daylily monitor YAML config to read settings from (ranks below this file and the environment).")
    continuous: bool = Field(True, description="Headless service: false runs one full cycle and exits, like --once (Daylily monitor.continuous).")
    aws: AwsSettings = Field(default_factory=AwsSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    discovery: DiscoverySettings = Field(default_factory=DiscoverySettings)
    clusters: ClustersSettings = Field(default_factory=ClustersSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    runner: RunnerSettings = Field(default_factory=RunnerSettings)
    progress: ProgressSettings = Field(default_factory=ProgressSettings)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    alerts: AlertsSettings = Field(default_factory=AlertsSettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)
    ui: UISettings = Field(default_factory=UISettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    keymap: dict[str, str] = Field(default_factory=dict, description="Rebind dashboard keys: binding id = key(s) (ids are listed by ? in the dashboard), e.g. release = \"ctrl+l\".")
    logging: LoggingSettings = Field(default_factory=LoggingSettings)

    _load_info: LoadInfo | None = PrivateAttr(default=None)

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        loaded = LOADING_SOURCES.get()
        if loaded is None:
            # Constructed directly (tests, the demo): exactly the arguments given, so nothing from
            # the operator's environment can point a demo or a test at a real store or bucket.
            return (init_settings,)
        # flags (init arguments) > environment > TOML file > Daylily YAML > defaults
        return (init_settings, *loaded)

    def source_of(self, dotted: str) -> str:
        """Where the effective value came from: "default", "file PATH", "env VAR", "flag", "daylily yaml PATH (key)"."""
        if self._load_info is None:
            return "default"
        path = tuple(int(p) if p.isdigit() else p for p in dotted.split("."))
        return self._load_info.provenance.label(path)

    @property
    def config_warnings(self) -> list[str]:
        """Warnings from loading (unused Daylily keys and the like), for `config check` and the log."""
        return list(self._load_info.warnings) if self._load_info else []

    @property
    def load_info(self) -> LoadInfo | None:
        return self._load_info

    @property
    def store_url(self) -> str:
        return self.store.url or f"sqlite:///{self.state_dir / 'state.db'}"

    @property
    def effective_monitor_id(self) -> str:
        if self.monitor_id:
            return self.monitor_id
        from wsmon.core.identity import default_monitor_id

        return default_monitor_id()


class ConfigError(Exception):
    """A configuration problem, worded for the operator (names the key, the file, what is allowed)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class SecretSetting:
    name: str
    env_var: str

    @property
    def path(self) -> tuple[str, str]:
        return ("notify", self.name)

    @property
    def file_path(self) -> tuple[str, str]:
        return ("notify", f"{self.name}_file")


SECRET_SETTINGS = (
    SecretSetting("linear_api_key", "WSMON_LINEAR_API_KEY"),
    SecretSetting("slack_webhook_url", "WSMON_SLACK_WEBHOOK_URL"),
)


def resolve_secret(name: str, settings: Settings) -> SecretStr | None:
    """The secret ``name`` ("linear_api_key" or "slack_webhook_url"), or None when it is not configured.

    The value set directly (environment, or inline when allowed) wins; otherwise the first non-blank
    line of the file named by ``notify.<name>_file``, read on every call so a rotated secret is
    picked up. An unreadable file raises ConfigError naming the setting and the file.
    """
    spec = next((s for s in SECRET_SETTINGS if s.name == name), None)
    if spec is None:
        raise ValueError(f"unknown secret {name!r}; known: {', '.join(s.name for s in SECRET_SETTINGS)}")
    value = getattr(settings.notify, name)
    if value is not None and value.get_secret_value():
        return value
    configured = getattr(settings.notify, f"{name}_file")
    if configured is None:
        return None
    path = Path(configured).expanduser()
    setting = f"notify.{name}_file ({settings.source_of(f'notify.{name}_file')})"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{setting}: {path} does not exist."]) from None
    except PermissionError:
        raise ConfigError([f"{setting}: {path} cannot be read by this user (permission denied)."]) from None
    except IsADirectoryError:
        raise ConfigError([f"{setting}: {path} is a directory, not a file."]) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError([f"{setting}: {path} cannot be read: {reason}."]) from None
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if not first:
        raise ConfigError([f"{setting}: {path} is empty; it should hold the {name.replace('_', ' ')} on its first line."])
    return SecretStr(first)
