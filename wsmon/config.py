"""Configuration: pydantic-settings.

Sources, highest first: command-line flags, ``WSMON_*`` environment (nested with ``__``, e.g.
``WSMON_STORE__URL``), the TOML file (``--config``, else ``$XDG_CONFIG_HOME/wsmon/config.toml``),
defaults. The earlier Daylily monitor's YAML config is read too (``daylily_yaml``).

Every setting has a default, a type and a one-line description; docs/configuration.md is
generated from these models (tests/test_config_docs.py fails when it drifts).

Each engine module owns one section below; add a setting to your own section only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def xdg_dir(env: str, fallback: str) -> Path:
    base = os.environ.get(env)
    return Path(base) if base else Path.home() / fallback


def default_state_dir() -> Path:
    return xdg_dir("XDG_STATE_HOME", ".local/state") / "wsmon"


def default_config_path() -> Path:
    return xdg_dir("XDG_CONFIG_HOME", ".config") / "wsmon" / "config.toml"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class AwsSettings(Section):
    profile: str | None = Field(None, description="AWS profile name (None: the default credential chain).")
    region: str | None = Field(None, description="AWS region for every client (None: the profile's region).")
    endpoint_url: str | None = Field(None, description="Endpoint override for every AWS client (moto, LocalStack).")
    session_duration_seconds: int | None = Field(None, description="Role session duration when the profile assumes a role.")
    max_attempts: int = Field(5, ge=1, le=20, description="botocore standard-mode retry attempts per request.")


class StoreSettings(Section):
    url: str | None = Field(None, description="State store URL: sqlite:///PATH or dynamodb://TABLE?region=R[&endpoint_url=U]. None: sqlite in the state directory.")
    lease_seconds: float = Field(300.0, gt=0, description="How long a claim lasts before it must be renewed.")
    heartbeat_seconds: float = Field(60.0, gt=0, description="How often a holder renews its lease (well inside lease_seconds).")
    max_clock_skew_seconds: float = Field(30.0, ge=0, description="Extra time after a lease expires before another monitor may take it.")


class SourceSettings(Section):
    bucket: str = Field(..., description="S3 bucket holding workset folders.")
    prefix: str = Field("", description="Prefix under which each workset is one folder.")


class DiscoverySettings(Section):
    sources: list[SourceSettings] = Field(default_factory=list, description="Where workset folders are found (bucket + prefix pairs).")
    poll_interval_seconds: float = Field(60.0, gt=0, description="Seconds between S3 discovery polls.")
    reconcile_every: int = Field(10, ge=1, description="Re-list a terminal workset folder every this many polls.")
    write_sentinels: bool = Field(True, description="Write daylily.* sentinel files and index logs for the engine's own transitions.")
    archive_prefix: str | None = Field(None, description="Prefix completed worksets are archived under (Daylily monitor compatibility).")
    sentinel_index_prefix: str | None = Field(None, description="Prefix for daylily.<state>.log index files (default: the source prefix).")
    allowed_buckets: list[str] = Field(default_factory=list, description="Buckets other than the workset's own that R1_FQ/R2_FQ may point into.")
    ready_lock_backoff_seconds: float = Field(30.0, ge=0, description="Wait after seeing daylily.ready before claiming (lets uploads finish).")
    list_workers: int = Field(8, ge=1, le=64, description="Threads listing workset folders in parallel.")
    head_workers: int = Field(8, ge=1, le=64, description="Threads checking FASTQ objects exist (HEAD) in parallel.")
    max_file_bytes: int = Field(5_000_000, gt=0, description="Largest workset file (YAML/TSV) that is read; larger is a validation error.")


class ClusterConfig(Section):
    name: str = Field(..., description="Cluster name.")
    availability_zone: str | None = Field(None, description="Availability zone, e.g. us-west-2d.")
    max_vcpus: int = Field(256, ge=0, description="vCPUs worksets may use on this cluster.")
    max_memory_gb: float = Field(2048.0, ge=0, description="Memory (GB) worksets may use on this cluster.")
    max_concurrent_worksets: int = Field(3, ge=0, description="Worksets that may run at once on this cluster.")
    cost_per_vcpu_hour: float = Field(0.05, ge=0, description="USD per vCPU-hour, for estimates.")


class ClustersSettings(Section):
    static: list[ClusterConfig] = Field(default_factory=list, description="Clusters declared in config.")
    pcluster_discovery: bool = Field(False, description="Discover clusters with the pcluster CLI.")
    pcluster_tag_filter: dict[str, str] = Field(default_factory=dict, description="Only discovered clusters carrying these tags.")
    slurm_usage: bool = Field(True, description="Read live usage from sinfo/squeue when they are on PATH.")
    create_cluster_command: list[str] | None = Field(None, description="argv that creates a cluster when nothing fits (off when unset).")
    preferred_availability_zone: str | None = Field(None, description="Default AZ preference for worksets that state none.")
    reuse_cluster_name: str | None = Field(None, description="Prefer this existing cluster (Daylily monitor compatibility).")


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


class AlertsSettings(Section):
    enabled: bool = Field(True, description="Evaluate alert rules.")
    evaluate_interval_seconds: float = Field(30.0, gt=0, description="Seconds between alert evaluations.")
    keep_firing_for_seconds: float = Field(300.0, ge=0, description="How long a condition must stay clear before its alert resolves.")


class NotifySettings(Section):
    deliver_interval_seconds: float = Field(15.0, gt=0, description="Seconds between outbox delivery runs.")


class UISettings(Section):
    refresh_interval: float = Field(2.0, gt=0, description="Seconds between dashboard refreshes from the store.")
    theme: str = Field("wsmon-dark", description="Theme name: wsmon-dark, wsmon-light, wsmon-high-contrast, wsmon-ansi.")
    bell: bool = Field(True, description="Ring the terminal bell when a new alert fires.")
    read_only: bool = Field(False, description="Hide every action that changes state.")
    keymap: dict[str, str] = Field(default_factory=dict, description="Rebind keys: binding id = key(s), e.g. release = \"ctrl+r\".")


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
    state_dir: Path = Field(default_factory=default_state_dir, description="Directory for the SQLite store, logs and step logs.")
    daylily_yaml: Path | None = Field(None, description="Path to an earlier Daylily monitor YAML config to read settings from.")
    aws: AwsSettings = Field(default_factory=AwsSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    discovery: DiscoverySettings = Field(default_factory=DiscoverySettings)
    clusters: ClustersSettings = Field(default_factory=ClustersSettings)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)
    runner: RunnerSettings = Field(default_factory=RunnerSettings)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    alerts: AlertsSettings = Field(default_factory=AlertsSettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)
    ui: UISettings = Field(default_factory=UISettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)

    @property
    def store_url(self) -> str:
        return self.store.url or f"sqlite:///{self.state_dir / 'state.db'}"

    @property
    def effective_monitor_id(self) -> str:
        if self.monitor_id:
            return self.monitor_id
        import getpass
        import socket

        try:
            user = getpass.getuser()
        except Exception:  # no passwd entry in some containers
            user = str(os.getuid())
        return f"{socket.gethostname()}-{user}"


class ConfigError(Exception):
    """A configuration problem, worded for the operator (names the key, the file, what is allowed)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def load_settings(config_path: Path | str | None = None, overrides: dict[str, Any] | None = None,
                  *, env: dict[str, str] | None = None) -> Settings:
    """Load settings from all sources. Raises ``ConfigError`` listing every problem."""
    from wsmon.settings_loader import load  # the machinery lives beside, this stays the API

    return load(config_path, overrides or {}, env=env)


# Secret values (Linear key, Slack webhook) are never inline by default: they come from the
# environment or a file named in config. See NotifySettings.
_ = SecretStr
